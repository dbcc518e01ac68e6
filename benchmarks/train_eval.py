"""Train crf_ner on a real corpus and score it on dev and test: the baseline to beat.

    python -m benchmarks.train_eval --dataset conll03 --data-dir ../shared/data/conll2003 \
        [--transformer DIR_OR_NAME] [--max-epochs 2] [--max-steps -1] [--threads 2] [--gpu-id -1]
        [--tag NAME]

    python -m benchmarks.train_eval --model TRAINED_DIR --corpus CORPUS_DIR --dataset msra \
        [--train-seconds S] [--tag NAME] [--note TEXT]

Runs the project's own steps (scripts/project.py corpus / train, i.e. the converter and
`spacy train` with configs/<lang>_<dataset>.cfg) under benchmarks/.work/, times the training,
then evaluates dev and test with `spacy_bert_crf.evaluate` (P/R/F per type, words/s). Results are
merged into benchmarks/results/training.json (one entry per --tag) and the table
benchmarks/results/training.md is regenerated; paths in them are relative to the repository
(benchmarks/paths.py). Resumable: a finished training is not redone
(delete benchmarks/.work/<tag>/ or pass --force).

With --model, nothing is trained: the pipeline in TRAINED_DIR (e.g. a run of `python -m
spacy_bert_crf train ... --resume` continued over several sessions) is scored on CORPUS_DIR's
dev.spacy and test.spacy, and its budget is read from its own config (training.max_steps,
max_epochs); --train-seconds records the training's wall clock where it is known, and --note
should say how it was trained.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

from .machine import machine_info, package_versions, today
from .markdown import table
from .paths import DATA_DIR, RESULTS, ROOT, WORK, portable
from .schema import TrainingRun, check, load_results, machine_text, save_results, versions_text

EVAL_SPLITS = ("dev", "test")
INTRO = """Produced by `python -m benchmarks.train_eval`; each row is one training run. P/R/F are
entity-level micro scores (exact span and label) in %, on the gold tokenization. Speed:
words/s of the whole pipeline (transformer + crf_ner) on the test set, batch 64, warm, docs
fed to nlp.pipe sorted by length (rows marked `in order`: corpus order, measured before
sorting was added)."""


def run(cmd: list) -> None:
    print("$", " ".join(map(str, cmd)), flush=True)
    subprocess.run([str(c) for c in cmd], cwd=ROOT, check=True)


def evaluate_splits(model: Path, corpus: Path, threads: int, gpu_id: int = -1) -> dict:
    import spacy
    import torch

    from spacy_bert_crf.evaluate import evaluate, load_model

    torch.set_num_threads(threads)
    if gpu_id >= 0:
        spacy.require_gpu(gpu_id)
    nlp = load_model(model)
    out = {}
    for split in EVAL_SPLITS:
        nlp(" ".join(["warm", "up"] * 50))
        # Gold tokenization, as CoNLL/MSRA scores are reported (and as the HF peers read them).
        report = evaluate(nlp, corpus / f"{split}.spacy", batch_size=64, gold_preproc=True)
        out[split] = {
            key: report[key]
            for key in ("ents_p", "ents_r", "ents_f", "ents_per_type", "n_docs", "n_tokens",
                        "words_per_second", "confidence")
        }
        out[split]["sorted_by_length"] = True
    return out


def percent(value: float) -> str:
    return f"{100 * value:.2f}"


def run_row(tag: str, r: TrainingRun) -> List[str]:
    """The summary table's row of one run."""
    dev, test = r["scores"]["dev"], r["scores"]["test"]
    in_order = "" if test.get("sorted_by_length") else " (in order)"
    return [tag, r["dataset"], r["encoder"], r["budget"],
            "GPU" if r.get("gpu") else f"{r['threads']} CPU threads",
            f"{r['train_seconds'] / 60:.1f} min" if r["train_seconds"] >= 0 else "-",
            percent(dev["ents_f"]),
            percent(test["ents_p"]), percent(test["ents_r"]), percent(test["ents_f"]),
            f"{test['words_per_second']:,.0f}{in_order}", r["date"]]


def gpu_names(results: Dict[str, TrainingRun]) -> List[str]:
    """The GPUs the runs trained on, from their machine records (old ones: "..., GPU name")."""
    names = set()
    for r in results.values():
        machine = r["machine"]
        if isinstance(machine, str):
            names.update(re.findall(r", GPU (.+)$", machine))
        elif machine.get("gpu"):
            names.add(machine["gpu"])
    return sorted(names)


def run_section(tag: str, r: TrainingRun) -> List[str]:
    """One run: its machine, versions, command, note, and P/R/F per type."""
    lines = ["", f"## {tag}", "", f"Machine: {machine_text(r['machine'])}, {r['threads']} torch "
             f"threads. Versions: {versions_text(r['versions'])}.", "",
             f"Command: `{r['command']}`", ""]
    if r.get("note"):
        lines += [r["note"], ""]
    rows = []
    for split in EVAL_SPLITS:
        s = r["scores"][split]
        rows += [[split, label, percent(v["p"]), percent(v["r"]), percent(v["f"])]
                 for label, v in sorted(s["ents_per_type"].items())]
        rows.append([split, "**all**", percent(s["ents_p"]), percent(s["ents_r"]),
                     percent(s["ents_f"])])
    return lines + table(["split", "type", "P", "R", "F"], rows, "llrrr")


def render_training(results: Dict[str, TrainingRun], where: str = "training.json") -> str:
    """benchmarks/results/training.md from the runs of training.json."""
    intro = INTRO.split("\n")
    gpus = gpu_names(results)
    if gpus:
        intro[-1] += f" GPU rows: {', '.join(gpus)}; each run's note says how it was shared."
    head = ["run", "dataset", "encoder", "budget", "device", "train time", "dev F", "test P",
            "test R", "test F", "words/s", "date"]
    for tag, r in results.items():
        check(r, TrainingRun, f"{where}: {tag}")
    lines = ["# crf_ner trained on real corpora", ""] + intro + [""]
    lines += table(head, [run_row(tag, r) for tag, r in sorted(results.items())], "lllllrrrrrrl")
    for tag, r in sorted(results.items()):
        lines += run_section(tag, r)
    return "\n".join(lines) + "\n"


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="conll03")
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR / "conll2003")
    parser.add_argument("--transformer", default="", help="'' = the dataset's offline default")
    parser.add_argument("--max-epochs", type=int, default=-1)
    parser.add_argument("--max-steps", type=int, default=-1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--gpu-id", type=int, default=-1, help="train and evaluate on this GPU")
    parser.add_argument("--tag", default=None)
    parser.add_argument("--force", action="store_true")
    parser.add_argument("--override", nargs=2, action="append", default=[],
                        metavar=("KEY", "VALUE"),
                        help="spacy train config override, e.g. --override corpora.train.limit "
                             "2000")
    parser.add_argument("--note", default="", help="free text stored with the results")
    parser.add_argument("--out", type=Path, default=RESULTS,
                        help="where training.json and training.md are")
    parser.add_argument("--model", type=Path, default=None,
                        help="score this trained pipeline instead of training one")
    parser.add_argument("--corpus", type=Path, default=None,
                        help="with --model: the folder holding dev.spacy and test.spacy")
    parser.add_argument("--train-seconds", type=float, default=-1.0,
                        help="with --model: the training's wall clock (-1: not known)")
    args = parser.parse_args(argv)
    if args.model is not None:
        if args.corpus is None:
            parser.error("--model needs --corpus (the folder of dev.spacy and test.spacy)")
        for path in (args.model / "config.cfg", args.corpus / "dev.spacy",
                     args.corpus / "test.spacy"):
            if not path.exists():
                parser.error(f"{path} does not exist")
    elif args.corpus is not None or args.train_seconds != -1.0:
        parser.error("--corpus and --train-seconds go with --model")
    return args


def train(args, work: Path, corpus: Path) -> float:
    """Build the corpus and train with the project's steps, unless done (or --force).
    RETURNS (float): the training's wall-clock seconds."""
    python = sys.executable
    if not (corpus / args.dataset / "test.spacy").exists():
        run([python, "scripts/project.py", "corpus", args.dataset, args.data_dir.resolve(),
             corpus / args.dataset])
    train_cmd = [python, "scripts/project.py", "train", args.dataset, work / "training",
                 "--corpus-dir", corpus, "--transformer", args.transformer,
                 "--max-epochs", args.max_epochs, "--max-steps", args.max_steps,
                 "--gpu-id", args.gpu_id]
    for key, value in args.override:
        train_cmd += [f"--{key}", value]
    timing = work / "train_seconds.json"
    if args.force or not timing.exists():
        start = time.time()
        os.environ.update({"OMP_NUM_THREADS": str(args.threads)})
        run(train_cmd)
        timing.write_text(json.dumps({"train_seconds": time.time() - start}))
    return json.loads(timing.read_text())["train_seconds"]


def model_budget(model: Path) -> str:
    """The budget a trained pipeline's own config states."""
    from spacy.util import load_config

    training = load_config(model / "config.cfg", interpolate=False)["training"]
    return (f"max_epochs={training['max_epochs']}, max_steps={training['max_steps']} "
            "(the model's config)")


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    tag = args.tag or f"{args.dataset}-{Path(args.transformer).name or 'default'}"
    if args.model is not None:
        train_seconds = args.train_seconds
        model, corpus_dir = args.model, args.corpus
        budget_text = model_budget(model)
    else:
        work = WORK / tag
        train_seconds = train(args, work, work / "corpus")
        model, corpus_dir = work / "training" / "model-best", work / "corpus" / args.dataset
        budget = [f"max_epochs={args.max_epochs}", f"max_steps={args.max_steps}"]
        budget += [f"{k}={v}" for k, v in args.override]
        budget_text = ", ".join(budget) + " (-1 = config's)"
    scores = evaluate_splits(model, corpus_dir, args.threads, args.gpu_id)
    record: TrainingRun = {
        "dataset": args.dataset,
        "encoder": args.transformer or "default",
        "budget": budget_text,
        "train_seconds": train_seconds,
        "threads": args.threads,
        "gpu": args.gpu_id >= 0,
        "command": " ".join(["python -m benchmarks.train_eval"]
                            + [portable(str(a)) for a in (sys.argv[1:] if argv is None else argv)
                               if a]),
        "machine": machine_info(args.threads, args.gpu_id),
        "versions": package_versions(),
        "date": today(),
        "scores": scores,
        "note": args.note,
    }
    path = args.out / "training.json"
    results = load_results(path)
    results[tag] = record
    save_results(path, results)  # committed: paths relative to the repository
    markdown = render_training(load_results(path))
    (args.out / "training.md").write_text(markdown, encoding="utf8")
    print(markdown)


if __name__ == "__main__":
    main()

"""Train crf_ner on a real corpus and score it on dev and test: the baseline to beat.

    python -m benchmarks.train_eval --dataset conll03 --data-dir ../shared/data/conll2003 \
        [--transformer DIR_OR_NAME] [--max-epochs 2] [--max-steps -1] [--threads 2] [--gpu-id -1]
        [--tag NAME]

Runs the project's own steps (scripts/project.py corpus / train, i.e. the converter and
`spacy train` with configs/<lang>_<dataset>.cfg) under benchmarks/.work/, times the training,
then evaluates dev and test with `spacy_bert_crf.evaluate` (P/R/F per type, words/s). Results are
merged into benchmarks/results/training.json (one entry per --tag) and the table
benchmarks/results/training.md is regenerated; paths in them are relative to the repository
(benchmarks/paths.py). Resumable: a finished training is not redone
(delete benchmarks/.work/<tag>/ or pass --force).
"""
import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from .paths import portable, portable_tree

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results"
WORK = Path(__file__).parent / ".work"


def versions() -> dict:
    from importlib.metadata import version

    names = ["spacy", "spacy-transformers", "transformers", "thinc", "torch", "spacy-bert-crf"]
    return {"python": platform.python_version(), **{n: version(n) for n in names}}


def machine(gpu_id: int = -1) -> str:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    text = f"{platform.machine()} {cpu}, {os.cpu_count()} cores".strip()
    if gpu_id >= 0:
        import torch

        text += f", GPU {torch.cuda.get_device_name(gpu_id)}"
    return text


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
    for split in ("dev", "test"):
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


def write_table(results: dict) -> None:
    lines = [
        "# crf_ner trained on real corpora",
        "",
        "Produced by `python -m benchmarks.train_eval`; each row is one training run. P/R/F are",
        "entity-level micro scores (exact span and label) in %, on the gold tokenization. Speed:",
        "words/s of the whole pipeline (transformer + crf_ner) on the test set, batch 64, warm, docs",
        "fed to nlp.pipe sorted by length (rows marked `in order`: corpus order, measured before",
        "sorting was added). GPU rows: an H100 lent through the device tool, shared by up to three jobs.",
        "",
        "| run | dataset | encoder | budget | device | train time | dev F | test P | test R | test F | words/s | date |",
        "|---|---|---|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for tag, r in sorted(results.items()):
        t = r["scores"]["test"]
        lines.append(
            f"| {tag} | {r['dataset']} | {r['encoder']} | {r['budget']} | "
            f"{'GPU' if r.get('gpu') else str(r['threads']) + ' CPU threads'} | "
            f"{r['train_seconds'] / 60:.1f} min | {100 * r['scores']['dev']['ents_f']:.2f} | "
            f"{100 * t['ents_p']:.2f} | {100 * t['ents_r']:.2f} | {100 * t['ents_f']:.2f} | "
            f"{t['words_per_second']:,.0f}{'' if t.get('sorted_by_length') else ' (in order)'} | {r['date']} |"
        )
    for tag, r in sorted(results.items()):
        lines += ["", f"## {tag}", "", f"Machine: {r['machine']}, {r['threads']} torch threads. "
                  f"Versions: {', '.join(f'{k} {v}' for k, v in r['versions'].items())}.",
                  "", f"Command: `{r['command']}`", ""]
        if r.get("note"):
            lines += [r["note"], ""]
        lines += ["| split | type | P | R | F |", "|---|---|---:|---:|---:|"]
        for split in ("dev", "test"):
            s = r["scores"][split]
            for label, v in sorted(s["ents_per_type"].items()):
                lines.append(f"| {split} | {label} | {100 * v['p']:.2f} | {100 * v['r']:.2f} | {100 * v['f']:.2f} |")
            lines.append(f"| {split} | **all** | {100 * s['ents_p']:.2f} | {100 * s['ents_r']:.2f} | {100 * s['ents_f']:.2f} |")
    (RESULTS / "training.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="conll03")
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data" / "conll2003")
    parser.add_argument("--transformer", default="", help="'' = the dataset's offline default")
    parser.add_argument("--max-epochs", type=int, default=-1)
    parser.add_argument("--max-steps", type=int, default=-1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--gpu-id", type=int, default=-1, help="train and evaluate on this GPU")
    parser.add_argument("--tag", default=None)
    parser.add_argument("--force", action="store_true")
    parser.add_argument("--override", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"),
                        help="spacy train config override, e.g. --override corpora.train.limit 2000")
    parser.add_argument("--note", default="", help="free text stored with the results")
    args = parser.parse_args()
    tag = args.tag or f"{args.dataset}-{Path(args.transformer).name or 'default'}"
    work = WORK / tag
    corpus = work / "corpus"
    model = work / "training" / "model-best"
    python = sys.executable
    if not (corpus / args.dataset / "test.spacy").exists():
        run([python, "scripts/project.py", "corpus", args.dataset, args.data_dir.resolve(), corpus / args.dataset])
    train_cmd = [python, "scripts/project.py", "train", args.dataset, work / "training",
                 "--corpus-dir", corpus, "--transformer", args.transformer,
                 "--max-epochs", args.max_epochs, "--max-steps", args.max_steps,
                 "--gpu-id", args.gpu_id]
    for key, value in args.override:
        train_cmd += [f"--{key}", value]
    timing = work / "train_seconds.json"
    if args.force or not timing.exists():
        start = time.time()
        env_threads = {"OMP_NUM_THREADS": str(args.threads)}
        os.environ.update(env_threads)
        run(train_cmd)
        timing.write_text(json.dumps({"train_seconds": time.time() - start}))
    scores = evaluate_splits(model, corpus / args.dataset, args.threads, args.gpu_id)
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / "training.json"
    results = portable_tree(json.loads(path.read_text())) if path.exists() else {}
    results[tag] = {
        "dataset": args.dataset,
        "encoder": args.transformer or "default",
        "budget": ", ".join([f"max_epochs={args.max_epochs}", f"max_steps={args.max_steps}"]
                            + [f"{k}={v}" for k, v in args.override]) + " (-1 = config's)",
        "train_seconds": json.loads(timing.read_text())["train_seconds"],
        "threads": args.threads,
        "gpu": args.gpu_id >= 0,
        "command": " ".join(
            ["python -m benchmarks.train_eval"] + [portable(a) for a in sys.argv[1:] if a]
        ),
        "machine": machine(args.gpu_id),
        "versions": versions(),
        "date": datetime.date.today().isoformat(),
        "scores": scores,
        "note": args.note,
    }
    results = portable_tree(results)  # committed: paths relative to the repository
    path.write_text(json.dumps(results, indent=2) + "\n")
    write_table(results)
    print((RESULTS / "training.md").read_text())


if __name__ == "__main__":
    main()

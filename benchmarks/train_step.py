"""Training step time with the encoder's input embeddings trained or frozen (issue 13).

    python -m benchmarks.train_step CONFIG TRAIN_SPACY --encoder DIR [--steps 20] [--warmup 2]
        [--threads 1] [--label NAME] [--note TEXT] [--out benchmarks/results]

Two pipelines from the same training config, initialized alike (seed 0) on TRAIN_SPACY: the
config as it is ("trained": spacy-bert-crf.TransformerModel.v1), and the same with
spacy-bert-crf.TransformerModel.v2 and `freeze_input_embeddings = true` ("frozen"). They take
turns, in one process, on the same batches of the config's own batcher (the CRF-vs-softmax step
time's `benchmarks.peers.step_time.paired_step_seconds`), each step a full
`nlp.update` (forward, backward, optimizer update) with the config's dropout and optimizer;
the first --warmup steps are not counted. Reported: median seconds per step of each, and the
median over steps of frozen / trained (a ratio taken within each pair of steps, so that what
else runs on the machine weighs on both alike). Results go to train_step.json under --label
and train_step.md renders them all.
"""
import argparse
import os
import shlex
import statistics
import sys
from pathlib import Path
from typing import Any, Dict

from .machine import machine_info, package_versions, today
from .markdown import table
from .paths import RESULTS, portable, rel
from .peers.common import write_json
from .peers.step_time import paired_step_seconds
from .schema import machine_text, versions_text

PACKAGES = ("spacy-bert-crf", "spacy", "spacy-transformers", "thinc", "transformers", "torch",
            "numpy")
VARIANTS = ("trained", "frozen")
FROZEN = {"components.transformer.model.@architectures": "spacy-bert-crf.TransformerModel.v2",
          "components.transformer.model.freeze_input_embeddings": True}


def measure(args) -> Dict[str, Any]:
    import torch

    torch.set_num_threads(args.threads)
    overrides = {"paths.train": str(args.train), "paths.dev": str(args.train),
                 "paths.transformer": str(args.encoder)}
    seconds, words, nlps = paired_step_seconds(
        Path(args.config), overrides, {"trained": {}, "frozen": FROZEN}, Path(args.train),
        args.steps, args.warmup, seed=0)
    trainable = {v: bool(nlps[v].get_pipe("transformer").model.transformer
                         .get_input_embeddings().weight.requires_grad) for v in VARIANTS}
    if trainable != {"trained": True, "frozen": False}:
        raise RuntimeError(f"the variants did not train as named: {trainable}")
    encoder = nlps["trained"].get_pipe("transformer").model.transformer
    return {
        "date": today(),
        "command": portable(shlex.join(["python", "-m", "benchmarks.train_step"] + sys.argv[1:])),
        "machine": machine_info(args.threads),
        "versions": package_versions(PACKAGES),
        "settings": {"config": rel(args.config), "train": rel(args.train),
                     "encoder": rel(args.encoder), "threads": args.threads,
                     "steps": args.steps, "warmup": args.warmup},
        "encoder_weights": sum(p.numel() for p in encoder.parameters()),
        "input_embedding_weights": encoder.get_input_embeddings().weight.numel(),
        "tokens_per_step": statistics.mean(words),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "note": args.note,
        "median_s": {v: statistics.median(seconds[v]) for v in VARIANTS},
        "frozen_over_trained": statistics.median(
            f / t for f, t in zip(seconds["frozen"], seconds["trained"])),
        "seconds": seconds,
    }


def render(results: Dict[str, Any]) -> str:
    lines = ["# Training step time: input embeddings trained or frozen (issue 13)", "",
             "`spacy-bert-crf.TransformerModel.v2` with `freeze_input_embeddings = true` against "
             "the config as it is, in one process, taking turns on the same batches (see "
             "`benchmarks/train_step.py`). Frozen / trained: the median over steps of the ratio "
             "within each pair of steps.", ""]
    head = ["label", "encoder", "weights (input embeddings)", "tokens a step",
            "s a step, trained", "s a step, frozen", "frozen / trained"]
    rows = []
    for label, run in results["runs"].items():
        rows.append([label, run["settings"]["encoder"],
                     f"{run['encoder_weights'] / 1e6:.1f}M "
                     f"({run['input_embedding_weights'] / 1e6:.1f}M)",
                     f"{run['tokens_per_step']:.0f}",
                     f"{run['median_s']['trained']:.3f}", f"{run['median_s']['frozen']:.3f}",
                     f"{run['frozen_over_trained']:.3f}"])
    lines += table(head, rows, "llrrrrr")
    for label, run in results["runs"].items():
        s = run["settings"]
        lines += ["", f"## {label}", "",
                  f"Date {run['date']}; {machine_text(run['machine'])}; "
                  f"{versions_text(run['versions'])}.",
                  f"Command: `{run['command']}`. Config {s['config']}, batches of {s['train']}, "
                  f"{s['steps']} steps of each counted after {s['warmup']}; {s['threads']} torch "
                  f"thread(s); 1-minute load average at the end {run['load_average_1min']}."]
        if run.get("note"):
            lines += ["", f"Note: {run['note']}"]
    lines.append("")
    return "\n".join(lines)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("config", help="training config (e.g. configs/zh_msra.cfg)")
    parser.add_argument("train", help="training corpus (.spacy)")
    parser.add_argument("--encoder", required=True, help="encoder folder (encoders build)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--label", default="current", help="the key of this run")
    parser.add_argument("--note", default="", help="a line for the report")
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--render-only", action="store_true",
                        help="re-render train_step.md from train_step.json")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.warmup < 0:
        parser.error("--steps must be at least 1 and --warmup at least 0")
    return args


def main(argv=None) -> None:
    import json

    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    out = Path(args.out)
    path = out / "train_step.json"
    results = json.loads(path.read_text(encoding="utf8")) if path.exists() else {"runs": {}}
    if not args.render_only:
        results["runs"][args.label] = measure(args)
        write_json(path, results)
    (out / "train_step.md").write_text(render(results), encoding="utf8")
    print(f"wrote {rel(out / 'train_step.md')}")


if __name__ == "__main__":
    main()

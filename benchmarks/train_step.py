"""Training step time with the encoder's input embeddings updated densely, row-sparsely or frozen
(issue 13).

    python -m benchmarks.train_step CONFIG TRAIN_SPACY --encoder DIR [--steps 20] [--warmup 2]
        [--threads 1] [--gpu-id -1] [--label NAME] [--note TEXT] [--out benchmarks/results]

Four pipelines from the same training config, initialized alike (seed 0) on TRAIN_SPACY:
"dense", the embedding matrix updated as spacy-transformers does (a dense gradient, the
optimizer over every row: the transformer model's attrs["sparse_embedding_updates"] = False);
"sparse", the config as it is (the optimizer over the rows that have had a gradient, the same
weights: spacy_bert_crf/layers/sparse_embeddings.py; the other weights in one multi-tensor
step: layers/fused_update.py); "loop", sparse with thinc's per-array optimizer loop for the
other weights (attrs["fused_optimizer_update"] = False), as before the fused step; and "frozen",
spacy-bert-crf.TransformerModel.v2 with `freeze_input_embeddings = true` (no update at all).
They take turns, in one process, on the same batches of the config's own batcher (the
CRF-vs-softmax step time's `benchmarks.peers.step_time.paired_step_seconds`), each step a full
`nlp.update` (forward, backward, optimizer update) with the config's dropout and optimizer;
the first --warmup steps are not counted. Reported: median seconds per step of each, and the
median over steps of sparse / dense, frozen / dense and sparse / loop (ratios taken within each
round of steps, so that what else runs on the machine weighs on all alike). With --gpu-id the
pipelines train on that GPU, each step timed between two torch.cuda.synchronize(). Results go to
train_step.json under --label and train_step.md renders them all (runs from before the sparse
variant have "trained", the dense update, and "frozen" only).
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
VARIANTS = ("dense", "sparse", "loop", "frozen")
FROZEN = {"components.transformer.model.@architectures": "spacy-bert-crf.TransformerModel.v2",
          "components.transformer.model.freeze_input_embeddings": True}


def measure(args) -> Dict[str, Any]:
    import torch
    from thinc.api import require_gpu

    torch.set_num_threads(args.threads)
    sync = None
    if args.gpu_id >= 0:
        require_gpu(args.gpu_id)
        sync = torch.cuda.synchronize
    overrides = {"paths.train": str(args.train), "paths.dev": str(args.train),
                 "paths.transformer": str(args.encoder)}

    def prepare(name: str, nlp: Any) -> None:
        if name == "dense":
            nlp.get_pipe("transformer").model.attrs["sparse_embedding_updates"] = False
        if name == "loop":
            nlp.get_pipe("transformer").model.attrs["fused_optimizer_update"] = False

    seconds, words, nlps = paired_step_seconds(
        Path(args.config), overrides,
        {"dense": {}, "sparse": {}, "loop": {}, "frozen": FROZEN},
        Path(args.train), args.steps, args.warmup, seed=0, prepare=prepare, sync=sync)
    shims = {v: type(nlps[v].get_pipe("transformer").model.layers[0].shims[0]).__name__
             for v in VARIANTS}
    grads = {v: nlps[v].get_pipe("transformer").model.transformer.get_input_embeddings()
             .weight.grad is not None for v in VARIANTS}
    expected = ({"dense": "HFShim", "sparse": "SparseEmbeddingHFShim",
                 "loop": "SparseEmbeddingHFShim", "frozen": "HFShim"},
                {"dense": True, "sparse": False, "loop": False, "frozen": False})
    if (shims, grads) != expected:
        raise RuntimeError(f"the variants did not train as named: {shims}, {grads}")
    encoder = nlps["dense"].get_pipe("transformer").model.transformer
    return {
        "date": today(),
        "command": portable(shlex.join(["python", "-m", "benchmarks.train_step"] + sys.argv[1:])),
        "machine": machine_info(args.threads, args.gpu_id),
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
        "over_dense": {v: statistics.median(x / d for x, d in zip(seconds[v], seconds["dense"]))
                       for v in ("sparse", "frozen")},
        "sparse_over_loop": statistics.median(
            s / x for s, x in zip(seconds["sparse"], seconds["loop"])),
        "seconds": seconds,
    }


def _as_current(run: Dict[str, Any]) -> Dict[str, Any]:
    """A run of either layout with "median_s" keyed dense/sparse/frozen and "over_dense"."""
    if "over_dense" in run:
        return run
    return {**run, "median_s": {"dense": run["median_s"]["trained"],
                                "frozen": run["median_s"]["frozen"]},
            "over_dense": {"frozen": run["frozen_over_trained"]}}


def render(results: Dict[str, Any]) -> str:
    lines = ["# Training step time: input embeddings updated densely, row-sparsely or frozen "
             "(issue 13)", "",
             "In one process, taking turns on the same batches (see `benchmarks/train_step.py`): "
             "**dense**, the embedding matrix updated as spacy-transformers does; **sparse**, "
             "the config as it is since 2026-12-03 (the optimizer over the rows that have had a "
             "gradient, the same weights: `spacy_bert_crf/layers/sparse_embeddings.py`); "
             "**loop**, sparse with thinc's per-array optimizer loop for the other weights "
             "(before 2026-12-04; since then **sparse** updates them in one multi-tensor step, "
             "`spacy_bert_crf/layers/fused_update.py`); "
             "**frozen**, `spacy-bert-crf.TransformerModel.v2` with `freeze_input_embeddings = "
             "true` (no update). Ratios: the median over steps of the ratio within each round "
             "of steps. Runs labelled before the sparse update existed have no sparse column "
             "(their \"trained\" is the dense update).", ""]
    head = ["label", "encoder", "weights (input embeddings)", "tokens a step",
            "device", "s a step, dense", "s a step, sparse", "s a step, loop", "s a step, frozen",
            "sparse / dense", "frozen / dense", "sparse / loop"]
    rows = []
    for label, raw in results["runs"].items():
        run = _as_current(raw)
        median, ratio = run["median_s"], run["over_dense"]
        rows.append([label, run["settings"]["encoder"],
                     f"{run['encoder_weights'] / 1e6:.1f}M "
                     f"({run['input_embedding_weights'] / 1e6:.1f}M)",
                     f"{run['tokens_per_step']:.0f}",
                     run["machine"].get("gpu", "CPU"),
                     f"{median['dense']:.3f}",
                     f"{median['sparse']:.3f}" if "sparse" in median else "-",
                     f"{median['loop']:.3f}" if "loop" in median else "-",
                     f"{median['frozen']:.3f}",
                     f"{ratio['sparse']:.3f}" if "sparse" in ratio else "-",
                     f"{ratio['frozen']:.3f}",
                     f"{run['sparse_over_loop']:.3f}" if "sparse_over_loop" in run else "-"])
    lines += table(head, rows, "llrrlrrrrrrr")
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
    parser.add_argument("--gpu-id", type=int, default=-1, help="train on this GPU")
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

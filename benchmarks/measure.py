"""The measurements of the peer benchmark, each step a subprocess (benchmarks.steps):

    run_seed       one system and seed: train (reused when done with the same settings), infer
                   (test speed, dev and test predictions), score, and scale for the first seed
    run_step_time  the CRF head's training step time against the softmax head's, in one process
                   (benchmarks.peers.step_time)
    run_speed      the trained models of one seed of every system of this environment and the raw
                   encoder, timed together in one process, interleaved (benchmarks.peers.speed)

A failed step is recorded (status "failed", the step, the log's tail) and the harness goes on.
"""
import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any, Dict

from .data import DATASETS
from .machine import now, today
from .paths import ROOT, WORK, portable_tree, rel
from .peers.common import read_jsonl, write_json
from .schema import (PeerResults, SeedRecord, load_results, new_peer_results, save_results,
                     speed_seed)
from .steps import StepFailed, checked, child_env, log_tail, run_step
from .systems import SYSTEMS, System


def load_peer_results(path: Path) -> PeerResults:
    """A peer results file (paths portable), or a new one when there is no file yet."""
    return load_results(path, new_peer_results(now(), today()))


def seed_work(args, system: str, seed: int) -> Path:
    return WORK / "peers" / "runs" / args.run_key / args.dataset / system / f"seed{seed}"


def train(system: System, seed: int, args, data: Path, work: Path, settings: dict,
          env: dict) -> Dict[str, Any]:
    """Train a system (or reuse the training of the same settings). RETURNS its StepResult with
    the budget it was given; raises StepFailed."""
    cmd, budget = system.train_command(seed, args, data, work, env)
    model = system.model_path(args, work)
    marker = work / "train_result.json"
    previous = json.loads(marker.read_text()) if marker.exists() else None
    if (previous and portable_tree(previous.get("settings")) == settings and not args.force
            and Path(model).exists()):
        print(f"reusing the training in {rel(work)}", flush=True)
        return previous["train"]
    run = run_step(cmd, work / "train.log", args.timeout_train, env)
    result: Dict[str, Any] = dict(checked("train", run))
    info = work / "train_info.json"
    result["budget"] = budget
    if info.exists():
        result["info"] = json.loads(info.read_text())
        result["budget"].update({k: v for k, v in result["info"].items()
                                 if k in ("steps", "steps_per_epoch")})
    if not Path(model).exists():
        raise StepFailed("train", result, f"no model at {rel(model)}")
    write_json(marker, {"settings": settings, "train": result})
    return result


def score_predictions(name: str, seed: int, data: Path, work: Path) -> dict:
    """Score the dev and test predictions (benchmarks.peers.score) and print the test score."""
    from .peers.score import score

    scores = {split: score(read_jsonl(data / f"{split}.jsonl"),
                           read_jsonl(work / f"pred-{split}.jsonl")) for split in ("test", "dev")}
    s = scores["test"]
    print(f"{name} seed {seed}: test P {100 * s['p']:.2f} R {100 * s['r']:.2f} "
          f"F {100 * s['f']:.2f} (seqeval F {100 * s['seqeval'].get('f', float('nan')):.2f})",
          flush=True)
    return scores


def run_seed(name: str, seed: int, args, data: Path, settings: dict, do_scale: bool) -> SeedRecord:
    """Measure one system and seed. RETURNS (SeedRecord): never raises for a failed step."""
    system = SYSTEMS[name]
    work = seed_work(args, name, seed)
    env = child_env(args.threads)
    record: Dict[str, Any] = {"status": "ok", "loadavg_at_start": list(os.getloadavg()),
                              "started": now()}
    step = "setup"
    try:
        model = system.model_path(args, work)
        if system.trains:
            step = "train"
            record["train"] = train(system, seed, args, data, work, settings, env)
        step = "infer"
        result: Dict[str, Any] = dict(checked("infer", run_step(
            system.infer_command(args, data, work, model, "infer"), work / "infer.log",
            args.timeout_infer, env)))
        result.update(json.loads((work / "infer.json").read_text()))
        record["infer"] = result
        if system.trains:
            step = "score"
            record["scores"] = score_predictions(name, seed, data, work)
        if do_scale:
            step = "scale"
            result = dict(run_step(system.infer_command(args, data, work, model, "scale"),
                                   work / "scale.log", args.timeout_infer, env))
            if (work / "scale.json").exists():
                result.update(json.loads((work / "scale.json").read_text()))
            record["scale"] = result
            if result["returncode"] != 0:
                record["scale"]["error"] = log_tail(ROOT / result["log"], 1500)
    except StepFailed as err:
        record.update(status="failed", failed_step=err.step, error=str(err)[-3000:])
        record.setdefault(err.step, err.result)
    except Exception as err:  # a harness bug or unreadable output: record, go on
        record.update(status="failed", failed_step=step,
                      error=f"{type(err).__name__}: {err}\n{traceback.format_exc()[-2000:]}")
    record["finished"] = now()
    if record["status"] != "ok":
        print(f"!! {name} seed {seed} failed at {record['failed_step']}:\n"
              f"{record['error'][-1500:]}", flush=True)
    return record  # type: ignore[return-value]


def already_measured(done: dict, settings: dict, args, **same) -> bool:
    """Whether a stored whole-dataset measurement is still valid: it succeeded with the same
    settings and the same `same` fields, and --force was not given."""
    return (done.get("status") == "ok" and done.get("settings") == settings and not args.force
            and all(done.get(key) == value for key, value in same.items()))


def store_measurement(path: Path, dataset: str, key: str, record: dict) -> None:
    results = load_peer_results(path)
    results["datasets"].setdefault(dataset, {})[key] = record
    results["updated"] = now()
    save_results(path, results)


def run_measurement(step: str, cmd: list, work: Path, timeout: float, threads: int,
                    settings: dict, **fields) -> dict:
    """Run a whole-dataset measurement (step_time, speed) whose subprocess writes
    <work>/<step>.json. RETURNS (dict): status, the run, `fields`, and that JSON's fields or the
    error."""
    record: Dict[str, Any] = {"loadavg_at_start": list(os.getloadavg()), "started": now(),
                              "settings": settings, **fields}
    result = run_step(cmd, work / f"{step}.log", timeout, child_env(threads))
    record["run"] = result
    if result["returncode"] == 0:
        record.update(status="ok", **json.loads((work / f"{step}.json").read_text()))
    else:
        record.update(status="failed", error=log_tail(ROOT / result["log"], 1500))
        print(f"!! {step} failed:\n{record['error']}", flush=True)
    record["finished"] = now()
    return record


def run_step_time(args, data: Path, path: Path, settings: dict) -> None:
    """The CRF head's training step time against the softmax head's (benchmarks.peers.step_time:
    one process, same batches, alternating order), unless done for the same steps (or --force)."""
    done = load_peer_results(path)["datasets"].get(args.dataset, {}).get("step_time", {})
    if already_measured(done, settings, args, steps=args.step_time_steps):
        print("step time: already measured (--force to redo)", flush=True)
        return
    print("=== step time: crf vs softmax ===", flush=True)
    work = WORK / "peers" / "runs" / args.run_key / args.dataset / "step_time"
    cmd = [sys.executable, "-m", "benchmarks.peers.step_time", "--data", data,
           "--encoder", args.encoder, "--config", DATASETS[args.dataset].config,
           "--out", work, "--steps", args.step_time_steps, "--threads", args.threads]
    record = run_measurement("step_time", cmd, work, args.timeout_train, args.threads, settings)
    store_measurement(path, args.dataset, "step_time", record)


def run_speed(args, data: Path, path: Path, settings: dict, seed: int) -> None:
    """Time the `seed` models of the systems of this environment in one process, interleaved
    (benchmarks.peers.speed), unless done for the same systems, seed and rounds (or --force)."""
    ds = load_peer_results(path)["datasets"].get(args.dataset, {})
    measured = ds.get("systems", {})

    def model(name: str) -> Path:
        return SYSTEMS[name].model_path(args, seed_work(args, name, seed))

    # raw is measured once, as seed 0: its model is the encoder itself
    names = [name for name, system in SYSTEMS.items() if system.in_process_speed
             and measured.get(name, {}).get("settings") == settings
             and measured[name]["seeds"].get("0" if name == "raw" else str(seed),
                                             {}).get("status") == "ok"
             and model(name).exists()]
    if "raw" not in names or len(names) < 2:
        print(f"speed: needs the raw encoder and one system trained with seed {seed}; skipped",
              flush=True)
        return
    done = ds.get("speed", {})
    if (already_measured(done, settings, args, rounds=args.speed_rounds)
            and speed_seed(done) == seed and sorted(done.get("models", {})) == sorted(names)):
        print("speed: already measured (--force to redo)", flush=True)
        return
    print(f"=== speed in one process: {', '.join(names)} (seed {seed}) ===", flush=True)
    work = WORK / "peers" / "runs" / args.run_key / args.dataset / "speed"
    cmd = [sys.executable, "-m", "benchmarks.peers.speed", "--data", data, "--out", work,
           "--rounds", args.speed_rounds, "--batch-sizes", args.batch_sizes,
           "--limit-b1", args.limit_b1, "--threads", args.threads]
    for name in names:
        cmd += ["--system", f"{name}={rel(model(name))}"]
    record = run_measurement("speed", cmd, work, args.timeout_infer, args.threads, settings,
                             seed=seed)
    store_measurement(path, args.dataset, "speed", record)

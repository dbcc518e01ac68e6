"""The results schema of the benchmarks: what the committed results files hold, field by field.

Two writers share it: `benchmarks.run` (the peer benchmark,
benchmarks/results/<date>-<machine>.json: a `PeerResults`) and `benchmarks.train_eval`
(benchmarks/results/training.json: a `TrainingRun` per tag). Both record the machine (`Machine`,
from benchmarks.machine) and the package versions (`Versions`) alike, read and write through
`load_results` / `save_results` (every path portable: benchmarks/paths.py), and their readers (the
report renderers) check a record with `check` before they render it, so a hand-edited or truncated
file fails naming the file and the missing field.

Files written before this schema are read as they are: a training run's `machine` was one string
("x86_64 AMD EPYC, 2 cores"), which `machine_text` shows unchanged.
"""
import json
import re
from pathlib import Path
from typing import Any, Dict, List, Mapping, NotRequired, Optional, TypedDict, Union

from .paths import portable_tree, rel
from .peers.common import write_json

PEER_KIND = "spacy-bert-crf peer benchmark"
Versions = Dict[str, Optional[str]]  # "python" and distribution name -> version (None: missing)


class Machine(TypedDict):
    cpu: str
    cores: Optional[int]
    memory_gib: Optional[float]  # None off Linux
    os: str
    torch_threads: int
    device: str  # "cpu" or "cuda:N"
    gpu: NotRequired[str]  # the GPU's name, with device "cuda:N"


class StepResult(TypedDict):
    """One subprocess (benchmarks.steps.run_step): how it ran and what it cost."""
    command: str  # the command line, portable
    returncode: int
    seconds: float  # wall clock
    timed_out: bool
    cpu_seconds: float  # user + system of the child and the children it waited for
    max_rss_mib: float  # the peak resident memory among them
    log: str  # the step's output, a path relative to the repository


class PeerResults(TypedDict):
    """A peer benchmark results file: one machine, one date, any datasets and systems."""
    kind: str  # PEER_KIND
    created: str
    date: str
    updated: NotRequired[str]
    machine: Machine
    versions: Versions
    flair_versions: NotRequired[Optional[Versions]]  # Flair's own virtualenv
    # dataset -> {"data": corpus statistics (benchmarks.data.prepare_data), "encoder",
    #   "systems": {name: {"settings", "description", "seeds": {seed: SeedRecord}}},
    #   "step_time" and "speed": whole-dataset measurements (benchmarks.measure)}
    datasets: Dict[str, Dict[str, Any]]
    notes: List[str]


class SeedRecord(TypedDict):
    """One system and seed of the peer benchmark (benchmarks.measure.run_seed)."""
    status: str  # "ok" or "failed"
    started: str
    finished: str
    loadavg_at_start: List[float]
    train: NotRequired[Dict[str, Any]]  # a StepResult + "budget" (+ "info": the peer's own)
    infer: NotRequired[Dict[str, Any]]  # a StepResult + "speed": {batch size: words/s, ...}
    scores: NotRequired[Dict[str, Dict[str, Any]]]  # split -> benchmarks.peers.score.score
    scale: NotRequired[Dict[str, Any]]  # a StepResult + "sizes" (or "error")
    failed_step: NotRequired[str]
    error: NotRequired[str]


class TrainingRun(TypedDict):
    """One crf_ner training of benchmarks.train_eval (training.json: tag -> TrainingRun)."""
    dataset: str
    encoder: str
    budget: str
    train_seconds: float
    threads: int
    gpu: bool
    command: str
    machine: Union[Machine, str]  # a string in files written before this schema
    versions: Versions
    date: str
    scores: Dict[str, Dict[str, Any]]  # "dev", "test" -> spacy_bert_crf.evaluate's report
    note: NotRequired[str]


class AblationRun(TypedDict):
    """One option and seed of benchmarks.ablations (results/ablations/<option>-s<seed>.json)."""
    option: str
    seed: int
    config: str  # the training config, relative to the repository
    corpus: str  # "sentences" or "documents"
    encoder: str
    steps: int  # training.max_steps of the trained config
    threads: int
    train_seconds: Optional[float]
    command: str
    machine: Machine
    versions: Versions
    date: str
    scores: Dict[str, Dict[str, Any]]  # "dev", "test" -> P/R/F overall and per type
    note: NotRequired[str]


class ResultsError(ValueError):
    """A results file that cannot be read or lacks a field its report needs."""


def check(record: Mapping[str, Any], kind: type, where: str) -> None:
    """Raise ResultsError naming `where` (file and key) when record lacks a required field of
    the TypedDict `kind`."""
    if not isinstance(record, Mapping):
        raise ResultsError(f"{where}: expected a {kind.__name__} object, "
                           f"got {type(record).__name__}")
    missing = sorted(set(kind.__required_keys__) - set(record))  # type: ignore[attr-defined]
    if missing:
        raise ResultsError(f"{where}: a {kind.__name__} without {', '.join(missing)}")


def load_results(path: Path, default: Optional[Mapping[str, Any]] = None) -> Any:
    """A results file with its paths made portable (files written before are read alike), or a
    copy of `default` when there is no file. Raises ResultsError for a file that is not JSON."""
    path = Path(path)
    if not path.exists():
        return json.loads(json.dumps(default or {}))
    try:
        return portable_tree(json.loads(path.read_text(encoding="utf8")))
    except ValueError as err:
        raise ResultsError(f"{rel(path)}: not a JSON results file ({err})") from None


def save_results(path: Path, results: Mapping[str, Any]) -> None:
    """Write a results file: committed, so every path in it is relative (benchmarks/paths.py),
    error tails and commands included."""
    write_json(path, portable_tree(results))


def new_peer_results(created: str, date: str) -> PeerResults:
    return {"kind": PEER_KIND, "created": created, "date": date, "machine": {},  # type: ignore
            "versions": {}, "datasets": {}, "notes": []}


def is_peer_results(data: Any) -> bool:
    return isinstance(data, dict) and data.get("kind") == PEER_KIND


def machine_text(machine: Union[Machine, str]) -> str:
    """One line about a machine: "Intel(R) Xeon(R) Processor, 16 cores, GPU NVIDIA H100"; a
    string (files written before this schema) as it is."""
    if isinstance(machine, str):
        return machine
    text = f"{machine['cpu']}, {machine['cores']} cores"
    return text + (f", GPU {machine['gpu']}" if machine.get("gpu") else "")


def versions_text(versions: Mapping[str, Optional[str]]) -> str:
    return ", ".join(f"{name} {version}" for name, version in versions.items())


def speed_seed(record: Mapping[str, Any]) -> Optional[int]:
    """The seed whose models a speed measurement timed: recorded, or (files written before it
    was) the one seed in the models' paths (.../seed<N>/...); None when that is not one."""
    if "seed" in record:
        return record["seed"]
    seeds = {int(m) for path in record.get("models", {}).values()
             for m in re.findall(r"/seed(\d+)/", str(path))}
    return seeds.pop() if len(seeds) == 1 else None

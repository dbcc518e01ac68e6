"""Temperature scaling of crf_ner's confidences (issue 16, item 4): the fit, its storage in the
pipeline, and `evaluate --fit-temperature`."""
import json
import math

import pytest
import spacy
import typer
from spacy.tokens import DocBin
from typer.testing import CliRunner

from spacy_bert_crf.calibration import (
    confidences,
    fit_scored,
    fit_temperature,
    log_loss,
    score_entities,
)
from spacy_bert_crf.cli.evaluate import evaluate_cli
from spacy_bert_crf.evaluate import EvaluationError, make_examples, predict, read_docbins, score

from .util import TRAIN_DATA, save_light_pipeline

# A corpus the lightly trained pipeline gets partly right: the labels of two entities changed.
GOLD_DATA = [
    (text, [(s, e, {"LOC": "ORG", "ORG": "LOC"}.get(label, label) if i in (1, 5) else label)
            for s, e, label in ents])
    for i, (text, ents) in enumerate(TRAIN_DATA)
]


def _run(*args):
    app = typer.Typer()
    app.command("evaluate")(evaluate_cli)
    app.command("other")(lambda: None)
    return CliRunner().invoke(app, ["evaluate", *[str(a) for a in args]])


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """(nlp, model dir, gold.spacy): a lightly trained pipeline, saved, and the gold corpus."""
    return save_light_pipeline(tmp_path_factory.mktemp("calibration"), GOLD_DATA, steps=12, lr=0.01)


def test_fit_minimises_the_log_loss(setup):
    nlp, _, gold = setup
    pipe = nlp.get_pipe("crf_ner")
    examples = make_examples(nlp, read_docbins(gold))[0]
    scored = score_entities(nlp, examples)
    flags = [ok for doc in scored.correct for ok in doc]
    assert scored.n_entities == len(flags) > 0 and any(flags) and not all(flags)
    fitted = fit_scored(pipe, scored)
    grid = [math.exp(x / 10) for x in range(-40, 23)]  # 0.018 .. 9.0
    best_on_grid = min(log_loss(confidences(pipe, scored, t)) for t in grid)
    assert log_loss(confidences(pipe, scored, fitted)) <= best_on_grid + 1e-6
    # the confidences at T = 1 are the ones the pipeline writes
    at_one = sorted(p for p, _ in confidences(pipe, scored, 1.0))
    written = sorted(
        float(p) for doc in nlp.pipe(t for t, _ in TRAIN_DATA)
        for p in doc.spans["crf_ner"].attrs["scores"]
    )
    assert at_one == pytest.approx(written, abs=1e-6)


def test_fit_temperature_reports_and_sets_nothing(setup):
    nlp, _, gold = setup
    pipe = nlp.get_pipe("crf_ner")
    result = fit_temperature(nlp, gold)
    assert pipe.temperature == 1.0  # the caller decides
    assert result.previous_temperature == 1.0 and result.n_entities > 0
    assert result.before["n_entities"] == result.after["n_entities"] == result.n_entities
    assert result.before["mean_confidence_correct"] != result.after["mean_confidence_correct"]
    data = result.to_dict()
    assert data["fitted_on"] == str(gold) and data["temperature"] == result.temperature


def test_fit_on_an_all_correct_corpus_hits_the_bound(setup, tmp_path):
    nlp, _, _ = setup
    predicted = DocBin()
    for doc in nlp.pipe(t for t, _ in TRAIN_DATA):  # its own predictions as gold
        predicted.add(doc)
    predicted.to_disk(tmp_path / "own.spacy")
    assert fit_temperature(nlp, tmp_path / "own.spacy").temperature == 0.01


def test_cli_fits_saves_and_reports_before_and_after(setup, tmp_path):
    nlp, model, gold = setup
    out = tmp_path / "m.json"
    saved = tmp_path / "calibrated"
    result = _run(model, gold, "--fit-temperature", gold, "--save-model", saved, "-o", out,
                  "--html", tmp_path / "m.html")
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text(encoding="utf8"))
    fitted = report["temperature"]
    loaded = spacy.load(saved)
    assert loaded.get_pipe("crf_ner").temperature == pytest.approx(fitted["temperature"])
    assert spacy.load(model).get_pipe("crf_ner").temperature == 1.0  # the source is untouched
    # "before" on the test data is what the uncalibrated pipeline reports itself
    plain = score(predict(spacy.load(model), gold))["confidence"]
    assert fitted["test"]["before"]["ece"] == pytest.approx(plain["ece"], abs=1e-6)
    assert fitted["test"]["after"] == report["confidence"]
    assert "ECE on" in result.output and "Fitted the confidence temperature" in result.output
    page = (tmp_path / "m.html").read_text(encoding="utf8")
    assert "Reliability" in page and f"T={fitted['temperature']:.2f}" in page


def test_cli_save_model_needs_fit(setup, tmp_path):
    _, model, gold = setup
    result = _run(model, gold, "--save-model", tmp_path / "x")
    assert result.exit_code == 1 and "--fit-temperature" in result.output


def test_fit_needs_one_crf_ner(setup):
    with pytest.raises(EvaluationError, match="Expected one crf_ner"):
        fit_temperature(spacy.blank("en"), setup[2])

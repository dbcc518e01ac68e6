"""Temperature scaling of crf_ner's confidences (issue 16, item 4): the fit, its storage in the
pipeline, and `evaluate --fit-temperature`."""
import json
import math

import numpy
import pytest
import spacy
import typer
from spacy.tokens import DocBin
from typer.testing import CliRunner

from spacy_bert_crf.calibration import (
    confidences,
    fit_mention_temperatures,
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


# --------------------------------------------------------------- mention temperatures


def _fresh(setup):
    """The saved light pipeline, loaded anew (the tests below change its settings)."""
    return spacy.load(setup[1])


def _entity_scores(nlp, texts):
    """[(text of the entity, its confidence)] over the docs, and the candidates likewise."""
    docs = list(nlp.pipe(texts))
    ents = [(s.text, float(p)) for d in docs
            for s, p in zip(d.spans["crf_ner"], d.spans["crf_ner"].attrs["scores"])]
    cands = [(s.text, s.start, s.label_, float(p)) for d in docs
             for s, p in zip(d.spans["cands"], d.spans["cands"].attrs["scores"])]
    return ents, cands


def test_initialize_records_the_training_mentions(setup):
    nlp = _fresh(setup)
    pipe = nlp.get_pipe("crf_ner")
    texts = {text[s:e] for text, ents in TRAIN_DATA for s, e, _ in ents}
    assert len(pipe.mentions) == len(texts) and pipe.mentions.dtype == numpy.uint64
    assert all(pipe.is_seen(t) for t in texts)
    assert not pipe.is_seen("Lisbon Monday") and not pipe.is_seen("maria lopez")
    assert pipe.mention_temperatures is None  # until fitted
    with pytest.raises(ValueError, match="entity texts"):
        pipe.set_mentions(["Oslo", 42])
    # the hashes only: no entity text is stored with the pipe
    assert "Nairobi" not in (setup[1] / "crf_ner" / "cfg").read_text(encoding="utf8")
    assert b"Nairobi" not in (setup[1] / "crf_ner" / "mentions").read_bytes()


def test_mention_temperatures_settings_and_serialization(setup, tmp_path):
    nlp = _fresh(setup)
    pipe = nlp.get_pipe("crf_ner")
    for bad in (0.5, (1.0,), (1.0, 0.0), (1.0, 11.0), ("a", 1.0)):
        with pytest.raises(ValueError, match="mention_temperatures|temperature"):
            pipe.mention_temperatures = bad
    pipe.mention_temperatures = (0.8, 1.6)
    nlp.to_disk(tmp_path / "m")
    loaded = spacy.load(tmp_path / "m").get_pipe("crf_ner")
    assert loaded.mention_temperatures == (0.8, 1.6)
    assert list(loaded.mentions) == list(pipe.mentions)
    again = spacy.load(setup[1])
    again.from_bytes(nlp.to_bytes())
    assert again.get_pipe("crf_ner").mention_temperatures == (0.8, 1.6)
    assert list(again.get_pipe("crf_ner").mentions) == list(pipe.mentions)
    pipe.mention_temperatures = None
    assert pipe.mention_temperatures is None
    # a pipeline saved before mentions were recorded loads with none, and refuses the setting
    (tmp_path / "m" / "crf_ner" / "mentions").unlink()
    old = spacy.load(tmp_path / "m").get_pipe("crf_ner")
    assert len(old.mentions) == 0
    old.mention_temperatures = None
    with pytest.raises(ValueError, match="no training mentions"):
        old.mention_temperatures = (1.0, 2.0)
    (tmp_path / "m" / "crf_ner" / "mentions").write_bytes(b"12345")
    with pytest.raises(ValueError, match="damaged"):
        spacy.load(tmp_path / "m")


def test_each_span_gets_the_temperature_of_its_group(setup):
    """Entities and candidates seen in training get the first temperature, the others the
    second: the same confidences as the pipe at that one temperature."""
    texts = [t for t, _ in TRAIN_DATA]
    settings = {"candidates_key": "cands", "candidates_threshold": 0.01}

    def at(temperature=1.0, pair=None, mentions=None):
        nlp = spacy.load(setup[1], config={"components.crf_ner": settings})
        pipe = nlp.get_pipe("crf_ner")
        if mentions is not None:
            pipe.set_mentions(mentions)
        pipe.temperature = temperature
        pipe.mention_temperatures = pair
        return _entity_scores(nlp, texts)

    ents, _ = at()
    assert len(ents) >= 4
    seen = sorted({t for t, _ in ents})[::2]  # half the predicted texts count as seen
    low, high = at(0.5), at(3.0)
    assert len(high[1]) > len(high[0])  # more candidates than entities where it is flatter
    mixed = at(1.0, (0.5, 3.0), seen)
    assert any(t in seen for t, _ in mixed[0]) and any(t not in seen for t, _ in mixed[0])
    for (text, p), p_low, p_high in zip(mixed[0], low[0], high[0]):
        assert p == pytest.approx((p_low if text in seen else p_high)[1], abs=1e-6)
    # candidates: each kept at its own group's temperature (threshold applied there)
    expected = sorted(
        [c for c in low[1] if c[0] in seen] + [c for c in high[1] if c[0] not in seen]
    )
    got = sorted(mixed[1])
    assert [c[:3] for c in got] == [c[:3] for c in expected]
    assert [c[3] for c in got] == pytest.approx([c[3] for c in expected], abs=1e-6)
    assert [c[:3] for c in got] != [c[:3] for c in sorted(low[1])]
    assert [c[:3] for c in got] != [c[:3] for c in sorted(high[1])]
    # the entities themselves, and n-best (one temperature), do not change
    nlp = spacy.load(setup[1])
    pipe = nlp.get_pipe("crf_ner")
    before = pipe.nbest(list(nlp.pipe([texts[0]], disable=["crf_ner"])), 3)
    pipe.mention_temperatures = (0.5, 2.0)
    plain = spacy.load(setup[1])(texts[0])
    assert [e.text for e in nlp(texts[0]).ents] == [e.text for e in plain.ents]
    after = pipe.nbest(list(nlp.pipe([texts[0]], disable=["crf_ner"])), 3)
    assert len(before[0]) == 3
    assert [p for _, p in after[0]] == pytest.approx([p for _, p in before[0]])


def test_fit_mention_temperatures_minimise_each_groups_loss(setup):
    nlp = _fresh(setup)
    pipe = nlp.get_pipe("crf_ner")
    examples = make_examples(nlp, read_docbins(setup[2]))[0]
    predicted = [s.text for d in nlp.pipe(t for t, _ in TRAIN_DATA) for s in d.spans["crf_ner"]]
    pipe.set_mentions(sorted(set(predicted))[::2])
    scored = score_entities(nlp, examples)
    seen = [s for doc in scored.seen for s in doc]
    assert any(seen) and not all(seen)
    assert fit_mention_temperatures(pipe, scored) is None  # far fewer than 200 entities a group
    pair = fit_mention_temperatures(pipe, scored, min_entities=1)
    flags = [ok for doc in scored.correct for ok in doc]
    grid = [math.exp(x / 10) for x in range(-40, 23)]
    for group, fitted in zip((True, False), pair):
        ok = [f for f, s in zip(flags, seen) if s == group]
        if all(ok) or not any(ok):  # the bound, as for one temperature
            assert fitted in (0.01, 10.0)
            continue

        def loss(t):
            pairs = confidences(pipe, scored, t)
            return log_loss([x for x, s in zip(pairs, seen) if s == group])

        assert loss(fitted) <= min(loss(t) for t in grid) + 1e-6
    # stratified confidences are the group's at its temperature
    mixed = confidences(pipe, scored, 1.0, mention_temperatures=(0.5, 2.0))
    low, high = confidences(pipe, scored, 0.5), confidences(pipe, scored, 2.0)
    assert mixed == [a if s else b for a, b, s in zip(low, high, seen)]


def test_fit_temperature_with_mentions_and_the_cli(setup, tmp_path, monkeypatch):
    import spacy_bert_crf.calibration as calibration

    nlp, model, gold = setup
    monkeypatch.setattr(calibration, "MIN_GROUP_ENTITIES", 1)
    train = tmp_path / "train.spacy"
    predicted = [s.text for d in nlp.pipe(t for t, _ in TRAIN_DATA) for s in d.spans["crf_ner"]]
    half = sorted(set(predicted))[::2]
    bin_ = DocBin()
    blank = spacy.blank("en")
    for text in half:  # one entity per doc: the whole text
        doc = blank(text)
        doc.ents = [doc.char_span(0, len(text), label="X")]
        bin_.add(doc)
    bin_.to_disk(train)
    out, saved = tmp_path / "m.json", tmp_path / "calibrated"
    result = _run(model, gold, "--fit-temperature", gold, "--mentions", train,
                  "--save-model", saved, "-o", out, "--html", tmp_path / "m.html")
    assert result.exit_code == 0, result.output
    assert f"Recorded {len(half)} distinct entity texts" in result.output
    report = json.loads(out.read_text(encoding="utf8"))["temperature"]
    pair = report["mention_temperatures"]
    assert set(pair) == {"seen", "unseen"} and 0 < report["n_seen"] < report["n_entities"]
    loaded = spacy.load(saved).get_pipe("crf_ner")
    assert loaded.mention_temperatures == pytest.approx((pair["seen"], pair["unseen"]))
    assert len(loaded.mentions) == len(half)
    assert report["after_single"] is not None and report["test"]["after_single"] is not None
    assert "seen in training" in result.output
    page = (tmp_path / "m.html").read_text(encoding="utf8")  # both curves in the diagram
    assert f"T={report['temperature']:.2f} (ECE" in page and "unseen (ECE" in page
    # --single-temperature fits the one temperature only
    result = _run(model, gold, "--fit-temperature", gold, "--mentions", train,
                  "--single-temperature", "-o", out)
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text(encoding="utf8"))["temperature"]
    assert report["mention_temperatures"] is None and report["after_single"] is None
    # --mentions belongs to a fit
    assert _run(model, gold, "--mentions", train).exit_code == 1

"""The evaluate command: metrics JSON, confidence calibration, HTML error report and clear errors.

A tiny pipeline overfits TRAIN_DATA; the gold corpus relabels one entity (Oslo: LOC -> ORG), so the
pipeline makes exactly one (wrong-label) error, in doc 2.
"""
import json
import subprocess
import sys

import numpy
import pytest
import spacy
import typer
from spacy.scorer import get_ner_prf
from spacy.tokens import DocBin, SpanGroup
from spacy.training import Example
from typer.testing import CliRunner

from spacy_bert_crf.cli.evaluate import evaluate_cli
from spacy_bert_crf.error_report import label_colors, render_errors
from spacy_bert_crf.evaluate import (
    EvaluationError,
    Prediction,
    calibration,
    evaluate,
    find_errors,
    score,
)

from .util import TRAIN_DATA, make_examples, save_light_pipeline

ERROR_DOC = 2  # "Kenji met Olga in Oslo."
GOLD_DATA = [
    (text, [(s, e, "ORG" if (i, s) == (ERROR_DOC, 18) else label) for s, e, label in ents])
    for i, (text, ents) in enumerate(TRAIN_DATA)
]
# Counts per type with Oslo relabelled ORG in the gold data and predicted LOC.
EXPECTED = {
    "LOC": {"gold": 4, "predicted": 5, "tp": 4},
    "ORG": {"gold": 3, "predicted": 2, "tp": 2},
    "PER": {"gold": 4, "predicted": 4, "tp": 4},
}


def _app() -> typer.Typer:
    app = typer.Typer()
    app.command("evaluate")(evaluate_cli)
    app.command("other")(lambda: None)  # two commands, so "evaluate" is a subcommand as in cli/
    return app


def _run(*args: str):
    return CliRunner().invoke(_app(), ["evaluate", *[str(a) for a in args]])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(model_dir, gold.spacy, nlp): the overfitted pipeline, saved, and the gold corpus."""
    nlp, model, gold = save_light_pipeline(
        tmp_path_factory.mktemp("evaluate"), GOLD_DATA, steps=80, lr=0.01
    )
    return model, gold, nlp


@pytest.fixture(scope="module")
def cli_run(trained):
    model, gold, _ = trained
    out = gold.parent / "metrics"
    result = _run(model, gold, "-o", out / "m.json", "--html", out / "m.html", "--max-docs", 5)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "m.json").read_text(encoding="utf8"))
    return result, report, (out / "m.html").read_text(encoding="utf8")


def test_cli_json_counts(cli_run, trained):
    _, report, _ = cli_run
    assert report["n_docs"] == len(TRAIN_DATA)
    assert report["n_tokens"] == sum(len(eg.predicted) for eg in make_examples(trained[2]))
    assert report["ents_gold"] == 11 and report["ents_predicted"] == 11 and report["ents_tp"] == 10
    assert report["ents_p"] == pytest.approx(10 / 11) and report["ents_r"] == pytest.approx(10 / 11)
    assert report["ents_f"] == pytest.approx(10 / 11)
    assert report["errors"] == {"docs_with_errors": 1, "missed": 0, "spurious": 0, "wrong_label": 1}
    for label, counts in EXPECTED.items():
        scores = report["ents_per_type"][label]
        assert {k: scores[k] for k in counts} == counts
        p, r = counts["tp"] / counts["predicted"], counts["tp"] / counts["gold"]
        assert scores["p"] == pytest.approx(p) and scores["r"] == pytest.approx(r)
        assert scores["f"] == pytest.approx(2 * p * r / (p + r))
    assert set(report["ents_per_type"]) == set(EXPECTED)
    assert report["words_per_second"] > 0
    assert report["model"]["path"] == str(trained[0]) and report["data_path"] == str(trained[1])
    assert report["versions"]["spacy"] == spacy.__version__ and report["versions"]["spacy_bert_crf"]
    assert report["date"]


def test_cli_confidence(cli_run):
    conf = cli_run[1]["confidence"]
    assert sum(b["count"] for b in conf["bins"]) == conf["n_entities"] == 11
    assert conf["n_correct"] == 10 and len(conf["bins"]) == 10
    assert 0 <= conf["mean_confidence_incorrect"] <= 1
    assert 0.5 < conf["mean_confidence_correct"] <= 1
    assert 0 <= conf["ece"] <= 1


def test_cli_html_and_table(cli_run):
    result, _, page = cli_run
    assert page.count('<section class="doc"') == 1 and f'id="doc-{ERROR_DOC}"' in page
    assert "Oslo" in page and "0 missed, 0 spurious, 1 wrong label" in page
    assert "gold ORG, predicted LOC" in page
    for text, _ in TRAIN_DATA[:ERROR_DOC] + TRAIN_DATA[ERROR_DOC + 1 :]:
        assert text.split()[1] not in page  # "Lopez", "Acme", "happened": error-free docs
    assert "omitted)" not in page
    for label in EXPECTED:  # the printed per-type table
        assert label in result.output
    assert "wrong label" in result.output


def test_library_matches_spacy(trained):
    """The report's numbers equal spaCy's own scorer (nlp.evaluate) on the same examples."""
    model, gold, nlp = trained
    report = evaluate(nlp, gold, batch_size=2)
    examples = make_examples(nlp, GOLD_DATA)
    spacy_scores = nlp.evaluate(examples)
    for key in ("ents_p", "ents_r", "ents_f"):
        assert report[key] == pytest.approx(spacy_scores[key])
    for label, prf in spacy_scores["ents_per_type"].items():
        assert report["ents_per_type"][label]["f"] == pytest.approx(prf["f"])
    assert evaluate(model, gold)["ents_tp"] == 10  # from a path too


def _example(text, gold_ents, pred_ents, scores=None, key="crf_ner"):
    nlp = spacy.blank("en")
    eg = Example.from_dict(nlp.make_doc(text), {"entities": gold_ents})
    pred = eg.predicted
    pred.ents = [pred.char_span(s, e, label=label) for s, e, label in pred_ents]
    if scores is not None:
        attrs = {"scores": numpy.asarray(scores, dtype="float32")}
        pred.spans[key] = SpanGroup(pred, name=key, spans=list(pred.ents), attrs=attrs)
    return eg


def test_find_errors_categories():
    text = "Ann met Bob in Rome and Paris."
    gold = [(0, 3, "PER"), (8, 11, "PER"), (15, 19, "LOC")]
    pred = [(0, 3, "PER"), (8, 11, "ORG"), (24, 29, "LOC")]
    errors = find_errors(_example(text, gold, pred))
    assert errors.correct == [("PER", 0, 1)]
    assert errors.wrong_label == [(("PER", 2, 3), ("ORG", 2, 3))]
    assert errors.spurious == [("LOC", 6, 7)] and errors.missed == [("LOC", 4, 5)]
    assert errors.n_errors == 3
    assert [ok for *_, ok in errors.scored] == [True, False, False]
    eg = _example(text, gold, pred)
    assert get_ner_prf([eg])["ents_p"] == pytest.approx(1 / 3)


def test_score_confidence_from_span_group():
    """Confidences come from doc.spans[<a component's spans_key>].attrs["scores"], else None."""
    text = "Ann met Bob in Rome."
    gold = [(0, 3, "PER"), (8, 11, "PER")]
    pred = [(0, 3, "PER"), (8, 11, "ORG"), (15, 19, "LOC")]
    scored = _example(text, gold, pred, scores=[0.9, 0.6, 0.25], key="mine")
    report = score(Prediction([scored], [0], 1.0, spans_keys=["crf_ner", "mine"]))
    conf = report["confidence"]
    assert conf["n_entities"] == 3 and conf["n_correct"] == 1
    assert conf["mean_confidence_correct"] == pytest.approx(0.9)
    assert conf["mean_confidence_incorrect"] == pytest.approx((0.6 + 0.25) / 2)
    assert [b["count"] for b in conf["bins"]] == [0, 0, 1, 0, 0, 0, 1, 0, 0, 1]
    assert report["errors"] == {"docs_with_errors": 1, "missed": 0, "spurious": 1, "wrong_label": 1}
    assert report["ents_per_type"]["PER"] == {
        "p": 1.0, "r": 0.5, "f": pytest.approx(2 / 3), "gold": 2, "predicted": 1, "tp": 1
    }
    assert report["words_per_second"] == pytest.approx(len(scored.predicted))
    plain = score(Prediction([_example(text, gold, pred)], [0], 1.0))
    assert plain["confidence"] is None and plain["ents_tp"] == 1


def test_calibration_values():
    conf = calibration([(0.95, True), (0.91, False), (1.0, True), (0.15, False), (0.0, False)])
    counts = [b["count"] for b in conf["bins"]]
    assert counts == [1, 1, 0, 0, 0, 0, 0, 0, 0, 3] and sum(counts) == 5
    top = conf["bins"][9]
    assert top["mean_confidence"] == pytest.approx((0.95 + 0.91 + 1.0) / 3)
    assert top["accuracy"] == pytest.approx(2 / 3)
    assert conf["bins"][5]["mean_confidence"] is None
    expected_ece = 3 / 5 * abs(2 / 3 - 2.86 / 3) + 1 / 5 * 0.15 + 1 / 5 * 0.0
    assert conf["ece"] == pytest.approx(expected_ece)
    assert conf["mean_confidence_correct"] == pytest.approx(0.975)
    assert conf["mean_confidence_incorrect"] == pytest.approx((0.91 + 0.15) / 3)


def test_render_errors_escapes_and_limits():
    bad = _example("x <b> Tom & Ann", [(6, 9, "PER")], [(6, 9, "A<B")])
    good = _example("Oslo rocks", [(0, 4, "LOC")], [(0, 4, "LOC")])
    page = render_errors([bad, good, bad, bad], max_docs=2)
    assert "<b>Tom" not in page and "&lt;b&gt;" in page and "A&lt;B" in page and "A<B" not in page
    assert page.count('<section class="doc"') == 2 and "1 omitted" in page
    assert "Oslo rocks" not in page
    # a colour for a label displaCy has none for
    assert f"background: {label_colors(['A<B'])['A<B']}" in page
    colors = label_colors(["A<B", "PER", "ORG", "LOC", "CUSTOM_1"])  # PER has no displaCy colour
    assert set(colors) == {"A<B", "PER", "ORG", "LOC", "CUSTOM_1"}
    assert len(set(colors.values())) == 5
    assert len(set(label_colors([f"L{i}" for i in range(40)]).values())) > 30
    assert "no errors" in render_errors([good]).lower()


def test_cli_missing_model(trained, tmp_path):
    result = _run(tmp_path / "no-model", trained[1])
    assert result.exit_code == 1
    assert "Model not found" in result.output and "no-model" in result.output


def test_cli_invalid_model_and_empty_corpus(trained, tmp_path):
    result = _run(tmp_path, trained[1])  # a directory, but no pipeline
    assert result.exit_code == 1 and "Can't load the pipeline" in result.output
    assert str(tmp_path) in result.output.replace("\n", "")
    DocBin().to_disk(tmp_path / "empty.spacy")
    result = _run(trained[0], tmp_path / "empty.spacy")
    assert result.exit_code == 1 and "No non-empty docs" in result.output


def test_cli_missing_and_invalid_data(trained, tmp_path):
    result = _run(trained[0], tmp_path / "missing.spacy")
    assert result.exit_code == 1
    assert "Data file not found" in result.output and "missing.spacy" in result.output
    junk = tmp_path / "junk.spacy"
    junk.write_bytes(b"not a docbin at all")
    result = _run(trained[0], junk)
    assert result.exit_code == 1 and "junk.spacy" in result.output and "DocBin" in result.output
    (tmp_path / "empty-dir").mkdir()
    with pytest.raises(EvaluationError, match="No .spacy files"):
        evaluate(trained[2], tmp_path / "empty-dir")


def test_sort_by_length_keeps_corpus_order_and_scores(trained):
    """Docs go through nlp.pipe shortest first, but every example stays paired with its own gold
    doc and the scores are those of the in-order pass."""
    from spacy_bert_crf.evaluate import predict

    _, gold, nlp = trained
    lengths = [len(eg.predicted) for eg in make_examples(nlp, GOLD_DATA)]
    assert lengths != sorted(lengths), "the sample must not already be sorted"
    sorted_pass = predict(nlp, gold, batch_size=2, sort_by_length=True)
    in_order = predict(nlp, gold, batch_size=2, sort_by_length=False)
    for a, b in zip(sorted_pass.examples, in_order.examples):
        assert a.predicted.text == a.reference.text == b.predicted.text
        assert [(e.start, e.end, e.label_) for e in a.predicted.ents] == [
            (e.start, e.end, e.label_) for e in b.predicted.ents
        ]
    keys = ("ents_p", "ents_r", "ents_f", "ents_per_type")
    assert {k: score(sorted_pass)[k] for k in keys} == {k: score(in_order)[k] for k in keys}


def test_no_wordpiece_count_absent_without_transformer(cli_run):
    assert cli_run[1]["tokens_without_wordpieces"] is None


def test_tokens_without_wordpieces_are_counted(tiny_bert_dir, tmp_path):
    """Characters the tokenizer drops (U+200B, U+FEFF) get no wordpiece: counted and warned."""
    from .util import make_trf_nlp

    nlp = make_trf_nlp(tiny_bert_dir)
    nlp.initialize(lambda: make_examples(nlp))
    nlp.to_disk(tmp_path / "model")
    gold = [("Olga \u200b met Kenji in Oslo .", [(0, 4, "PER")]),
            ("Maria \ufeff flew to Lisbon \u200b .", [(0, 5, "PER")]),
            ("Rain fell over Quito .", [(15, 20, "LOC")])]
    docbin = DocBin()
    for eg in make_examples(nlp, gold):
        docbin.add(eg.reference)
    docbin.to_disk(tmp_path / "gold.spacy")
    result = _run(tmp_path / "model", tmp_path / "gold.spacy", "-o", tmp_path / "m.json")
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "m.json").read_text(encoding="utf8"))
    n_tokens = report["n_tokens"]
    assert report["tokens_without_wordpieces"] == {
        "count": 3, "n_tokens": n_tokens, "share": pytest.approx(3 / n_tokens)
    }
    assert "3 tokens" in result.output and "got no wordpiece" in result.output


# With torch unimportable, import MODULES (through the real package __init__); prints the first
# module that fails.
_IMPORT_WITHOUT_TORCH = """
import importlib, sys
sys.modules["torch"] = None  # `import torch` now raises ImportError
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
    except ImportError as err:
        print(f"{name}: {err}")
        sys.exit(1)
"""


def _import_without_torch(*modules: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-c", _IMPORT_WITHOUT_TORCH, *modules]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def test_evaluator_and_error_report_import_without_torch():
    """Evaluation needs spaCy only: its modules import where torch cannot be imported."""
    result = _import_without_torch(
        "spacy_bert_crf", "spacy_bert_crf.evaluate", "spacy_bert_crf.error_report",
        "spacy_bert_crf.corpora", "spacy_bert_crf.corpora.convert",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # the check can fail: the component's layers do need torch
    result = _import_without_torch("spacy_bert_crf.layers.transformer")
    assert result.returncode == 1 and "torch" in result.stdout, result.stdout + result.stderr


def test_pr_curve_over_thresholds_includes_flagged_entities():
    """The curve counts every predicted entity kept at each threshold, those a threshold already
    took out of doc.ents (flagged in the span group) included; entities without a confidence
    are always kept."""
    text = "Ann met Bob in Rome and Paris."
    gold = [(0, 3, "PER"), (8, 11, "PER"), (15, 19, "LOC")]
    eg = _example(text, gold, [(0, 3, "PER"), (8, 11, "ORG")])
    pred = eg.predicted
    rome = pred.char_span(15, 19, label="LOC")
    group = [pred.ents[0], pred.ents[1], rome]
    pred.spans["crf_ner"] = SpanGroup(pred, name="crf_ner", spans=group, attrs={
        "scores": numpy.asarray([0.9, 0.6, 0.3], dtype="float32"),
        "below_threshold": numpy.asarray([False, False, True]),
    })
    paris = _example("Paris.", [(0, 5, "LOC")], [(0, 5, "LOC")])  # no confidence: always kept
    report = score(Prediction([eg, paris], [0, 1], 1.0))
    curve = {round(c["threshold"], 2): c for c in report["pr_curve"]}
    assert report["ents_gold"] == 4 and report["ents_tp"] == 2  # Rome is not in doc.ents
    assert (curve[0.0]["predicted"], curve[0.0]["tp"]) == (4, 3)  # Rome back in: correct
    assert curve[0.0]["p"] == pytest.approx(3 / 4) and curve[0.0]["r"] == pytest.approx(3 / 4)
    assert (curve[0.35]["predicted"], curve[0.35]["tp"]) == (3, 2)  # as the pipe predicted
    assert (curve[0.65]["predicted"], curve[0.65]["tp"]) == (2, 2)
    assert curve[0.65]["p"] == 1.0 and curve[0.65]["r"] == pytest.approx(0.5)
    assert (curve[0.95]["predicted"], curve[0.95]["tp"]) == (1, 1)  # Paris only
    assert curve[0.95]["f"] == pytest.approx(2 * 1.0 * 0.25 / 1.25)
    page = render_errors([eg, paris], report=report)
    assert "Precision / recall over confidence thresholds" in page and "<svg" in page
    assert "Reliability" in page


def test_cli_predictions_jsonl_has_confidences(trained, tmp_path):
    model, gold, _ = trained
    out = tmp_path / "pred.jsonl"
    result = _run(model, gold, "--predictions", out)
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text(encoding="utf8").splitlines()]
    assert len(rows) == len(TRAIN_DATA)
    first = rows[0]
    assert [(e["start"], e["end"], e["label"]) for e in first["ents"]] == TRAIN_DATA[0][1]
    assert all(0.5 < e["score"] <= 1.0 for e in first["ents"])
    assert [e["score"] for e in first["spans"]["crf_ner"]] == [e["score"] for e in first["ents"]]
    assert all(e["below_threshold"] is False for e in first["spans"]["crf_ner"])

"""`python -m spacy_bert_crf evaluate`: P/R/F per type, speed and confidence calibration of a
pipeline on a .spacy corpus, as metrics JSON and an optional HTML error report."""
import json
from pathlib import Path
from typing import Any, Dict, Optional

import spacy
import srsly
import typer
from wasabi import msg

from ..error_report import render_errors
from ..evaluate import EvaluationError, load_model, predict, read_docbins, score


def evaluate_cli(
    # fmt: off
    model: str = typer.Argument(..., metavar="MODEL", help="Pipeline directory or installed package"),
    data_path: Path = typer.Argument(..., metavar="DATA_PATH", help=".spacy (DocBin) file, or a directory of them, with gold entities"),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write the metrics JSON here", dir_okay=False),
    html_path: Optional[Path] = typer.Option(None, "--html", help="Write an HTML error report (displaCy) here", dir_okay=False),
    predictions_path: Optional[Path] = typer.Option(None, "--predictions", help="Write the predicted docs here as JSONL (doc.to_json() with the entities' confidences, see confidences.doc_to_json)", dir_okay=False),
    gpu_id: int = typer.Option(-1, "--gpu-id", "-g", help="GPU id, or -1 for CPU"),
    batch_size: int = typer.Option(64, "--batch-size", "-b", min=1, help="Batch size of nlp.pipe"),
    max_docs: int = typer.Option(200, "--max-docs", min=0, help="At most this many docs with errors in the HTML report"),
    gold_preproc: bool = typer.Option(False, "--gold-preproc", "-G", help="Predict on the gold tokenization"),
    sort_by_length: bool = typer.Option(True, "--sort-by-length/--in-order", help="Feed docs to nlp.pipe sorted by length (less padding; scores are the same)"),
    fit_temperature: Optional[Path] = typer.Option(None, "--fit-temperature", help="Fit crf_ner's confidence temperature on this .spacy corpus (dev data) first; the report shows the calibration before and after"),
    mentions: Optional[Path] = typer.Option(None, "--mentions", help="With --fit-temperature: record the entity texts of this .spacy corpus (the training data) as the pipe's training mentions first, for a pipeline initialized before they were recorded", exists=True),
    by_mention: bool = typer.Option(True, "--by-mention/--single-temperature", help="With --fit-temperature: also fit one temperature for the entities seen in training and one for the others, when the pipe knows its training mentions"),
    save_model: Optional[Path] = typer.Option(None, "--save-model", help="With --fit-temperature: save the calibrated pipeline here (may be MODEL itself)", file_okay=False),
    # fmt: on
) -> None:
    """Evaluate a pipeline's entities on a .spacy corpus: P/R/F per type, speed, confidence
    calibration and a precision/recall curve over confidence thresholds; JSON metrics (P/R/F as
    0-1 fractions) and an optional HTML error report. With --fit-temperature, first fit the
    temperature of crf_ner's confidences on dev data (and save the pipeline with --save-model)."""
    if save_model is not None and fit_temperature is None:
        msg.fail("--save-model saves a calibrated pipeline: give --fit-temperature too", exits=1)
    if mentions is not None and fit_temperature is None:
        msg.fail("--mentions is for the fit of --fit-temperature: give it too", exits=1)
    fitted = None
    try:
        docbins = read_docbins(data_path)
        if gpu_id >= 0:
            _use_gpu(gpu_id)
        nlp = load_model(model)
        if fit_temperature is not None:
            fitted = _fit(nlp, fit_temperature, batch_size, gold_preproc, save_model, mentions,
                          by_mention)
        prediction = predict(
            nlp, data_path, batch_size=batch_size, gold_preproc=gold_preproc, docbins=docbins,
            sort_by_length=sort_by_length,
        )
    except (EvaluationError, OSError) as err:
        msg.fail(str(err), exits=1)
    if not prediction.examples:
        msg.fail(f"No non-empty docs in {data_path}", exits=1)
    prediction.model["path"] = model
    report = score(prediction)
    if fitted is not None:
        from ..calibration import calibration_at

        report["temperature"] = {
            **fitted.to_dict(),
            "test": {
                "before": calibration_at(nlp, prediction, fitted.previous_temperature),
                "after": report["confidence"],
                # with mention temperatures: what the one fitted temperature alone gives
                "after_single": (
                    None if fitted.mention_temperatures is None
                    else calibration_at(nlp, prediction, fitted.temperature)
                ),
            },
        }
    msg.good(
        f"Evaluated {report['n_docs']} docs ({report['n_tokens']} tokens) at "
        f"{report['words_per_second'] or 0:,.0f} words/s"
    )
    print_table(report)
    errors = report["errors"]
    msg.text(
        f"Docs with errors: {errors['docs_with_errors']} ({errors['missed']} missed, "
        f"{errors['spurious']} spurious, {errors['wrong_label']} wrong label)"
    )
    if report["n_docs_unannotated"]:
        msg.warn(f"Skipped {report['n_docs_unannotated']} gold docs without NER annotation")
    gaps = report["tokens_without_wordpieces"]
    if gaps is not None and gaps["count"]:
        msg.warn(
            f"{gaps['count']} tokens ({gaps['share']:.2%}) got no wordpiece from the transformer "
            f"(characters its tokenizer drops) and were decoded as O"
        )
    conf = report["confidence"]
    if conf is not None:
        msg.text(
            f"Confidence: correct {_fmt(conf['mean_confidence_correct'])}, incorrect "
            f"{_fmt(conf['mean_confidence_incorrect'])}, ECE {_fmt(conf['ece'])}"
        )
    if fitted is not None:
        test = report["temperature"]["test"]
        line = (
            f"ECE on {data_path}: {_fmt((test['before'] or {}).get('ece'))} at T="
            f"{fitted.previous_temperature:g}, {_fmt((test['after'] or {}).get('ece'))} at the "
            f"fitted {_temperatures(fitted)}"
        )
        if test["after_single"] is not None:
            line += f" ({_fmt(test['after_single'].get('ece'))} at T={fitted.temperature:.3f} alone)"
        msg.text(line)
    try:
        if output is not None:
            output.parent.mkdir(parents=True, exist_ok=True)
            output.write_text(json.dumps(report, indent=2) + "\n", encoding="utf8")
            msg.good(f"Saved metrics to {output}")
        if predictions_path is not None:
            from ..confidences import doc_to_json

            predictions_path.parent.mkdir(parents=True, exist_ok=True)
            srsly.write_jsonl(
                predictions_path, (doc_to_json(eg.predicted) for eg in prediction.examples)
            )
            msg.good(f"Saved the predicted docs to {predictions_path}")
        if html_path is not None:
            page = render_errors(
                prediction.examples, indices=prediction.indices, max_docs=max_docs, report=report
            )
            html_path.parent.mkdir(parents=True, exist_ok=True)
            html_path.write_text(page, encoding="utf8")
            msg.good(f"Saved the error report to {html_path}")
    except OSError as err:
        msg.fail(str(err), exits=1)


def _temperatures(fitted) -> str:
    if fitted.mention_temperatures is None:
        return f"T={fitted.temperature:.3f}"
    seen, unseen = fitted.mention_temperatures
    return (f"T={fitted.temperature:.3f} (entities seen in training: {seen:.3f}, unseen: "
            f"{unseen:.3f})")


def _fit(
    nlp, dev_path: Path, batch_size: int, gold_preproc: bool, save_model: Optional[Path],
    mentions: Optional[Path] = None, by_mention: bool = True,
):
    """Fit and set the temperature(s) of the pipeline's crf_ner on dev_path; save if asked."""
    from ..calibration import find_pipe, fit_temperature

    pipe = find_pipe(nlp)[1]
    if mentions is not None:
        pipe.set_mentions(
            ent.text for docbin in read_docbins(mentions) for doc in docbin.get_docs(nlp.vocab)
            for ent in doc.ents
        )
        msg.info(f"Recorded {len(pipe.mentions)} distinct entity texts of {mentions}")
    fitted = fit_temperature(
        nlp, dev_path, batch_size=batch_size, gold_preproc=gold_preproc, by_mention=by_mention
    )
    fitted.apply(pipe)
    msg.good(
        f"Fitted the confidence temperature on {dev_path} ({fitted.n_entities} entities, "
        f"{fitted.n_seen} seen in training): {_temperatures(fitted)}, ECE there "
        f"{_fmt(fitted.before['ece'])} -> {_fmt(fitted.after['ece'])}"
    )
    if save_model is not None:
        nlp.to_disk(save_model)
        msg.good(f"Saved the calibrated pipeline to {save_model}")
    return fitted


def print_table(report: Dict[str, Any]) -> None:
    """Print the per-type and overall results (P/R/F in %) with wasabi."""
    def pct(value: Optional[float]) -> str:
        return "-" if value is None else f"{100 * value:.2f}"

    rows = [
        (label, pct(s["p"]), pct(s["r"]), pct(s["f"]), s["gold"], s["predicted"], s["tp"])
        for label, s in report["ents_per_type"].items()
    ]
    footer = (
        "ALL", pct(report["ents_p"]), pct(report["ents_r"]), pct(report["ents_f"]),
        report["ents_gold"], report["ents_predicted"], report["ents_tp"],
    )
    msg.table(
        rows,
        header=("label", "P %", "R %", "F %", "gold", "pred", "tp"),
        footer=footer,
        divider=True,
        aligns=("l", "r", "r", "r", "r", "r", "r"),
    )


def _use_gpu(gpu_id: int) -> None:
    try:
        spacy.require_gpu(gpu_id)
    except Exception as err:  # thinc raises ValueError without CUDA, cupy its own errors
        raise EvaluationError(f"Can't use GPU {gpu_id}: {err}") from err


def _fmt(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.3f}"

"""Evaluate a pipeline on a .spacy corpus: metrics and confidence calibration (the calibration
table, ECE and precision/recall curve are computed in confidence_metrics.py).

Library API:
    evaluate(nlp_or_path, data_path, *, batch_size=64) -> dict   the report written as JSON
    predict(nlp, data_path, *, batch_size=64) -> Prediction      gold-vs-predicted Examples, timing
    score(prediction) -> dict                                   the report for a Prediction
    find_errors(example) -> Optional[DocErrors]                  missed / spurious / wrong label
    wordpiece_gaps(docs) -> Optional[dict]                       tokens given no wordpiece

The HTML (displaCy) report of the docs with errors is `error_report.render_errors`.

Command line (cli/evaluate.py):
    python -m spacy_bert_crf evaluate MODEL DATA_PATH [--output metrics/x.json]
        [--html metrics/x.html] [--gpu-id -1] [--batch-size 64] [--max-docs 200] [--gold-preproc]

Scores follow spaCy's conventions: P/R/F are fractions in [0, 1] (as in `spacy evaluate --output`;
the printed table shows percentages), an entity is correct when its span and label match a gold
entity exactly, and predictions over gold tokens without NER annotation (ent_iob == 0) are ignored,
as in `spacy.scorer.get_ner_prf`. Docs without any NER annotation are skipped and counted.
"""
import datetime
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Set, Tuple, Type, Union

import spacy
from spacy.language import Language
from spacy.scorer import PRFScore
from spacy.tokens import Doc, DocBin
from spacy.training import Example

from .confidence_metrics import calibration, entity_outcomes, pr_curve, threshold_outcomes

DEFAULT_SPANS_KEY = "crf_ner"
FILE_TYPE = ".spacy"

PathLike = Union[str, Path]
EntityKey = Tuple[str, int, int]  # (label, start, end) in gold (reference) token offsets


class EvaluationError(ValueError):
    """A model or data file that cannot be evaluated (missing path, unreadable .spacy file, ...)."""


@dataclass
class Prediction:
    """Gold-vs-predicted Examples of one corpus and how long the prediction took.

    examples (List[Example]): One per non-empty gold doc, predicted by the pipeline.
    indices (List[int]): Position of each example's gold doc in the corpus (counting empty docs).
    seconds (float): Wall time of the `nlp.pipe` pass.
    n_empty (int): Empty gold docs skipped.
    data_path (str): The corpus.
    model (Dict[str, Any]): Name, version, path and pipeline of the model.
    spans_keys (List[str]): Span group keys where the NER components store their confidences.
    """

    examples: List[Example]
    indices: List[int]
    seconds: float
    n_empty: int = 0
    data_path: str = ""
    model: Dict[str, Any] = field(default_factory=dict)
    spans_keys: List[str] = field(default_factory=lambda: [DEFAULT_SPANS_KEY])


@dataclass
class DocErrors:
    """The entity matches and errors of one Example (entities: (label, start, end) in gold tokens).

    correct (List[EntityKey]): Predicted entities equal to a gold entity.
    missed (List[EntityKey]): Gold entities with no prediction over the same span.
    spurious (List[EntityKey]): Predicted entities with no gold entity over the same span.
    wrong_label (List[Tuple[EntityKey, EntityKey]]): (gold, predicted) pairs with the same span.
    scored (List[Tuple[str, int, int, bool]]): (label, start, end, correct) of every counted
        prediction, in predicted-doc token offsets (to look up its confidence).
    """

    correct: List[EntityKey] = field(default_factory=list)
    missed: List[EntityKey] = field(default_factory=list)
    spurious: List[EntityKey] = field(default_factory=list)
    wrong_label: List[Tuple[EntityKey, EntityKey]] = field(default_factory=list)
    scored: List[Tuple[str, int, int, bool]] = field(default_factory=list)

    @property
    def n_errors(self) -> int:
        """RETURNS (int): Missed + spurious + wrong-label entities."""
        return len(self.missed) + len(self.spurious) + len(self.wrong_label)


# ---------------------------------------------------------------------------------------------
# Library API
# ---------------------------------------------------------------------------------------------


def evaluate(
    nlp_or_path: Union[Language, PathLike],
    data_path: PathLike,
    *,
    batch_size: int = 64,
    gold_preproc: bool = False,
    sort_by_length: bool = True,
) -> Dict[str, Any]:
    """Predict a .spacy corpus with a pipeline and score its entities.

    nlp_or_path (Union[Language, str, Path]): The pipeline, or a path / package name for spacy.load.
    data_path (Union[str, Path]): A .spacy (DocBin) file, or a directory of them.
    batch_size (int): Batch size of nlp.pipe.
    gold_preproc (bool): Predict on the gold tokenization instead of nlp.make_doc(text).
    sort_by_length (bool): Feed the docs to nlp.pipe from shortest to longest (results are
        returned in corpus order). Batches of similar length waste little compute on the
        transformer's padding; on sentence-level corpora this is worth about 2.7x in words/s.
    RETURNS (Dict[str, Any]): The report (see `score`).
    """
    nlp = load_model(nlp_or_path) if not isinstance(nlp_or_path, Language) else nlp_or_path
    prediction = predict(
        nlp, data_path, batch_size=batch_size, gold_preproc=gold_preproc,
        sort_by_length=sort_by_length,
    )
    if not isinstance(nlp_or_path, Language):
        prediction.model["path"] = str(nlp_or_path)
    return score(prediction)


def load_model(
    name_or_path: PathLike, *, error: Type[Exception] = EvaluationError
) -> Language:
    """spacy.load with an error that names what was not found.

    name_or_path (Union[str, Path]): A pipeline folder or an installed pipeline package.
    error (Type[Exception]): The exception class raised (the annotate command passes its own).
    RETURNS (Language): The pipeline.
    RAISES (error): Neither an existing folder nor an installed pipeline package, or the
        pipeline can't be loaded.
    """
    path = Path(name_or_path)
    if not path.exists() and not spacy.util.is_package(str(name_or_path)):
        raise error(
            f"Model not found: {name_or_path} (neither a pipeline folder nor an installed "
            f"package)"
        )
    if path.exists() and not path.is_dir():
        raise error(f"Model path is not a folder: {path}")
    try:
        return spacy.load(name_or_path)
    except (OSError, ValueError, KeyError) as err:
        raise error(f"Can't load the pipeline {name_or_path}: {err}") from err


def read_docbins(data_path: PathLike) -> List[DocBin]:
    """Read a .spacy file, or every .spacy file under a directory (sorted), checking each one.

    RETURNS (List[DocBin]): The DocBins, in order.
    RAISES (EvaluationError): Missing path, no .spacy file, or a file that is not a DocBin.
    """
    path = Path(data_path)
    if not path.exists():
        raise EvaluationError(f"Data file not found: {path}")
    if path.is_dir():
        paths = sorted(p for p in path.rglob(f"*{FILE_TYPE}") if p.is_file())
    else:
        paths = [path]
    if not paths:
        raise EvaluationError(f"No {FILE_TYPE} files in the data directory: {path}")
    docbins = []
    for p in paths:
        try:
            docbins.append(DocBin().from_disk(p))
        except Exception as err:  # msgpack, zlib and key errors all mean "not a DocBin"
            raise EvaluationError(
                f"Can't read {p} as a {FILE_TYPE} (DocBin) file: {type(err).__name__}: {err}"
            ) from err
    return docbins


def predict(
    nlp: Language,
    data_path: PathLike,
    *,
    batch_size: int = 64,
    gold_preproc: bool = False,
    docbins: Optional[Sequence[DocBin]] = None,
    sort_by_length: bool = True,
) -> Prediction:
    """Run the pipeline over the gold docs of a corpus, as spaCy's Corpus + Language.evaluate do.

    nlp (Language): The pipeline.
    data_path (Union[str, Path]): A .spacy file or a directory of them.
    batch_size (int): Batch size of nlp.pipe.
    gold_preproc (bool): Predict on the gold tokens instead of nlp.make_doc(text). Gold docs with
        unknown whitespace always use their own tokens.
    docbins (Optional[Sequence[DocBin]]): Already read DocBins of data_path (see read_docbins).
    sort_by_length (bool): Run nlp.pipe over the docs sorted by length (less padding in each
        batch); the examples keep corpus order either way.
    RETURNS (Prediction): The Examples and the time the prediction pass took.
    """
    if docbins is None:
        docbins = read_docbins(data_path)
    examples, indices, n_empty = make_examples(nlp, docbins, gold_preproc=gold_preproc)
    order = list(range(len(examples)))
    if sort_by_length:
        order.sort(key=lambda j: len(examples[j].predicted))
    start = time.perf_counter()
    docs = list(nlp.pipe((examples[j].predicted for j in order), batch_size=batch_size))
    seconds = time.perf_counter() - start
    for j, doc in zip(order, docs):
        examples[j].predicted = doc
    pipe_keys = (getattr(pipe, "spans_key", None) for _, pipe in nlp.pipeline)
    keys = [key for key in pipe_keys if isinstance(key, str)]
    meta = nlp.meta
    model = {
        "name": f"{meta.get('lang', nlp.lang)}_{meta.get('name', 'pipeline')}",
        "version": meta.get("version"),
        "path": None,
        "pipeline": list(nlp.pipe_names),
    }
    return Prediction(
        examples, indices, seconds, n_empty=n_empty, data_path=str(data_path), model=model,
        spans_keys=keys or [DEFAULT_SPANS_KEY],
    )


def make_examples(
    nlp: Language, docbins: Sequence[DocBin], *, gold_preproc: bool = False
) -> Tuple[List[Example], List[int], int]:
    """Examples (unprocessed doc, gold doc) of the non-empty gold docs, as spaCy's Corpus makes
    them: the predicted doc is nlp.make_doc(text), or the gold tokens with gold_preproc (and
    always for gold docs with unknown whitespace).

    RETURNS (Tuple[List[Example], List[int], int]): The examples, the corpus index of each, and
        the number of empty gold docs skipped.
    """
    examples: List[Example] = []
    indices: List[int] = []
    n_empty = 0
    i = 0
    for docbin in docbins:
        for gold in docbin.get_docs(nlp.vocab):
            if len(gold) == 0:
                n_empty += 1
            else:
                if gold_preproc or gold.has_unknown_spaces:
                    words = [t.text for t in gold]
                    spaces = [bool(t.whitespace_) for t in gold]
                    doc = Doc(nlp.vocab, words=words, spaces=spaces)
                else:
                    doc = nlp.make_doc(gold.text)
                examples.append(Example(doc, gold))
                indices.append(i)
            i += 1
    return examples, indices, n_empty


def find_errors(eg: Example) -> Optional[DocErrors]:
    """Match the predicted entities of an Example to its gold entities, as get_ner_prf does.

    RETURNS (Optional[DocErrors]): The matches and errors; None when the gold doc has no NER
        annotation.
    """
    if not eg.reference.has_annotation("ENT_IOB"):
        return None
    result = DocErrors()
    golds = {(e.label_, e.start, e.end) for e in eg.reference.ents}
    align_x2y = eg.alignment.x2y
    false_pos: List[EntityKey] = []
    for ent in eg.predicted.ents:
        indices = align_x2y[ent.start : ent.end]
        if not len(indices):
            continue
        start, end = int(indices[0]), int(indices[-1]) + 1
        # Predictions over gold tokens with missing annotation are neither right nor wrong.
        if not all(token.ent_iob != 0 for token in eg.reference[start:end]):
            continue
        key = (ent.label_, start, end)
        if key in golds:
            golds.remove(key)
            result.correct.append(key)
            result.scored.append((ent.label_, ent.start, ent.end, True))
        else:
            false_pos.append(key)
            result.scored.append((ent.label_, ent.start, ent.end, False))
    missed = {key[1:]: key for key in golds}  # (start, end) -> gold key; spans never overlap
    for key in false_pos:
        gold = missed.pop(key[1:], None)
        if gold is not None:
            result.wrong_label.append((gold, key))
        else:
            result.spurious.append(key)
    result.missed = sorted(missed.values(), key=lambda k: (k[1], k[2], k[0]))
    return result


def score(prediction: Prediction) -> Dict[str, Any]:
    """The report of a Prediction: P/R/F overall and per type with counts, errors, speed and
    confidence calibration.

    RETURNS (Dict[str, Any]): JSON-serializable report. ents_p/ents_r/ents_f and the per-type p/r/f
        are fractions in [0, 1] (None when there is no gold and no predicted entity at all).
    """
    from . import __version__

    per_type: Dict[str, PRFScore] = defaultdict(PRFScore)
    predicted_labels: Set[str] = set()
    n_unannotated = 0
    n_error_docs = 0
    error_counts = {"missed": 0, "spurious": 0, "wrong_label": 0}
    confidences: List[Tuple[float, bool]] = []
    thresholded: List[Tuple[Optional[float], bool]] = []
    for eg in prediction.examples:
        errors = find_errors(eg)
        if errors is None:
            n_unannotated += 1
            continue
        predicted_labels.update(e.label_ for e in eg.predicted.ents)
        for label, *_ in errors.correct:
            per_type[label].tp += 1
        for label, *_ in errors.spurious:
            per_type[label].fp += 1
        for label, *_ in errors.missed:
            per_type[label].fn += 1
        for (gold_label, *_), (pred_label, *_) in errors.wrong_label:
            per_type[gold_label].fn += 1
            per_type[pred_label].fp += 1
        error_counts["missed"] += len(errors.missed)
        error_counts["spurious"] += len(errors.spurious)
        error_counts["wrong_label"] += len(errors.wrong_label)
        n_error_docs += int(errors.n_errors > 0)
        confidences.extend(entity_outcomes(eg.predicted, errors.scored, prediction.spans_keys))
        thresholded.extend(threshold_outcomes(eg, errors.scored, prediction.spans_keys))
    for label in predicted_labels - set(per_type):  # get_ner_prf lists them even if never counted
        per_type[label] = PRFScore()
    totals = PRFScore()
    for prf in per_type.values():
        totals += prf
    n_words = sum(len(eg.predicted) for eg in prediction.examples)
    any_ents = len(totals) > 0
    report: Dict[str, Any] = {
        "model": prediction.model,
        "data_path": prediction.data_path,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "versions": {"spacy": spacy.__version__, "spacy_bert_crf": __version__},
        "scale": "fractions in [0, 1] (spaCy's convention)",
        "ents_p": totals.precision if any_ents else None,
        "ents_r": totals.recall if any_ents else None,
        "ents_f": totals.fscore if any_ents else None,
        "ents_gold": totals.tp + totals.fn,
        "ents_predicted": totals.tp + totals.fp,
        "ents_tp": totals.tp,
        "ents_per_type": {label: _type_scores(per_type[label]) for label in sorted(per_type)},
        "errors": {"docs_with_errors": n_error_docs, **error_counts},
        "n_docs": len(prediction.examples),
        "n_docs_empty": prediction.n_empty,
        "n_docs_unannotated": n_unannotated,
        "n_tokens": n_words,
        "seconds": prediction.seconds,
        "words_per_second": n_words / prediction.seconds if prediction.seconds > 0 else None,
        "confidence": calibration(confidences) if confidences else None,
        "pr_curve": pr_curve(thresholded, totals.tp + totals.fn) if confidences else None,
        "tokens_without_wordpieces": wordpiece_gaps(eg.predicted for eg in prediction.examples),
    }
    return report


def wordpiece_gaps(docs: Iterable[Doc]) -> Optional[Dict[str, Any]]:
    """How many tokens the transformer gave no wordpiece, so no vector (characters the
    tokenizer drops, such as U+200B or U+FEFF); crf_ner decodes them as O.

    docs (Iterable[Doc]): Predicted docs.
    RETURNS (Optional[Dict[str, Any]]): count, n_tokens and share (count / n_tokens) over the docs
        with transformer output; None when no doc has any.
    """
    if not Doc.has_extension("trf_data"):  # spacy-transformers (and torch) never imported
        return None
    from .layers.transformer import tokens_without_wordpieces

    count = n_tokens = 0
    for doc in docs:
        if doc._.trf_data is not None:
            count += int(tokens_without_wordpieces(doc).sum())
            n_tokens += len(doc)
    if not n_tokens:
        return None
    return {"count": count, "n_tokens": n_tokens, "share": count / n_tokens}


def _type_scores(prf: PRFScore) -> Dict[str, Any]:
    return {
        "p": prf.precision, "r": prf.recall, "f": prf.fscore,
        "gold": prf.tp + prf.fn, "predicted": prf.tp + prf.fp, "tp": prf.tp,
    }

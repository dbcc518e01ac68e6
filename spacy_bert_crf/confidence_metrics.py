"""How well confidences match accuracy, for the evaluation report (evaluate.score): the
reliability table and expected calibration error (`calibration`), precision and recall were a
confidence threshold applied (`pr_curve`), and the (confidence, correct) pairs of a predicted doc's
counted entities read from its scored span group (`entity_outcomes`, `threshold_outcomes`).

No torch import: like evaluate.py, this runs where torch is not installed.
"""
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy
from spacy.tokens import Doc
from spacy.training import Example

from .confidences import scored_spans

N_CALIBRATION_BINS = 10
# Thresholds of the precision/recall curve: 0, 0.05, ..., 0.95, 0.99
PR_THRESHOLDS = tuple(round(0.05 * i, 2) for i in range(20)) + (0.99,)
# (label, start, end, correct) of a counted predicted entity, in predicted-doc token offsets
# (evaluate.DocErrors.scored)
ScoredEntity = Tuple[str, int, int, bool]


def calibration(
    confidences: Sequence[Tuple[float, bool]], n_bins: int = N_CALIBRATION_BINS
) -> Dict[str, Any]:
    """Confidence of correct vs incorrect predicted entities, a reliability table and the expected
    calibration error ECE = sum over bins of count / n * |accuracy - mean confidence|.

    confidences (Sequence[Tuple[float, bool]]): (confidence in [0, 1], correct) per entity.
    n_bins (int): Equal-width bins over [0, 1]; the last one includes 1.0.
    RETURNS (Dict[str, Any]): n_entities, n_correct, mean_confidence_correct / _incorrect (None when
        there is none), bins (lower, upper, count, mean_confidence, accuracy) and ece.
    """
    bins: List[List[Tuple[float, bool]]] = [[] for _ in range(n_bins)]
    for conf, correct in confidences:
        # The tolerance keeps float32 edges (0.9 is 0.89999998) in the bin they name.
        bins[min(max(int(conf * n_bins + 1e-6), 0), n_bins - 1)].append((conf, correct))
    table = []
    ece = 0.0
    n = len(confidences)
    for i, members in enumerate(bins):
        mean_conf = _mean([c for c, _ in members])
        accuracy = _mean([float(ok) for _, ok in members])
        if accuracy is not None and mean_conf is not None:  # the bin has members
            ece += len(members) / n * abs(accuracy - mean_conf)
        table.append(
            {"lower": i / n_bins, "upper": (i + 1) / n_bins, "count": len(members),
             "mean_confidence": mean_conf, "accuracy": accuracy}
        )
    return {
        "n_entities": n,
        "n_correct": sum(ok for _, ok in confidences),
        "mean_confidence_correct": _mean([c for c, ok in confidences if ok]),
        "mean_confidence_incorrect": _mean([c for c, ok in confidences if not ok]),
        "bins": table,
        "ece": ece if n else None,
    }


def pr_curve(
    predictions: Sequence[Tuple[Optional[float], bool]],
    n_gold: int,
    thresholds: Sequence[float] = PR_THRESHOLDS,
) -> List[Dict[str, Any]]:
    """Precision and recall of the entities were those with a confidence below each threshold
    left out (crf_ner's `threshold` setting). Entities without a confidence (set by another
    component) are always kept.

    predictions (Sequence[Tuple[Optional[float], bool]]): (confidence or None, correct) of every
        counted predicted entity, those a threshold already took out of doc.ents included.
    n_gold (int): Gold entities (the recall's denominator).
    RETURNS (List[Dict[str, Any]]): threshold, p, r, f, predicted and tp per threshold (p and f
        None where nothing is predicted).
    """
    conf = numpy.asarray([1.0 if c is None else c for c, _ in predictions], dtype="float64")
    fixed = numpy.asarray([c is None for c, _ in predictions], dtype=bool)
    ok = numpy.asarray([correct for _, correct in predictions], dtype=bool)
    points = []
    for threshold in thresholds:
        kept = fixed | (conf >= threshold)
        n_kept, tp = int(kept.sum()), int((kept & ok).sum())
        p = tp / n_kept if n_kept else None
        r = tp / n_gold if n_gold else None
        f = 2 * p * r / (p + r) if p is not None and r is not None and p + r > 0 else None
        points.append(
            {"threshold": threshold, "p": p, "r": r, "f": f, "predicted": n_kept, "tp": tp}
        )
    return points


def _mean(values: Sequence[float]) -> Optional[float]:
    return sum(values) / len(values) if values else None


def entity_outcomes(
    doc: Doc, scored: Sequence[ScoredEntity], keys: Sequence[str]
) -> List[Tuple[float, bool]]:
    """(confidence, correct) of the counted predicted entities (`scored`) found in the first
    scored span group of `keys` the doc has."""
    for key in keys:
        spans = scored_spans(doc, key)
        if spans is None:
            continue
        by_span = {(s.label_, s.start, s.end): p for s, p in spans}
        found = ((by_span.get((label, start, end)), ok) for label, start, end, ok in scored)
        return [(conf, ok) for conf, ok in found if conf is not None]
    return []


def threshold_outcomes(
    eg: Example, scored: Sequence[ScoredEntity], keys: Sequence[str]
) -> List[Tuple[Optional[float], bool]]:
    """(confidence or None, correct) of the counted predicted entities (`scored`), and of the
    entities a threshold took out of doc.ents (flagged attrs["below_threshold"] in the span
    group), as pr_curve takes them."""
    doc = eg.predicted
    scores: Dict[Tuple[str, int, int], float] = {}
    dropped: List[Tuple[str, int, int, float]] = []
    for key in keys:
        spans = scored_spans(doc, key)
        if spans is None:
            continue
        below = doc.spans[key].attrs.get("below_threshold")
        for i, (span, p) in enumerate(spans):
            scores[(span.label_, span.start, span.end)] = p
            if below is not None and len(below) == len(spans) and below[i]:
                dropped.append((span.label_, span.start, span.end, p))
        break
    out: List[Tuple[Optional[float], bool]] = [
        (scores.get((label, start, end)), ok) for label, start, end, ok in scored
    ]
    if dropped:
        golds = {(e.label_, e.start, e.end) for e in eg.reference.ents}
        align = eg.alignment.x2y
        for label, start, end, p in dropped:
            indices = align[start:end]
            if not len(indices):
                continue
            g_start, g_end = int(indices[0]), int(indices[-1]) + 1
            if all(token.ent_iob != 0 for token in eg.reference[g_start:g_end]):
                out.append((p, (label, g_start, g_end) in golds))
    return out

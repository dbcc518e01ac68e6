"""crf_ner's confidences as plain data: a documented way into JSON.

spaCy's `doc.to_json()` writes the entities and span groups but not the span groups' attrs, so the
scores crf_ner stores (doc.spans[spans_key].attrs["scores"], and those of its candidate spans)
are lost. `doc_to_json` is `doc.to_json()` with them put back:

    data = doc_to_json(doc)
    data["ents"][0]        # {"start": 0, "end": 11, "label": "PER", "score": 0.98}
    data["spans"]["crf_ner"][0]   # {..., "score": 0.98, "below_threshold": False}

No Span extension (`span._.confidence`) is registered: extensions live on spaCy's Span class,
shared by every pipeline in the process, so registering one at import (or when a pipe is built)
would change Span for all code in the process and clash with any other package using the name;
and a getter could not know which span group (spans_key, per pipe instance) holds the score.
`span_confidence(span)` is the explicit equivalent.
"""
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from spacy.tokens import Doc, Span

DEFAULT_SPANS_KEY = "crf_ner"


def entity_confidences(doc: Doc, spans_key: str = DEFAULT_SPANS_KEY) -> List[Tuple[Span, float]]:
    """The spans of a scored span group with their scores (crf_ner: its entities, those a
    threshold left out of doc.ents included, with P(exactly this span and label)).

    RETURNS (List[Tuple[Span, float]]): (span, score) in the group's order; [] when the doc has no
        such group or it has no scores.
    """
    return scored_spans(doc, spans_key) or []


def scored_spans(doc: Doc, spans_key: str) -> Optional[List[Tuple[Span, float]]]:
    """As entity_confidences, but None (not []) when the doc has no span group `spans_key` or
    the group has no scores (attrs["scores"], one per span)."""
    group = doc.spans.get(spans_key) if spans_key in doc.spans else None
    scores = None if group is None else group.attrs.get("scores")
    if group is None or scores is None or len(scores) != len(group):
        return None
    return [(span, float(p)) for span, p in zip(group, scores)]


def span_confidence(span: Span, spans_key: str = DEFAULT_SPANS_KEY) -> Optional[float]:
    """The score of the span (same start, end and label) in the doc's scored span group, or
    None (e.g. an entity set by another component)."""
    for other, p in entity_confidences(span.doc, spans_key):
        if (other.start, other.end, other.label) == (span.start, span.end, span.label):
            return p
    return None


def doc_to_json(doc: Doc, *, spans_keys: Optional[Iterable[str]] = None) -> Dict[str, Any]:
    """`doc.to_json()` with the scores of the span groups: every span of a group with
    attrs["scores"] gains "score" (and "below_threshold" where the group flags that), and each
    entity of "ents" found in one of them gains "score".

    spans_keys (Optional[Iterable[str]]): Groups whose scores to add (default: every group with
        scores; the entities take theirs from the first group listing them, in this order).
    RETURNS (Dict[str, Any]): The JSON-serializable data.
    """
    data = doc.to_json()
    keys: Sequence[str] = list(doc.spans.keys()) if spans_keys is None else list(spans_keys)
    by_span: Dict[Tuple[int, int, str], float] = {}
    for key in keys:
        scored = entity_confidences(doc, key)
        entries = data.get("spans", {}).get(key)
        if not scored or entries is None or len(entries) != len(scored):
            continue
        below = doc.spans[key].attrs.get("below_threshold")
        for i, (entry, (span, p)) in enumerate(zip(entries, scored)):
            entry["score"] = p
            if below is not None and len(below) == len(scored):
                entry["below_threshold"] = bool(below[i])
            by_span.setdefault((span.start_char, span.end_char, span.label_), p)
    for entry in data.get("ents", []):
        score = by_span.get((entry["start"], entry["end"], entry["label"]))
        if score is not None:
            entry["score"] = score
    return data

"""crf_ner between its docs and decoding (decoding.py): what it decodes from (the emissions and
the restrictions of each doc), and how it writes what decoding found onto the docs: the entities
an earlier component set are kept (unless overwrite_ents), the decoded entities that would overlap
them are dropped, entities below the threshold leave doc.ents but stay in the span group with their
confidences, candidate spans go to their own span group, and n-best analyses become lists of
Spans. Also the checks of the settings that steer this output (threshold, candidates,
temperature).
"""
from typing import TYPE_CHECKING, Any, Iterable, List, Optional, Sequence, Set, Tuple

import numpy
from spacy.errors import Errors
from spacy.tokens import Doc, Span, SpanGroup
from thinc.types import Floats2d

from .decoding import Analysis, DocDecoding, TagInventory, check_upstream, tag_inventory
from .decoding import hold_tokens_without_wordpieces

if TYPE_CHECKING:
    from .pipeline import CRFEntityRecognizer

# Temperatures outside this range are rejected: confidences would all be 0/1 or uniform, and at
# T > 10 the large finite penalty (-1e4) of the forbidden tags no longer underflows to 0.
MIN_TEMPERATURE = 0.01
MAX_TEMPERATURE = 10.0


def check_probability(value: Any, setting: str, name: str) -> float:
    """A setting of the component `name` that is a probability: a number in [0, 1]."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(
            f"Invalid {setting} {value!r} for {name!r}: expected a number in [0, 1]."
        )
    return float(value)


def check_max_length(value: Any, name: str) -> int:
    """The setting candidates_max_length of the component `name`: an integer >= 1."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(
            f"Invalid candidates_max_length {value!r} for {name!r}: expected an integer >= 1."
        )
    return value


def check_temperature(value: Any, name: str) -> float:
    """The temperature of the component `name`: a number in [MIN_TEMPERATURE, MAX_TEMPERATURE]."""
    if (
        isinstance(value, bool) or not isinstance(value, (int, float))
        or not MIN_TEMPERATURE <= value <= MAX_TEMPERATURE
    ):
        raise ValueError(
            f"Invalid temperature {value!r} for {name!r}: expected a number in "
            f"[{MIN_TEMPERATURE}, {MAX_TEMPERATURE}]."
        )
    return float(value)


def decoding_inputs(
    pipe: "CRFEntityRecognizer", docs: List[Doc], *, own_spans: bool = False
) -> Optional[Tuple[List[Floats2d], List[numpy.ndarray], TagInventory]]:
    """The emissions of the pipe's model for the docs and the tags each token may take (see
    decoding.allowed_tags: whitespace, blocked tokens, preset entities, tokens without
    wordpieces), with the tag inventory; None when no doc has a token.

    own_spans: entities in the pipe's span group are its own output, not restrictions.
    RAISES (ValueError): The pipe is not initialized, or what it listens to did not run (E109,
        decoding.check_upstream).
    """
    if not pipe._is_initialized():
        raise ValueError(Errors.E109.format(name=pipe.name))
    if not any(len(doc) for doc in docs):
        return None
    listens_to_transformer = check_upstream(pipe.model, docs, pipe.name)
    emissions = pipe.model.predict(docs)
    inventory = tag_inventory(tuple(pipe.tags), pipe.scheme)
    allowed = [
        pipe._allowed_tags(doc, inventory, ents=pipe._presets(doc, own_spans=own_spans))
        for doc in docs
    ]
    if listens_to_transformer:
        hold_tokens_without_wordpieces(
            docs, allowed, inventory, overwrite_ents=pipe.overwrite_ents, name=pipe.name
        )
    return emissions, allowed, inventory


def preset_entities(
    doc: Doc, *, overwrite_ents: bool, spans_key: Optional[str], own_spans: bool = False
) -> List[Span]:
    """The entities set by earlier components, which the pipe keeps (none if overwrite_ents).
    own_spans: leave out the entities of the pipe's own span group doc.spans[spans_key] (a doc
    the pipe already annotated)."""
    if overwrite_ents:
        return []
    ents = list(doc.ents)
    if own_spans and spans_key is not None and spans_key in doc.spans:
        own = {(s.start, s.end, s.label) for s in doc.spans[spans_key]}
        ents = [e for e in ents if (e.start, e.end, e.label) not in own]
    return ents


def merge(
    doc: Doc, preset: List[Span], entities: Iterable[Tuple[int, int, str, float]]
) -> Tuple[List[Tuple[Span, float]], Set[Tuple[int, int, str]]]:
    """The decoded entities that are not preset ones nor overlap one, as (Span, probability),
    and the (start, end, label) of the presets. (Known-label presets are decoded as themselves;
    presets with a label the pipe does not know are decoded as "O", so nothing overlaps them.)
    """
    taken = {(e.start, e.end, e.label_) for e in preset}
    occupied = numpy.zeros(len(doc), dtype=bool)
    for ent in preset:
        occupied[ent.start : ent.end] = True
    own = [
        (Span(doc, start, end, label=label), p)
        for start, end, label, p in entities
        if (start, end, label) not in taken and not occupied[start:end].any()
    ]
    return own, taken


def write_annotations(
    doc: Doc,
    decoding: DocDecoding,
    preset: List[Span],
    *,
    threshold: float,
    spans_key: Optional[str],
    candidates_key: Optional[str],
) -> None:
    """Write doc.ents: the preset entities as they were (with their kb_id) and the decoded ones
    at or above the threshold. doc.spans[spans_key] (unless None) holds the decoded entities
    with attrs["scores"] and attrs["below_threshold"]; doc.spans[candidates_key] (unless None,
    or no candidates were decoded) every candidate span but the presets, with attrs["scores"].
    """
    own, taken = merge(doc, preset, decoding.entities)
    below = numpy.asarray([p < threshold for _, p in own], dtype=bool)
    doc.ents = sorted(
        preset + [span for (span, _), low in zip(own, below) if not low],
        key=lambda span: span.start,
    )
    if spans_key is not None:
        doc.spans[spans_key] = SpanGroup(
            doc, name=spans_key, spans=[span for span, _ in own],
            attrs={
                "scores": numpy.asarray([p for _, p in own], dtype="float32"),
                "below_threshold": below,
            },
        )
    if candidates_key is not None and decoding.candidates is not None:
        found = [c for c in decoding.candidates if c[:3] not in taken]
        doc.spans[candidates_key] = SpanGroup(
            doc, name=candidates_key,
            spans=[Span(doc, start, end, label=label) for start, end, label, _ in found],
            attrs={"scores": numpy.asarray([c[3] for c in found], dtype="float32")},
        )


def analyses_as_spans(
    doc: Doc, analyses: Sequence[Analysis], preset: List[Span]
) -> List[Tuple[List[Span], float]]:
    """The n-best analyses of a doc as the entity lists doc.ents would hold for each (the preset
    entities and the decoded ones that do not overlap them, by start), with its probability."""
    out = []
    for ents, p in analyses:
        own, _ = merge(doc, preset, [(s, e, label, p) for s, e, label in ents])
        spans = preset + [span for span, _ in own]
        out.append((sorted(spans, key=lambda span: span.start), p))
    return out

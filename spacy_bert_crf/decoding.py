"""Decoding for crf_ner: what each token may be decoded as (the restrictions it puts on the
CRF's tags: whitespace, blocked tokens, preset entities, tokens without wordpieces), the check
that the component it listens to ran on the docs, and the constrained Viterbi entities with
their confidences."""
import warnings
from functools import lru_cache
from typing import Callable, Collection, Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy
from spacy.tokens import Doc, Span
from thinc.api import Model
from thinc.types import Floats2d

from .layers.crf import ChainArrays, chain_arrays
from .layers.crf_decode import NumpyChain, candidate_spans, entity_log_probs
from .layers.crf_kbest import kbest_exact
from .tag_schemes import (
    OUT,
    check_scheme,
    constraints,
    continuations,
    span_tags,
)

# (start, end exclusive, label, probability) per predicted entity
Entity = Tuple[int, int, str, float]


class DocDecoding(NamedTuple):
    """What decoding found in one doc: the entities of the best path (with P(exactly this span
    and label), 1.0 when not asked for) and the candidate spans (None when not asked for)."""

    entities: List[Entity]
    candidates: Optional[List[Entity]] = None


Decoded = List[DocDecoding]


class Candidates(NamedTuple):
    """Which candidate spans to find: every span of at most max_length tokens whose
    P(exactly this span and label) >= threshold (and > 0)."""

    threshold: float
    max_length: int


class SpanTemperatures(NamedTuple):
    """A temperature per span for the confidences (entities and candidates): the span
    [start, end) of doc `i` (its index in the docs decoded) gets `values[group(i, start, end)]`.
    The pipe's mention-stratified calibration: one temperature for mentions seen in training,
    one for the others (see calibration.py)."""

    values: Tuple[float, ...]
    group: Callable[[int, int, int], int]


class Analysis(NamedTuple):
    """One tag sequence of an n-best list: its entities (start, end exclusive, label) and its
    probability."""

    entities: List[Tuple[int, int, str]]
    probability: float


class TagInventory:
    """What decoding needs to know about the tag inventory, computed once per batch rather than
    once per doc: the tags, their ids, the outside tag's id and each tag's continuation."""

    def __init__(self, tags: Sequence[str], scheme: str) -> None:
        self.tags = list(tags)
        self.scheme = scheme
        self.index = {tag: i for i, tag in enumerate(self.tags)}
        self.out = self.index[OUT]
        self.continuation = continuations(self.tags, scheme)
        # the tags a sequence may start and end with (for respect_sentences)
        _, self.starts, self.ends = constraints(self.tags, scheme)


@lru_cache(maxsize=16)
def tag_inventory(tags: Tuple[str, ...], scheme: str) -> TagInventory:
    """The TagInventory of these tags, built once per tag set and scheme (its constraints cost
    more than decoding a short sentence does); treat it as read-only."""
    return TagInventory(tags, scheme)


def allowed_tags(
    doc: Doc,
    inventory: TagInventory,
    labels: Collection[str],
    *,
    overwrite_ents: bool,
    ents: Optional[Sequence[Span]] = None,
    sentences: bool = False,
) -> numpy.ndarray:
    """The tags each token may take, (len(doc), n_tags) bool.

    Whitespace tokens are never part of an entity (as in spaCy's `ner`). Unless
    overwrite_ents is set, annotation from earlier components is a constraint, read as
    spaCy's `ner` reads it: tokens a component blocked (`doc.set_ents(..., blocked=spans)`)
    stay "O"; the tokens of a preset entity get exactly its tags (a label not in `labels` is
    held as "O" here and the entity is put back in set_annotations), and under BIO
    the token after a preset entity may not continue it. Plain "O" tokens, which
    `doc.ents = [...]` writes on every token outside the given entities, stay free.
    ents: the preset entities, if not doc.ents (nbest leaves out the pipe's own ones).
    sentences: keep entities inside sentences: where the doc has sentence boundaries
    (doc.has_annotation("SENT_START")), a sentence's first token may only take the tags a
    sequence may start with and its last token those a sequence may end with, so no entity
    crosses a boundary (a preset entity that does is kept as it is).
    """
    index, cont = inventory.index, inventory.continuation
    allowed = numpy.ones((len(doc), len(inventory.tags)), dtype=bool)
    only_out = numpy.zeros(len(inventory.tags), dtype=bool)
    only_out[inventory.out] = True
    # whitespace; and, unless overwriting, tokens an earlier component blocked
    if len(doc):
        attrs = doc.to_array(["IS_SPACE", "ENT_IOB", "ENT_TYPE"])
        out_only = attrs[:, 0] != 0
        if not overwrite_ents:
            out_only |= (attrs[:, 1] == 3) & (attrs[:, 2] == 0)
        allowed[out_only] = only_out
    if sentences and len(doc) > 1 and doc.has_annotation("SENT_START"):
        starts = doc.to_array("SENT_START") == 1  # 1: starts a sentence (-1 no, 0 unknown)
        starts[0] = False
        first = numpy.flatnonzero(starts)
        allowed[first] &= inventory.starts
        allowed[first - 1] &= inventory.ends
    if overwrite_ents:
        return allowed
    for ent in doc.ents if ents is None else ents:
        known = ent.label_ in labels
        ent_tags = span_tags(len(ent), ent.label_, inventory.scheme) if known else None
        for k, i in enumerate(range(ent.start, ent.end)):
            allowed[i] = False
            allowed[i, index[ent_tags[k]] if ent_tags else inventory.out] = True
        # the next token may not continue the entity (BIO: its I- tag)
        if ent_tags and ent.end < len(doc) and cont[index[ent_tags[-1]]] >= 0:
            allowed[ent.end, cont[index[ent_tags[-1]]]] = False
    return allowed


def hold_tokens_without_wordpieces(
    docs: List[Doc],
    allowed: List[numpy.ndarray],
    inventory: TagInventory,
    *,
    overwrite_ents: bool,
    name: str,
) -> None:
    """Tokens the transformer gave no wordpiece (characters its tokenizer drops: U+200B,
    U+FEFF, U+202E, private use) have no vector of their own: they are decoded as "O"
    (unless a preset entity covers them), and a warning (naming the component `name`) says how
    many there were. `allowed` (see allowed_tags) is changed in place."""
    from .layers.transformer import tokens_without_wordpieces

    out = inventory.out
    n_tokens = n_docs = 0
    for doc, doc_allowed in zip(docs, allowed):
        gaps = tokens_without_wordpieces(doc)
        if gaps.any() and not overwrite_ents:
            gaps &= doc.to_array("ENT_TYPE") == 0
        if gaps.any():
            doc_allowed[gaps] = False
            doc_allowed[gaps, out] = True
            n_tokens += int(gaps.sum())
            n_docs += 1
    if n_tokens:
        warnings.warn(
            f"{name}: {n_tokens} token(s) in {n_docs} doc(s) of this batch got no "
            "wordpiece from the transformer (characters its tokenizer drops, such as "
            "U+200B or U+FEFF) and were decoded as 'O'.",
            stacklevel=2,
        )


def check_upstream(model: Model, docs: List[Doc], name: str) -> bool:
    """Fail clearly when the model of the component `name` listens to a component that did not
    run on the docs (e.g. crf_ner sourced into a pipeline without its transformer): the listener
    would otherwise feed zeros, and the entities would be junk.

    RETURNS (bool): Whether the model listens to a transformer.
    """
    transformer = False
    for node in model.walk():
        if node.name == "transformer-listener":
            missing = not Doc.has_extension("trf_data") or any(
                len(doc) and doc._.trf_data is None for doc in docs
            )
            upstream = "transformer"
            transformer = True
        elif node.name == "tok2vec-listener":
            missing = any(len(doc) and doc.tensor.size == 0 for doc in docs)
            upstream = "tok2vec"
        else:
            continue
        if missing:
            raise ValueError(
                f"{name!r} listens to a {upstream!r} component (upstream "
                f"{getattr(node, 'upstream_name', '*')!r}), but the docs have no output "
                f"from one: it is missing from the pipeline, disabled, or placed after "
                f"{name!r}. Add the {upstream} that {name!r} was trained with before "
                f"it (source both from the same pipeline), or make {name!r} independent "
                f"with nlp.replace_listeners('{upstream}', '{name}', ['model.tok2vec'])."
            )
    return transformer


def decode(
    model: Model,
    emissions: List[Floats2d],
    allowed: List[numpy.ndarray],
    tags: Sequence[str],
    scheme: str,
    *,
    with_scores: bool,
    temperature: float = 1.0,
    candidates: Optional[Candidates] = None,
    span_temperatures: Optional[SpanTemperatures] = None,
) -> Decoded:
    """Viterbi entities per doc, each with P(exactly this span and label) if with_scores, and the
    candidate spans if asked for.

    Empty docs give no entities. The tags never form an invalid sequence: invalid
    transitions are -inf in the Viterbi recursion. The best path, the confidences and the
    candidates alike are conditioned on `allowed` (the tags each token may take, see
    allowed_tags); the probabilities are those of the CRF at `temperature` (see chain_arrays),
    or, with span_temperatures, each span's at its own temperature (the best path is the same at
    every temperature).
    """
    out: Decoded = [DocDecoding([]) for _ in emissions]
    rows = [i for i, e in enumerate(emissions) if len(e)]
    if not rows:
        return [DocDecoding([], [] if candidates else None) for _ in emissions]
    E = [emissions[i] for i in rows]
    A = [allowed[i] for i in rows]
    values = (temperature,) if span_temperatures is None else span_temperatures.values
    arrays = chain_arrays(model, E, A, values[0])
    paths = arrays.viterbi()
    found = [
        (r, start, end, label)
        for r, row in enumerate(_PathReader(tags, scheme).batch(paths, arrays.lengths))
        for start, end, label in row
    ]

    def group(r: int, start: int, end: int) -> int:
        return 0 if span_temperatures is None else span_temperatures.group(rows[r], start, end)

    cache: Dict[int, _Scored] = {}

    def scored_at(g: int) -> _Scored:
        """The forward-backward quantities at the group's temperature, computed once."""
        if g not in cache:
            at = arrays if g == 0 else chain_arrays(model, E, A, values[g])
            log_alpha, log_beta, log_z = NumpyChain(
                at.pot, at.mask, at.trans, at.start, at.end
            ).log_alpha_beta()
            cache[g] = _Scored(log_alpha, log_beta, log_z, at.pot, at.trans, at.continuation,
                               at.lengths)
        return cache[g]

    probs = numpy.ones(len(found))
    if with_scores and found:
        groups = numpy.asarray([group(r, s, e) for r, s, e, _ in found])
        for g in sorted(set(groups.tolist())):
            which = numpy.flatnonzero(groups == g)
            queries = [(found[j][0], found[j][1], found[j][2],
                        paths[found[j][0]][found[j][1]:found[j][2]].tolist()) for j in which]
            probs[which] = numpy.minimum(1.0, numpy.exp(entity_log_probs(*scored_at(g), queries)))
    spans: List[List[Entity]] = [[] for _ in rows]
    if candidates is not None:
        for g in range(len(values)):  # each span keeps the one computed at its own temperature
            for r, row_spans in enumerate(_candidates(scored_at(g), tags, scheme, candidates)):
                spans[r].extend(span for span in row_spans if group(r, span[0], span[1]) == g)
        for row in spans:
            row.sort(key=lambda span: (span[0], span[1], span[2]))
    for (r, start, end, label), p in zip(found, probs):
        out[rows[r]].entities.append((start, end, label, float(p)))
    if candidates is not None:
        for r, row_spans in zip(rows, spans):
            out[r] = DocDecoding(out[r].entities, row_spans)
        for i, decoding in enumerate(out):
            if decoding.candidates is None:
                out[i] = DocDecoding(decoding.entities, [])
    return out


def label_patterns(tags: Sequence[str], scheme: str) -> Tuple[List[str], numpy.ndarray]:
    """The labels, and for each the tag ids (single, first, middle, last) of its entities, as a
    (4, n_labels) array: a one-token entity is `single`, a longer one first, middle..., last
    (span_tags)."""
    index = {tag: i for i, tag in enumerate(tags)}
    labels = list(dict.fromkeys(tag.split("-", 1)[1] for tag in tags if tag != OUT))
    patterns = numpy.zeros((4, len(labels)), dtype=numpy.int64)
    for i, label in enumerate(labels):
        one, three = span_tags(1, label, scheme), span_tags(3, label, scheme)
        patterns[:, i] = [index[one[0]], index[three[0]], index[three[1]], index[three[2]]]
    return labels, patterns


class _Scored(NamedTuple):
    """What span probabilities are computed from (see crf_decode.entity_log_probs)."""

    log_alpha: numpy.ndarray
    log_beta: numpy.ndarray
    log_z: numpy.ndarray
    pot: numpy.ndarray
    trans: numpy.ndarray
    continuation: numpy.ndarray
    lengths: numpy.ndarray


def _candidates(
    scored: _Scored, tags: Sequence[str], scheme: str, options: Candidates
) -> List[List[Entity]]:
    """Every span of each row with P(exactly this span and label) >= the threshold (and > 0),
    sorted by start, end and label: see candidate_spans (O(B T L n_labels) for spans of at most
    L tokens)."""
    labels, patterns = label_patterns(tags, scheme)
    rows, starts, ends, label_ids, probs = candidate_spans(
        scored.log_alpha, scored.log_beta, scored.log_z, scored.pot, scored.trans,
        scored.continuation, scored.lengths, patterns, options.max_length, options.threshold,
    )
    found: List[List[Entity]] = [[] for _ in range(scored.pot.shape[0])]
    for r, s, e, j, p in zip(rows.tolist(), starts.tolist(), ends.tolist(), label_ids.tolist(),
                             probs.tolist()):
        found[r].append((s, e, labels[j], p))
    for row in found:
        row.sort(key=lambda span: (span[0], span[1], span[2]))
    return found


def nbest(
    model: Model,
    emissions: List[Floats2d],
    allowed: List[numpy.ndarray],
    tags: Sequence[str],
    scheme: str,
    k: int,
    *,
    temperature: float = 1.0,
) -> List[List[Analysis]]:
    """The k most probable valid tag sequences of each doc among those `allowed` admits, by
    k-best Viterbi, as entity lists with their exact probabilities (at `temperature`), most
    probable first. A doc with fewer than k such sequences gets them all; an empty doc gets [].
    """
    out: List[List[Analysis]] = [[] for _ in emissions]
    rows = [i for i, e in enumerate(emissions) if len(e)]
    if not rows:
        return out
    arrays: ChainArrays = chain_arrays(
        model, [emissions[i] for i in rows], [allowed[i] for i in rows], temperature
    )
    pot, trans, start, end = arrays.with_infinities()
    paths, scores, log_z = kbest_exact(pot, arrays.mask, trans, start, end, k)
    log_p = numpy.minimum(scores - log_z[:, None], 0.0)
    B, k_found, T = paths.shape
    read = _PathReader(tags, scheme).batch(
        paths.reshape(B * k_found, T), numpy.repeat(arrays.lengths, k_found)
    )
    probs = numpy.exp(log_p).tolist()
    n_found = numpy.isfinite(log_p).sum(1).tolist()  # the paths found come first
    for r, (row, n) in enumerate(zip(rows, n_found)):
        first = r * k_found
        out[row] = [Analysis(entities, p) for entities, p in zip(read[first : first + n], probs[r])]
    return out


class _PathReader:
    """The entities of valid tag paths (tag ids) of a model scheme (BILUO, BIO), as
    tags_to_spans reads them, with the tags parsed once: on a valid path an entity starts on a
    B- or U- tag and goes on over the I- and L- tags after it, up to the next O or start."""

    def __init__(self, tags: Sequence[str], scheme: str) -> None:
        check_scheme(scheme)
        labels = ["" if tag == OUT else tag.split("-", 1)[1] for tag in tags]
        self.labels = numpy.asarray(labels, dtype=object)  # per tag id, "" for O
        starts = [tag != OUT and tag.split("-", 1)[0] in ("B", "U") for tag in tags]
        self.starts = numpy.asarray(starts, dtype=bool)
        self.breaks = numpy.asarray([tag == OUT for tag in tags], dtype=bool) | self.starts

    def batch(
        self, paths: numpy.ndarray, lengths: numpy.ndarray
    ) -> List[List[Tuple[int, int, str]]]:
        """The entities (start, end exclusive, label) of each row of paths (N, T), of its first
        lengths[n] tags, the scan over the tokens done by numpy: no Python step per token or per
        entity."""
        n_rows, width = paths.shape
        if not n_rows or not width:
            return [[] for _ in range(n_rows)]
        positions = numpy.arange(width)
        inside = positions[None, :] < lengths[:, None]
        starts = self.starts[paths] & inside
        # where an entity that is running stops: an O, a new start, or past the row's end
        stops = numpy.where(self.breaks[paths] | ~inside, positions[None, :], width)
        # the first stop after each position: a running minimum from the right, shifted by one
        after = numpy.full((n_rows, width), width, dtype=stops.dtype)
        after[:, :-1] = numpy.minimum.accumulate(stops[:, ::-1], axis=1)[:, ::-1][:, 1:]
        row, begin = numpy.nonzero(starts)  # by row, then position
        labels = self.labels[paths[row, begin]].tolist()
        found = list(zip(begin.tolist(), after[row, begin].tolist(), labels))
        bounds = numpy.searchsorted(row, numpy.arange(n_rows + 1)).tolist()
        return [found[bounds[r] : bounds[r + 1]] for r in range(n_rows)]

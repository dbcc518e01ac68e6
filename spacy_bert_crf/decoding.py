"""Decoding for crf_ner: what each token may be decoded as (the restrictions it puts on the
CRF's tags: whitespace, blocked tokens, preset entities, tokens without wordpieces), the check
that the component it listens to ran on the docs, and the constrained Viterbi entities with
their confidences."""
import warnings
from typing import Collection, List, Sequence, Tuple

import numpy
from spacy.tokens import Doc
from thinc.api import Model
from thinc.types import Floats2d

from .layers.crf import span_log_probs, viterbi_paths
from .tag_schemes import OUT, continuations, span_tags, tags_to_spans

# (start, end exclusive, label, probability) per predicted entity
Entity = Tuple[int, int, str, float]
Decoded = List[List[Entity]]


class TagInventory:
    """What decoding needs to know about the tag inventory, computed once per batch rather than
    once per doc: the tags, their ids, the outside tag's id and each tag's continuation."""

    def __init__(self, tags: Sequence[str], scheme: str) -> None:
        self.tags = list(tags)
        self.scheme = scheme
        self.index = {tag: i for i, tag in enumerate(self.tags)}
        self.out = self.index[OUT]
        self.continuation = continuations(self.tags, scheme)


def allowed_tags(
    doc: Doc, inventory: TagInventory, labels: Collection[str], *, overwrite_ents: bool
) -> numpy.ndarray:
    """The tags each token may take, (len(doc), n_tags) bool.

    Whitespace tokens are never part of an entity (as in spaCy's `ner`). Unless
    overwrite_ents is set, annotation from earlier components is a constraint, read as
    spaCy's `ner` reads it: tokens a component blocked (`doc.set_ents(..., blocked=spans)`)
    stay "O"; the tokens of a preset entity get exactly its tags (a label not in `labels` is
    held as "O" here and the entity is put back in set_annotations), and under BIO
    the token after a preset entity may not continue it. Plain "O" tokens, which
    `doc.ents = [...]` writes on every token outside the given entities, stay free.
    """
    index, cont = inventory.index, inventory.continuation
    allowed = numpy.ones((len(doc), len(inventory.tags)), dtype=bool)
    only_out = numpy.zeros(len(inventory.tags), dtype=bool)
    only_out[inventory.out] = True
    for token in doc:
        # whitespace; and, unless overwriting, tokens an earlier component blocked
        blocked = not overwrite_ents and token.ent_iob == 3 and token.ent_type == 0
        if token.is_space or blocked:
            allowed[token.i] = only_out
    if overwrite_ents:
        return allowed
    for ent in doc.ents:
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
        if not overwrite_ents:
            gaps &= numpy.fromiter((t.ent_type == 0 for t in doc), dtype=bool, count=len(doc))
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
) -> Decoded:
    """Viterbi entities per doc, each with P(exactly this span and label) if with_scores.

    Empty docs give no entities. The tags never form an invalid sequence: invalid
    transitions are -inf in the Viterbi recursion. The best path and the confidences alike
    are conditioned on `allowed` (the tags each token may take, see allowed_tags).
    """
    out: Decoded = [[] for _ in emissions]
    rows = [i for i, e in enumerate(emissions) if len(e)]
    if not rows:
        return out
    E = [emissions[i] for i in rows]
    A = [allowed[i] for i in rows]
    paths = viterbi_paths(model, E, A)
    found = []
    for r, path in enumerate(paths):
        for start, end, label in tags_to_spans([tags[t] for t in path], scheme):
            found.append((r, start, end, label))
    probs = numpy.ones(len(found))
    if with_scores and found:
        queries = [(r, s, e, paths[r][s:e].tolist()) for r, s, e, _ in found]
        probs = numpy.minimum(1.0, numpy.exp(span_log_probs(model, E, A, queries)))
    for (r, start, end, label), p in zip(found, probs):
        out[rows[r]].append((start, end, label, float(p)))
    return out

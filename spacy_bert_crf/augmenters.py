"""Data augmentation for NER training, as spaCy augmenters (``[corpora.train.augmenter]``).

- ``spacy-bert-crf.entity_swap.v1``: replace entity mentions with other training mentions of the
  same label (from the training corpus, or from the examples seen so far), shifting every
  annotation after them. Works on any tokenization, Chinese character tokens included.
- ``spacy-bert-crf.token_mask.v1``: replace random tokens by the encoder's mask token, keeping
  their labels (the model learns to tag from the context).
- ``spacy-bert-crf.case_variation.v1``: random upper/lower/title case per token (only useful
  with a cased encoder: an uncased tokenizer lowercases its input anyway).

Each augmenter yields one example per example, the original one when it leaves it unchanged
(spaCy's own augmenters do the same); examples without entities are never changed by
entity_swap. The new reference Doc keeps the words, spaces, sentence starts, tags and POS and
the span groups (``doc.spans``, e.g. CoNLL chunks) of the original, the spans moved to the new
token positions; the predicted Doc is ``nlp.make_doc(text)``, as spaCy's Corpus makes it, and a
swap whose entities would not align with those tokens is dropped (the original is yielded).
Randomness comes from Python's ``random``, which ``spacy train`` seeds.
"""
import random
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union, cast

from spacy.language import Language
from spacy.tokens import Doc, DocBin, Span, SpanGroup
from spacy.training import Example
from spacy.training.corpus import walk_corpus
from spacy.util import registry
from spacy.vocab import Vocab

Augmenter = Callable[[Language, Example], Iterator[Example]]
CASES = ("lower", "upper", "title")
MAX_DRAWS = 3  # draws to find a replacement that differs from the mention


@dataclass(frozen=True)
class Mention:
    """An entity's tokens: words, the whitespace after each word but the last, and tags
    (None when the corpus has none)."""

    words: Tuple[str, ...]
    spaces: Tuple[bool, ...]
    tags: Optional[Tuple[str, ...]]


MentionPool = Dict[str, List[Mention]]


def _rng(rng: Optional[random.Random]) -> random.Random:
    """The given generator, or Python's global one (seeded by spacy train)."""
    return rng if rng is not None else cast(random.Random, random)


def _check_level(value: float, name: str) -> float:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value!r}.")
    return value


# ------------------------------------------------------------------------------ entity swap
@registry.augmenters("spacy-bert-crf.entity_swap.v1")
def create_entity_swap_augmenter(
    level: float = 0.5, swap_prob: float = 0.5, path: Optional[Union[str, Path]] = None
) -> Augmenter:
    """Replace entity mentions by other mentions of the same label.

    level (float): The fraction of examples (with entities) that are augmented.
    swap_prob (float): In an augmented example, the probability of each mention to be replaced
        (at least one is).
    path (Optional[str / Path]): A .spacy file or a folder of them (the training corpus:
        ${paths.train}) to take the mentions from; None: the mentions of the examples seen so
        far (the first examples then have few to choose from).
    RETURNS (Callable[[Language, Example], Iterator[Example]]): The augmenter.
    """
    _check_level(level, "level")
    _check_level(swap_prob, "swap_prob")
    pool = read_mention_pool(path) if path is not None else None
    return partial(
        entity_swap_augmenter, level=level, swap_prob=swap_prob, pool=pool,
        seen={} if pool is None else None,
    )


def read_mention_pool(path: Union[str, Path]) -> MentionPool:
    """The entity mentions of a .spacy file (or a folder of them), by label.

    RAISES (ValueError): The path holds no .spacy file, or its docs no entity.
    """
    path = Path(path)
    files = walk_corpus(path, ".spacy")
    if not files:
        raise ValueError(f"entity_swap: no .spacy file at {path}.")
    vocab = Vocab()
    pool: MentionPool = {}
    for file in files:
        for doc in DocBin().from_disk(file).get_docs(vocab):
            add_mentions(doc, pool)
    if not pool:
        raise ValueError(f"entity_swap: the docs in {path} have no entities to swap.")
    return pool


def add_mentions(doc: Doc, pool: MentionPool) -> None:
    """Add the entities of a doc to the pool."""
    has_tags = doc.has_annotation("TAG")
    for ent in doc.ents:
        pool.setdefault(ent.label_, []).append(_mention(ent, has_tags))


def _mention(span: Span, has_tags: bool) -> Mention:
    return Mention(
        words=tuple(t.text for t in span),
        spaces=tuple(bool(t.whitespace_) for t in span[:-1]),
        tags=tuple(t.tag_ for t in span) if has_tags else None,
    )


def entity_swap_augmenter(
    nlp: Language,
    example: Example,
    *,
    level: float,
    swap_prob: float,
    pool: Optional[MentionPool],
    seen: Optional[MentionPool],
    rng: Optional[random.Random] = None,
) -> Iterator[Example]:
    rng = _rng(rng)
    reference = example.reference
    if not reference.ents:
        yield example
        return
    if seen is not None:  # the pool is what was seen before this example
        pool = seen
    if pool is None or rng.random() >= level:
        if seen is not None:
            add_mentions(reference, seen)
        yield example
        return
    new_reference = swap_mentions(reference, pool, swap_prob, rng)
    if seen is not None:
        add_mentions(reference, seen)
    if new_reference is None:
        yield example
        return
    augmented = Example(nlp.make_doc(new_reference.text), new_reference)
    aligned = augmented.get_aligned_spans_y2x(new_reference.ents, allow_overlap=True)
    if len(aligned) != len(new_reference.ents):
        yield example  # the new text tokenizes across an entity boundary
        return
    yield augmented


def swap_mentions(
    doc: Doc, pool: MentionPool, swap_prob: float, rng: random.Random
) -> Optional[Doc]:
    """A copy of doc with some entities replaced by mentions of the same label from the pool
    (at least one, when any entity has a label in the pool); None when none could be replaced.
    """
    candidates = [i for i, ent in enumerate(doc.ents) if pool.get(ent.label_)]
    if not candidates:
        return None
    chosen = {i for i in candidates if rng.random() < swap_prob}
    if not chosen:
        chosen = {rng.choice(candidates)}
    replacements: Dict[int, Mention] = {}
    has_tags = doc.has_annotation("TAG")
    for i in sorted(chosen):
        ent = doc.ents[i]
        own = _mention(ent, has_tags)
        options = pool[ent.label_]
        for _ in range(MAX_DRAWS):
            other = rng.choice(options)
            if other.words != own.words:
                break
        replacements[ent.start] = other
    return replace_spans(doc, replacements)


def replace_spans(doc: Doc, replacements: Dict[int, Mention]) -> Doc:
    """A copy of doc in which the entity starting at each given token is replaced by the
    mention (same label), with the tokens, tags, sentence starts, entities and span groups after
    it moved accordingly."""
    ents_at = {ent.start: ent for ent in doc.ents}
    words: List[str] = []
    spaces: List[bool] = []
    tags: List[str] = []
    pos: List[str] = []
    sent_starts: List[Optional[Union[bool, int]]] = []  # the type Doc asks for
    iob: List[str] = []
    # boundary[b]: the new position of the token boundary b (0..len(doc))
    boundary: List[int] = []
    has_tags = doc.has_annotation("TAG")
    has_pos = doc.has_annotation("POS")
    has_sents = doc.has_annotation("SENT_START")
    i = 0
    while i < len(doc):
        mention = replacements.get(i)
        if mention is None:
            token = doc[i]
            boundary.append(len(words))
            words.append(token.text)
            spaces.append(bool(token.whitespace_))
            tags.append(token.tag_)
            pos.append(token.pos_)
            sent_starts.append(token.is_sent_start)
            iob.append(f"{token.ent_iob_}-{token.ent_type_}" if token.ent_type_ else token.ent_iob_)
            i += 1
            continue
        ent = ents_at[i]
        start = len(words)
        n_new = len(mention.words)
        words.extend(mention.words)
        spaces.extend(mention.spaces)
        spaces.append(bool(doc[ent.end - 1].whitespace_))
        tags.extend(mention.tags if mention.tags is not None else [""] * n_new)
        pos.extend([doc[ent.start].pos_] * n_new)  # rarely annotated; keep the head's
        sent_starts.append(doc[ent.start].is_sent_start)
        sent_starts.extend([False] * (n_new - 1))
        iob.extend([f"B-{ent.label_}"] + [f"I-{ent.label_}"] * (n_new - 1))
        # boundaries inside the old mention map to the new mention's start
        boundary.extend([start] * (ent.end - ent.start))
        i = ent.end
    boundary.append(len(words))
    new = Doc(
        doc.vocab,
        words=words,
        spaces=spaces,
        tags=tags if has_tags else None,
        pos=pos if has_pos else None,
        sent_starts=sent_starts if has_sents else None,
        ents=iob,
    )
    inside_end = _inside_end(doc, replacements, boundary)
    for key, group in doc.spans.items():
        spans = []
        for span in group:
            start = boundary[span.start]
            end = inside_end.get(span.end, boundary[span.end])
            if end > start:
                spans.append(Span(new, start, end, label=span.label_, kb_id=span.kb_id_))
        new.spans[key] = SpanGroup(new, name=group.name, attrs=dict(group.attrs), spans=spans)
    return new


def _inside_end(
    doc: Doc, replacements: Dict[int, Mention], boundary: Sequence[int]
) -> Dict[int, int]:
    """For boundaries strictly inside a replaced mention: the new mention's end (a span that
    ends inside a mention grows to cover all of the new one)."""
    out = {}
    ents_at = {ent.start: ent for ent in doc.ents}
    for start, mention in replacements.items():
        ent = ents_at[start]
        for b in range(ent.start + 1, ent.end):
            out[b] = boundary[ent.start] + len(mention.words)
    return out


# ------------------------------------------------------------------------------ token masking
@registry.augmenters("spacy-bert-crf.token_mask.v1")
def create_token_mask_augmenter(
    level: float = 0.5, mask_prob: float = 0.1, mask: Optional[str] = None
) -> Augmenter:
    """Replace random tokens by a mask token, keeping every label.

    level (float): The fraction of examples that are augmented.
    mask_prob (float): In an augmented example, the probability of each token to be masked.
    mask (Optional[str]): The mask string; None: the mask token of the pipeline's transformer
        tokenizer ("[MASK]" for BERTs, "<mask>" for XLM-R), looked up at the first example.
    RETURNS (Callable[[Language, Example], Iterator[Example]]): The augmenter.
    """
    _check_level(level, "level")
    _check_level(mask_prob, "mask_prob")
    if mask is not None and (not mask or any(c.isspace() for c in mask)):
        raise ValueError(f"mask must be a non-empty string without whitespace, got {mask!r}.")
    return partial(token_mask_augmenter, level=level, mask_prob=mask_prob, mask=[mask])


def transformer_mask_token(nlp: Language) -> str:
    """The mask token of the first transformer component's tokenizer.

    RAISES (ValueError): No transformer with a mask token in the pipeline.
    """
    for name, proc in nlp.pipeline:
        tokenizer = getattr(getattr(proc, "model", None), "tokenizer", None)
        token = getattr(tokenizer, "mask_token", None)
        if isinstance(token, str) and token:
            return token
    raise ValueError(
        "token_mask: the pipeline has no initialized transformer with a mask token: "
        "set the augmenter's mask (e.g. mask = \"[MASK]\")."
    )


def token_mask_augmenter(
    nlp: Language,
    example: Example,
    *,
    level: float,
    mask_prob: float,
    mask: List[Optional[str]],
    rng: Optional[random.Random] = None,
) -> Iterator[Example]:
    def mask_words(reference: Doc, words: List[str], rng: random.Random) -> bool:
        mask_text = mask[0]
        if mask_text is None:
            mask_text = mask[0] = transformer_mask_token(nlp)
        masked = [
            i for i, t in enumerate(reference) if not t.is_space and rng.random() < mask_prob
        ]
        for i in masked:
            words[i] = mask_text
        return bool(masked)

    yield _augment_words(nlp, example, level, _rng(rng), mask_words)


# ------------------------------------------------------------------------------ case variation
@registry.augmenters("spacy-bert-crf.case_variation.v1")
def create_case_variation_augmenter(level: float = 0.3, token_prob: float = 0.5) -> Augmenter:
    """Change the case of random tokens (upper, lower or title case, at random).

    level (float): The fraction of examples that are augmented.
    token_prob (float): In an augmented example, the probability of each token to change.
    RETURNS (Callable[[Language, Example], Iterator[Example]]): The augmenter.
    """
    _check_level(level, "level")
    _check_level(token_prob, "token_prob")
    return partial(case_variation_augmenter, level=level, token_prob=token_prob)


def case_variation_augmenter(
    nlp: Language,
    example: Example,
    *,
    level: float,
    token_prob: float,
    rng: Optional[random.Random] = None,
) -> Iterator[Example]:
    def vary_case(reference: Doc, words: List[str], rng: random.Random) -> bool:
        changed = False
        for i, word in enumerate(words):
            if rng.random() < token_prob:
                case = rng.choice(CASES)
                new = {"lower": word.lower, "upper": word.upper, "title": word.title}[case]()
                # only case changes of the same length keep every character offset
                if new != word and len(new) == len(word):
                    words[i] = new
                    changed = True
        return changed

    yield _augment_words(nlp, example, level, _rng(rng), vary_case)


def _augment_words(
    nlp: Language,
    example: Example,
    level: float,
    rng: random.Random,
    change_words: Callable[[Doc, List[str], random.Random], bool],
) -> Example:
    """The example with words changed in place by change_words(reference, words, rng), which
    returns whether it changed any, for a fraction `level` of the non-empty examples (the
    example as it is for the others, and when nothing changed)."""
    reference = example.reference
    if not len(reference) or rng.random() >= level:
        return example
    words = [t.text for t in reference]
    if not change_words(reference, words, rng):
        return example
    return _with_words(nlp, reference, words)


def _with_words(nlp: Language, reference: Doc, words: Iterable[str]) -> Example:
    """The example with the reference's words replaced (same tokens, same annotation); the
    predicted doc has the reference's tokenization, so every annotation stays aligned."""
    new = replace_words(reference, list(words))
    predicted = Doc(
        nlp.vocab, words=[t.text for t in new], spaces=[bool(t.whitespace_) for t in new]
    )
    return Example(predicted, new)


def replace_words(doc: Doc, words: List[str]) -> Doc:
    """A copy of doc with other words for its tokens, all annotation kept."""
    if len(words) != len(doc):
        raise ValueError(f"Expected {len(doc)} words, got {len(words)}.")
    new = Doc(
        doc.vocab,
        words=words,
        spaces=[bool(t.whitespace_) for t in doc],
        tags=[t.tag_ for t in doc] if doc.has_annotation("TAG") else None,
        pos=[t.pos_ for t in doc] if doc.has_annotation("POS") else None,
        sent_starts=[t.is_sent_start for t in doc] if doc.has_annotation("SENT_START") else None,
        ents=[f"{t.ent_iob_}-{t.ent_type_}" if t.ent_type_ else t.ent_iob_ for t in doc],
    )
    for key, group in doc.spans.items():
        spans = [Span(new, s.start, s.end, label=s.label_, kb_id=s.kb_id_) for s in group]
        new.spans[key] = SpanGroup(new, name=group.name, attrs=dict(group.attrs), spans=spans)
    return new

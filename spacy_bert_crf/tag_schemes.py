"""Tag schemes: the only code that knows tag prefixes.

A tag is "O" (outside) or PREFIX-LABEL, split at its first "-": "B-LOC-2" has the label "LOC-2"
and "I-creative-work" the label "creative-work". Any label spaCy allows works except "" and "O".

Two sets of schemes:
    MODEL_SCHEMES ("BILUO", "BIO"): what crf_ner tags with (SCHEMES is the same tuple).
    INPUT_SCHEMES: what the converters read: IOB1, IOB2 (= BIO), BIOES (= BILUO, and BMES,
        which writes M- for I-, E- for L- and S- for U-), or "auto" (detect_scheme).

One rule (`_follows`) says which tag may follow which; the start and the end of a sequence count
as "O":
    BILUO / BIOES / BMES: after B-X or I-X comes I-X or L-X; after O, L- or U- comes O, B- or U-.
    BIO / IOB2: I-X only follows B-X or I-X.
    IOB1: B-X only follows B-X or I-X (B- only separates two adjacent entities of one type).
The CRF's constraints (`constraints`, `continuations`) and the converters' repairs all come
from it.

One decoder (`read_tags`): a tag goes on with the entity before it when it is an I-/M-/L-/E- tag
right after a B-/I-/M- tag of its label; every other tag but "O" starts a new entity. On a valid
sequence this is the scheme's own reading (tests/test_tag_schemes.py checks it against spaCy's
`iob_to_biluo` and `biluo_tags_to_spans`); on an invalid one it is the repair: a new entity starts
where the sequence breaks, so no token and no entity is dropped.
"""
from collections import Counter
from typing import Counter as CounterType
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy

OUT = "O"
MODEL_SCHEMES = ("BILUO", "BIO")
SCHEMES = MODEL_SCHEMES  # the name the component imports
INPUT_SCHEMES = ("auto", "IOB1", "IOB2", "BIO", "BIOES", "BILUO", "BMES")
PREFIXES = ("B", "I", "E", "S", "L", "U", "M")

Tag = Tuple[str, str]  # (prefix, label); ("O", "") outside
Span = Tuple[int, int, str]  # (start, end exclusive, label) in tokens

# The reading of each scheme: IOB1, IOB2 or BIOES (which covers BILUO and BMES).
_FAMILIES = {
    "IOB1": "IOB1",
    "IOB2": "IOB2",
    "BIO": "IOB2",
    "BIOES": "BIOES",
    "BILUO": "BIOES",
    "BMES": "BIOES",
}
_FAMILY_PREFIXES = {"IOB1": frozenset("BI"), "IOB2": frozenset("BI"), "BIOES": frozenset(PREFIXES)}
_BIOES_ONLY = frozenset(PREFIXES) - _FAMILY_PREFIXES["IOB2"]
_MODEL_PREFIXES = {"BILUO": ("B", "I", "L", "U"), "BIO": ("B", "I")}
_OPENS = frozenset("BIM")  # the entity may go on after these
_CONTINUES = frozenset("IMLE")  # these go on with the entity of the tag before
_TO_BIO = {"B": "B", "U": "B", "I": "I", "L": "I"}
_OUTSIDE: Tag = (OUT, "")
_IOB1_NOTE = " (IOB1 uses B- only right after an entity of the same type)"


class TagSchemeError(ValueError):
    """A tag whose prefix the scheme does not have; `index` is its position in the sequence."""

    def __init__(self, message: str, index: int) -> None:
        super().__init__(message)
        self.index = index


# ---------------------------------------------------------------------------------------------
# Schemes and tags
# ---------------------------------------------------------------------------------------------


def check_scheme(scheme: str, allowed: Sequence[str] = MODEL_SCHEMES) -> str:
    """Raise a ValueError unless `scheme` is one of `allowed`.

    scheme (str): The scheme name.
    allowed (Sequence[str]): MODEL_SCHEMES (the default) or INPUT_SCHEMES.
    RETURNS (str): The scheme.
    """
    if scheme not in allowed:
        raise ValueError(f"Invalid scheme {scheme!r}: expected one of {', '.join(allowed)}.")
    return scheme


def input_scheme(scheme: str) -> str:
    """The name of an input scheme in any case ("bio" -> "BIO", "Auto" -> "auto").

    RETURNS (str): One of INPUT_SCHEMES; raises a ValueError for another name.
    """
    return check_scheme("auto" if scheme.lower() == "auto" else scheme.upper(), INPUT_SCHEMES)


def split_tag(tag: str) -> Tag:
    """Split a tag into (prefix, label) at its first "-"; "O" gives ("O", "").

    Raises a ValueError ("malformed tag ...") for a tag without PREFIX-, an unknown prefix
    (not one of PREFIXES), no label, or the label "O".
    """
    if tag == OUT:
        return _OUTSIDE
    prefix, sep, label = tag.partition("-")
    if not sep:
        problem = "no PREFIX- (expected 'O' or PREFIX-LABEL)"
    elif prefix not in PREFIXES:
        problem = f"unknown prefix {prefix!r} (expected one of {', '.join(PREFIXES)})"
    elif not label:
        problem = "no label after the prefix"
    elif label == OUT:
        problem = "'O' is not an entity label (it means outside)"
    else:
        return prefix, label
    raise ValueError(f"malformed tag {tag!r}: {problem}")


def join_tag(tag: Tag) -> str:
    """The text of a (prefix, label) tag: "O" or PREFIX-LABEL."""
    return OUT if tag[0] == OUT else f"{tag[0]}-{tag[1]}"


# ---------------------------------------------------------------------------------------------
# Encoding (model schemes)
# ---------------------------------------------------------------------------------------------


def make_tags(labels: Sequence[str], scheme: str) -> List[str]:
    """The tag inventory: "O" first, then the scheme's prefixes for each label in order."""
    prefixes = _MODEL_PREFIXES[check_scheme(scheme)]
    return [OUT] + [f"{prefix}-{label}" for label in labels for prefix in prefixes]


def span_tags(length: int, label: str, scheme: str) -> List[str]:
    """The tags of one entity of `length` tokens: U-X / B-X I-X.. L-X (BILUO) or B-X I-X.. (BIO)."""
    if length < 1:
        raise ValueError(f"An entity spans at least one token, got length {length}.")
    if check_scheme(scheme) == "BILUO":
        if length == 1:
            return [f"U-{label}"]
        return [f"B-{label}"] + [f"I-{label}"] * (length - 2) + [f"L-{label}"]
    return [f"B-{label}"] + [f"I-{label}"] * (length - 1)


def spans_to_tags(length: int, spans: Iterable[Span], scheme: str) -> List[str]:
    """The tags of a sequence of `length` tokens with the given non-overlapping entities."""
    tags = [OUT] * length
    for start, end, label in spans:
        tags[start:end] = span_tags(end - start, label, scheme)
    return tags


def biluo_to_scheme(tag: Optional[str], scheme: str) -> Optional[str]:
    """Map one spaCy BILUO tag (None/"-"/"" = missing) to the scheme's tag (None = missing)."""
    if tag is None or tag == "-" or tag == "":
        return None
    if check_scheme(scheme) == "BILUO" or tag == OUT:
        return tag
    prefix, label = split_tag(tag)
    return f"{_TO_BIO[prefix]}-{label}"


# ---------------------------------------------------------------------------------------------
# Validity: one rule for the CRF's constraints and the converters' repairs
# ---------------------------------------------------------------------------------------------


def _follows(prev: Tag, tag: Tag, family: str) -> bool:
    """Whether `tag` may follow `prev` in the family's reading ("O" stands for start and end)."""
    if family == "BIOES":
        if prev[0] in _OPENS:
            return tag[0] in _CONTINUES and tag[1] == prev[1]
        return tag[0] not in _CONTINUES
    bound = "I" if family == "IOB2" else "B"  # the prefix that only follows its own type
    return tag[0] != bound or (prev[0] in _OPENS and prev[1] == tag[1])


def constraints(
    tags: Sequence[str], scheme: str
) -> Tuple[numpy.ndarray, numpy.ndarray, numpy.ndarray]:
    """Allowed transitions (K, K), allowed start tags (K,) and allowed end tags (K,), as bools.

    BILUO: a sequence starts with O/B/U, ends with O/L/U; after B-X or I-X comes I-X or L-X;
    after O, L or U comes O, B or U.
    BIO: a sequence starts with O/B; I-X only follows B-X or I-X.
    """
    family = _FAMILIES[check_scheme(scheme)]
    parsed = [split_tag(tag) for tag in tags]
    _check_prefixes(parsed, scheme, _MODEL_PREFIXES[scheme])
    trans = numpy.array(
        [[_follows(a, b, family) for b in parsed] for a in parsed], dtype=bool
    ).reshape(len(parsed), len(parsed))
    start = numpy.array([_follows(_OUTSIDE, b, family) for b in parsed], dtype=bool)
    end = numpy.array([_follows(a, _OUTSIDE, family) for a in parsed], dtype=bool)
    return trans, start, end


def continuations(tags: Sequence[str], scheme: str) -> numpy.ndarray:
    """For each tag, the id of the tag that would go on with an entity ending on it, -1 if none:
    under BIO, I-X after B-X or I-X (so B-X I-X is exactly that span only when the next tag is
    not I-X); under BILUO none (an entity ends on L-X or U-X, and nothing goes on after those).

    tags (Sequence[str]): The tag inventory (make_tags).
    RETURNS (numpy.ndarray): (K,) int, a tag id or -1.
    """
    family = _FAMILIES[check_scheme(scheme)]
    index = {tag: i for i, tag in enumerate(tags)}
    out = numpy.full(len(tags), -1, dtype=int)
    for i, tag in enumerate(tags):
        prefix, label = split_tag(tag)
        if prefix in _OPENS and _follows((prefix, label), _OUTSIDE, family):
            out[i] = index.get(f"I-{label}", -1)
    return out


def _check_prefixes(tags: Sequence[Tag], scheme: str, allowed: Iterable[str]) -> None:
    """Raise a TagSchemeError at the first tag whose prefix is not one of `allowed`."""
    if {tag[0] for tag in tags}.issubset({OUT, *allowed}):
        return
    for i, (prefix, label) in enumerate(tags):
        if prefix != OUT and prefix not in allowed:
            raise TagSchemeError(
                f"tag {join_tag((prefix, label))!r} is not valid in scheme {scheme} "
                f"(allowed prefixes: {', '.join(sorted(allowed))})",
                i,
            )


# ---------------------------------------------------------------------------------------------
# Decoding: the one decoder, for the model's tags and the converters' input
# ---------------------------------------------------------------------------------------------


def _read(tags: Sequence[Tag], family: str) -> Tuple[List[Span], List[Tuple[int, str]]]:
    """The entities of a tag sequence and its breaks: (index, description) of each tag that
    may not follow the one before, and of the last tag when the sequence may not end there."""
    spans: List[Span] = []
    breaks: List[Tuple[int, str]] = []
    start = -1  # start of the entity of the tag before, -1 when it is "O"
    prev = _OUTSIDE
    for i, tag in enumerate(tags):
        if tag[0] == OUT and prev[0] == OUT:  # most tags: nothing to do
            continue
        goes_on = prev[0] in _OPENS and tag[0] in _CONTINUES and prev[1] == tag[1]
        if start >= 0 and not goes_on:
            spans.append((start, i, prev[1]))
            start = -1
        if tag[0] != OUT and not goes_on:
            start = i
        if not _follows(prev, tag, family):
            after = join_tag(prev) if i else "sentence start"
            note = _IOB1_NOTE if family == "IOB1" else ""
            breaks.append((i, f"{join_tag(tag)!r} after {after!r}{note}"))
        prev = tag
    if start >= 0:
        spans.append((start, len(tags), prev[1]))
    if not _follows(prev, _OUTSIDE, family):
        breaks.append((len(tags) - 1, f"sentence ends after {join_tag(prev)!r}"))
    return spans, breaks


def read_tags(tags: Sequence[Tag], scheme: str) -> Tuple[List[Span], List[Tuple[int, str]]]:
    """Entities of any tag sequence, and where it breaks the scheme.

    A tag that may not follow the one before (and an entity left open at the end, in BIOES)
    is a repair: the entity ends there and a new one starts, so no token and no entity is lost.

    tags (Sequence[Tag]): (prefix, label) pairs, as split_tag gives them.
    scheme (str): One of INPUT_SCHEMES but "auto" (BIO is read as IOB2, BILUO and BMES as BIOES).
    RETURNS (Tuple[List[Span], List[Tuple[int, str]]]): The entities, and (index, description)
        of each repair. Raises TagSchemeError for a prefix the scheme does not have.
    """
    family = _FAMILIES[check_scheme(scheme, INPUT_SCHEMES[1:])]
    _check_prefixes(tags, scheme, _FAMILY_PREFIXES[family])
    return _read(tags, family)


def tags_to_spans(tags: Sequence[str], scheme: str) -> List[Span]:
    """Token spans (start, end exclusive, label) of a tag sequence of the model's scheme."""
    return _read([split_tag(tag) for tag in tags], _FAMILIES[check_scheme(scheme)])[0]


# ---------------------------------------------------------------------------------------------
# Detecting the scheme of an input file
# ---------------------------------------------------------------------------------------------


def resolve_scheme(scheme: str, sequences: Iterable[Sequence[Tag]]) -> Tuple[str, str, bool]:
    """The input scheme to read the sequences with: `scheme` itself, or detected for "auto".

    scheme (str): One of INPUT_SCHEMES, in any case.
    sequences (Iterable[Sequence[Tag]]): The tag sequences (sentences) of a file; only read
        for "auto".
    RETURNS (Tuple[str, str, bool]): (name, detection, ambiguous): the scheme, what the
        detection saw ("" for a given scheme) and whether every reading has invalid tags.
    """
    name = input_scheme(scheme)
    if name != "auto":
        return name, "", False
    return detect_scheme(sequences)


def detect_scheme(sequences: Iterable[Sequence[Tag]]) -> Tuple[str, str, bool]:
    """Detect the scheme of tag sequences by the fewest invalid tags.

    A prefix only BIOES/BILUO/BMES use (E, S, L, U, M) decides for that family. Otherwise the
    choice is between IOB2 and IOB1, which give the same entities: it counts the I- tags that
    start an entity (invalid in IOB2) and the B- tags that do not follow an entity of their type
    (invalid in IOB1). When both counts are above zero the scheme is ambiguous.

    RETURNS (Tuple[str, str, bool]): (name, detection, ambiguous), as resolve_scheme.
    """
    prefixes: CounterType[str] = Counter()
    invalid = {"IOB2": 0, "IOB1": 0}
    for tags in sequences:
        prev = _OUTSIDE
        for tag in tags:
            prefixes[tag[0]] += 1
            if tag[0] != OUT:
                invalid["IOB2"] += not _follows(prev, tag, "IOB2")
                invalid["IOB1"] += not _follows(prev, tag, "IOB1")
            prev = tag
    bioes_only = sorted(p for p in prefixes if p in _BIOES_ONLY)
    if bioes_only:
        if "M" in prefixes:
            name = "BMES"
        else:
            name = "BILUO" if prefixes.keys() & {"L", "U"} else "BIOES"
        n_tags = sum(prefixes[p] for p in bioes_only)
        used = ", ".join(f"{p}-" for p in bioes_only)
        detection = f"{n_tags:,} tag(s) with the prefix {used}, which only BIOES/BILUO/BMES use"
        return name, detection, False
    if not prefixes["B"] and not prefixes["I"]:
        return "IOB2", "no entity tags (every tag is O)", False
    counts: Dict[str, str] = {
        "IOB2": f"{invalid['IOB2']:,} as IOB2 (I- starting an entity)",
        "IOB1": f"{invalid['IOB1']:,} as IOB1 (B- not right after an entity of its type)",
    }
    name, other = ("IOB2", "IOB1") if invalid["IOB2"] <= invalid["IOB1"] else ("IOB1", "IOB2")
    detection = f"fewest invalid tags: {counts[name]}, against {counts[other]}"
    return name, detection, bool(invalid["IOB2"] and invalid["IOB1"])

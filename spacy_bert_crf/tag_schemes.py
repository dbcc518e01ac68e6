"""Tag schemes: the tag inventory of a label set and which tag sequences are valid.

A scheme turns entity labels into per-token tags and says which transitions are allowed.
The CRF applies these as -inf transitions, so every decoded sequence is valid by construction.

Supported schemes: ``BILUO`` (spaCy's native scheme, a.k.a. BIOES) and ``BIO`` (IOB2).
"""
from typing import Iterable, List, Optional, Sequence, Tuple

import numpy

SCHEMES = ("BILUO", "BIO")
OUT = "O"


def _check_scheme(scheme: str) -> str:
    if scheme not in SCHEMES:
        raise ValueError(f"Unknown tag scheme {scheme!r}: expected one of {', '.join(SCHEMES)}.")
    return scheme


def _prefixes(scheme: str) -> Tuple[str, ...]:
    return ("B", "I", "L", "U") if _check_scheme(scheme) == "BILUO" else ("B", "I")


def make_tags(labels: Sequence[str], scheme: str) -> List[str]:
    """The tag inventory: "O" first, then the scheme's prefixes for each label in order."""
    tags = [OUT]
    for label in labels:
        tags.extend(f"{p}-{label}" for p in _prefixes(scheme))
    return tags


def split_tag(tag: str) -> Tuple[str, str]:
    if tag == OUT:
        return OUT, ""
    prefix, sep, label = tag.partition("-")
    if not sep or not label:
        raise ValueError(f"Malformed tag {tag!r}: expected 'O' or PREFIX-LABEL.")
    return prefix, label


def constraints(
    tags: Sequence[str], scheme: str
) -> Tuple[numpy.ndarray, numpy.ndarray, numpy.ndarray]:
    """Allowed transitions (K, K), allowed start tags (K,) and allowed end tags (K,), as bools.

    BILUO: a sequence starts with O/B/U, ends with O/L/U; after B-X or I-X comes I-X or L-X;
    after O, L or U comes O, B or U.
    BIO: a sequence starts with O/B; I-X only follows B-X or I-X.
    """
    _check_scheme(scheme)
    parsed = [split_tag(t) for t in tags]
    K = len(tags)
    trans = numpy.zeros((K, K), dtype=bool)
    start = numpy.zeros((K,), dtype=bool)
    end = numpy.zeros((K,), dtype=bool)
    for j, (pj, lj) in enumerate(parsed):
        if scheme == "BILUO":
            start[j] = pj in (OUT, "B", "U")
            end[j] = pj in (OUT, "L", "U")
        else:
            start[j] = pj in (OUT, "B")
            end[j] = True
        for i, (pi, li) in enumerate(parsed):
            if scheme == "BILUO":
                if pi in ("B", "I"):
                    trans[i, j] = pj in ("I", "L") and lj == li
                else:
                    trans[i, j] = pj in (OUT, "B", "U")
            else:
                if pj == "I":
                    trans[i, j] = pi in ("B", "I") and li == lj
                else:
                    trans[i, j] = True
    return trans, start, end


def is_valid(tags: Sequence[str], scheme: str) -> bool:
    """Whether a tag sequence is valid under the scheme (used by tests and checks)."""
    if not tags:
        return True
    inventory = sorted(set(tags) | {OUT})
    index = {t: i for i, t in enumerate(inventory)}
    trans, start, end = constraints(inventory, scheme)
    ids = [index[t] for t in tags]
    if not start[ids[0]] or not end[ids[-1]]:
        return False
    return all(trans[a, b] for a, b in zip(ids, ids[1:]))


def biluo_to_scheme(tag: Optional[str], scheme: str) -> Optional[str]:
    """Map one spaCy BILUO tag (None/"-" = missing) to the scheme's tag (None = missing)."""
    if tag is None or tag == "-" or tag == "":
        return None
    if scheme == "BILUO" or tag == OUT:
        return tag
    prefix, label = split_tag(tag)
    return f"{'B' if prefix in ('B', 'U') else 'I'}-{label}"


def tags_to_spans(tags: Sequence[str], scheme: str) -> List[Tuple[int, int, str]]:
    """Token spans (start, end exclusive, label) of a *valid* tag sequence."""
    spans = []
    start = None
    for i, tag in enumerate(tags):
        prefix, label = split_tag(tag)
        if prefix in ("B", "U"):
            start = i
        if scheme == "BILUO":
            if prefix in ("L", "U"):
                spans.append((start, i + 1, label))
                start = None
        else:
            nxt = tags[i + 1] if i + 1 < len(tags) else OUT
            if prefix in ("B", "I") and nxt != f"I-{label}":
                spans.append((start, i + 1, label))
                start = None
    return spans


def span_tags(length: int, label: str, scheme: str) -> List[str]:
    """The tags of one entity of `length` tokens: U-X / B-X I-X.. L-X (BILUO) or B-X I-X.. (BIO)."""
    if length < 1:
        raise ValueError(f"An entity spans at least one token, got length {length}.")
    if _check_scheme(scheme) == "BILUO":
        if length == 1:
            return [f"U-{label}"]
        return [f"B-{label}"] + [f"I-{label}"] * (length - 2) + [f"L-{label}"]
    return [f"B-{label}"] + [f"I-{label}"] * (length - 1)


def spans_to_tag_ids(
    length: int, spans: Iterable[Tuple[int, int, str]], tags: Sequence[str], scheme: str
) -> List[int]:
    """Tag ids for a sequence of `length` tokens with the given (start, end, label) spans."""
    index = {t: i for i, t in enumerate(tags)}
    out = [index[OUT]] * length
    for start, end, label in spans:
        out[start:end] = [index[t] for t in span_tags(end - start, label, scheme)]
    return out

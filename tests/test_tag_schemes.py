"""Tag schemes: parsing, encoding, decoding, constraints and scheme detection (tag_schemes.py).

The property tests check that the converter and the model read tags the same way: a scheme edge
case on which they disagreed would be a silent accuracy bug (the model would learn one reading
and be scored on another). spaCy's iob_to_biluo and biluo_tags_to_spans are the outside judge.
"""
from pathlib import Path
from typing import List, Sequence, Tuple

import numpy
import pytest
from hypothesis import given
from hypothesis import strategies as st
from spacy.tokens import Doc
from spacy.training import biluo_tags_to_spans, iob_to_biluo
from spacy.vocab import Vocab

from benchmarks.peers.common import ents_to_iob2
from spacy_bert_crf.corpora import ConversionError, read_conll
from spacy_bert_crf.tag_schemes import (
    INPUT_SCHEMES,
    MODEL_SCHEMES,
    OUT,
    SCHEMES,
    TagSchemeError,
    check_scheme,
    constraints,
    continuations,
    detect_scheme,
    input_scheme,
    make_tags,
    read_tags,
    resolve_scheme,
    span_tags,
    spans_to_tags,
    split_tag,
    tags_to_spans,
)

from .util import is_valid, spans_to_tag_ids

# Labels with "-" and labels that look like prefixes or "O": the tag is split at its first "-".
LABELS = ["PER", "LOC-2", "creative-work", "B", "O-X", "U-L", "人名"]
VOCAB = Vocab()
Span = Tuple[int, int, str]


def spacy_spans(tags: Sequence[str], scheme: str) -> List[Span]:
    """The entities spaCy reads from a tag sequence of a model scheme."""
    doc = Doc(VOCAB, words=["w"] * len(tags))
    biluo = iob_to_biluo(tags) if scheme == "BIO" else list(tags)
    return [(span.start, span.end, span.label_) for span in biluo_tags_to_spans(doc, biluo)]


def convert(tmp_path: Path, tags: Sequence[str], scheme: str, strict: bool = False):
    """Spans and stats of the converter reading one sentence with these tags."""
    path = tmp_path / "tags.txt"
    path.write_text("".join(f"w{i} {tag}\n" for i, tag in enumerate(tags)), encoding="utf8")
    (doc,), stats = read_conll(path, scheme=scheme, strict=strict, vocab=VOCAB)
    return [(ent.start, ent.end, ent.label_) for ent in doc.ents], stats


def accepted(tags: Sequence[str], scheme: str) -> bool:
    """Whether the CRF's constraint matrices allow this path."""
    inventory = make_tags(LABELS, scheme)
    trans, start, end = constraints(inventory, scheme)
    ids = [inventory.index(tag) for tag in tags]
    if not ids:
        return True
    steps = all(trans[a, b] for a, b in zip(ids, ids[1:]))
    return bool(start[ids[0]] and end[ids[-1]] and steps)


@st.composite
def entity_spans(draw, labels=LABELS) -> Tuple[int, List[Span]]:
    """(length, non-overlapping spans) of a random sentence."""
    length = draw(st.integers(1, 12))
    spans, i = [], 0
    while i < length:
        if draw(st.booleans()):
            end = draw(st.integers(i + 1, length))
            spans.append((i, end, draw(st.sampled_from(labels))))
            i = end
        else:
            i += 1
    return length, spans


@st.composite
def viterbi_paths(draw, scheme: str) -> List[str]:
    """A path the CRF can decode: a random walk over the allowed start, transitions and end."""
    inventory = make_tags(LABELS, scheme)
    trans, start, end = constraints(inventory, scheme)
    length = draw(st.integers(1, 10))
    allowed = start
    path: List[int] = []
    for t in range(length):
        if t == length - 1:
            allowed = allowed & end
        path.append(draw(st.sampled_from(numpy.flatnonzero(allowed).tolist())))
        allowed = trans[path[-1]]
    return [inventory[i] for i in path]


any_model_tags = st.sampled_from(MODEL_SCHEMES).flatmap(
    lambda scheme: st.tuples(
        st.just(scheme), st.lists(st.sampled_from(make_tags(LABELS, scheme)), max_size=10)
    )
)
iob_tag = st.builds("{}-{}".format, st.sampled_from("BI"), st.sampled_from(LABELS))
iob_tags = st.lists(st.one_of(st.just(OUT), iob_tag), min_size=1, max_size=12)


# ---------------------------------------------------------------------------------------------
# Properties: the converter, the model and spaCy agree
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", MODEL_SCHEMES)
@given(sample=entity_spans())
def test_encode_decode_round_trip(scheme, sample):
    length, spans = sample
    tags = spans_to_tags(length, spans, scheme)
    assert is_valid(tags, scheme)
    assert tags_to_spans(tags, scheme) == spans
    assert spacy_spans(tags, scheme) == spans


@pytest.mark.parametrize("scheme", MODEL_SCHEMES)
@given(data=st.data())
def test_viterbi_paths_decode_as_spacy_reads_them(scheme, data):
    tags = data.draw(viterbi_paths(scheme))
    assert is_valid(tags, scheme)
    assert tags_to_spans(tags, scheme) == spacy_spans(tags, scheme)
    # A valid path is exactly the encoding of its entities.
    assert spans_to_tags(len(tags), tags_to_spans(tags, scheme), scheme) == tags


@given(sample=any_model_tags)
def test_is_valid_is_what_the_constraints_allow(sample):
    scheme, tags = sample
    assert is_valid(tags, scheme) == accepted(tags, scheme)
    # and the valid sequences are exactly the encodings of span sets
    encoded = spans_to_tags(len(tags), tags_to_spans(tags, scheme), scheme)
    assert is_valid(tags, scheme) == (encoded == tags)


@pytest.mark.parametrize("model_scheme,input_name", [("BIO", "IOB2"), ("BILUO", "BIOES")])
@given(data=st.data())
def test_converter_reads_model_paths_as_the_model(tmp_path_factory, model_scheme, input_name, data):
    tags = data.draw(viterbi_paths(model_scheme))
    tmp_path = tmp_path_factory.mktemp("path")
    spans, stats = convert(tmp_path, tags, input_name, strict=True)
    assert spans == tags_to_spans(tags, model_scheme)
    assert stats.repairs == 0
    auto_spans, auto_stats = convert(tmp_path, tags, "auto")
    assert auto_spans == spans


@given(sample=any_model_tags)
def test_converter_and_model_agree_on_any_sequence(tmp_path_factory, sample):
    scheme, tags = sample
    if not tags:
        return
    input_name = {"BIO": "IOB2", "BILUO": "BILUO"}[scheme]
    spans, stats = convert(tmp_path_factory.mktemp("any"), tags, input_name)
    assert spans == tags_to_spans(tags, scheme)
    assert (stats.repairs == 0) == is_valid(tags, scheme)


@pytest.mark.parametrize("scheme", ["IOB1", "IOB2"])
@given(tags=iob_tags)
def test_converter_reads_any_iob_sequence_as_spacy(tmp_path_factory, scheme, tags):
    # spaCy's iob_to_biluo starts an entity at a stray I- too: both IOB readings agree with it.
    spans, _ = convert(tmp_path_factory.mktemp("iob"), tags, scheme)
    assert spans == spacy_spans(tags, "BIO")


@given(sample=entity_spans())
def test_benchmark_peers_encode_as_tag_schemes(sample):
    length, spans = sample
    assert ents_to_iob2(length, spans) == spans_to_tags(length, spans, "BIO")


# ---------------------------------------------------------------------------------------------
# Schemes and tags
# ---------------------------------------------------------------------------------------------


def test_scheme_sets():
    assert SCHEMES == MODEL_SCHEMES == ("BILUO", "BIO")
    assert set(MODEL_SCHEMES) < set(INPUT_SCHEMES)
    assert check_scheme("BIO") == "BIO"
    assert check_scheme("IOB1", INPUT_SCHEMES) == "IOB1"
    assert [input_scheme(s) for s in ("bio", "Auto", "bmes")] == ["BIO", "auto", "BMES"]


@pytest.mark.parametrize(
    "call,message",
    [
        (lambda: check_scheme("IOB2"), "Invalid scheme 'IOB2': expected one of BILUO, BIO."),
        (lambda: check_scheme("biluo"), "Invalid scheme 'biluo': expected one of BILUO, BIO."),
        (lambda: input_scheme("iobes"), "Invalid scheme 'IOBES': expected one of auto, IOB1"),
        (lambda: make_tags(["PER"], "BIOES"), "Invalid scheme 'BIOES'"),
        (lambda: constraints(["O"], "IOB1"), "Invalid scheme 'IOB1'"),
        (lambda: tags_to_spans(["O"], "BMES"), "Invalid scheme 'BMES'"),
        (lambda: read_tags([], "auto"), "Invalid scheme 'auto'"),
    ],
)
def test_one_scheme_validator_one_wording(call, message):
    with pytest.raises(ValueError) as excinfo:
        call()
    assert str(excinfo.value).startswith(message)


@pytest.mark.parametrize(
    "tag,parsed",
    [
        ("O", ("O", "")),
        ("B-PER", ("B", "PER")),
        ("I-LOC-2", ("I", "LOC-2")),
        ("L-creative-work", ("L", "creative-work")),
        ("B-B", ("B", "B")),
        ("U-O-X", ("U", "O-X")),
        ("M-人名", ("M", "人名")),
    ],
)
def test_split_tag(tag, parsed):
    assert split_tag(tag) == parsed


@pytest.mark.parametrize(
    "tag,problem",
    [
        ("PER", "no PREFIX- (expected 'O' or PREFIX-LABEL)"),
        ("X-PER", "unknown prefix 'X' (expected one of B, I, E, S, L, U, M)"),
        ("-PER", "unknown prefix ''"),
        ("B-", "no label after the prefix"),
        ("B-O", "'O' is not an entity label (it means outside)"),
        ("o", "no PREFIX-"),
    ],
)
def test_malformed_tags(tag, problem):
    with pytest.raises(ValueError) as excinfo:
        split_tag(tag)
    assert str(excinfo.value).startswith(f"malformed tag {tag!r}: {problem}")


def test_encoding():
    assert make_tags(["PER", "LOC-2"], "BIO") == ["O", "B-PER", "I-PER", "B-LOC-2", "I-LOC-2"]
    assert make_tags(["X"], "BILUO") == ["O", "B-X", "I-X", "L-X", "U-X"]
    assert span_tags(1, "A-B", "BILUO") == ["U-A-B"]
    assert span_tags(3, "A-B", "BILUO") == ["B-A-B", "I-A-B", "L-A-B"]
    assert span_tags(3, "A-B", "BIO") == ["B-A-B", "I-A-B", "I-A-B"]
    with pytest.raises(ValueError, match="at least one token"):
        span_tags(0, "X", "BIO")
    assert spans_to_tags(5, [(0, 1, "X"), (1, 3, "X")], "BILUO") == ["U-X", "B-X", "L-X", "O", "O"]
    tags = make_tags(["X"], "BIO")
    assert spans_to_tag_ids(4, [(1, 3, "X")], tags, "BIO") == [0, 1, 2, 0]
    bio = make_tags(["X", "LOC-2"], "BIO")  # O B-X I-X B-LOC-2 I-LOC-2
    assert continuations(bio, "BIO").tolist() == [-1, 2, 2, 4, 4]
    assert continuations(make_tags(["X"], "BILUO"), "BILUO").tolist() == [-1] * 5


def test_constraints_bio_and_biluo():
    tags = make_tags(["X", "Y"], "BIO")  # O B-X I-X B-Y I-Y
    trans, start, end = constraints(tags, "BIO")
    assert start.tolist() == [True, True, False, True, False]
    assert end.all()
    assert trans[:, tags.index("I-X")].tolist() == [False, True, True, False, False]
    tags = make_tags(["X"], "BILUO")  # O B I L U
    trans, start, end = constraints(tags, "BILUO")
    assert start.tolist() == [True, True, False, False, True]
    assert end.tolist() == [True, False, False, True, True]
    assert trans.astype(int).tolist() == [
        [1, 1, 0, 0, 1],
        [0, 0, 1, 1, 0],
        [0, 0, 1, 1, 0],
        [1, 1, 0, 0, 1],
        [1, 1, 0, 0, 1],
    ]
    with pytest.raises(TagSchemeError, match="tag 'L-X' is not valid in scheme BIO"):
        constraints(["O", "L-X"], "BIO")


def test_is_valid_refuses_other_prefixes():
    assert is_valid(["B-X", "L-X"], "BILUO")
    assert not is_valid(["B-X", "L-X"], "BIO")
    assert not is_valid(["S-X"], "BILUO")  # BIOES's S- is no BILUO model tag


# ---------------------------------------------------------------------------------------------
# Reading input tags: repairs and detection
# ---------------------------------------------------------------------------------------------


def parse(tags: str) -> List[Tuple[str, str]]:
    return [split_tag(tag) for tag in tags.split()]


@pytest.mark.parametrize(
    "tags,scheme,spans,repairs",
    [
        ("I-X I-X B-X O", "IOB1", [(0, 2, "X"), (2, 3, "X")], []),
        (
            "B-X O",
            "IOB1",
            [(0, 1, "X")],
            [(0, "'B-X' after 'sentence start' (IOB1 uses B- only right after an entity "
                "of the same type)")],
        ),
        ("O I-X B-Y I-X", "IOB2", [(1, 2, "X"), (2, 3, "Y"), (3, 4, "X")],
         [(1, "'I-X' after 'O'"), (3, "'I-X' after 'B-Y'")]),
        ("B-X M-X E-X S-Y", "BMES", [(0, 3, "X"), (3, 4, "Y")], []),
        ("B-X O E-X", "BIOES", [(0, 1, "X"), (2, 3, "X")],
         [(1, "'O' after 'B-X'"), (2, "'E-X' after 'O'")]),
        ("U-X B-X", "BILUO", [(0, 1, "X"), (1, 2, "X")], [(1, "sentence ends after 'B-X'")]),
        ("B-LOC-2 L-LOC-2", "BILUO", [(0, 2, "LOC-2")], []),
        ("", "IOB2", [], []),
    ],
)
def test_read_tags_repairs(tags, scheme, spans, repairs):
    assert read_tags(parse(tags), scheme) == (spans, repairs)


def test_read_tags_refuses_prefixes_the_scheme_lacks():
    with pytest.raises(TagSchemeError) as excinfo:
        read_tags(parse("O B-X S-X"), "IOB2")
    assert excinfo.value.index == 2
    assert str(excinfo.value) == "tag 'S-X' is not valid in scheme IOB2 (allowed prefixes: B, I)"


@pytest.mark.parametrize(
    "sentences,name,detection,ambiguous",
    [
        (["B-X M-X E-X", "S-X"], "BMES", "3 tag(s) with the prefix E-, M-, S-, which only", False),
        (["B-X L-X"], "BILUO", "1 tag(s) with the prefix L-, which only", False),
        (["B-X E-X O"], "BIOES", "1 tag(s) with the prefix E-", False),
        (["O O", "O"], "IOB2", "no entity tags (every tag is O)", False),
        (["B-X I-X O B-Y"], "IOB2", "fewest invalid tags: 0 as IOB2 (I- starting an entity), "
         "against 2 as IOB1 (B- not right after an entity of its type)", False),
        (["I-X B-X O I-Y"], "IOB1", "fewest invalid tags: 0 as IOB1", False),
        (["I-X B-X", "B-Y O I-Z"], "IOB1", "fewest invalid tags: 1 as IOB1", True),
    ],
)
def test_detect_scheme(sentences, name, detection, ambiguous):
    found = detect_scheme(parse(sentence) for sentence in sentences)
    assert found[0] == name
    assert found[1].startswith(detection)
    assert found[2] is ambiguous
    assert resolve_scheme("AUTO", [parse(s) for s in sentences]) == found
    assert resolve_scheme("iob1", []) == ("IOB1", "", False)


def test_converter_errors_come_from_tag_schemes(tmp_path):
    message = r"tags\.txt:2: tag 'S-X' is not valid in scheme IOB2"
    with pytest.raises(ConversionError, match=message):
        convert(tmp_path, ["O", "S-X"], "IOB2")
    with pytest.raises(ValueError, match="Invalid scheme 'IOBES'"):
        convert(tmp_path, ["O"], "iobes")

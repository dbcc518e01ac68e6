"""Converters (CoNLL columns, MSRA characters) -> Docs / .spacy, the convert and split commands.

Unit tests use small samples written here. The `data` class reproduces the published counts of
CoNLL-2003 and MSRA from ../shared/data (or $SPACY_BERT_CRF_DATA) and is skipped without it.
"""

import dataclasses
from functools import lru_cache
from pathlib import Path
from typing import List, Tuple

import pytest
import spacy
from hypothesis import given
from hypothesis import strategies as st
from spacy.tokens import Doc, DocBin
from spacy.vocab import Vocab
from typer.testing import CliRunner

from spacy_bert_crf.corpora import docs as convert_module  # where PROGRESS_MIN_LINES is read
from spacy_bert_crf.cli import app
from spacy_bert_crf.corpora import (
    DEFAULT_MSRA_LABEL_MAP,
    MAX_REPAIR_LOCATIONS,
    ConversionError,
    ConversionStats,
    convert_file,
    parse_label_map,
    read_conll,
    read_msra,
    split_docs,
)

from .util import DATA_DIR


# Hand-written samples. IOB1: I- starts an entity unless it follows the same type, B- separates
# two adjacent entities of one type ("Tom" and "Ann").
CONLL_IOB1 = """-DOCSTART- -X- O O

Tom NNP B-NP I-PER
Ann NNP I-NP B-PER
and CC O O
Acme NNP B-NP I-ORG
Corp NNP I-NP I-ORG
met VBD B-VP O
in IN B-PP O
Oslo NNP B-NP I-LOC
. . O O

Rain NN B-NP O
fell VBD B-VP O
. . O O

-DOCSTART- -X- -X- O

Lisbon NNP B-NP I-LOC
hosts VBZ B-VP O
Euro NNP B-NP I-MISC
Jazz NNP I-NP I-MISC
Days NNP I-NP B-MISC
. . O O
"""
CONLL_IOB2 = """-DOCSTART- -X- O O

Tom NNP B-NP B-PER
Ann NNP I-NP B-PER
and CC O O
Acme NNP B-NP B-ORG
Corp NNP I-NP I-ORG
met VBD B-VP O
in IN B-PP O
Oslo NNP B-NP B-LOC
. . O O

Rain NN B-NP O
fell VBD B-VP O
. . O O

-DOCSTART- -X- -X- O

Lisbon NNP B-NP B-LOC
hosts VBZ B-VP O
Euro NNP B-NP B-MISC
Jazz NNP I-NP I-MISC
Days NNP I-NP B-MISC
. . O O
"""
CONLL_BIOES = """-DOCSTART- -X- O O

Tom NNP B-NP S-PER
Ann NNP I-NP S-PER
and CC O O
Acme NNP B-NP B-ORG
Corp NNP I-NP E-ORG
met VBD B-VP O
in IN B-PP O
Oslo NNP B-NP S-LOC
. . O O

Rain NN B-NP O
fell VBD B-VP O
. . O O

-DOCSTART- -X- -X- O

Lisbon NNP B-NP S-LOC
hosts VBZ B-VP O
Euro NNP B-NP B-MISC
Jazz NNP I-NP E-MISC
Days NNP I-NP S-MISC
. . O O
"""
CONLL_BILUO = CONLL_BIOES.replace("S-", "U-").replace("E-", "L-")
# The entities of all four samples: (sentence, start, end, label) with sentence-local token offsets.
EXPECTED_SPANS = [
    (0, 0, 1, "PER"),
    (0, 1, 2, "PER"),
    (0, 3, 5, "ORG"),
    (0, 7, 8, "LOC"),
    (2, 0, 1, "LOC"),
    (2, 2, 4, "MISC"),
    (2, 4, 5, "MISC"),
]
SENTENCES = [
    ["Tom", "Ann", "and", "Acme", "Corp", "met", "in", "Oslo", "."],
    ["Rain", "fell", "."],
    ["Lisbon", "hosts", "Euro", "Jazz", "Days", "."],
]

# MSRA style: CHAR<TAB>BIO (an empty tag is O) and CHAR<SPACE>BMES with NR/NS/NT.
MSRA_TAB = (
    "小\tB-PER\n明\tI-PER\n去\tO\n上\tB-LOC\n海\tI-LOC\n。\t\n"
    "\n"
    "新\tB-ORG\n华\tI-ORG\n社\tI-ORG\n报\tO\n道\tO\n"
)
MSRA_BMES = (
    "小 B-NR\n明 E-NR\n去 O\n上 B-NS\n海 E-NS\n。 O\n\n新 B-NT\n华 M-NT\n社 E-NT\n报 O\n京 S-NS\n"
)


def write(tmp_path: Path, text: str, name: str = "sample.txt", encoding: str = "utf-8") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


def sentence_spans(docs: List[Doc]) -> List[Tuple[int, int, int, str]]:
    """Entities as (sentence index, start, end, label) with sentence-local offsets."""
    out = []
    n_sent = 0
    for doc in docs:
        for sent in doc.sents:
            for ent in sent.ents:
                out.append((n_sent, ent.start - sent.start, ent.end - sent.start, ent.label_))
            n_sent += 1
    return out


def global_spans(docs: List[Doc]) -> List[Tuple[int, int, str]]:
    """Entities as (start, end, label) over the concatenation of all docs."""
    out = []
    offset = 0
    for doc in docs:
        out.extend((offset + ent.start, offset + ent.end, ent.label_) for ent in doc.ents)
        offset += len(doc)
    return out


@pytest.fixture(scope="module")
def en_vocab():
    return spacy.blank("en").vocab


# ---------------------------------------------------------------------------------------------
# CoNLL: schemes and detection
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text,scheme",
    [(CONLL_IOB1, "IOB1"), (CONLL_IOB2, "IOB2"), (CONLL_BIOES, "BIOES"), (CONLL_BILUO, "BILUO")],
)
def test_conll_schemes_give_the_same_entities(tmp_path, text, scheme):
    path = write(tmp_path, text)
    for requested in ("auto", scheme):
        docs, stats = read_conll(path, scheme=requested)
        assert stats.scheme == scheme
        assert [[t.text for t in doc] for doc in docs] == SENTENCES
        assert sentence_spans(docs) == EXPECTED_SPANS
        assert bool(stats.detection) == (requested == "auto")
        assert dataclasses.replace(stats, detection="") == ConversionStats(
            docs=3,
            sentences=3,
            tokens=18,
            entities={"PER": 2, "ORG": 1, "LOC": 2, "MISC": 2},
            repairs=0,
            repair_locations=[],
            scheme=scheme,
        )
        assert stats.n_entities == 7


def test_conll_doc_layout(tmp_path):
    docs, _ = read_conll(write(tmp_path, CONLL_IOB2))
    doc = docs[0]
    assert doc.text == "Tom Ann and Acme Corp met in Oslo ."
    assert [t.whitespace_ for t in doc][-1] == ""
    assert doc.vocab.lang == "en"
    # every token outside an entity is O (not missing), so the Doc is complete gold data
    assert [t.ent_iob_ for t in doc] == ["B", "B", "O", "B", "I", "O", "O", "B", "O"]
    assert [t.is_sent_start for t in doc] == [True] + [False] * 8


@pytest.mark.parametrize(
    "tags,expected,repairs",
    [
        (["B-PER", "I-PER", "O"], "IOB2", 0),
        (["O", "B-PER", "B-LOC", "I-LOC"], "IOB2", 0),
        (["I-PER", "O"], "IOB1", 0),  # sentence start
        (["O", "I-PER"], "IOB1", 0),  # after O
        (["I-PER", "B-PER"], "IOB1", 0),  # B- separates two entities of one type
        (["S-PER", "O"], "BIOES", 0),
        (["B-PER", "E-PER"], "BIOES", 0),
        (["U-PER", "B-LOC", "L-LOC"], "BILUO", 0),
        (["B-NR", "M-NR", "E-NR"], "BMES", 0),
        (["O", "O"], "IOB2", 0),
    ],
)
def test_auto_detection(tmp_path, en_vocab, tags, expected, repairs):
    text = "".join(f"w{i} {tag}\n" for i, tag in enumerate(tags))
    _, stats = read_conll(write(tmp_path, text), vocab=en_vocab)
    assert stats.scheme == expected
    assert stats.repairs == repairs
    assert not stats.ambiguous
    assert stats.detection


# Both signatures at once: I- starting an entity (invalid in IOB2) and B- not right after an
# entity of its type (invalid in IOB1). The reading with fewer invalid tags wins (IOB2 on a tie);
# the others are repairs, so strict mode fails.
AMBIGUOUS = [
    # an IOB2 file with one I-PER after O (issue 11): read as IOB1 with 0 repairs before
    (["B-PER", "I-PER", "O", "I-PER", "O", "B-LOC", "O", "B-ORG"], "IOB2", [4]),
    # an IOB1 file with one B-ORG after O (as CoNLL-2003 train has twice)
    (["I-PER", "O", "I-LOC", "O", "B-ORG", "O", "I-PER", "I-PER"], "IOB1", [5]),
    (["B-LOC", "I-PER"], "IOB2", [2]),  # a tie
]


@pytest.mark.parametrize("tags,expected,repair_lines", AMBIGUOUS)
def test_auto_detection_of_ambiguous_files(tmp_path, en_vocab, tags, expected, repair_lines):
    path = write(tmp_path, "".join(f"w{i} {tag}\n" for i, tag in enumerate(tags)), "mixed.txt")
    docs, stats = read_conll(path, vocab=en_vocab)
    assert (stats.scheme, stats.ambiguous) == (expected, True)
    assert stats.repair_locations == [f"{path}:{line}" for line in repair_lines]
    assert "fewest invalid tags" in stats.detection
    # every reading gives the same entities: the detection decides what counts as a repair
    for scheme in ("IOB1", "IOB2"):
        other, _ = read_conll(path, scheme=scheme, vocab=en_vocab)
        assert global_spans(other) == global_spans(docs)
    with pytest.raises(ConversionError) as excinfo:
        read_conll(path, strict=True, vocab=en_vocab)
    message = str(excinfo.value)
    assert message.startswith(f"{path}:{repair_lines[0]}: invalid {expected} tag sequence")
    assert f"{expected} auto-detected from the fewest invalid tags" in message
    assert "no scheme fits every tag" in message


def test_cli_summary_says_what_detection_was_based_on(tmp_path):
    tags = AMBIGUOUS[0][0]
    path = write(tmp_path, "".join(f"w{i} {tag}\n" for i, tag in enumerate(tags)), "mixed.txt")
    result = runner.invoke(app, ["convert", "conll", str(path), str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "IOB2 (auto-detected)" in result.output
    assert (
        "detected from  fewest invalid tags: 1 as IOB2 (I- starting an entity), against 3 as "
        "IOB1 (B- not right after an entity of its type)"
    ) in result.output
    assert "Ambiguous tag scheme" in result.output
    assert f"Repaired 1 invalid tag sequence(s) by starting a new entity: {path}:4" in result.output
    strict = ["convert", "conll", str(path), str(tmp_path / "strict"), "--strict"]
    result = runner.invoke(app, strict)
    assert result.exit_code == 1
    assert f"{path}:4: invalid IOB2 tag sequence: 'I-PER' after 'O'" in result.output
    assert not (tmp_path / "strict" / "mixed.spacy").exists()
    # a given scheme is reported as given
    result = runner.invoke(
        app, ["convert", "conll", str(path), str(tmp_path / "out"), "--scheme", "IOB2"]
    )
    assert "IOB2 (given)" in result.output and "detected from" not in result.output


def test_iob1_b_after_o_is_a_repair(tmp_path, en_vocab):
    path = write(tmp_path, "a O\nb B-MISC\nc I-MISC\n", "iob1.txt")
    docs, stats = read_conll(path, scheme="IOB1", vocab=en_vocab)
    assert global_spans(docs) == [(1, 3, "MISC")]
    assert stats.repairs == 1 and stats.repair_locations == [f"{path}:2"]
    with pytest.raises(ConversionError, match=r"iob1\.txt:2: invalid IOB1 tag sequence: 'B-MISC'"):
        read_conll(path, scheme="IOB1", strict=True, vocab=en_vocab)


def test_scheme_aliases_and_errors(tmp_path, en_vocab):
    path = write(tmp_path, CONLL_IOB2)
    _, stats = read_conll(path, scheme="bio", vocab=en_vocab)
    assert stats.scheme == "BIO"
    with pytest.raises(ValueError, match="Invalid scheme 'IOBES'"):
        read_conll(path, scheme="IOBES", vocab=en_vocab)
    # S- is not a tag of an explicitly requested IOB scheme
    bioes = write(tmp_path, CONLL_BIOES, "bioes.txt")
    with pytest.raises(
        ConversionError, match=r"bioes\.txt:3: tag 'S-PER' is not valid in scheme IOB2"
    ):
        read_conll(bioes, scheme="IOB2", vocab=en_vocab)


# ---------------------------------------------------------------------------------------------
# CoNLL: documents, grouping, columns, robustness
# ---------------------------------------------------------------------------------------------


def test_docstart_both_spellings_and_docs_mode(tmp_path):
    docs, stats = read_conll(write(tmp_path, CONLL_IOB1), docs=True)
    assert (stats.docs, stats.sentences, stats.tokens, stats.n_entities) == (2, 3, 18, 7)
    assert [[s.text for s in doc.sents] for doc in docs] == [
        ["Tom Ann and Acme Corp met in Oslo .", "Rain fell ."],
        ["Lisbon hosts Euro Jazz Days ."],
    ]
    assert not any(t.text.startswith("-DOCSTART-") for doc in docs for t in doc)
    assert sentence_spans(docs) == EXPECTED_SPANS


def test_docs_mode_without_docstart_and_empty_documents(tmp_path, en_vocab):
    text = "-DOCSTART- -X- O O\n\n-DOCSTART- -X- O O\n\na O\n\nb B-PER\n\n"
    docs, stats = read_conll(write(tmp_path, text), docs=True, vocab=en_vocab)
    assert (stats.docs, stats.sentences) == (1, 2)
    docs, stats = read_conll(write(tmp_path, "a O\n\nb B-PER\n"), docs=True, vocab=en_vocab)
    assert (stats.docs, stats.sentences) == (1, 2)


@pytest.mark.parametrize("n_sents,expected", [(1, [1, 1, 1]), (2, [2, 1]), (5, [2, 1])])
def test_n_sents_groups_within_documents(tmp_path, en_vocab, n_sents, expected):
    docs, stats = read_conll(write(tmp_path, CONLL_IOB1), n_sents=n_sents, vocab=en_vocab)
    assert [len(list(doc.sents)) for doc in docs] == expected
    assert (stats.docs, stats.sentences) == (len(expected), 3)
    assert sentence_spans(docs) == EXPECTED_SPANS


def test_grouping_arguments_are_checked(tmp_path, en_vocab):
    path = write(tmp_path, CONLL_IOB1)
    with pytest.raises(ValueError, match="not both"):
        read_conll(path, docs=True, n_sents=2, vocab=en_vocab)
    with pytest.raises(ValueError, match="n_sents must be >= 1"):
        read_conll(path, n_sents=0, vocab=en_vocab)


@pytest.mark.parametrize(
    "text",
    [
        "New B-LOC\nYork I-LOC\nis O\nbig O\n",  # 2 columns
        "New\tNNP\tB-LOC\nYork\tNNP\tI-LOC\nis\tVBZ\tO\nbig\tJJ\tO\n",  # tabs
        "New  NNP\tB-LOC\nYork NNP  I-LOC\nis \tVBZ O\nbig\t JJ O\n",  # runs of spaces and tabs
        "New NNP B-NP x y B-LOC\nYork NNP I-NP x y I-LOC\nis VBZ B-VP x y O\nbig JJ B-ADJP x y O\n",
    ],
)
def test_any_constant_column_count(tmp_path, en_vocab, text):
    docs, stats = read_conll(write(tmp_path, text), vocab=en_vocab)
    assert [t.text for t in docs[0]] == ["New", "York", "is", "big"]
    assert global_spans(docs) == [(0, 2, "LOC")]


def test_tokens_keep_their_exact_text(tmp_path, en_vocab):
    text = 'U.S.-based JJ O\n"Quote" NN O\nEl-Niño NNP B-MISC\n:-) SYM O\n'
    docs, _ = read_conll(write(tmp_path, text), vocab=en_vocab)
    assert [t.text for t in docs[0]] == ["U.S.-based", '"Quote"', "El-Niño", ":-)"]


def with_bom(text):
    return "\ufeff" + text


def with_crlf(text):
    return text.replace("\n", "\r\n")


def with_trailing_spaces(text):
    return "".join(line + "  \t \n" for line in text.split("\n")[:-1])


def with_many_blank_lines(text):
    return "\n\n\n" + text.replace("\n\n", "\n\n \n\t\n\n") + "\n\n\n"


def without_final_newline(text):
    return text.rstrip("\n")


ROBUSTNESS = [
    with_bom,
    with_crlf,
    with_trailing_spaces,
    with_many_blank_lines,
    without_final_newline,
]


@pytest.mark.parametrize("variant", ROBUSTNESS, ids=lambda f: f.__name__)
def test_conll_robustness(tmp_path, en_vocab, variant):
    docs, stats = read_conll(write(tmp_path, variant(CONLL_IOB1)), vocab=en_vocab)
    assert [[t.text for t in doc] for doc in docs] == SENTENCES
    assert sentence_spans(docs) == EXPECTED_SPANS
    assert (stats.docs, stats.repairs) == (3, 0)
    docs, stats = read_conll(write(tmp_path, variant(CONLL_IOB1)), docs=True, vocab=en_vocab)
    assert stats.docs == 2


def test_all_robustness_quirks_together(tmp_path, en_vocab):
    text = CONLL_IOB2
    for variant in (
        with_trailing_spaces,
        with_many_blank_lines,
        with_crlf,
        without_final_newline,
        with_bom,
    ):
        text = variant(text)
    docs, stats = read_conll(write(tmp_path, text), vocab=en_vocab)
    assert sentence_spans(docs) == EXPECTED_SPANS
    assert stats.scheme == "IOB2"


# ---------------------------------------------------------------------------------------------
# Repairs, strict mode, malformed lines
# ---------------------------------------------------------------------------------------------

# IOB2 with three invalid tags: line 2 (I-PER after O), line 5 (I-LOC after I-PER) and line 8
# (I-ORG at the start of a sentence).
IOB2_INVALID = "a O\nb I-PER\nc I-PER\nd B-PER\ne I-LOC\nf O\n\ng I-ORG\nh O\n"


def test_iob2_repairs_start_a_new_entity(tmp_path, en_vocab):
    path = write(tmp_path, IOB2_INVALID, "bad.txt")
    docs, stats = read_conll(path, scheme="IOB2", vocab=en_vocab)
    assert sentence_spans(docs) == [
        (0, 1, 3, "PER"),
        (0, 3, 4, "PER"),
        (0, 4, 5, "LOC"),
        (1, 0, 1, "ORG"),
    ]
    assert stats.repairs == 3
    assert stats.repair_locations == [f"{path}:2", f"{path}:5", f"{path}:8"]
    assert stats.tokens == 8
    # read as IOB1 (what auto detects here) the spans are the same and nothing is a repair
    docs1, stats1 = read_conll(path, vocab=en_vocab)
    assert stats1.scheme == "IOB1" and stats1.repairs == 0
    assert sentence_spans(docs1) == sentence_spans(docs)


@pytest.mark.parametrize(
    "tags,spans,repair_lines",
    [
        (["B-PER", "O"], [(0, 1, "PER")], [2]),  # B without E, closed by O
        (["B-PER"], [(0, 1, "PER")], [1]),  # B without E at sentence end
        (["O", "I-PER", "E-PER"], [(1, 3, "PER")], [2]),  # I without B
        (["E-PER", "O"], [(0, 1, "PER")], [1]),  # E without B
        (["B-PER", "E-LOC"], [(0, 1, "PER"), (1, 2, "LOC")], [2]),  # E of another type
        (["B-PER", "S-LOC", "O"], [(0, 1, "PER"), (1, 2, "LOC")], [2]),  # S inside an entity
        (["B-PER", "B-PER", "E-PER"], [(0, 1, "PER"), (1, 3, "PER")], [2]),  # B inside an entity
        (["B-ORG", "I-LOC", "E-LOC"], [(0, 1, "ORG"), (1, 3, "LOC")], [2]),  # I of another type
        (["S-PER", "E-PER"], [(0, 1, "PER"), (1, 2, "PER")], [2]),  # E after S
        (["B-NR", "M-NR", "E-NR", "S-NS"], [(0, 3, "NR"), (3, 4, "NS")], []),  # valid BMES
    ],
)
def test_bioes_repairs(tmp_path, en_vocab, tags, spans, repair_lines):
    path = write(tmp_path, "".join(f"w{i} {t}\n" for i, t in enumerate(tags)), "bioes.txt")
    docs, stats = read_conll(path, scheme="BIOES", vocab=en_vocab)
    assert global_spans(docs) == spans
    assert stats.repairs == len(repair_lines)
    assert stats.repair_locations == [f"{path}:{line}" for line in repair_lines]
    assert stats.tokens == len(tags)


def test_repair_locations_are_capped(tmp_path, en_vocab):
    path = write(tmp_path, "a O\nb I-PER\n" * 8)
    docs, stats = read_conll(path, scheme="IOB2", vocab=en_vocab)
    assert stats.repairs == 8
    assert len(stats.repair_locations) == MAX_REPAIR_LOCATIONS
    assert stats.repair_locations[0] == f"{path}:2"
    assert stats.n_entities == 8


def test_strict_fails_on_first_invalid_sequence(tmp_path, en_vocab):
    path = write(tmp_path, IOB2_INVALID, "bad.txt")
    with pytest.raises(
        ConversionError, match=r"bad\.txt:2: invalid IOB2 tag sequence: 'I-PER' after 'O'"
    ):
        read_conll(path, scheme="IOB2", strict=True, vocab=en_vocab)
    bioes = write(tmp_path, "a B-PER\nb O\n", "bioes.txt")
    with pytest.raises(
        ConversionError, match=r"bioes\.txt:2: invalid BIOES tag sequence: 'O' after 'B-PER'"
    ):
        read_conll(bioes, strict=True, scheme="BIOES", vocab=en_vocab)
    # valid files pass in strict mode, IOB1 included
    _, stats = read_conll(write(tmp_path, CONLL_IOB1), strict=True, vocab=en_vocab)
    assert stats.repairs == 0


@pytest.mark.parametrize(
    "text,line,message",
    [
        (
            "a NN O\nb NN B-PER\nc B-PER\n",
            3,
            "expected 3 columns (as on line 1 and 1 other line(s)), found 2: 'c B-PER'",
        ),
        (
            "a NN O\nb NN NN NN B-PER\n",
            2,
            "expected 3 columns (as on line 1), found 5: 'b NN NN NN B-PER'",
        ),
        ("lonely\n", 1, "expected at least 2 columns (WORD ... TAG), found 1: 'lonely'"),
        ("a O\nb X-PER\n", 2, "malformed tag 'X-PER': unknown prefix 'X'"),
        ("a O\n\nb B-\n", 3, "malformed tag 'B-': no label after the prefix"),
        ("a PER\n", 1, "malformed tag 'PER': no PREFIX-"),
        ("a o\n", 1, "malformed tag 'o'"),
    ],
)
def test_malformed_lines_always_fail(tmp_path, en_vocab, text, line, message):
    path = write(tmp_path, text, "broken.txt")
    for strict in (False, True):
        with pytest.raises(ConversionError) as excinfo:
            read_conll(path, strict=strict, vocab=en_vocab)
        assert str(excinfo.value).startswith(f"{path}:{line}: ")
        assert message in str(excinfo.value)
    assert isinstance(excinfo.value, ValueError)


def test_malformed_tag_quotes_the_line(tmp_path, en_vocab):
    path = write(tmp_path, "a NN O\nb NN X-PER\n", "broken.txt")
    with pytest.raises(ConversionError, match=r"broken\.txt:2: .*in line 'b NN X-PER'"):
        read_conll(path, vocab=en_vocab)


def test_invalid_utf8_names_the_line(tmp_path, en_vocab):
    path = tmp_path / "latin1.txt"
    path.write_bytes("a O\nb O\nc\xe9 O\n".encode("latin-1"))
    with pytest.raises(ConversionError, match=r"latin1\.txt:3: not valid UTF-8"):
        read_conll(path, vocab=en_vocab)


@pytest.mark.parametrize(
    "text,line,message",
    [
        # the first token line decided the column count before: line 2 was blamed
        (
            "New York NNP B-LOC\nis VBZ O\nbig JJ O\n",
            1,
            "expected 3 columns (as on line 2 and 1 other line(s)), found 4: "
            "'New York NNP B-LOC' (a token containing a space?",
        ),
        (
            "New York\tB-LOC\nis\tO\nbig\tO\n",
            1,
            "expected 2 columns (as on line 2 and 1 other line(s)), found 3",
        ),
        (
            "is VBZ O\n\nNew York NNP B-LOC\nbig JJ O\n",
            3,
            "expected 3 columns (as on line 1 and 1 other line(s)), found 4",
        ),
    ],
)
def test_token_containing_a_space_blames_its_line(tmp_path, en_vocab, text, line, message):
    path = write(tmp_path, text, "space.txt")
    with pytest.raises(ConversionError) as excinfo:
        read_conll(path, vocab=en_vocab)
    assert str(excinfo.value).startswith(f"{path}:{line}: ")
    assert message in str(excinfo.value)


@pytest.mark.parametrize(
    "text,holds",
    [
        ("", "no lines"),
        ("\n \n\t\n", "only blank lines"),
        ("-DOCSTART- -X- O O\n\n", "only -DOCSTART- and blank lines"),
        ("-DOCSTART- -X- -X- O\n\n-DOCSTART- -X- O O\n", "only -DOCSTART- and blank lines"),
    ],
)
def test_file_without_tokens_is_an_error(tmp_path, en_vocab, text, holds):
    path = write(tmp_path, text, "empty.txt")
    for docs in (False, True):
        with pytest.raises(ConversionError) as excinfo:
            read_conll(path, docs=docs, vocab=en_vocab)
        assert str(excinfo.value) == f"{path}: no tokens to convert: the file holds {holds}"
    result = runner.invoke(app, ["convert", "conll", str(path), str(tmp_path / "out")])
    assert result.exit_code == 1
    assert f"{path}: no tokens to convert" in result.output
    assert not (tmp_path / "out" / "empty.spacy").exists()


@pytest.mark.parametrize("text,holds", [("", "no lines"), ("\n\n", "only blank lines")])
def test_msra_file_without_characters_is_an_error(tmp_path, text, holds):
    path = write(tmp_path, text, "empty.txt")
    with pytest.raises(ConversionError) as excinfo:
        read_msra(path)
    assert str(excinfo.value) == f"{path}: no characters to convert: the file holds {holds}"
    result = runner.invoke(app, ["convert", "msra", str(path), str(tmp_path / "out")])
    assert result.exit_code == 1 and f"{path}: no characters to convert" in result.output


# Property: whatever the tags, no token and no tagged token's entity is lost.
TAGS = st.sampled_from(
    ["O", "B-PER", "I-PER", "E-PER", "S-PER", "B-LOC", "I-LOC", "E-LOC", "S-LOC"]
)


@given(tags=st.lists(TAGS, min_size=1, max_size=12), family=st.sampled_from(["IOB2", "BIOES"]))
def test_repairs_never_drop_tokens_or_entities(tmp_path_factory, en_vocab, tags, family):
    if family == "IOB2":
        tags = [t if t[0] in "OBI" else "I" + t[1:] for t in tags]
    path = write(
        tmp_path_factory.mktemp("prop"), "".join(f"w{i} {t}\n" for i, t in enumerate(tags))
    )
    docs, stats = read_conll(path, scheme=family, vocab=en_vocab)
    (doc,) = docs
    assert len(doc) == len(tags)
    for token, tag in zip(doc, tags):
        assert token.ent_type_ == ("" if tag == "O" else tag[2:])
    starts = sum(t[0] in "BS" for t in tags)
    assert starts <= len(doc.ents) <= starts + stats.repairs


@st.composite
def entity_spans(draw):
    length = draw(st.integers(1, 12))
    spans, i = [], 0
    while i < length:
        if draw(st.booleans()):
            end = draw(st.integers(i + 1, length))
            spans.append((i, end, draw(st.sampled_from(["PER", "LOC"]))))
            i = end
        else:
            i += 1
    return length, spans


def encode(length, spans, scheme):
    tags = ["O"] * length
    for start, end, label in spans:
        for i in range(start, end):
            tags[i] = f"I-{label}"
        if scheme == "IOB1":
            adjacent = any(e == start and lab == label for _, e, lab in spans)
            tags[start] = f"B-{label}" if adjacent else f"I-{label}"
        elif scheme == "IOB2":
            tags[start] = f"B-{label}"
        elif end - start == 1:
            tags[start] = f"S-{label}"
        else:
            tags[start], tags[end - 1] = f"B-{label}", f"E-{label}"
    return tags


@given(sample=entity_spans(), scheme=st.sampled_from(["IOB1", "IOB2", "BIOES"]))
def test_valid_sequences_roundtrip(tmp_path_factory, en_vocab, sample, scheme):
    length, spans = sample
    tags = encode(length, spans, scheme)
    path = write(tmp_path_factory.mktemp("roundtrip"), "".join(f"w {t}\n" for t in tags))
    docs, stats = read_conll(path, scheme=scheme, strict=True, vocab=en_vocab)
    assert global_spans(docs) == spans
    assert stats.repairs == 0


# ---------------------------------------------------------------------------------------------
# MSRA
# ---------------------------------------------------------------------------------------------


def test_msra_tab_bio(tmp_path):
    docs, stats = read_msra(write(tmp_path, MSRA_TAB))
    assert [doc.text for doc in docs] == ["小明去上海。", "新华社报道"]
    assert all(len(doc) == len(doc.text) for doc in docs)  # one token per character, no spaces
    assert docs[0].vocab.lang == "zh"
    assert [(e.text, e.label_, e.start_char, e.end_char) for e in docs[0].ents] == [
        ("小明", "PER", 0, 2),
        ("上海", "LOC", 3, 5),
    ]
    assert docs[0][5].ent_iob_ == "O"  # the empty tag
    assert stats == ConversionStats(
        docs=2,
        sentences=2,
        tokens=11,
        entities={"PER": 1, "LOC": 1, "ORG": 1},
        scheme="IOB2",
        detection="fewest invalid tags: 0 as IOB2 (I- starting an entity), against 3 as IOB1 "
        "(B- not right after an entity of its type)",
    )


def test_msra_space_bmes_mapping(tmp_path):
    path = write(tmp_path, MSRA_BMES)
    docs, stats = read_msra(path)
    assert stats.scheme == "BMES"
    assert [doc.text for doc in docs] == ["小明去上海。", "新华社报京"]
    assert [(e.text, e.label_) for doc in docs for e in doc.ents] == [
        ("小明", "PER"),
        ("上海", "LOC"),
        ("新华社", "ORG"),
        ("京", "LOC"),
    ]
    assert stats.entities == {"PER": 1, "LOC": 2, "ORG": 1}
    _, raw = read_msra(path, label_map={})
    assert raw.entities == {"NR": 1, "NS": 2, "NT": 1}
    _, custom = read_msra(path, label_map={"NS": "GPE"})
    assert custom.entities == {"NR": 1, "GPE": 2, "NT": 1}


@pytest.mark.parametrize("variant", ROBUSTNESS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("text", [MSRA_TAB, MSRA_BMES], ids=["tab", "space"])
def test_msra_robustness(tmp_path, variant, text):
    if variant is with_trailing_spaces and text is MSRA_TAB:
        # the tab variant splits on the tab only: trailing spaces after the tag are still ignored
        text_variant = "".join(line + "  \n" for line in text.split("\n")[:-1])
    else:
        text_variant = variant(text)
    docs, stats = read_msra(write(tmp_path, text_variant))
    expected, _ = read_msra(write(tmp_path, text, "clean.txt"))
    assert [doc.text for doc in docs] == [doc.text for doc in expected]
    assert global_spans(docs) == global_spans(expected)
    assert stats.sentences == 2


def test_msra_n_sents(tmp_path):
    docs, stats = read_msra(write(tmp_path, MSRA_TAB), n_sents=2)
    assert stats.docs == 1 and stats.sentences == 2
    assert [s.text for s in docs[0].sents] == ["小明去上海。", "新华社报道"]
    assert [(e.text, e.start_char) for e in docs[0].ents] == [
        ("小明", 0),
        ("上海", 3),
        ("新华社", 6),
    ]


def test_msra_repairs_and_strict(tmp_path):
    path = write(tmp_path, "小\tO\n明\tI-PER\n", "msra.txt")
    docs, stats = read_msra(path, scheme="BIO")
    assert stats.repairs == 1 and stats.repair_locations == [f"{path}:2"]
    assert [(e.text, e.label_) for e in docs[0].ents] == [("明", "PER")]
    with pytest.raises(ConversionError, match=r"msra\.txt:2: invalid BIO tag sequence"):
        read_msra(path, scheme="BIO", strict=True)


@pytest.mark.parametrize(
    "text,line,message",
    [
        (
            "小\tO\n明 B-PER\n",
            2,
            "expected CHAR<TAB>TAG (one character per line), found '明 B-PER'",
        ),
        ("小\tO\n明\tB-PER\tx\n", 2, "expected CHAR<TAB>TAG"),
        ("小\tO\n\tB-PER\n", 2, "the character is missing: the line starts with a tab"),
        (
            "小 O\n明 B-NR x\n",
            2,
            "expected CHAR<SPACE>TAG (one character per line), found '明 B-NR x'",
        ),
        ("小 O\n明\n", 2, "found '明'"),
        ("小\tO\n明\tQ-PER\n", 2, "malformed tag 'Q-PER': unknown prefix 'Q'"),
    ],
)
def test_msra_malformed_lines(tmp_path, text, line, message):
    path = write(tmp_path, text, "msra.txt")
    with pytest.raises(ConversionError) as excinfo:
        read_msra(path)
    assert str(excinfo.value).startswith(f"{path}:{line}: ")
    assert message in str(excinfo.value)


@pytest.mark.parametrize(
    "text,line,found",
    [
        ("小\tO\n北京\tB-LOC\n", 2, "found '北京' (2 characters) in '北京\\tB-LOC'"),
        ("小\tO\n\n上海市\tB-LOC\n", 3, "found '上海市' (3 characters)"),
        ("小 O\n北京 B-NS\n", 2, "found '北京' (2 characters) in '北京 B-NS'"),
        ("京 \tO\n", 1, "found '京 ' (2 characters)"),
    ],
)
def test_msra_line_with_several_characters_fails(tmp_path, text, line, found):
    path = write(tmp_path, text, "msra.txt")
    with pytest.raises(ConversionError) as excinfo:
        read_msra(path)
    message = str(excinfo.value)
    assert message.startswith(f"{path}:{line}: expected one character per line, ")
    assert found in message
    result = runner.invoke(app, ["convert", "msra", str(path), str(tmp_path / "out")])
    assert result.exit_code == 1 and f"{path}:{line}: expected one character" in result.output


def test_msra_quirks_that_stay_valid(tmp_path):
    # MSRA train has 57 lines "0<TAB>" with an empty tag: the character 0, outside any entity
    text = "0\t\n京\tB-LOC\n\ne\u0301\tO\n"  # and a character with a combining accent
    docs, stats = read_msra(write(tmp_path, text))
    assert [[t.text for t in doc] for doc in docs] == [["0", "京"], ["e\u0301"]]
    assert [t.ent_iob_ for t in docs[0]] == ["O", "B"]
    assert stats.entities == {"LOC": 1}


def test_parse_label_map():
    assert parse_label_map("NR=PER,NS=LOC,NT=ORG") == DEFAULT_MSRA_LABEL_MAP
    assert parse_label_map(" NR = PER , ") == {"NR": "PER"}
    assert parse_label_map("") == {}
    with pytest.raises(ValueError, match="expected FROM=TO"):
        parse_label_map("NR")
    with pytest.raises(ValueError, match="expected FROM=TO"):
        parse_label_map("NR=")
    with pytest.raises(ValueError, match="'O' means outside, not an entity label"):
        parse_label_map("NR=O")


# ---------------------------------------------------------------------------------------------
# Labels: any label spaCy allows; a tag is split at its first "-"
# ---------------------------------------------------------------------------------------------

LABELS = ["creative-work", "WORK_OF_ART", "Org.Gov", "人名", "B", "LOC-2"]
# Three entities of one label: tokens 0-1, 2 (adjacent, same type) and 4.
LABEL_TAGS = {
    "IOB1": ["I-{}", "I-{}", "B-{}", "O", "I-{}", "O"],
    "IOB2": ["B-{}", "I-{}", "B-{}", "O", "B-{}", "O"],
    "BIOES": ["B-{}", "E-{}", "S-{}", "O", "S-{}", "O"],
    "BILUO": ["B-{}", "L-{}", "U-{}", "O", "U-{}", "O"],
}
LABEL_SPANS = [(0, 2), (2, 3), (4, 5)]
# MSRA: characters 0-2, 3 (adjacent, same type) and 5.
MSRA_LABEL_TAGS = {
    "tab": ("\t", ["B-{}", "I-{}", "I-{}", "B-{}", "O", "B-{}"]),
    "space": (" ", ["B-{}", "M-{}", "E-{}", "S-{}", "O", "S-{}"]),
}
MSRA_LABEL_SPANS = [(0, 3), (3, 4), (5, 6)]


@pytest.mark.parametrize("scheme", sorted(LABEL_TAGS))
@pytest.mark.parametrize("label", LABELS)
def test_conll_labels_survive_conversion(tmp_path, label, scheme):
    words = ["Ann", "Lee", "Bo", "met", "Kim", "."]
    tags = [tag.format(label) for tag in LABEL_TAGS[scheme]]
    text = "".join(f"{word} NNP {tag}\n" for word, tag in zip(words, tags))
    path = write(tmp_path, f"-DOCSTART- -X- O O\n\n{text}", "labels.txt")
    out, stats = convert_file("conll", path, tmp_path / "corpus", strict=True)
    assert (stats.scheme, stats.repairs) == (scheme, 0)
    assert stats.entities == {label: 3}
    (doc,) = load(out)
    assert [(e.start, e.end, e.label_) for e in doc.ents] == [(s, e, label) for s, e in LABEL_SPANS]


@pytest.mark.parametrize("variant", sorted(MSRA_LABEL_TAGS))
@pytest.mark.parametrize("label", LABELS)
def test_msra_labels_survive_conversion(tmp_path, label, variant):
    sep, tags = MSRA_LABEL_TAGS[variant]
    text = "".join(f"{char}{sep}{tag.format(label)}\n" for char, tag in zip("一二三四五六", tags))
    out, stats = convert_file("msra", write(tmp_path, text, "labels.txt"), tmp_path, strict=True)
    assert stats.entities == {label: 3}
    (doc,) = load(out, "zh")
    assert [(e.start, e.end, e.label_) for e in doc.ents] == [
        (s, e, label) for s, e in MSRA_LABEL_SPANS
    ]


def test_cli_keeps_hyphenated_labels(tmp_path):
    path = write(tmp_path, "Dune B-creative-work\nby O\nHerbert B-person\n", "wnut.txt")
    result = runner.invoke(app, ["convert", "conll", str(path), str(tmp_path), "--strict"])
    assert result.exit_code == 0, result.output
    assert "creative-work" in result.output
    assert [e.label_ for e in load(tmp_path / "wnut.spacy")[0].ents] == ["creative-work", "person"]


@pytest.mark.parametrize(
    "fmt,text,label_map,line,problem",
    [
        ("conll", "a O\nb B-O\n", None, 2, "'O' is not an entity label (it means outside)"),
        ("conll", "a O\nb I-\n", None, 2, "no label after the prefix"),
        ("conll", "a B-PER\n", {"PER": "O"}, 1, "the label map turns 'PER' into 'O'"),
        ("conll", "a B-PER\n", {"PER": ""}, 1, "the label map turns 'PER' into ''"),
        ("msra", "小\tO\n明\tB-O\n", None, 2, "'O' is not an entity label"),
    ],
)
def test_empty_and_o_labels_are_refused(tmp_path, fmt, text, label_map, line, problem):
    path = write(tmp_path, text, "bad.txt")
    with pytest.raises(ConversionError) as excinfo:
        convert_file(fmt, path, tmp_path, label_map=label_map)
    assert str(excinfo.value).startswith(f"{path}:{line}: malformed tag ")
    assert problem in str(excinfo.value)


# ---------------------------------------------------------------------------------------------
# convert_file and the command line
# ---------------------------------------------------------------------------------------------

runner = CliRunner()


def load(path: Path, lang: str = "en") -> List[Doc]:
    return list(DocBin().from_disk(path).get_docs(spacy.blank(lang).vocab))


def test_convert_file(tmp_path):
    input_path = write(tmp_path, CONLL_IOB1, "eng.train")
    out, stats = convert_file("conll", input_path, tmp_path / "out" / "nested", docs=True)
    assert out == tmp_path / "out" / "nested" / "eng.spacy"
    docs = load(out)
    assert stats.docs == len(docs) == 2
    assert sentence_spans(docs) == EXPECTED_SPANS
    with pytest.raises(ValueError, match="Unknown format"):
        convert_file("iob", input_path, tmp_path)
    with pytest.raises(ValueError, match="only for conll"):
        convert_file("msra", input_path, tmp_path, docs=True)


def test_cli_convert_conll(tmp_path):
    input_path = write(tmp_path, CONLL_BIOES, "train.txt")
    result = runner.invoke(
        app, ["convert", "conll", str(input_path), str(tmp_path / "corpus"), "-n", "2"]
    )
    assert result.exit_code == 0, result.output
    docs = load(tmp_path / "corpus" / "train.spacy")
    assert [len(list(doc.sents)) for doc in docs] == [2, 1]
    assert sentence_spans(docs) == EXPECTED_SPANS
    for text in ("BIOES (auto-detected)", "sentences", "MISC", "repairs"):
        assert text in result.output


def test_cli_convert_msra(tmp_path):
    input_path = write(tmp_path, MSRA_BMES, "test.char.bmes")
    args = [
        "convert",
        "msra",
        str(input_path),
        str(tmp_path),
        "--label-map",
        "NR=P,NS=L,NT=org",
        "--quiet",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    docs = load(tmp_path / "test.char.spacy", "zh")
    assert [(e.text, e.label_) for doc in docs for e in doc.ents] == [
        ("小明", "P"),
        ("上海", "L"),
        ("新华社", "org"),
        ("京", "L"),
    ]
    assert [t.text for t in docs[1]] == list("新华社报京")
    # "O" means outside: no label map may produce it
    result = runner.invoke(app, args[:-2] + ["NR=P,NT=O"])
    assert result.exit_code == 1
    assert "Invalid label map entry 'NT=O': 'O' means outside" in result.output


def test_cli_reports_repairs(tmp_path):
    input_path = write(tmp_path, IOB2_INVALID, "bad.txt")
    result = runner.invoke(
        app, ["convert", "conll", str(input_path), str(tmp_path), "--scheme", "IOB2"]
    )
    assert result.exit_code == 0, result.output
    assert "Repaired 3 invalid tag sequence(s)" in result.output
    assert f"{input_path}:2, {input_path}:5, {input_path}:8" in result.output


@pytest.mark.parametrize(
    "text,extra,message",
    [
        (IOB2_INVALID, ["--scheme", "IOB2", "--strict"], "bad.txt:2: invalid IOB2 tag sequence"),
        (
            "a NN O\nb B-PER\n",
            [],
            "bad.txt:2: expected 3 columns (as on line 1), found 2: 'b B-PER'",
        ),
        ("a O\nb X-PER\n", [], "bad.txt:2: malformed tag 'X-PER'"),
        ("a O\n", ["--scheme", "IOBX"], "Invalid scheme 'IOBX'"),
        ("a O\n", ["--label-map", "NR"], "Invalid label map entry 'NR'"),
    ],
)
def test_cli_errors_exit_1_without_traceback(tmp_path, text, extra, message):
    input_path = write(tmp_path, text, "bad.txt")
    result = runner.invoke(
        app, ["convert", "conll", str(input_path), str(tmp_path / "out"), *extra]
    )
    assert result.exit_code == 1
    assert message in result.output
    assert "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit)
    assert not (tmp_path / "out" / "bad.spacy").exists()


def test_cli_bad_format_and_docs_with_msra(tmp_path):
    input_path = write(tmp_path, MSRA_TAB)
    result = runner.invoke(app, ["convert", "xml", str(input_path), str(tmp_path)])
    assert result.exit_code == 1 and "Unknown format 'xml'" in result.output
    result = runner.invoke(app, ["convert", "msra", str(input_path), str(tmp_path), "--docs"])
    assert result.exit_code == 1 and "only for conll" in result.output


def test_cli_shows_progress_on_large_files_unless_quiet(tmp_path, monkeypatch):
    path = write(tmp_path, CONLL_IOB1, "big.txt")
    n_lines = CONLL_IOB1.count("\n")
    args = ["convert", "conll", str(path), str(tmp_path)]
    result = runner.invoke(app, args)  # below PROGRESS_MIN_LINES: no progress
    assert result.exit_code == 0 and "Reading" not in result.stderr
    monkeypatch.setattr(convert_module, "PROGRESS_MIN_LINES", 10)
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    # not a terminal: one line per tenth of each pass, on stderr
    lines = result.stderr.splitlines()
    assert f"Reading big.txt: 100% ({n_lines} of {n_lines} lines)" in lines
    assert "Building big.txt: 100% (3 of 3 docs)" in lines
    assert len([line for line in lines if line.startswith("Reading big.txt: ")]) == 10
    assert "Reading" not in result.stdout
    result = runner.invoke(app, args + ["--quiet"])
    assert result.exit_code == 0 and result.stderr == ""


# ---------------------------------------------------------------------------------------------
# split
# ---------------------------------------------------------------------------------------------


def numbered_docs(n: int) -> List[Doc]:
    vocab = Vocab()
    return [Doc(vocab, words=[f"doc{i}", "x"]) for i in range(n)]


def names(docs: List[Doc]) -> List[str]:
    return [doc[0].text for doc in docs]


@pytest.mark.parametrize(
    "dev_size,n_dev", [(0.1, 5), (0.25, 12), (0.001, 1), (7, 7), (7.0, 7), (49, 49)]
)
def test_split_sizes(dev_size, n_dev):
    docs = numbered_docs(50)
    train, dev = split_docs(docs, dev_size=dev_size, seed=0)
    assert (len(train), len(dev)) == (50 - n_dev, n_dev)
    assert sorted(names(train) + names(dev)) == sorted(names(docs))
    # each part keeps the original order
    assert names(train) == sorted(names(train), key=lambda s: int(s[3:]))


def test_split_is_deterministic():
    docs = numbered_docs(40)
    first = split_docs(docs, dev_size=0.2, seed=3)
    again = split_docs(docs, dev_size=0.2, seed=3)
    other = split_docs(docs, dev_size=0.2, seed=4)
    assert names(first[1]) == names(again[1])
    assert names(first[1]) != names(other[1])


@pytest.mark.parametrize("dev_size", [0, -1, 1.5, 50, 60])
def test_split_bad_sizes(dev_size):
    with pytest.raises(ValueError):
        split_docs(numbered_docs(50), dev_size=dev_size)


def test_cli_split(tmp_path):
    DocBin(docs=numbered_docs(30)).to_disk(tmp_path / "all.spacy")
    outputs = []
    for run in ("a", "b"):
        args = [
            "split",
            str(tmp_path / "all.spacy"),
            str(tmp_path / run),
            "--dev-size",
            "0.2",
            "--seed",
            "7",
        ]
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        assert "train 24, dev 6" in result.output
        outputs.append([names(load(tmp_path / run / f"{part}.spacy")) for part in ("train", "dev")])
    assert outputs[0] == outputs[1]
    assert len(outputs[0][0]) == 24 and len(outputs[0][1]) == 6
    result = runner.invoke(
        app, ["split", str(tmp_path / "all.spacy"), str(tmp_path / "c"), "--dev-size", "3"]
    )
    assert result.exit_code == 0 and "train 27, dev 3" in result.output
    result = runner.invoke(
        app, ["split", str(tmp_path / "all.spacy"), str(tmp_path / "d"), "--dev-size", "30"]
    )
    assert result.exit_code == 1 and "train would be empty" in result.output


# ---------------------------------------------------------------------------------------------
# The real data: published counts
# ---------------------------------------------------------------------------------------------


def data_file(relative: str) -> Path:
    path = DATA_DIR / relative
    if not path.is_file():
        pytest.skip(f"needs {path}")
    return path


@lru_cache(maxsize=None)
def read_data(relative: str, fmt: str, docs: bool = False) -> Tuple[List[Doc], ConversionStats]:
    if fmt == "conll":
        return read_conll(data_file(relative), docs=docs)
    return read_msra(data_file(relative))


@pytest.mark.data
@pytest.mark.skipif(not DATA_DIR.is_dir(), reason=f"needs the benchmark data at {DATA_DIR}")
class TestPublishedCounts:
    @pytest.mark.parametrize(
        "split,n_docs,n_sents,n_tokens,entities",
        [
            ("train", 946, 14041, 203621, {"PER": 6600, "LOC": 7140, "ORG": 6321, "MISC": 3438}),
            ("dev", 216, 3250, 51362, {"PER": 1842, "LOC": 1837, "ORG": 1341, "MISC": 922}),
            ("test", 231, 3453, 46435, {"PER": 1617, "LOC": 1668, "ORG": 1661, "MISC": 702}),
        ],
    )
    def test_conll2003(self, split, n_docs, n_sents, n_tokens, entities):
        docs, stats = read_data(f"conll2003/{split}.txt", "conll", docs=True)
        assert (stats.docs, stats.sentences, stats.tokens) == (n_docs, n_sents, n_tokens)
        assert stats.entities == entities
        assert stats.n_entities == {"train": 23499, "dev": 5942, "test": 5648}[split]
        # train holds 2 B-MISC after O, invalid even in IOB1 (../shared/data/README.md)
        repairs = {"train": 2, "dev": 0, "test": 0}[split]
        assert (stats.scheme, stats.repairs, stats.ambiguous) == ("IOB1", repairs, bool(repairs))
        assert sum(len(list(doc.sents)) for doc in docs) == n_sents

    @pytest.mark.parametrize("split", ["train", "dev", "test"])
    def test_conll2003_iob2_copy_has_identical_spans(self, split):
        iob1, _ = read_data(f"conll2003/{split}.txt", "conll", docs=True)
        docs, stats = read_data(f"conll2003/iob2/{split}.txt", "conll")
        assert (stats.scheme, stats.repairs) == ("IOB2", 0)
        assert stats.docs == stats.sentences == {"train": 14041, "dev": 3250, "test": 3453}[split]
        assert global_spans(docs) == global_spans(iob1)

    def test_conll2003_cli_end_to_end(self, tmp_path):
        path = data_file("conll2003/test.txt")
        result = runner.invoke(app, ["convert", "conll", str(path), str(tmp_path), "--quiet"])
        assert result.exit_code == 0, result.output
        docs = load(tmp_path / "test.spacy")
        assert len(docs) == 3453
        assert sum(len(doc.ents) for doc in docs) == 5648

    @pytest.mark.parametrize(
        "split,n_sents,n_chars,entities",
        [
            ("train", 45000, 2171573, {"LOC": 36860, "ORG": 20584, "PER": 17615}),
            ("test", 3442, 172601, {"LOC": 2886, "ORG": 1331, "PER": 1973}),
        ],
    )
    def test_msra(self, split, n_sents, n_chars, entities):
        docs, stats = read_data(f"msra/{split}.txt", "msra")
        assert (stats.docs, stats.sentences, stats.tokens) == (n_sents, n_sents, n_chars)
        assert stats.entities == entities
        assert (stats.scheme, stats.repairs) == ("IOB2", 0)
        assert sum(len(doc.text) for doc in docs) == n_chars

    def test_msra_bmes_variant(self):
        """Same text as msra/test.txt in 4,365 sentences. Its annotation differs from test.txt in
        11 places: 9 LOC+ORG pairs (江苏省|苏州宝碟激光电子有限公司, 日本|早稻田大学, ...) are one
        NT entity there, and 九三学社 is 九三学社中央 (twice). So it has 6,181 entities, not 6,190."""
        bio, _ = read_data("msra/test.txt", "msra")
        docs, stats = read_data("msra/variants/test.char.bmes", "msra")
        assert (stats.scheme, stats.repairs) == ("BMES", 0)
        assert (stats.sentences, stats.tokens) == (4365, 172601)
        assert "".join(doc.text for doc in docs) == "".join(doc.text for doc in bio)
        assert stats.entities == {"LOC": 2877, "ORG": 1331, "PER": 1973}
        only_bio = set(global_spans(bio)) - set(global_spans(docs))
        only_bmes = set(global_spans(docs)) - set(global_spans(bio))
        assert (len(only_bio), len(only_bmes)) == (20, 11)
        assert {label for _, _, label in only_bmes} == {"ORG"}

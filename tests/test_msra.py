"""MSRA-style files (read_msra): bad input is an error naming file:line; the quirks that stay valid.

Every sample is hand-written here (never corpus text). The published counts of the real files
are checked in test_convert.py (TestPublishedCounts, skipped without the data).
"""
import re
from pathlib import Path
from typing import List, Tuple

import pytest
from typer.testing import CliRunner

from spacy_bert_crf.cli import app
from spacy_bert_crf.corpora import ConversionError, read_msra, read_zh_chars

runner = CliRunner()

# "小明在北京。" / "新华社报道" in the two variants, same entities.
TAB_BIO = "小\tB-PER\n明\tI-PER\n在\tO\n北\tB-LOC\n京\tI-LOC\n。\tO\n\n" \
    "新\tB-ORG\n华\tI-ORG\n社\tI-ORG\n报\tO\n道\tO\n"
SPACE_BMES = "小 B-NR\n明 E-NR\n在 O\n北 B-NS\n京 E-NS\n。 O\n\n新 B-NT\n华 M-NT\n社 E-NT\n报 O\n道 O\n"
ENTITIES = [[("小明", "PER"), ("北京", "LOC")], [("新华社", "ORG")]]


def write(tmp_path: Path, text: str, name: str = "msra.txt") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode("utf8"))
    return path


def ents(docs) -> List[List[Tuple[str, str]]]:
    return [[(e.text, e.label_) for e in doc.ents] for doc in docs]


@pytest.mark.parametrize("text", [TAB_BIO, SPACE_BMES], ids=["tab-bio", "space-bmes"])
def test_crlf_and_bom_are_accepted(tmp_path, text):
    clean, _ = read_msra(write(tmp_path, text))
    docs, stats = read_msra(write(tmp_path, "\ufeff" + text.replace("\n", "\r\n"), "crlf.txt"))
    assert ents(docs) == ents(clean) == ENTITIES
    assert [[t.text for t in doc] for doc in docs] == [list("小明在北京。"), list("新华社报道")]
    assert (stats.sentences, stats.tokens, stats.repairs) == (2, 11, 0)


def test_empty_tag_after_a_tab_is_outside(tmp_path):
    """MSRA's train file has 57 lines "0<TAB>": the character 0 with an empty tag, read as O (also
    with spaces after the tab, and in a CRLF file)."""
    for text in ("0\t\n北\tB-LOC\n京\tI-LOC\n", "0\t \r\n北\tB-LOC\r\n京\tI-LOC\r\n"):
        docs, stats = read_msra(write(tmp_path, text), strict=True)
        assert [t.text for t in docs[0]] == ["0", "北", "京"]
        assert [t.ent_iob_ for t in docs[0]] == ["O", "B", "I"]
        assert stats.entities == {"LOC": 1} and stats.repairs == 0


# (text, line of the error, what the message says)
BAD_INPUT = [
    # an ideographic or no-break space as the separator (named, with its column)
    ("北\tB-LOC\n京\u3000I-LOC\n", 2, "U+3000 IDEOGRAPHIC SPACE at column 2: separate the "
     "character and its tag with a tab"),
    ("北\tB-LOC\n京\u3000\tI-LOC\n", 2, "U+3000 IDEOGRAPHIC SPACE at column 2"),
    ("北\tB-LOC\n京\tI-LOC\u3000\n", 2, "U+3000 IDEOGRAPHIC SPACE at column 8"),
    ("北\u00a0O\n", 1, "U+00A0 NO-BREAK SPACE at column 2"),
    ("北 B-NS\n京\u3000E-NS\n", 2, "U+3000 IDEOGRAPHIC SPACE at column 2: separate the "
     "character and its tag with ASCII spaces"),
    ("北 B-NS\n京 E-NS\u3000\n", 2, "U+3000 IDEOGRAPHIC SPACE at column 7"),
    # a space as the character, or no character
    ("北\tO\n\u3000\tO\n", 2, "the character is a space (U+3000 IDEOGRAPHIC SPACE)"),
    ("北\tO\n \tO\n", 2, "the character is a space (U+0020 SPACE)"),
    ("北 O\n\u00a0 O\n", 2, "the character is a space (U+00A0 NO-BREAK SPACE)"),
    ("北\tO\n\tO\n", 2, "the character is missing: the line starts with a tab"),
    # a "blank" line of ideographic spaces
    ("北\tO\n\u3000\u3000\n京\tO\n", 2, "a line of spaces other than ASCII spaces and tabs "
     "(U+3000 IDEOGRAPHIC SPACE)"),
    # a BOM after the first line: two files joined
    ("北\tO\n\n\ufeff京\tO\n", 3, "byte-order mark (U+FEFF) at the start of a line after the"),
    ("\ufeff北\tO\n\ufeff京\tO\n", 2, "byte-order mark (U+FEFF)"),
    # a malformed tag, a missing tag, a third column
    ("北\tB-\n京\tO\n", 1, "malformed tag 'B-': no label after the prefix"),
    ("北 I-\n", 1, "malformed tag 'I-': no label after the prefix"),
    ("北\tB-LOC\n京\n", 2, "expected CHAR<TAB>TAG (one character per line), found '京': no tab "
     "after the character (is the tag missing?)"),
    ("北 B-NS\n京\n", 2, "expected CHAR<SPACE>TAG (one character per line), found '京': no tag"),
    ("北\tB-LOC\n京\tI-LOC\tx\n", 2, "found '京\\tI-LOC\\tx': more than two columns"),
    ("北\tB-LOC\n京\tI-LOC x\n", 2, "more than two columns"),
    ("北 B-NS\n京 E-NS x\n", 2, "found '京 E-NS x': more than two columns"),
    ("北\tB-LOC\n京 I-LOC\n", 2, "expected CHAR<TAB>TAG"),  # a space line in a tab file
    # more than one character
    ("北京\tB-LOC\n", 1, "expected one character per line, found '北京' (2 characters)"),
    ("北京 B-NS\n", 1, "expected one character per line, found '北京'"),
    # an empty line inside an entity (BIO, BMES)
    ("北\tB-LOC\n\n京\tI-LOC\n在\tO\n", 2, "empty line inside a sentence: the entity tagged "
     "'B-LOC' on line 1 goes on with 'I-LOC' on line 3"),
    ("在\tO\n北\tB-LOC\n京\tI-LOC\n\n\n市\tI-LOC\n", 4, "the entity tagged 'I-LOC' on line 3 goes "
     "on with 'I-LOC' on line 6"),
    ("新 B-NT\n华 M-NT\n\n社 E-NT\n", 3, "the entity tagged 'M-ORG' on line 2 goes on with "
     "'E-ORG' on line 4"),
]


@pytest.mark.parametrize("text,line,message", BAD_INPUT)
def test_bad_input_names_file_and_line(tmp_path, text, line, message):
    path = write(tmp_path, text)
    with pytest.raises(ConversionError, match=f"msra\\.txt:{line}: (.* )?{re.escape(message)}"):
        read_msra(path)
    result = runner.invoke(app, ["convert", "msra", str(path), str(tmp_path / "out")])
    assert result.exit_code == 1
    assert f"msra.txt:{line}:" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "out" / "msra.spacy").exists()


def test_messages_shared_with_zh_chars(tmp_path):
    """The checks msra and zh_chars share give the same message for the same line."""
    for text in ("北\tO\n京\u3000O\n", "北\tO\n\u3000\tO\n", "北\tO\n\n\ufeff京\tO\n",
                 "北\tB-LOC\n\n京\tI-LOC\n", "北京\tO\n"):
        path = write(tmp_path, text)
        with pytest.raises(ConversionError) as msra:
            read_msra(path)
        with pytest.raises(ConversionError) as zh_chars:
            read_zh_chars(path)
        # the one difference: what separates a character from its tag in each format
        expected = str(zh_chars.value).replace("with a tab or ASCII spaces", "with a tab")
        assert str(msra.value) == expected


def test_blank_lines_that_are_sentence_breaks(tmp_path):
    """A blank line between tags that may end and start sentences is a sentence break; under
    IOB1, where I- may start an entity, so is one between I- tags of one type."""
    docs, _ = read_msra(write(tmp_path, "北\tB-LOC\n京\tI-LOC\n\n市\tB-LOC\n"))
    assert ents(docs) == [[("北京", "LOC")], [("市", "LOC")]]
    docs, _ = read_msra(write(tmp_path, "北\tI-LOC\n\n京\tI-LOC\n"), scheme="IOB1")
    assert ents(docs) == [[("北", "LOC")], [("京", "LOC")]]
    # a different type after the blank line is a new entity in a new sentence (repaired)
    docs, stats = read_msra(write(tmp_path, "北\tB-LOC\n\n京\tI-ORG\n"), scheme="BIO")
    assert ents(docs) == [[("北", "LOC")], [("京", "ORG")]] and stats.repairs == 1

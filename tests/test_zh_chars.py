"""The generic character-per-line format (zh_chars): BMES/BIOES/BIO, "-" and "O", bad input.

Every sample is hand-written here.
"""
import re
from pathlib import Path
from typing import List, Tuple

import pytest
from spacy.tokens import DocBin
from spacy.vocab import Vocab
from typer.testing import CliRunner

from spacy_bert_crf.cli import app
from spacy_bert_crf.corpora import ConversionError, convert_file, read_zh_chars

runner = CliRunner()

# "小明在北京工作。" / "新华社报道" in three schemes; same entities in each.
BMES_SPACE = "小 B-PER\n明 E-PER\n在 O\n北 B-LOC\n京 E-LOC\n工 O\n作 O\n。 O\n\n" \
    "新 B-ORG\n华 M-ORG\n社 E-ORG\n报 O\n道 S-LOC\n"
BIOES_TAB = "小\tB-PER\n明\tE-PER\n在\tO\n北\tB-LOC\n京\tE-LOC\n工\tO\n作\tO\n。\tO\n\n" \
    "新\tB-ORG\n华\tI-ORG\n社\tE-ORG\n报\tO\n道\tS-LOC\n"
BIO_SPACES = "小   B-PER\n明   I-PER\n在   O\n北   B-LOC\n京   I-LOC\n工   O\n作   O\n。   O\n\n" \
    "新 \tB-ORG\n华 \tI-ORG\n社 \tI-ORG\n报 \tO\n道 \tB-LOC\n"
ENTITIES = [[("小明", "PER"), ("北京", "LOC")], [("新华社", "ORG"), ("道", "LOC")]]


def write(tmp_path: Path, text: str, name: str = "chars.txt", encoding: str = "utf8") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


def ents(docs) -> List[List[Tuple[str, str]]]:
    return [[(e.text, e.label_) for e in doc.ents] for doc in docs]


@pytest.mark.parametrize(
    "text,scheme",
    [(BMES_SPACE, "BMES"), (BIOES_TAB, "BIOES"), (BIO_SPACES, "IOB2")],
    ids=["bmes-space", "bioes-tab", "bio-spaces-and-tabs"],
)
def test_schemes_and_separators(tmp_path, text, scheme):
    docs, stats = read_zh_chars(write(tmp_path, text))
    assert ents(docs) == ENTITIES
    assert [t.text for t in docs[0]] == list("小明在北京工作。")
    assert docs[0].text == "小明在北京工作。"  # no spaces between characters
    assert stats.scheme == scheme and stats.repairs == 0
    assert (stats.sentences, stats.tokens, stats.n_entities) == (2, 13, 4)
    assert stats.dash == "" and stats.missing == 0
    # the scheme given explicitly reads the same
    given, _ = read_zh_chars(write(tmp_path, text), scheme=scheme, strict=True)
    assert ents(given) == ENTITIES


def test_crlf_and_bom_are_accepted(tmp_path):
    clean, _ = read_zh_chars(write(tmp_path, BMES_SPACE))
    text = "\ufeff" + BMES_SPACE.replace("\n", "\r\n")
    docs, stats = read_zh_chars(write(tmp_path, text, "crlf.txt"))
    assert ents(docs) == ents(clean) == ENTITIES
    assert [t.text for t in docs[1]] == list("新华社报道")  # no "\r" or BOM in any token


def test_label_map_and_grouping(tmp_path):
    text = BMES_SPACE.replace("-PER", "-NR").replace("-LOC", "-NS").replace("-ORG", "-NT")
    docs, stats = read_zh_chars(
        write(tmp_path, text), label_map={"NR": "PER", "NS": "LOC", "NT": "ORG"}, n_sents=2
    )
    assert len(docs) == 1 and len(list(docs[0].sents)) == 2
    assert ents(docs) == [ENTITIES[0] + ENTITIES[1]]


DASH_OUTSIDE = "北 B-LOC\n京 E-LOC\n很 -\n大 -\n"
DASH_MISSING = "北 B-LOC\n京 E-LOC\n很 -\n大 O\n"


@pytest.mark.parametrize(
    "text,dash,reading,missing",
    [
        (DASH_OUTSIDE, "auto", "outside (the file has no 'O' tag)", []),
        (DASH_MISSING, "auto", "missing (the file also has 'O' tags)", [2]),
        (DASH_MISSING, "outside", "outside (given)", []),
        (DASH_OUTSIDE, "missing", "missing (given)", [2, 3]),
    ],
)
def test_dash_is_outside_or_missing(tmp_path, text, dash, reading, missing):
    docs, stats = read_zh_chars(write(tmp_path, text), dash=dash)
    assert ents(docs) == [[("北京", "LOC")]]
    assert stats.dash == reading
    assert stats.missing == len(missing)
    doc = docs[0]
    # missing: no annotation (ent_iob 0, "-" in spaCy's BILUO); outside: "O"
    assert [i for i, token in enumerate(doc) if token.ent_iob == 0] == missing
    assert all(doc[i].ent_iob_ == "O" for i in range(2, 4) if i not in missing)


def test_missing_survives_docbin(tmp_path):
    docs, _ = read_zh_chars(write(tmp_path, DASH_MISSING), dash="missing")
    data = DocBin(docs=docs).to_bytes()
    loaded = list(DocBin().from_bytes(data).get_docs(Vocab()))
    assert [t.ent_iob_ for t in loaded[0]] == ["B", "I", "", "O"]


def test_bad_dash_value(tmp_path):
    with pytest.raises(ValueError, match="Invalid dash 'none': expected one of auto, outside"):
        read_zh_chars(write(tmp_path, DASH_OUTSIDE), dash="none")
    with pytest.raises(ValueError, match=r"dash \(--dash\) is only for zh_chars, not msra"):
        convert_file("msra", write(tmp_path, "北\tO\n"), tmp_path, dash="outside")


@pytest.mark.parametrize(
    "text,line,message",
    [
        # the ideographic space U+3000 as the separator, on one line of an ASCII-spaced file
        ("北 B-LOC\n京\u3000E-LOC\n", 2, "U+3000 IDEOGRAPHIC SPACE at column 2: separate the"),
        ("北 B-LOC\n京 \u3000E-LOC\n", 2, "U+3000 IDEOGRAPHIC SPACE at column 3"),
        ("北\tB-LOC\n京\tE-LOC\u3000\n", 2, "U+3000 IDEOGRAPHIC SPACE at column 8"),
        ("北\u00a0O\n", 1, "U+00A0 NO-BREAK SPACE at column 2"),
        # a space as the character: a missing character, or a space that is no token
        ("北 O\n\u3000 O\n", 2, "the character is a space (U+3000 IDEOGRAPHIC SPACE)"),
        ("北 O\n \tO\n", 2, "the character is a space (U+0020 SPACE)"),
        # a "blank" line of ideographic spaces
        ("北 O\n\u3000\u3000\n京 O\n", 2, "a line of spaces other than ASCII spaces and tabs"),
        # a BOM in the middle: two files joined
        ("北 O\n\n\ufeff京 O\n", 3, "byte-order mark (U+FEFF) at the start of a line"),
        # a tag column holding "B-" alone, or nothing
        ("北 B-\n京 O\n", 1, "malformed tag 'B-': no label after the prefix"),
        ("北 B-LOC\n京\n", 2, "expected CHAR TAG"),
        ("北 B-LOC\n京 E-LOC extra\n", 2, "expected CHAR TAG"),
        ("北京 B-LOC\n", 1, "expected one character per line, found '北京'"),
        # an empty line inside an entity (BMES, BIOES, BIO)
        ("北 B-LOC\n\n京 E-LOC\n", 2, "empty line inside a sentence: the entity tagged 'B-LOC' on"
         " line 1 goes on with 'E-LOC' on line 3"),
        ("新 B-ORG\n华 M-ORG\n\n\n社 E-ORG\n", 3, "empty line inside a sentence"),
        ("北 B-LOC\n\n京 I-LOC\n在 O\n", 2, "empty line inside a sentence"),
    ],
)
def test_bad_input_names_file_and_line(tmp_path, text, line, message):
    path = write(tmp_path, text)
    with pytest.raises(ConversionError, match=f"chars\\.txt:{line}: (.* )?{re.escape(message)}"):
        read_zh_chars(path)
    result = runner.invoke(app, ["convert", "zh_chars", str(path), str(tmp_path / "out")])
    assert result.exit_code == 1
    assert f"chars.txt:{line}:" in result.output
    assert "Traceback" not in result.output


def test_blank_lines_that_could_be_sentence_breaks(tmp_path):
    """A blank line between tags that may end and start sentences is a sentence break (nothing
    tells it from one); under IOB1, where I- may start an entity, so is one between I- tags."""
    docs, stats = read_zh_chars(write(tmp_path, "北 B-LOC\n京 E-LOC\n\n在 O\n"))
    assert len(docs) == 2 and ents(docs) == [[("北京", "LOC")], []]
    docs, stats = read_zh_chars(write(tmp_path, "北 I-LOC\n\n京 I-LOC\n"), scheme="IOB1")
    assert ents(docs) == [[("北", "LOC")], [("京", "LOC")]]


def test_convert_cli_zh_chars(tmp_path):
    path = write(tmp_path, DASH_MISSING + "\n" + BMES_SPACE, "train.txt")
    result = runner.invoke(app, ["convert", "zh_chars", str(path), str(tmp_path / "out"), "-q"])
    assert result.exit_code == 0, result.output
    assert "BMES (auto-detected)" in result.output
    assert "'-' read as" in result.output
    assert "missing (the file also has 'O' tags)" in result.output
    docs = list(DocBin().from_disk(tmp_path / "out" / "train.spacy").get_docs(Vocab()))
    assert ents(docs) == [[("北京", "LOC")]] + ENTITIES
    result = runner.invoke(
        app, ["convert", "zh_chars", str(path), str(tmp_path / "out2"), "-q", "--dash", "outside"]
    )
    assert result.exit_code == 0, result.output
    assert "outside (given)" in result.output


def test_project_dataset_zh_chars(tmp_path):
    """scripts/project.py takes any such corpus as dataset zh_chars: train, dev and test files."""
    import importlib.util

    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("project_script", root / "scripts" / "project.py")
    project = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(project)
    data = tmp_path / "data"
    data.mkdir()
    write(data, BMES_SPACE, "train.txt")
    write(data, BIOES_TAB, "test.txt")
    with pytest.raises(project.ProjectError, match=r"zh_chars data in .*: it lacks dev\.txt\. "
                                                   r"Dataset 'zh_chars' needs train\.txt, dev\.txt"
                                                   r", test\.txt \(zh_chars format\)\. Put"):
        project.check_data("zh_chars", data)
    write(data, DASH_MISSING, "dev.txt")
    result = runner.invoke(project.app, ["corpus", "zh_chars", str(data), str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    corpus = {
        split: list(DocBin().from_disk(tmp_path / "out" / f"{split}.spacy").get_docs(Vocab()))
        for split in ("train", "dev", "test")
    }
    assert ents(corpus["train"]) == ents(corpus["test"]) == ENTITIES
    assert [t.ent_iob_ for t in corpus["dev"][0]] == ["B", "I", "", "O"]

"""spacy-bert-crf.ChineseCharTokenizer.v1: raw Chinese text with Latin words, digits, full-width
punctuation and spaces, in character tokens whose offsets map back to the text exactly."""
import pytest
import spacy
from hypothesis import given
from hypothesis import strategies as st

from spacy_bert_crf.tokenizers import split_chars

from .util import HASH_TOK2VEC, train

CHAR_TOKENIZER = {"nlp": {"tokenizer": {"@tokenizers": "spacy-bert-crf.ChineseCharTokenizer.v1"}}}
MIXED = "2008年北京奥运会在中国举行，Angela Merkel出席。"


@pytest.fixture(scope="module")
def nlp():
    return spacy.blank("zh", config=CHAR_TOKENIZER)


def test_mixed_text_tokens(nlp):
    doc = nlp(MIXED)
    assert [t.text for t in doc] == [
        "2008", "年", "北", "京", "奥", "运", "会", "在", "中", "国", "举", "行", "，",
        "Angela", "Merkel", "出", "席", "。",
    ]
    assert doc.text == MIXED
    assert doc[13].whitespace_ == " "


@pytest.mark.parametrize(
    "text",
    [
        MIXED,
        "  两个空格  开头和结尾  ",
        "全角空格\u3000在这里\t和制表符\n换行\r\n回车",
        "\ufeff字节序标记和\u200b零宽空格\u202e方向",
        "控制\x00字符\x07不\x1f会移位",
        "ＡＢＣ全角字母１２３和iPhone15手机",
        "",
        " ",
    ],
)
def test_round_trip_and_offsets(nlp, text):
    doc = nlp(text)
    assert doc.text == text
    for token in doc:
        assert text[token.idx : token.idx + len(token.text)] == token.text
        assert token.text  # no empty tokens
    # Character spans of whole tokens map back exactly.
    for start in range(len(doc)):
        span = doc[start : start + 3]
        assert text[span.start_char : span.end_char] == span.text


@given(st.text(alphabet=st.sampled_from(list("北京abc AB12，。\u3000\n\t\ufeffＡ１-'")), max_size=40))
def test_round_trip_property(text):
    nlp = spacy.blank("zh", config=CHAR_TOKENIZER)
    doc = nlp(text)
    assert doc.text == text
    assert "".join(split_chars(text)) == text
    for token in doc:
        # a Latin word is never cut: the characters around a word token are not word characters
        if token.text.isascii() and token.text.isalnum():
            before = text[token.idx - 1] if token.idx else " "
            end = token.idx + len(token.text)
            after = text[end] if end < len(text) else " "
            assert not (before.isascii() and before.isalnum())
            assert not (after.isascii() and after.isalnum())


def test_entities_never_split_a_latin_word(tmp_path):
    """A pipeline with this tokenizer, trained on character tokens, predicts entities whose
    offsets are token boundaries of the raw text, and it survives to_disk / spacy.load."""
    from spacy.training import Example

    nlp = spacy.blank("zh", config=CHAR_TOKENIZER)
    nlp.add_pipe("crf_ner", config={"model": {"tok2vec": HASH_TOK2VEC}})
    data = [
        ("张三在北京工作。", [(0, 2, "PER"), (3, 5, "LOC")]),
        ("Angela Merkel访问北京。", [(0, 13, "PER"), (15, 17, "LOC")]),
        ("李四去上海了。", [(0, 2, "PER"), (3, 5, "LOC")]),
    ]
    examples = [Example.from_dict(nlp.make_doc(t), {"entities": e}) for t, e in data]
    train(nlp, examples, steps=60, lr=0.01)
    for text, gold in data:
        doc = nlp(text)
        assert [(e.start_char, e.end_char, e.label_) for e in doc.ents] == gold
    doc = nlp(MIXED)
    words = {(t.idx, t.idx + len(t)) for t in doc if t.text.isascii() and t.text.isalnum()}
    for ent in doc.ents:
        for start, end in words:
            outside = end <= ent.start_char or start >= ent.end_char
            assert outside or start >= ent.start_char and end <= ent.end_char
    nlp.to_disk(tmp_path / "zh")
    loaded = spacy.load(tmp_path / "zh")
    assert [t.text for t in loaded(MIXED)] == [t.text for t in nlp(MIXED)]
    offsets = [(e.start_char, e.end_char) for e in doc.ents]
    assert [(e.start_char, e.end_char) for e in loaded(MIXED).ents] == offsets


def test_msra_config_uses_it():
    from pathlib import Path

    from spacy.util import load_config

    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "zh_msra.cfg")
    assert cfg["nlp"]["tokenizer"]["@tokenizers"] == "spacy-bert-crf.ChineseCharTokenizer.v1"

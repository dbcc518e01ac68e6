"""Tokenizers for pipelines trained on character-level corpora (Chinese NER).

MSRA and the other Chinese NER corpora annotate one character per token. A pipeline trained on
them has to see the same tokens on raw text, which also holds Latin words, digits, full-width
punctuation and spaces. spaCy's Chinese tokenizer with its "char" segmenter cuts every Latin
word into letters, so an entity could end inside a word; its word segmenters (jieba, pkuseg)
give multi-character tokens the model never saw in training.

``spacy-bert-crf.ChineseCharTokenizer.v1`` gives one token per character, except that a run of
letters and digits (a Latin word, a number, ``iPhone15``) stays one token: entities are then
sequences of whole tokens, so none can split a Latin word. Whitespace follows spaCy's
convention (one space after a token is its trailing whitespace, any other whitespace is a token
of its own), so ``doc.text`` is the input text and every character offset maps back exactly.
"""
import unicodedata
from pathlib import Path
from typing import Any, Callable, Iterable, List, Union

import srsly
from spacy.language import Language
from spacy.tokens import Doc
from spacy.util import registry
from spacy.vocab import Vocab


@registry.tokenizers("spacy-bert-crf.ChineseCharTokenizer.v1")
def create_chinese_char_tokenizer() -> Callable[[Language], "ChineseCharTokenizer"]:
    """One token per character; runs of letters and digits (any script but CJK) stay whole.

    In a config:

        [nlp.tokenizer]
        @tokenizers = "spacy-bert-crf.ChineseCharTokenizer.v1"
    """

    def chinese_char_tokenizer_factory(nlp: Language) -> "ChineseCharTokenizer":
        return ChineseCharTokenizer(nlp.vocab)

    return chinese_char_tokenizer_factory


def _is_word_char(char: str) -> bool:
    """Letters, digits and combining marks that are not CJK: they join into one token."""
    if char.isspace():
        return False
    category = unicodedata.category(char)
    if category[0] not in "LNM":
        return False
    return not _is_cjk(char)


def _is_cjk(char: str) -> bool:
    code = ord(char)
    return (
        0x4E00 <= code <= 0x9FFF  # CJK Unified Ideographs
        or 0x3400 <= code <= 0x4DBF  # Extension A
        or 0x20000 <= code <= 0x2FA1F  # Extensions B-F, compatibility supplement
        or 0xF900 <= code <= 0xFAFF  # compatibility ideographs
        or 0x3040 <= code <= 0x30FF  # kana (one character, one token, as CJK)
        or 0xAC00 <= code <= 0xD7AF  # Hangul syllables
        or 0x3000 <= code <= 0x303F  # CJK symbols and punctuation (incl. 〇)
        or 0xFF00 <= code <= 0xFFEF  # full-width forms: one per token, as in the corpora
    )


def split_chars(text: str) -> List[str]:
    """The token strings of `text`, whitespace included, in order; "".join() gives the text."""
    pieces: List[str] = []
    i, n = 0, len(text)
    while i < n:
        char = text[i]
        j = i + 1
        if char.isspace():
            while j < n and text[j].isspace():
                j += 1
        elif _is_word_char(char):
            while j < n and _is_word_char(text[j]):
                j += 1
        pieces.append(text[i:j])
        i = j
    return pieces


class ChineseCharTokenizer:
    """A spaCy tokenizer: one token per character, letter/digit runs whole (see module doc)."""

    def __init__(self, vocab: Vocab) -> None:
        self.vocab = vocab

    def __call__(self, text: str) -> Doc:
        words: List[str] = []
        spaces: List[bool] = []
        for piece in split_chars(text):
            if piece.isspace():
                # one plain space after a token is its trailing whitespace (spaCy's convention)
                if words and not spaces[-1] and not words[-1].isspace() and piece[0] == " ":
                    spaces[-1] = True
                    piece = piece[1:]
                if not piece:
                    continue
            words.append(piece)
            spaces.append(False)
        return Doc(self.vocab, words=words, spaces=spaces)

    def pipe(self, texts: Iterable[str], batch_size: int = 1000) -> Iterable[Doc]:
        for text in texts:
            yield self(text)

    # It has no data: serialization writes and checks a version marker only.
    def to_bytes(self, *, exclude: Iterable[str] = tuple()) -> bytes:
        return srsly.msgpack_dumps({"tokenizer": "spacy-bert-crf.ChineseCharTokenizer.v1"})

    def from_bytes(
        self, data: bytes, *, exclude: Iterable[str] = tuple()
    ) -> "ChineseCharTokenizer":
        return self

    def to_disk(self, path: Union[str, Path], *, exclude: Iterable[str] = tuple()) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        srsly.write_json(path / "cfg", {"tokenizer": "spacy-bert-crf.ChineseCharTokenizer.v1"})

    def from_disk(
        self, path: Union[str, Path], *, exclude: Iterable[str] = tuple()
    ) -> "ChineseCharTokenizer":
        return self

    def __reduce__(self) -> Any:
        return (ChineseCharTokenizer, (self.vocab,))

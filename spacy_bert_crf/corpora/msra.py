"""MSRA-style files: one character per line, CHAR<TAB>BIO or CHAR<SPACE>BMES.

An MSRA line with more than one character, or of the wrong form, is an error naming file:line.
"""
import unicodedata
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union, cast

from spacy.tokens import Doc
from spacy.vocab import Vocab

from ..tag_schemes import OUT, Tag
from .docs import (
    BLANK,
    COLUMNS,
    ConversionError,
    ConversionStats,
    PathLike,
    Sentence,
    check_grouping,
    describe_empty,
    iter_progress,
    parse_tag,
    read_sentences_file,
)

DEFAULT_MSRA_LABEL_MAP = {"NR": "PER", "NS": "LOC", "NT": "ORG"}


def read_msra(
    path: PathLike,
    *,
    scheme: str = "auto",
    n_sents: int = 1,
    strict: bool = False,
    lang: str = "zh",
    label_map: Optional[Dict[str, str]] = None,
    vocab: Optional[Vocab] = None,
    progress: bool = False,
) -> Tuple[List[Doc], ConversionStats]:
    """Read an MSRA-style file (one character per line) into Docs whose tokens are the characters.

    Two variants, detected per file: "CHAR<TAB>TAG" (BIO; split on the tab only, an empty tag
    means "O") and "CHAR<SPACE>TAG" (BMES with types NR/NS/NT).

    path (str / Path): The file (UTF-8, BOM and CRLF tolerated).
    scheme (str): "auto", "IOB1", "IOB2"/"BIO" or "BIOES"/"BILUO"/"BMES".
    n_sents (int): Sentences per Doc.
    strict (bool): Raise on the first invalid tag sequence instead of repairing it.
    lang (str): Language of the blank vocab (ignored when vocab is given).
    label_map (Optional[Dict[str, str]]): Rename entity labels; None means DEFAULT_MSRA_LABEL_MAP
        (NR=PER, NS=LOC, NT=ORG), {} keeps the labels as they are.
    vocab (Optional[Vocab]): The vocab for the Docs.
    progress (bool): Show a progress bar for large files.
    RETURNS (Tuple[List[Doc], ConversionStats]): The Docs (no spaces, one token per character)
        and the statistics.
    """
    check_grouping(False, n_sents)
    label_map = DEFAULT_MSRA_LABEL_MAP if label_map is None else label_map
    return read_sentences_file(
        path, _parse_msra, label_map, vocab, lang, progress,
        scheme=scheme, docs=False, n_sents=n_sents, strict=strict, spaces=False,
    )


def _parse_msra(
    path: Path, lines: List[str], label_map: Dict[str, str], progress: bool
) -> List[List[Sentence]]:
    """The sentences of a character-per-line file (CHAR<TAB>TAG or CHAR<SPACE>TAG), as one
    document.

    The variant is that of the first line with a separator between two fields (a line "0<TAB>"
    with an empty tag does not decide); a file without any is read as CHAR<TAB>TAG.
    """
    tab = True
    for line in lines:
        line = line.rstrip(" \t")
        if "\t" in line or " " in line.lstrip(" \t"):
            tab = "\t" in line
            break
    expected = "CHAR<TAB>TAG" if tab else "CHAR<SPACE>TAG"
    sentences: List[Sentence] = []
    words: List[str] = []
    tags: List[Tag] = []
    first = 0
    tag_cache: Dict[str, Tag] = {}
    cache: Dict[str, Union[Tuple[str, Tag], str]] = {}  # valid lines: (char, tag) or BLANK
    numbered = enumerate(iter_progress(lines, f"Reading {path.name}", " lines", progress), 1)
    for lineno, line in numbered:
        parsed = cache.get(line)
        if parsed is None:
            if not line.strip(" \t"):
                parsed = BLANK
            else:
                if tab:
                    char, sep, tag_text = line.partition("\t")
                    tag_text = tag_text.strip(" \t")
                    ok = bool(sep) and bool(char) and " " not in tag_text and "\t" not in tag_text
                else:
                    cols = COLUMNS.split(line.strip(" \t"))
                    ok = len(cols) == 2
                    char, tag_text = cols[0], cols[-1]
                if not ok:
                    raise ConversionError(
                        f"{path}:{lineno}: expected {expected} (one character per line), "
                        f"found {line!r}"
                    )
                if not _is_one_character(char):
                    raise ConversionError(
                        f"{path}:{lineno}: expected one character per line, found {char!r} "
                        f"({len(char)} characters) in {line!r}"
                    )
                tag_text = tag_text or OUT
                tag = tag_cache.get(tag_text)
                if tag is None:
                    tag = parse_tag(tag_text, label_map, path, lineno, line, tag_cache)
                parsed = (char, tag)
            cache[line] = parsed
        if parsed is BLANK:
            if words:
                sentences.append(Sentence(words, tags, first))
                words, tags = [], []
            continue
        if not words:
            first = lineno
        token_line = cast(Tuple[str, Tag], parsed)  # not BLANK: a parsed token line
        words.append(token_line[0])
        tags.append(token_line[1])
    if words:
        sentences.append(Sentence(words, tags, first))
    if not sentences:
        raise ConversionError(
            f"{path}: no characters to convert: the file holds {describe_empty(lines)}"
        )
    return [sentences]


def _is_one_character(text: str) -> bool:
    """Whether text is one character: one code point, or one followed by combining marks or
    variation selectors (what a reader sees as one character)."""
    return len(text) == 1 or (
        len(text) > 1
        and not unicodedata.category(text[0]).startswith("M")
        and all(
            unicodedata.category(c).startswith("M") or "\ufe00" <= c <= "\ufe0f" for c in text[1:]
        )
    )

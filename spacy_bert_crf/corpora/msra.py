"""MSRA-style files: one character per line, CHAR<TAB>BIO or CHAR<SPACE>BMES.

UTF-8, one character and its tag per line, a blank line between sentences:

    北<TAB>B-LOC          北 B-NS
    京<TAB>I-LOC          京 E-NS

The variant (tab or spaces) is that of the first line with both fields. In the tab variant an
empty tag ("0<TAB>", 57 lines of MSRA's train file) is "O".

Bad input is an error naming file:line (the checks of zh_chars.py, shared in docs.py): a separator
that is not a tab (ASCII spaces in the space variant), such as an ideographic space U+3000 or a
no-break space, named with its column; a space as the character; a line of spaces other than
ASCII spaces and tabs; a byte-order mark after the first line (files joined together); a missing
tag or separator; a third column; more than one character; a malformed tag ("B-" alone); and an
empty line inside an entity (a blank line between B-LOC and I-LOC: with any scheme but IOB1). A
BOM at the start of the file and CRLF line ends are accepted.
"""
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
    check_blank_lines,
    check_character_line,
    check_grouping,
    check_odd_spaces,
    check_one_character,
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

    def parse(
        path: Path, lines: List[str], label_map: Dict[str, str], progress: bool
    ) -> List[List[Sentence]]:
        sentences = _parse_msra(path, lines, label_map, progress)
        check_blank_lines(path, sentences, scheme)
        return [sentences]

    return read_sentences_file(
        path, parse, label_map, vocab, lang, progress,
        scheme=scheme, docs=False, n_sents=n_sents, strict=strict, spaces=False,
    )


def _parse_msra(
    path: Path, lines: List[str], label_map: Dict[str, str], progress: bool
) -> List[Sentence]:
    """The sentences of a character-per-line file (CHAR<TAB>TAG or CHAR<SPACE>TAG).

    The variant is that of the first line with a separator between two fields (a line "0<TAB>"
    with an empty tag does not decide); a file without any is read as CHAR<TAB>TAG.
    """
    tab = True
    for line in lines:
        line = line.rstrip(" \t")
        if "\t" in line or " " in line.lstrip(" \t"):
            tab = "\t" in line
            break
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
                char, tag_text = _split_line(path, lineno, line, tab)
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
    return sentences


def _split_line(path: Path, lineno: int, line: str, tab: bool) -> Tuple[str, str]:
    """(character, tag) of a token line of the tab or the space variant (the tag is "" for
    "CHAR<TAB>"); a ConversionError naming file:line for anything else."""
    check_character_line(path, lineno, line)
    separator = "a tab" if tab else "ASCII spaces"
    if tab:
        char, sep, tag_text = line.partition("\t")
        tag_text = tag_text.strip(" \t")
        problem = ""
        if not sep:
            problem = "no tab after the character (is the tag missing?)"
        elif " " in tag_text or "\t" in tag_text:
            problem = "more than two columns"
    else:
        columns = COLUMNS.split(line.strip(" \t"))
        char, tag_text = columns[0], columns[-1]
        problem = "" if len(columns) == 2 else (
            "no tag after the character" if len(columns) == 1 else "more than two columns"
        )
    check_odd_spaces(path, lineno, line, separator)
    if problem:
        expected = "CHAR<TAB>TAG" if tab else "CHAR<SPACE>TAG"
        raise ConversionError(
            f"{path}:{lineno}: expected {expected} (one character per line), found {line!r}: "
            f"{problem}"
        )
    check_one_character(path, lineno, char, line)
    return char, tag_text

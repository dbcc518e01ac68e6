"""Generic Chinese character-per-line corpora (format "zh_chars").

One character per line, its tag after it, separated by a tab or by ASCII spaces; a blank line
ends a sentence:

    北 B-LOC          北<TAB>B-LOC       北  B-NS
    京 E-LOC          京<TAB>I-LOC       京  E-NS

Schemes: BMES (B/M/E/S), BIOES, BIO (IOB2), IOB1 or auto-detected, as for the other formats
(tag_schemes.py). "O" is outside. A "-" tag is read according to `dash`: "outside", "missing"
(spaCy's meaning of "-": the token is not annotated, so training leaves it out; partial
annotation) or "auto": outside when the file has no "O" tag, else missing.

Bad input is an error naming file:line: a separator that is not a tab or ASCII spaces (an
ideographic space U+3000, a no-break space), a space as the character, a line of spaces other
than ASCII spaces and tabs, a byte-order mark after the first line (files joined together), a
malformed tag ("B-" alone), and an empty line inside an entity (an entity tag that goes on
after a blank line: with any scheme but IOB1, where "I-X" may start an entity, the blank line
is taken as a stray line inside a sentence). A blank line between two tags that could end and
start sentences is a sentence break: nothing tells it from one. A BOM at the start of the file
and CRLF line ends are accepted.
"""
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from spacy.tokens import Doc
from spacy.vocab import Vocab

from ..tag_schemes import OUT, Tag
from .docs import (
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

DASH = "-"
DASH_MEANINGS = ("auto", "outside", "missing")
_LINE = re.compile(r"(\S+?)([ \t]+)(\S+)[ \t]*")


@dataclass
class CharCorpusStats(ConversionStats):
    """ConversionStats of a zh_chars file, plus how "-" tags were read.

    missing (int): Characters whose tag is "-" read as missing (not annotated).
    dash (str): How "-" tags were read ("outside" or "missing") and why; "" without any.
    """

    missing: int = 0
    dash: str = ""


def read_zh_chars(
    path: PathLike,
    *,
    scheme: str = "auto",
    dash: str = "auto",
    n_sents: int = 1,
    strict: bool = False,
    lang: str = "zh",
    label_map: Optional[Dict[str, str]] = None,
    vocab: Optional[Vocab] = None,
    progress: bool = False,
) -> Tuple[List[Doc], CharCorpusStats]:
    """Read a character-per-line file (CHAR, a tab or spaces, TAG) into Docs of characters.

    path (str / Path): The file (UTF-8, BOM and CRLF tolerated).
    scheme (str): "auto", "IOB1", "IOB2"/"BIO" or "BIOES"/"BILUO"/"BMES".
    dash (str): What a "-" tag means: "outside", "missing" (not annotated: the token's entity
        annotation is missing, as "-" means in spaCy) or "auto" (outside when the file has no
        "O" tag, else missing).
    n_sents (int): Sentences per Doc.
    strict (bool): Raise on the first invalid tag sequence instead of repairing it.
    lang (str): Language of the blank vocab (ignored when vocab is given).
    label_map (Optional[Dict[str, str]]): Rename entity labels, e.g. {"NR": "PER"}.
    vocab (Optional[Vocab]): The vocab for the Docs.
    progress (bool): Show a progress bar for large files.
    RETURNS (Tuple[List[Doc], CharCorpusStats]): The Docs (no spaces, one token per character;
        "-" read as missing leaves its token's entity annotation missing) and the statistics.
    """
    check_grouping(False, n_sents)
    if dash not in DASH_MEANINGS:
        raise ValueError(f"Invalid dash {dash!r}: expected one of {', '.join(DASH_MEANINGS)}.")
    parsed: Dict[str, object] = {}

    def parse(
        path: Path, lines: List[str], label_map: Dict[str, str], progress: bool
    ) -> List[List[Sentence]]:
        sentences, missing, dash_reading = _parse_zh_chars(path, lines, label_map, progress, dash)
        check_blank_lines(path, sentences, scheme)
        parsed.update(missing=missing, dash=dash_reading)
        return [sentences]

    docs, base = read_sentences_file(
        path, parse, label_map or {}, vocab, lang, progress,
        scheme=scheme, docs=False, n_sents=n_sents, strict=strict, spaces=False,
    )
    stats = CharCorpusStats(**vars(base), dash=str(parsed["dash"]))
    missing: List[List[int]] = parsed["missing"]  # type: ignore[assignment]
    for doc, chunk in zip(docs, _chunks(missing, n_sents)):
        indices: List[int] = []
        for sentence_missing, sent in zip(chunk, doc.sents):
            indices.extend(sent.start + i for i in sentence_missing)
        if indices:
            doc.set_ents([], missing=[doc[i : i + 1] for i in indices], default="unmodified")
            stats.missing += len(indices)
    return docs, stats


def _chunks(items: List[List[int]], size: int) -> List[List[List[int]]]:
    return [items[start : start + size] for start in range(0, len(items), size)]


def _parse_zh_chars(
    path: Path, lines: List[str], label_map: Dict[str, str], progress: bool, dash: str
) -> Tuple[List[Sentence], List[List[int]], str]:
    """The sentences of a character-per-line file, the positions of "-" tags read as missing in
    each, and how "-" was read."""
    sentences: List[Sentence] = []
    missing: List[List[int]] = []
    words: List[str] = []
    tags: List[Tag] = []
    dashes: List[int] = []
    first = 0
    tag_cache: Dict[str, Tag] = {}
    has_out = has_dash = False
    numbered = enumerate(iter_progress(lines, f"Reading {path.name}", " lines", progress), 1)
    for lineno, line in numbered:
        if not line.strip(" \t"):
            if words:
                sentences.append(Sentence(words, tags, first))
                missing.append(dashes)
                words, tags, dashes = [], [], []
            continue
        char, tag_text = _split_line(path, lineno, line)
        if not words:
            first = lineno
        if tag_text == DASH:
            has_dash = True
            dashes.append(len(words))
            tag: Tag = (OUT, "")
        else:
            has_out = has_out or tag_text == OUT
            cached = tag_cache.get(tag_text)
            tag = cached if cached is not None else parse_tag(
                tag_text, label_map, path, lineno, line, tag_cache
            )
        words.append(char)
        tags.append(tag)
    if words:
        sentences.append(Sentence(words, tags, first))
        missing.append(dashes)
    if not sentences:
        raise ConversionError(
            f"{path}: no characters to convert: the file holds {describe_empty(lines)}"
        )
    reading = ""
    if has_dash:
        meaning = dash
        why = "given"
        if dash == "auto":
            meaning = "missing" if has_out else "outside"
            why = "the file also has 'O' tags" if has_out else "the file has no 'O' tag"
        reading = f"{meaning} ({why})"
        if meaning == "outside":
            missing = [[] for _ in sentences]
    return sentences, missing, reading


def _split_line(path: Path, lineno: int, line: str) -> Tuple[str, str]:
    """(character, tag) of a token line; a ConversionError naming file:line for anything else."""
    check_character_line(path, lineno, line)
    match = _LINE.fullmatch(line)
    if match is None:
        check_odd_spaces(path, lineno, line, "a tab or ASCII spaces")
        raise ConversionError(
            f"{path}:{lineno}: expected CHAR TAG (one character, a tab or spaces, the tag), found "
            f"{line!r}"
        )
    char, tag_text = match.group(1), match.group(3)
    check_one_character(path, lineno, char, line)
    return char, tag_text

"""What the corpus readers share: reading a file's lines, progress, tag parsing, turning
sentences into Docs, the statistics and the error.

Everything about tags (parsing, the schemes, repairs, detection) is in tag_schemes.py; in short:
a tag is PREFIX-LABEL, split at its first "-": the label is everything after it, so "B-LOC-2"
is label "LOC-2" and "B-B" label "B". Any label spaCy allows works ("creative-work",
"WORK_OF_ART", "Org.Gov", "人名"); only "" and "O" (which means outside) are refused.

Invalid tag sequences (an I- that starts an entity in IOB2, a B- that does not follow an entity
of its type in IOB1, an unclosed B- in BIOES, ...) are repaired by starting a new entity where
the sequence breaks: no token and no entity is ever dropped. The repairs are counted in
ConversionStats, or raise a ConversionError in strict mode.

scheme="auto" picks the reading with the fewest invalid tags. Between IOB1 and IOB2 it counts the
I- tags that start an entity (invalid in IOB2) and the B- tags that do not follow an entity of
their type (invalid in IOB1); both readings give the same entities, only what counts as a repair
differs. When both counts are above zero the scheme is ambiguous (ConversionStats.ambiguous) and
the repairs make strict mode fail. ConversionStats.detection says what the detection saw.

Malformed input always raises a ConversionError naming file:line and the line. The checks of the
character-per-line formats (msra.py, zh_chars.py) are shared here: check_character_line,
check_odd_spaces, check_one_character and check_blank_lines.
"""
import re
import sys
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Counter as CounterType
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import spacy
from spacy.tokens import Doc, Span
from spacy.vocab import Vocab

from ..tag_schemes import (
    OUT,
    Tag,
    TagSchemeError,
    join_tag,
    read_tags,
    resolve_scheme,
    split_tag,
)

try:  # tqdm is a spaCy dependency, but stay usable without it
    from tqdm import tqdm
except ImportError:  # pragma: no cover
    tqdm = None

MAX_REPAIR_LOCATIONS = 5
PROGRESS_MIN_LINES = 50_000  # smaller files convert in a few seconds: no progress shown
PROGRESS_STEPS = 10  # progress lines per pass when stderr is not a terminal

COLUMNS = re.compile(r"[ \t]+")
CHUNKS_KEY = "chunks"  # the span group of a chunk column (CoNLL-2003)
BLANK = "<blank>"  # parsed-line markers, compared by identity
_ODD_SPACE = re.compile(r"[^\S \t]")  # whitespace that is neither an ASCII space nor a tab
_OPENS = frozenset("BIM")  # an entity may go on after these prefixes
_CONTINUES = frozenset("IMLE")  # these prefixes go on with the entity before

PathLike = Union[str, Path]


class ConversionError(ValueError):
    """A file that cannot be converted: a malformed line, or an invalid tag sequence (strict)."""


@dataclass
class ConversionStats:
    """What a conversion produced.

    docs (int): Docs written.
    sentences (int): Sentences read (non-empty runs of token lines).
    tokens (int): Tokens (characters for MSRA).
    entities (Counter[str]): Entities per label (after label mapping).
    repairs (int): Invalid tag transitions repaired by starting a new entity.
    repair_locations (List[str]): "file:line" of the first MAX_REPAIR_LOCATIONS repairs.
    scheme (str): The tag scheme used (detected when scheme="auto").
    detection (str): What the detection was based on (scheme="auto"), "" when the scheme was given.
    ambiguous (bool): scheme="auto" found tags that are invalid in every reading of the file
        (both I- tags that start an entity and B- tags that do not follow one of their type).
    """

    docs: int = 0
    sentences: int = 0
    tokens: int = 0
    entities: CounterType[str] = field(default_factory=Counter)
    repairs: int = 0
    repair_locations: List[str] = field(default_factory=list)
    scheme: str = ""
    detection: str = ""
    ambiguous: bool = False

    @property
    def n_entities(self) -> int:
        """RETURNS (int): The number of entities of all labels."""
        return sum(self.entities.values())


@dataclass
class Sentence:
    """The tokens of one sentence; token i is on line first_line + i of the file. pos (the POS
    tags) and chunks (chunk tags, as (prefix, label)) are set when the file has those columns."""

    words: List[str]
    tags: List[Tag]
    first_line: int
    pos: Optional[List[str]] = None
    chunks: Optional[List[Tag]] = None


def read_sentences_file(
    path: PathLike,
    parse: Callable[[Path, List[str], Dict[str, str], bool], List[List[Sentence]]],
    label_map: Dict[str, str],
    vocab: Optional[Vocab],
    lang: str,
    progress: bool,
    *,
    scheme: str,
    docs: bool,
    n_sents: int,
    strict: bool,
    spaces: bool,
) -> Tuple[List[Doc], ConversionStats]:
    """Read a file's lines, parse them into documents of sentences and build the Docs."""
    path = Path(path)
    lines = _read_lines(path)
    progress = progress and len(lines) >= PROGRESS_MIN_LINES
    documents = parse(path, lines, label_map, progress)
    vocab = vocab if vocab is not None else spacy.blank(lang).vocab
    return _to_docs(
        path, documents, vocab, scheme=scheme, docs=docs, n_sents=n_sents, strict=strict,
        spaces=spaces, progress=progress,
    )


def check_grouping(docs: bool, n_sents: int) -> None:
    if n_sents < 1:
        raise ValueError(f"n_sents must be >= 1, got {n_sents}.")
    if docs and n_sents != 1:
        raise ValueError("Use either docs (one Doc per document) or n_sents, not both.")


def _read_lines(path: Path) -> List[str]:
    """The lines of a UTF-8 file without BOM and line ends (CRLF and CR count as line ends)."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        lineno = raw.count(b"\n", 0, err.start) + 1
        raise ConversionError(f"{path}:{lineno}: not valid UTF-8 ({err.reason})") from None
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def iter_progress(items: Sequence, desc: str, unit: str, show: bool) -> Iterable:
    """Iterate over items, showing progress on stderr when show is set: a tqdm bar on a terminal,
    otherwise (a log file, a pipe) one line per PROGRESS_STEPS-th of the items."""
    if not show or not items:
        return items
    if tqdm is not None and sys.stderr.isatty():
        return tqdm(items, desc=desc, unit=unit, unit_scale=True, leave=False)
    return _progress_lines(items, desc, unit.strip())


def _progress_lines(items: Sequence, desc: str, unit: str) -> Iterator:
    total = len(items)
    marks = {total * step // PROGRESS_STEPS: step for step in range(1, PROGRESS_STEPS + 1)}
    for i, item in enumerate(items, 1):
        yield item
        step = marks.get(i)
        if step is not None:
            print(
                f"{desc}: {100 * step // PROGRESS_STEPS}% ({i:,} of {total:,} {unit})",
                file=sys.stderr,
                flush=True,
            )


def parse_tag(
    tag: str, label_map: Dict[str, str], path: Path, lineno: int, line: str, cache: Dict[str, Tag]
) -> Tag:
    """Parse a tag into (prefix, label), checking the form only (the scheme is checked later)."""
    try:
        prefix, label = split_tag(tag)
    except ValueError as err:
        raise ConversionError(f"{path}:{lineno}: {err}, in line {line!r}") from None
    mapped = label_map.get(label, label) if prefix != OUT else label
    if prefix != OUT and (not mapped or mapped == OUT):
        raise ConversionError(
            f"{path}:{lineno}: malformed tag {tag!r}: the label map turns {label!r} into "
            f"{mapped!r}, which is not an entity label, in line {line!r}"
        )
    cache[tag] = (prefix, mapped)
    return cache[tag]


def describe_empty(lines: List[str]) -> str:
    """What a file without tokens holds, for the error message."""
    if not lines:
        return "no lines"
    if any(line.strip(" \t") for line in lines):
        return "only -DOCSTART- and blank lines"
    return "only blank lines"


def _read_sentence(
    sentence: Sentence, scheme: str, path: Path
) -> Tuple[List[Tuple[int, int, str]], List[Tuple[int, str]]]:
    """Entity spans (start, end, label) of one sentence and its repairs (line, description)."""
    try:
        spans, repairs = read_tags(sentence.tags, scheme)
    except TagSchemeError as err:
        raise ConversionError(f"{path}:{sentence.first_line + err.index}: {err}") from None
    return spans, [(sentence.first_line + i, text) for i, text in repairs]


def _chunks(sentences: List[Sentence], size: int) -> List[List[Sentence]]:
    """Consecutive groups of `size` sentences (the last may be shorter)."""
    chunks = []
    for start in range(0, len(sentences), size):
        stop = start + size
        chunks.append(sentences[start:stop])
    return chunks


def _to_docs(
    path: Path,
    documents: List[List[Sentence]],
    vocab: Vocab,
    *,
    scheme: str,
    docs: bool,
    n_sents: int,
    strict: bool,
    spaces: bool,
    progress: bool,
) -> Tuple[List[Doc], ConversionStats]:
    sequences = (sentence.tags for document in documents for sentence in document)
    name, detection, ambiguous = resolve_scheme(scheme, sequences)
    stats = ConversionStats(scheme=name, detection=detection, ambiguous=ambiguous)
    chunk_sequences = [s.chunks for d in documents for s in d if s.chunks is not None]
    chunk_scheme = resolve_scheme("auto", chunk_sequences)[0] if chunk_sequences else ""
    if docs:
        groups = documents
    else:
        groups = [chunk for document in documents for chunk in _chunks(document, n_sents)]
    out = []
    for group in iter_progress(groups, f"Building {path.name}", " docs", progress):
        words: List[str] = []
        sent_starts: List[Optional[Union[bool, int]]] = []  # the type Doc asks for
        spans: List[Tuple[int, int, str]] = []
        pos: List[str] = []
        chunks: List[Tuple[int, int, str]] = []
        for sentence in group:
            offset = len(words)
            sentence_spans, repairs = _read_sentence(sentence, name, path)
            if repairs:
                if strict:
                    lineno, text = repairs[0]
                    why = "convert without strict mode to repair it by starting a new entity"
                    if detection:
                        why = (
                            f"{name} auto-detected from the {detection}"
                            f"{'; no scheme fits every tag' if ambiguous else ''}. To convert, "
                            f"give the scheme (--scheme) if the file uses another one, or {why}"
                        )
                    raise ConversionError(
                        f"{path}:{lineno}: invalid {name} tag sequence: {text} ({why})"
                    )
                stats.repairs += len(repairs)
                for lineno, _ in repairs:
                    if len(stats.repair_locations) < MAX_REPAIR_LOCATIONS:
                        stats.repair_locations.append(f"{path}:{lineno}")
            words.extend(sentence.words)
            sent_starts.append(True)
            sent_starts.extend([False] * (len(sentence.words) - 1))
            spans.extend((offset + s, offset + e, label) for s, e, label in sentence_spans)
            if sentence.pos is not None:
                pos.extend(sentence.pos)
            if sentence.chunks is not None:
                # chunks are auxiliary: an invalid sequence is repaired, never an error
                try:
                    chunk_spans, _ = read_tags(sentence.chunks, chunk_scheme)
                except TagSchemeError as err:
                    raise ConversionError(
                        f"{path}:{sentence.first_line + err.index}: chunk column: {err}"
                    ) from None
                chunks.extend((offset + s, offset + e, label) for s, e, label in chunk_spans)
        token_spaces = [spaces] * len(words)
        token_spaces[-1] = False
        doc = Doc(
            vocab, words=words, spaces=token_spaces, sent_starts=sent_starts,
            tags=pos if chunk_scheme else None,
        )
        doc.set_ents([Span(doc, s, e, label=label) for s, e, label in spans], default="outside")
        if chunk_scheme:
            doc.spans[CHUNKS_KEY] = [Span(doc, s, e, label=label) for s, e, label in chunks]
        stats.entities.update(label for _, _, label in spans)
        stats.sentences += len(group)
        stats.tokens += len(words)
        out.append(doc)
    stats.docs = len(out)
    return out, stats


# ---------------------------------------------------------------------------------------------
# Character-per-line files (msra, zh_chars): the checks of a line and of the blank lines
# ---------------------------------------------------------------------------------------------


def check_character_line(path: Path, lineno: int, line: str) -> None:
    """Raise a ConversionError naming file:line for a token line (one that is not blank: it has
    more than ASCII spaces and tabs) that cannot start with a character: a byte-order mark (the
    file's first BOM is gone already, so this one is after the first line: files joined
    together), a line of other spaces (an ideographic space, a no-break space), or a space as
    the character (or none: a tab first)."""
    where = f"{path}:{lineno}"
    if line.startswith("\ufeff"):
        raise ConversionError(
            f"{where}: byte-order mark (U+FEFF) at the start of a line after the first: were "
            f"files joined together? Remove it. In line {line!r}"
        )
    if not line.strip():
        raise ConversionError(
            f"{where}: a line of spaces other than ASCII spaces and tabs "
            f"({describe_spaces(line)}): a blank line (sentence break) must be empty"
        )
    if line[0] == "\t":
        raise ConversionError(
            f"{where}: the character is missing: the line starts with a tab. In line {line!r}"
        )
    if line[0].isspace():
        raise ConversionError(
            f"{where}: the character is a space ({describe_spaces(line[0])}): spaces are not "
            f"tokens of a character corpus (or the character is missing). In line {line!r}"
        )


def check_odd_spaces(path: Path, lineno: int, line: str, separator: str) -> None:
    """Raise a ConversionError naming file:line and the column of the first whitespace in line
    that is neither an ASCII space nor a tab (an ideographic space U+3000, a no-break space).

    separator (str): What separates a character from its tag, for the message ("a tab").
    """
    odd = _ODD_SPACE.search(line)
    if odd is not None:
        raise ConversionError(
            f"{path}:{lineno}: {describe_spaces(odd.group())} at column {odd.start() + 1}: "
            f"separate the character and its tag with {separator} (mixed-width spaces?). In "
            f"line {line!r}"
        )


def check_one_character(path: Path, lineno: int, char: str, line: str) -> None:
    """Raise a ConversionError naming file:line unless char is one character."""
    if not is_one_character(char):
        raise ConversionError(
            f"{path}:{lineno}: expected one character per line, found {char!r} ({len(char)} "
            f"characters) in {line!r}"
        )


def is_one_character(text: str) -> bool:
    """Whether text is one character: one code point, or one followed by combining marks or
    variation selectors (what a reader sees as one character)."""
    return len(text) == 1 or (
        len(text) > 1
        and not unicodedata.category(text[0]).startswith("M")
        and all(
            unicodedata.category(c).startswith("M") or "\ufe00" <= c <= "\ufe0f" for c in text[1:]
        )
    )


def describe_spaces(text: str) -> str:
    """The code points and names of the (distinct) characters of text: "U+3000 IDEOGRAPHIC
    SPACE"."""
    names = dict.fromkeys(f"U+{ord(c):04X} {unicodedata.name(c, '?')}" for c in text)
    return ", ".join(names)


def check_blank_lines(path: Path, sentences: List[Sentence], scheme: str) -> None:
    """Raise on a blank line inside an entity: a sentence that ends on a tag after which its
    entity may go on (B-X, I-X, M-X), followed by one that starts with a tag that goes on with
    an entity of that type (I-X, M-X, E-X, L-X). Under IOB1 an I- tag may start an entity, so
    nothing is raised. A blank line between tags that could end and start sentences is a
    sentence break: nothing tells it from one.

    The scheme ("auto" too) is only resolved when such a pair of sentences exists.
    """
    suspects = [
        (before, after)
        for before, after in zip(sentences, sentences[1:])
        if before.tags[-1][0] in _OPENS
        and after.tags[0][0] in _CONTINUES
        and before.tags[-1][1] == after.tags[0][1]
    ]
    if not suspects:
        return
    name, _, _ = resolve_scheme(scheme, (sentence.tags for sentence in sentences))
    if name == "IOB1":
        return
    before, after = suspects[0]
    last, head = before.tags[-1], after.tags[0]
    blank = before.first_line + len(before.words)
    raise ConversionError(
        f"{path}:{blank}: empty line inside a sentence: the entity tagged {join_tag(last)!r} on "
        f"line {blank - 1} goes on with {join_tag(head)!r} on line {after.first_line}. Remove "
        f"the empty line (blank lines end sentences)"
    )

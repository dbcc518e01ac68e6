"""Converters: CoNLL-2003 style columns and MSRA character-per-line files -> .spacy (DocBin).

Library API:
    read_conll(path, ...) -> (docs, stats)  word first, NER tag last (IOB1, IOB2/BIO, BIOES/BILUO)
    read_msra(path, ...) -> (docs, stats)   one character per line: CHAR<TAB>BIO, CHAR<SPACE>BMES
    convert_file(fmt, path, output_dir, ...) -> (output_path, stats)
    split_docs(docs, dev_size=..., seed=...) -> (train, dev)

Command line (wired in cli.py):
    python -m spacy_bert_crf convert FORMAT INPUT OUTPUT_DIR [--scheme S] [--docs] [-n N] [--strict]
    python -m spacy_bert_crf split INPUT.spacy OUTPUT_DIR [--dev-size 0.1] [--seed 0]

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

Malformed input always raises a ConversionError naming file:line and the line: a wrong column
count (the expected count is that of most token lines, so a token containing a space is the line
blamed), an unknown tag prefix, a tag without a label, an MSRA line with more than one character.
A file without any token is an error too.
"""

import random
import re
import sys
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Counter as CounterType
from typing import Callable, Dict, Iterable, Iterator, List, NoReturn, Optional, Sequence, Tuple
from typing import Union

import spacy
import typer
from spacy.tokens import Doc, DocBin, Span
from spacy.vocab import Vocab

from .tag_schemes import (
    INPUT_SCHEMES,
    OUT,
    Tag,
    TagSchemeError,
    read_tags,
    resolve_scheme,
    split_tag,
)

try:  # tqdm is a spaCy dependency, but stay usable without it
    from tqdm import tqdm
except ImportError:  # pragma: no cover
    tqdm = None

FORMATS = ("conll", "msra")
DEFAULT_LANGS = {"conll": "en", "msra": "zh"}
DEFAULT_MSRA_LABEL_MAP = {"NR": "PER", "NS": "LOC", "NT": "ORG"}
DOCSTART = "-DOCSTART-"
MAX_REPAIR_LOCATIONS = 5
PROGRESS_MIN_LINES = 50_000  # smaller files convert in a few seconds: no progress shown
PROGRESS_STEPS = 10  # progress lines per pass when stderr is not a terminal

_COLUMNS = re.compile(r"[ \t]+")
_BLANK = "<blank>"  # parsed-line markers, compared by identity
_DOCSTART = "<docstart>"

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
class _Sentence:
    """The tokens of one sentence; token i is on line first_line + i of the file."""

    words: List[str]
    tags: List[Tag]
    first_line: int


# ---------------------------------------------------------------------------------------------
# Public readers
# ---------------------------------------------------------------------------------------------


def read_conll(
    path: PathLike,
    *,
    scheme: str = "auto",
    docs: bool = False,
    n_sents: int = 1,
    strict: bool = False,
    lang: str = "en",
    label_map: Optional[Dict[str, str]] = None,
    vocab: Optional[Vocab] = None,
    progress: bool = False,
) -> Tuple[List[Doc], ConversionStats]:
    """Read a CoNLL-style column file (word first, NER tag last) into Docs with entities.

    Columns are split on spaces or tabs; their number (>= 2) must be the same on every token line.
    Blank lines end sentences; "-DOCSTART-" lines (any number of columns) open a new document.

    path (str / Path): The file (UTF-8, BOM and CRLF tolerated).
    scheme (str): "auto", "IOB1", "IOB2"/"BIO" or "BIOES"/"BILUO"/"BMES".
    docs (bool): One Doc per -DOCSTART- document instead of one per sentence.
    n_sents (int): Sentences per Doc (never across a document boundary). Needs docs=False.
    strict (bool): Raise on the first invalid tag sequence instead of repairing it.
    lang (str): Language of the blank vocab (ignored when vocab is given).
    label_map (Optional[Dict[str, str]]): Rename entity labels, e.g. {"NR": "PER"}.
    vocab (Optional[Vocab]): The vocab for the Docs.
    progress (bool): Show a progress bar for large files.
    RETURNS (Tuple[List[Doc], ConversionStats]): The Docs (sentence starts set) and the statistics.
    """
    _check_grouping(docs, n_sents)
    options = dict(scheme=scheme, docs=docs, n_sents=n_sents, strict=strict, spaces=True)
    return _read(path, _parse_conll, label_map or {}, vocab, lang, progress, **options)


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
    _check_grouping(False, n_sents)
    label_map = DEFAULT_MSRA_LABEL_MAP if label_map is None else label_map
    options = dict(scheme=scheme, docs=False, n_sents=n_sents, strict=strict, spaces=False)
    return _read(path, _parse_msra, label_map, vocab, lang, progress, **options)


def convert_file(
    input_format: str,
    input_path: PathLike,
    output_dir: PathLike,
    *,
    scheme: str = "auto",
    docs: bool = False,
    n_sents: int = 1,
    strict: bool = False,
    lang: Optional[str] = None,
    label_map: Optional[Dict[str, str]] = None,
    progress: bool = False,
) -> Tuple[Path, ConversionStats]:
    """Convert one file and write output_dir/<input stem>.spacy (the directory is created).

    input_format (str): "conll" or "msra".
    input_path (str / Path): The file to convert.
    output_dir (str / Path): Where to write the .spacy file.
    lang (Optional[str]): Vocab language; None means "en" for conll and "zh" for msra.
    The other arguments are those of read_conll / read_msra (docs is conll only).
    RETURNS (Tuple[Path, ConversionStats]): The written file and the statistics.
    """
    if input_format not in FORMATS:
        raise ValueError(f"Unknown format {input_format!r}: expected one of {', '.join(FORMATS)}.")
    options = dict(scheme=scheme, n_sents=n_sents, strict=strict, label_map=label_map)
    lang = lang or DEFAULT_LANGS[input_format]
    if input_format == "conll":
        doc_list, stats = read_conll(input_path, docs=docs, lang=lang, progress=progress, **options)
    elif docs:
        raise ValueError("docs (--docs) is only for conll: msra files have no documents.")
    else:
        doc_list, stats = read_msra(input_path, lang=lang, progress=progress, **options)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    output_path = output_dir / f"{Path(input_path).stem}.spacy"
    DocBin(docs=doc_list, store_user_data=False).to_disk(output_path)
    return output_path, stats


def parse_label_map(text: str) -> Dict[str, str]:
    """Parse "NR=PER,NS=LOC,NT=ORG" into a dict ("" gives an empty map).

    text (str): Comma-separated FROM=TO pairs.
    RETURNS (Dict[str, str]): The mapping.
    """
    mapping = {}
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        source, sep, target = (part.strip() for part in item.partition("="))
        if not sep or not source or not target:
            raise ValueError(f"Invalid label map entry {item!r}: expected FROM=TO, e.g. NR=PER.")
        if target == OUT:
            raise ValueError(
                f"Invalid label map entry {item!r}: 'O' means outside, not an entity label."
            )
        mapping[source] = target
    return mapping


def split_docs(
    docs: Sequence[Doc], *, dev_size: float = 0.1, seed: int = 0
) -> Tuple[List[Doc], List[Doc]]:
    """Split docs into train and dev at random (deterministic for a seed).

    The docs are shuffled with random.Random(seed); the first dev_size go to dev. Each part keeps
    the original order of its docs.

    docs (Sequence[Doc]): The docs.
    dev_size (float): A fraction in (0, 1) of the docs (at least one), or an absolute count >= 1.
    seed (int): The random seed.
    RETURNS (Tuple[List[Doc], List[Doc]]): The train and dev docs.
    """
    n_docs = len(docs)
    if dev_size <= 0:
        raise ValueError(f"dev_size must be > 0, got {dev_size}.")
    if dev_size < 1:
        n_dev = max(1, round(dev_size * n_docs))
    elif float(dev_size).is_integer():
        n_dev = int(dev_size)
    else:
        raise ValueError(f"dev_size must be a fraction below 1 or a whole count, got {dev_size}.")
    if n_dev >= n_docs:
        raise ValueError(f"Cannot take {n_dev} dev docs out of {n_docs}: train would be empty.")
    order = list(range(n_docs))
    random.Random(seed).shuffle(order)
    dev_ids = set(order[:n_dev])
    train = [doc for i, doc in enumerate(docs) if i not in dev_ids]
    dev = [doc for i, doc in enumerate(docs) if i in dev_ids]
    return train, dev


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


def convert_cli(
    input_format: str = typer.Argument(..., metavar="FORMAT", help="conll or msra"),
    input_path: Path = typer.Argument(
        ..., metavar="INPUT", help="File to convert", exists=True, dir_okay=False
    ),
    output_dir: Path = typer.Argument(
        ..., metavar="OUTPUT_DIR", help="Where to write <INPUT stem>.spacy", file_okay=False
    ),
    scheme: str = typer.Option(
        "auto", "--scheme", "-s", help=f"{', '.join(INPUT_SCHEMES[:-1])} or {INPUT_SCHEMES[-1]}"
    ),
    docs: bool = typer.Option(False, "--docs", help="conll: one Doc per -DOCSTART- document"),
    n_sents: int = typer.Option(1, "--n-sents", "-n", min=1, help="Sentences per Doc"),
    strict: bool = typer.Option(
        False, "--strict", help="Fail on any invalid tag (so on an ambiguous auto-detected scheme)"
    ),
    lang: Optional[str] = typer.Option(
        None, "--lang", "-l", help="Vocab language [default: en for conll, zh for msra]"
    ),
    label_map: Optional[str] = typer.Option(
        None, "--label-map", help="Rename labels [default for msra: NR=PER,NS=LOC,NT=ORG]"
    ),
    quiet: bool = typer.Option(
        False, "--quiet", "-q", help="No progress bar (shown on stderr for large files)"
    ),
) -> None:
    """Convert a CoNLL or MSRA NER file to a .spacy (DocBin) file and print a summary."""
    try:
        mapping = parse_label_map(label_map) if label_map is not None else None
        output_path, stats = convert_file(
            input_format.lower(), input_path, output_dir, scheme=scheme, docs=docs,
            n_sents=n_sents, strict=strict, lang=lang, label_map=mapping, progress=not quiet,
        )
    except (ValueError, OSError) as err:
        _fail(err)
    typer.secho(f"\u2714 Wrote {stats.docs} docs to {output_path}", fg=typer.colors.GREEN)
    detected = " (auto-detected)" if stats.detection else " (given)"
    rows = [("scheme", f"{stats.scheme}{detected}")]
    if stats.detection:
        rows.append(("detected from", stats.detection))
    rows += [
        ("documents", stats.docs),
        ("sentences", stats.sentences),
        ("tokens", stats.tokens),
        ("entities", stats.n_entities),
    ]
    rows.extend((f"  {label}", count) for label, count in sorted(stats.entities.items()))
    rows.append(("repairs", stats.repairs))
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        typer.echo(f"  {name:<{width}}  {value}")
    if stats.ambiguous:
        typer.secho(
            f"\u26a0 Ambiguous tag scheme: no scheme fits every tag; {stats.scheme} was chosen "
            f"for the {stats.detection}. Give --scheme if the file uses another one (--strict "
            "fails on such a file).",
            fg=typer.colors.YELLOW,
        )
    if stats.repairs:
        shown = ", ".join(stats.repair_locations)
        more = ", ..." if stats.repairs > len(stats.repair_locations) else ""
        typer.secho(
            f"\u26a0 Repaired {stats.repairs} invalid tag sequence(s) by starting a new entity: "
            f"{shown}{more}",
            fg=typer.colors.YELLOW,
        )


def split_cli(
    input_path: Path = typer.Argument(
        ..., metavar="INPUT", help=".spacy file to split", exists=True, dir_okay=False
    ),
    output_dir: Path = typer.Argument(
        ..., metavar="OUTPUT_DIR", help="Where to write train.spacy and dev.spacy", file_okay=False
    ),
    dev_size: float = typer.Option(0.1, "--dev-size", help="Dev fraction (< 1) or count (>= 1)"),
    seed: int = typer.Option(0, "--seed", help="Random seed"),
) -> None:
    """Split a .spacy file into OUTPUT_DIR/train.spacy and OUTPUT_DIR/dev.spacy at random."""
    try:
        doc_list = list(DocBin().from_disk(input_path).get_docs(Vocab()))
        train, dev = split_docs(doc_list, dev_size=dev_size, seed=seed)
        output_dir.mkdir(parents=True, exist_ok=True)
        for name, part in (("train", train), ("dev", dev)):
            DocBin(docs=part, store_user_data=True).to_disk(output_dir / f"{name}.spacy")
    except (ValueError, OSError) as err:
        _fail(err)
    typer.secho(
        f"\u2714 Split {len(doc_list)} docs (seed {seed}): train {len(train)}, dev {len(dev)} "
        f"in {output_dir}",
        fg=typer.colors.GREEN,
    )


def _fail(err: Exception) -> NoReturn:
    """Print an error (no traceback) and exit with code 1."""
    typer.secho(f"\u2718 {err}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=1)


# ---------------------------------------------------------------------------------------------
# Internals: reading and parsing
# ---------------------------------------------------------------------------------------------


def _read(
    path: PathLike,
    parse: Callable[[Path, List[str], Dict[str, str], bool], List[List[_Sentence]]],
    label_map: Dict[str, str],
    vocab: Optional[Vocab],
    lang: str,
    progress: bool,
    **options,
) -> Tuple[List[Doc], ConversionStats]:
    """Read a file's lines, parse them into documents of sentences and build the Docs."""
    path = Path(path)
    lines = _read_lines(path)
    progress = progress and len(lines) >= PROGRESS_MIN_LINES
    documents = parse(path, lines, label_map, progress)
    vocab = vocab if vocab is not None else spacy.blank(lang).vocab
    return _to_docs(path, documents, vocab, progress=progress, **options)


def _check_grouping(docs: bool, n_sents: int) -> None:
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


def _progress(items: Sequence, desc: str, unit: str, show: bool) -> Iterable:
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


def _parse_tag(
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


def _column_counts(lines: List[str]) -> Tuple[int, int, int]:
    """(n_cols, n_lines, first_line): the column count (>= 2) of most token lines (the earliest
    on a tie), how many token lines have it and the first of them; (0, 0, 0) without any."""
    counts: CounterType[int] = Counter()
    first: Dict[int, int] = {}
    known: Dict[str, int] = {}
    for lineno, line in enumerate(lines, 1):
        n_cols = known.get(line)
        if n_cols is None:
            stripped = line.strip(" \t")
            cols = _COLUMNS.split(stripped) if stripped else []
            n_cols = 0 if not cols or cols[0] == DOCSTART else len(cols)
            known[line] = n_cols
        if n_cols >= 2:
            counts[n_cols] += 1
            first.setdefault(n_cols, lineno)
    if not counts:
        return 0, 0, 0
    n_cols = max(counts, key=lambda n: (counts[n], -first[n]))
    return n_cols, counts[n_cols], first[n_cols]


def _parse_conll(
    path: Path, lines: List[str], label_map: Dict[str, str], progress: bool
) -> List[List[_Sentence]]:
    """Documents (lists of sentences) of a column file (sentences before any DOCSTART included)."""
    n_cols, n_cols_lines, n_cols_line = _column_counts(lines)
    others = n_cols_lines - 1
    as_on = f"as on line {n_cols_line}" + (f" and {others:,} other line(s)" if others > 0 else "")
    documents: List[List[_Sentence]] = [[]]
    words: List[str] = []
    tags: List[Tag] = []
    first = 0
    tag_cache: Dict[str, Tag] = {}
    # Parsed lines: (word, tag), _BLANK or _DOCSTART. Only valid lines get in.
    cache: Dict[str, Union[Tuple[str, Tag], str]] = {}
    for lineno, line in enumerate(_progress(lines, f"Reading {path.name}", " lines", progress), 1):
        parsed = cache.get(line)
        if parsed is None:
            stripped = line.strip(" \t")
            cols = _COLUMNS.split(stripped) if stripped else []
            if not cols:
                parsed = _BLANK
            elif cols[0] == DOCSTART:
                parsed = _DOCSTART
            else:
                if len(cols) < 2:
                    raise ConversionError(
                        f"{path}:{lineno}: expected at least 2 columns (WORD ... TAG), "
                        f"found {len(cols)}: {stripped!r}"
                    )
                if len(cols) != n_cols:
                    hint = ""
                    if len(cols) > n_cols:
                        hint = " (a token containing a space? columns are split on spaces and tabs)"
                    raise ConversionError(
                        f"{path}:{lineno}: expected {n_cols} columns ({as_on}), "
                        f"found {len(cols)}: {stripped!r}{hint}"
                    )
                tag = tag_cache.get(cols[-1])
                if tag is None:
                    tag = _parse_tag(cols[-1], label_map, path, lineno, stripped, tag_cache)
                parsed = (cols[0], tag)
            cache[line] = parsed
        if parsed.__class__ is tuple:
            if not words:
                first = lineno
            words.append(parsed[0])
            tags.append(parsed[1])
            continue
        if words:
            documents[-1].append(_Sentence(words, tags, first))
            words, tags = [], []
        if parsed is _DOCSTART and documents[-1]:
            documents.append([])
    if words:
        documents[-1].append(_Sentence(words, tags, first))
    documents = [document for document in documents if document]
    if not documents:
        raise ConversionError(f"{path}: no tokens to convert: the file holds {_what(lines)}")
    return documents


def _parse_msra(
    path: Path, lines: List[str], label_map: Dict[str, str], progress: bool
) -> List[List[_Sentence]]:
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
    sentences: List[_Sentence] = []
    words: List[str] = []
    tags: List[Tag] = []
    first = 0
    tag_cache: Dict[str, Tag] = {}
    cache: Dict[str, Union[Tuple[str, Tag], str]] = {}  # valid lines: (char, tag) or _BLANK
    for lineno, line in enumerate(_progress(lines, f"Reading {path.name}", " lines", progress), 1):
        parsed = cache.get(line)
        if parsed is None:
            if not line.strip(" \t"):
                parsed = _BLANK
            else:
                if tab:
                    char, sep, tag_text = line.partition("\t")
                    tag_text = tag_text.strip(" \t")
                    ok = bool(sep) and bool(char) and " " not in tag_text and "\t" not in tag_text
                else:
                    cols = _COLUMNS.split(line.strip(" \t"))
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
                    tag = _parse_tag(tag_text, label_map, path, lineno, line, tag_cache)
                parsed = (char, tag)
            cache[line] = parsed
        if parsed is _BLANK:
            if words:
                sentences.append(_Sentence(words, tags, first))
                words, tags = [], []
            continue
        if not words:
            first = lineno
        words.append(parsed[0])
        tags.append(parsed[1])
    if words:
        sentences.append(_Sentence(words, tags, first))
    if not sentences:
        raise ConversionError(f"{path}: no characters to convert: the file holds {_what(lines)}")
    return [sentences]


def _what(lines: List[str]) -> str:
    """What a file without tokens holds, for the error message."""
    if not lines:
        return "no lines"
    if any(line.strip(" \t") for line in lines):
        return "only -DOCSTART- and blank lines"
    return "only blank lines"


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


# ---------------------------------------------------------------------------------------------
# Internals: Doc building
# ---------------------------------------------------------------------------------------------


def _read_sentence(
    sentence: _Sentence, scheme: str, path: Path
) -> Tuple[List[Tuple[int, int, str]], List[Tuple[int, str]]]:
    """Entity spans (start, end, label) of one sentence and its repairs (line, description)."""
    try:
        spans, repairs = read_tags(sentence.tags, scheme)
    except TagSchemeError as err:
        raise ConversionError(f"{path}:{sentence.first_line + err.index}: {err}") from None
    return spans, [(sentence.first_line + i, text) for i, text in repairs]


def _chunks(sentences: List[_Sentence], size: int) -> List[List[_Sentence]]:
    """Consecutive groups of `size` sentences (the last may be shorter)."""
    chunks = []
    for start in range(0, len(sentences), size):
        stop = start + size
        chunks.append(sentences[start:stop])
    return chunks


def _to_docs(
    path: Path,
    documents: List[List[_Sentence]],
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
    if docs:
        groups = documents
    else:
        groups = [chunk for document in documents for chunk in _chunks(document, n_sents)]
    out = []
    for group in _progress(groups, f"Building {path.name}", " docs", progress):
        words: List[str] = []
        sent_starts: List[bool] = []
        spans: List[Tuple[int, int, str]] = []
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
        token_spaces = [spaces] * len(words)
        token_spaces[-1] = False
        doc = Doc(vocab, words=words, spaces=token_spaces, sent_starts=sent_starts)
        doc.set_ents([Span(doc, s, e, label=label) for s, e, label in spans], default="outside")
        stats.entities.update(label for _, _, label in spans)
        stats.sentences += len(group)
        stats.tokens += len(words)
        out.append(doc)
    stats.docs = len(out)
    return out, stats

"""CoNLL-2003 style column files (word first, NER tag last; IOB1, IOB2/BIO, BIOES/BILUO).

A file of four columns is read as CoNLL-2003 lays them out, WORD POS CHUNK NER: the POS tags
become ``token.tag_`` and the chunks (IOB1 or IOB2 tags such as I-NP, read like entities) the
span group ``doc.spans["chunks"]``, for multi-task training (spaCy's ``tagger`` on the tags).
Files of other column counts keep only the words and the NER tags.

Columns are split on spaces or tabs. A wrong column count is an error naming file:line (the
expected count is that of most token lines, so a token containing a space is the line blamed),
as are an unknown tag prefix and a tag without a label. A file without any token is an error too.
"""
from collections import Counter
from pathlib import Path
from typing import Counter as CounterType
from typing import Dict, List, Optional, Tuple, Union

from spacy.tokens import Doc
from spacy.vocab import Vocab

from ..tag_schemes import Tag, split_tag
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

DOCSTART = "-DOCSTART-"
_DOCSTART = "<docstart>"  # parsed-line marker, compared by identity
POS_CHUNK_COLUMNS = 4  # WORD POS CHUNK NER


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
    RETURNS (Tuple[List[Doc], ConversionStats]): The Docs (sentence starts set; with 4 columns also
        token.tag_ and doc.spans["chunks"]) and the statistics.
    """
    check_grouping(docs, n_sents)
    return read_sentences_file(
        path, _parse_conll, label_map or {}, vocab, lang, progress,
        scheme=scheme, docs=docs, n_sents=n_sents, strict=strict, spaces=True,
    )


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
            cols = COLUMNS.split(stripped) if stripped else []
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
) -> List[List[Sentence]]:
    """Documents (lists of sentences) of a column file (sentences before any DOCSTART included)."""
    n_cols, n_cols_lines, n_cols_line = _column_counts(lines)
    others = n_cols_lines - 1
    as_on = f"as on line {n_cols_line}" + (f" and {others:,} other line(s)" if others > 0 else "")
    documents: List[List[Sentence]] = [[]]
    words: List[str] = []
    tags: List[Tag] = []
    first = 0
    pos: List[str] = []
    chunks: List[Tag] = []
    with_columns = n_cols == POS_CHUNK_COLUMNS
    tag_cache: Dict[str, Tag] = {}
    chunk_cache: Dict[str, Tag] = {}
    # Parsed lines: (word, tag[, pos, chunk]), BLANK or _DOCSTART. Only valid lines get in.
    cache: Dict[str, Union[Tuple, str]] = {}
    numbered = enumerate(iter_progress(lines, f"Reading {path.name}", " lines", progress), 1)
    for lineno, line in numbered:
        parsed = cache.get(line)
        if parsed is None:
            stripped = line.strip(" \t")
            cols = COLUMNS.split(stripped) if stripped else []
            if not cols:
                parsed = BLANK
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
                    tag = parse_tag(cols[-1], label_map, path, lineno, stripped, tag_cache)
                if with_columns:
                    chunk = chunk_cache.get(cols[2])
                    if chunk is None:
                        chunk = _parse_chunk(cols[2], path, lineno, stripped, chunk_cache)
                    parsed = (cols[0], tag, cols[1], chunk)
                else:
                    parsed = (cols[0], tag)
            cache[line] = parsed
        if parsed.__class__ is tuple:
            if not words:
                first = lineno
            words.append(parsed[0])
            tags.append(parsed[1])
            if with_columns:
                pos.append(parsed[2])
                chunks.append(parsed[3])
            continue
        if words:
            documents[-1].append(_sentence(words, tags, first, pos, chunks, with_columns))
            words, tags, pos, chunks = [], [], [], []
        if parsed is _DOCSTART and documents[-1]:
            documents.append([])
    if words:
        documents[-1].append(_sentence(words, tags, first, pos, chunks, with_columns))
    documents = [document for document in documents if document]
    if not documents:
        raise ConversionError(
            f"{path}: no tokens to convert: the file holds {describe_empty(lines)}"
        )
    return documents


def _sentence(
    words: List[str], tags: List[Tag], first: int, pos: List[str], chunks: List[Tag],
    with_columns: bool,
) -> Sentence:
    if with_columns:
        return Sentence(words, tags, first, pos=pos, chunks=chunks)
    return Sentence(words, tags, first)


def _parse_chunk(tag: str, path: Path, lineno: int, line: str, cache: Dict[str, Tag]) -> Tag:
    """Parse a chunk tag (I-NP, B-VP, O) into (prefix, label)."""
    try:
        cache[tag] = split_tag(tag)
    except ValueError as err:
        raise ConversionError(
            f"{path}:{lineno}: chunk column (the third of WORD POS CHUNK NER): {err}, "
            f"in line {line!r}"
        ) from None
    return cache[tag]

"""Inputs, shards and outputs of `annotate`: everything that both engines share.

Records are numbered across all input files in order (blank lines of .jsonl and .txt files are
not records). Shard k holds the records [k * shard_size, (k + 1) * shard_size), so the shard
boundaries depend only on the inputs and the shard size, and a rerun finds the same shards. A
shard is written to a temporary file and renamed when complete (its errors file first), so a
shard's output file exists only when the whole shard is done: a rerun skips those and redoes
the rest.

Within a shard the records are cut into chunks of at most `batch_size` annotatable records; a
chunk is what one `nlp.pipe` batch sees, in both engines, so both compute the same numbers.
"""
import glob
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

from .errors import AnnotateError

INPUT_SUFFIXES = (".jsonl", ".txt", ".parquet")
OUTPUT_FORMATS = ("jsonl", "parquet")
MANIFEST = "annotate.json"
SUMMARY = "summary.json"
ERRORS_DIR = "errors"
# spaCy's default nlp.max_length: longer texts are reported as bad records
MAX_LENGTH = 1_000_000
# Settings that must match for a rerun to resume into an output folder.
_MANIFEST_KEYS = ("inputs", "text_key", "shard_size", "format", "n_records", "model_fingerprint")


@dataclass
class Record:
    """One input record, parsed: fields and text, or the reason it can't be annotated."""

    index: int
    source: str
    line: int
    fields: Optional[Dict[str, Any]] = None
    text: Optional[str] = None
    error: Optional[str] = None

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "Record":
        return cls(**data)

    def error_entry(self, reason: Optional[str] = None) -> Dict[str, Any]:
        """The line of the errors file: where the record is, and why it failed."""
        return {
            "file": self.source,
            "line": self.line,
            "index": self.index,
            "reason": reason or self.error,
        }


@dataclass
class Shard:
    """Records [start, start + size) of the inputs, and where the first one is."""

    shard_id: int
    start: int
    size: int
    file_index: int
    # byte offset of the first record's line (.jsonl/.txt) or its row number (.parquet)
    offset: int
    line: int

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "Shard":
        return cls(**data)


def expand_inputs(patterns: Sequence[Union[str, Path]]) -> List[Path]:
    """Files from paths and glob patterns, in the order given (each glob sorted), once each.

    RAISES (AnnotateError): A pattern that matches nothing, a folder, or an unsupported suffix.
    """
    paths: List[Path] = []
    for pattern in patterns:
        pattern = str(pattern)
        if glob.has_magic(pattern):
            matches = sorted(glob.glob(pattern, recursive=True))
            if not matches:
                raise AnnotateError(f"No input file matches {pattern!r}")
        else:
            matches = [pattern]
        for match in matches:
            path = Path(match)
            if not path.exists():
                raise AnnotateError(f"Input file not found: {path}")
            if path.is_dir():
                raise AnnotateError(f"Input is a folder, not a file: {path} (use a glob)")
            if path.suffix.lower() not in INPUT_SUFFIXES:
                raise AnnotateError(
                    f"Unsupported input file {path}: expected one of "
                    f"{', '.join(INPUT_SUFFIXES)}"
                )
            if path not in paths:
                paths.append(path)
    if not paths:
        raise AnnotateError("No input files given")
    return paths


def _is_parquet(path: Path) -> bool:
    return path.suffix.lower() == ".parquet"


def _parquet_file(path: Path):
    try:
        import pyarrow.parquet as pq
    except ImportError as err:
        raise AnnotateError(
            f"Reading {path} needs pyarrow: pip install 'spacy-bert-crf[ray]' or pyarrow"
        ) from err
    try:
        return pq.ParquetFile(path)
    except Exception as err:  # pyarrow raises ArrowInvalid and OSError subclasses
        raise AnnotateError(f"Can't read the Parquet file {path}: {err}") from err


def _iter_lines(path: Path, offset: int = 0, line: int = 1) -> Iterator[Tuple[int, int, bytes]]:
    """(byte offset, line number, line without its newline) of each non-blank line."""
    with path.open("rb") as file_:
        file_.seek(offset)
        for raw in file_:
            if raw.strip():
                yield offset, line, raw.rstrip(b"\r\n")
            offset += len(raw)
            line += 1


def plan_shards(paths: Sequence[Path], shard_size: int) -> List[Shard]:
    """One pass over the inputs (no parsing): where each shard starts, and its size.

    RETURNS (List[Shard]): The shards, in order; their sizes add up to the number of records.
    """
    if shard_size < 1:
        raise AnnotateError(f"shard_size must be at least 1, got {shard_size}")
    shards: List[Shard] = []
    index = 0
    for file_index, path in enumerate(paths):
        if _is_parquet(path):
            n_rows = _parquet_file(path).metadata.num_rows
            row = 0
            while row < n_rows:
                if index % shard_size == 0:
                    shards.append(Shard(len(shards), index, 0, file_index, row, row + 1))
                take = min(n_rows - row, shard_size - index % shard_size)
                shards[-1].size += take
                row += take
                index += take
        else:
            for offset, line, _ in _iter_lines(path):
                if index % shard_size == 0:
                    shards.append(Shard(len(shards), index, 0, file_index, offset, line))
                shards[-1].size += 1
                index += 1
    return shards


def _iter_raw(
    paths: Sequence[Path], shard: Shard
) -> Iterator[Tuple[str, int, Union[bytes, Dict[str, Any]]]]:
    """(source, line, raw line or Parquet row) of the shard's records."""
    left = shard.size
    for file_index in range(shard.file_index, len(paths)):
        path = paths[file_index]
        first = file_index == shard.file_index
        if _is_parquet(path):
            row = shard.offset if first else 0
            for values in _iter_parquet_rows(path, row):
                if left == 0:
                    return
                row += 1
                yield str(path), row, values
                left -= 1
        else:
            offset, line = (shard.offset, shard.line) if first else (0, 1)
            for _, line_no, raw in _iter_lines(path, offset, line):
                if left == 0:
                    return
                yield str(path), line_no, raw
                left -= 1
        if left == 0:
            return


def _iter_parquet_rows(path: Path, start: int) -> Iterator[Dict[str, Any]]:
    parquet = _parquet_file(path)
    metadata = parquet.metadata
    first_group, skip = 0, start
    while first_group < metadata.num_row_groups:
        n_rows = metadata.row_group(first_group).num_rows
        if skip < n_rows:
            break
        skip -= n_rows
        first_group += 1
    groups = list(range(first_group, metadata.num_row_groups))
    if not groups:
        return
    for batch in parquet.iter_batches(batch_size=1024, row_groups=groups):
        rows = batch.to_pylist()
        if skip:
            rows, skip = rows[skip:], max(0, skip - len(rows))
        yield from rows


def parse_record(
    index: int,
    source: str,
    line: int,
    raw: Union[bytes, Dict[str, Any]],
    text_key: str,
    max_length: int = MAX_LENGTH,
) -> Record:
    """A raw line or row as a Record; a bad one gets its reason in Record.error."""
    record = Record(index, source, line)
    if isinstance(raw, dict):
        fields: Any = raw
    elif source.lower().endswith(".txt"):
        try:
            text = raw.decode("utf8")
        except UnicodeDecodeError as err:
            record.error = f"not UTF-8 ({err.reason} at byte {err.start})"
            return record
        fields = {"file": source, "line": line, text_key: text}
    else:
        try:
            fields = json.loads(raw)
        except UnicodeDecodeError as err:
            record.error = f"not UTF-8 ({err.reason} at byte {err.start})"
            return record
        except ValueError as err:
            record.error = f"not JSON ({err})"
            return record
    if not isinstance(fields, dict):
        record.error = f"not a JSON object but {type(fields).__name__}"
        return record
    if text_key not in fields:
        record.error = f"no {text_key!r} field"
        return record
    text = fields[text_key]
    if not isinstance(text, str):
        record.error = f"{text_key!r} is {type(text).__name__}, not a string"
    elif "\x00" in text:
        record.error = f"NUL byte in {text_key!r} at character {text.index(chr(0))}"
    elif len(text) > max_length:
        record.error = f"{text_key!r} is too long ({len(text)} > {max_length} characters)"
    else:
        record.fields, record.text = fields, text
    return record


def read_shard(
    paths: Sequence[Path], shard: Shard, text_key: str, max_length: int = MAX_LENGTH
) -> Iterator[Record]:
    """The shard's records, parsed, in order."""
    raws = _iter_raw(paths, shard)
    for index, (source, line, raw) in enumerate(raws, shard.start):
        yield parse_record(index, source, line, raw, text_key, max_length)


def iter_chunks(records: Iterable[Record], batch_size: int) -> Iterator[List[Record]]:
    """Consecutive records with at most batch_size annotatable ones each (bad ones ride along)."""
    chunk: List[Record] = []
    n_good = 0
    for record in records:
        if record.error is None:
            if n_good == batch_size:
                yield chunk
                chunk, n_good = [], 0
            n_good += 1
        chunk.append(record)
    if chunk:
        yield chunk


# ---------------------------------------------------------------------------------- output
def entity_dicts(doc, spans_keys: Sequence[str]) -> List[Dict[str, Any]]:
    """doc.ents as dicts; confidence from the crf_ner span groups, None for other entities."""
    confidences: Dict[Tuple[int, int, str], float] = {}
    for key in spans_keys:
        group = doc.spans.get(key)
        if group is None:
            continue
        scores = group.attrs.get("scores")
        if scores is None:
            continue
        for span, score in zip(group, scores):
            confidences[(span.start_char, span.end_char, span.label_)] = float(score)
    entities = []
    for ent in doc.ents:
        confidence = confidences.get((ent.start_char, ent.end_char, ent.label_))
        entities.append(
            {
                "start": ent.start_char,
                "end": ent.end_char,
                "label": ent.label_,
                "text": ent.text,
                "confidence": None if confidence is None else round(confidence, 4),
            }
        )
    return entities


def crf_spans_keys(nlp) -> List[str]:
    """The span group keys where the pipeline's crf_ner components keep their confidences."""
    keys = []
    for name in nlp.pipe_names:
        if nlp.get_pipe_meta(name).factory == "crf_ner":
            key = getattr(nlp.get_pipe(name), "spans_key", None)
            if key:
                keys.append(key)
    return keys


def output_record(record: Record, entities: List[Dict[str, Any]]) -> Dict[str, Any]:
    """The input's fields (ids, text, the rest) and its entities."""
    fields = dict(record.fields or {})
    fields["entities"] = entities
    return fields


def shard_name(shard_id: int, fmt: str) -> str:
    return f"shard-{shard_id:05d}.{fmt}"


def shard_done(output: Path, shard_id: int, fmt: str) -> bool:
    return (output / shard_name(shard_id, fmt)).is_file()


def _replace(tmp: Path, final: Path) -> None:
    os.replace(tmp, final)


def write_shard(
    output: Path,
    shard_id: int,
    fmt: str,
    records: List[Dict[str, Any]],
    errors: List[Dict[str, Any]],
) -> None:
    """Write one finished shard: its errors file first, then its output, each atomically."""
    errors_path = output / ERRORS_DIR / f"shard-{shard_id:05d}.jsonl"
    if errors:
        errors_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = errors_path.with_name(f".{errors_path.name}.tmp")
        with tmp.open("w", encoding="utf8") as file_:
            for entry in errors:
                file_.write(json.dumps(entry, ensure_ascii=False) + "\n")
        _replace(tmp, errors_path)
    elif errors_path.exists():
        errors_path.unlink()  # left by an interrupted run of this shard
    final = output / shard_name(shard_id, fmt)
    tmp = output / f".{final.name}.tmp"
    if fmt == "parquet":
        _write_parquet(tmp, records)
    else:
        with tmp.open("w", encoding="utf8") as file_:
            for record in records:
                file_.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
    _replace(tmp, final)


_ENTITY_FIELDS = (("start", "int64"), ("end", "int64"), ("label", "string"), ("text", "string"),
                  ("confidence", "float64"))


def _write_parquet(path: Path, records: List[Dict[str, Any]]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    entity_type = pa.list_(
        pa.struct([(name, getattr(pa, kind)()) for name, kind in _ENTITY_FIELDS])
    )
    keys: Dict[str, None] = {}
    for record in records:
        keys.update((key, None) for key in record if key != "entities")
    columns = {}
    for key in keys:
        values = [record.get(key) for record in records]
        try:
            columns[key] = pa.array(values)
        except (pa.ArrowException, TypeError, ValueError):  # mixed types: keep them as JSON
            columns[key] = pa.array([json.dumps(v, default=str) for v in values])
    columns["entities"] = pa.array([r["entities"] for r in records], type=entity_type)
    pq.write_table(pa.table(columns), path)


def count_errors(output: Path, shard_id: int) -> int:
    path = output / ERRORS_DIR / f"shard-{shard_id:05d}.jsonl"
    if not path.exists():
        return 0
    with path.open("rb") as file_:
        return sum(1 for line in file_ if line.strip())


def check_manifest(output: Path, manifest: Dict[str, Any]) -> bool:
    """Write the manifest of a new output folder, or check that a rerun matches it.

    RETURNS (bool): Whether the folder already had this job's manifest (a rerun).
    RAISES (AnnotateError): The folder holds shards of a different job.
    """
    path = output / MANIFEST
    if path.exists():
        try:
            previous = json.loads(path.read_text(encoding="utf8"))
        except ValueError as err:
            raise AnnotateError(f"Can't read {path}: {err}") from err
        changed = [k for k in _MANIFEST_KEYS if previous.get(k) != manifest.get(k)]
        if changed:
            raise AnnotateError(
                f"{output} holds the output of a different annotate job ({', '.join(changed)} "
                f"changed, see {path}): use a new output folder, or delete this one"
            )
        return True
    if output.exists() and any(output.glob("shard-*")):
        raise AnnotateError(f"{output} holds shards but no {MANIFEST}: use a new output folder")
    output.mkdir(parents=True, exist_ok=True)
    tmp = output / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf8")
    _replace(tmp, path)
    return False

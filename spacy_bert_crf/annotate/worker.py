"""What a worker does with a chunk of records: load the pipeline once, annotate, build outputs.

Shared by the local engine (in the driver, or in each worker process) and the Ray actors.

Memory stays flat over any input: every RELEASE_EVERY chunks a process annotates, the heap memory
freed by the pipeline is handed back to the operating system (`release_memory`). Without it, glibc's
allocator keeps the freed space of the transformer's variously sized tensors fragmented, and a
long job's resident memory grows with the input (measured: plain nlp.pipe from 558 to 945 MiB
over 21,000 CoNLL sentences; with regular releases it stays at the size after loading).
"""
import ctypes
import ctypes.util
import functools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

from .errors import AnnotateError
from .io import Record, crf_spans_keys, entity_dicts, output_record


# Chunks a process annotates between two releases of freed memory (each worker counts its own:
# the chunks of a shard may go to different workers).
RELEASE_EVERY = 4
_chunks_since_release = 0


@dataclass
class ChunkResult:
    """The annotation of one chunk: output records and error entries, in input order."""

    shard_id: int
    seq: int
    n_chunks: int
    outputs: List[Dict[str, Any]] = field(default_factory=list)
    errors: List[Dict[str, Any]] = field(default_factory=list)
    n_words: int = 0


def load_pipeline(model: Union[str, Path], gpu_id: int = -1, threads: Optional[int] = None):
    """spacy.load on the CPU or the given GPU, with an error that says what went wrong.

    threads (Optional[int]): torch threads in this process (None: torch's default).
    RAISES (AnnotateError): No such pipeline, it can't be loaded, or the GPU can't be used.
    """
    import spacy

    if gpu_id >= 0:
        try:
            spacy.require_gpu(gpu_id)
        except Exception as err:  # thinc raises ValueError without CUDA, cupy its own errors
            raise AnnotateError(f"Can't use GPU {gpu_id}: {err}") from err
    if threads is not None:
        set_torch_threads(threads)
    from ..evaluate import load_model

    return load_model(model, error=AnnotateError)


def annotate_chunk(
    nlp, records: List[Record], shard_id: int, seq: int, n_chunks: int
) -> ChunkResult:
    """Run the pipeline over the chunk's good records as one batch; a record the pipeline fails
    on becomes an error entry (the batch is then redone one record at a time)."""
    result = ChunkResult(shard_id, seq, n_chunks)
    good = [r for r in records if r.error is None]
    spans_keys = crf_spans_keys(nlp)
    docs: List[Any]
    try:
        docs = list(nlp.pipe([r.text for r in good], batch_size=max(1, len(good))))
    except Exception:  # find the record(s) at fault; the others are annotated
        docs = []
        for record in good:
            try:
                docs.append(nlp(record.text))
            except Exception as err:
                docs.append(f"pipeline error: {type(err).__name__}: {err}")
    by_index = dict(zip((r.index for r in good), docs))
    for record in records:
        doc: Any = by_index.get(record.index)
        if record.error is not None or isinstance(doc, str):
            result.errors.append(record.error_entry(record.error or doc))
        else:
            result.outputs.append(output_record(record, entity_dicts(doc, spans_keys)))
            result.n_words += len(doc)
    global _chunks_since_release
    _chunks_since_release += 1
    if _chunks_since_release >= RELEASE_EVERY:
        release_memory()
        _chunks_since_release = 0
    return result


@functools.lru_cache(maxsize=None)
def _malloc_trim() -> Any:
    """glibc's malloc_trim, or None (another C library, or none found)."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    trim = getattr(libc, "malloc_trim", None)
    if trim is not None:
        trim.argtypes = [ctypes.c_size_t]
        trim.restype = ctypes.c_int
    return trim


def release_memory() -> bool:
    """Hand the heap memory this process has freed back to the operating system (glibc's
    malloc_trim(0)), so that fragmentation cannot make a long job's memory grow.

    RETURNS (bool): Whether memory could be released this way (False where the C library has
        no malloc_trim, e.g. on macOS, whose allocator returns memory by itself).
    """
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


def set_torch_threads(threads: int) -> None:
    """torch's intra-op threads in this process (nothing without torch)."""
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(threads)


def cores_per_worker(workers: int) -> int:
    """Split this machine's cores between the workers (at least one thread each)."""
    return max(1, (os.cpu_count() or 1) // workers)

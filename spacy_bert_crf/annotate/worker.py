"""What a worker does with a chunk of records: load the pipeline once, annotate, build outputs.

Shared by the local engine (in the driver, or in each worker process) and the Ray actors.
"""
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

from .errors import AnnotateError
from .io import Record, crf_spans_keys, entity_dicts, output_record


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
        try:
            import torch

            torch.set_num_threads(threads)
        except ImportError:
            pass
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
    return result


def threads_per_worker(workers: int) -> int:
    """Split this machine's cores between the workers (at least one thread each)."""
    return max(1, (os.cpu_count() or 1) // workers)

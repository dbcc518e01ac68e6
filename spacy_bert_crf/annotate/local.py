"""The local engine: the driver reads the shards; one worker annotates in this process, N
workers in N processes (spawned, each loads the pipeline once).

Why not `nlp.pipe(n_process=N)`: it sends every Doc back to the driver as bytes, with
spacy-transformers' `doc._.trf_data` (the transformer's output tensors) in its user data, and
the driver then rebuilds each Doc only to read its entities. Here a worker sends back the output
records, which are small. At most 2 chunks per worker are in flight, so memory stays flat.
"""
import multiprocessing
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, Deque, Iterator, List, Optional, Sequence, Tuple, Union

from .errors import AnnotateError
from .io import MAX_LENGTH, Record, Shard, iter_chunks, read_shard
from .worker import (ChunkResult, annotate_chunk, cores_per_worker, load_pipeline,
                     set_torch_threads)

_nlp: Any = None  # the pipeline of a worker process, loaded by its first task
_settings: Tuple[str, int, Optional[int]] = ("", -1, None)


def iter_shard_chunks(
    paths: Sequence[Path], shards: Sequence[Shard], text_key: str, batch_size: int,
    max_length: int = MAX_LENGTH,
) -> Iterator[Tuple[int, int, int, List[Record]]]:
    """(shard id, seq, number of chunks in the shard, records) of each chunk, in order."""
    for shard in shards:
        chunks = list(iter_chunks(read_shard(paths, shard, text_key, max_length), batch_size))
        for seq, chunk in enumerate(chunks):
            yield shard.shard_id, seq, len(chunks), chunk


def run_local(
    model: Union[str, Path],
    paths: Sequence[Path],
    shards: Sequence[Shard],
    *,
    text_key: str,
    batch_size: int,
    workers: int,
    gpu_id: int,
    threads_per_worker: Optional[int] = None,
    nlp: Any = None,
) -> Iterator[ChunkResult]:
    """Annotate the shards' chunks; results come in input order. threads_per_worker: torch
    threads of each worker (None: the cores split between the workers; one worker in this
    process then keeps torch's default)."""
    chunks = iter_shard_chunks(paths, shards, text_key, batch_size)
    if workers <= 1:
        if nlp is None:
            nlp = load_pipeline(model, gpu_id, threads_per_worker)
        elif threads_per_worker is not None:
            set_torch_threads(threads_per_worker)
        for shard_id, seq, n_chunks, records in chunks:
            yield annotate_chunk(nlp, records, shard_id, seq, n_chunks)
        return
    context = multiprocessing.get_context("spawn")
    threads = threads_per_worker or cores_per_worker(workers)
    executor = ProcessPoolExecutor(
        max_workers=workers, mp_context=context, initializer=_init_worker,
        initargs=(str(model), gpu_id, threads),
    )
    # the first task loads the pipeline: an error there reaches the driver with its message
    in_flight: Deque["Future[ChunkResult]"] = deque()
    try:
        for shard_id, seq, n_chunks, records in chunks:
            in_flight.append(executor.submit(_annotate, records, shard_id, seq, n_chunks))
            if len(in_flight) >= 2 * workers:
                yield _result(in_flight.popleft())
        while in_flight:
            yield _result(in_flight.popleft())
    finally:
        for future in in_flight:
            future.cancel()
        executor.shutdown(wait=True, cancel_futures=True)


def _result(future: "Future[ChunkResult]") -> ChunkResult:
    try:
        return future.result()
    except BrokenProcessPool as err:
        raise AnnotateError(
            f"A worker process died ({err}); finished shards are kept, rerun to resume"
        ) from err


def _init_worker(model: str, gpu_id: int, threads: Optional[int]) -> None:
    global _settings
    _settings = (model, gpu_id, threads)


def _annotate(records: List[Record], shard_id: int, seq: int, n_chunks: int) -> ChunkResult:
    global _nlp
    if _nlp is None:
        import spacy_bert_crf  # noqa: F401  (the plugin's registrations in this process)

        _nlp = load_pipeline(*_settings)
    return annotate_chunk(_nlp, records, shard_id, seq, n_chunks)

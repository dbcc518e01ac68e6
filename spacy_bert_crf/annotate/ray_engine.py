"""The Ray engine: the same job on Ray Data (`pip install spacy-bert-crf[ray]`).

The dataset starts from the shards still to do (one row each); a read stage turns each shard
into its chunks (the same records and chunks as the local engine), an actor pool annotates them
(each actor loads the pipeline once), and the driver writes each shard when all its chunks are
back, with the same writer as the local engine. So the output, the errors files and resuming
are the same as locally. On a multi-node cluster the workers read the input files by their
paths: put them on storage every node sees (the output is written by the driver).
"""
import pickle
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Union

from .errors import AnnotateError
from .io import MAX_LENGTH, Shard, iter_chunks, read_shard
from .worker import ChunkResult, annotate_chunk, load_pipeline

# A read task is mostly I/O and short: it must not wait for a CPU that the annotating actors
# hold (with --workers x --cpus-per-worker = every CPU, a read task needing one would never run).
# Needing no CPU, nothing else bounds how many read tasks run at once, and the first shard came
# later the larger the input (60 s into a 100k-word run, 175 s into a 1M-word one, 2 CPUs): at
# most this many run at a time per worker, so that reading keeps pace with the annotating.
READ_CPUS = 0
READ_TASKS_PER_WORKER = 1


def run_ray(
    model: Union[str, Path],
    paths: Sequence[Path],
    shards: Sequence[Shard],
    *,
    text_key: str,
    batch_size: int,
    workers: int,
    address: Optional[str] = None,
    gpus_per_worker: float = 0.0,
    cpus_per_worker: float = 1.0,
) -> Iterator[ChunkResult]:
    """Annotate the shards' chunks on Ray; results come in any order (the driver regroups)."""
    try:
        import ray
        import ray.data
    except ImportError as err:
        raise AnnotateError(
            "--engine ray needs Ray Data: pip install 'spacy-bert-crf[ray]'"
        ) from err
    if not shards:
        return
    if not ray.is_initialized():
        try:
            ray.init(address=address, log_to_driver=False, configure_logging=False)
        except (ConnectionError, RuntimeError, ValueError) as err:
            where = f"at {address}" if address else "locally"
            raise AnnotateError(f"Can't start or reach a Ray cluster {where}: {err}") from err
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    dataset: Any = ray.data.from_items(
        [{"shard": pickle.dumps(shard)} for shard in shards], override_num_blocks=len(shards)
    )
    read_chunks: Any = _read_chunks
    dataset = dataset.flat_map(
        read_chunks,
        fn_kwargs={"paths": [str(p) for p in paths], "text_key": text_key,
                   "batch_size": batch_size},
        num_cpus=READ_CPUS,
        compute=ray.data.TaskPoolStrategy(size=READ_TASKS_PER_WORKER * workers),
    )
    dataset = dataset.map_batches(
        _RayAnnotator,
        fn_constructor_kwargs={"model": str(model), "use_gpu": gpus_per_worker > 0},
        batch_size=1,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=workers),
        num_cpus=cpus_per_worker,
        num_gpus=gpus_per_worker,
    )
    try:
        for row in dataset.iter_rows():
            yield pickle.loads(row["result"])
    except ray.exceptions.RayError as err:
        raise AnnotateError(
            f"The Ray job failed (finished shards are kept, rerun to resume): {err}"
        ) from err


def _read_chunks(
    row: Dict[str, Any], *, paths: List[str], text_key: str, batch_size: int
) -> List[Dict[str, Any]]:
    shard: Shard = pickle.loads(row["shard"])
    records = read_shard([Path(p) for p in paths], shard, text_key, MAX_LENGTH)
    chunks = list(iter_chunks(records, batch_size))
    return [
        {"task": pickle.dumps((shard.shard_id, seq, len(chunks), chunk))}
        for seq, chunk in enumerate(chunks)
    ]


class _RayAnnotator:
    """An actor of the pool: loads the pipeline once, then annotates chunk after chunk."""

    def __init__(self, model: str, use_gpu: bool) -> None:
        import spacy_bert_crf  # noqa: F401  (the plugin's registrations in this worker)

        # Ray gives the actor its GPU as device 0 (CUDA_VISIBLE_DEVICES) and sets
        # OMP_NUM_THREADS to the actor's CPUs, which torch follows.
        self.nlp = load_pipeline(model, 0 if use_gpu else -1)

    def __call__(self, batch: Dict[str, Any]) -> Dict[str, List[bytes]]:
        results = []
        for task in batch["task"]:
            shard_id, seq, n_chunks, records = pickle.loads(task)
            result = annotate_chunk(self.nlp, records, shard_id, seq, n_chunks)
            results.append(pickle.dumps(result))
        return {"result": results}

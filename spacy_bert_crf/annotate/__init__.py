"""Annotate corpora with a pipeline, streaming, in resumable shards, locally or on Ray.

    from spacy_bert_crf.annotate import annotate
    summary = annotate("training/model-best", ["docs/*.jsonl"], "annotated/")

See io.py for the shards and the files written, local.py and ray_engine.py for the engines.
"""
import hashlib
import json
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Union

from .errors import AnnotateError
from .io import (
    ERRORS_DIR,
    OUTPUT_FORMATS,
    SUMMARY,
    Shard,
    check_manifest,
    count_errors,
    expand_inputs,
    plan_shards,
    shard_done,
    write_shard,
)
from .worker import ChunkResult

__all__ = ["AnnotateError", "annotate", "ENGINES"]

ENGINES = ("local", "ray")


def annotate(
    model: Union[str, Path],
    inputs: Sequence[Union[str, Path]],
    output: Union[str, Path],
    *,
    text_key: str = "text",
    output_format: str = "jsonl",
    shard_size: int = 1000,
    batch_size: int = 64,
    workers: int = 1,
    gpu_id: int = -1,
    engine: str = "local",
    address: Optional[str] = None,
    gpus_per_worker: float = 0.0,
    cpus_per_worker: float = 1.0,
    threads_per_worker: Optional[int] = None,
    progress: bool = True,
    nlp: Any = None,
    on_shard: Optional[Callable[[int], None]] = None,
) -> Dict[str, Any]:
    """Annotate every record of the inputs with the pipeline's entities, in shards under output.

    model (Union[str, Path]): A pipeline folder or an installed pipeline package.
    inputs (Sequence[Union[str, Path]]): .jsonl, .txt (a document per line) or .parquet files,
        or glob patterns.
    output (Union[str, Path]): The output folder: shard-NNNNN.{jsonl,parquet}, errors/ (bad
        records, per shard), annotate.json (the job's settings) and summary.json.
    text_key (str): The field with the text (.jsonl and .parquet).
    output_format (str): "jsonl" or "parquet".
    shard_size (int): Records per shard (the unit that a rerun skips when finished).
    batch_size (int): Records per nlp.pipe batch.
    workers (int): Processes (local) or actors (ray) that annotate.
    gpu_id (int): GPU of the local engine, or -1 for the CPU.
    engine (str): "local" or "ray".
    address (Optional[str]): Ray cluster address ("auto", "ray://host:10001"); None starts a
        local Ray instance.
    gpus_per_worker (float): GPUs of each Ray actor.
    cpus_per_worker (float): CPUs of each Ray actor (Ray gives an actor as many torch threads).
    threads_per_worker (Optional[int]): torch threads of each local worker; None: the
        machine's cores split between the workers (one worker: torch's default, all cores).
    progress (bool): Show a progress bar (docs/s, words/s, ETA) on stderr.
    nlp (Any): The loaded pipeline, for the local engine with one worker (model is then only
        recorded).
    on_shard (Optional[Callable[[int], None]]): Called with each shard id once it is written.
    RETURNS (Dict[str, Any]): The summary (also written to summary.json): records in,
        annotated and failed (in = annotated + failed), shards written and skipped, words,
        seconds, docs and words per second.
    RAISES (AnnotateError): Bad arguments, inputs, output folder or pipeline.
    """
    if engine not in ENGINES:
        raise AnnotateError(f"Unknown engine {engine!r}: expected one of {', '.join(ENGINES)}")
    if output_format not in OUTPUT_FORMATS:
        raise AnnotateError(
            f"Unknown output format {output_format!r}: expected one of {', '.join(OUTPUT_FORMATS)}"
        )
    sizes = [("batch_size", batch_size), ("workers", workers)]
    if threads_per_worker is not None:
        sizes.append(("threads_per_worker", threads_per_worker))
    for name, value in sizes:
        if value < 1:
            raise AnnotateError(f"{name} must be at least 1, got {value}")
    if nlp is None:
        _check_model(model)
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise AnnotateError(f"Output is not a folder: {output}")
    paths = expand_inputs(inputs)
    shards = plan_shards(paths, shard_size)
    n_records = sum(shard.size for shard in shards)
    manifest = {
        "inputs": [str(p) for p in paths],
        "text_key": text_key,
        "shard_size": shard_size,
        "format": output_format,
        "n_records": n_records,
        "model": str(model),
        "model_fingerprint": _model_fingerprint(model, nlp),
    }
    check_manifest(output, manifest)
    todo = [s for s in shards if not shard_done(output, s.shard_id, output_format)]
    for stale in output.glob(".*.tmp"):
        stale.unlink()
    for stale in (output / ERRORS_DIR).glob(".*.tmp"):
        stale.unlink()
    results: Iterator[ChunkResult]
    if engine == "ray":
        from .ray_engine import run_ray

        results = run_ray(
            model, paths, todo, text_key=text_key, batch_size=batch_size, workers=workers,
            address=address, gpus_per_worker=gpus_per_worker, cpus_per_worker=cpus_per_worker,
        )
    else:
        from .local import run_local

        results = run_local(
            model, paths, todo, text_key=text_key, batch_size=batch_size, workers=workers,
            gpu_id=gpu_id, threads_per_worker=threads_per_worker, nlp=nlp,
        )
    start = time.perf_counter()
    stats = _write_results(results, todo, output, output_format, progress, on_shard)
    seconds = time.perf_counter() - start
    n_failed = sum(count_errors(output, s.shard_id) for s in shards)
    summary = {
        "in": n_records,
        "annotated": n_records - n_failed,
        "failed": n_failed,
        "shards": len(shards),
        "shards_written": len(todo),
        "shards_skipped": len(shards) - len(todo),
        "run": {
            "in": stats["in"],
            "annotated": stats["annotated"],
            "failed": stats["failed"],
            "words": stats["words"],
            "seconds": round(seconds, 3),
            "docs_per_second": round(stats["in"] / seconds, 1) if seconds else None,
            "words_per_second": round(stats["words"] / seconds, 1) if seconds else None,
        },
        "engine": engine,
        "workers": workers,
        "threads_per_worker": threads_per_worker,
        "output": str(output),
        "errors": str(output / ERRORS_DIR),
    }
    (output / SUMMARY).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf8")
    return summary


def _model_fingerprint(model: Union[str, Path], nlp: Any) -> str:
    """What tells pipelines apart: a folder's config.cfg and meta.json (whose scores change
    with each training), a package's name and version, or a loaded pipeline's meta."""
    digest = hashlib.sha256()
    path = Path(model)
    if nlp is not None:
        digest.update(json.dumps(nlp.meta, sort_keys=True, default=str).encode("utf8"))
    elif path.is_dir():
        for name in ("config.cfg", "meta.json"):
            if (path / name).is_file():
                digest.update((path / name).read_bytes())
    else:
        import spacy

        digest.update(f"{model}=={spacy.util.get_package_version(str(model))}".encode("utf8"))
    return digest.hexdigest()[:16]


def _check_model(model: Union[str, Path]) -> None:
    import spacy

    path = Path(model)
    if not path.exists() and not spacy.util.is_package(str(model)):
        raise AnnotateError(
            f"Model not found: {model} (neither a pipeline folder nor an installed package)"
        )
    if path.exists() and not (path / "config.cfg").is_file():
        raise AnnotateError(f"Not a pipeline folder (no config.cfg): {path}")


def _write_results(
    results: Iterator[ChunkResult],
    todo: List[Shard],
    output: Path,
    output_format: str,
    progress: bool,
    on_shard: Optional[Callable[[int], None]],
) -> Dict[str, int]:
    """Collect each shard's chunks and write the shard once all are back; count as we go."""
    sizes = {s.shard_id: s.size for s in todo}
    pending: Dict[int, Dict[int, ChunkResult]] = {}
    stats = {"in": 0, "annotated": 0, "failed": 0, "words": 0}
    bar = _progress_bar(sum(sizes.values()), progress)
    try:
        for result in results:
            chunks = pending.setdefault(result.shard_id, {})
            chunks[result.seq] = result
            n_docs = len(result.outputs) + len(result.errors)
            stats["words"] += result.n_words
            if bar is not None:
                bar.add(n_docs, result.n_words)
            if len(chunks) < result.n_chunks:
                continue
            done = [chunks[seq] for seq in range(result.n_chunks)]
            del pending[result.shard_id]
            outputs = [r for chunk in done for r in chunk.outputs]
            errors = [e for chunk in done for e in chunk.errors]
            if len(outputs) + len(errors) != sizes[result.shard_id]:
                raise AnnotateError(
                    f"Shard {result.shard_id}: {len(outputs)} annotated + {len(errors)} failed "
                    f"records, expected {sizes[result.shard_id]} (not written)"
                )
            write_shard(output, result.shard_id, output_format, outputs, errors)
            stats["in"] += len(outputs) + len(errors)
            stats["annotated"] += len(outputs)
            stats["failed"] += len(errors)
            if on_shard is not None:
                on_shard(result.shard_id)
    finally:
        if bar is not None:
            bar.close()
    if pending:
        raise AnnotateError(f"Shards {sorted(pending)} came back incomplete (not written)")
    return stats


class _Progress:
    """tqdm over documents, with words/s next to docs/s; ETA from the known record count."""

    def __init__(self, total: int) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=total, unit="doc", dynamic_ncols=True, smoothing=0.1)
        self.start = time.perf_counter()
        self.words = 0
        self.shown = 0.0

    def add(self, n_docs: int, n_words: int) -> None:
        self.words += n_words
        now = time.perf_counter()
        if now - self.shown > 0.5:
            self.bar.set_postfix_str(f"{self.words / max(now - self.start, 1e-9):,.0f} words/s",
                                     refresh=False)
            self.shown = now
        self.bar.update(n_docs)

    def close(self) -> None:
        self.bar.close()


def _progress_bar(total: int, enabled: bool) -> Optional[_Progress]:
    return _Progress(total) if enabled else None

"""`python -m spacy_bert_crf annotate`: run a pipeline over .jsonl/.txt/.parquet files, streaming,
into resumable JSONL or Parquet shards, locally or on Ray."""
from pathlib import Path
from typing import List, Optional

import typer
from wasabi import msg

from ..annotate import AnnotateError, annotate


def annotate_cli(
    # fmt: off
    model: str = typer.Argument(..., metavar="MODEL", help="Pipeline folder or installed package"),
    inputs: List[str] = typer.Argument(..., metavar="INPUT...", help=".jsonl, .txt (a document per line) or .parquet files, or globs"),
    output: Path = typer.Option(..., "--output", "-o", help="Output folder (shards, errors/, summary.json); rerun to resume", file_okay=False),
    output_format: str = typer.Option("jsonl", "--format", "-f", help="Output format: jsonl or parquet"),
    text_key: str = typer.Option("text", "--text-key", "-k", help="Field with the text (.jsonl, .parquet)"),
    shard_size: int = typer.Option(1000, "--shard-size", min=1, help="Records per output shard (a rerun skips finished shards)"),
    batch_size: int = typer.Option(64, "--batch-size", "-b", min=1, help="Records per nlp.pipe batch"),
    workers: int = typer.Option(1, "--workers", "-w", min=1, help="Worker processes (local) or actors (ray)"),
    gpu_id: int = typer.Option(-1, "--gpu-id", "-g", help="GPU id (local engine), or -1 for CPU"),
    engine: str = typer.Option("local", "--engine", "-e", help="local or ray"),
    address: Optional[str] = typer.Option(None, "--address", help="Ray cluster address (e.g. auto); default: start a local Ray instance"),
    gpus_per_worker: float = typer.Option(0.0, "--gpus-per-worker", min=0.0, help="GPUs per Ray actor"),
    cpus_per_worker: float = typer.Option(1.0, "--cpus-per-worker", min=0.0, help="CPUs per Ray actor"),
    threads_per_worker: Optional[int] = typer.Option(None, "--threads-per-worker", "-t", min=1, help="torch threads of each local worker (default: the cores split between the workers)"),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar"),
    # fmt: on
) -> None:
    """Annotate documents with a pipeline's entities (start, end, label, text, confidence),
    carrying the input's fields through. Bad records go to OUTPUT/errors/ with file:line and
    the reason; the job goes on. Killed? Run the same command again: finished shards are kept."""
    if engine == "local" and (address or gpus_per_worker):
        msg.warn("--address and --gpus-per-worker apply to --engine ray only")
    if engine == "ray" and threads_per_worker is not None:
        msg.warn("--threads-per-worker applies to --engine local only (Ray: --cpus-per-worker)")
    try:
        summary = annotate(
            model, inputs, output, text_key=text_key, output_format=output_format,
            shard_size=shard_size, batch_size=batch_size, workers=workers, gpu_id=gpu_id,
            engine=engine, address=address, gpus_per_worker=gpus_per_worker,
            cpus_per_worker=cpus_per_worker, threads_per_worker=threads_per_worker,
            progress=progress,
        )
    except (AnnotateError, OSError) as err:
        msg.fail(str(err), exits=1)
    run = summary["run"]
    if summary["shards_skipped"]:
        msg.info(
            f"Resumed: {summary['shards_skipped']} of {summary['shards']} shards were already "
            f"done"
        )
    msg.good(
        f"Documents in: {summary['in']}, annotated: {summary['annotated']}, "
        f"failed: {summary['failed']} ({summary['shards']} shards in {output})"
    )
    if run["seconds"] and run["in"]:
        msg.text(
            f"This run: {run['in']} documents, {run['words']:,} words in {run['seconds']:.1f} s "
            f"({run['docs_per_second']:,.1f} docs/s, {run['words_per_second']:,.0f} words/s)"
        )
    if summary["failed"]:
        msg.warn(f"{summary['failed']} bad records: see {summary['errors']}")

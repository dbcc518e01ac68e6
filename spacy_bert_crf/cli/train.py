"""`python -m spacy_bert_crf train`: spacy train with resumable checkpoints."""
from pathlib import Path
from typing import Optional

import typer
from spacy.cli._util import parse_config_overrides
from wasabi import Printer

from ..training import ResumeError, train


def train_cli(
    # fmt: off
    ctx: typer.Context,
    config_path: Path = typer.Argument(..., exists=True, dir_okay=False, help="Training config"),
    output_path: Path = typer.Option(..., "--output", "-o", help="Output folder (model-best, model-last, checkpoints/)"),
    resume: bool = typer.Option(False, "--resume", help="Continue from the newest checkpoint in the output folder, if any"),
    checkpoint_every: Optional[int] = typer.Option(None, "--checkpoint-every", min=1, help="Steps between checkpoints (default: eval_frequency)"),
    keep_checkpoints: int = typer.Option(1, "--keep-checkpoints", min=1, help="How many checkpoints to keep"),
    time_limit: Optional[float] = typer.Option(None, "--time-limit", min=0, help="Seconds after which to stop at the end of a step, checkpointing it (continue with --resume)"),
    use_gpu: int = typer.Option(-1, "--gpu-id", "-g", help="GPU id, or -1 for CPU"),
    # fmt: on
) -> None:
    """Train like `spacy train` (same arguments, config overrides as --section.key value),
    checkpointing the whole training state so that --resume continues an interrupted run where
    it stopped. --time-limit stops a run cleanly after so many seconds (a lent machine, a job
    queue's limit): rerun with --resume, as often as it takes."""
    overrides = parse_config_overrides(ctx.args)
    try:
        train(
            config_path, output_path, overrides=overrides, use_gpu=use_gpu, resume=resume,
            checkpoint_every=checkpoint_every, keep_checkpoints=keep_checkpoints,
            time_limit=time_limit,
        )
    except ResumeError as err:
        Printer().fail(str(err), exits=1)

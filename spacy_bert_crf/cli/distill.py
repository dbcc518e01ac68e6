"""`python -m spacy_bert_crf distill`: train a student config on soft targets from a teacher."""
from pathlib import Path
from typing import Optional

import typer
from spacy.cli._util import parse_config_overrides
from wasabi import Printer


def distill_cli(
    # fmt: off
    ctx: typer.Context,
    teacher: str = typer.Argument(..., metavar="TEACHER_DIR", help="Trained teacher pipeline (directory or package) with one crf_ner"),
    config_path: Path = typer.Argument(..., metavar="STUDENT_CONFIG", exists=True, dir_okay=False, help="Student training config"),
    output_path: Path = typer.Argument(..., metavar="OUTPUT_DIR", help="Output folder (corpus/train.spacy, model-best, model-last, checkpoints/)"),
    unlabelled: Optional[Path] = typer.Option(None, "--unlabelled", "-u", exists=True, dir_okay=False, help="Unlabelled text (.jsonl with \"text\", or .txt one doc a line): soft-only examples"),
    distill_weight: Optional[float] = typer.Option(None, "--distill-weight", "-w", min=0.0, help="Weight of KL(teacher || student) (default: the config's crf_ner distill_weight)"),
    temperature: Optional[float] = typer.Option(None, "--temperature", "-t", min=0.01, max=10.0, help="Temperature of the teacher's marginals (default: the teacher's own)"),
    batch_size: int = typer.Option(32, "--teacher-batch-size", min=1, help="Docs per teacher batch"),
    resume: bool = typer.Option(False, "--resume", help="Continue from the newest checkpoint (and reuse the annotated corpus)"),
    checkpoint_every: Optional[int] = typer.Option(None, "--checkpoint-every", min=1, help="Steps between checkpoints (default: eval_frequency)"),
    use_gpu: int = typer.Option(-1, "--gpu-id", "-g", help="GPU id, or -1 for CPU"),
    # fmt: on
) -> None:
    """Knowledge distillation: the teacher writes its per-token CRF marginals on the student's
    training corpus (and on --unlabelled text), then the student trains like `spacy train` (the
    config's training block, config overrides as --section.key value) on gold NLL +
    distill_weight x KL(teacher || student)."""
    from ..distillation.run import distill
    from ..distillation.targets import DistillError
    from ..training import ResumeError

    overrides = parse_config_overrides(ctx.args)
    try:
        distill(
            teacher, config_path, output_path, unlabelled=unlabelled, overrides=overrides,
            distill_weight=distill_weight, temperature=temperature, use_gpu=use_gpu,
            resume=resume, checkpoint_every=checkpoint_every, batch_size=batch_size,
        )
    except (DistillError, ResumeError, OSError) as err:
        Printer().fail(str(err), exits=1)

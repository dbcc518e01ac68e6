"""`python -m spacy_bert_crf convert` and `split`: a CoNLL, MSRA or zh_chars file to .spacy, a .spacy file
to train and dev. Thin wrappers over spacy_bert_crf.corpora."""
from pathlib import Path
from typing import List, NoReturn, Optional, Tuple

import typer
from spacy.tokens import DocBin
from spacy.vocab import Vocab

from ..corpora import DASH_MEANINGS, FORMATS, CharCorpusStats, convert_file, parse_label_map
from ..corpora import split_docs
from ..tag_schemes import INPUT_SCHEMES


def convert_cli(
    input_format: str = typer.Argument(
        ..., metavar="FORMAT", help=f"{', '.join(FORMATS[:-1])} or {FORMATS[-1]}"
    ),
    input_path: Path = typer.Argument(
        ..., metavar="INPUT", help="File to convert", exists=True, dir_okay=False
    ),
    output_dir: Path = typer.Argument(
        ..., metavar="OUTPUT_DIR", help="Where to write <INPUT stem>.spacy", file_okay=False
    ),
    scheme: str = typer.Option(
        "auto", "--scheme", "-s", help=f"{', '.join(INPUT_SCHEMES[:-1])} or {INPUT_SCHEMES[-1]}"
    ),
    docs: bool = typer.Option(False, "--docs", help="conll: one Doc per -DOCSTART- document"),
    n_sents: int = typer.Option(1, "--n-sents", "-n", min=1, help="Sentences per Doc"),
    strict: bool = typer.Option(
        False, "--strict", help="Fail on any invalid tag (so on an ambiguous auto-detected scheme)"
    ),
    lang: Optional[str] = typer.Option(
        None, "--lang", "-l", help="Vocab language [default: en for conll, zh for the others]"
    ),
    label_map: Optional[str] = typer.Option(
        None, "--label-map", help="Rename labels [default for msra: NR=PER,NS=LOC,NT=ORG]"
    ),
    dash: str = typer.Option(
        "auto",
        "--dash",
        help=f"zh_chars: what a '-' tag means, {', '.join(DASH_MEANINGS)} (auto: outside if the "
        "file has no 'O' tag, else missing, i.e. not annotated)",
    ),
    quiet: bool = typer.Option(
        False, "--quiet", "-q", help="No progress bar (shown on stderr for large files)"
    ),
) -> None:
    """Convert a CoNLL, MSRA or zh_chars NER file to a .spacy (DocBin) file and print a
    summary."""
    try:
        mapping = parse_label_map(label_map) if label_map is not None else None
        output_path, stats = convert_file(
            input_format.lower(), input_path, output_dir, scheme=scheme, docs=docs,
            n_sents=n_sents, strict=strict, lang=lang, label_map=mapping, dash=dash,
            progress=not quiet,
        )
    except (ValueError, OSError) as err:
        _fail(err)
    typer.secho(f"\u2714 Wrote {stats.docs} docs to {output_path}", fg=typer.colors.GREEN)
    detected = " (auto-detected)" if stats.detection else " (given)"
    rows: List[Tuple[str, object]] = [("scheme", f"{stats.scheme}{detected}")]
    if stats.detection:
        rows.append(("detected from", stats.detection))
    rows += [
        ("documents", stats.docs),
        ("sentences", stats.sentences),
        ("tokens", stats.tokens),
        ("entities", stats.n_entities),
    ]
    rows.extend((f"  {label}", count) for label, count in sorted(stats.entities.items()))
    rows.append(("repairs", stats.repairs))
    if isinstance(stats, CharCorpusStats) and stats.dash:
        rows += [("'-' read as", stats.dash), ("missing (not annotated)", stats.missing)]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        typer.echo(f"  {name:<{width}}  {value}")
    if stats.ambiguous:
        typer.secho(
            f"\u26a0 Ambiguous tag scheme: no scheme fits every tag; {stats.scheme} was chosen "
            f"for the {stats.detection}. Give --scheme if the file uses another one (--strict "
            "fails on such a file).",
            fg=typer.colors.YELLOW,
        )
    if stats.repairs:
        shown = ", ".join(stats.repair_locations)
        more = ", ..." if stats.repairs > len(stats.repair_locations) else ""
        typer.secho(
            f"\u26a0 Repaired {stats.repairs} invalid tag sequence(s) by starting a new entity: "
            f"{shown}{more}",
            fg=typer.colors.YELLOW,
        )


def split_cli(
    input_path: Path = typer.Argument(
        ..., metavar="INPUT", help=".spacy file to split", exists=True, dir_okay=False
    ),
    output_dir: Path = typer.Argument(
        ..., metavar="OUTPUT_DIR", help="Where to write train.spacy and dev.spacy", file_okay=False
    ),
    dev_size: float = typer.Option(0.1, "--dev-size", help="Dev fraction (< 1) or count (>= 1)"),
    seed: int = typer.Option(0, "--seed", help="Random seed"),
) -> None:
    """Split a .spacy file into OUTPUT_DIR/train.spacy and OUTPUT_DIR/dev.spacy at random."""
    try:
        doc_list = list(DocBin().from_disk(input_path).get_docs(Vocab()))
        train, dev = split_docs(doc_list, dev_size=dev_size, seed=seed)
        output_dir.mkdir(parents=True, exist_ok=True)
        for name, part in (("train", train), ("dev", dev)):
            DocBin(docs=part, store_user_data=True).to_disk(output_dir / f"{name}.spacy")
    except (ValueError, OSError) as err:
        _fail(err)
    typer.secho(
        f"\u2714 Split {len(doc_list)} docs (seed {seed}): train {len(train)}, dev {len(dev)} "
        f"in {output_dir}",
        fg=typer.colors.GREEN,
    )


def _fail(err: Exception) -> NoReturn:
    """Print an error (no traceback) and exit with code 1."""
    typer.secho(f"\u2718 {err}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=1)

"""One input file -> one .spacy (DocBin) file, in any of the formats; the label map option."""
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from spacy.tokens import Doc, DocBin

from ..tag_schemes import OUT
from .conll import read_conll
from .docs import ConversionStats, PathLike
from .msra import read_msra
from .zh_chars import read_zh_chars

FORMATS = ("conll", "msra", "zh_chars")
DEFAULT_LANGS = {"conll": "en", "msra": "zh", "zh_chars": "zh"}


def convert_file(
    input_format: str,
    input_path: PathLike,
    output_dir: PathLike,
    *,
    scheme: str = "auto",
    docs: bool = False,
    n_sents: int = 1,
    strict: bool = False,
    lang: Optional[str] = None,
    label_map: Optional[Dict[str, str]] = None,
    dash: str = "auto",
    progress: bool = False,
) -> Tuple[Path, ConversionStats]:
    """Convert one file and write output_dir/<input stem>.spacy (the directory is created).

    input_format (str): "conll", "msra" or "zh_chars".
    input_path (str / Path): The file to convert.
    output_dir (str / Path): Where to write the .spacy file.
    lang (Optional[str]): Vocab language; None means "en" for conll, "zh" for msra and zh_chars.
    dash (str): What a "-" tag means in a zh_chars file: "auto", "outside" or "missing".
    The other arguments are those of read_conll / read_msra / read_zh_chars (docs is conll only).
    RETURNS (Tuple[Path, ConversionStats]): The written file and the statistics.
    """
    if input_format not in FORMATS:
        raise ValueError(f"Unknown format {input_format!r}: expected one of {', '.join(FORMATS)}.")
    lang = lang or DEFAULT_LANGS[input_format]
    doc_list: List[Doc]
    if input_format == "conll":
        doc_list, stats = read_conll(
            input_path, scheme=scheme, docs=docs, n_sents=n_sents, strict=strict, lang=lang,
            label_map=label_map, progress=progress,
        )
    elif docs:
        raise ValueError(
            f"docs (--docs) is only for conll: {input_format} files have no documents."
        )
    elif dash != "auto" and input_format != "zh_chars":
        raise ValueError(f"dash (--dash) is only for zh_chars, not {input_format}.")
    elif input_format == "zh_chars":
        doc_list, stats = read_zh_chars(
            input_path, scheme=scheme, dash=dash, n_sents=n_sents, strict=strict, lang=lang,
            label_map=label_map, progress=progress,
        )
    else:
        doc_list, stats = read_msra(
            input_path, scheme=scheme, n_sents=n_sents, strict=strict, lang=lang,
            label_map=label_map, progress=progress,
        )
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    output_path = output_dir / f"{Path(input_path).stem}.spacy"
    DocBin(docs=doc_list, store_user_data=False).to_disk(output_path)
    return output_path, stats


def parse_label_map(text: str) -> Dict[str, str]:
    """Parse "NR=PER,NS=LOC,NT=ORG" into a dict ("" gives an empty map).

    text (str): Comma-separated FROM=TO pairs.
    RETURNS (Dict[str, str]): The mapping.
    """
    mapping = {}
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        source, sep, target = (part.strip() for part in item.partition("="))
        if not sep or not source or not target:
            raise ValueError(f"Invalid label map entry {item!r}: expected FROM=TO, e.g. NR=PER.")
        if target == OUT:
            raise ValueError(
                f"Invalid label map entry {item!r}: 'O' means outside, not an entity label."
            )
        mapping[source] = target
    return mapping

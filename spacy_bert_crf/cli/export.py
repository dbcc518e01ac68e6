"""`python -m spacy_bert_crf export`: a copy of a pipeline whose transformer runs in ONNX Runtime
(fp32 or int8), verified against torch on sample docs."""
from pathlib import Path
from typing import Optional

import typer
from wasabi import msg

from ..onnx.export import DEFAULT_ATOL, DEFAULT_OPSET, QUANTIZE_CHOICES, ExportError, ExportReport


def export_cli(
    # fmt: off
    model: str = typer.Argument(..., metavar="MODEL_DIR", help="Trained pipeline directory or installed package (torch transformer)"),
    output_dir: Path = typer.Argument(..., metavar="OUTPUT_DIR", help="New pipeline directory (must not exist, or be empty)"),
    quantize: str = typer.Option("int8", "--quantize", "-q", help=f"Quantization of the encoder's weights: {' or '.join(QUANTIZE_CHOICES)}"),
    opset: int = typer.Option(DEFAULT_OPSET, "--opset", min=9, help="ONNX opset"),
    atol: float = typer.Option(DEFAULT_ATOL, "--atol", min=0.0, help="Largest allowed difference of fp32 ONNX hidden states from torch on the sample docs"),
    sample: Optional[Path] = typer.Option(None, "--sample", exists=True, dir_okay=False, help="Verify on these texts (.txt, one doc per line) instead of the built-in ones"),
    # fmt: on
) -> None:
    """Export a pipeline's transformer to ONNX Runtime (int8 by default): writes a spaCy
    pipeline folder (spacy.load, spacy package) with the same tokenization, windows and
    components, and prints how its outputs compare with torch's."""
    from ..onnx.export import export_pipeline

    texts = None
    if sample is not None:
        try:
            texts = [line for line in sample.read_text(encoding="utf8").splitlines() if line.strip()]
        except (OSError, UnicodeDecodeError) as err:
            msg.fail(f"Can't read {sample}: {err}", exits=1)
        if not texts:
            msg.fail(f"{sample} has no non-empty line to verify on", exits=1)
    try:
        report = export_pipeline(
            model, output_dir, quantize=quantize, opset=opset, atol=atol, sample=texts
        )
    except (ExportError, OSError, ImportError) as err:
        msg.fail(str(err), exits=1)
    print_report(report)


def print_report(report: ExportReport) -> None:
    """Print the verification results and sizes with wasabi."""
    diff, ents = report.fp32_vs_torch, report.fp32_entities_vs_torch
    msg.good(
        f"fp32 ONNX vs torch: hidden states differ by at most {diff.max_abs_diff:.2e} (mean "
        f"{diff.mean_abs_diff:.2e}; tolerance {report.atol:g}) over {diff.n_wordpieces} "
        f"wordpieces of {report.n_docs} docs; entities agree F={ents.f:.2%} "
        f"({ents.docs_identical}/{ents.n_docs} docs identical)"
    )
    if report.int8_vs_fp32 is not None and report.int8_entities_vs_fp32 is not None:
        q, qents = report.int8_vs_fp32, report.int8_entities_vs_fp32
        show = msg.good if qents.f >= 0.95 else msg.warn
        show(
            f"int8 vs fp32 ONNX: entity agreement F={qents.f:.2%} ({qents.n_common} common of "
            f"{qents.n_reference} fp32 / {qents.n_other} int8 entities; "
            f"{qents.docs_identical}/{qents.n_docs} docs identical); hidden states differ by "
            f"at most {q.max_abs_diff:.2e} (mean {q.mean_abs_diff:.2e})"
        )
    sizes = f"{report.size_output / 1e6:.1f} MB"
    if report.size_source:
        sizes = f"{report.size_source / 1e6:.1f} MB (torch) -> {sizes}"
    msg.good(
        f"Saved the {report.quantize if report.quantize != 'none' else 'fp32'} ONNX pipeline "
        f"to {report.output_dir} ({sizes}, opset {report.opset})"
    )

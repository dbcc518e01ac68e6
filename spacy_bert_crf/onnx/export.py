"""Export a trained pipeline's transformer to ONNX (optionally int8), as a spaCy pipeline folder.

The encoder (the Hugging Face torch module inside the `transformer` component) is traced by
`torch.onnx.export` into a graph that takes the tokenizer's inputs and returns
`last_hidden_state`, with the batch and sequence axes dynamic. With `quantize="int8"` its
weights are quantized by ONNX Runtime's dynamic quantization (int8 weights per output channel,
activations quantized per tensor at run time: an int8 window's values depend slightly on the
other windows of its batch). The new pipeline is the old one with the transformer's model replaced
by `spacy-bert-crf.OnnxTransformerModel.v1`; every other component is copied byte for byte.

Verification at export time (verify.py): on sample docs, the fp32 graph's hidden states must
match torch within `atol`, or nothing is written; for int8, the entity agreement with the fp32
graph is reported.
"""
import io
import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import srsly
import torch
from spacy.language import Language
from spacy.util import load_model, load_model_from_config, make_tempdir

from .model import ARCHITECTURE, ENCODER_INPUTS, OnnxTransformerModel, import_onnxruntime
from .verify import Agreement, HiddenDiff, compare_hidden, entity_agreement, sample_texts

QUANTIZE_CHOICES = ("int8", "none")
DEFAULT_OPSET = 17
DEFAULT_ATOL = 1e-3
# Texts that the encoder is traced with: two lengths, so the attention mask has padding.
TRACE_TEXTS = ("A first sentence, with a few words in it.", "Short one.")


class ExportError(ValueError):
    """A pipeline that can't be exported, or an export that failed its verification."""


@dataclass
class ExportReport:
    """What export_pipeline did and measured."""

    output_dir: Path
    component: str
    quantize: str
    opset: int
    atol: float
    n_docs: int
    fp32_vs_torch: HiddenDiff
    fp32_entities_vs_torch: Agreement
    int8_vs_fp32: Optional[HiddenDiff] = None
    int8_entities_vs_fp32: Optional[Agreement] = None
    size_source: int = 0
    size_output: int = 0
    info: Dict[str, Any] = field(default_factory=dict)


def export_pipeline(
    model: Union[str, Path, Language],
    output_dir: Union[str, Path],
    *,
    quantize: str = "int8",
    opset: int = DEFAULT_OPSET,
    atol: float = DEFAULT_ATOL,
    sample: Optional[Sequence[str]] = None,
) -> ExportReport:
    """Write a copy of a pipeline whose transformer runs in ONNX Runtime.

    model (Union[str, Path, Language]): The torch pipeline (a folder, a package name or a
        loaded Language).
    output_dir (Union[str, Path]): The new pipeline folder; it must not exist or be empty.
    quantize (str): "int8" (dynamic quantization of the weights) or "none" (fp32).
    opset (int): The ONNX opset to export with.
    atol (float): The largest allowed difference between the fp32 graph's hidden states and
        torch's, on the sample docs.
    sample (Optional[Sequence[str]]): Texts to verify on (default: built-in texts of the
        pipeline's language, plus a long and an empty doc).
    RETURNS (ExportReport): The verification results and the sizes.
    RAISES (ExportError): No transformer component, an encoder ONNX can't trace, or a
        verification that failed; nothing is written then.
    """
    if quantize not in QUANTIZE_CHOICES:
        raise ExportError(
            f"quantize must be one of {', '.join(QUANTIZE_CHOICES)}, got {quantize!r}."
        )
    if atol <= 0:
        raise ExportError(f"atol must be positive, got {atol}.")
    output_dir = Path(output_dir)
    if output_dir.exists() and (not output_dir.is_dir() or any(output_dir.iterdir())):
        raise ExportError(f"{output_dir} exists and is not an empty folder: choose a new one.")
    source_dir = Path(model) if isinstance(model, (str, Path)) and Path(model).is_dir() else None
    nlp = model if isinstance(model, Language) else load_model(model)
    name, trf_model = find_transformer(nlp)
    saved = srsly.msgpack_loads(trf_model.layers[0].shims[0].to_bytes())
    hf_config, tokenizer_files = saved["config"], saved["tokenizer"]
    info = {
        "source": nlp.meta.get("name", ""),
        "source_version": nlp.meta.get("version", ""),
        "encoder": f"{type(trf_model.transformer).__name__} ({hf_config.get('model_type', '?')})",
        "opset": opset,
        "quantize": quantize,
        "torch": torch.__version__,
        "onnxruntime": import_onnxruntime().__version__,
    }
    fp32 = export_encoder(trf_model.transformer, trf_model.tokenizer, opset)
    fp32_nlp = build_onnx_pipeline(nlp, name, fp32, hf_config, tokenizer_files, info)
    texts = list(sample) if sample is not None else sample_texts(str(nlp.lang))
    try:
        torch_docs = list(nlp.pipe(texts))
    except Exception as err:  # whatever the source pipeline raises on its own
        raise ExportError(
            f"The torch pipeline fails on the sample docs ({type(err).__name__}: "
            f"{_first_line(err)}), so the export can't be verified: pass texts it can process."
        ) from err
    fp32_docs = list(fp32_nlp.pipe(texts))
    try:
        diff = compare_hidden(torch_docs, fp32_docs)
    except ValueError as err:
        raise ExportError(f"The exported transformer cuts docs differently: {err}") from err
    if not diff.max_abs_diff <= atol:
        raise ExportError(
            f"The fp32 ONNX encoder differs from torch by up to {diff.max_abs_diff:.3g} on the "
            f"hidden states of the sample docs (tolerance {atol:g}): the graph does not compute "
            f"what the torch encoder does ({info['encoder']}, opset {opset}). Nothing was "
            f"written."
        )
    report = ExportReport(
        output_dir=output_dir, component=name, quantize=quantize, opset=opset, atol=atol,
        n_docs=len(texts), fp32_vs_torch=diff,
        fp32_entities_vs_torch=entity_agreement(torch_docs, fp32_docs), info=info,
    )
    out_nlp = fp32_nlp
    if quantize == "int8":
        int8 = quantize_int8(fp32)
        out_nlp = build_onnx_pipeline(nlp, name, int8, hf_config, tokenizer_files, info)
        int8_docs = list(out_nlp.pipe(texts))
        report.int8_vs_fp32 = compare_hidden(fp32_docs, int8_docs)
        report.int8_entities_vs_fp32 = entity_agreement(fp32_docs, int8_docs)
    info["verification"] = _verification_meta(report)
    out_nlp.meta["spacy_bert_crf_export"] = info
    output_dir.parent.mkdir(parents=True, exist_ok=True)  # Language.to_disk makes one level only
    out_nlp.to_disk(output_dir)
    report.size_output = folder_size(output_dir)
    report.size_source = folder_size(source_dir) if source_dir is not None else 0
    return report


def find_transformer(nlp: Language) -> Tuple[str, Any]:
    """The pipeline's transformer component, which export replaces.

    RETURNS (Tuple[str, TransformerModel]): Its name and its (torch) model.
    RAISES (ExportError): No transformer component, several, or one already exported.
    """
    from spacy_transformers.layers.transformer_model import TransformerModel

    found = [(name, getattr(pipe, "model")) for name, pipe in nlp.pipeline
             if isinstance(getattr(pipe, "model", None), TransformerModel)]
    exported = [name for name, model in found if isinstance(model, OnnxTransformerModel)]
    if exported:
        raise ExportError(
            f"Component {exported[0]!r} already runs in ONNX Runtime ({ARCHITECTURE}): export "
            f"the torch pipeline it was made from."
        )
    if not found:
        pipes = ", ".join(f"{n} ({type(p).__name__})" for n, p in nlp.pipeline) or "none"
        raise ExportError(
            f"The pipeline has no transformer component to export (components: {pipes}). "
            f"export needs a spacy-transformers `transformer` component whose model is "
            f"spacy-bert-crf.TransformerModel.v1 or spacy-transformers.TransformerModel.v3; "
            f"components with their own tok2vec run in spaCy and need no export."
        )
    if len(found) > 1:
        raise ExportError(
            f"The pipeline has {len(found)} transformer components "
            f"({', '.join(n for n, _ in found)}); export handles one."
        )
    name, model = found[0]
    if model.transformer is None or model.tokenizer is None:
        raise ExportError(f"The transformer component {name!r} has no weights (not initialized).")
    return name, model


class _Encoder(torch.nn.Module):
    """The encoder as a function of the tokenizer's tensors, returning last_hidden_state."""

    def __init__(self, transformer: torch.nn.Module, input_names: Sequence[str]):
        super().__init__()
        self.transformer = transformer
        self.input_names = tuple(input_names)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        output = self.transformer(**dict(zip(self.input_names, inputs)), return_dict=True)
        return output.last_hidden_state


def encoder_inputs(transformer: torch.nn.Module, tokenizer: Any) -> List[str]:
    """RETURNS (List[str]): The inputs the graph takes: the tokenizer's, among input_ids,
    attention_mask and token_type_ids, in that order."""
    produced = set(getattr(tokenizer, "model_input_names", ENCODER_INPUTS))
    names = [n for n in ENCODER_INPUTS if n in produced]
    if "input_ids" not in names or "attention_mask" not in names:
        raise ExportError(
            f"The tokenizer ({type(tokenizer).__name__}) produces {sorted(produced)}; an ONNX "
            f"encoder needs input_ids and attention_mask."
        )
    return names


def export_encoder(transformer: Any, tokenizer: Any, opset: int) -> bytes:
    """Trace the encoder into an ONNX graph (fp32) with dynamic batch and sequence axes.

    RETURNS (bytes): The serialized ONNX model.
    RAISES (ExportError): The encoder can't be traced or exported; the message names the
        encoder class, its model_type and the exporter's error.
    """
    config = getattr(transformer, "config", None)
    what = f"{type(transformer).__name__} (model_type {getattr(config, 'model_type', '?')!r})"
    if not isinstance(transformer, torch.nn.Module):
        raise ExportError(f"The encoder {what} is not a torch module; ONNX export traces torch.")
    names = encoder_inputs(transformer, tokenizer)
    batch = tokenizer(list(TRACE_TEXTS), padding=True, return_tensors="pt")
    inputs = tuple(
        batch[n] if n in batch else torch.zeros_like(batch["input_ids"]) for n in names
    )
    dynamic = {n: {0: "batch", 1: "sequence"} for n in names + ["last_hidden_state"]}
    encoder = _Encoder(transformer, names).eval()
    was_training = transformer.training
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # tracer warnings about Python values in the graph
            torch.onnx.export(  # the TorchScript exporter writes to a file object too
                encoder, inputs, buffer,  # type: ignore[arg-type]
                input_names=names, output_names=["last_hidden_state"],
                dynamic_axes=dynamic, opset_version=opset, do_constant_folding=True,
                dynamo=False,
            )
    except Exception as err:  # the exporter raises many kinds (RuntimeError, SymbolicValueError)
        raise ExportError(
            f"ONNX can't export the encoder {what} at opset {opset}: {type(err).__name__}: "
            f"{_first_line(err)}. export supports BERT-like encoders (BERT, RoBERTa, "
            f"XLM-RoBERTa, DistilBERT, ELECTRA, MiniLM, E5) whose forward takes the tokenizer's "
            f"tensors and returns last_hidden_state."
        ) from err
    finally:
        transformer.train(was_training)  # the exporter restores the wrapper's mode, not ours
    return buffer.getvalue()


def quantize_int8(fp32: bytes) -> bytes:
    """Dynamic int8 quantization of an ONNX graph's weights (ONNX Runtime): int8 weights with a
    scale per output channel (per tensor cost 1.5 F1 points on CoNLL-2003, per channel none),
    activations quantized per tensor at run time.

    RETURNS (bytes): The quantized ONNX model.
    """
    import_onnxruntime()
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with make_tempdir() as tmp:
        (tmp / "fp32.onnx").write_bytes(fp32)
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)  # the quantizer logs advice on the root logger
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                quantize_dynamic(
                    tmp / "fp32.onnx", tmp / "int8.onnx", weight_type=QuantType.QInt8,
                    per_channel=True,
                )
        finally:
            root.setLevel(level)
        return (tmp / "int8.onnx").read_bytes()


def build_onnx_pipeline(
    nlp: Language,
    name: str,
    onnx_model: bytes,
    hf_config: Dict[str, Any],
    tokenizer_files: Dict[str, Any],
    info: Dict[str, Any],
) -> Language:
    """A copy of nlp whose component `name` has an OnnxTransformerModel running onnx_model.

    RETURNS (Language): The new pipeline (vocab, tokenizer and other components copied).
    """
    config = nlp.config.copy()
    old = config["components"][name]["model"]
    config["components"][name]["model"] = {
        "@architectures": ARCHITECTURE,
        "get_spans": old["get_spans"],
        "max_batch_pieces": old.get("max_batch_pieces", 4096),
        "min_fill": old.get("min_fill", 0.75),
        "threads": 0,
    }
    new = load_model_from_config(config, auto_fill=False, validate=True)
    new.from_bytes(nlp.to_bytes(exclude=[name]), exclude=[name, "config", "meta"])
    pipe: Any = new.get_pipe(name)
    pipe.cfg.update(getattr(nlp.get_pipe(name), "cfg"))
    pipe.model.set_encoder(onnx_model, hf_config, tokenizer_files, info)
    new.meta.update(nlp.meta)
    requirements = new.meta.get("requirements", [])
    new.meta["requirements"] = [r for r in requirements if not r.startswith("onnxruntime")] + [
        f"onnxruntime>={info['onnxruntime']}"
    ]
    return new


def folder_size(path: Union[str, Path]) -> int:
    """RETURNS (int): Bytes of all files under a folder."""
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def _verification_meta(report: ExportReport) -> Dict[str, Any]:
    meta: Dict[str, Any] = {
        "n_docs": report.n_docs,
        "atol": report.atol,
        "fp32_vs_torch_max_abs_diff": report.fp32_vs_torch.max_abs_diff,
        "fp32_vs_torch_entity_f": report.fp32_entities_vs_torch.f,
    }
    if report.int8_vs_fp32 is not None and report.int8_entities_vs_fp32 is not None:
        meta["int8_vs_fp32_max_abs_diff"] = report.int8_vs_fp32.max_abs_diff
        meta["int8_vs_fp32_entity_f"] = report.int8_entities_vs_fp32.f
    return meta


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else "(no message)"


__all__ = [
    "ExportError",
    "ExportReport",
    "build_onnx_pipeline",
    "export_encoder",
    "export_pipeline",
    "find_transformer",
    "folder_size",
    "quantize_int8",
]

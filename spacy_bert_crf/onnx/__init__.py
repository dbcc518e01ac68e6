"""ONNX Runtime deployment: `python -m spacy_bert_crf export` writes a pipeline whose
transformer runs in ONNX Runtime (fp32 or int8), verified against torch at export time.

Needs the `onnx` extra (onnxruntime, onnx). `model` registers
`spacy-bert-crf.OnnxTransformerModel.v1`; importing this package does not import onnxruntime.
"""
from .model import ARCHITECTURE, ExportedModelError, OnnxTransformerModel

__all__ = ["ARCHITECTURE", "ExportedModelError", "OnnxTransformerModel"]

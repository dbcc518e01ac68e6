"""spacy-bert-crf: a constrained linear-chain CRF named entity recognizer for spaCy.

Importing the package is cheap and does not import torch: spaCy finds the factory, the
architectures, the scorer and the tokenizer through the entry points in setup.cfg, and imports
their modules when a config names them. So the converters, the evaluator and the error report
(`spacy_bert_crf.corpora`, `.evaluate`, `.error_report`) work where torch is not installed. The
component's classes are still reachable here, imported on first access.
"""
from typing import Any

__version__ = "0.1.0"
__all__ = ["CRFEntityRecognizer", "make_crf_ner", "__version__"]

_LAZY = {"CRFEntityRecognizer": "pipeline", "make_crf_ner": "pipeline"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module = importlib.import_module(f"{__name__}.{_LAZY[name]}")
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

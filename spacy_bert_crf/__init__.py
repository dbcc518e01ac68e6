"""spacy-bert-crf: a constrained linear-chain CRF named entity recognizer for spaCy."""
from . import architectures, scorers, tokenizers  # noqa: F401  (registers them)
from .layers import transformer  # noqa: F401  (registers spacy-bert-crf.TransformerModel.v1)
from .pipeline import CRFEntityRecognizer, make_crf_ner

__version__ = "0.1.0"
__all__ = ["CRFEntityRecognizer", "make_crf_ner", "__version__"]

"""spacy-bert-crf: a constrained linear-chain CRF named entity recognizer for spaCy."""
import os
import sys

from . import architectures, scorers, tokenizers  # noqa: F401  (registers them)
from .layers import transformer  # noqa: F401  (registers spacy-bert-crf.TransformerModel.v1)
from .pipeline import CRFEntityRecognizer, make_crf_ner

__version__ = "0.1.0"
__all__ = ["CRFEntityRecognizer", "make_crf_ner", "__version__"]


def _single_thread_torch_in_forked_child() -> None:
    """`nlp.pipe(n_process=N)` forks workers. A forked child that runs torch on the OpenMP
    thread pool it inherited from a parent that already used it deadlocks (the pool's threads
    do not survive the fork). One thread per worker avoids that, and N workers on N cores is
    the right split anyway."""
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(1)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_single_thread_torch_in_forked_child)

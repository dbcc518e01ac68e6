"""Registered Thinc architectures (``spacy-bert-crf.<Name>.vN``)."""
from typing import List, Optional

from spacy.tokens import Doc
from spacy.util import registry
from thinc.api import Model
from thinc.types import Floats2d

from .layers.crf import build_tagger_model


@registry.architectures("spacy-bert-crf.CRFTagger.v1")
def build_crf_tagger(
    tok2vec: Model[List[Doc], List[Floats2d]],
    scheme: str = "BILUO",
    hidden_width: int = 256,
    depth: int = 0,
    dropout: float = 0.1,
    nO: Optional[int] = None,
) -> Model[List[Doc], List[Floats2d]]:
    """Build a linear-chain CRF tagger for named entities.

    tok2vec (Model[List[Doc], List[Floats2d]]): Token vectors, e.g.
        spacy-transformers.TransformerListener.v1 or spacy.Tok2Vec.v2.
    scheme (str): The tag scheme, "BILUO" or "BIO". Its constraints are -inf transitions, so the
        CRF is normalised over valid tag sequences only and never predicts an invalid one.
    hidden_width (int): Width of the optional BiLSTM (both directions together).
    depth (int): Number of BiLSTM layers between the tok2vec and the emissions; 0 = none.
    dropout (float): Dropout rate before the emission layer.
    nO (Optional[int]): Number of tags; inferred from the labels when None.
    RETURNS (Model[List[Doc], List[Floats2d]]): Emission scores per token; the CRF is the
        model's "crf" ref.
    """
    return build_tagger_model(
        tok2vec,
        scheme=scheme,
        objective="crf",
        hidden_width=hidden_width,
        depth=depth,
        dropout=dropout,
        nO=nO,
    )


@registry.architectures("spacy-bert-crf.SoftmaxTagger.v1")
def build_softmax_tagger(
    tok2vec: Model[List[Doc], List[Floats2d]],
    scheme: str = "BILUO",
    hidden_width: int = 256,
    depth: int = 0,
    dropout: float = 0.1,
    nO: Optional[int] = None,
) -> Model[List[Doc], List[Floats2d]]:
    """Build the softmax ablation of the CRF tagger: the same stack, trained with per-token
    cross-entropy, decoded with the same constrained Viterbi over log-probabilities (no learned
    transitions). Arguments as for spacy-bert-crf.CRFTagger.v1.
    """
    return build_tagger_model(
        tok2vec,
        scheme=scheme,
        objective="softmax",
        hidden_width=hidden_width,
        depth=depth,
        dropout=dropout,
        nO=nO,
    )

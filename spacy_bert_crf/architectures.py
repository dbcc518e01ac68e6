"""Registered Thinc architectures (``spacy-bert-crf.<Name>.vN``)."""
from typing import List, Optional

from spacy.tokens import Doc
from spacy.util import registry
from thinc.api import Model, concatenate
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


@registry.architectures("spacy-bert-crf.CRFTagger.v2")
def build_crf_tagger_v2(
    tok2vec: Model[List[Doc], List[Floats2d]],
    features: Optional[Model[List[Doc], List[Floats2d]]] = None,
    scheme: str = "BILUO",
    hidden_width: int = 256,
    depth: int = 0,
    dropout: float = 0.1,
    nO: Optional[int] = None,
) -> Model[List[Doc], List[Floats2d]]:
    """spacy-bert-crf.CRFTagger.v1 with token features: each token's tok2vec vector concatenated
    with its `features` vector before the emission layer.

    features (Optional[Model[List[Doc], List[Floats2d]]]): Token features computed from the docs,
        e.g. spacy.MultiHashEmbed.v2 over SHAPE: the case an uncased encoder cannot see. None:
        as v1. The tok2vec stays a layer of its own (model.tok2vec in the config), so that
        nlp.replace_listeners("transformer", "crf_ner", ["model.tok2vec"]) still finds it.
    Other arguments as for spacy-bert-crf.CRFTagger.v1.
    """
    return build_crf_tagger(
        with_features(tok2vec, features), scheme=scheme, hidden_width=hidden_width, depth=depth,
        dropout=dropout, nO=nO,
    )


@registry.architectures("spacy-bert-crf.SoftmaxTagger.v2")
def build_softmax_tagger_v2(
    tok2vec: Model[List[Doc], List[Floats2d]],
    features: Optional[Model[List[Doc], List[Floats2d]]] = None,
    scheme: str = "BILUO",
    hidden_width: int = 256,
    depth: int = 0,
    dropout: float = 0.1,
    nO: Optional[int] = None,
) -> Model[List[Doc], List[Floats2d]]:
    """spacy-bert-crf.SoftmaxTagger.v1 with token features, as spacy-bert-crf.CRFTagger.v2."""
    return build_softmax_tagger(
        with_features(tok2vec, features), scheme=scheme, hidden_width=hidden_width, depth=depth,
        dropout=dropout, nO=nO,
    )


def with_features(
    tok2vec: Model[List[Doc], List[Floats2d]],
    features: Optional[Model[List[Doc], List[Floats2d]]],
) -> Model[List[Doc], List[Floats2d]]:
    """The tok2vec, or the tok2vec's vectors concatenated with the features' per token."""
    return tok2vec if features is None else concatenate(tok2vec, features)

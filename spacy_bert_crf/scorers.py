"""Registered scorers."""
from typing import Any, Callable, Dict, Iterable

from spacy.scorer import get_ner_prf
from spacy.training import Example
from spacy.util import registry


def score_entities(examples: Iterable[Example], **kwargs: Any) -> Dict[str, Any]:
    """Entity-level micro P/R/F (exact span and label) and per type, as spaCy's `ner` reports.

    RETURNS (Dict[str, Any]): ents_p, ents_r, ents_f and ents_per_type.
    """
    return get_ner_prf(examples, **kwargs)


@registry.scorers("spacy-bert-crf.ner_scorer.v1")
def make_ner_scorer() -> Callable[..., Dict[str, Any]]:
    return score_entities

"""What the CRF micro-benchmarks (crf_ops, decode_load) share: the CoNLL tag set and our CRF.

This is the one place in benchmarks/ that calls the torch CRF of spacy_bert_crf and its tag
schemes; both are imported when a benchmark runs, not when its report is rendered.
"""
import contextlib
from typing import Iterator, List, Sequence, Tuple

LABELS = ("LOC", "MISC", "ORG", "PER")
SCHEME = "BILUO"  # O + 4 labels x B/I/L/U: 17 tags


def conll_tags() -> List[str]:
    from spacy_bert_crf.tag_schemes import make_tags

    return make_tags(LABELS, SCHEME)


def build_crf(seed: int = 0):
    """RETURNS (Tuple[ConstrainedCRF, List[str]]): spacy_bert_crf's torch CRF with the constraints
    of the CoNLL BILUO tags (seeded initial weights) and those tags."""
    import torch

    from spacy_bert_crf.layers.constrained_crf import ConstrainedCRF
    from spacy_bert_crf.tag_schemes import constraints, continuations

    tags = conll_tags()
    torch.manual_seed(seed)
    return ConstrainedCRF(*constraints(tags, SCHEME), continuations(tags, SCHEME)), tags


def entity_spans(tags: Sequence[str]) -> List[Tuple[int, int, str]]:
    """The entities (start, end, label) of a tag sequence of the scheme."""
    from spacy_bert_crf.tag_schemes import tags_to_spans

    return tags_to_spans(tags, SCHEME)


def span_log_probs(crf, emissions, mask, queries: list):
    """The log probabilities of the queried entity spans (what the pipe's confidences are)."""
    return crf.span_log_probs(emissions, mask, queries)


@contextlib.contextmanager
def torch_recursions() -> Iterator[None]:
    """Decode with the torch recursions (before issue 18 on the CPU; still used on a GPU)."""
    from spacy_bert_crf.layers import constrained_crf

    in_numpy = constrained_crf._in_numpy
    constrained_crf._in_numpy = lambda tensor: False
    try:
        yield
    finally:
        constrained_crf._in_numpy = in_numpy

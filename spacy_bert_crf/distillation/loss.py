"""The soft-target term of crf_ner's loss: KL(teacher || student) per token.

A teacher's per-token tag marginals live on the reference doc of a training example, in
``doc.user_data[SOFT_TARGETS_KEY]`` (written by ``distillation.targets``, kept by DocBin), as
``{"tags": [tag, ...], "probs": (n_tokens, n_tags) array}``: per spaCy token, over named tags, so
the teacher and the student need not share a wordpiece tokenizer nor a tag order. They are aligned
to the predicted doc's tokens as spaCy aligns the gold annotation; a predicted token that is not
exactly one reference token (and that token exactly it) gets no soft target.

The student's marginals come from the CRF by forward-backward with autograd through the
recursions (``ConstrainedCRF.kl_to_targets``); the softmax ablation uses its per-token softmax.
torch is imported only when a batch has soft targets.
"""
from functools import lru_cache
from typing import TYPE_CHECKING, Any, List, Optional, Sequence, Tuple, cast

import numpy
from spacy.training import Example
from thinc.types import Floats2d, Floats3d

if TYPE_CHECKING:
    from ..pipeline import CRFEntityRecognizer

SOFT_TARGETS_KEY = "spacy_bert_crf.soft_targets"


def check_distill_weight(value: Any, name: str) -> float:
    """The crf_ner setting distill_weight: a number >= 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0.0:
        raise ValueError(
            f"Invalid distill_weight {value!r} for {name!r}: expected a number >= 0 (the weight "
            "of KL(teacher || model) in the loss; 0 trains on the gold annotation only)."
        )
    return float(value)


def has_soft_targets(example: Example) -> bool:
    return SOFT_TARGETS_KEY in example.reference.user_data


def distillation_loss(
    pipe: "CRFEntityRecognizer",
    examples: Sequence[Example],
    emissions: List[Floats2d],
    d_emissions: List[Floats2d],
    n_tokens: int,
) -> float:
    """Add distill_weight x KL(teacher || student) of the examples with soft targets to the
    loss: RETURNS the weighted KL summed over their tokens; its gradient, divided by n_tokens
    (the tokens of the batch, as the gold NLL's, or 1 when the pipe sums its loss), is added to
    d_emissions in place and to the CRF's parameters (their .grad, which the next finish_update
    applies). 0.0 and nothing added when no example has soft targets or distill_weight is 0.
    """
    weight = pipe.distill_weight
    if not weight:
        return 0.0
    tags = pipe.tags
    found: List[Tuple[int, numpy.ndarray, numpy.ndarray]] = []
    for i, eg in enumerate(examples):
        if len(eg.predicted) and has_soft_targets(eg):
            targets, has = aligned_soft_targets(eg, tags, i, pipe.name)
            if has.any():
                found.append((i, targets, has))
    if not found:
        return 0.0
    import torch
    from thinc.api import PyTorchShim, torch2xp, xp2torch

    shim = cast(PyTorchShim, pipe.model.get_ref("crf").layers[0].shims[0])
    module, device = shim._model, shim.device
    xp = pipe.model.ops.xp
    lengths = [len(targets) for _, targets, _ in found]
    B, T, K = len(found), max(lengths), len(tags)
    E = xp.zeros((B, T, K), dtype="float32")
    Q = numpy.zeros((B, T, K), dtype="float32")
    mask = numpy.zeros((B, T), dtype=bool)
    has_target = numpy.zeros((B, T), dtype=bool)
    for r, (i, targets, has) in enumerate(found):
        n = lengths[r]
        E[r, :n] = emissions[i]
        Q[r, :n] = targets
        mask[r, :n] = True
        has_target[r, :n] = has
    E_t = xp2torch(E, requires_grad=True, device=device)
    kl = module.kl_to_targets(
        E_t,
        torch.as_tensor(mask, device=device),
        torch.as_tensor(Q, device=device),
        torch.as_tensor(has_target, device=device),
    )
    total = kl.sum()
    (total * (weight / n_tokens)).backward()
    grad = cast(Floats3d, torch2xp(cast(torch.Tensor, E_t.grad)))
    for r, (i, _, _) in enumerate(found):
        d_emissions[i] = d_emissions[i] + grad[r, : lengths[r]]
    return weight * float(total.detach())


def aligned_soft_targets(
    example: Example, tags: Sequence[str], index: int, name: str
) -> Tuple[numpy.ndarray, numpy.ndarray]:
    """The soft targets of an example on its predicted tokens, over `tags` in that order:
    ((len(predicted), len(tags)) float32, rows summing to 1 where there is a target, and
    (len(predicted),) bool, which tokens have one).

    index, name: the example's position in the batch and the pipe's name, for error messages.
    """
    ref = example.reference
    data = ref.user_data[SOFT_TARGETS_KEY]
    where = f"{name}: doc {index} of the batch ({ref.text[:50]!r}...)"
    try:
        source_tags = tuple(data["tags"])
        probs = numpy.asarray(data["probs"], dtype="float32")
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(
            f"{where} has damaged soft targets in user_data[{SOFT_TARGETS_KEY!r}] ({err}): "
            "write the corpus again with `python -m spacy_bert_crf distill`."
        ) from err
    if probs.shape != (len(ref), len(source_tags)):
        raise ValueError(
            f"{where} has soft targets of shape {probs.shape} for {len(ref)} tokens and "
            f"{len(source_tags)} tags: the doc was changed after the teacher annotated it (an "
            "augmenter that adds or removes tokens must not copy user_data)."
        )
    order = _tag_order(source_tags, tuple(tags), where)
    probs = probs[:, order]
    totals = probs.sum(1)
    has_ref = totals > 0
    probs[has_ref] /= totals[has_ref, None]  # stored as float16: renormalise
    n = len(example.predicted)
    if n == len(ref) and all(
        x.text == y.text for x, y in zip(example.predicted, ref)
    ):
        return probs, has_ref
    # one predicted token <-> one reference token, as spaCy aligns the gold tags
    x2y, y2x = example.alignment.x2y, example.alignment.y2x
    x_lengths = numpy.asarray(x2y.lengths)
    starts = numpy.concatenate([[0], numpy.cumsum(x_lengths)[:-1]]).astype(int)
    data_x = numpy.asarray(x2y.data)
    one = x_lengths == 1
    j = numpy.zeros(n, dtype=int)
    j[one] = data_x[starts[one]]
    one &= numpy.asarray(y2x.lengths)[j] == 1
    one &= has_ref[j]
    out = numpy.zeros((n, len(tags)), dtype="float32")
    out[one] = probs[j[one]]
    return out, one


@lru_cache(maxsize=64)
def _cached_order(source: Tuple[str, ...], tags: Tuple[str, ...]) -> Optional[Tuple[int, ...]]:
    if len(source) != len(tags) or set(source) != set(tags):
        return None
    position = {tag: k for k, tag in enumerate(source)}
    return tuple(position[tag] for tag in tags)


def _tag_order(source: Tuple[str, ...], tags: Tuple[str, ...], where: str) -> List[int]:
    order = _cached_order(source, tags)
    if order is None:
        raise ValueError(
            f"{where} has soft targets over the tags {list(source)}, but the component has the "
            f"tags {list(tags)}: the teacher's labels or tag scheme differ from the student's. "
            "Annotate the corpus with a teacher of the same labels (python -m spacy_bert_crf "
            "distill checks this)."
        )
    return list(order)

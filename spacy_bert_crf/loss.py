"""crf_ner's training loss: the CRF's negative log-likelihood of the gold annotation, with the
tokens whose gold tag is missing ("-" / None) marginalised over every tag the scheme allows there
(not read as "O"), plus distill_weight x KL(teacher || model) on the tokens whose reference doc
carries a teacher's soft targets (distillation/loss.py)."""
import warnings
from typing import TYPE_CHECKING, Dict, List, Sequence, Tuple

import numpy
from spacy.language import Language
from spacy.training import Example
from thinc.types import Floats2d

from .distillation.loss import distillation_loss
from .tag_schemes import biluo_to_scheme

if TYPE_CHECKING:
    from .pipeline import CRFEntityRecognizer


def crf_loss(
    pipe: "CRFEntityRecognizer", examples: Sequence[Example], emissions: List[Floats2d]
) -> Tuple[float, List[Floats2d]]:
    """The loss of the pipe on a batch and d_emissions per doc: the gradient of the loss
    divided by the number of tokens in the batch (pipe.normalize_loss) or of the loss summed
    over tokens. The gradient of the CRF's own parameters is accumulated (they are
    updated by the next finish_update).
    """
    ops = pipe.model.ops
    index = {tag: i for i, tag in enumerate(pipe.tags)}
    rows, allowed = [], []
    for i, eg in enumerate(examples):
        if len(eg.predicted):
            rows.append(i)
            allowed.append(gold_allowed(pipe, eg, i, index))
    d_emissions = [ops.alloc2f(*e.shape) for e in emissions]
    if not rows:
        return 0.0, d_emissions
    crf = pipe.model.get_ref("crf")
    nll, backprop = crf.begin_update(([emissions[i] for i in rows], allowed))
    # the gradient of the mean over the batch's tokens, or of the sum (normalize_loss False)
    divisor = sum(len(emissions[i]) for i in rows) if pipe.normalize_loss else 1
    d_rows = backprop(ops.alloc1f(len(rows)) + 1.0 / divisor)
    for i, d in zip(rows, d_rows):
        d_emissions[i] = d
    loss = float(nll.sum())
    # + distill_weight x KL(teacher || model) where the reference docs carry soft targets
    loss += distillation_loss(pipe, examples, emissions, d_emissions, divisor)
    if not numpy.isfinite(loss):
        raise ValueError(f"{pipe.name}: the loss is not finite ({loss}).")
    return loss, d_emissions


def gold_allowed(
    pipe: "CRFEntityRecognizer", eg: Example, i: int, index: Dict[str, int]
) -> numpy.ndarray:
    """The tags each predicted token of the example `eg` (doc i of the batch) may take under its
    gold annotation, (len(eg.predicted), n_tags) bool on the model's device: its gold tag, or
    every tag where the annotation is missing. `index`: tag -> id.
    """
    allowed = numpy.zeros((len(eg.predicted), len(index)), dtype=bool)
    for j, biluo in enumerate(eg.get_aligned_ner()):
        tag = biluo_to_scheme(biluo, pipe.scheme)
        if tag is None:
            allowed[j] = True
        elif tag in index:
            allowed[j, index[tag]] = True
        else:
            token = eg.predicted[j]
            raise ValueError(
                f"{pipe.name}: doc {i} of the batch ({eg.predicted.text[:50]!r}...) has the "
                f"gold tag {tag!r} on token {j} ({token.text!r}), but its label is not one of "
                f"{list(pipe.labels)}. Add it to the labels before initialize."
            )
    return pipe.model.ops.xp.asarray(allowed)


def warn_on_loss_scales(pipe: "CRFEntityRecognizer", nlp: Language) -> None:
    """Warn when `pipe` takes the mean of its loss over tokens (normalize_loss) but shares its
    transformer or tok2vec with other components (spaCy's own sum their losses over tokens):
    their gradients into the shared layer are then about as many times larger as a batch has
    tokens, and on CoNLL-2003 crf_ner hardly learned next to spaCy's tagger (issue 15: dev F1
    30.7 after 900 steps, 91.2 alone). Other crf_ner pipes that also take the mean, and frozen
    components ([training] frozen_components), are fine.
    """
    if not pipe.normalize_loss:
        return
    components = dict(nlp.components)
    frozen = set(nlp.config.get("training", {}).get("frozen_components") or [])
    for upstream, proc in nlp.components:
        listener_map = getattr(proc, "listener_map", None)
        if not isinstance(listener_map, dict) or pipe.name not in listener_map:
            continue
        summed = [
            name for name in listener_map
            if name != pipe.name and name not in frozen
            and getattr(components.get(name), "normalize_loss", False) is not True
        ]
        if summed:
            warnings.warn(
                f"{pipe.name!r} takes the mean of its loss over tokens (normalize_loss = true) "
                f"but shares {upstream!r} with {', '.join(map(repr, summed))}, whose losses "
                f"are summed over tokens: their gradients into {upstream!r} are about as many "
                f"times larger as a batch has tokens, and {pipe.name!r} may hardly learn. Set "
                f"[components.{pipe.name}] normalize_loss = false to sum its loss too.",
                UserWarning,
            )

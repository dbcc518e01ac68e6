"""Layer-wise learning rates for fine-tuning: `spacy-bert-crf.LayerwiseAdamW.v1`.

thinc calls its optimizer once per parameter, as ``optimizer(key, weights, gradient)``, with the key
``(node id, parameter name)`` for a thinc layer's own parameters ("W", "b", ...) and
``(shim id, torch name)`` for the parameters of a wrapped PyTorch module: the PyTorchShim (and
spacy-transformers' HFShim, a subclass) passes ``model.named_parameters()`` names, such as
``encoder.layer.3.attention.self.query.weight`` for a BERT. The parameter's name is therefore
enough to place it:

- transformer layer ``i`` (a name with ``layer.i.``, ``layers.i.``, ``h.i.`` or ``block(s).i.``):
  depth from the top ``n_layers - 1 - i``;
- the embeddings (``embeddings.``): depth ``n_layers``, the lowest;
- the pooler (``pooler.``): depth 0, with the top layer;
- a name without a dot, the head: thinc's own parameters (crf_ner's emission layer, a tagger's
  softmax, a spaCy tok2vec) and the top-level parameters of the small PyTorch modules of the
  head (the CRF's transitions, start and end scores; the BiLSTM's weights).

The rate of a parameter at a step is ``learn_rate * layer_decay ** depth`` in the transformer and
``learn_rate * head_lr_scale`` in the head, where ``learn_rate`` is a number or a schedule (it
follows the schedule: thinc's ``lr_scale``). Any other dotted name (an encoder laid out
differently) is an error naming the parameters, never the base rate in silence.
"""
import re
from typing import Dict, Iterable, List, Optional, Tuple

from spacy.util import registry
from thinc.api import Optimizer
from thinc.optimizers import ADAM_DEFAULTS, FloatOrSeq, KeyT
from thinc.types import FloatsXd

HEAD = "head"
EMBEDDINGS = "embeddings"
# A transformer block's index in its parameter name: BERT/RoBERTa/XLM-R/ELECTRA "encoder.layer.3.",
# DistilBERT "transformer.layer.3.", GPT-2 "h.3.", others "layers.3." or "blocks.3.".
LAYER_INDEX = re.compile(r"(?:^|\.)(?:layer|layers|h|block|blocks)\.(\d+)\.")
EMBEDDINGS_NAME = re.compile(r"(?:^|\.)embeddings\.")
POOLER_NAME = re.compile(r"(?:^|\.)pooler\.")
MAX_LISTED = 10


class LayerPlacementError(ValueError):
    """Parameters the layer-wise optimizer cannot place in a transformer layer or the head."""


def parameter_depth(name: str, n_layers: int) -> Optional[int]:
    """The depth from the top of a parameter, by its name: 0 for the top transformer layer (and
    the pooler), n_layers for the embeddings; -1 for the head (a name without a dot); None when
    the name cannot be placed.

    name (str): The parameter's name, as thinc hands it to the optimizer.
    n_layers (int): The number of transformer layers.
    RETURNS (Optional[int]): The depth, -1 (head) or None (unknown).
    """
    if "." not in name:
        return -1
    match = LAYER_INDEX.search(name)
    if match is not None:
        index = int(match.group(1))
        return n_layers - 1 - index if index < n_layers else None
    if EMBEDDINGS_NAME.search(name):
        return n_layers
    if POOLER_NAME.search(name):
        return 0
    return None


class LayerwiseOptimizer(Optimizer):
    """thinc's Adam (decoupled weight decay when L2_is_weight_decay) with a rate per parameter:
    ``learn_rate * layer_decay ** depth`` in the transformer, ``learn_rate * head_lr_scale`` in the
    head (see the module). ``lr_scales`` holds the factor of every parameter seen so far."""

    def __init__(
        self,
        learn_rate: FloatOrSeq,
        *,
        n_layers: int,
        layer_decay: float,
        head_lr_scale: float,
        **adam_settings,
    ) -> None:
        if not isinstance(n_layers, int) or isinstance(n_layers, bool) or n_layers < 1:
            raise ValueError(
                f"n_layers must be an integer >= 1 (the encoder's layers), got {n_layers!r}."
            )
        if not 0.0 < layer_decay <= 1.0:
            raise ValueError(f"layer_decay must be in (0, 1], got {layer_decay!r}.")
        if not head_lr_scale > 0.0:
            raise ValueError(f"head_lr_scale must be > 0, got {head_lr_scale!r}.")
        super().__init__(learn_rate, **adam_settings)
        self.n_layers = n_layers
        self.layer_decay = float(layer_decay)
        self.head_lr_scale = float(head_lr_scale)
        self.lr_scales: Dict[KeyT, float] = {}
        self._top_seen = -1
        self._checked_top = False

    def lr_scale_of(self, name: str) -> float:
        """The factor of the base rate for a parameter name.

        RAISES (LayerPlacementError): The name cannot be placed.
        """
        return self.place([name])[name]

    def place(self, names: Iterable[str]) -> Dict[str, float]:
        """The factor of the base rate for each parameter name.

        RAISES (LayerPlacementError): Some names cannot be placed (all of them are listed).
        """
        out: Dict[str, float] = {}
        unplaced: List[str] = []
        for name in names:
            depth = parameter_depth(name, self.n_layers)
            if depth is None:
                unplaced.append(name)
            elif depth < 0:
                out[name] = self.head_lr_scale
            else:
                out[name] = self.layer_decay**depth
        if unplaced:
            shown = ", ".join(repr(n) for n in unplaced[:MAX_LISTED])
            more = f" and {len(unplaced) - MAX_LISTED} more" if len(unplaced) > MAX_LISTED else ""
            too_deep = [n for n in unplaced if _layer_index(n) is not None]
            hint = (
                f" Layer indices >= n_layers ({self.n_layers}) were found: set n_layers to the "
                "encoder's number of layers (num_hidden_layers in its config.json)."
                if too_deep
                else " Their names match no transformer layer (layer.N., layers.N., h.N., "
                "blocks.N.), embeddings., pooler. or head parameter (a name without a dot): "
                "use Adam.v1 for this encoder."
            )
            raise LayerPlacementError(
                f"spacy-bert-crf.LayerwiseAdamW.v1 cannot place {len(unplaced)} parameter(s): "
                f"{shown}{more}.{hint}"
            )
        return out

    def __call__(
        self, key: KeyT, weights: FloatsXd, gradient: FloatsXd, *, lr_scale: float = 1.0
    ) -> Tuple[FloatsXd, FloatsXd]:
        return super().__call__(key, weights, gradient, lr_scale=lr_scale * self.scale_for(key))

    def scale_for(self, key: KeyT) -> float:
        """The factor of the base rate for the parameter of an update (its key: node id and
        name), remembered, and the top layer updated so far noted (see step_schedules)."""
        scale = self.lr_scales.get(key)
        if scale is None:
            scale = self.lr_scales[key] = self.lr_scale_of(key[1])
            index = _layer_index(key[1])
            if index is not None:
                self._top_seen = max(self._top_seen, index)
        return scale

    def step_schedules(self) -> None:
        """Advance the schedules; after the first step that updated the transformer, check that
        its top layer is n_layers - 1 (a larger n_layers would shrink every layer's rate)."""
        if not self._checked_top and self._top_seen >= 0:
            self._checked_top = True
            if self._top_seen != self.n_layers - 1:
                raise LayerPlacementError(
                    f"spacy-bert-crf.LayerwiseAdamW.v1 has n_layers = {self.n_layers}, but the "
                    f"transformer's top updated layer is layer {self._top_seen} "
                    f"({self._top_seen + 1} layers): set n_layers = {self._top_seen + 1}."
                )
        super().step_schedules()


def is_plain_adam(optimizer: object) -> bool:
    """Whether the optimizer is thinc's Adam or RAdam (Adam.v1, RAdam.v1) or LayerwiseAdamW.v1
    without parameter averaging: every update of an array goes through its mom1/mom2 and nothing
    else keeps state (what the row-sparse and fused updates of layers/ rely on)."""
    return (
        type(optimizer) in (Optimizer, LayerwiseOptimizer)
        and getattr(optimizer, "averages", None) is None
        and getattr(optimizer, "b1", 0.0) > 0.0
        and getattr(optimizer, "b2", 0.0) > 0.0
    )


def _layer_index(name: str) -> Optional[int]:
    if "." not in name:
        return None
    match = LAYER_INDEX.search(name)
    return int(match.group(1)) if match is not None else None


@registry.optimizers("spacy-bert-crf.LayerwiseAdamW.v1")
def create_layerwise_adamw(
    learn_rate: FloatOrSeq = 0.0001,
    *,
    n_layers: int,
    layer_decay: float = 0.9,
    head_lr_scale: float = 10.0,
    L2: FloatOrSeq = 0.01,
    L2_is_weight_decay: bool = True,
    beta1: FloatOrSeq = ADAM_DEFAULTS["beta1"],
    beta2: FloatOrSeq = ADAM_DEFAULTS["beta2"],
    eps: FloatOrSeq = ADAM_DEFAULTS["eps"],
    grad_clip: FloatOrSeq = ADAM_DEFAULTS["grad_clip"],
    use_averages: bool = False,
) -> LayerwiseOptimizer:
    """Adam with decoupled weight decay (thinc's Adam, L2_is_weight_decay) and layer-wise rates.

    learn_rate (float / schedule): The rate of the transformer's top layer (a spaCy schedule such
        as warmup_linear.v1 works: every rate follows it).
    n_layers (int): The encoder's number of layers (num_hidden_layers in its config.json: 6 for
        MiniLM-L6, 12 for e5-small). A wrong value is an error at the first update.
    layer_decay (float): The rate is multiplied by this for each layer down from the top; the
        embeddings are one below the first layer. 1.0 = one rate for the whole transformer.
    head_lr_scale (float): The head's rate (every parameter outside the transformer: crf_ner's
        emissions and CRF transitions, a tagger's softmax) as a multiple of learn_rate.
    L2, L2_is_weight_decay, beta1, beta2, eps, grad_clip, use_averages: As for Adam.v1.
    RETURNS (LayerwiseOptimizer): The optimizer.
    """
    return LayerwiseOptimizer(
        learn_rate,
        n_layers=n_layers,
        layer_decay=layer_decay,
        head_lr_scale=head_lr_scale,
        L2=L2,
        L2_is_weight_decay=L2_is_weight_decay,
        beta1=beta1,
        beta2=beta2,
        eps=eps,
        grad_clip=grad_clip,
        use_averages=use_averages,
    )

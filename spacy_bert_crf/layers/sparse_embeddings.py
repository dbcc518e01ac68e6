"""Row-sparse updates of the encoder's input embedding matrix: the same training, less work.

Most of a multilingual encoder's weights are its wordpiece embedding matrix (e5-small: 250,037
pieces x 384, 96M of 118M weights), while a batch looks up a few thousand of its rows. Trained
the usual way, every step still writes a dense gradient for the whole matrix, and the optimizer
walks all of it (gradient norm, Adam, weight decay): about as much work as the rest of a step
(benchmarks/results/train_step.md).

Here the matrix gets no torch gradient. In training, a forward hook on the embedding module
records the rows a batch looks up, and its backward pass the gradient of each row (the padding
row left out, as torch's embedding does). At `finish_update` the optimizer is called on the
*active* rows only: the rows that have ever had a gradient, i.e. whose Adam moments are not
zero. For every other row Adam's step is exactly zero (zero moments, zero gradient), so all the
dense update does to it is the decoupled weight decay ``w -= lr * L2 * w``: applied here in one
pass with the same arithmetic. The optimizer's state keeps the key and the shape of a dense
update (its full moment arrays; the active rows' parts are swapped in around the call), so
checkpoints are the same and a run can go from one to the other.

The weights equal those of the dense update up to float rounding in the gradient's sum and
norm (tests/test_transformer.py). The row-sparse step is taken with thinc's Adam (Adam.v1,
RAdam) and LayerwiseAdamW.v1, with decoupled or no weight decay and no parameter averaging;
with any other optimizer the recorded rows are assembled into the dense gradient and the
optimizer gets that, as before. It is not used (the matrix trains densely, as in
spacy-transformers) for an embedding that is not a plain ``torch.nn.Embedding`` (sparse, with
max_norm or scale_grad_by_freq), whose weight is shared with another module, or with mixed
precision. ``model.attrs["sparse_embedding_updates"] = False`` on the transformer model turns
it off (benchmarks/train_step.py compares the two).
"""
import weakref
from typing import Any, List, Optional, Tuple, cast

import torch
from spacy_transformers.layers.hf_shim import HFShim
from thinc.api import Optimizer, get_array_module
from thinc.util import torch2xp

from ..optimizers import LayerwiseOptimizer, is_plain_adam
from .fused_update import fused_adam_update

# rows of the embedding matrix decayed at a time (a small temporary, cache-friendly)
DECAY_CHUNK_ROWS = 1024
_RECORDS = "_spacy_bert_crf_rows"  # (ids, gradients) of the backward passes since the update
_HAS_GRAD = "_spacy_bert_crf_has_grad"  # a backward pass has reached the matrix (as .grad would)
# embedding module -> (its optimizer's moment array, the rows with non-zero moments): beside the
# module, not in it, so that copying or pickling a trained pipeline does not take the array along
_ACTIVE: "weakref.WeakKeyDictionary[Any, Tuple[Any, Any]]" = weakref.WeakKeyDictionary()


class SparseEmbeddingHFShim(HFShim):
    """spacy-transformers' HFShim whose update of the input embedding matrix takes only the rows
    that have had a gradient (see the module), and whose update of the other weights is one
    multi-tensor step where it can be (fused_update.py; `fused_update` False: thinc's loop).
    Everything else is HFShim's."""

    fused_update = True

    def finish_update(self, optimizer: Optimizer) -> None:
        if not (self.fused_update and fused_adam_update(self, optimizer)):
            super().finish_update(optimizer)
        update_embedding_rows(self, optimizer)


def set_sparse_embedding_updates(shim: Any, embeddings: Any, enable: bool) -> bool:
    """Make the shim update its encoder's input embeddings row-sparsely, or densely again.

    shim: The transformer's shim (HFShim or SparseEmbeddingHFShim; others are left alone).
    embeddings: The encoder's input embedding module.
    enable (bool): Row-sparse (True) or dense (False) updates.
    RETURNS (bool): Whether the updates are row-sparse now.
    """
    if not isinstance(shim, HFShim) or not isinstance(embeddings, torch.nn.Module):
        return False
    weight: Any = getattr(embeddings, "weight", None)
    hooked = _capture_rows in embeddings._forward_hooks.values()
    if enable and hooked and type(shim) is SparseEmbeddingHFShim:
        return True  # set up at an earlier step: no walk over the parameters again
    if enable and not _supported(shim, embeddings):
        enable = False
    if enable:
        if type(shim) is not SparseEmbeddingHFShim:
            if weight.grad is not None:  # dense steps before: the optimizer already sees it
                embeddings.__dict__[_HAS_GRAD] = True
                weight.grad = None
            shim.__class__ = SparseEmbeddingHFShim
        weight.requires_grad_(False)
        if not hooked:
            embeddings.register_forward_hook(_capture_rows)
        embeddings.__dict__.setdefault(_RECORDS, [])
        return True
    if type(shim) is SparseEmbeddingHFShim:
        if embeddings.__dict__.get(_RECORDS):
            raise RuntimeError(
                "Row-sparse embedding updates were turned off between a backward pass and its "
                "update (finish_update): turn them off between training steps."
            )
        for key, hook in list(embeddings._forward_hooks.items()):
            if hook is _capture_rows:
                del embeddings._forward_hooks[key]
        cast(Any, shim).__class__ = HFShim
        if weight is not None:
            weight.requires_grad_(True)
    return False


def _supported(shim: HFShim, embeddings: Any) -> bool:
    if not isinstance(embeddings, torch.nn.Embedding) or type(embeddings).forward is not (
        torch.nn.Embedding.forward
    ):
        return False
    if embeddings.sparse or embeddings.max_norm is not None or embeddings.scale_grad_by_freq:
        return False
    if getattr(shim, "_mixed_precision", False):
        return False
    weight = embeddings.weight
    shared = [p for _, p in shim._model.named_parameters(remove_duplicate=False) if p is weight]
    return len(shared) == 1


class _RowGradients(torch.autograd.Function):
    """Passes the looked-up vectors on; its backward pass records their gradient by row."""

    @staticmethod
    def forward(ctx: Any, vectors: torch.Tensor, anchor: torch.Tensor, ids: torch.Tensor,
                module: torch.nn.Embedding) -> torch.Tensor:
        ctx.ids = ids
        ctx.module = module
        return vectors.clone()

    @staticmethod
    def backward(ctx: Any, d_vectors: torch.Tensor) -> Tuple[None, None, None, None]:
        module = ctx.module
        ids = ctx.ids.reshape(-1)
        grads = d_vectors.reshape(-1, d_vectors.shape[-1])
        if module.padding_idx is not None:  # torch's embedding gives the padding row nothing
            keep = ids != module.padding_idx
            ids, grads = ids[keep], grads[keep]
        module.__dict__.setdefault(_RECORDS, []).append((ids, grads.detach()))
        module.__dict__[_HAS_GRAD] = True
        return None, None, None, None


def _capture_rows(module: torch.nn.Embedding, args: Tuple[Any, ...],
                  output: torch.Tensor) -> Optional[torch.Tensor]:
    """Forward hook of the embedding module: in training, route the output through
    _RowGradients (the weight itself takes no gradient)."""
    if not (module.training and torch.is_grad_enabled()) or torch.jit.is_tracing():
        return None
    anchor = torch.zeros((), device=output.device, requires_grad=True)  # so backward reaches it
    return _RowGradients.apply(output, anchor, args[0], module)


def _parameter_name(model: torch.nn.Module, weight: torch.nn.Parameter) -> str:
    for name, param in model.named_parameters():
        if param is weight:
            return name
    raise ValueError("The input embedding matrix is not a parameter of the encoder.")


def update_embedding_rows(shim: HFShim, optimizer: Optimizer) -> None:
    """The optimizer's update of the input embedding matrix, from the rows recorded since the
    last update (see the module). Called by SparseEmbeddingHFShim.finish_update."""
    embeddings = shim._model.get_input_embeddings()
    records: List[Tuple[torch.Tensor, torch.Tensor]] = embeddings.__dict__.get(_RECORDS, [])
    if not embeddings.__dict__.get(_HAS_GRAD):  # no backward pass yet: no .grad, no update
        return
    weight = embeddings.weight
    width = weight.shape[1]
    if records:
        all_ids = torch.cat([ids for ids, _ in records])
        all_grads = torch.cat([grads for _, grads in records])
        records.clear()
        ids_t, inverse = torch.unique(all_ids, return_inverse=True)  # sorted
        grads_t = torch.zeros((len(ids_t), width), dtype=all_grads.dtype,
                              device=all_grads.device).index_add_(0, inverse, all_grads)
    else:  # the dense update still steps (zero gradient): moments decay, weights decay
        ids_t = torch.zeros((0,), dtype=torch.long, device=weight.device)
        grads_t = torch.zeros((0, width), dtype=weight.dtype, device=weight.device)
    key = (shim.id, _parameter_name(shim._model, weight))
    matrix = torch2xp(weight.data)
    ids, grads = torch2xp(ids_t), torch2xp(grads_t)
    if _row_sparse_is_exact(optimizer):
        _sparse_update(optimizer, key, embeddings, matrix, ids, grads)
    else:
        _dense_update(optimizer, key, matrix, ids, grads)


def _row_sparse_is_exact(optimizer: Optimizer) -> bool:
    """Whether the row-sparse step is the dense one for this optimizer (see the module)."""
    # SGD has no moments to go by; L2 in the gradient would give every row a gradient
    return is_plain_adam(optimizer) and not (
        optimizer.L2 != 0 and not optimizer.L2_is_weight_decay)


def _dense_update(optimizer: Optimizer, key: Any, matrix: Any, ids: Any, grads: Any) -> None:
    xp = get_array_module(matrix)
    gradient = xp.zeros_like(matrix)
    gradient[ids] = grads
    param, _ = optimizer(key, matrix, gradient)
    if param is not matrix:
        matrix[...] = param.reshape(matrix.shape)


def _active_rows(embeddings: Any, mom1: Any, mom2: Any, n_rows: int) -> Any:
    """The rows whose Adam moments are not zero (cached with the moment array they come from:
    a resumed run reads them from its optimizer once)."""
    cached = _ACTIVE.get(embeddings)
    if cached is not None and cached[0]() is mom1:
        return cached[1]
    xp = get_array_module(mom1)
    active = (mom1.reshape(n_rows, -1) != 0).any(axis=1) | (mom2.reshape(n_rows, -1) != 0).any(
        axis=1)
    active = xp.ascontiguousarray(active)
    _ACTIVE[embeddings] = (weakref.ref(mom1), active)
    return active


def _sparse_update(optimizer: Optimizer, key: Any, embeddings: Any, matrix: Any, ids: Any,
                   grads: Any) -> None:
    row_weights: Any
    mom1: Any
    mom2: Any
    xp = get_array_module(matrix)
    n_rows, width = matrix.shape
    for moments in (optimizer.mom1, optimizer.mom2):
        if key not in moments:
            moments[key] = xp.zeros((matrix.size,), dtype="float32")
        elif not getattr(getattr(moments[key], "flags", None), "writeable", True):
            moments[key] = xp.array(moments[key])  # written into below, row by row
    mom1, mom2 = optimizer.mom1[key], optimizer.mom2[key]
    active = _active_rows(embeddings, mom1, mom2, n_rows)
    active[ids] = True
    rows = xp.flatnonzero(active)
    row_grads = xp.zeros((len(rows), width), dtype=matrix.dtype)
    row_grads[xp.searchsorted(rows, ids)] = grads
    moments1, moments2 = mom1.reshape(n_rows, width), mom2.reshape(n_rows, width)
    row_weights = matrix[rows].reshape(-1)
    if len(rows):
        optimizer.mom1[key] = moments1[rows].reshape(-1)
        optimizer.mom2[key] = moments2[rows].reshape(-1)
        try:
            row_weights, _ = optimizer(key, row_weights, row_grads.reshape(-1))
            updated: Any = (optimizer.mom1[key], optimizer.mom2[key])
            moments1[rows] = updated[0].reshape(-1, width)
            moments2[rows] = updated[1].reshape(-1, width)
        finally:
            optimizer.mom1[key], optimizer.mom2[key] = mom1, mom2
    else:  # thinc's call returns early on an empty gradient; the dense one would count
        optimizer.nr_update[key] += 1
    # the lr_scale the optimizer gave the key (thinc's shim passes none: 1.0)
    scale = 1.0 * optimizer.lr_scale_of(key[1]) if isinstance(optimizer, LayerwiseOptimizer) \
        else 1.0
    if optimizer.L2 != 0 and optimizer.L2_is_weight_decay:
        # thinc: weights -= lr_scale * learn_rate * L2 * weights, on every row
        decay = scale * optimizer.learn_rate * optimizer.L2
        for start in range(0, n_rows, DECAY_CHUNK_ROWS):
            chunk = matrix[start:start + DECAY_CHUNK_ROWS]
            chunk -= decay * chunk
    if len(rows):
        matrix[rows] = row_weights.reshape(-1, width)


__all__ = ["SparseEmbeddingHFShim", "set_sparse_embedding_updates", "update_embedding_rows"]

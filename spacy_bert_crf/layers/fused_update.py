"""One optimizer step over all of a transformer's weight arrays at once, with the arithmetic of
thinc's Adam.

thinc's optimizer is called once per parameter array: for each of the encoder's ~200 arrays a
gradient norm (read back to the host to compare with grad_clip), the Adam kernel, the weight
decay and two dlpack hand-overs between torch and cupy. On a GPU that walk, not the arithmetic,
is what a step waits for: half of a training step of e5-small-zh on MSRA batches on an H200
(87 of 179 ms, benchmarks/results/msra_convergence.md). Here the same update is written with
torch's multi-tensor (`torch._foreach_*`) operations, a few kernel launches per step for all the
arrays together and no read-back:

- L2 in the gradient (L2_is_weight_decay false): ``g += L2 * w``;
- per-array clipping: ``g *= grad_clip / |g|`` where ``|g| >= grad_clip`` (thinc's rule: each
  array by its own norm, not one global norm);
- Adam: ``m1 = b1 m1 + (1 - b1) g``, ``m2 = b2 m2 + (1 - b2) g²``,
  ``w -= lr_t (m1 / (sqrt(m2) + eps))`` with ``lr_t = lr * lr_scale * sqrt(1 - b2^t) / (1 - b1^t)``
  and t the array's own update count;
- decoupled weight decay (L2_is_weight_decay): ``w -= lr * lr_scale * L2 * w``, after the step.

The optimizer's state is thinc's: its nr_update counts and its mom1/mom2 arrays (numpy or
cupy, updated in place through torch views), so checkpoints, resuming and a switch between the
two paths mid-run work as before. Weights equal thinc's path up to float rounding
(tests/test_transformer.py). It is taken for thinc's Adam (Adam.v1) and
spacy-bert-crf.LayerwiseAdamW.v1 without parameter averaging, on a GPU; otherwise (a CPU,
RAdam, SGD, use_averages, sparse or non-float32 gradients, mixed precision that found an
overflow) thinc's per-array loop runs as before. The transformer model's
``attrs["fused_optimizer_update"] = False`` turns it off.
"""
from typing import Any, List, Optional

import numpy
import torch
from thinc.api import Optimizer

from ..optimizers import LayerwiseOptimizer, is_plain_adam

# Where the fused step is taken. On a CPU thinc's loop is kept (not timed against the fused step
# there): the per-array overhead is small beside a CPU step, and thinc's numpy Adam is one pass
# over the weights where the multi-tensor version makes several. Tests add "cpu" to check the
# arithmetic.
DEVICE_TYPES = ("cuda",)


def is_fusable(optimizer: Any) -> bool:
    """Whether `fused_adam_update` reproduces this optimizer's per-array update."""
    return is_plain_adam(optimizer) and not optimizer.use_radam


def fused_adam_update(shim: Any, optimizer: Optimizer) -> bool:
    """Update every parameter of the shim's torch model that has a gradient, as thinc's
    PyTorchShim.finish_update would with this optimizer, and zero the gradients.

    RETURNS (bool): False, with nothing changed, where the fused step does not apply (the
        caller then runs thinc's loop).
    """
    if not is_fusable(optimizer):
        return False
    scaler = getattr(shim, "_grad_scaler", None)
    if scaler is not None and scaler.found_inf:
        return False
    names: List[str] = []
    params: List[torch.Tensor] = []
    grads: List[torch.Tensor] = []
    for name, param in shim._model.named_parameters():
        grad = param.grad
        if grad is None:
            continue
        if grad.is_sparse or grad.dtype != torch.float32 or param.dtype != torch.float32:
            return False
        if grad.numel() == 0:  # thinc's optimizer skips empty arrays too
            continue
        names.append(name)
        params.append(param.data)
        grads.append(grad)
    if not params:
        return True
    if len({p.device for p in params}) != 1 or params[0].device.type not in DEVICE_TYPES:
        return False
    keys = [(shim.id, name) for name in names]
    found = [_moment(moments, key, p) for moments in (optimizer.mom1, optimizer.mom2)
             for key, p in zip(keys, params)]
    m1 = [m for m in found[: len(keys)] if m is not None]
    m2 = [m for m in found[len(keys):] if m is not None]
    if len(m1) + len(m2) != len(found):  # moments elsewhere than the weights: thinc's loop
        return False
    scales = [_lr_scale(optimizer, key) for key in keys]
    counts = []
    for key in keys:
        optimizer.nr_update[key] += 1
        counts.append(optimizer.nr_update[key])
    b1, b2, eps = float(optimizer.b1), float(optimizer.b2), float(optimizer.eps)
    lr, l2 = float(optimizer.learn_rate), float(optimizer.L2)
    with torch.no_grad():
        if l2 != 0 and not optimizer.L2_is_weight_decay:
            torch._foreach_add_(grads, params, alpha=l2)
        if optimizer.grad_clip:
            clip = float(optimizer.grad_clip)
            norms = torch.stack(torch._foreach_norm(grads))
            factors = torch.where(norms >= clip, clip / norms, torch.ones_like(norms))
            torch._foreach_mul_(grads, list(factors.unbind()))
        torch._foreach_mul_(m1, b1)
        torch._foreach_add_(m1, grads, alpha=1.0 - b1)
        torch._foreach_mul_(m2, b2)
        torch._foreach_addcmul_(m2, grads, grads, value=1.0 - b2)
        denom = torch._foreach_sqrt(m2)
        torch._foreach_add_(denom, eps)
        steps = [-lr * s * (1.0 - b2**t) ** 0.5 / (1.0 - b1**t) for s, t in zip(scales, counts)]
        torch._foreach_addcdiv_(params, m1, denom, steps)
        torch._foreach_zero_(grads)
        if l2 != 0 and optimizer.L2_is_weight_decay:
            torch._foreach_mul_(params, [1.0 - s * lr * l2 for s in scales])
    if scaler is not None:
        scaler.update()
    return True


def _lr_scale(optimizer: Optimizer, key: Any) -> float:
    if isinstance(optimizer, LayerwiseOptimizer):
        return optimizer.scale_for(key)
    return 1.0


def _moment(moments: Any, key: Any, param: torch.Tensor) -> Optional[torch.Tensor]:
    """The optimizer's moment array for `key` (made, zero, if missing) as a torch view of the
    parameter's shape: writing to it writes to the optimizer's array. None if the array is not
    a writable one of the parameter's size on its device."""
    array = moments.get(key)
    if array is None:
        if param.device.type == "cpu":
            array = numpy.zeros((param.numel(),), dtype="float32")
        else:
            import cupy

            with cupy.cuda.Device(param.device.index):
                array = cupy.zeros((param.numel(),), dtype="float32")
        moments[key] = array
    if isinstance(array, numpy.ndarray):
        if not array.flags.writeable or array.dtype != numpy.float32:
            return None
        view = torch.from_numpy(array)
    else:
        view = torch.from_dlpack(array)
        if view.data_ptr() != array.data.ptr:  # a copy: writes would not reach the optimizer
            return None
    if view.device != param.device or view.numel() != param.numel():
        return None
    return view.view(param.shape)

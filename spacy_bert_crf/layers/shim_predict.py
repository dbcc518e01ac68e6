"""Inference through a thinc PyTorchWrapper without thinc's per-call mode switching.

thinc's PyTorchShim.predict walks every submodule of the torch module twice on every call
(eval(), then train() again). At batch size 1 that walk costs more than a short sentence's CRF
decoding, and a noticeable part of the encoder's call. `predict_eval` gives the same output: the
module is put in eval mode only when it is found in train mode, and stays there (thinc's
begin_update puts it in train mode at every training step), and it runs under
torch.inference_mode, which also skips autograd's bookkeeping.
"""
from typing import Any

from thinc.api import Model, PyTorchShim


def predict_eval(layer: Model, X: Any) -> Any:
    """layer.predict(X) for a PyTorchWrapper layer (its convert_inputs / convert_outputs are
    used as thinc uses them), without the per-call eval()/train() walk. A layer without a
    PyTorchShim (e.g. the ONNX encoder) runs its own predict."""
    shim = layer.shims[0] if layer.shims else None
    if not isinstance(shim, PyTorchShim):
        return layer.predict(X)
    import torch  # here: importing this module does not import torch

    module = shim._model
    if module.training:
        module.eval()
    inputs, _ = layer.attrs["convert_inputs"](layer, X, False)
    with torch.inference_mode():
        with torch.autocast(device_type="cuda", enabled=shim._mixed_precision):
            output = module(*inputs.args, **inputs.kwargs)
    output, _ = layer.attrs["convert_outputs"](layer, (X, output), False)
    return output

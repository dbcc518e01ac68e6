"""The optimizer's values (parameter averages) for the torch weights of thinc-wrapped models.

spaCy's training scores dev and saves model-best and model-last under
``nlp.use_params(optimizer.averages)``, and every component passes that on to its thinc model.
The optimizer keeps the state of a torch weight (its moments, and with ``use_averages`` its
moving average) under the key (shim id, parameter name), the key thinc's
PyTorchShim.finish_update passes it; but PyTorchShim.use_params (thinc 8.3) looks for keys
"pytorch_{shim id}_{name}", which no optimizer writes. With ``use_averages = true`` every thinc
layer then took its averaged weights and every torch-wrapped one (the encoder, the CRF's
transitions) kept the weights of the last step: an averaged head on an unaveraged encoder.
``use_torch_params`` reads the keys the optimizer writes; the transformer model
(spacy-bert-crf.TransformerModel.v1/v2) and the crf_ner component call it from their
``use_params``.
"""
import contextlib
from typing import Any, Dict, Iterator, List, Optional, Tuple

import torch
from thinc.api import Model
from thinc.util import xp2torch

# id(torch weight) -> id(the value an enclosing use_torch_params gave it). thinc's
# Model.use_params reaches the transformer's own use_params from an enclosing model's (crf_ner
# with its own copy of the encoder, after nlp.replace_listeners); a nested call with the same
# values leaves those weights alone instead of saving and setting them a second time.
_HELD: Dict[int, int] = {}


@contextlib.contextmanager
def use_torch_params(model: Model, params: Dict[Any, Any]) -> Iterator[None]:
    """Give the torch weights of the model's PyTorch shims (all of model.walk()) the values
    that params holds for them, under the optimizer's keys (shim id, parameter name), while the
    context lasts; then restore the weights they had."""
    saved: List[Tuple[torch.Tensor, torch.Tensor, Optional[int]]] = []
    try:
        with torch.no_grad():
            for node in model.walk() if params else ():
                for shim in node.shims:
                    torch_model = getattr(shim, "_model", None)
                    if not isinstance(torch_model, torch.nn.Module):
                        continue
                    for name, weight in torch_model.named_parameters():
                        value = params.get((shim.id, name))
                        if value is None or _HELD.get(id(weight)) == id(value):
                            continue
                        saved.append((weight, weight.detach().clone(), _HELD.get(id(weight))))
                        _HELD[id(weight)] = id(value)
                        weight.copy_(xp2torch(value, device=weight.device).reshape(weight.shape))
        yield
    finally:
        with torch.no_grad():
            for tensor, kept, held in reversed(saved):
                tensor.copy_(kept)
                if held is None:
                    del _HELD[id(tensor)]
                else:
                    _HELD[id(tensor)] = held


__all__ = ["use_torch_params"]

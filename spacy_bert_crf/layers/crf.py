"""Thinc side of the tagger: emissions from a tok2vec, and the CRF wrapped with PyTorchWrapper.

The tagger model maps ``List[Doc]`` to per-token emission scores (``List[Floats2d]``, one row per
token, one column per tag). Its CRF sublayer (``model.get_ref("crf")``) maps ``(emissions,
allowed)`` to one negative log-likelihood per document; the pipe runs it in ``get_loss`` and sends
its gradient back through the emissions into the tok2vec (and, through a listener, into the
transformer). All parameters, the CRF's included, are updated by spaCy's optimizer through
``model.finish_update``: the PyTorchShim hands the torch parameters to it.

Both the BiLSTM and the CRF are PyTorch modules whose sizes are only known at initialization
(the tok2vec width and the label count), so they are built lazily in ``init``. The pipe sets
``nI``/``nO`` from its cfg and calls ``model.initialize()`` before deserializing, so the model
has the same node structure as the one that was saved.
"""
from typing import Callable, List, Optional, Sequence, Tuple

import numpy
from thinc.api import (
    ArgsKwargs,
    Dropout,
    Linear,
    Model,
    PyTorchLSTM,
    PyTorchWrapper_v2,
    chain,
    torch2xp,
    with_array,
    xp2torch,
)
from thinc.types import Floats1d, Floats2d

from ..tag_schemes import SCHEMES, constraints, make_tags, tags_to_spans

_NEG = -1.0e4  # a tag scored this low has probability exp(-1e4) = 0
CRFInput = Tuple[List[Floats2d], List[numpy.ndarray]]
# (start, end exclusive, label, probability) per predicted entity
Entity = Tuple[int, int, str, float]


def build_tagger_model(
    tok2vec: Model,
    *,
    scheme: str,
    objective: str,
    hidden_width: int,
    depth: int,
    dropout: float,
    nO: Optional[int] = None,
) -> Model[List, List[Floats2d]]:
    """tok2vec -> optional BiLSTM -> dropout -> linear emissions; CRF as a sublayer."""
    if scheme not in SCHEMES:
        raise ValueError(f"Invalid scheme {scheme!r}: expected one of {', '.join(SCHEMES)}.")
    if not isinstance(depth, int) or depth < 0:
        raise ValueError(f"Invalid depth {depth!r}: expected an integer >= 0 (0 = no BiLSTM).")
    if depth > 0 and (not isinstance(hidden_width, int) or hidden_width < 2 or hidden_width % 2):
        raise ValueError(
            f"Invalid hidden_width {hidden_width!r}: expected an even integer >= 2 "
            "(it is split between the two LSTM directions)."
        )
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"Invalid dropout {dropout!r}: expected a value in [0, 1).")
    output = Linear()
    head: Model = with_array(chain(Dropout(dropout), output))
    layers = [tok2vec]
    refs = {"tok2vec": tok2vec, "output": output}
    if depth > 0:
        bilstm = _deferred("bilstm", _build_bilstm, attrs={"width": hidden_width, "depth": depth})
        head = chain(bilstm, head)
        refs["bilstm"] = bilstm
    crf = _deferred("crf", _build_crf, attrs={"scheme": scheme, "objective": objective})
    layers += [head, crf]
    refs["crf"] = crf
    model: Model = Model(
        "crf_tagger",
        _tagger_forward,
        init=_tagger_init,
        layers=layers,
        refs=refs,
        dims={"nI": None, "nO": nO},
        attrs={"scheme": scheme, "objective": objective},
    )
    return model


def _tagger_forward(model: Model, docs: List, is_train: bool) -> Tuple[List[Floats2d], Callable]:
    tok2vec, head = model.layers[0], model.layers[1]
    vectors, bp_tok2vec = tok2vec(docs, is_train)
    emissions, bp_head = head(vectors, is_train)

    def backprop(d_emissions: List[Floats2d]) -> List:
        return bp_tok2vec(bp_head(d_emissions))

    return emissions, backprop


def _tagger_init(model: Model, X: Optional[List] = None, Y=None) -> None:
    """Size and build everything below the tok2vec.

    With X (the pipe's initialize), the tok2vec is initialized and its width measured on X. Without
    X (before deserializing), ``nI`` must already be set from the pipe's cfg; the tok2vec is left
    alone because its weights are about to be loaded.
    """
    if not model.has_dim("nO"):
        raise ValueError("The crf_ner model needs its nO (number of tags) set before initialize.")
    tok2vec = model.get_ref("tok2vec")
    if X is not None:
        tok2vec.initialize(X=X)
        widths = {v.shape[1] for v in tok2vec.predict(X)}
        if len(widths) != 1:
            raise ValueError(f"The tok2vec returned arrays of different widths: {sorted(widths)}")
        model.set_dim("nI", widths.pop(), force=True)
    if not model.has_dim("nI"):
        raise ValueError("The crf_ner model needs sample docs or nI to initialize.")
    width = model.get_dim("nI")
    n_tags = model.get_dim("nO")
    if model.has_ref("bilstm"):
        bilstm = model.get_ref("bilstm")
        bilstm.set_dim("nI", width, force=True)
        bilstm.initialize()
        width = bilstm.attrs["width"]
    output = model.get_ref("output")
    for name in output.param_names:  # re-initializing: new weights, possibly a new label count
        output.set_param(name, None)
    output.set_dim("nI", width, force=True)
    output.set_dim("nO", n_tags, force=True)
    output.initialize()
    crf = model.get_ref("crf")
    crf.set_dim("nO", n_tags, force=True)
    crf.initialize()


# ------------------------------------------------------------------------------ lazy layers
def _deferred(name: str, build: Callable[[Model], Model], *, attrs: dict) -> Model:
    """A layer whose (PyTorch) sublayer is built by `build(model)` at initialize."""
    return Model(
        name,
        _deferred_forward,
        init=_deferred_init,
        dims={"nI": None, "nO": None},
        attrs={"build": build, **attrs},
    )


def _deferred_init(model: Model, X=None, Y=None) -> None:
    built = model.attrs["build"](model)
    model._layers[:] = [built]


def _deferred_forward(model: Model, X, is_train: bool):
    if not model.layers:
        raise ValueError(
            f"The {model.name!r} layer is not initialized: call nlp.initialize() (or "
            "model.initialize()) before using the crf_ner model."
        )
    return model.layers[0](X, is_train)


def _build_bilstm(model: Model) -> Model:
    width, depth = model.attrs["width"], model.attrs["depth"]
    model.set_dim("nO", width, force=True)
    lstm = PyTorchLSTM(width, model.get_dim("nI"), bi=True, depth=depth)
    lstm.initialize()
    return lstm


def _build_crf(model: Model) -> Model:
    from .pytorch_crf import CRF

    n_tags = model.get_dim("nO")
    scheme = model.attrs["scheme"]
    per_label = len(make_tags(["X"], scheme)) - 1
    if n_tags < 1 + per_label or (n_tags - 1) % per_label:
        raise ValueError(
            f"nO={n_tags} is not a valid number of {scheme} tags (1 + {per_label} per label)."
        )
    # Constraints depend only on the shape of the tag inventory, not on the label names.
    placeholder = [f"L{i}" for i in range((n_tags - 1) // per_label)]
    trans, start, end = constraints(make_tags(placeholder, scheme), scheme)
    module = CRF(trans, start, end, objective=model.attrs["objective"])
    return PyTorchWrapper_v2(module, convert_inputs=_crf_inputs, convert_outputs=_crf_outputs)


# ------------------------------------------------------------------------- CRF conversions
def _pad(model: Model, arrays: Sequence, dtype: str) -> Tuple[numpy.ndarray, numpy.ndarray]:
    """Right-pad a list of (T_i, K) arrays to (B, T, K) and build the (B, T) mask."""
    xp = model.ops.xp
    lengths = [len(a) for a in arrays]
    out = xp.zeros((len(arrays), max(lengths), arrays[0].shape[1]), dtype=dtype)
    mask = xp.zeros((len(arrays), max(lengths)), dtype=bool)
    for i, a in enumerate(arrays):
        out[i, : len(a)] = a
        mask[i, : len(a)] = True
    return out, mask


def _crf_inputs(model: Model, X: CRFInput, is_train: bool) -> Tuple[ArgsKwargs, Callable]:
    emissions, allowed = X
    lengths = [len(e) for e in emissions]
    if not emissions or min(lengths) == 0:
        raise ValueError("The CRF needs at least one sequence and no empty sequences.")
    E, mask = _pad(model, emissions, "float32")
    A, _ = _pad(model, allowed, "bool")
    device = model.shims[0].device
    args = (
        xp2torch(E, requires_grad=is_train, device=device),
        xp2torch(mask, device=device),
        xp2torch(A, device=device),
    )

    def backprop(dX: ArgsKwargs) -> List[Floats2d]:
        d_emissions = torch2xp(dX.args[0])
        return [d_emissions[i, :n] for i, n in enumerate(lengths)]

    return ArgsKwargs(args=args, kwargs={}), backprop


def _crf_outputs(model: Model, X_Ytorch, is_train: bool) -> Tuple[Floats1d, Callable]:
    _, Ytorch = X_Ytorch
    Y = torch2xp(Ytorch)

    def backprop(dY: Floats1d) -> ArgsKwargs:
        return ArgsKwargs(args=(Ytorch,), kwargs={"grad_tensors": (xp2torch(dY, device=Ytorch.device),)})

    return Y, backprop


# ------------------------------------------------------------------------------- decoding
def crf_module(model: Model):
    """The CRF torch module of a tagger model (or of its "crf" layer)."""
    crf = model.get_ref("crf") if model.has_ref("crf") else model
    if not crf.layers:
        raise ValueError("The CRF layer is not initialized.")
    return crf.layers[0].shims[0]


def decode(
    model: Model,
    emissions: List[Floats2d],
    tags: Sequence[str],
    *,
    allowed: Optional[List[Optional[numpy.ndarray]]] = None,
    with_scores: bool = True,
) -> List[List[Entity]]:
    """Viterbi entities per document, each with P(exactly this span and label) if with_scores.

    Empty documents give no entities. The tags never form an invalid sequence: invalid
    transitions are -inf in the Viterbi recursion. `allowed` (per doc: None, or a (len, n_tags)
    bool array) restricts the tags each token may take (whitespace and preset entities, see the
    pipe): every other tag gets a prohibitive score there, so the best path and the confidences
    alike are conditioned on the restriction.
    """
    import torch

    shim = crf_module(model)
    scheme = model.attrs["scheme"]
    out: List[List[Entity]] = [[] for _ in emissions]
    rows = [i for i, e in enumerate(emissions) if len(e)]
    if not rows:
        return out
    E, mask = _pad(model, [emissions[i] for i in rows], "float32")
    if allowed is not None:
        xp = model.ops.xp
        for r, i in enumerate(rows):
            if allowed[i] is not None:
                E[r, : len(emissions[i])][~xp.asarray(allowed[i])] = _NEG
    with torch.no_grad():
        E_t = xp2torch(E, device=shim.device)
        mask_t = xp2torch(mask, device=shim.device)
        paths = shim._model.viterbi(E_t, mask_t).cpu().numpy()
        found = []
        for r, i in enumerate(rows):
            path = [tags[t] for t in paths[r, : len(emissions[i])]]
            for start, end, label in tags_to_spans(path, scheme):
                found.append((r, i, start, end, label))
        probs = [1.0] * len(found)
        if with_scores and found:
            queries = [(r, s, e, paths[r, s:e].tolist()) for r, _, s, e, _ in found]
            logp = shim._model.span_log_probs(E_t, mask_t, queries, scheme=scheme)
            probs = [min(1.0, float(numpy.exp(lp))) for lp in logp]
    for (r, i, start, end, label), p in zip(found, probs):
        out[i].append((start, end, label, p))
    return out

"""Thinc side of the tagger: emissions from a tok2vec, and the CRF wrapped with PyTorchWrapper.

The tagger model maps ``List[Doc]`` to per-token emission scores (``List[Floats2d]``, one row per
token, one column per tag). Its CRF sublayer (``model.get_ref("crf")``) maps a ``CRFInput``
(emissions, allowed tags) to one negative log-likelihood per document; the pipe runs it in
``get_loss`` and sends its gradient back through the emissions into the tok2vec (and, through a
listener, into the transformer). For decoding the same layer runs Viterbi and span probabilities
(``viterbi_paths``, ``span_log_probs``) through thinc's wrapper; the pipe's decoding reads the
same scores once as numpy arrays (``chain_arrays``) and runs every recursion on them. The layer
knows no labels: the pipe derives the constraints from its tags (``tag_schemes``) and hands them
over with ``set_constraints`` before the layer is built. All parameters, the CRF's included, are
updated by spaCy's optimizer through ``model.finish_update``: the PyTorchShim hands the torch
parameters to it.

Both the BiLSTM and the CRF are PyTorch modules whose sizes are only known at initialization (the
tok2vec width and the label count), so they are built lazily in ``init``. The pipe sets
``nI``/``nO`` from its cfg and calls ``model.initialize()`` before deserializing, so the model has
the same node structure as the one that was saved.
"""
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple, Union, cast

import numpy
from thinc.api import (
    ArgsKwargs,
    Dropout,
    Linear,
    Model,
    PyTorchLSTM,
    PyTorchShim,
    PyTorchWrapper_v2,
    chain,
    torch2xp,
    with_array,
    xp2torch,
)
from thinc.types import Floats1d, Floats2d, Floats3d

from ..tag_schemes import check_scheme
from .crf_viterbi import viterbi_numpy
from .shim_predict import predict_eval

# (row, start, end exclusive, tag ids over the span): one span whose probability is asked for
SpanQuery = Tuple[int, int, int, Sequence[int]]


class CRFInput(NamedTuple):
    """What the CRF layer takes: emissions per doc and the tags each token may take (None: all),
    for the task "nll" (training), "viterbi" or "span_log_probs" (with the spans asked for)."""

    emissions: List[Floats2d]
    allowed: Sequence[Optional[numpy.ndarray]]
    task: str = "nll"
    spans: Sequence[SpanQuery] = ()


class CRFConstraints:
    """The allowed transitions (K, K), first tags (K,) and last tags (K,), and for each tag the
    tag that would continue an entity ending on it (-1: none), as the pipe derives them from its
    tags. (A plain class, so thinc does not try to serialize it with the layer's attrs.)"""

    def __init__(self, transitions, start, end, continuation) -> None:
        self.transitions, self.start, self.end = transitions, start, end
        self.continuation = continuation


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
    check_scheme(scheme)
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
    # untyped (Model): thinc's chain() cannot infer the generic Dropout's input type
    dropout_layer: Model = Dropout(dropout)
    head: Model = with_array(chain(dropout_layer, output))
    layers = [tok2vec]
    refs: Dict[str, Optional[Model]] = {"tok2vec": tok2vec, "output": output}
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


def set_constraints(model: Model, constraints: CRFConstraints) -> None:
    """Hand the tag constraints to the CRF layer of a tagger model, before it is initialized."""
    crf = model.get_ref("crf") if model.has_ref("crf") else model
    crf.attrs["constraints"] = constraints


def _build_crf(model: Model) -> Model:
    from .constrained_crf import ConstrainedCRF

    n_tags = model.get_dim("nO")
    constraints = model.attrs.get("constraints")
    if constraints is None:
        raise ValueError(
            "The CRF layer has no tag constraints: the crf_ner pipe sets them from its tags "
            "(set_constraints) before the model is initialized."
        )
    if constraints.transitions.shape != (n_tags, n_tags):
        raise ValueError(
            f"The CRF layer has constraints for {constraints.transitions.shape[0]} tags, "
            f"but nO={n_tags}."
        )
    module = ConstrainedCRF(
        constraints.transitions,
        constraints.start,
        constraints.end,
        constraints.continuation,
        objective=model.attrs["objective"],
    )
    return PyTorchWrapper_v2(module, convert_inputs=_crf_inputs, convert_outputs=_crf_outputs)


# ------------------------------------------------------------------------- CRF conversions
def _pad(model: Model, arrays: Sequence, dtype: str) -> Tuple[Any, Any]:
    """Right-pad a list of (T_i, K) arrays to (B, T, K) and build the (B, T) mask, as arrays of
    the model's ops (numpy or cupy; Any: thinc's array types have no bool arrays)."""
    xp = model.ops.xp
    lengths = [len(a) for a in arrays]
    out = xp.zeros((len(arrays), max(lengths), arrays[0].shape[1]), dtype=dtype)
    mask = xp.zeros((len(arrays), max(lengths)), dtype=bool)
    for i, a in enumerate(arrays):
        out[i, : len(a)] = a
        mask[i, : len(a)] = True
    return out, mask


def _crf_inputs(model: Model, X: CRFInput, is_train: bool) -> Tuple[ArgsKwargs, Callable]:
    X = CRFInput(*X)
    lengths = [len(e) for e in X.emissions]
    if not X.emissions or min(lengths) == 0:
        raise ValueError("The CRF needs at least one sequence and no empty sequences.")
    E, mask = _pad(model, X.emissions, "float32")
    n_tags = E.shape[2]
    allowed = [
        a if a is not None else model.ops.xp.ones((n, n_tags), dtype=bool)
        for a, n in zip(X.allowed, lengths)
    ]
    A, _ = _pad(model, allowed, "bool")
    device = cast(PyTorchShim, model.shims[0]).device
    args = (
        xp2torch(E, requires_grad=is_train, device=device),
        xp2torch(mask, device=device),
        xp2torch(A, device=device),
    )
    kwargs = {} if X.task == "nll" else {"task": X.task, "spans": X.spans}

    def backprop(dX: ArgsKwargs) -> List[Floats2d]:
        d_emissions = cast(Floats3d, torch2xp(dX.args[0]))
        return [d_emissions[i, :n] for i, n in enumerate(lengths)]

    return ArgsKwargs(args=args, kwargs=kwargs), backprop


def _crf_outputs(
    model: Model, X_Ytorch, is_train: bool
) -> Tuple[Union[Floats1d, List[numpy.ndarray], numpy.ndarray], Callable]:
    """nll: the loss per doc (Floats1d); viterbi: one path per doc; span_log_probs: (n_spans,)."""
    X, Ytorch = X_Ytorch
    X = CRFInput(*X)
    if X.task == "viterbi":
        paths = Ytorch.cpu().numpy()
        return [paths[i, : len(e)] for i, e in enumerate(X.emissions)], _no_backprop
    if X.task == "span_log_probs":
        return Ytorch.cpu().numpy(), _no_backprop
    Y = cast(Floats1d, torch2xp(Ytorch))

    def backprop(dY: Floats1d) -> ArgsKwargs:
        grad = xp2torch(dY, device=Ytorch.device)
        return ArgsKwargs(args=(Ytorch,), kwargs={"grad_tensors": (grad,)})

    return Y, backprop


def _no_backprop(dY):
    raise ValueError("CRF decoding has no gradient: use the task 'nll' for training.")


# ------------------------------------------------------------------------------- decoding
def viterbi_paths(
    model: Model, emissions: List[Floats2d], allowed: Sequence[Optional[numpy.ndarray]]
) -> List[numpy.ndarray]:
    """The best valid tag sequence (tag ids) of each non-empty emissions array, among those
    `allowed` admits (None: every tag at every position)."""
    return _decode(model.get_ref("crf"), CRFInput(emissions, allowed, "viterbi"))


def span_log_probs(
    model: Model,
    emissions: List[Floats2d],
    allowed: Sequence[Optional[numpy.ndarray]],
    spans: Sequence[SpanQuery],
) -> numpy.ndarray:
    """log P(exactly this span, with these tags) for each (row, start, end, tag ids), under the
    distribution over the tag sequences `allowed` admits."""
    if not spans:
        return numpy.zeros((0,), dtype="float64")
    return _decode(model.get_ref("crf"), CRFInput(emissions, allowed, "span_log_probs", spans))


def _decode(crf: Model, X: CRFInput) -> Any:
    """crf.predict(X) without thinc's per-call mode switching (see shim_predict): the CRF module
    has no dropout or batch norm, so its mode changes nothing here."""
    if not crf.layers:
        return crf.predict(X)  # the clear "not initialized" error
    return predict_eval(crf.layers[0], X)


class ChainArrays(NamedTuple):
    """The CRF's scores for a batch as float64 numpy arrays, divided by a temperature, for the
    numpy recursions (crf_decode): potentials (B, T, K) right-padded with zeros, with NEG where a
    tag is not allowed; mask (B, T); transitions (K, K), start and end (K,) with NEG where not
    allowed; and which of them are allowed, for the -inf versions k-best Viterbi needs. `raw`:
    potentials, transitions, start and end as the CRF module itself decodes with (its dtype,
    not scaled), for `viterbi`."""

    pot: numpy.ndarray
    mask: numpy.ndarray
    trans: numpy.ndarray
    start: numpy.ndarray
    end: numpy.ndarray
    allowed: numpy.ndarray
    allowed_trans: numpy.ndarray
    allowed_start: numpy.ndarray
    allowed_end: numpy.ndarray
    continuation: numpy.ndarray
    raw: Tuple[numpy.ndarray, numpy.ndarray, numpy.ndarray, numpy.ndarray]

    def viterbi(self) -> numpy.ndarray:
        """The best valid path of each row, (B, T) int64, 0 past a row's end: the paths of the
        CRF's own Viterbi (`viterbi_paths`; the same scores in the same dtype, -inf where not
        allowed), at any temperature."""
        pot, trans, start, end = self.raw
        return viterbi_numpy(pot, self.mask, *self._not_allowed_as_inf(trans, start, end))

    @property
    def lengths(self) -> numpy.ndarray:
        return self.mask.sum(1)

    def with_infinities(self) -> Tuple[numpy.ndarray, ...]:
        """pot, trans, start, end with -inf instead of NEG (no path through them at all)."""
        pot = numpy.where(self.allowed, self.pot, -numpy.inf)
        return (pot, *self._not_allowed_as_inf(self.trans, self.start, self.end))

    def _not_allowed_as_inf(
        self, trans: numpy.ndarray, start: numpy.ndarray, end: numpy.ndarray
    ) -> Tuple[numpy.ndarray, numpy.ndarray, numpy.ndarray]:
        """Transitions, start and end scores with -inf where not allowed, in their dtype."""
        inf = numpy.array(-numpy.inf, dtype=trans.dtype)
        return (
            numpy.where(self.allowed_trans, trans, inf),
            numpy.where(self.allowed_start, start, inf),
            numpy.where(self.allowed_end, end, inf),
        )


def chain_arrays(
    model: Model,
    emissions: Sequence[Any],
    allowed: Sequence[Optional[numpy.ndarray]],
    temperature: float = 1.0,
) -> ChainArrays:
    """The scores the CRF of a tagger model decodes with, for non-empty emissions arrays and the
    tags `allowed` at each position (None: all), scaled by 1 / temperature: P_T(path) is
    proportional to exp(score(path) / T). T = 1 gives the CRF's own distribution; the best path
    is the same at every T."""
    import torch

    from .constrained_crf import NEG

    module = model.get_ref("crf").layers[0].shims[0]._model
    ops = model.ops
    arrays = [ops.to_numpy(e) for e in emissions]
    lengths = [len(e) for e in arrays]
    B, T, K = len(arrays), max(lengths), arrays[0].shape[1]
    E = numpy.zeros((B, T, K), dtype="float32")
    mask = numpy.zeros((B, T), dtype=bool)
    A = numpy.ones((B, T, K), dtype=bool)
    for i, (e, a) in enumerate(zip(arrays, allowed)):
        E[i, : len(e)] = e
        mask[i, : len(e)] = True
        if a is not None:
            A[i, : len(e)] = ops.to_numpy(a)
    restricted = numpy.where(A, E, numpy.float32(NEG))
    with torch.no_grad():
        if module.objective == "crf":  # the potentials are the emissions
            raw_pot = restricted
        else:
            raw_pot = module.potentials(torch.from_numpy(restricted)).numpy()
        raw = (raw_pot, *(x.detach().cpu().numpy() for x in module._scores(NEG)))
        pot, trans, start, end = (x.astype("float64") for x in raw)
        allowed_trans, allowed_start, allowed_end = (
            x.cpu().numpy().astype(bool)
            for x in (module.allowed_transitions, module.allowed_start, module.allowed_end)
        )
        continuation = module.continuation.cpu().numpy()
    scale = 1.0 / temperature
    pot = numpy.where(A, pot * scale, NEG)
    pot[~mask] = 0.0
    return ChainArrays(
        pot, mask,
        numpy.where(allowed_trans, trans * scale, NEG),
        numpy.where(allowed_start, start * scale, NEG),
        numpy.where(allowed_end, end * scale, NEG),
        A, allowed_trans, allowed_start, allowed_end, continuation, raw,
    )

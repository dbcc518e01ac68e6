"""Loading crf_ner's model (from_bytes, from_disk): its PyTorch layers are built lazily, so they
are first built from the pipe's cfg (labels, nI) for the saved weights to have somewhere to go;
then a damaged or incomplete file, or weights that do not match the cfg, is an error that names
the pipe and where the data came from."""
from typing import TYPE_CHECKING

import srsly

if TYPE_CHECKING:
    from .pipeline import CRFEntityRecognizer


def initialize_before_deserializing(pipe: "CRFEntityRecognizer") -> None:
    """Build the lazy PyTorch layers of the pipe's model from its cfg (nothing without labels)."""
    if not pipe.labels:
        return
    if not pipe.cfg.get("nI"):
        raise ValueError(f"Cannot load {pipe.name!r}: its cfg has no 'nI' (tok2vec width).")
    pipe.model.set_dim("nO", len(pipe.tags), force=True)
    pipe.model.set_dim("nI", pipe.cfg["nI"], force=True)
    pipe._set_constraints()
    pipe.model.initialize()


def load_model_bytes(pipe: "CRFEntityRecognizer", data: bytes, source: str) -> None:
    """Load the pipe's model from `data` (read from `source`, for the error messages)."""
    initialize_before_deserializing(pipe)
    try:
        srsly.msgpack_loads(data)
    except Exception as err:
        raise ValueError(
            f"Cannot load the model of {pipe.name!r}: {source} is damaged or incomplete "
            f"({type(err).__name__}: {err}). If it comes from an interrupted training run, "
            "use the run's model-last, or train again."
        ) from err
    try:
        pipe.model.from_bytes(data)
    except ValueError as err:
        raise ValueError(
            f"Cannot load the model of {pipe.name!r}: it does not match its cfg (labels "
            f"{list(pipe.labels)}, {len(pipe.tags)} {pipe.scheme} tags, "
            f"nI={pipe.cfg.get('nI')}). "
            f"Were the labels or the model config changed? ({err})"
        ) from err

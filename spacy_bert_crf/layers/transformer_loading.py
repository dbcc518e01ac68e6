"""Checked loading for spacy-bert-crf.TransformerModel.v1: saved transformer data that could
write files or run code is refused, damaged data is named as such, and a path-like model name
must be a local folder (never a Hub query).

spacy-transformers' `HFShim.from_bytes` writes the saved tokenizer files into a temporary folder
by the names stored in the data, and passes the saved tokenizer arguments and configs to
transformers' `from_pretrained`: a crafted pipeline folder could write anywhere or, with
`trust_remote_code` and an `auto_map`, run Python it ships. `check_saved_transformer` checks
the data before the shim sees it.
"""
import io
import json
import sys
from pathlib import Path, PurePosixPath, PureWindowsPath
from types import FrameType
from typing import Any, Callable, Dict, List, Optional, TypeVar

import srsly
from thinc.api import Model

# The only tokenizer argument spacy-transformers saves (HFShim.to_bytes).
SAVED_TOKENIZER_KWARGS = frozenset({"use_fast"})
ENCODER_BUILD_HINT = "python -m spacy_bert_crf encoders build minilm-l6 encoders/minilm-l6"
SAVED_MODEL_KEYS = frozenset({"nodes", "attrs", "params", "shims"})  # thinc's Model.to_dict

T = TypeVar("T")


class TransformerLoadError(ValueError):
    """Saved transformer data that is damaged or incomplete, or that could write files or run
    code when loaded."""


class LoadProblem(ValueError):
    def __init__(self, text: str, *, damaged: bool):
        super().__init__(text)
        self.damaged = damaged


def check_saved_transformer(data: bytes) -> bytes:
    """Check the bytes that HFShim.from_bytes would load: its tokenizer files are written to
    a temporary folder by name, and its tokenizer arguments and configs reach transformers'
    `from_pretrained`. `auto_map` entries (which name code to import) are dropped: transformers
    then uses its own classes, or fails clearly if the model needs code it does not have.

    RETURNS (bytes): The data; re-serialized without auto_map only if it had one.
    RAISES (ValueError): A file name that is not a plain name, tokenizer arguments other than
        `use_fast`, `trust_remote_code` anywhere, a Python file, or damaged data.
    """
    msg = srsly.msgpack_loads(data)
    if not isinstance(msg, dict) or not isinstance(msg.get("tokenizer") or {}, dict):
        raise LoadProblem("its transformer part is not a saved transformer", damaged=True)
    dropped = False
    for key in ("config", "_init_tokenizer_config", "_init_transformer_config"):
        dropped |= _drop_auto_map(msg.get(key), f"its saved {key.strip('_')}")
    tokenizer = msg.get("tokenizer") or {}
    kwargs = tokenizer.get("kwargs", {})
    unknown = sorted(str(k) for k in kwargs) if not isinstance(kwargs, dict) else sorted(
        str(k) for k in kwargs if k not in SAVED_TOKENIZER_KWARGS
    )
    if unknown:
        raise LoadProblem(
            f"its saved tokenizer arguments include {', '.join(unknown)} (only "
            f"{', '.join(sorted(SAVED_TOKENIZER_KWARGS))} is allowed; trust_remote_code would run "
            f"Python code shipped in the folder)",
            damaged=False,
        )
    for file_name, content in tokenizer.items():
        if file_name == "kwargs":
            continue
        if not is_plain_file_name(file_name):
            raise LoadProblem(
                f"its tokenizer file name {file_name!r} is not a plain file name (it would be "
                f"written outside the temporary folder)",
                damaged=False,
            )
        if file_name.lower().endswith(".py"):
            raise LoadProblem(
                f"its tokenizer files include Python code ({file_name!r})", damaged=False
            )
        if not isinstance(content, bytes):
            raise LoadProblem(f"its tokenizer file {file_name!r} is not bytes", damaged=True)
        if file_name.lower().endswith(".json"):
            try:
                values = json.loads(content)
            except ValueError:
                raise LoadProblem(
                    f"its tokenizer file {file_name!r} is not JSON", damaged=True
                ) from None
            if _drop_auto_map(values, f"its tokenizer file {file_name!r}"):
                tokenizer[file_name] = json.dumps(values, indent=2).encode("utf8")
                dropped = True
    return srsly.msgpack_dumps(msg) if dropped else data


def _drop_auto_map(values: Any, what: str) -> bool:
    """Refuse trust_remote_code, drop auto_map. RETURNS (bool): Whether auto_map was dropped."""
    if not isinstance(values, dict):
        return False
    if values.get("trust_remote_code"):
        raise LoadProblem(f"{what} sets trust_remote_code", damaged=False)
    if "auto_map" not in values:
        return False
    del values["auto_map"]
    return True


def is_plain_file_name(name: Any) -> bool:
    """RETURNS (bool): Whether name is a file name without any folder, drive or root (on any OS)."""
    return (
        isinstance(name, str)
        and name not in ("", ".", "..")
        and "\x00" not in name
        and PurePosixPath(name).name == name
        and PureWindowsPath(name).name == name
    )


def remote_code_keys(values: Any) -> List[str]:
    if not isinstance(values, dict):
        return []
    found = ["trust_remote_code"] if values.get("trust_remote_code") else []
    return found + (["auto_map"] if "auto_map" in values else [])


def loading_context(frame: Optional[FrameType], model: Model) -> str:
    """Which component and file is being loaded, read from the callers' frames (spaCy passes
    neither to the model): the pipe whose `model` is this model, and the open file read."""
    component = file_name = None
    for _ in range(8):
        if frame is None:
            break
        local = frame.f_locals
        if file_name is None:
            file_name = next(
                (v.name for v in local.values()
                 if isinstance(v, io.BufferedReader) and isinstance(v.name, str)),
                None,
            )
        owner = local.get("self")
        if owner is not model and getattr(owner, "model", None) is model:
            component = getattr(owner, "name", None)
            break
        frame = frame.f_back
    what = f"the transformer model of component {component!r}" if component else (
        "the transformer model"
    )
    return f"{what} ({file_name})" if file_name else what


def read_saved_model(
    model: Model,
    bytes_data: bytes,
    read: Callable[[Dict[str, Any]], T],
    *,
    kind: str,
    damaged_hint: str,
    written_by: str,
) -> T:
    """Unpack the bytes of a transformer model and pass them to `read`, for the model's
    `from_bytes` (call it from there: the component and file named in errors are found from
    the frame of from_bytes' caller).

    model (Model): The model being loaded.
    bytes_data (bytes): What its from_bytes received.
    read (Callable[[Dict[str, Any]], T]): Checks and loads the unpacked data; a ValueError or
        TypeError from it is damaged data, a LoadProblem with damaged=False unsafe data.
    kind (str): The model's kind in the error for data that is not a model at all.
    damaged_hint (str): What to do about damaged data, ending the error's message.
    written_by (str): What writes this model, e.g. "saved" or "exported".
    RETURNS (T): What read returns.
    RAISES (TransformerLoadError): The data is damaged or incomplete, or unsafe.
    """
    caller = sys._getframe(2)
    try:
        msg = srsly.msgpack_loads(bytes_data)
        if not isinstance(msg, dict) or not SAVED_MODEL_KEYS <= set(msg):
            raise LoadProblem(f"it is not a saved {kind}", damaged=True)
        return read(msg)
    except (ValueError, TypeError) as err:  # msgpack's errors, and LoadProblem
        damaged = not isinstance(err, LoadProblem) or err.damaged
        where = loading_context(caller, model)
        if damaged:
            raise TransformerLoadError(
                f"Can't load {where}: it is damaged or incomplete ({err}). {damaged_hint}"
            ) from err
        raise TransformerLoadError(
            f"Refusing to load {where}: {err}. A pipeline {written_by} by spacy-bert-crf never "
            f"contains this, so it may have been tampered with; load only pipelines from "
            f"sources you trust."
        ) from None
    finally:
        del caller


# ---------------------------------------------------------------------------------------------
# Model name: a local folder or a Hub name
# ---------------------------------------------------------------------------------------------


def is_path_like(name: str) -> bool:
    """Whether a model name means a local folder rather than a Hugging Face Hub name.

    Path-like: it starts with '.', '~', '/' or '\\', contains '\\' or a drive ('C:'), has more
    than two '/'-separated parts, or is 'A/B' where A is 'encoders' (this project's folder for
    local encoders) or exists in the current directory. Anything else ('bert-base-cased',
    'org/model') is a Hub name.
    """
    if name.startswith((".", "~", "/", "\\")) or "\\" in name or PureWindowsPath(name).drive:
        return True
    parts = name.split("/")
    if len(parts) > 2 or (len(parts) == 2 and not parts[1]):
        return True
    return len(parts) == 2 and (parts[0] == "encoders" or Path(parts[0]).exists())


def resolve_transformer_name(name: str) -> str:
    """The name to load weights from: a path-like name must be an existing local folder.

    RETURNS (str): The folder (with '~' expanded), or the Hub name unchanged.
    RAISES (FileNotFoundError): A path-like name that is not an existing folder.
    """
    name = str(name)
    if not is_path_like(name):
        return name
    path = Path(name).expanduser()
    if path.is_dir():
        return str(path)
    raise FileNotFoundError(
        f"The transformer {name!r} is a local path, but there is no folder at "
        f"{path.absolute()} (it is not looked up on the Hugging Face Hub). Build an encoder "
        f"there, e.g. `{ENCODER_BUILD_HINT}` (list them with `python -m spacy_bert_crf encoders "
        f"list`), or set paths.transformer to an existing folder or a Hub name such as "
        f"bert-base-cased."
    )

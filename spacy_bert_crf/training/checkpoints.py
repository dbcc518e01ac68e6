"""Checkpoints of resumable training: the run's folders, saving and loading checkpoints and
models, the optimizer's state and the random states."""
import random
import shutil
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple, Union, cast

import numpy
import srsly
from spacy.language import Language
from thinc.api import Config, Optimizer
from thinc.types import FloatsXd

DIR_MODEL_BEST = "model-best"
DIR_MODEL_LAST = "model-last"
DIR_CHECKPOINTS = "checkpoints"
LATEST = "latest"  # text file in DIR_CHECKPOINTS naming the newest complete checkpoint
STATE_FILE = "state.json"
OPTIMIZER_FILE = "optimizer.msg"
CONFIG_FILE = "config.cfg"  # the run's config (with overrides) as given, to check a resume


class ResumeError(ValueError):
    pass


# ------------------------------------------------------------------------------ checkpoints
def latest_checkpoint(output_path: Union[str, Path]) -> Optional[Path]:
    """The newest complete checkpoint in output_path, or None."""
    root = Path(output_path) / DIR_CHECKPOINTS
    pointer = root / LATEST
    if pointer.is_file():
        candidate = root / pointer.read_text(encoding="utf8").strip()
        if (candidate / STATE_FILE).is_file():
            return candidate
    complete = sorted(
        p for p in root.glob("step-*") if p.suffix != ".tmp" and (p / STATE_FILE).is_file()
    )
    return complete[-1] if complete else None


def save_checkpoint(
    nlp: Language,
    optimizer: Optimizer,
    output_path: Path,
    config_text: str,
    rng_corpus: Dict[str, Any],
    loop_state: Dict[str, Any],
    *,
    keep: int,
) -> Path:
    """Write a checkpoint into a temporary folder, rename it into place, then point LATEST at
    it: a kill at any moment leaves the previous checkpoint usable."""
    root = output_path / DIR_CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    name = f"step-{loop_state['step']:09d}"
    tmp = root / f"{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    nlp.to_disk(tmp / "nlp")
    srsly.write_msgpack(tmp / OPTIMIZER_FILE, _optimizer_state(optimizer, nlp))
    srsly.write_msgpack(tmp / "rng.msg", get_random_states())
    srsly.write_msgpack(tmp / "rng_corpus.msg", rng_corpus)
    (tmp / CONFIG_FILE).write_text(config_text, encoding="utf8")
    srsly.write_json(tmp / STATE_FILE, loop_state)  # written last: marks the folder complete
    _replace_dir(tmp, root / name)
    _write_atomic(root / LATEST, name)
    for old in sorted(p for p in root.glob("step-*") if p.is_dir())[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return root / name


def save_models(
    nlp: Language, optimizer: Optimizer, before_to_disk: Callable, output_path: Path, *, best: bool
) -> None:
    """model-last (and model-best), with the averaged weights, each replaced in one rename."""
    last = output_path / DIR_MODEL_LAST
    tmp = output_path / f"{DIR_MODEL_LAST}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    with nlp.use_params(optimizer.averages):
        before_to_disk(nlp).to_disk(tmp)
    _replace_dir(tmp, last)
    if best:
        tmp = output_path / f"{DIR_MODEL_BEST}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(last, tmp)
        _replace_dir(tmp, output_path / DIR_MODEL_BEST)


def _replace_dir(src: Path, dst: Path) -> None:
    old = dst.with_name(dst.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if dst.exists():
        dst.rename(old)
    src.rename(dst)
    shutil.rmtree(old, ignore_errors=True)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf8")
    tmp.replace(path)


# --------------------------------------------------------------------- optimizer and RNG state
def _param_keys(nlp: Language) -> Dict[Tuple[int, str], str]:
    """The optimizer's keys ((node or shim id, parameter name)) mapped to names that are the
    same in every process: node and shim ids are counters that differ between processes, the
    position of a node in its component's model and the parameter name do not."""
    keys: Dict[Tuple[int, str], str] = {}
    for pipe_name, proc in nlp.pipeline:
        model: Any = getattr(proc, "model", None)
        if not hasattr(model, "walk"):
            continue
        for i, node in enumerate(model.walk()):
            names = [((node.id, p), f"{pipe_name}/{i}/{p}") for p in node.param_names]
            for j, shim in enumerate(node.shims):
                # thinc's PyTorchShim keys params so
                torch_model: Any = getattr(shim, "_model", None)
                if hasattr(torch_model, "named_parameters"):
                    names += [((shim.id, p), f"{pipe_name}/{i}.{j}/{p}")
                              for p, _ in torch_model.named_parameters()]
            for key, stable in names:
                if keys.setdefault(key, stable) != stable:
                    raise ResumeError(f"Two parameters share the optimizer key {key}.")
    return keys


def _optimizer_state(optimizer: Optimizer, nlp: Language) -> Dict[str, Any]:
    keys = _param_keys(nlp)
    out: Dict[str, Any] = {}
    for key, stable in keys.items():
        if key not in optimizer.nr_update and key not in optimizer.mom1:
            continue
        entry: Dict[str, Any] = {"nr_update": int(optimizer.nr_update.get(key, 0))}
        for field in ("mom1", "mom2"):
            if key in getattr(optimizer, field):
                entry[field] = _to_numpy(getattr(optimizer, field)[key])
        if optimizer.averages is not None and key in optimizer.averages:
            entry["averages"] = _to_numpy(optimizer.averages[key])
        out[stable] = entry
    known = {k for k in keys}
    unknown = [k for k in optimizer.nr_update if k not in known]
    if unknown:
        raise ResumeError(
            f"The optimizer holds state for {len(unknown)} parameters that no component owns "
            f"(e.g. {unknown[0]}): cannot save it in a form that a new process can restore."
        )
    return out


def load_optimizer(optimizer: Optimizer, nlp: Language, saved: Dict[str, Any]) -> None:
    from thinc.api import get_current_ops

    ops = get_current_ops()
    by_name = {stable: key for key, stable in _param_keys(nlp).items()}
    missing = [name for name in saved if name not in by_name]
    if missing:
        raise ResumeError(
            f"The checkpoint's optimizer state names parameters this pipeline does not have "
            f"(e.g. {missing[0]!r}): was the config changed?"
        )
    for name, entry in saved.items():
        key = by_name[name]
        optimizer.nr_update[key] = int(entry["nr_update"])
        for field in ("mom1", "mom2"):
            if field in entry:  # a copy: the optimizer writes into it (msgpack's is read-only)
                getattr(optimizer, field)[key] = ops.asarray(entry[field]).copy()
        if "averages" in entry and optimizer.averages is not None:
            optimizer.averages[key] = cast(FloatsXd, ops.asarray(entry["averages"]).copy())


def _to_numpy(array) -> numpy.ndarray:
    return array.get() if hasattr(array, "get") else numpy.asarray(array)


def get_random_states() -> Dict[str, Any]:
    import torch

    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = numpy.random.get_state()
    states = {
        "python": [version, list(internal), gauss],
        "numpy": [kind, numpy.asarray(keys), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state().numpy().tobytes(),
    }
    if torch.cuda.is_available():
        states["torch_cuda"] = [s.numpy().tobytes() for s in torch.cuda.get_rng_state_all()]
    return states


def set_random_states(states: Dict[str, Any]) -> None:
    import torch

    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = states["numpy"]
    numpy.random.set_state((kind, numpy.asarray(keys, dtype=numpy.uint32), pos, has_gauss, cached))
    torch.set_rng_state(torch.frombuffer(bytearray(states["torch"]), dtype=torch.uint8))
    if "torch_cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(
            [torch.frombuffer(bytearray(s), dtype=torch.uint8) for s in states["torch_cuda"]]
        )


def config_diff(a: str, b: str) -> str:
    left = Config().from_str(a, interpolate=False)
    right = Config().from_str(b, interpolate=False)
    flat_a, flat_b = _flatten(left), _flatten(right)
    keys = sorted(k for k in set(flat_a) | set(flat_b) if flat_a.get(k) != flat_b.get(k))
    return ", ".join(f"{k}: {flat_a.get(k)!r} -> {flat_b.get(k)!r}" for k in keys[:10])


def _flatten(config: Dict[str, Any], prefix: str = "") -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out

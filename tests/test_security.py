"""Loading a pipeline folder through spacy-bert-crf.TransformerModel.v1 never writes outside its
temporary folder nor runs code shipped in the folder (issue 18)."""
import configparser
import json
import shutil
import tempfile
from pathlib import Path

import pytest
import spacy
import srsly
import torch
from packaging.version import Version

from spacy_bert_crf.layers.transformer import build_transformer_model
from spacy_bert_crf.layers.transformer_loading import TransformerLoadError, is_plain_file_name

ROOT = Path(__file__).resolve().parents[1]
EVIL_CODE = """from pathlib import Path
Path({marker!r}).write_text("ran")
from transformers import BertTokenizerFast
class EvilTokenizer(BertTokenizerFast):
    pass
"""


@pytest.fixture(scope="module")
def saved(tiny_bert_dir, tmp_path_factory):
    nlp = spacy.blank("en")
    nlp.add_pipe("transformer", config={"model": {
        "@architectures": "spacy-bert-crf.TransformerModel.v1",
        "name": str(tiny_bert_dir),
        "tokenizer_config": {"use_fast": True},
        "get_spans": {"@span_getters": "spacy-transformers.doc_spans.v1"},
    }})
    nlp.initialize()
    path = tmp_path_factory.mktemp("pipeline") / "nlp"
    nlp.to_disk(path)
    return path


def _craft(saved: Path, dest: Path, change) -> Path:
    """A copy of the saved pipeline whose transformer data went through change(dict)."""
    shutil.copytree(saved, dest)
    model_file = dest / "transformer" / "model"
    msg = srsly.msgpack_loads(model_file.read_bytes())
    crafted = 0
    for shims in msg["shims"]:
        for i, data in enumerate(shims):
            shim_msg = srsly.msgpack_loads(data)
            change(shim_msg)
            shims[i] = srsly.msgpack_dumps(shim_msg)
            crafted += 1
    assert crafted == 1
    model_file.write_bytes(srsly.msgpack_dumps(msg))
    return dest


def test_intact_pipeline_loads(saved):
    nlp = spacy.load(saved)
    assert nlp("Olga met Oslo .")._.trf_data.wordpieces.input_ids.shape[1] == 6


@pytest.mark.parametrize("name", ["../written.txt", "sub/written.txt", "..\\written.txt",
                                  "C:written.txt", ".", ""])
def test_tokenizer_file_names_with_folders_are_refused(saved, tmp_path, monkeypatch, name):
    temp_root = tmp_path / "tmp"
    (temp_root / "sub").mkdir(parents=True)
    monkeypatch.setattr(tempfile, "tempdir", str(temp_root))  # where HFShim makes its folder

    def change(msg):
        msg["tokenizer"][name] = b"written"

    path = _craft(saved, tmp_path / "crafted", change)
    with pytest.raises(TransformerLoadError, match="not a plain file name") as err:
        spacy.load(path)
    assert "component 'transformer'" in str(err.value)
    assert str(path / "transformer" / "model") in str(err.value)
    assert not list(temp_root.rglob("*written*"))


def test_absolute_tokenizer_file_name_is_refused(saved, tmp_path):
    target = tmp_path / "outside" / "written.txt"
    target.parent.mkdir()

    def change(msg):
        msg["tokenizer"][str(target)] = b"written"

    with pytest.raises(TransformerLoadError, match="Refusing to load.*not a plain file name"):
        spacy.load(_craft(saved, tmp_path / "crafted", change))
    assert not target.exists()


def _auto_map_tokenizer(msg):
    tok_config = json.loads(msg["tokenizer"]["tokenizer_config.json"])
    tok_config["auto_map"] = {"AutoTokenizer": ["evil.EvilTokenizer", "evil.EvilTokenizer"]}
    msg["tokenizer"]["tokenizer_config.json"] = json.dumps(tok_config).encode("utf8")


def _set_in_tokenizer_config(msg, **values):
    tok_config = json.loads(msg["tokenizer"]["tokenizer_config.json"])
    tok_config.update(values)
    msg["tokenizer"]["tokenizer_config.json"] = json.dumps(tok_config).encode("utf8")


AUTO_MAP = {"AutoTokenizer": ["evil.EvilTokenizer", "evil.EvilTokenizer"]}
ATTACKS = {
    # the full attack: code, auto_map pointing at it, and trust_remote_code
    "trust_remote_code+auto_map": lambda msg: (
        _set_in_tokenizer_config(msg, auto_map=AUTO_MAP),
        msg["tokenizer"]["kwargs"].update(trust_remote_code=True),
    ),
    "trust_remote_code in tokenizer_config.json": lambda msg: _set_in_tokenizer_config(
        msg, auto_map=AUTO_MAP, trust_remote_code=True
    ),
    "trust_remote_code in init config": lambda msg: msg.update(
        _init_tokenizer_config={"trust_remote_code": True}
    ),
    "other tokenizer argument": lambda msg: msg["tokenizer"]["kwargs"].update(cache_dir="/tmp"),
    "python file and auto_map": lambda msg: _set_in_tokenizer_config(msg, auto_map=AUTO_MAP),
}


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_remote_code_is_refused(saved, tmp_path, attack):
    marker = tmp_path / "code-ran.txt"

    def change(msg):
        msg["tokenizer"]["evil.py"] = EVIL_CODE.format(marker=str(marker)).encode("utf8")
        ATTACKS[attack](msg)

    with pytest.raises(TransformerLoadError, match="Refusing to load") as err:
        spacy.load(_craft(saved, tmp_path / "crafted", change))
    assert "tampered" in str(err.value)
    assert not marker.exists()


def test_auto_map_is_dropped(saved, tmp_path):
    """auto_map names code to import: it is dropped, and transformers' own classes load."""

    def change(msg):
        _set_in_tokenizer_config(msg, auto_map=AUTO_MAP)
        msg["config"]["auto_map"] = {"AutoModel": "evil.EvilModel"}

    nlp = spacy.load(_craft(saved, tmp_path / "crafted", change))
    model = nlp.get_pipe("transformer").model
    assert "auto_map" not in model.tokenizer.init_kwargs
    assert not hasattr(model.transformer.config, "auto_map")
    expected = spacy.load(saved)("Olga met Oslo .")._.trf_data.model_output.last_hidden_state
    got = nlp("Olga met Oslo .")._.trf_data.model_output.last_hidden_state
    assert (got == expected).all()


@pytest.mark.parametrize("setting", ["tokenizer_config", "transformer_config"])
@pytest.mark.parametrize("values", [{"trust_remote_code": True}, {"auto_map": {}}])
def test_config_cannot_enable_remote_code(setting, values):
    with pytest.raises(ValueError, match=f"{setting} sets"):
        build_transformer_model("bert-base-cased", lambda docs: [], **{setting: values})


@pytest.mark.parametrize("name,plain", [
    ("vocab.txt", True), ("tokenizer.json", True), ("..", False), ("a/b", False),
    ("/etc/passwd", False), ("a\\b", False), ("C:x", False), ("x\x00", False), (None, False),
])
def test_is_plain_file_name(name, plain):
    assert is_plain_file_name(name) is plain


def test_torch_floor_loads_weights_only():
    """torch.load defaults to weights_only=True from 2.6: no pickle code from a saved pipeline."""
    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg")
    requires = [r.strip() for r in parser["options"]["install_requires"].splitlines()]
    torch_req = next(r for r in requires if r.startswith("torch"))
    assert Version(torch_req.split(">=")[1].split(",")[0]) >= Version("2.6.0")
    assert Version(torch.__version__.split("+")[0]) >= Version("2.6.0")

"""ONNX Runtime export (issue 14, part 1): the exported pipeline computes what the torch one does
(long docs, empty docs, any batch size), loads offline, packages, and refuses training; export
fails clearly on pipelines it can't handle."""
import os
import shutil
import subprocess
import sys

import numpy
import pytest
import spacy
import srsly
import torch
from typer.testing import CliRunner

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from spacy_bert_crf.cli import app  # noqa: E402
from spacy_bert_crf.layers.transformer_loading import TransformerLoadError  # noqa: E402
from spacy_bert_crf.onnx.export import ExportError, export_pipeline  # noqa: E402
from spacy_bert_crf.onnx.model import ExportedModelError, OnnxTransformerModel  # noqa: E402
from spacy_bert_crf.onnx.verify import compare_hidden, sample_texts  # noqa: E402

from .util import (  # noqa: E402
    TRAIN_DATA,
    entities,
    make_examples,
    make_light_nlp,
    make_trf_nlp,
    train,
    transformer_config,
)

TEXTS = [t for t, _ in TRAIN_DATA]
# Known words of the tiny BERT's vocab: 120 tokens, several strided windows (24 tokens, stride 16).
LONG_TEXT = " ".join(TEXTS * 4)
SAMPLE = TEXTS + [LONG_TEXT, ""]


def make_source(model_dir):
    nlp = spacy.blank("en")
    config = transformer_config(model_dir)
    config["model"]["@architectures"] = "spacy-bert-crf.TransformerModel.v1"
    nlp.add_pipe("transformer", config=config)
    nlp.add_pipe("crf_ner")
    train(nlp, make_examples(nlp), 5, lr=0.01)
    return nlp


@pytest.fixture(scope="module")
def exported(tiny_bert_dir, tmp_path_factory):
    """The torch pipeline (on disk) and its fp32 and int8 exports, with their reports."""
    root = tmp_path_factory.mktemp("export")
    nlp = make_source(tiny_bert_dir)
    nlp.to_disk(root / "torch")
    reports = {
        q: export_pipeline(root / "torch", root / q, quantize=q, sample=SAMPLE)
        for q in ("none", "int8")
    }
    return root, nlp, reports


def run(nlp, texts, batch_size=64):
    docs = list(nlp.pipe(texts, batch_size=batch_size))
    return docs, [(entities(d), d.spans["crf_ner"].attrs["scores"].tolist()) for d in docs]


def test_fp32_export_matches_torch(exported):
    root, torch_nlp, reports = exported
    report = reports["none"]
    assert report.fp32_vs_torch.max_abs_diff < 1e-4
    assert report.fp32_vs_torch.n_wordpieces > 100
    assert report.int8_vs_fp32 is None
    onnx_nlp = spacy.load(root / "none")
    assert isinstance(onnx_nlp.get_pipe("transformer").model, OnnxTransformerModel)
    torch_docs, torch_out = run(torch_nlp, SAMPLE)
    onnx_docs, onnx_out = run(onnx_nlp, SAMPLE)
    assert [e for e, _ in onnx_out] == [e for e, _ in torch_out]
    assert any(e for e, _ in torch_out)  # the trained CRF finds entities: the test can fail
    for (_, a), (_, b) in zip(torch_out, onnx_out):
        numpy.testing.assert_allclose(a, b, atol=1e-4)
    assert compare_hidden(torch_docs, onnx_docs).max_abs_diff < 1e-4


def test_long_doc_runs_in_several_windows(exported):
    root, torch_nlp, _ = exported
    onnx_nlp = spacy.load(root / "none")
    doc = onnx_nlp(LONG_TEXT)
    assert doc._.trf_data.wordpieces.input_ids.shape[0] > 3  # windows of one doc
    torch_doc = torch_nlp(LONG_TEXT)
    assert entities(doc) == entities(torch_doc)
    assert doc.spans["crf_ner"].attrs["scores"].tolist() == pytest.approx(
        torch_doc.spans["crf_ner"].attrs["scores"].tolist(), abs=1e-4
    )


def test_empty_docs(exported):
    root, _, _ = exported
    onnx_nlp = spacy.load(root / "int8")
    docs, out = run(onnx_nlp, ["", TEXTS[0], "", " "])
    assert out[0][0] == [] and out[2][0] == [] and out[3][0] == []
    assert len(docs[1]._.trf_data.wordpieces.input_ids) == 1
    only_empty, _ = run(onnx_nlp, ["", ""])
    assert [len(d.ents) for d in only_empty] == [0, 0]


# int8: ONNX Runtime's dynamic quantization scales activations per tensor, so a window's
# values depend slightly on the other windows of its sub-batch; fp32 does not.
@pytest.mark.parametrize("quantize,atol", [("none", 1e-4), ("int8", 2e-2)])
def test_batch_size_independence(exported, quantize, atol):
    root, _, _ = exported
    onnx_nlp = spacy.load(root / quantize)
    texts = SAMPLE + TEXTS[::-1]
    one_docs, one = run(onnx_nlp, texts, batch_size=1)
    all_docs, together = run(onnx_nlp, texts, batch_size=len(texts))
    assert [e for e, _ in one] == [e for e, _ in together]
    for (_, a), (_, b) in zip(one, together):
        numpy.testing.assert_allclose(a, b, atol=atol)
    diff = compare_hidden(one_docs, all_docs).max_abs_diff
    assert diff < atol * 5


def test_int8_reports_agreement_and_runs(exported):
    root, _, reports = exported
    report = reports["int8"]
    agreement = report.int8_entities_vs_fp32
    assert agreement is not None and agreement.n_docs == len(SAMPLE)
    assert agreement.n_reference > 0 and 0.5 <= agreement.f <= 1.0
    assert 0 < report.int8_vs_fp32.max_abs_diff < 1.0  # quantized: close, not equal
    meta = srsly.read_json(root / "int8" / "meta.json")
    assert meta["spacy_bert_crf_export"]["quantize"] == "int8"
    assert meta["spacy_bert_crf_export"]["verification"]["int8_vs_fp32_entity_f"] == agreement.f
    assert any(r.startswith("onnxruntime>=") for r in meta["requirements"])
    onnx_nlp = spacy.load(root / "int8")
    fp32_nlp = spacy.load(root / "none")
    int8_hidden = onnx_nlp(TEXTS[0])._.trf_data.model_output.last_hidden_state
    fp32_hidden = fp32_nlp(TEXTS[0])._.trf_data.model_output.last_hidden_state
    assert not numpy.allclose(int8_hidden, fp32_hidden, atol=1e-6)


def test_training_and_initialize_are_refused(exported):
    root, _, _ = exported
    onnx_nlp = spacy.load(root / "int8")
    before = entities(onnx_nlp(TEXTS[0]))
    examples = make_examples(onnx_nlp)
    with pytest.raises(ExportedModelError, match="ONNX Runtime.*export"):
        onnx_nlp.update(examples)
    with pytest.raises(ExportedModelError, match="initialize"):
        onnx_nlp.initialize(lambda: examples)
    assert entities(onnx_nlp(TEXTS[0])) == before  # crf_ner was not re-initialized


def test_threads_setting_and_copy(exported):
    root, _, _ = exported
    overrides = {"components": {"transformer": {"model": {"threads": 1}}}}
    onnx_nlp = spacy.load(root / "int8", config=overrides)
    model = onnx_nlp.get_pipe("transformer").model
    assert model.shim.session.get_session_options().intra_op_num_threads == 1
    copied = model.copy()
    assert copied.shim.onnx_model == model.shim.onnx_model and copied.get_dim("nO") == 32
    expected = entities(onnx_nlp(TEXTS[1]))
    onnx_nlp.replace_listeners("transformer", "crf_ner", ["model.tok2vec"])
    assert entities(onnx_nlp(TEXTS[1])) == expected


def test_replaced_listener_saves_and_loads_without_the_transformer(exported, tmp_path):
    """In an exported pipeline too, crf_ner's own copy of the encoder (nlp.replace_listeners)
    is saved under an architecture that loads again (spacy-bert-crf.OnnxTok2VecTransformer.v1;
    spacy-transformers' Tok2VecTransformer.v3 would build a torch model from a Hub name)."""
    root, _, _ = exported
    onnx_nlp = spacy.load(root / "int8")
    expected = [entities(doc) for doc in onnx_nlp.pipe(TEXTS)]
    onnx_nlp.replace_listeners("transformer", "crf_ner", ["model.tok2vec"])
    saved = onnx_nlp.config["components"]["crf_ner"]["model"]["tok2vec"]
    assert saved["@architectures"] == "spacy-bert-crf.OnnxTok2VecTransformer.v1"
    assert saved["max_batch_pieces"] == 4096 and "pooling" in saved
    onnx_nlp.to_disk(tmp_path / "nlp")
    alone = spacy.load(tmp_path / "nlp", exclude=["transformer"])
    assert alone.pipe_names == ["crf_ner"]
    assert [entities(doc) for doc in alone.pipe(TEXTS)] == expected


def test_no_transformer_is_refused(tmp_path):
    nlp = make_light_nlp()
    nlp.initialize(lambda: make_examples(nlp))
    with pytest.raises(ExportError, match="no transformer component.*crf_ner"):
        export_pipeline(nlp, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_exported_pipeline_is_refused(exported, tmp_path):
    root, _, _ = exported
    with pytest.raises(ExportError, match="already runs in ONNX Runtime"):
        export_pipeline(root / "int8", tmp_path / "again")


class _Untraceable(torch.nn.Module):
    """An encoder with an operation ONNX has no translation for."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.embed = torch.nn.Embedding(config.vocab_size, config.hidden_size)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, return_dict=True):
        hidden = torch.special.bessel_j0(self.embed(input_ids))
        return type("Output", (), {"last_hidden_state": hidden})()


def test_untraceable_encoder_is_named(tiny_bert_dir, tmp_path):
    nlp = make_source(tiny_bert_dir)
    shim = nlp.get_pipe("transformer").model.layers[0].shims[0]
    shim._hfmodel.transformer = _Untraceable(shim._hfmodel.transformer.config)
    expected = r"can't export the encoder _Untraceable \(model_type 'bert'\)"
    with pytest.raises(ExportError, match=expected):
        export_pipeline(nlp, tmp_path / "out", quantize="none", sample=TEXTS)
    assert not (tmp_path / "out").exists()


def test_verification_failure_writes_nothing(exported, tmp_path):
    root, _, _ = exported
    with pytest.raises(ExportError, match=r"differs from torch by up to .* \(tolerance 1e-09\)"):
        export_pipeline(root / "torch", tmp_path / "out", quantize="none", atol=1e-9,
                        sample=TEXTS)
    assert not (tmp_path / "out").exists()


def test_tampered_tokenizer_file_is_refused(exported, tmp_path):
    root, _, _ = exported
    model_file = root / "int8" / "transformer" / "model"
    msg = srsly.msgpack_loads(model_file.read_bytes())
    shim = srsly.msgpack_loads(msg["shims"][1][0])
    shim["tokenizer"]["../evil.json"] = b"{}"
    msg["shims"][1][0] = srsly.msgpack_dumps(shim)
    bad = tmp_path / "bad"
    shutil.copytree(root / "int8", bad)
    (bad / "transformer" / "model").write_bytes(srsly.msgpack_dumps(msg))
    with pytest.raises(TransformerLoadError, match="transformer.*not a plain file name"):
        spacy.load(bad)


def test_truncated_export_is_named_damaged(exported, tmp_path):
    """A cut-off transformer/model of an exported pipeline: an error naming the component and
    the file as damaged, not a traceback from msgpack."""
    root, _, _ = exported
    bad = tmp_path / "cut"
    shutil.copytree(root / "int8", bad)
    model_file = bad / "transformer" / "model"
    model_file.write_bytes(model_file.read_bytes()[:1000])
    with pytest.raises(TransformerLoadError, match="damaged or incomplete"):
        spacy.load(bad)


def test_cli_export_prints_tolerance_and_agreement(exported, tmp_path):
    root, _, _ = exported
    sample = tmp_path / "sample.txt"
    sample.write_text("\n".join(TEXTS) + "\n", encoding="utf8")
    out = tmp_path / "deploy" / "cli"  # its parent does not exist yet: made, as for spacy train
    result = CliRunner().invoke(app, ["export", str(root / "torch"), str(out), "--sample",
                                      str(sample)])
    assert result.exit_code == 0, result.output
    assert "tolerance 0.001" in result.output
    assert "int8 vs fp32 ONNX: entity agreement F=" in result.output
    assert (out / "config.cfg").exists()
    bad = CliRunner().invoke(app, ["export", str(root / "torch"), str(tmp_path / "x"),
                                   "--quantize", "int4"])
    assert bad.exit_code == 1 and "quantize must be one of int8, none" in bad.output


def test_default_sample_has_long_and_empty_docs():
    texts = sample_texts("en")
    assert texts[-1] == "" and len(texts[-2]) > 10 * max(len(t) for t in texts[:-2])
    assert sample_texts("zh")[0] != texts[0] and sample_texts("xx")[0] == texts[0]


@pytest.mark.slow
def test_load_offline_and_package(exported, tmp_path):
    """A fresh process with HF_HUB_OFFLINE=1 that imports only spaCy loads the export (the
    architecture resolves through its entry point); `spacy package` packages it."""
    root, torch_nlp, _ = exported
    script = (
        "import sys, spacy\n"
        "nlp = spacy.load(sys.argv[1])\n"
        "print([(e.start_char, e.end_char, e.label_) for e in nlp(sys.argv[2]).ents])\n"
    )
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    result = subprocess.run([sys.executable, "-c", script, str(root / "none"), TEXTS[0]],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == str(entities(torch_nlp(TEXTS[0])))
    packages = tmp_path / "packages"
    packages.mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "spacy", "package", str(root / "int8"), str(packages),
         "--name", "onnx_test", "--version", "0.0.1", "--build", "none"],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    data = packages / "en_onnx_test-0.0.1" / "en_onnx_test" / "en_onnx_test-0.0.1"
    meta = srsly.read_json(data / "meta.json")
    assert any(r.startswith("onnxruntime") for r in meta["requirements"])
    assert entities(spacy.load(data)(TEXTS[0])) == entities(torch_nlp(TEXTS[0]))


def test_source_that_fails_on_the_sample_is_named(tiny_bert_dir, tmp_path):
    """spacy-transformers' own TransformerModel.v3 runs windows longer than the tiny BERT's 64
    positions (unknown words split into letters) and crashes: export says so."""
    nlp = make_trf_nlp(tiny_bert_dir)
    nlp.initialize(lambda: make_examples(nlp))
    with pytest.raises(ExportError, match="torch pipeline fails on the sample docs"):
        export_pipeline(nlp, tmp_path / "out", quantize="none", sample=["Qwvxyzzk " * 40])
    assert not (tmp_path / "out").exists()


def test_deploy_md_is_rendered_from_its_results():
    from benchmarks import deploy
    from benchmarks.paths import RESULTS

    data = srsly.read_json(RESULTS / "deploy.json")
    assert deploy.render(data) == (RESULTS / "deploy.md").read_text(encoding="utf8")
    assert set(data["systems"]) == set(deploy.SYSTEMS)

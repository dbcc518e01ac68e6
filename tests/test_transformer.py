"""spacy-bert-crf.TransformerModel.v1: length-bucketed inference gives spacy-transformers'
outputs; the model name is a local folder or a Hub name; damaged files are named."""
import pickle
import shutil

import numpy
import pytest
import spacy
import srsly
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from spacy.tokens import Doc

from spacy_bert_crf.layers import transformer as transformer_layers
from spacy_bert_crf.layers.transformer import build_transformer_model, length_buckets
from spacy_bert_crf.layers.transformer_loading import TransformerLoadError, is_path_like

from .util import pipeline_weights, transformer_config


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(1, 300), max_size=60), st.integers(1, 2000), st.floats(0.05, 1.0))
def test_length_buckets_partition_rows(lengths, max_pieces, min_fill):
    groups = length_buckets(lengths, max_pieces, min_fill)
    flat = [i for g in groups for i in g]
    assert sorted(flat) == list(range(len(lengths)))
    assert [lengths[i] for i in flat] == sorted(lengths)  # shortest first
    for g in groups:
        longest = max(lengths[i] for i in g)
        assert len(g) == 1 or len(g) * longest <= max_pieces
        assert len(g) == 1 or sum(lengths[i] for i in g) >= min_fill * len(g) * longest - 1e-9


def _nlp(model_dir, architecture, **extra):
    cfg = transformer_config(model_dir, window=8, stride=6)
    cfg["model"].update({"@architectures": architecture, **extra})
    nlp = spacy.blank("en")
    nlp.add_pipe("transformer", config=cfg)
    nlp.initialize()
    return nlp


def test_bucketed_inference_matches_spacy_transformers(tiny_bert_dir, monkeypatch):
    reference = _nlp(tiny_bert_dir, "spacy-transformers.TransformerModel.v3")
    bucketed = _nlp(tiny_bert_dir, "spacy-bert-crf.TransformerModel.v1", max_batch_pieces=40)
    bucketed.get_pipe("transformer").from_bytes(reference.get_pipe("transformer").to_bytes())
    rng = numpy.random.default_rng(0)
    # known words (one piece) and unknown ones (split into letters): windows of varied length
    vocab = ["visited", "Paris", "and", "met", "Olga", "in", "Oslo", ".", "Zork", "Qwv", "Jaxx"]
    long_words = [vocab[i] for i in rng.integers(0, len(vocab), 400)]
    texts = [long_words, ["Paris", "."], vocab, vocab[:3] * 7]

    def outputs(nlp):
        docs = [Doc(nlp.vocab, words=w) for w in texts]
        return [doc._.trf_data for doc in nlp.pipe(docs, batch_size=4)]

    # observe the sub-batches the bucketed model really runs
    run_encoder, sub_batches = transformer_layers.encoder_predict, []

    def recording_encoder(layer, wordpieces):
        sub_batches.append(numpy.asarray(wordpieces.attention_mask).copy())
        return run_encoder(layer, wordpieces)

    monkeypatch.setattr(transformer_layers, "encoder_predict", recording_encoder)
    ref, got = outputs(reference), outputs(bucketed)
    for a, b in zip(ref, got):
        assert a.wordpieces.input_ids.shape == b.wordpieces.input_ids.shape
        mask = a.wordpieces.attention_mask.astype(bool)
        real_a = a.model_output.last_hidden_state[mask]
        real_b = b.model_output.last_hidden_state[mask]
        numpy.testing.assert_allclose(real_a, real_b, atol=1e-5)
    # several sub-batches, together every window once, each padded only to its own longest
    # window and within max_batch_pieces=40 and min_fill=0.75 (a lone window may be longer)
    assert len(sub_batches) > 1
    n_windows = sum(len(out.wordpieces.input_ids) for out in ref)
    assert sum(len(mask) for mask in sub_batches) == n_windows
    for mask in sub_batches:
        rows, width = mask.shape
        real = mask.sum(1)
        assert width == real.max()
        assert rows == 1 or rows * width <= 40
        assert rows == 1 or real.sum() >= 0.75 * rows * width


def test_encoder_predict_is_thinc_predict_without_switching_modes(tiny_bert_dir):
    """The encoder call of bucketed inference gives exactly thinc's layer.predict, leaves the
    module in eval mode instead of switching it to eval and back to train on every call, and a
    training step after it still runs in train mode (dropout on)."""
    nlp = _nlp(tiny_bert_dir, "spacy-bert-crf.TransformerModel.v1")
    model = nlp.get_pipe("transformer").model
    layer = model.layers[0]
    module = layer.shims[0]._model
    docs = [nlp.make_doc(t) for t in ("Olga met Paris .", "Zork visited Oslo and Qwv in Jaxx .")]
    wordpieces = model.predict(docs).wordpieces
    expected = layer.predict(wordpieces)  # thinc's PyTorchShim.predict: ends in train mode
    assert module.training
    modes = []
    hooks = [m.register_forward_pre_hook(lambda m, a: modes.append(m.training))
             for m in module.modules() if isinstance(m, torch.nn.Dropout)]
    got = transformer_layers.encoder_predict(layer, wordpieces)
    assert not module.training and modes and not any(modes)  # dropout off
    assert set(got.keys()) == set(expected.keys())
    for key in expected.keys():
        assert torch.equal(got[key], expected[key]), key
    train_calls = []
    original_train = module.train
    module.train = lambda mode=True: train_calls.append(mode) or original_train(mode)
    try:
        for _ in range(3):
            transformer_layers.encoder_predict(layer, wordpieces)
        assert train_calls == []  # nothing walks the submodules at inference
        modes.clear()
        model.begin_update(docs)  # a training step after inference: train mode, dropout on
        assert module.training and modes and all(modes)
    finally:
        del module.train
        for hook in hooks:
            hook.remove()


@pytest.mark.parametrize("batch_size", [1, 8])
def test_inference_outputs_on_the_docs_are_plain_arrays(tiny_bert_dir, batch_size):
    """The encoder runs under torch.inference_mode: what reaches the docs (and the listeners
    through them) are arrays per doc that can be changed in place, whether the batch ran as
    one tensor or in sub-batches put back together."""
    nlp = _nlp(tiny_bert_dir, "spacy-bert-crf.TransformerModel.v1", max_batch_pieces=16)
    texts = ["Olga met Paris .", " ".join(["Zork"] * 30), "Qwv ."]
    for doc in nlp.pipe(texts, batch_size=batch_size):
        hidden = doc._.trf_data.model_output.last_hidden_state
        assert isinstance(hidden, numpy.ndarray) and hidden.shape[0] > 0
        before = hidden.copy()
        hidden += 1.0
        numpy.testing.assert_allclose(hidden, before + 1.0)


@pytest.mark.parametrize("bad", [{"max_batch_pieces": 0}, {"min_fill": 0.0}, {"min_fill": 1.5}])
def test_invalid_settings_raise(bad):
    # settings are checked when the model is built; the encoder is only loaded at initialize
    with pytest.raises(ValueError, match="max_batch_pieces|min_fill"):
        build_transformer_model("encoders/not-needed", lambda docs: [], **bad)


def test_empty_and_whitespace_docs_in_a_batch(tiny_bert_dir):
    nlp = _nlp(tiny_bert_dir, "spacy-bert-crf.TransformerModel.v1", max_batch_pieces=16)
    texts = ["", "   ", "Olga met Paris .", "", " ".join(["Zork"] * 40)]
    docs = list(nlp.pipe(texts, batch_size=8))
    assert [len(d) for d in docs] == [len(nlp.make_doc(t)) for t in texts]
    long_doc = docs[-1]._.trf_data
    assert long_doc.model_output.last_hidden_state.shape[0] == len(long_doc.wordpieces.strings)


# ------------------------------------------------------------------ model name: local or Hub


@pytest.mark.parametrize("name,path_like", [
    ("bert-base-cased", False), ("org/model", False), ("encoders/minilm-l6", True),
    ("./minilm", True), ("../minilm", True), ("~/minilm", True), ("/opt/minilm", True),
    (".minilm", True), ("a/b/c", True), ("org/", True), ("C:minilm", True), ("a\\b", True),
])
def test_is_path_like(name, path_like, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert is_path_like(name) is path_like


def test_first_component_that_exists_locally_makes_a_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert not is_path_like("models/minilm")
    (tmp_path / "models").mkdir()
    assert is_path_like("models/minilm")


@pytest.fixture
def hub_calls(monkeypatch):
    """Names the weights would be loaded from; loading itself is stopped (no network)."""
    calls = []

    def fake_from_pretrained(source, tok_config, trf_config):
        calls.append(source)
        raise RuntimeError("stopped before loading")

    monkeypatch.setattr(
        "spacy_bert_crf.layers.transformer.huggingface_from_pretrained", fake_from_pretrained
    )
    return calls


@pytest.mark.parametrize("name", ["encoders/minilm-l6", "./minilm", "~/no-such-minilm-here"])
def test_missing_local_path_is_an_error_not_a_hub_query(name, tmp_path, monkeypatch, hub_calls):
    monkeypatch.chdir(tmp_path)
    model = build_transformer_model(name, lambda docs: [])
    with pytest.raises(FileNotFoundError, match="is a local path") as err:
        model.initialize()
    assert repr(name) in str(err.value)
    assert "python -m spacy_bert_crf encoders build minilm-l6 encoders/minilm-l6" in str(err.value)
    assert hub_calls == []


@pytest.mark.parametrize("name", ["bert-base-cased", "org/model"])
def test_hub_names_go_to_transformers(name, tmp_path, monkeypatch, hub_calls):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RuntimeError, match="stopped"):
        build_transformer_model(name, lambda docs: []).initialize()
    assert hub_calls == [name]


def test_saved_pipeline_loads_where_its_encoder_folder_is_absent(
    tiny_bert_dir, tmp_path, monkeypatch
):
    project = tmp_path / "project"
    shutil.copytree(tiny_bert_dir, project / "encoders" / "tiny")
    monkeypatch.chdir(project)
    nlp = _nlp("encoders/tiny", "spacy-bert-crf.TransformerModel.v1")  # a relative name
    nlp.to_disk(tmp_path / "saved")
    expected = nlp("Olga met Oslo .")._.trf_data.model_output.last_hidden_state
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # encoders/tiny does not exist here
    monkeypatch.setattr(
        "spacy_bert_crf.layers.transformer.huggingface_from_pretrained",
        lambda *args: pytest.fail("loading a saved pipeline must not load weights by name"),
    )
    loaded = spacy.load(tmp_path / "saved")
    got = loaded("Olga met Oslo .")._.trf_data.model_output.last_hidden_state
    numpy.testing.assert_allclose(got, expected, atol=1e-6)
    with pytest.raises(FileNotFoundError, match="encoders/tiny"):
        build_transformer_model("encoders/tiny", lambda docs: []).initialize()


# ------------------------------------------------------------------ damaged files


@pytest.fixture(scope="module")
def saved_trf(tiny_bert_dir, tmp_path_factory):
    cfg = transformer_config(tiny_bert_dir)
    cfg["model"]["@architectures"] = "spacy-bert-crf.TransformerModel.v1"
    nlp = spacy.blank("en")
    nlp.add_pipe("transformer", name="trf", config=cfg)
    nlp.initialize()
    path = tmp_path_factory.mktemp("saved") / "nlp"
    nlp.to_disk(path)
    return path


@pytest.mark.parametrize("keep", [0.0, 0.5, 0.999])
def test_truncated_model_file_names_component_and_file(saved_trf, tmp_path, keep):
    path = tmp_path / "nlp"
    shutil.copytree(saved_trf, path)
    model_file = path / "trf" / "model"
    data = model_file.read_bytes()
    model_file.write_bytes(data[:int(len(data) * keep)])
    with pytest.raises(TransformerLoadError, match="damaged or incomplete") as err:
        spacy.load(path)
    message = str(err.value)
    assert "component 'trf'" in message
    assert str(model_file) in message
    assert "model-last" in message


def test_damaged_bytes_are_named_damaged(saved_trf):
    """From bytes there is no file, and spaCy's compiled Pipe.from_bytes hides the component."""
    pipe = spacy.load(saved_trf).get_pipe("trf")
    msg = srsly.msgpack_loads(pipe.to_bytes())
    msg["model"] = msg["model"][:100]
    with pytest.raises(TransformerLoadError, match="model: it is damaged or incomplete"):
        pipe.from_bytes(srsly.msgpack_dumps(msg))


# ------------------------------------------------------------------ replace_listeners


SHAPE_FEATURES = {"@architectures": "spacy.MultiHashEmbed.v2", "width": 8, "attrs": ["SHAPE"],
                  "rows": [50], "include_static_vectors": False}


def test_replace_listener_cfg_renames_and_pickles():
    """The config function nlp.replace_listeners calls names this plugin's tok2vec, and survives
    pickling (spaCy pickles the pipeline for workers where processes are spawned)."""
    import pickle

    from spacy_bert_crf.layers.transformer import replace_listener_cfg_naming

    rename = pickle.loads(pickle.dumps(replace_listener_cfg_naming("my.Tok2Vec.v1")))
    model_cfg = {"@architectures": "spacy-bert-crf.TransformerModel.v1", "min_fill": 0.5}
    listener = {"@architectures": "spacy-transformers.TransformerListener.v1",
                "pooling": {"@layers": "reduce_mean.v1"}, "grad_factor": 1.0}
    assert rename(model_cfg, listener) == {
        "@architectures": "my.Tok2Vec.v1", "min_fill": 0.5,
        "pooling": {"@layers": "reduce_mean.v1"}, "grad_factor": 1.0}
    other = {"@architectures": "spacy.HashEmbedCNN.v2"}
    assert rename(other, listener) == other  # not a transformer: left alone


@pytest.mark.parametrize("features", [None, SHAPE_FEATURES], ids=["listener", "with_features"])
def test_replaced_listener_saves_and_loads_without_the_transformer(
    tiny_bert_dir, tmp_path, features
):
    """nlp.replace_listeners gives crf_ner its own copy of the transformer (README): saved, the
    component loads again on its own (spacy-bert-crf.Tok2VecTransformer.v1; spacy-transformers'
    Tok2VecTransformer.v3 takes none of TransformerModel.v1's settings) with the same entities,
    also under CRFTagger.v2's token features, whose listener stays at model.tok2vec."""
    from .util import make_examples

    cfg = transformer_config(tiny_bert_dir)
    cfg["model"]["@architectures"] = "spacy-bert-crf.TransformerModel.v1"
    nlp = spacy.blank("en")
    nlp.add_pipe("transformer", config=cfg)
    model = {"@architectures": "spacy-bert-crf.CRFTagger.v2", "features": features,
             "tok2vec": {"@architectures": "spacy-transformers.TransformerListener.v1",
                         "pooling": {"@layers": "reduce_mean.v1"}}}
    nlp.add_pipe("crf_ner", config={"model": model})
    examples = make_examples(nlp)
    nlp.initialize(lambda: examples)
    texts = [eg.reference.text for eg in examples]
    expected = [[(e.start, e.end, e.label_) for e in doc.ents] for doc in nlp.pipe(texts)]
    nlp.replace_listeners("transformer", "crf_ner", ["model.tok2vec"])
    saved = nlp.config["components"]["crf_ner"]["model"]["tok2vec"]
    assert saved["@architectures"] == "spacy-bert-crf.Tok2VecTransformer.v1"
    assert saved["max_batch_pieces"] == 4096
    nlp.to_disk(tmp_path / "nlp")
    alone = spacy.load(tmp_path / "nlp", exclude=["transformer"])
    assert alone.pipe_names == ["crf_ner"]
    got = [[(e.start, e.end, e.label_) for e in doc.ents] for doc in alone.pipe(texts)]
    assert got == expected


def _frozen_nlp(model_dir, freeze):
    from .util import make_examples

    cfg = transformer_config(model_dir)
    cfg["model"]["@architectures"] = "spacy-bert-crf.TransformerModel.v2"
    cfg["model"]["freeze_input_embeddings"] = freeze
    nlp = spacy.blank("en")
    nlp.add_pipe("transformer", config=cfg)
    nlp.add_pipe("crf_ner")
    examples = make_examples(nlp)
    nlp.initialize(lambda: examples)
    return nlp, examples


def _encoder_weights(nlp):
    encoder = nlp.get_pipe("transformer").model.transformer
    return (encoder.get_input_embeddings().weight.detach().clone(),
            encoder.encoder.layer[0].attention.self.query.weight.detach().clone())


def _train(nlp, examples, steps=3):
    optimizer = nlp.resume_training()
    for _ in range(steps):
        nlp.update(examples, sgd=optimizer)


@pytest.mark.parametrize("freeze", [True, False])
def test_freeze_input_embeddings_keeps_them_and_trains_the_rest(tiny_bert_dir, freeze):
    """TransformerModel.v2 with freeze_input_embeddings: the wordpiece embedding matrix gets no
    gradient and stays as pretrained while the layers train; without it, it trains (v1)."""
    nlp, examples = _frozen_nlp(tiny_bert_dir, freeze)
    embeddings, layer = _encoder_weights(nlp)
    _train(nlp, examples)
    embeddings_after, layer_after = _encoder_weights(nlp)
    assert not torch.equal(layer, layer_after)
    assert torch.equal(embeddings, embeddings_after) == freeze


def test_frozen_input_embeddings_stay_frozen_after_loading(tiny_bert_dir, tmp_path):
    """Saved and loaded (a resumed training loads its checkpoint so), the embeddings are still
    frozen: the shim builds a new torch model, whose weights would otherwise all train."""
    nlp, examples = _frozen_nlp(tiny_bert_dir, True)
    nlp.to_disk(tmp_path / "nlp")
    loaded = spacy.load(tmp_path / "nlp")
    embeddings, layer = _encoder_weights(loaded)
    _train(loaded, examples)
    embeddings_after, layer_after = _encoder_weights(loaded)
    assert torch.equal(embeddings, embeddings_after)
    assert not torch.equal(layer, layer_after)


@pytest.mark.parametrize("freeze", [True, False])
def test_replaced_listener_of_a_v2_transformer_keeps_its_setting(tiny_bert_dir, tmp_path, freeze):
    """replace_listeners on TransformerModel.v2 writes Tok2VecTransformer.v2 with the setting
    (v1 takes no freeze_input_embeddings), and the component saved with its own copy of the
    transformer loads and trains with its embeddings frozen or not."""
    nlp, examples = _frozen_nlp(tiny_bert_dir, freeze)
    nlp.replace_listeners("transformer", "crf_ner", ["model.tok2vec"])
    saved = nlp.config["components"]["crf_ner"]["model"]["tok2vec"]
    assert saved["@architectures"] == "spacy-bert-crf.Tok2VecTransformer.v2"
    assert saved["freeze_input_embeddings"] is freeze
    nlp.to_disk(tmp_path / "nlp")
    alone = spacy.load(tmp_path / "nlp", exclude=["transformer"])
    encoder = alone.get_pipe("crf_ner").model.get_ref("tok2vec").layers[0].layers[0].transformer
    before = encoder.get_input_embeddings().weight.detach().clone()
    _train(alone, examples)
    assert torch.equal(before, encoder.get_input_embeddings().weight) == freeze


def test_freeze_input_embeddings_without_input_embeddings_is_an_error(tiny_bert_dir, monkeypatch):
    """An encoder that cannot name its input embeddings is refused, not trained unfrozen."""
    from transformers import BertModel

    def missing(self):
        raise NotImplementedError

    monkeypatch.setattr(BertModel, "get_input_embeddings", missing)
    with pytest.raises(ValueError, match="get_input_embeddings"):
        _frozen_nlp(tiny_bert_dir, True)


# ---------------------------------------------------------------------------------------------
# Row-sparse updates of the input embeddings (layers/sparse_embeddings.py)
# ---------------------------------------------------------------------------------------------

ADAM = {"@optimizers": "Adam.v1", "learn_rate": 0.01, "L2": 0.01, "grad_clip": 1.0,
        "use_averages": False}
LAYERWISE = {"@optimizers": "spacy-bert-crf.LayerwiseAdamW.v1", "learn_rate": 0.01,
             "n_layers": 2, "L2": 0.01}


def _optimizer(settings):
    from spacy.util import registry

    return registry.resolve({"o": settings})["o"]


def _twins(model_dir, modes):
    """Pipelines built alike (same seed), one per mode of the embedding update; the other
    weights updated by thinc's per-array loop (the fused step has its own tests below)."""
    from spacy.util import fix_random_seed

    nlps = []
    for sparse in modes:
        fix_random_seed(0)
        nlp, examples = _frozen_nlp(model_dir, False)
        model = nlp.get_pipe("transformer").model
        model.attrs["sparse_embedding_updates"] = sparse
        model.attrs["fused_optimizer_update"] = False
        nlps.append(nlp)
    return nlps, examples


def _step(nlp, examples, optimizer, seed):
    """One training step as `spacy train` takes it: update, then every component's
    finish_update, then the schedules; the encoder's dropout seeded."""
    torch.manual_seed(seed)
    nlp.update(examples, sgd=False, drop=0.0)
    for _, proc in nlp.pipeline:
        proc.finish_update(optimizer)
    optimizer.step_schedules()


def _embedding_module(nlp):
    return nlp.get_pipe("transformer").model.transformer.get_input_embeddings()


def _assert_same_weights(dense, sparse, rtol=2e-5, atol=2e-7):
    a, b = pipeline_weights(dense), pipeline_weights(sparse)
    assert a.keys() == b.keys()
    for name, x in a.items():
        numpy.testing.assert_allclose(b[name], x, rtol=rtol, atol=atol, err_msg=name)


@pytest.mark.parametrize(
    "settings", [ADAM, LAYERWISE, {**ADAM, "use_averages": True}, {**ADAM, "L2": 0.0},
                 {**ADAM, "@optimizers": "RAdam.v1"}],
    ids=["adam", "layerwise", "averages", "no-decay", "radam"])
def test_sparse_embedding_updates_give_the_dense_weights(tiny_bert_dir, settings):
    """Trained with row-sparse embedding updates, every weight (the whole embedding matrix:
    looked-up rows, decayed-only rows, the padding row) is the dense update's, up to float
    rounding; and the optimizers' states match. With parameter averaging the recorded rows go
    to the optimizer as a dense gradient."""
    from spacy_bert_crf.layers.sparse_embeddings import SparseEmbeddingHFShim

    (dense, sparse), examples = _twins(tiny_bert_dir, (False, True))
    before = _embedding_module(dense).weight.detach().clone()
    optimizers = [_optimizer(settings) for _ in range(2)]
    for step in range(4):
        for nlp, optimizer in zip((dense, sparse), optimizers):
            _step(nlp, examples, optimizer, step)
    shim = sparse.get_pipe("transformer").model.layers[0].shims[0]
    assert type(shim) is SparseEmbeddingHFShim
    assert _embedding_module(sparse).weight.grad is None
    assert _embedding_module(dense).weight.grad is not None
    after = _embedding_module(dense).weight.detach()
    assert not torch.equal(before, after)
    _assert_same_weights(dense, sparse)
    moments = [{k[1]: v for k, v in opt.mom1.items() if isinstance(k[1], str)}
               for opt in optimizers]
    name = "embeddings.word_embeddings.weight"
    numpy.testing.assert_allclose(moments[1][name], moments[0][name], rtol=1e-5, atol=1e-9)
    assert [opt.nr_update[k] for opt in optimizers for k in opt.nr_update
            if k[1] == name] == [4, 4]


def test_dense_then_sparse_embedding_updates_continue_alike(tiny_bert_dir):
    """Going from dense to row-sparse updates mid-run (a checkpoint of a dense run resumed with
    them) continues as the dense run does: the optimizer's state is shared as it is."""
    (dense, switched), examples = _twins(tiny_bert_dir, (False, False))
    optimizers = [_optimizer(ADAM) for _ in range(2)]
    for step in range(4):
        if step == 2:
            switched.get_pipe("transformer").model.attrs["sparse_embedding_updates"] = True
        for nlp, optimizer in zip((dense, switched), optimizers):
            _step(nlp, examples, optimizer, step)
    assert _embedding_module(switched).weight.grad is None
    _assert_same_weights(dense, switched)


def test_sparse_embedding_updates_skip_what_they_cannot_match(tiny_bert_dir):
    """A frozen matrix is not updated at all; a weight shared with another module trains
    densely (its other uses would get no gradient otherwise); inference is untouched."""
    from spacy_bert_crf.layers.sparse_embeddings import SparseEmbeddingHFShim

    nlp, examples = _frozen_nlp(tiny_bert_dir, True)
    nlp.update(examples, sgd=_optimizer(ADAM))
    assert type(nlp.get_pipe("transformer").model.layers[0].shims[0]) is not (
        SparseEmbeddingHFShim)
    (tied,), examples = _twins(tiny_bert_dir, (True,))
    encoder = tied.get_pipe("transformer").model.transformer
    encoder.extra_head = torch.nn.Linear(2, 2)
    encoder.extra_head.weight = encoder.get_input_embeddings().weight
    tied.update(examples, sgd=_optimizer(ADAM))
    assert encoder.get_input_embeddings().weight.grad is not None
    docs = [eg.reference.text for eg in examples]
    (sparse,), _ = _twins(tiny_bert_dir, (True,))
    _step(sparse, examples, _optimizer(ADAM), 0)
    module = _embedding_module(sparse)
    before = [[(e.start, e.end, e.label_) for e in doc.ents] for doc in sparse.pipe(docs)]
    assert not module.__dict__.get("_spacy_bert_crf_rows")  # nothing recorded at inference
    # the optimizer's state stays out of the model: a trained pipeline pickles as it did
    assert not [v for v in vars(module).values() if isinstance(v, (numpy.ndarray, tuple))]
    assert pickle.loads(pickle.dumps(sparse)).pipe_names == sparse.pipe_names
    assert before == [[(e.start, e.end, e.label_) for e in doc.ents] for doc in sparse.pipe(docs)]


# ---------------------------------------------------------------------------------------------
# One multi-tensor optimizer step for the transformer (layers/fused_update.py)
# ---------------------------------------------------------------------------------------------


@pytest.fixture()
def fused_on_cpu(monkeypatch):
    """The fused step is taken on GPUs only; its arithmetic is checked here on the CPU."""
    from spacy_bert_crf.layers import fused_update

    monkeypatch.setattr(fused_update, "DEVICE_TYPES", ("cuda", "cpu"))


def _fused_twins(model_dir):
    """Two pipelines built alike, both with row-sparse embedding updates: the first takes
    thinc's per-array optimizer loop for the other weights, the second the fused step."""
    nlps, examples = _twins(model_dir, (True, True))
    for nlp, fused in zip(nlps, (False, True)):
        nlp.get_pipe("transformer").model.attrs["fused_optimizer_update"] = fused
    return nlps, examples


def _transformer_state(optimizer):
    """The optimizer's moments and update counts of the transformer's weights, by name."""
    named = lambda d: {k[1]: v for k, v in d.items() if "." in str(k[1])}  # noqa: E731
    return named(optimizer.mom1), named(optimizer.mom2), named(optimizer.nr_update)


FUSED_SETTINGS = [ADAM, LAYERWISE, {**ADAM, "L2_is_weight_decay": False},
                  {**ADAM, "grad_clip": 0.05}, {**ADAM, "grad_clip": 0.0, "L2": 0.0}]
FUSED_IDS = ["adam", "layerwise", "l2-in-gradient", "clipping", "no-clip-no-decay"]


class _TinyEncoder(torch.nn.Module):
    """Parameters named as in a BERT (so that LayerwiseAdamW can place them)."""

    def __init__(self):
        super().__init__()
        self.embeddings = torch.nn.Module()
        self.embeddings.LayerNorm = torch.nn.LayerNorm(3)
        self.encoder = torch.nn.Module()
        self.encoder.layer = torch.nn.ModuleList([torch.nn.Linear(3, 5), torch.nn.Linear(5, 3)])


@pytest.mark.parametrize("settings", FUSED_SETTINGS, ids=FUSED_IDS)
def test_fused_adam_update_is_thincs_arithmetic(settings, fused_on_cpu):
    """Given the same gradients step after step, the fused step and thinc's per-array loop
    (PyTorchShim.finish_update) give the same weights, moments and update counts, up to float
    rounding; the optimizer's own moment arrays are the ones updated, and gradients are
    zeroed. Some arrays' gradients are large enough to be clipped."""
    import copy

    from thinc.shims import PyTorchShim

    from spacy_bert_crf.layers.fused_update import fused_adam_update

    torch.manual_seed(0)
    module = _TinyEncoder()
    loop, fused = PyTorchShim(module), PyTorchShim(copy.deepcopy(module))
    optimizers = [_optimizer(settings) for _ in range(2)]
    generator = torch.Generator().manual_seed(1)
    for step in range(5):
        for i, (name, param) in enumerate(module.named_parameters()):
            grad = torch.randn(param.shape, generator=generator) * (10.0 if i % 2 else 0.01)
            for shim in (loop, fused):
                dict(shim._model.named_parameters())[name].grad = grad.clone()
        loop.finish_update(optimizers[0])
        assert fused_adam_update(fused, optimizers[1]) is True
        for optimizer in optimizers:
            optimizer.step_schedules()
        a, b = dict(loop._model.named_parameters()), dict(fused._model.named_parameters())
        for name in a:
            # thinc's numpy kernel takes 1 - beta2 in float32 (0.000999987): a few 1e-6 of
            # the step (the rate, 1e-2) apart
            numpy.testing.assert_allclose(b[name].detach(), a[name].detach(), rtol=1e-5,
                                          atol=1e-6, err_msg=f"step {step}: {name}")
            assert not b[name].grad.any()
    (m1a, m2a, na), (m1b, m2b, nb) = (
        [{k[1]: v for k, v in d.items()} for d in (o.mom1, o.mom2, o.nr_update)]
        for o in optimizers)
    assert na == nb and set(nb.values()) == {5}
    for name in m1a:
        numpy.testing.assert_allclose(m1b[name], m1a[name], rtol=1e-5, atol=1e-9)
        numpy.testing.assert_allclose(m2b[name], m2a[name], rtol=1e-4, atol=1e-9)
        assert isinstance(m1b[name], numpy.ndarray)  # thinc's form: checkpoints as before


@pytest.mark.parametrize("settings", [ADAM, LAYERWISE], ids=["adam", "layerwise"])
def test_fused_optimizer_step_trains_the_pipeline_alike(
    tiny_bert_dir, settings, monkeypatch, fused_on_cpu
):
    """In a pipeline (row-sparse embeddings, spaCy's update), the fused step is taken at every
    step and leaves every weight, moment and update count as thinc's per-array loop does, up
    to float rounding, with the transformer's gradients zeroed."""
    from spacy_bert_crf.layers import fused_update, sparse_embeddings

    (loop, fused), examples = _fused_twins(tiny_bert_dir)
    optimizers = [_optimizer(settings) for _ in range(2)]
    calls = []

    def counting(shim, optimizer):
        calls.append(fused_update.fused_adam_update(shim, optimizer))
        return calls[-1]

    monkeypatch.setattr(sparse_embeddings, "fused_adam_update", counting)
    for step in range(4):
        for nlp, optimizer in zip((loop, fused), optimizers):
            _step(nlp, examples, optimizer, step)
        if step == 0:  # one step: the same arithmetic, up to float rounding
            _assert_same_weights(loop, fused, rtol=1e-5, atol=1e-6)
    assert calls == [True] * 4  # the fused twin only, every step
    # later steps: Adam divides near-zero moments, which magnifies the rounding (a few 1e-6
    # here, where a wrong step size or decay would be of the rate's order, 1e-2)
    _assert_same_weights(loop, fused, rtol=1e-4, atol=2e-5)
    (m1_loop, m2_loop, n_loop), (m1_fused, m2_fused, n_fused) = (
        _transformer_state(optimizer) for optimizer in optimizers)
    assert n_loop == n_fused and set(n_fused.values()) == {4}
    assert m1_loop.keys() == m1_fused.keys() and m1_loop
    for name in m1_loop:
        numpy.testing.assert_allclose(m1_fused[name], m1_loop[name], rtol=1e-3, atol=1e-6)
        numpy.testing.assert_allclose(m2_fused[name], m2_loop[name], rtol=1e-3, atol=1e-9)
    encoder = fused.get_pipe("transformer").model.transformer
    assert all(p.grad is None or not p.grad.any() for p in encoder.parameters())


def test_fused_optimizer_step_leaves_other_optimizers_to_thinc(tiny_bert_dir, fused_on_cpu):
    """RAdam, parameter averaging and SGD are not fused: fused_adam_update declines and changes
    nothing, and the pipeline trains through thinc's loop as before."""
    from spacy_bert_crf.layers.fused_update import fused_adam_update, is_fusable

    assert is_fusable(_optimizer(ADAM)) and is_fusable(_optimizer(LAYERWISE))
    (loop, fused), examples = _fused_twins(tiny_bert_dir)
    for declined in ({**ADAM, "use_averages": True}, {**ADAM, "@optimizers": "RAdam.v1"},
                     {"@optimizers": "SGD.v1", "learn_rate": 0.01}):
        optimizer = _optimizer(declined)
        assert not is_fusable(optimizer)
        fused.update(examples, sgd=False)
        shim = fused.get_pipe("transformer").model.layers[0].shims[0]
        weights = pipeline_weights(fused)
        assert fused_adam_update(shim, optimizer) is False
        assert not optimizer.nr_update and not optimizer.mom1
        after = pipeline_weights(fused)
        assert all(numpy.array_equal(weights[k], after[k]) for k in weights)
        for _, proc in fused.pipeline:
            proc.finish_update(optimizer)
        assert optimizer.nr_update  # thinc's loop ran


def test_fused_step_is_for_gpus(tiny_bert_dir):
    """On a CPU the fused step declines (thinc's one-pass numpy Adam is kept there) and the
    pipeline trains through thinc's loop."""
    from spacy_bert_crf.layers.fused_update import fused_adam_update

    (_, fused), examples = _fused_twins(tiny_bert_dir)
    fused.update(examples, sgd=False)
    optimizer = _optimizer(ADAM)
    assert fused_adam_update(fused.get_pipe("transformer").model.layers[0].shims[0],
                             optimizer) is False
    assert not optimizer.nr_update


def test_fused_then_loop_continue_alike(tiny_bert_dir, fused_on_cpu):
    """Switching from the fused step to thinc's loop mid-run (or back) continues the same
    run: the optimizer's state is thinc's either way."""
    (loop, switched), examples = _fused_twins(tiny_bert_dir)
    optimizers = [_optimizer(LAYERWISE) for _ in range(2)]
    for step in range(4):
        switched.get_pipe("transformer").model.attrs["fused_optimizer_update"] = step % 2 == 0
        for nlp, optimizer in zip((loop, switched), optimizers):
            _step(nlp, examples, optimizer, step)
    _assert_same_weights(loop, switched, rtol=1e-4, atol=2e-5)


# ---------------------------------------------------------------------------------------------
# Parameter averaging (use_averages) reaches the encoder
# ---------------------------------------------------------------------------------------------


def _averaged(optimizer, model):
    """The optimizer's averages of the model's weights (thinc layers and torch shims), by
    (node or shim, name), each with the weight's current value."""
    out = {}
    for node in model.walk():
        for name in node.param_names:
            if (node.id, name) in optimizer.averages:
                out[(node.id, name)] = (optimizer.averages[(node.id, name)],
                                        node.get_param(name))
        for shim in node.shims:
            for name, weight in shim._model.named_parameters():
                if (shim.id, name) in optimizer.averages:
                    out[(shim.id, name)] = (optimizer.averages[(shim.id, name)],
                                            weight.detach().numpy())
    return out


@pytest.mark.parametrize("sparse", [True, False], ids=["sparse-embeddings", "dense"])
def test_use_params_gives_the_encoder_its_averages(tiny_bert_dir, sparse):
    """With `use_averages = true`, `nlp.use_params(optimizer.averages)`, under which spaCy's
    training scores dev and saves model-best and model-last, gives every trained encoder
    weight (the embedding matrix too) its average, as it gives the CRF's; the trained weights
    come back after. thinc's PyTorchShim alone left the encoder's weights unaveraged."""
    (nlp, twin), examples = _twins(tiny_bert_dir, (sparse, sparse))
    optimizer = _optimizer({**ADAM, "use_averages": True})
    for step in range(4):
        _step(nlp, examples, optimizer, step)
    trained = pipeline_weights(nlp)
    encoder = nlp.get_pipe("transformer").model
    shim = encoder.layers[0].shims[0]
    before = _averaged(optimizer, encoder)
    names = [name for (key, name) in before if key == shim.id]
    assert "embeddings.word_embeddings.weight" in names
    assert sum(name.startswith("encoder.layer.") for name in names) >= 16
    # the averages are not the trained weights: the comparison below can fail
    assert not all(numpy.array_equal(avg.reshape(w.shape), w) for avg, w in before.values())
    with nlp.use_params(optimizer.averages):
        for model in (encoder, nlp.get_pipe("crf_ner").model):
            for key, (avg, weight) in _averaged(optimizer, model).items():
                numpy.testing.assert_array_equal(weight, avg.reshape(weight.shape),
                                                 err_msg=str(key))
        saved = nlp.to_bytes()
    after = pipeline_weights(nlp)
    assert all(numpy.array_equal(trained[k], after[k]) for k in trained)
    # what was saved under use_params is the averaged pipeline
    twin.from_bytes(saved)
    loaded = twin.get_pipe("transformer").model.layers[0].shims[0]._model
    for name, weight in loaded.named_parameters():
        if (shim.id, name) in optimizer.averages:
            numpy.testing.assert_array_equal(
                weight.detach().numpy(),
                optimizer.averages[(shim.id, name)].reshape(weight.shape), err_msg=name)


def test_use_params_sets_a_replaced_listeners_encoder_once(tiny_bert_dir, monkeypatch):
    """After nlp.replace_listeners crf_ner holds its own copy of the encoder, which both
    crf_ner's use_params and (reached by thinc's recursion) the encoder's own would give its
    averages: each torch weight is saved and set once, holds its average inside the context,
    and gets its trained value back after."""
    (nlp,), examples = _twins(tiny_bert_dir, (False,))
    nlp.replace_listeners("transformer", "crf_ner", ["model.tok2vec"])
    optimizer = _optimizer({**ADAM, "use_averages": True})
    for step in range(3):
        _step(nlp, examples, optimizer, step)
    model = nlp.get_pipe("crf_ner").model
    averaged = _averaged(optimizer, model)
    # every torch weight with an average: crf_ner's (its copy of the encoder, the CRF's
    # transitions) and the transformer's, whose shim the copy shares its id with
    weights = {id(weight) for _, pipe in nlp.pipeline for node in pipe.model.walk()
               for shim in node.shims for name, weight in shim._model.named_parameters()
               if (shim.id, name) in optimizer.averages}
    assert len(weights) >= 40
    trained = {key: weight.copy() for key, (_, weight) in averaged.items()}
    clones = []
    clone = torch.Tensor.clone
    monkeypatch.setattr(torch.Tensor, "clone", lambda t, *a, **k: clones.append(1) or clone(t))
    with nlp.use_params(optimizer.averages):
        for key, (avg, weight) in _averaged(optimizer, model).items():
            numpy.testing.assert_array_equal(weight, avg.reshape(weight.shape), err_msg=str(key))
    assert len(clones) == len(weights)
    monkeypatch.undo()
    for key, (_, weight) in _averaged(optimizer, model).items():
        numpy.testing.assert_array_equal(weight, trained[key], err_msg=str(key))

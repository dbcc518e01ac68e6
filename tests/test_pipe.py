"""The crf_ner component end to end: training, prediction, serialization, errors."""
import os

import numpy
import pytest
import spacy
from spacy.tokens import Doc, Span
from spacy.training import Example

from spacy_bert_crf.layers.crf import CRFInput, chain_arrays, viterbi_paths
from spacy_bert_crf.tag_schemes import tags_to_spans

from .util import (
    TRAIN_DATA,
    entities,
    initialized,
    is_valid,
    make_examples,
    make_light_nlp,
    make_trf_nlp,
    train,
)

GOLD = [[tuple(e) for e in ents] for _, ents in TRAIN_DATA]
TEXTS = [t for t, _ in TRAIN_DATA]


def predict_all(nlp, texts=TEXTS, **kwargs):
    docs = nlp.pipe(texts, **kwargs)
    return [(entities(d), d.spans["crf_ner"].attrs["scores"].tolist()) for d in docs]


def assert_same(a, b):
    assert [ents for ents, _ in a] == [ents for ents, _ in b]
    for (_, s1), (_, s2) in zip(a, b):
        numpy.testing.assert_allclose(s1, s2, atol=1e-4)


@pytest.fixture(scope="module")
def trained_trf(tiny_bert_dir):
    nlp = make_trf_nlp(tiny_bert_dir)
    train(nlp, make_examples(nlp), steps=60)
    return nlp


def test_trf_overfits(trained_trf):
    preds = predict_all(trained_trf)
    assert [ents for ents, _ in preds] == GOLD
    assert trained_trf.evaluate(make_examples(trained_trf))["ents_f"] == 1.0
    for ents, scores in preds:
        assert len(scores) == len(ents)
        assert all(0.5 < s <= 1.0 for s in scores)


def test_trf_disk_roundtrip(trained_trf, tmp_path):
    trained_trf.to_disk(tmp_path / "pipeline")
    loaded = spacy.load(tmp_path / "pipeline")
    assert loaded.get_pipe("crf_ner").labels == ("LOC", "ORG", "PER")
    assert_same(predict_all(loaded), predict_all(trained_trf))


def test_trf_bytes_roundtrip(trained_trf):
    data = trained_trf.to_bytes()
    fresh = spacy.blank("en").from_config(trained_trf.config)
    fresh.from_bytes(data)
    assert_same(predict_all(fresh), predict_all(trained_trf))


def test_trf_batch_sizes_agree(trained_trf):
    texts = TEXTS * 12
    one_by_one = predict_all(trained_trf, texts, batch_size=1)
    assert_same(one_by_one, predict_all(trained_trf, texts, batch_size=64))


def test_trf_multiprocess(trained_trf):
    texts = TEXTS * 4
    in_workers = predict_all(trained_trf, texts, n_process=2, batch_size=4)
    assert_same(in_workers, predict_all(trained_trf, texts))


def test_trf_long_document(trained_trf):
    unit = trained_trf.make_doc(TEXTS[0]).text.split() + ["Kenji", "met", "Olga", "."]
    words = (unit * 500)[:5000]
    doc = trained_trf(Doc(trained_trf.vocab, words=words))
    assert len(doc) == 5000
    # The CRF's own best path over the whole doc (not tags rebuilt from doc.ents, which are
    # valid by construction) obeys the scheme, and it is what the pipe wrote to the doc.
    pipe = trained_trf.get_pipe("crf_ner")
    emissions = pipe.model.predict([doc])
    path = viterbi_paths(pipe.model, emissions, [None])[0]
    tags = [pipe.tags[t] for t in path]
    assert len(tags) == len(doc)
    assert is_valid(tags, pipe.scheme)
    assert [tuple(s) for s in tags_to_spans(tags, pipe.scheme)] == [
        (ent.start, ent.end, ent.label_) for ent in doc.ents
    ]
    # Entities are found all the way to the end: nothing was truncated. The last whole unit
    # gets the trained entities that the unit gets when decoded alone (Maria Lopez, Lisbon;
    # the rest may differ, as its windows see other context than the unit alone).
    alone = trained_trf(Doc(trained_trf.vocab, words=unit))
    expected = [(e.start, e.end, e.label_) for e in alone.ents]
    assert expected[:2] == [(0, 2, "PER"), (4, 5, "LOC")]  # Maria Lopez, Lisbon: as trained
    offset = (len(words) // len(unit) - 1) * len(unit)
    last_unit = [
        (e.start - offset, e.end - offset, e.label_)
        for e in doc.ents if offset <= e.start < offset + len(unit)
    ]
    assert last_unit[:2] == expected[:2]


def test_empty_and_whitespace_docs(trained_trf):
    texts = ["", "   ", "\n\n", TEXTS[0], ""]
    docs = list(trained_trf.pipe(texts))
    assert [len(d.ents) for d in docs] == [0, 0, 0, 2, 0]
    assert len(trained_trf("").ents) == 0


def test_uninitialized_raises_e109():
    nlp = make_light_nlp()
    with pytest.raises(ValueError, match="E109"):
        nlp("Maria Lopez flew to Lisbon.")


@pytest.mark.parametrize("get_examples", [None, lambda: None, lambda: ["not an example"]])
def test_bad_get_examples(get_examples):
    nlp = make_light_nlp()
    with pytest.raises(TypeError):
        nlp.get_pipe("crf_ner").initialize(get_examples)


def test_no_labels_raises():
    nlp = make_light_nlp()
    examples = make_examples(nlp, [("Nothing to see here.", [])])
    with pytest.raises(ValueError, match="No entity labels"):
        nlp.initialize(lambda: examples)


@pytest.mark.parametrize(
    "bad,match",
    [
        ({"scheme": "IOB9"}, "Invalid scheme"),
        ({"dropout": 1.5}, "Invalid dropout"),
        ({"depth": -1}, "Invalid depth"),
        ({"depth": 1, "hidden_width": 7}, "Invalid hidden_width"),
    ],
)
def test_invalid_config_values(bad, match):
    with pytest.raises(ValueError, match=match):
        make_light_nlp(**bad)


def test_invalid_labels():
    pipe = make_light_nlp().get_pipe("crf_ner")
    with pytest.raises(ValueError, match="E187"):
        pipe.add_label(3)
    for bad in ("O", ""):
        with pytest.raises(ValueError, match="Invalid entity label"):
            pipe.add_label(bad)


def test_unknown_gold_label_names_token():
    nlp = make_light_nlp()
    examples = make_examples(nlp)
    nlp.initialize(lambda: examples)
    bad = make_examples(nlp, [("Paris is nice.", [(0, 5, "GPE")])])
    with pytest.raises(ValueError, match=r"'U-GPE' on token 0 \('Paris'\)"):
        nlp.update(bad)


def test_labels_keyword_and_label_data():
    nlp = make_light_nlp()
    examples = make_examples(nlp)
    nlp.get_pipe("crf_ner").initialize(lambda: examples, labels=["PER", "LOC", "ORG", "MISC"])
    pipe = nlp.get_pipe("crf_ner")
    assert pipe.label_data == ["PER", "LOC", "ORG", "MISC"]
    assert pipe.model.get_dim("nO") == 1 + 4 * 4
    with pytest.raises(ValueError, match="after it was initialized"):
        pipe.add_label("EVENT")


@pytest.mark.parametrize(
    "model",
    [
        {},
        {"@architectures": "spacy-bert-crf.SoftmaxTagger.v1"},
        {"depth": 1, "hidden_width": 32},
        {"scheme": "BIO"},
    ],
)
def test_light_variants_overfit_and_roundtrip(model):
    nlp = make_light_nlp(**model)
    examples = make_examples(nlp)
    train(nlp, examples, steps=80, lr=0.01)
    preds = predict_all(nlp)
    assert [ents for ents, _ in preds] == GOLD
    loaded = spacy.blank("en").from_config(nlp.config).from_bytes(nlp.to_bytes())
    assert_same(predict_all(loaded), preds)


def test_label_mismatch_on_load(tmp_path):
    nlp = make_light_nlp()
    train(nlp, make_examples(nlp), steps=1)
    nlp.to_disk(tmp_path)
    cfg_path = tmp_path / "crf_ner" / "cfg"
    cfg = cfg_path.read_text()
    cfg_path.write_text(cfg.replace('"PER"', '"PER","MISC"'))
    with pytest.raises(ValueError, match="does not match its cfg"):
        spacy.load(tmp_path)


def test_missing_annotation_is_marginalised_not_outside():
    nlp = make_light_nlp()
    examples = make_examples(nlp)
    nlp.initialize(lambda: examples)
    pipe = nlp.get_pipe("crf_ner")
    doc = nlp.make_doc("Maria Lopez flew to Lisbon.")
    missing = Example.from_dict(doc, {"entities": ["-"] * len(doc)})
    outside = Example.from_dict(doc, {"entities": ["O"] * len(doc)})
    emissions = pipe.model.predict([doc])
    loss_missing, d_missing = pipe.get_loss([missing], emissions)
    loss_outside, _ = pipe.get_loss([outside], emissions)
    assert abs(loss_missing) < 1e-3  # every path is compatible: log Z - log Z
    assert numpy.abs(d_missing[0]).max() < 1e-5
    assert loss_outside > 0.1


def test_partially_annotated_corpus_trains():
    nlp = make_light_nlp()
    full = make_examples(nlp)
    # The same sentences with one gold entity hidden as missing ("-") in the first three.
    partial = []
    for i, (text, ents) in enumerate(TRAIN_DATA):
        doc = nlp.make_doc(text)
        biluo = Example.from_dict(doc, {"entities": ents}).get_aligned_ner()
        if i < 3:  # hide the first entity: its tokens and the token after it become missing
            first = ents[0]
            span = doc.char_span(first[0], first[1])
            for j in range(span.start, min(span.end + 1, len(doc))):
                biluo[j] = "-"
        partial.append(Example.from_dict(doc, {"entities": biluo}))
    train(nlp, partial + full[3:], steps=80, lr=0.01)
    doc = nlp("Globex hired Tom Baker last year.")
    assert entities(doc) == GOLD[4]


# Labels spaCy allows, with "-" and other characters: a tag is split at its first "-" only.
ODD_LABELS = ["creative-work", "WORK_OF_ART", "Org.Gov", "人名", "B", "LOC-2"]
ODD_DATA = [
    ("Ana read Dune at Acme Labs today .", [(9, 13, "creative-work"), (17, 26, "Org.Gov")]),
    ("The Mona Lisa hangs near the river .", [(4, 13, "WORK_OF_ART")]),
    ("张三 去 北京 了 .", [(0, 2, "人名"), (5, 7, "B")]),
    ("Then Zone Two was closed .", [(5, 13, "LOC-2")]),
    ("Nothing here .", []),
]


@pytest.mark.parametrize("scheme", ["BILUO", "BIO"])
def test_labels_with_hyphens_and_odd_characters(scheme, tmp_path):
    nlp = make_light_nlp(scheme=scheme)
    examples = make_examples(nlp, ODD_DATA)
    train(nlp, examples, steps=80, lr=0.01)
    assert set(nlp.get_pipe("crf_ner").labels) == set(ODD_LABELS)
    gold = [[tuple(e) for e in ents] for _, ents in ODD_DATA]
    texts = [t for t, _ in ODD_DATA]
    assert [entities(d) for d in nlp.pipe(texts)] == gold
    nlp.to_disk(tmp_path / "pipeline")
    loaded = spacy.load(tmp_path / "pipeline")
    assert [entities(d) for d in loaded.pipe(texts)] == gold


def test_initialize_twice():
    nlp = make_light_nlp()
    examples = make_examples(nlp)
    train(nlp, examples, steps=2)
    pipe = nlp.get_pipe("crf_ner")
    assert pipe.labels == ("LOC", "ORG", "PER")
    nlp.initialize(lambda: examples)  # as when resuming or re-initialising a pipeline
    assert pipe.labels == ("LOC", "ORG", "PER")
    pipe.initialize(lambda: examples, labels=["PER", "LOC", "ORG", "MISC"])
    assert pipe.labels == ("PER", "LOC", "ORG", "MISC")
    assert pipe.model.get_dim("nO") == 1 + 4 * 4
    train(nlp, examples, steps=80, lr=0.01)
    assert [entities(d) for d in nlp.pipe(TEXTS)] == GOLD


@pytest.fixture(scope="module", params=["BILUO", "BIO"])
def trained_light(request):
    nlp = make_light_nlp(scheme=request.param)
    train(nlp, make_examples(nlp), steps=80, lr=0.01)
    return nlp


def with_ruler(nlp, patterns, overwrite_ents=False):
    """A copy of the trained pipeline with an entity_ruler before crf_ner."""
    ruled = spacy.blank("en")
    ruled.add_pipe("entity_ruler").add_patterns(patterns)
    ruled.add_pipe("crf_ner", source=nlp)
    ruled.get_pipe("crf_ner").overwrite_ents = overwrite_ents
    return ruled


def test_overwrite_ents_config():
    nlp = spacy.blank("en")
    assert nlp.add_pipe("crf_ner", config={"overwrite_ents": True}).overwrite_ents is True
    assert nlp.config["components"]["crf_ner"]["overwrite_ents"] is True
    assert spacy.blank("en").add_pipe("crf_ner").overwrite_ents is False


def test_preset_entities_are_kept(trained_light):
    text = "Kenji met Olga in Oslo with an iPhone."
    assert entities(trained_light(text))[:3] == [(0, 5, "PER"), (10, 14, "PER"), (18, 22, "LOC")]
    patterns = [{"label": "PRODUCT", "pattern": "iPhone"}, {"label": "ORG", "pattern": "Oslo"}]
    doc = with_ruler(trained_light, patterns)(text)
    got = entities(doc)
    assert (31, 37, "PRODUCT") in got  # a label crf_ner does not know
    assert (18, 22, "ORG") in got  # a known label, different from what crf_ner would say
    assert (0, 5, "PER") in got and (10, 14, "PER") in got  # the rest is still predicted
    # The span group holds crf_ner's own entities with their confidences, not the presets.
    group = doc.spans["crf_ner"]
    assert [(s.start_char, s.end_char, s.label_) for s in group] == [(0, 5, "PER"), (10, 14, "PER")]
    assert len(group.attrs["scores"]) == 2
    # The option restores overwriting.
    doc = with_ruler(trained_light, patterns, overwrite_ents=True)(text)
    assert (18, 22, "LOC") in entities(doc)
    assert not any(label == "PRODUCT" for *_, label in entities(doc))


def test_preset_entities_condition_the_decoding(trained_light):
    """A preset entity covering part of what crf_ner would predict: the rest of the doc is
    decoded around it (no overlap, no continuation of the preset), not predicted and merged."""
    text = "Maria Lopez flew to Lisbon on Monday."
    assert entities(trained_light(text))[0] == (0, 11, "PER")
    doc = with_ruler(trained_light, [{"label": "PER", "pattern": "Maria"}])(text)
    ents = list(doc.ents)
    assert (ents[0].start, ents[0].end, ents[0].label_) == (0, 1, "PER")
    assert all(e.start >= 1 for e in ents[1:])
    pipe = trained_light.get_pipe("crf_ner")
    tagged = trained_light.make_doc(text)
    tagged.ents = [Span(tagged, 0, 1, label="PER")]
    allowed = pipe._allowed_tags(tagged)
    tags = pipe.tags
    assert [tags[k] for k in numpy.flatnonzero(allowed[0])] == [
        "U-PER" if pipe.scheme == "BILUO" else "B-PER"
    ]
    if pipe.scheme == "BIO":  # (under BILUO the transitions already forbid I- after U-)
        assert "I-PER" not in [tags[k] for k in numpy.flatnonzero(allowed[1])]
    assert allowed[2:].all()  # plain "O" tokens (written by doc.ents) stay free


def test_blocked_tokens_stay_outside(trained_light):
    pipe = trained_light.get_pipe("crf_ner")
    doc = trained_light.make_doc("Maria Lopez flew to Lisbon on Monday.")
    doc.set_ents([], blocked=[doc[0:2]])
    doc = pipe(doc)
    assert entities(doc) == [(20, 26, "LOC")]


def test_sourced_without_its_transformer_fails_clearly(trained_trf):
    nlp = spacy.blank("en")
    nlp.add_pipe("crf_ner", source=trained_trf)
    with pytest.raises(ValueError, match="listens to a 'transformer' component"):
        nlp("Maria Lopez flew to Lisbon on Monday.")


def test_damaged_model_file_is_named(tmp_path):
    nlp = make_light_nlp()
    train(nlp, make_examples(nlp), steps=1)
    nlp.to_disk(tmp_path)
    model_file = tmp_path / "crf_ner" / "model"
    data = model_file.read_bytes()
    model_file.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"'crf_ner'.*crf_ner[/\\]model is damaged or incomplete"):
        spacy.load(tmp_path)


def test_tokens_without_wordpieces_are_outside(trained_trf):
    """Invisible characters get no wordpiece, so no vector: they are decoded as O, with a
    warning, instead of being labelled from a zero vector."""
    words = ["Maria", "Lopez", "\u200b", "flew", "to", "\ufeff", "Lisbon", "\u202e", "."]
    doc = Doc(trained_trf.vocab, words=words)
    with pytest.warns(UserWarning, match=r"3 token\(s\) in 1 doc\(s\).*decoded as 'O'"):
        doc = trained_trf(doc)
    for i in (2, 5, 7):
        assert doc[i].ent_iob_ == "O", (doc[i].text, doc[i].ent_type_)
    assert [e.text for e in doc.ents] == ["Maria Lopez", "Lisbon"]


def test_crf_layer_is_built_from_the_pipes_constraints():
    """The torch CRF knows no labels: the pipe derives the constraints from its tags and hands
    them to the layer; a layer initialized without them refuses to build."""
    nlp = make_light_nlp(scheme="BIO")
    model = nlp.get_pipe("crf_ner").model
    model.set_dim("nO", 5, force=True)
    with pytest.raises(ValueError, match="no tag constraints"):
        model.initialize(X=[nlp.make_doc("Maria flew.")])
    nlp = make_light_nlp(scheme="BIO")
    nlp.initialize(lambda: make_examples(nlp))
    pipe = nlp.get_pipe("crf_ner")
    module = pipe.model.get_ref("crf").layers[0].shims[0]._model
    assert module.continuation.tolist() == [
        -1 if t == "O" else pipe.tags.index("I-" + t[2:]) for t in pipe.tags
    ]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_fork_hook_only_once_a_pipeline_is_built():
    """Importing the plugin leaves forked children's torch threads alone; building a crf_ner
    component registers the hook that nlp.pipe(n_process=N) workers need (see threads.py)."""
    script = """
import os, sys, torch
torch.set_num_threads(2)
import spacy_bert_crf

def child_threads():
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.write(write, str(torch.get_num_threads()).encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    return int(os.read(read, 16))

before = child_threads()
import spacy
spacy.blank("en").add_pipe("crf_ner")
print(before, child_threads())
"""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["2", "1"]


def test_crf_decoding_does_not_switch_modes_per_call(monkeypatch):
    """Decoding calls the CRF module directly (no eval()/train() walk per call, the largest
    per-call cost at batch size 1), with thinc's predict's results; training after it still
    runs the module in train mode."""
    import torch

    nlp = make_light_nlp()
    examples = make_examples(nlp)
    train(nlp, examples, steps=30, lr=0.01)
    pipe = nlp.get_pipe("crf_ner")
    docs = [nlp.make_doc(t) for t in TEXTS]
    emissions = pipe.model.predict(docs)
    allowed = [None] * len(docs)
    crf = pipe.model.get_ref("crf")
    module = crf.layers[0].shims[0]._model
    expected = crf.predict(CRFInput(emissions, allowed, "viterbi"))  # thinc's own predict
    switches = []
    original = torch.nn.Module.train

    def counted_train(self, mode=True):
        switches.append(mode)
        return original(self, mode)

    monkeypatch.setattr(torch.nn.Module, "train", counted_train)
    first = viterbi_paths(pipe.model, emissions, allowed)
    switches.clear()
    for _ in range(3):
        again = viterbi_paths(pipe.model, emissions, allowed)
        list(nlp.pipe(TEXTS))
    assert switches == []
    assert not module.training
    for a, b, c in zip(expected, first, again):
        numpy.testing.assert_array_equal(a, b)
        numpy.testing.assert_array_equal(a, c)
    monkeypatch.undo()
    seen = []
    hook = module.register_forward_pre_hook(lambda m, args: seen.append(m.training))
    nlp.update(examples, sgd=None)
    hook.remove()
    assert seen and all(seen)


@pytest.mark.parametrize("architecture", ["spacy-bert-crf.CRFTagger.v1",
                                          "spacy-bert-crf.SoftmaxTagger.v1"])
def test_decoding_paths_are_the_crf_viterbi(architecture):
    """The pipe decodes on the numpy arrays of chain_arrays: the same paths as the CRF layer's
    own Viterbi, with restricted tags and at any temperature (the CRF head and the softmax
    head, whose potentials are log-softmaxed)."""
    nlp = make_light_nlp(**{"@architectures": architecture})
    nlp, examples = initialized(nlp)
    train(nlp, examples, steps=20, lr=0.01)
    pipe = nlp.get_pipe("crf_ner")
    docs = [nlp.make_doc(t) for t in TEXTS]
    emissions = pipe.model.predict(docs)
    rng = numpy.random.default_rng(0)
    out = pipe.tags.index("O")
    allowed = []
    for i, e in enumerate(emissions):
        a = rng.random(e.shape) < 0.5
        a[:, out] = True  # a valid path always exists
        allowed.append(None if i % 2 else a)
    expected = viterbi_paths(pipe.model, emissions, allowed)
    for temperature in (0.5, 1.0, 3.0):
        arrays = chain_arrays(pipe.model, emissions, allowed, temperature)
        paths = arrays.viterbi()
        for row, (path, n) in enumerate(zip(expected, arrays.lengths)):
            numpy.testing.assert_array_equal(paths[row, :n], path)
    assert any(len(set(p.tolist())) > 1 for p in expected)  # not all O


def test_v2_taggers_concatenate_token_features(tiny_bert_dir):
    """CRFTagger.v2 / SoftmaxTagger.v2: features=None is v1; with features, the emission layer
    reads the tok2vec's vectors and the features' side by side (width tok2vec + features)."""
    features = {"@architectures": "spacy.MultiHashEmbed.v2", "width": 8, "attrs": ["SHAPE"],
                "rows": [50], "include_static_vectors": False}
    widths = {}
    for arch in ("CRFTagger", "SoftmaxTagger"):
        for version, extra in (("v1", {}), ("v2", {}), ("v2", {"features": features})):
            nlp = make_trf_nlp(
                tiny_bert_dir, {"@architectures": f"spacy-bert-crf.{arch}.{version}", **extra,
                                "tok2vec": {"@architectures":
                                            "spacy-transformers.TransformerListener.v1",
                                            "pooling": {"@layers": "reduce_mean.v1"}}})
            initialized(nlp)
            key = (arch, version, bool(extra))
            widths[key] = nlp.get_pipe("crf_ner").model.get_dim("nI")
            assert nlp("Maria flew to Paris")  # runs
    for arch in ("CRFTagger", "SoftmaxTagger"):
        assert widths[(arch, "v1", False)] == widths[(arch, "v2", False)] == 32
        assert widths[(arch, "v2", True)] == 32 + 8

"""Multi-task: the CoNLL converter keeps POS and chunks; crf_ner and spaCy's tagger train on one
shared transformer (configs/en_conll03_multitask.cfg)."""
import warnings

import pytest
import spacy
from spacy.cli.train import train as spacy_train
from spacy.tokens import DocBin
from spacy.training import Example
from spacy.util import load_config, load_model_from_config

from spacy_bert_crf.corpora import ConversionError, read_conll

from .util import CONFIGS_DIR, config_differences, make_examples, make_trf_nlp
from .util import short_training_overrides


def test_conll_keeps_pos_and_chunks(conll_sample):
    docs, stats = read_conll(conll_sample)
    assert stats.n_entities == 7
    assert [t.tag_ for t in docs[0]] == ["NNP", "NNP", "VBD", "TO", "NNP", "."]
    assert [(s.text, s.label_) for s in docs[0].spans["chunks"]] == [
        ("Maria Lopez", "NP"), ("flew", "VP"), ("to", "PP"), ("Lisbon", "NP")
    ]
    # IOB1: B-NP separates two adjacent NPs
    assert [(s.text, s.label_) for s in docs[2].spans["chunks"]] == [
        ("Globex", "NP"), ("hired", "VP"), ("Tom", "NP"), ("Baker", "NP")
    ]


def test_conll_documents_keep_chunks_per_sentence(conll_sample, tmp_path):
    (doc, _), _ = read_conll(conll_sample, docs=True)
    assert len(doc) == 12 and len(list(doc.sents)) == 2
    assert [s.text for s in doc.spans["chunks"]][-2:] == ["in", "Oslo"]
    assert all(s.start >= 6 or s.end <= 6 for s in doc.spans["chunks"])  # none across sentences
    # the annotation survives a DocBin (what convert writes)
    DocBin(docs=[doc]).to_disk(tmp_path / "d.spacy")
    (back,) = DocBin().from_disk(tmp_path / "d.spacy").get_docs(spacy.blank("en").vocab)
    assert [t.tag_ for t in back] == [t.tag_ for t in doc]
    assert [(s.start, s.end, s.label_) for s in back.spans["chunks"]] == [
        (s.start, s.end, s.label_) for s in doc.spans["chunks"]
    ]


def test_two_columns_have_no_pos_or_chunks(tmp_path):
    path = tmp_path / "two.txt"
    path.write_text("Maria B-PER\nflew O\n", encoding="utf8")
    (doc,), _ = read_conll(path)
    assert not doc.has_annotation("TAG")
    assert "chunks" not in doc.spans


def test_malformed_chunk_names_the_line(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_text("Maria NNP I-NP B-PER\nflew VBD VP O\n", encoding="utf8")
    with pytest.raises(ConversionError, match=r"bad.txt:2: chunk column .*'VP'"):
        read_conll(path)


def _write_corpus(sample, tmp_path):
    docs, _ = read_conll(sample)
    DocBin(docs=docs).to_disk(tmp_path / "train.spacy")
    return tmp_path / "train.spacy"


def test_multitask_config_loads(tiny_bert_dir):
    config = load_config(
        CONFIGS_DIR / "en_conll03_multitask.cfg",
        overrides={"paths.transformer": str(tiny_bert_dir)}, interpolate=False,
    )
    nlp = load_model_from_config(config, auto_fill=True, validate=True)
    assert nlp.pipe_names == ["transformer", "crf_ner", "tagger"]
    for name in ("crf_ner", "tagger"):
        tok2vec = nlp.get_pipe(name).model.get_ref("tok2vec")
        assert tok2vec.name.startswith("transformer-listener"), name
    assert len(nlp.get_pipe("transformer").listeners) == 2
    assert config["training"]["score_weights"]["ents_f"] == 1.0
    assert config["training"]["score_weights"]["tag_acc"] == 0.0


# The recipe en_conll03_multitask.cfg and the ablation configs are variants of: en_conll03.cfg
# before it took case features (CRFTagger.v2 with features), kept as this ablation config.
SUMMED_LOSS_CONFIG = CONFIGS_DIR / "ablations" / "en_conll03_summed_loss.cfg"


def test_multitask_config_differs_only_by_the_tagger():
    differing = config_differences(CONFIGS_DIR / "en_conll03_multitask.cfg", SUMMED_LOSS_CONFIG)
    assert "nlp.pipeline" in differing
    tagger = ("components.tagger", "initialize.components.tagger")
    assert {k for k in differing if not k.startswith(tagger)} == {
        "nlp.pipeline", "training.score_weights.tag_acc"
    }
    config = load_config(CONFIGS_DIR / "en_conll03_multitask.cfg", interpolate=False)
    assert config["components"]["crf_ner"]["normalize_loss"] is False


def test_loss_ablations_differ_only_in_normalize_loss():
    ablations = CONFIGS_DIR / "ablations"
    mean = config_differences(ablations / "en_conll03_multitask_mean.cfg",
                              CONFIGS_DIR / "en_conll03_multitask.cfg")
    assert mean == {"components.crf_ner.normalize_loss"}
    # summed_loss sums; the recipe the ablations were measured against took the mean
    assert config_differences(ablations / "en_conll03_mean_loss.cfg", SUMMED_LOSS_CONFIG) == {
        "components.crf_ner.normalize_loss"
    }
    for name in ("en_conll03.cfg", "ablations/en_conll03_summed_loss.cfg"):  # the shipped sums
        config = load_config(CONFIGS_DIR / name, interpolate=False)
        assert config["components"]["crf_ner"]["normalize_loss"] is False


TAGGER_ON_TRANSFORMER = {
    "model": {
        "@architectures": "spacy.Tagger.v2",
        "tok2vec": {
            "@architectures": "spacy-transformers.TransformerListener.v1",
            "grad_factor": 1.0,
            "pooling": {"@layers": "reduce_mean.v1"},
        },
    }
}


def _shared_nlp(tiny_bert_dir, normalize_loss, second="tagger"):
    nlp = make_trf_nlp(tiny_bert_dir)
    nlp.get_pipe("crf_ner").normalize_loss = normalize_loss
    if second == "tagger":
        nlp.add_pipe("tagger", config=TAGGER_ON_TRANSFORMER)
    else:  # a second crf_ner on the same transformer, with its default mean loss
        nlp.add_pipe("crf_ner", name="crf_ner2")
    examples = []
    for eg in make_examples(nlp):
        doc = nlp.make_doc(eg.reference.text)
        examples.append(Example.from_dict(doc, {
            "entities": [(e.start_char, e.end_char, e.label_) for e in eg.reference.ents],
            "tags": ["NN" if t.is_alpha else "." for t in doc],
        }))
    return nlp, examples


def test_initialize_warns_when_sharing_the_transformer_with_a_summed_loss(tiny_bert_dir):
    nlp, examples = _shared_nlp(tiny_bert_dir, normalize_loss=True)
    with pytest.warns(UserWarning, match=r"shares 'transformer' with 'tagger'.*"
                                         r"\[components.crf_ner\] normalize_loss = false"):
        nlp.initialize(lambda: examples)


@pytest.mark.parametrize("normalize_loss,second,frozen", [
    (False, "tagger", []), (True, "crf_ner", []), (True, "tagger", ["tagger"])
])
def test_no_warning_when_the_loss_scales_agree(tiny_bert_dir, normalize_loss, second, frozen):
    nlp, examples = _shared_nlp(tiny_bert_dir, normalize_loss, second)
    nlp.config["training"]["frozen_components"] = frozen
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*normalize_loss.*")
        nlp.initialize(lambda: examples)
    assert len(nlp.get_pipe("transformer").listeners) == 2


def test_multitask_trains_both_heads(conll_sample, tiny_bert_dir, tmp_path):
    train_path = _write_corpus(conll_sample, tmp_path)
    overrides = {
        **short_training_overrides(tiny_bert_dir, train_path, max_steps=30, eval_frequency=15),
        "training.optimizer.learn_rate.initial_rate": 0.003,
        "components.transformer.model.get_spans.window": 24,
        "components.transformer.model.get_spans.stride": 16,
    }
    spacy_train(CONFIGS_DIR / "en_conll03_multitask.cfg", tmp_path / "out", overrides=overrides)
    nlp = spacy.load(tmp_path / "out" / "model-last")
    assert set(nlp.get_pipe("tagger").labels) == {"NNP", "VBD", "TO", "IN", "."}
    assert nlp.get_pipe("crf_ner").labels == ("LOC", "ORG", "PER")
    gold, _ = read_conll(conll_sample)
    predicted = list(nlp.pipe(spacy.tokens.Doc(nlp.vocab, words=[t.text for t in d]) for d in gold))
    tags = [(p.tag_, g.tag_) for pd, gd in zip(predicted, gold) for p, g in zip(pd, gd)]
    assert all(p for p, _ in tags)  # the tagger tagged every token
    # 30 steps on 3 sentences: the tagger fits its training tags better than its most common tag
    accuracy = sum(p == g for p, g in tags) / len(tags)
    assert accuracy > sum(g == "NNP" for _, g in tags) / len(tags)
    assert all("crf_ner" in d.spans for d in predicted)  # crf_ner ran, with its confidences
    meta = nlp.meta["performance"]
    assert "tag_acc" in meta and "ents_f" in meta

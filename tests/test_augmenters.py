"""Augmenters: entity swap (English words, Chinese characters), token masking, case variation."""
import random

import pytest
import spacy
from hypothesis import given
from hypothesis import strategies as st
from spacy.cli.train import train as spacy_train
from spacy.tokens import Doc, DocBin, Span
from spacy.training import Example
from spacy.util import load_config, registry

from spacy_bert_crf.augmenters import (
    Mention,
    create_case_variation_augmenter,
    create_entity_swap_augmenter,
    create_token_mask_augmenter,
    entity_swap_augmenter,
    swap_mentions,
    transformer_mask_token,
)

from .util import (
    CONFIGS_DIR,
    MEAN_LOSS_CONFIG,
    config_differences,
    flat_config,
    initialized,
    make_trf_nlp,
    short_training_overrides,
    write_corpus,
)

EN_WORDS = ["alpha", "beta", "gamma", "x", "Yy", "Zed", "12", "New", "York"]
ZH_CHARS = list("北京上海市人民银行我在去了的张三李四")


@pytest.fixture(scope="module")
def en():
    return spacy.blank("en")


@pytest.fixture(scope="module")
def zh():
    return spacy.blank(
        "zh",
        config={"nlp": {"tokenizer": {"@tokenizers": "spacy-bert-crf.ChineseCharTokenizer.v1"}}},
    )


def make_doc(nlp, words, spaces, ents, tags=None):
    doc = Doc(nlp.vocab, words=words, spaces=spaces, tags=tags)
    doc.set_ents([Span(doc, s, e, label=label) for s, e, label in ents], default="outside")
    return doc


def example_of(nlp, doc):
    return Example(nlp.make_doc(doc.text), doc)


def write_pool(path, nlp, docs):
    DocBin(docs=docs, store_user_data=True).to_disk(path)
    return path


@pytest.mark.parametrize(
    "name", ["spacy-bert-crf.entity_swap.v1", "spacy-bert-crf.token_mask.v1",
             "spacy-bert-crf.case_variation.v1"],
)
def test_registered(name):
    factory = registry.augmenters.get(name)
    assert factory.__module__ == "spacy_bert_crf.augmenters"


def test_entity_swap_english(en, tmp_path):
    pool_doc = make_doc(
        en, ["Anne", "Marie", "Curie", "visited", "Rome"], [True, True, True, True, False],
        [(0, 3, "PER"), (4, 5, "LOC")], tags=["NNP", "NNP", "NNP", "VBD", "NNP"],
    )
    path = write_pool(tmp_path / "train.spacy", en, [pool_doc])
    augment = create_entity_swap_augmenter(level=1.0, swap_prob=1.0, path=path)
    doc = make_doc(
        en, ["Yesterday", "Bob", "met", "Lima", "officials", "."],
        [True, True, True, True, False, False], [(1, 2, "PER"), (3, 4, "LOC")],
        tags=["NN", "NNP", "VBD", "NNP", "NNS", "."],
    )
    doc.spans["chunks"] = [Span(doc, 1, 2, "NP"), Span(doc, 3, 5, "NP"), Span(doc, 2, 3, "VP")]
    (out,) = augment(en, example_of(en, doc))
    ref = out.reference
    assert ref.text == "Yesterday Anne Marie Curie met Rome officials."
    assert [(e.text, e.label_) for e in ref.ents] == [("Anne Marie Curie", "PER"), ("Rome", "LOC")]
    assert [t.tag_ for t in ref] == ["NN", "NNP", "NNP", "NNP", "VBD", "NNP", "NNS", "."]
    assert [(s.text, s.label_) for s in ref.spans["chunks"]] == [
        ("Anne Marie Curie", "NP"), ("Rome officials", "NP"), ("met", "VP")
    ]
    assert out.predicted.text == ref.text
    assert [e.text for e in out.predicted.ents] == []  # the prediction side carries no gold
    assert len(out.get_aligned_spans_y2x(ref.ents)) == 2


def test_entity_swap_chinese_characters(zh):
    pool = {"LOC": [Mention(tuple("上海市"), (False, False), None)]}
    doc = make_doc(zh, list("我在北京"), [False] * 4, [(2, 4, "LOC")])
    eg = example_of(zh, doc)
    (out,) = entity_swap_augmenter(
        zh, eg, level=1.0, swap_prob=1.0, pool=pool, seen=None, rng=random.Random(0)
    )
    assert out.reference.text == "我在上海市"
    assert [t.text for t in out.predicted] == list("我在上海市")
    assert [(e.start, e.end, e.label_) for e in out.reference.ents] == [(2, 5, "LOC")]
    assert out.get_aligned_ner() == ["O", "O", "B-LOC", "I-LOC", "L-LOC"]


def test_docs_without_entities_unchanged(en, zh):
    augment = create_entity_swap_augmenter(level=1.0, swap_prob=1.0)
    for nlp, words in ((en, ["nothing", "here"]), (zh, list("我们"))):
        eg = example_of(nlp, make_doc(nlp, words, [True, False], []))
        assert list(augment(nlp, eg)) == [eg]
    empty = example_of(en, Doc(en.vocab, words=[]))
    assert list(augment(en, empty)) == [empty]


def test_level_zero_and_online_pool(en):
    docs = [
        make_doc(en, ["Bob", "ran"], [True, False], [(0, 1, "PER")]),
        make_doc(en, ["Alice", "Smith", "ran"], [True, True, False], [(0, 2, "PER")]),
    ]
    never = create_entity_swap_augmenter(level=0.0, swap_prob=1.0)
    for doc in docs:
        eg = example_of(en, doc)
        assert list(never(en, eg)) == [eg]
    online = create_entity_swap_augmenter(level=1.0, swap_prob=1.0)  # pool: mentions seen so far
    first = example_of(en, docs[0])
    assert list(online(en, first))[0].reference.text == "Bob ran"  # only itself was seen
    (second,) = online(en, example_of(en, docs[1]))
    assert second.reference.text == "Bob ran"
    assert [(e.text, e.label_) for e in second.reference.ents] == [("Bob", "PER")]


def test_misaligned_swap_is_dropped(en):
    """'U.S' before '.' becomes the one token 'U.S.': the entity would end inside a token."""
    pool = {"LOC": [Mention(("U.S",), (), None)]}
    doc = make_doc(en, ["He", "left", "Peru", "."], [True, True, False, False], [(2, 3, "LOC")])
    eg = example_of(en, doc)
    assert list(entity_swap_augmenter(
        en, eg, level=1.0, swap_prob=1.0, pool=pool, seen=None, rng=random.Random(0)
    )) == [eg]


@pytest.mark.filterwarnings("ignore:\\[W090\\]")
def test_swap_path_errors(en, tmp_path):
    with pytest.raises(ValueError, match="no .spacy file"):
        create_entity_swap_augmenter(path=tmp_path)
    write_pool(tmp_path / "x.spacy", en, [make_doc(en, ["a"], [False], [])])
    with pytest.raises(ValueError, match="no entities"):
        create_entity_swap_augmenter(path=tmp_path)
    with pytest.raises(ValueError, match="level"):
        create_entity_swap_augmenter(level=1.5)


# ------------------------------------------------------------------ property: swaps stay aligned
@st.composite
def docs_with_entities(draw, chars: bool):
    alphabet = ZH_CHARS if chars else EN_WORDS
    n = draw(st.integers(1, 12))
    words = draw(st.lists(st.sampled_from(alphabet), min_size=n, max_size=n))
    spaces = [False] * n if chars else [True] * (n - 1) + [False]
    cuts = sorted(draw(st.sets(st.integers(0, n), max_size=8)))
    ents, chunks = [], []
    for start, end in zip(cuts, cuts[1:]):
        if draw(st.booleans()):
            ents.append((start, end, draw(st.sampled_from(["PER", "LOC"]))))
    for _ in range(draw(st.integers(0, 3))):
        s = draw(st.integers(0, n - 1))
        chunks.append((s, draw(st.integers(s + 1, n))))
    return words, spaces, ents, chunks


mentions = st.lists(st.sampled_from(EN_WORDS), min_size=1, max_size=3)
zh_mentions = st.lists(st.sampled_from(ZH_CHARS), min_size=1, max_size=4)


@pytest.mark.parametrize("chars", [False, True])
def test_swap_property(chars, en, zh):
    nlp = zh if chars else en

    @given(
        docs_with_entities(chars),
        st.dictionaries(st.sampled_from(["PER", "LOC", "ORG"]),
                        st.lists(zh_mentions if chars else mentions, min_size=1, max_size=3)),
        st.integers(0, 2**16),
    )
    def check(data, raw_pool, seed):
        words, spaces, ents, chunks = data
        doc = make_doc(nlp, words, spaces, ents)
        doc.spans["chunks"] = [Span(doc, s, e, "NP") for s, e in chunks]
        pool = {
            label: [Mention(tuple(m), tuple([not chars] * (len(m) - 1)), None) for m in ms]
            for label, ms in raw_pool.items()
        }
        rng = random.Random(seed)
        new = swap_mentions(doc, pool, 0.5, rng)
        if not any(label in pool for _, _, label in ents):
            assert new is None
            return
        assert new is not None
        # same labels in the same order, no overlap, every entity a pool mention or the original
        assert [e.label_ for e in new.ents] == [label for _, _, label in ents]
        assert all(a.end <= b.start for a, b in zip(new.ents, new.ents[1:]))
        old_texts = [doc[s:e].text for s, e, _ in ents]
        for ent, old in zip(new.ents, old_texts):
            joiner = "" if chars else " "
            options = {joiner.join(m) for m in raw_pool.get(ent.label_, [])}
            assert ent.text == old or ent.text in options
        # whitespace: none between characters, none after the last token, one between words
        assert [bool(t.whitespace_) for t in new] == [not chars] * (len(new) - 1) + [False]
        # the tokens outside entities are the same, in the same order
        outside = [t.text for t in doc if not t.ent_type_]
        assert [t.text for t in new if not t.ent_type_] == outside
        # chunks keep their text unless they touch an entity
        for old_span, new_span in zip(doc.spans["chunks"], new.spans["chunks"]):
            if not any(s < old_span.end and old_span.start < e for s, e, _ in ents):
                assert new_span.text == old_span.text
        # the augmenter's example: the entities align with the predicted tokens
        eg = Example(nlp.make_doc(doc.text), doc)
        (out,) = entity_swap_augmenter(
            nlp, eg, level=1.0, swap_prob=0.5, pool=pool, seen=None, rng=random.Random(seed)
        )
        aligned = out.get_aligned_spans_y2x(out.reference.ents, allow_overlap=True)
        assert len(aligned) == len(out.reference.ents)
        assert [e.label_ for e in out.reference.ents] == [label for _, _, label in ents]

    check()


# ------------------------------------------------------------------ masking and case
def test_token_mask(en):
    augment = create_token_mask_augmenter(level=1.0, mask_prob=1.0, mask="[MASK]")
    doc = make_doc(en, ["Bob", "met", "Lima", "people"], [True] * 3 + [False], [(0, 1, "PER")])
    doc.spans["chunks"] = [Span(doc, 2, 4, "NP")]
    (out,) = augment(en, example_of(en, doc))
    assert [t.text for t in out.reference] == ["[MASK]"] * 4
    assert [t.text for t in out.predicted] == ["[MASK]"] * 4
    assert out.get_aligned_ner() == ["U-PER", "O", "O", "O"]
    assert [(s.start, s.end) for s in out.reference.spans["chunks"]] == [(2, 4)]
    none = create_token_mask_augmenter(level=1.0, mask_prob=0.0, mask="[MASK]")
    eg = example_of(en, doc)
    assert list(none(en, eg)) == [eg]
    with pytest.raises(ValueError, match="mask"):
        create_token_mask_augmenter(mask="a b")


def test_token_mask_needs_a_mask_token(en):
    augment = create_token_mask_augmenter(level=1.0, mask_prob=1.0)
    eg = example_of(en, make_doc(en, ["Bob"], [False], [(0, 1, "PER")]))
    with pytest.raises(ValueError, match="no initialized transformer with a mask token"):
        list(augment(en, eg))


def test_case_variation(en):
    random.seed(1)
    augment = create_case_variation_augmenter(level=1.0, token_prob=1.0)
    doc = make_doc(en, ["Bob", "met", "Lima", "people"], [True] * 3 + [False], [(2, 3, "LOC")])
    outs = [out for _ in range(5) for out in augment(en, example_of(en, doc))]
    assert any(out.reference.text != doc.text for out in outs)
    for out in outs:
        assert out.reference.text.lower() == doc.text.lower()
        assert out.get_aligned_ner() == ["O", "O", "U-LOC", "O"]


# ------------------------------------------------------------------ in a real pipeline
def test_token_mask_uses_the_transformers_mask_token(tiny_bert_dir):
    nlp, examples = initialized(make_trf_nlp(tiny_bert_dir))
    assert transformer_mask_token(nlp) == "[MASK]"
    augment = create_token_mask_augmenter(level=1.0, mask_prob=0.5)
    random.seed(0)
    masked = [out for eg in examples for out in augment(nlp, eg)]
    assert any("[MASK]" in eg.reference.text for eg in masked)
    for eg in masked:  # same tokens on both sides: every gold tag aligned
        assert None not in eg.get_aligned_ner()
    losses = nlp.update(masked, sgd=None)
    assert losses["crf_ner"] > 0


@pytest.mark.parametrize(
    "name,augmenter",
    [("en_conll03_entity_swap.cfg", "spacy-bert-crf.entity_swap.v1"),
     ("en_conll03_token_mask.cfg", "spacy-bert-crf.token_mask.v1")],
)
def test_augmenter_ablation_configs_train(name, augmenter, tiny_bert_dir, tmp_path):
    """The ablation configs are the recipe they were measured against plus the augmenter, and run
    under spacy train."""
    path = CONFIGS_DIR / "ablations" / name
    differing = config_differences(path, MEAN_LOSS_CONFIG)
    assert differing and all(k.startswith("corpora.train.augmenter") for k in differing)
    other = flat_config(load_config(path, interpolate=False))
    assert other["corpora.train.augmenter.@augmenters"] == augmenter
    overrides = short_training_overrides(tiny_bert_dir, write_corpus(tmp_path / "train.spacy"))
    spacy_train(path, tmp_path / "out", overrides=overrides)
    assert spacy.load(tmp_path / "out" / "model-last").get_pipe("crf_ner").labels

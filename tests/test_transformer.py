"""spacy-bert-crf.TransformerModel.v1: length-bucketed inference gives spacy-transformers' outputs."""
import numpy
import pytest
import spacy
from hypothesis import given, settings
from hypothesis import strategies as st
from spacy.tokens import Doc

from spacy_bert_crf.layers.transformer import build_transformer_model, length_buckets

from .util import transformer_config


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


def test_bucketed_inference_matches_spacy_transformers(tiny_bert_dir):
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

    ref, got = outputs(reference), outputs(bucketed)
    for a, b in zip(ref, got):
        assert a.wordpieces.input_ids.shape == b.wordpieces.input_ids.shape
        mask = a.wordpieces.attention_mask.astype(bool)
        real_a = a.model_output.last_hidden_state[mask]
        real_b = b.model_output.last_hidden_state[mask]
        numpy.testing.assert_allclose(real_a, real_b, atol=1e-5)
    # the long doc really was split into several sub-batches
    lengths = ref[0].wordpieces.attention_mask.sum(1).tolist()
    assert len(length_buckets(lengths, 40, 0.75)) > 1


@pytest.mark.parametrize("bad", [{"max_batch_pieces": 0}, {"min_fill": 0.0}, {"min_fill": 1.5}])
def test_invalid_settings_raise(tiny_bert_dir, bad):
    with pytest.raises(ValueError, match="max_batch_pieces|min_fill"):
        build_transformer_model(str(tiny_bert_dir), lambda docs: [], **bad)


def test_empty_and_whitespace_docs_in_a_batch(tiny_bert_dir):
    nlp = _nlp(tiny_bert_dir, "spacy-bert-crf.TransformerModel.v1", max_batch_pieces=16)
    texts = ["", "   ", "Olga met Paris .", "", " ".join(["Zork"] * 40)]
    docs = list(nlp.pipe(texts, batch_size=8))
    assert [len(d) for d in docs] == [len(nlp.make_doc(t)) for t in texts]
    long_doc = docs[-1]._.trf_data
    assert long_doc.model_output.last_hidden_state.shape[0] == len(long_doc.wordpieces.strings)

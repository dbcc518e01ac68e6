"""Windows bounded by wordpieces (issue 18): no window is truncated, every visible token gets a
wordpiece, and tokens the tokenizer drops are flagged."""
import logging

import numpy
import pytest
import spacy
from hypothesis import given, settings
from hypothesis import strategies as st
from spacy.tokens import Doc

from spacy_bert_crf.layers.transformer import (
    BoundedTransformerModel,
    count_wordpieces,
    fit_spans,
    max_wordpieces,
    tokens_without_wordpieces,
)

MAX_LENGTH = 32
# Unknown words: the tiny BERT splits them into letters (4-6 wordpieces each).
LONG_WORDS = ["Zork", "Qwvxy", "Jaxxon", "Pbrtk", "Olga", "Paris", "."]


def _nlp(model_dir, get_spans, architecture="spacy-bert-crf.TransformerModel.v1"):
    nlp = spacy.blank("en")
    nlp.add_pipe("transformer", config={"model": {
        "@architectures": architecture,
        "name": str(model_dir),
        "tokenizer_config": {"use_fast": True, "model_max_length": MAX_LENGTH},
        "get_spans": get_spans,
    }})
    nlp.initialize()
    return nlp


STRIDED = {"@span_getters": "spacy-transformers.strided_spans.v1", "window": 24, "stride": 16}
SENTENCES = {"@span_getters": "spacy-transformers.sent_spans.v1"}


@pytest.fixture(scope="module")
def strided_nlp(tiny_bert_dir):
    return _nlp(tiny_bert_dir, STRIDED)


@pytest.fixture
def transformers_log():
    """Records of transformers' loggers (they do not propagate to the root logger)."""
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("transformers")
    logger.addHandler(handler)
    yield records
    logger.removeHandler(handler)


def _long_doc(nlp, n=120, seed=0):
    rng = numpy.random.default_rng(seed)
    return Doc(nlp.vocab, words=[LONG_WORDS[i] for i in rng.integers(0, len(LONG_WORDS), n)])


def _assert_no_piece_dropped(trf, output):
    """Each window fits and holds exactly the wordpieces its text has alone."""
    tokenizer = trf.tokenizer
    flat = [span for doc_spans in output.spans for span in doc_spans]
    assert output.wordpieces.input_ids.shape[1] <= MAX_LENGTH
    kept = numpy.asarray(output.wordpieces.attention_mask).sum(1).tolist()
    assert kept == count_wordpieces(tokenizer, [span.text for span in flat])


def test_oversize_windows_are_resplit_not_truncated(strided_nlp, transformers_log):
    trf = strided_nlp.get_pipe("transformer").model
    assert max_wordpieces(trf) == MAX_LENGTH
    docs = [_long_doc(strided_nlp, seed=s) for s in range(3)]
    windows = trf.attrs["span_getter"](docs)
    # the configured windows really hold more wordpieces than the encoder takes
    assert max(count_wordpieces(trf.tokenizer, [w.text for ws in windows for w in ws])) > MAX_LENGTH
    for is_train in (False, True):
        output, _ = trf(docs, is_train=is_train)
        _assert_no_piece_dropped(trf, output)
    for doc in strided_nlp.pipe(docs):
        assert (numpy.asarray(doc._.trf_data.align.lengths) >= 1).all()
        assert not tokens_without_wordpieces(doc).any()
    assert not [r for r in transformers_log if "maximum sequence length" in r.getMessage()]


def _token_vectors(doc):
    data = doc._.trf_data
    hidden = numpy.asarray(data.model_output.last_hidden_state)
    flat = hidden.reshape(-1, hidden.shape[-1])
    lengths = numpy.asarray(data.align.lengths)
    starts = numpy.concatenate([[0], numpy.cumsum(lengths)[:-1]])
    index = numpy.asarray(data.align.data).ravel()
    return numpy.stack([flat[index[s:][:n]].mean(0) for s, n in zip(starts, lengths)])


def test_sentence_gets_the_same_vectors_as_alone(tiny_bert_dir):
    nlp = _nlp(tiny_bert_dir, SENTENCES)
    short = ["Olga", "met", "Paris", "."]
    oversize = [LONG_WORDS[i % 4] for i in range(30)] + ["."]  # 4-6 pieces each: > 32
    sentences = [short, oversize, short[::-1]]
    words = [w for s in sentences for w in s]
    starts = [i == 0 for s in sentences for i in range(len(s))]
    doc = nlp(Doc(nlp.vocab, words=words, sent_starts=starts))
    vectors = _token_vectors(doc)
    offset = 0
    for sentence in sentences:
        one_sentence = [True] + [False] * (len(sentence) - 1)
        alone = nlp(Doc(nlp.vocab, words=sentence, sent_starts=one_sentence))
        end = offset + len(sentence)
        numpy.testing.assert_allclose(vectors[offset:end], _token_vectors(alone), atol=1e-5)
        offset = end
    assert not tokens_without_wordpieces(doc).any()


def test_single_token_over_the_limit_keeps_its_first_wordpieces(strided_nlp):
    words = ["Olga", "x" * 200, "met", "Paris", "."]
    doc = strided_nlp(Doc(strided_nlp.vocab, words=words))
    lengths = numpy.asarray(doc._.trf_data.align.lengths)
    assert (lengths >= 1).all()
    assert doc._.trf_data.wordpieces.input_ids.shape[1] <= MAX_LENGTH


def test_invisible_tokens_are_flagged(strided_nlp):
    words = ["Olga", "\u200b", "met", "\ufeff", "Paris", "\u202e", "in", "\ue000", "Oslo", "\n"]
    doc = strided_nlp(Doc(strided_nlp.vocab, words=words))
    flags = tokens_without_wordpieces(doc)
    assert flags.tolist() == [w in "\u200b\ufeff\u202e\ue000" for w in words[:-1]] + [False]


def test_tokens_without_wordpieces_without_transformer_output(strided_nlp):
    doc = Doc(strided_nlp.vocab, words=["Olga", "met", "Paris"])
    assert tokens_without_wordpieces(doc).tolist() == [False] * 3  # never processed
    other = strided_nlp(Doc(strided_nlp.vocab, words=["Olga", "met"]))
    doc._.trf_data = other._.trf_data
    with pytest.raises(ValueError, match="aligns 2 tokens, but the doc has 3"):
        tokens_without_wordpieces(doc)


class _CharTokenizer:
    """Counts one wordpiece per character plus two special tokens."""

    def __call__(self, texts, **kwargs):
        return {"input_ids": [[0] * (len(t.replace(" ", "")) + 2) for t in texts]}


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.integers(1, 12), max_size=30), max_size=4), st.integers(3, 40))
def test_fit_spans_partitions_windows_into_parts_that_fit(word_lengths, max_length):
    vocab = spacy.blank("en").vocab
    docs = [Doc(vocab, words=["x" * n for n in lengths]) for lengths in word_lengths]
    windows = [[doc[:]] if len(doc) else [] for doc in docs]
    tokenizer = _CharTokenizer()
    fitted = fit_spans(windows, tokenizer, max_length)
    for doc, parts in zip(docs, fitted):
        assert [t.i for part in parts for t in part] == list(range(len(doc)))
        for part, n in zip(parts, count_wordpieces(tokenizer, [p.text for p in parts])):
            assert n <= max_length or len(part) == 1


def test_copy_keeps_settings_and_outputs(strided_nlp):
    trf = strided_nlp.get_pipe("transformer").model
    copied = trf.copy()
    assert isinstance(copied, BoundedTransformerModel)
    for key in ("max_batch_pieces", "min_fill", "bucketed", "has_transformer", "span_getter"):
        assert copied.attrs[key] == trf.attrs[key]
    docs = [_long_doc(strided_nlp)]
    a, b = trf.predict(docs), copied.predict(docs)
    _assert_no_piece_dropped(copied, b)
    numpy.testing.assert_allclose(
        a.model_output.last_hidden_state, b.model_output.last_hidden_state, atol=1e-6
    )

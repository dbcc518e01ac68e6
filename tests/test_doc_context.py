"""Document context: training and prediction on whole documents (convert --docs) or groups of
sentences (--n-sents) score on exactly the gold entities of the sentence-level corpus."""
import pytest
import spacy
from spacy.cli.train import train as spacy_train
from spacy.tokens import DocBin
from spacy.training import Example

from spacy_bert_crf.corpora import read_conll

from .util import BASE_CONFIG, DATA_DIR, short_training_overrides


def sentence_entities(docs):
    """(sentence number in the corpus, start and end in the sentence, label) of every entity."""
    out = []
    n_sents = 0
    for doc in docs:
        sents = list(doc.sents)
        for i, sent in enumerate(sents):
            for ent in sent.ents:
                out.append((n_sents + i, ent.start - sent.start, ent.end - sent.start, ent.label_))
        n_sents += len(sents)
    return out


@pytest.mark.parametrize("grouping", [{"docs": True}, {"n_sents": 2}, {"n_sents": 3}])
def test_same_gold_entities(conll_sample, grouping):
    sentences, _ = read_conll(conll_sample)
    grouped, _ = read_conll(conll_sample, **grouping)
    assert len(grouped) < len(sentences)
    assert sentence_entities(grouped) == sentence_entities(sentences)
    assert len(sentence_entities(sentences)) == 7


@pytest.mark.data
@pytest.mark.parametrize("split", ["dev.txt", "test.txt"])
def test_same_gold_entities_conll2003(split):
    path = DATA_DIR / "conll2003" / split
    sentences, stats = read_conll(path)
    documents, doc_stats = read_conll(path, docs=True)
    assert sentence_entities(documents) == sentence_entities(sentences)
    assert doc_stats.entities == stats.entities and doc_stats.tokens == stats.tokens


def test_train_and_predict_on_documents(conll_sample, tiny_bert_dir, tmp_path):
    """Documents longer than the transformer's window (8 tokens, stride 6): crf_ner trains on them
    and predicts on them, and the evaluation counts the gold entities of the sentences."""
    documents, _ = read_conll(conll_sample, docs=True)
    assert max(len(d) for d in documents) > 8
    DocBin(docs=documents).to_disk(tmp_path / "docs.spacy")
    overrides = {
        **short_training_overrides(tiny_bert_dir, tmp_path / "docs.spacy", max_steps=6,
                                   eval_frequency=3),
        "components.transformer.model.get_spans.window": 8,
        "components.transformer.model.get_spans.stride": 6,
    }
    spacy_train(BASE_CONFIG, tmp_path / "out", overrides=overrides)
    nlp = spacy.load(tmp_path / "out" / "model-last")
    examples = [Example(nlp.make_doc(d.text), d) for d in documents]
    scores = nlp.evaluate(examples)
    assert 0.0 <= scores["ents_f"] <= 1.0
    labels = set(nlp.get_pipe("crf_ner").labels)
    for doc in nlp.pipe(d.text for d in documents):
        assert "crf_ner" in doc.spans
        assert {e.label_ for e in doc.ents} <= labels

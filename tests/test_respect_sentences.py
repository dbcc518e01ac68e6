"""crf_ner's respect_sentences: no entity crosses a sentence boundary, by construction."""
import pytest
import spacy
from spacy.tokens import Doc
from spacy.training import Example

from .util import HASH_TOK2VEC, entities, train

TEXT = "Alpha Beta Gamma went home ."
ENT = [(0, 16, "PER")]  # "Alpha Beta Gamma": tokens 0-2


def _trained(scheme: str, respect_sentences: bool):
    nlp = spacy.blank("en")
    nlp.add_pipe(
        "crf_ner",
        config={
            "model": {"tok2vec": HASH_TOK2VEC, "scheme": scheme},
            "respect_sentences": respect_sentences,
        },
    )
    examples = [Example.from_dict(nlp.make_doc(TEXT), {"entities": ENT})] * 4
    train(nlp, examples, steps=40, lr=0.01)
    return nlp


def _split_doc(nlp, sent_starts):
    words = TEXT.split()
    return Doc(nlp.vocab, words=words, sent_starts=sent_starts)


# a boundary inside the learnt entity: "Alpha Beta | Gamma went home ."
SPLIT = [True, False, True, False, False, False]


@pytest.fixture(scope="module", params=["BILUO", "BIO"])
def trained_pair(request):
    return _trained(request.param, False), _trained(request.param, True)


def test_without_the_option_the_entity_crosses_the_boundary(trained_pair):
    """The premise of the next test: the model has learnt the three-token entity and, as one
    sequence, the doc gets it across the boundary."""
    plain, _ = trained_pair
    assert entities(plain(_split_doc(plain, SPLIT))) == [(0, 16, "PER")]


def test_no_entity_crosses_a_sentence_boundary(trained_pair):
    _, nlp = trained_pair
    doc = nlp(_split_doc(nlp, SPLIT))
    starts = {s.start for s in doc.sents}
    assert doc.ents, "the model should still find entities"
    for ent in doc.ents:
        assert not any(ent.start < i < ent.end for i in starts), (ent, starts)
    # the confidences, the span group and nbest are decoded under the same boundaries
    for span in doc.spans["crf_ner"]:
        assert not any(span.start < i < span.end for i in starts)
    for analyses in nlp.get_pipe("crf_ner").nbest([_split_doc(nlp, SPLIT)], k=5):
        for ents, prob in analyses:
            assert 0.0 < prob <= 1.0
            for ent in ents:
                assert not any(ent.start < i < ent.end for i in starts), (ent, starts)


def test_docs_without_boundaries_are_one_sequence(trained_pair):
    """No sentence annotation (or a single sentence): the option changes nothing."""
    plain, nlp = trained_pair
    for doc_of in (lambda n: n.make_doc(TEXT), lambda n: _split_doc(n, [True] + [False] * 5)):
        assert entities(nlp(doc_of(nlp))) == entities(plain(doc_of(plain))) == [(0, 16, "PER")]


def test_one_token_sentences_and_preset_entities():
    """Every token its own sentence: only single-token entities (U-/B- at once ended) can
    occur; a preset entity across a boundary (e.g. from an entity_ruler) is kept as it is."""
    nlp = _trained("BILUO", True)
    doc = nlp(_split_doc(nlp, [True] * 6))
    assert all(len(ent) == 1 for ent in doc.ents)
    preset = _split_doc(nlp, SPLIT)
    preset.ents = [preset.char_span(0, 16, label="PER")]
    assert entities(nlp(preset)) == [(0, 16, "PER")]

"""What the CRF knows beyond its best path (issue 16): n-best analyses, candidate spans, the
threshold and the temperature, each against brute-force enumeration of every tag sequence."""
import contextlib
import itertools

import numpy
import pytest
import spacy
from hypothesis import given, settings
from hypothesis import strategies as st

from spacy_bert_crf.layers.crf import chain_arrays
from spacy_bert_crf.layers.crf_decode import NumpyChain
from spacy_bert_crf.layers import crf_kbest
from spacy_bert_crf.layers.crf_kbest import (KBest, _margin_of_kth_path, kbest_exact, kbest_numpy,
                                             max_marginals)
from spacy_bert_crf.tag_schemes import constraints, make_tags, tags_to_spans

from .util import TRAIN_DATA, entities, is_valid, make_examples, make_light_nlp, train

SHORT = ["Kenji met Olga.", "Rain fell", "Oslo", "Tom Baker left Quito"]


@pytest.fixture(scope="module", params=["BILUO", "BIO"])
def light(request):
    """A lightly trained pipeline: its distributions are spread over many paths."""
    nlp = make_light_nlp(scheme=request.param)
    train(nlp, make_examples(nlp), steps=4, lr=0.01)
    return nlp


@contextlib.contextmanager
def pipe_settings(pipe, **values):
    """The pipe with some attributes set for a block, restored after it."""
    old = {name: getattr(pipe, name) for name in values}
    for name, value in values.items():
        setattr(pipe, name, value)
    try:
        yield pipe
    finally:
        for name, value in old.items():
            setattr(pipe, name, value)


def every_path(pot_row, n, trans, start, end):
    """Every tag sequence of length n, as rows of an array, and its score over the potentials
    pot_row (T, K) (-inf where something on it is not allowed)."""
    K = pot_row.shape[1]
    paths = numpy.array(list(itertools.product(range(K), repeat=n)))
    return paths, path_scores(paths, pot_row, trans, start, end)


def path_scores(paths, pot_row, trans, start, end):
    """The scores of tag sequences (P, n) over the potentials pot_row (T, K)."""
    n = paths.shape[1]
    return (start[paths[:, 0]] + end[paths[:, -1]] + pot_row[numpy.arange(n), paths].sum(1)
            + trans[paths[:, :-1], paths[:, 1:]].sum(1))


def random_chain(tags, scheme, rng):
    """Random transition, start and end scores, -inf where the scheme does not allow them."""
    K = len(tags)
    allowed_t, allowed_s, allowed_e = constraints(tags, scheme)
    trans = numpy.where(allowed_t, rng.normal(size=(K, K)), -numpy.inf)
    start = numpy.where(allowed_s, rng.normal(size=K), -numpy.inf)
    end = numpy.where(allowed_e, rng.normal(size=K), -numpy.inf)
    return trans, start, end


def length_mask(lengths, T):
    return numpy.arange(T)[None, :] < numpy.asarray(lengths)[:, None]


def random_batch(scheme, labels, lengths, seed, allowed_share):
    """The tags, the generator, random potentials of a ragged batch (-inf for about
    1 - allowed_share of them), its mask, and random chain scores."""
    tags = make_tags(labels, scheme)
    K, T, B = len(tags), max(lengths), len(lengths)
    rng = numpy.random.default_rng(seed)
    trans, start, end = random_chain(tags, scheme, rng)
    pot = numpy.where(rng.random((B, T, K)) < allowed_share, rng.normal(size=(B, T, K)) * 2,
                      -numpy.inf)
    return tags, rng, pot, length_mask(lengths, T), trans, start, end


def long_rows(labels, lengths, seed, peak):
    """Random chain scores (BILUO) and potentials of a ragged batch of long rows, "O" raised by
    peak (0: uncertain; 4: confident)."""
    tags = make_tags(labels, "BILUO")
    rng = numpy.random.default_rng(seed)
    trans, start, end = random_chain(tags, "BILUO", rng)
    T = max(lengths)
    pot = rng.normal(size=(len(lengths), T, len(tags))) * 2
    pot[:, :, 0] += peak
    return rng, pot, length_mask(lengths, T), trans, start, end


def check_paths(paths, scores, pot, trans, start, end, lengths, count, atol=1e-7):
    """The first count paths of each row are distinct and score what scores says."""
    for b, n in enumerate(lengths):
        rows = paths[b, :count, :n]
        assert len({tuple(p) for p in rows}) == count
        numpy.testing.assert_allclose(path_scores(rows, pot[b], trans, start, end),
                                      scores[b, :count], rtol=0, atol=atol)


def brute_force(pipe, doc, temperature=1.0):
    """Every valid tag sequence the pipe may decode for the doc, with its probability."""
    emissions = pipe.model.predict([doc])
    allowed = pipe._allowed_tags(doc)
    arrays = chain_arrays(pipe.model, emissions, [allowed], temperature)
    pot, trans, start, end = arrays.with_infinities()
    tags = pipe.tags
    candidates, all_scores = every_path(pot[0], len(doc), trans, start, end)
    paths, scores = [], []
    for path, score in zip(candidates.tolist(), all_scores):
        if numpy.isfinite(score) and is_valid([tags[t] for t in path], pipe.scheme):
            paths.append(path)
            scores.append(score)
    scores = numpy.asarray(scores)
    probs = numpy.exp(scores - numpy.logaddexp.reduce(scores))
    spans = [tuple(tuple(s) for s in tags_to_spans([tags[t] for t in p], pipe.scheme))
             for p in paths]
    return spans, probs


def span_marginals(spans, probs, max_length=None):
    """P(exactly this span and label), summed over the enumerated paths."""
    out = {}
    for path_spans, p in zip(spans, probs):
        for span in path_spans:
            if max_length is None or span[1] - span[0] <= max_length:
                out[span] = out.get(span, 0.0) + p
    return out


def as_tuples(ents):
    return tuple((e.start, e.end, e.label_) for e in ents)


@pytest.mark.parametrize("k", [1, 3, 7])
def test_nbest_matches_brute_force(light, k):
    pipe = light.get_pipe("crf_ner")
    docs = [light.make_doc(text) for text in SHORT]
    found = pipe.nbest(docs, k)
    assert len(found) == len(docs)
    for doc, analyses in zip(docs, found):
        spans, probs = brute_force(pipe, doc)
        order = numpy.argsort(-probs, kind="stable")
        assert len(analyses) == min(k, len(probs))
        got = [p for _, p in analyses]
        numpy.testing.assert_allclose(got, probs[order][: len(got)], rtol=1e-6, atol=1e-12)
        assert got == sorted(got, reverse=True) and sum(got) <= 1.0 + 1e-9
        by_spans = dict(zip(spans, probs))
        assert len({as_tuples(ents) for ents, _ in analyses}) == len(analyses)  # distinct
        for ents, p in analyses:
            assert by_spans[as_tuples(ents)] == pytest.approx(p, rel=1e-6)
    # The best analysis is what the pipe writes to doc.ents.
    for doc, analyses in zip(light.pipe(SHORT), found):
        assert as_tuples(analyses[0][0]) == as_tuples(doc.ents)


def test_nbest_on_annotated_docs_and_presets(light):
    """Docs the pipe already annotated give the same n-best as before; a preset entity (and a
    blocked token) restricts every analysis, as it restricts the decoding."""
    pipe = light.get_pipe("crf_ner")
    fresh = [light.make_doc(text) for text in SHORT]
    annotated = list(light.pipe(SHORT))
    for a, b in zip(pipe.nbest(fresh, 4), pipe.nbest(annotated, 4)):
        assert [(as_tuples(e), round(p, 9)) for e, p in a] == [
            (as_tuples(e), round(p, 9)) for e, p in b
        ]
    doc = light.make_doc("Tom Baker left Quito")
    doc.set_ents([spacy.tokens.Span(doc, 3, 4, label="LOC")], blocked=[doc[0:1]])
    analyses = pipe.nbest([doc], 6)[0]
    spans, probs = brute_force(pipe, doc)
    assert len(analyses) == min(6, len(probs))
    for ents, p in analyses:
        assert (3, 4, "LOC") in as_tuples(ents)
        assert all(e.start > 0 for e in ents)  # the blocked token stays outside
    numpy.testing.assert_allclose(
        [p for _, p in analyses], numpy.sort(probs)[::-1][: len(analyses)], rtol=1e-6
    )


def test_nbest_bad_input_and_empty_docs(light):
    pipe = light.get_pipe("crf_ner")
    for k in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="Invalid k"):
            pipe.nbest([light.make_doc("Oslo")], k)
    with pytest.raises(TypeError, match=r"not one Doc: pass \[doc\]"):
        pipe.nbest(light.make_doc("Oslo in Norway"), 2)
    assert pipe.nbest([light.make_doc("")], 3) == [[]]
    assert pipe.nbest([], 3) == []
    mixed = pipe.nbest([light.make_doc(""), light.make_doc("Oslo")], 2)
    assert mixed[0] == [] and len(mixed[1]) == 2
    fresh = make_light_nlp()
    with pytest.raises(ValueError, match="E109"):
        fresh.get_pipe("crf_ner").nbest([fresh.make_doc("Oslo")], 2)


@settings(max_examples=40, deadline=None)
@given(
    st.sampled_from([("BIO", ["PER"]), ("BIO", ["PER", "LOC"]), ("BILUO", ["PER"])]),
    st.lists(st.integers(1, 5), min_size=1, max_size=3),
    st.integers(1, 6),
    st.integers(0, 10_000),
)
def test_kbest_numpy_matches_brute_force(case, lengths, k, seed):
    """k-best Viterbi on a ragged batch with random restrictions: the k best scores of every
    row, each path valid, allowed and distinct."""
    scheme, labels = case
    tags, rng, pot, mask, trans, start, end = random_batch(scheme, labels, lengths, seed, 0.8)
    pot[:, :, 0] = rng.normal(size=pot.shape[:2])  # "O" always allowed, as the pipe guarantees
    for kbest in (kbest_numpy, kbest_exact):
        check_kbest(kbest(pot, mask, trans, start, end, k), pot, trans, start, end, lengths,
                    tags, scheme, k)


@settings(max_examples=30, deadline=None)
@given(
    st.sampled_from([("BIO", ["PER", "LOC"]), ("BILUO", ["PER"])]),
    st.lists(st.integers(1, 4), min_size=1, max_size=5),
    st.integers(0, 10_000),
)
def test_max_marginals_match_brute_force(case, lengths, seed):
    """The best path through each (position, tag), from the two max-product passes (rows run
    longest first; the backward pass over each row reversed): the brute-force maximum over the
    valid paths through it, -inf where none passes, and -inf at padding."""
    scheme, labels = case
    tags, _, pot, mask, trans, start, end = random_batch(scheme, labels, lengths, seed, 0.7)
    got = max_marginals(pot, mask, trans, start, end)
    for b, n in enumerate(lengths):
        expected = numpy.full(pot.shape[1:], -numpy.inf)
        paths, scores = every_path(pot[b], n, trans, start, end)
        for t in range(n):
            numpy.maximum.at(expected[t], paths[:, t], scores)
        numpy.testing.assert_allclose(got[b], expected, atol=1e-9)


def margin_per_row(below, tol, k):
    """_margin_of_kth_path as a loop over the rows: the gaps above tol, sorted, picked greedily
    from the smallest, each more than tol above the one picked before."""
    margin = numpy.empty(len(below))
    for b in range(len(below)):
        if k == 1:
            margin[b] = tol[b]
            continue
        picked = []
        for gap in numpy.sort(below[b][numpy.isfinite(below[b])]):
            if gap > (picked[-1] if picked else 0.0) + tol[b] or (not picked and gap > tol[b]):
                picked.append(gap)
        margin[b] = picked[k - 2] if len(picked) >= k - 1 else numpy.inf
    return margin


def test_margin_of_kth_path_matches_the_per_row_loop():
    """Gaps with repeats, near-ties within the tolerance, values just above it, rows with few
    or no finite gaps: the vectorised margin is the per-row loop's. Densely packed gaps (much
    closer than tol to each other, as on a long doc of uncertain emissions) give a margin of
    about k - 1 tolerances, not one that runs away with the chain of close gaps."""
    rng = numpy.random.default_rng(11)
    B, N = 300, 400
    below = numpy.round(rng.exponential(1.0, size=(B, N)), 1)  # many exact repeats
    below[rng.random((B, N)) < 0.2] = 0.0
    below[::7, 1::2] = below[::7, ::2] + 1e-12  # near-ties (one gap within tol)
    below[::11, :2] = [0.6e-9, 1.5e-9]  # the first gap above tol (1e-9 in these rows)
    n_finite = rng.integers(0, N + 1, size=B)
    n_finite[:4] = [0, 1, 2, N]
    below[numpy.arange(N)[None, :] >= n_finite[:, None]] = numpy.inf
    below = rng.permuted(below, axis=1)
    tol = 1e-9 * numpy.maximum(1.0, rng.uniform(0, 3, size=B))
    tol[::11] = 1e-9
    dense = rng.uniform(0, 1e-3, size=(1, 10_000))  # spaced about 1e-7 apart
    dense[0, :100] = 0.0  # the best path's nodes
    for k in (1, 2, 3, 5, 12, 60):
        expected = margin_per_row(below, tol, k)
        numpy.testing.assert_array_equal(_margin_of_kth_path(below, tol, k), expected)
        margin = _margin_of_kth_path(dense, numpy.array([1e-6]), k)
        numpy.testing.assert_array_equal(margin, margin_per_row(dense, [1e-6], k))
        assert (k - 1) * 1e-6 <= margin[0] <= k * 1.2e-6


def check_kbest(found, pot, trans, start, end, lengths, tags, scheme, k):
    """found: kbest_numpy's (paths, scores), or kbest_exact's KBest, whose log Z is checked too."""
    paths, scores = found[:2]
    for b, n in enumerate(lengths):
        _, brute = every_path(pot[b], n, trans, start, end)
        if isinstance(found, KBest):
            assert found.log_z[b] == pytest.approx(numpy.logaddexp.reduce(brute), abs=1e-9)
        brute = numpy.sort(brute[numpy.isfinite(brute)])[::-1][:k]
        finite = scores[b][numpy.isfinite(scores[b])]
        numpy.testing.assert_allclose(finite, brute, atol=1e-9)
        check_paths(paths[b : b + 1], scores[b : b + 1], pot[b : b + 1], trans, start, end, [n],
                    len(finite), atol=1e-9)
        for i in range(len(finite)):
            assert is_valid([tags[j] for j in paths[b, i, :n]], scheme)
            assert (paths[b, i, n:] == 0).all()


def test_candidates_match_brute_force(light):
    with pipe_settings(light.get_pipe("crf_ner"), candidates_key="cands",
                       candidates_threshold=0.0) as pipe:
        for text in SHORT:
            doc = light(text)
            spans, probs = brute_force(pipe, light.make_doc(text))
            expected = span_marginals(spans, probs, pipe.candidates_max_length)
            group = doc.spans["cands"]
            got = {(s.start, s.end, s.label_): float(p)
                   for s, p in zip(group, group.attrs["scores"])}
            expected = {key: p for key, p in expected.items() if p > 1e-30}
            assert set(got) >= {key for key, p in expected.items() if p > 1e-6}
            for key, p in got.items():
                assert p == pytest.approx(expected.get(key, 0.0), abs=1e-6)
            # The entities' own confidences are the same probabilities.
            own = doc.spans["crf_ner"]
            for span, p in zip(own, own.attrs["scores"]):
                assert got[(span.start, span.end, span.label_)] == pytest.approx(float(p), abs=1e-6)


def test_candidates_threshold_and_max_length(light):
    config = {"candidates_key": "sc", "candidates_threshold": 0.3, "candidates_max_length": 1}
    configured = spacy.blank("en").add_pipe("crf_ner", config=config)
    assert (configured.candidates_key, configured.candidates_threshold) == ("sc", 0.3)
    assert configured.candidates_max_length == 1
    nlp = spacy.blank("en")
    nlp.add_pipe("crf_ner", source=light)
    pipe = nlp.get_pipe("crf_ner")
    pipe.candidates_key, pipe.candidates_threshold, pipe.candidates_max_length = "sc", 0.3, 1
    doc = nlp("Tom Baker left Quito")
    group = doc.spans["sc"]
    assert all(len(s) == 1 for s in group)
    assert all(p >= 0.3 for p in group.attrs["scores"])
    assert len(group.attrs["scores"]) == len(group)
    assert nlp("").spans["sc"].attrs["scores"].tolist() == []


@pytest.mark.parametrize("setting", ["threshold", "candidates_threshold"])
@pytest.mark.parametrize("value", [-0.1, 1.5, "0.5"])
def test_bad_thresholds(setting, value):
    with pytest.raises(ValueError, match=f"Invalid {setting}"):
        spacy.blank("en").add_pipe("crf_ner", config={setting: value})


def test_bad_candidates_max_length():
    with pytest.raises(ValueError, match="Invalid candidates_max_length"):
        spacy.blank("en").add_pipe("crf_ner", config={"candidates_max_length": 0})


def test_threshold_drops_entities_and_flags_them(light):
    texts = [t for t, _ in TRAIN_DATA]
    pipe = light.get_pipe("crf_ner")
    before = [(entities(d), d.spans["crf_ner"].attrs["scores"].tolist()) for d in light.pipe(texts)]
    all_scores = sorted(p for _, scores in before for p in scores)
    assert len(all_scores) >= 2
    cut = (all_scores[0] + all_scores[-1]) / 2
    with pipe_settings(pipe, threshold=cut):
        for doc, (ents, scores) in zip(light.pipe(texts), before):
            group = doc.spans["crf_ner"]
            assert [(s.start_char, s.end_char, s.label_) for s in group] == ents
            assert group.attrs["below_threshold"].tolist() == [p < cut for p in scores]
            assert entities(doc) == [e for e, p in zip(ents, scores) if p >= cut]
    assert [entities(d) for d in light.pipe(texts)] == [ents for ents, _ in before]


def test_temperature_scales_every_probability(light, tmp_path):
    pipe = light.get_pipe("crf_ner")
    doc = light.make_doc("Tom Baker left Quito")
    best = pipe.nbest([doc], 3)[0]
    with pipe_settings(pipe, temperature=2.0):
        warm = pipe.nbest([doc], 3)[0]
        spans, probs = brute_force(pipe, doc, temperature=2.0)
        numpy.testing.assert_allclose([p for _, p in warm], numpy.sort(probs)[::-1][:3], rtol=1e-6)
        assert as_tuples(warm[0][0]) == as_tuples(best[0][0])  # the best path does not change
        assert warm[0][1] < best[0][1]
        annotated = light("Tom Baker left Quito")
        by_spans = span_marginals(spans, probs)
        group = annotated.spans["crf_ner"]
        for span, p in zip(group, group.attrs["scores"]):
            expected = by_spans[(span.start, span.end, span.label_)]
            assert float(p) == pytest.approx(expected, abs=1e-6)
        light.to_disk(tmp_path / "pipeline")
        loaded = spacy.load(tmp_path / "pipeline")
        assert loaded.get_pipe("crf_ner").temperature == 2.0
        group2 = loaded("Tom Baker left Quito").spans["crf_ner"]
        numpy.testing.assert_allclose(group2.attrs["scores"], group.attrs["scores"], rtol=1e-5)
    assert pipe.temperature == 1.0
    for bad in (0.0, -1.0, 100.0, "2"):
        with pytest.raises(ValueError, match="Invalid temperature"):
            pipe.temperature = bad


@pytest.mark.parametrize("peak", [0.0, 4.0])
def test_pruned_kbest_is_exact_on_long_ragged_rows(peak):
    """kbest_exact (pruned trellis, collapsed runs) equals the plain k-best recursion on rows
    far too long to enumerate, from uncertain (peak 0) to confident (peak 4) emissions."""
    lengths = [1500, 37, 900]
    _, pot, mask, trans, start, end = long_rows(["PER", "LOC"], lengths, 7, peak)
    for k in (1, 5, 12):
        plain_paths, plain_scores = kbest_numpy(pot, mask, trans, start, end, k)
        paths, scores, log_z = kbest_exact(pot, mask, trans, start, end, k)
        numpy.testing.assert_allclose(scores, plain_scores, rtol=1e-12, atol=1e-7)
        check_paths(paths, scores, pot, trans, start, end, lengths, k)
        # log Z on the packed tokens is NumpyChain's on the padded batch, one row alone as well
        numpy.testing.assert_allclose(log_z, NumpyChain(pot, mask, trans, start, end).log_z(),
                                      rtol=1e-12)
        one = kbest_exact(pot[1:2, :37], mask[1:2, :37], trans, start, end, k).log_z
        numpy.testing.assert_allclose(one, log_z[1:2], rtol=1e-12)


def test_kbest_log_z_on_a_large_batch():
    """log Z of kbest_exact on a batch whose step product runs through einsum (B K K above what
    BLAS keeps in the calling thread) equals NumpyChain's, with some tokens' tags restricted."""
    lengths = [1 + (7 * i) % 23 for i in range(300)]
    _, pot, mask, trans, start, end = long_rows(["PER", "LOC", "ORG", "MISC"], lengths, 5, 1.0)
    pot[::7, ::3, 1:5] = -numpy.inf
    log_z = kbest_exact(pot, mask, trans, start, end, 3).log_z
    numpy.testing.assert_allclose(log_z, NumpyChain(pot, mask, trans, start, end).log_z(),
                                  rtol=1e-12)


def test_pruned_kbest_is_redone_until_exact(monkeypatch):
    """Margins too narrow to hold the k best paths (the best path's nodes only) are widened,
    row by row, until the result is exact: kbest_exact still equals the plain recursion."""
    lengths = [60, 7, 33, 1]
    _, pot, mask, trans, start, end = long_rows(["PER", "LOC"], lengths, 3, 1.0)
    margins = []
    pruned = crf_kbest._kbest_pruned

    def recorded(*args):
        margins.append(args[-1])
        return pruned(*args)

    monkeypatch.setattr(crf_kbest, "_margin_of_kth_path", lambda below, tol, k: tol.copy())
    monkeypatch.setattr(crf_kbest, "_kbest_pruned", recorded)
    for k in (2, 5):
        margins.clear()
        paths, scores, _ = kbest_exact(pot, mask, trans, start, end, k)
        plain_paths, plain_scores = kbest_numpy(pot, mask, trans, start, end, k)
        numpy.testing.assert_allclose(scores, plain_scores, rtol=1e-12, atol=1e-9)
        check_paths(paths, scores, pot, trans, start, end, lengths[:3], k)
        assert len(margins) > 2 and margins[0] is None  # redone, with wider margins


def test_kbest_numpy_with_local_tags_equals_global_tags():
    """kbest_numpy over local tags (each position's tags in its own order, as kbest_exact hands
    them) finds the paths and scores of the plain recursion, over rows of many steps (the
    local transitions are looked up a chunk of steps at a time) in no order of length."""
    lengths = [90, 301, 1, 300, 64]
    rng, pot, mask, trans, start, end = long_rows(["PER", "LOC"], lengths, 5, 2.0)
    tag_ids = numpy.argsort(rng.random(pot.shape), axis=2)  # a permutation per position
    local_pot = numpy.take_along_axis(pot, tag_ids, 2)
    for k in (1, 4):
        paths, scores = kbest_numpy(pot, mask, trans, start, end, k)
        local = kbest_numpy(local_pot, mask, trans, start, end, k, tag_ids=tag_ids)
        numpy.testing.assert_allclose(local[1], scores, rtol=1e-12)
        found = numpy.isfinite(scores)  # the one-token row has 3 paths only
        assert found.sum() == found.size - (k > 3)
        numpy.testing.assert_array_equal(local[0][found], paths[found])


def test_confidences_into_json(light):
    from spacy_bert_crf.confidences import doc_to_json, entity_confidences, span_confidence

    with pipe_settings(light.get_pipe("crf_ner"), candidates_key="cands"):
        doc = light("Tom Baker left Quito")
    scored = entity_confidences(doc)
    assert [span for span, _ in scored] == list(doc.spans["crf_ner"])
    for ent in doc.ents:
        assert span_confidence(ent) == pytest.approx(dict(
            ((s.start, s.end, s.label_), p) for s, p in scored)[(ent.start, ent.end, ent.label_)])
    data = doc_to_json(doc)
    assert [e["score"] for e in data["ents"]] == [span_confidence(e) for e in doc.ents]
    cands = data["spans"]["cands"]
    expected = doc.spans["cands"].attrs["scores"].tolist()
    assert [c["score"] for c in cands] == pytest.approx(expected)
    assert entity_confidences(light.make_doc("Oslo")) == []
    assert span_confidence(light.make_doc("Oslo")[0:1]) is None


def test_nbest_benchmark_reports_are_rendered_from_their_results():
    import json

    from benchmarks.nbest import render
    from benchmarks.paths import RESULTS

    found = sorted(RESULTS.glob("nbest*.json"))
    assert found
    for path in found:
        data = json.loads(path.read_text(encoding="utf8"))
        assert render(data) == path.with_suffix(".md").read_text(encoding="utf8"), path.name


@settings(max_examples=60, deadline=None)
@given(
    scheme=st.sampled_from(["BILUO", "BIO"]),
    rows=st.lists(
        st.lists(st.tuples(st.integers(0, 3), st.sampled_from(["PER", "LOC", "B-x"])),
                 max_size=6),
        min_size=1, max_size=5,
    ),
    padding=st.integers(0, 3),
)
def test_path_reader_reads_what_tags_to_spans_reads(scheme, rows, padding):
    """The vectorised reading of decoded paths (decode, nbest) gives tags_to_spans' entities,
    whatever the padding after each row holds."""
    from spacy_bert_crf.decoding import _PathReader
    from spacy_bert_crf.tag_schemes import spans_to_tags

    tags = make_tags(["PER", "LOC", "B-x"], scheme)
    index = {tag: i for i, tag in enumerate(tags)}
    paths, lengths, expected = [], [], []
    for row in rows:  # entities of the given lengths, one O between them
        spans, at = [], 0
        for length, label in row:
            if length:
                spans.append((at, at + length, label))
                at += length + 1
        n = max(at, 1)
        paths.append([index[t] for t in spans_to_tags(n, spans, scheme)])
        lengths.append(n)
        expected.append([tuple(s) for s in tags_to_spans([tags[i] for i in paths[-1]], scheme)])
    width = max(lengths) + padding
    array = numpy.full((len(paths), width), len(tags) - 1)  # padding: a start tag, never read
    for r, path in enumerate(paths):
        array[r, : len(path)] = path
    read = _PathReader(tags, scheme).batch(array, numpy.asarray(lengths))
    assert [[tuple(s) for s in row] for row in read] == expected

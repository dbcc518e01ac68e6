"""What the CRF knows beyond its best path (issue 16): n-best analyses, candidate spans, the
threshold and the temperature, each against brute-force enumeration of every tag sequence."""
import itertools

import numpy
import pytest
import spacy
from hypothesis import given, settings
from hypothesis import strategies as st

from spacy_bert_crf.layers.crf import chain_arrays
from spacy_bert_crf.layers.crf_kbest import (_rank_of_kth_path, kbest_exact, kbest_numpy,
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


def brute_force(pipe, doc, temperature=1.0):
    """Every valid tag sequence the pipe may decode for the doc, with its probability."""
    emissions = pipe.model.predict([doc])
    allowed = pipe._allowed_tags(doc)
    arrays = chain_arrays(pipe.model, emissions, [allowed], temperature)
    pot, trans, start, end = arrays.with_infinities()
    tags, n = pipe.tags, len(doc)
    paths, scores = [], []
    for path in itertools.product(range(len(tags)), repeat=n):
        if not is_valid([tags[t] for t in path], pipe.scheme):
            continue
        score = start[path[0]] + end[path[-1]] + sum(pot[0, t, k] for t, k in enumerate(path))
        score += sum(trans[a, b] for a, b in zip(path, path[1:]))
        if numpy.isfinite(score):
            paths.append(path)
            scores.append(score)
    scores = numpy.asarray(scores)
    probs = numpy.exp(scores - numpy.logaddexp.reduce(scores))
    spans = [tuple(tuple(s) for s in tags_to_spans([tags[t] for t in p], pipe.scheme))
             for p in paths]
    return spans, probs


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
    tags = make_tags(labels, scheme)
    K, T, B = len(tags), max(lengths), len(lengths)
    rng = numpy.random.default_rng(seed)
    allowed_t, allowed_s, allowed_e = constraints(tags, scheme)
    trans = numpy.where(allowed_t, rng.normal(size=(K, K)), -numpy.inf)
    start = numpy.where(allowed_s, rng.normal(size=K), -numpy.inf)
    end = numpy.where(allowed_e, rng.normal(size=K), -numpy.inf)
    pot = numpy.where(rng.random((B, T, K)) < 0.8, rng.normal(size=(B, T, K)) * 2, -numpy.inf)
    pot[:, :, 0] = rng.normal(size=(B, T))  # "O" always allowed, as the pipe guarantees
    mask = numpy.arange(T)[None, :] < numpy.asarray(lengths)[:, None]
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
    tags = make_tags(labels, scheme)
    K, T, B = len(tags), max(lengths), len(lengths)
    rng = numpy.random.default_rng(seed)
    allowed_t, allowed_s, allowed_e = constraints(tags, scheme)
    trans = numpy.where(allowed_t, rng.normal(size=(K, K)), -numpy.inf)
    start = numpy.where(allowed_s, rng.normal(size=K), -numpy.inf)
    end = numpy.where(allowed_e, rng.normal(size=K), -numpy.inf)
    pot = numpy.where(rng.random((B, T, K)) < 0.7, rng.normal(size=(B, T, K)) * 2, -numpy.inf)
    mask = numpy.arange(T)[None, :] < numpy.asarray(lengths)[:, None]
    got = max_marginals(pot, mask, trans, start, end)
    for b, n in enumerate(lengths):
        expected = numpy.full((T, K), -numpy.inf)
        for p in itertools.product(range(K), repeat=n):
            s = start[p[0]] + end[p[-1]] + sum(pot[b, t, j] for t, j in enumerate(p))
            s += sum(trans[i, j] for i, j in zip(p, p[1:]))
            for t, j in enumerate(p):
                expected[t, j] = max(expected[t, j], s)
        numpy.testing.assert_allclose(got[b], expected, atol=1e-9)


def rank_per_row(gaps, n_finite, tol, k):
    """_rank_of_kth_path as a loop over the rows (what kbest_exact ran before it was vectorised)."""
    rank = numpy.empty(len(gaps), dtype=numpy.int64)
    for b in range(len(gaps)):
        row = gaps[b, : n_finite[b]]
        positive = numpy.flatnonzero(row > tol[b])
        distinct = positive[numpy.diff(row[positive], prepend=0.0) > tol[b]]
        rank[b] = distinct[k - 2] if 1 < k <= len(distinct) + 1 else (
            n_finite[b] - 1 if k > 1 else 0
        )
    return rank


def test_rank_of_kth_path_matches_the_per_row_loop():
    """Sorted gaps with repeats, near-ties within the tolerance, values just above it, rows with
    few or no finite gaps: the vectorised rank is the per-row loop's."""
    rng = numpy.random.default_rng(11)
    B, N = 300, 40
    values = numpy.round(rng.exponential(1.0, size=(B, N)), 1)  # many exact repeats
    values[rng.random((B, N)) < 0.2] = 0.0
    values[::7, 1::2] = values[::7, ::2] + 1e-12  # near-ties (one gap within tol)
    # the first gap above tol (1e-9 in these rows) lies within tol of a gap below it: distinct
    values[::11, :2] = [0.6e-9, 1.5e-9]
    n_finite = rng.integers(0, N + 1, size=B)
    n_finite[:4] = [0, 1, 2, N]
    gaps = numpy.sort(values, 1)
    gaps[numpy.arange(N)[None, :] >= n_finite[:, None]] = numpy.inf
    gaps.sort(1)
    tol = 1e-9 * numpy.maximum(1.0, rng.uniform(0, 3, size=B))
    tol[::11] = 1e-9
    for k in (1, 2, 3, 5, 12, 60):
        numpy.testing.assert_array_equal(
            _rank_of_kth_path(gaps, n_finite, tol, k), rank_per_row(gaps, n_finite, tol, k)
        )


def check_kbest(found, pot, trans, start, end, lengths, tags, scheme, k):
    paths, scores = found
    K = len(tags)
    for b, n in enumerate(lengths):
        brute = []
        for p in itertools.product(range(K), repeat=n):
            s = start[p[0]] + end[p[-1]] + sum(pot[b, t, j] for t, j in enumerate(p))
            s += sum(trans[i, j] for i, j in zip(p, p[1:]))
            if numpy.isfinite(s):
                brute.append(s)
        brute = sorted(brute, reverse=True)[:k]
        finite = scores[b][numpy.isfinite(scores[b])]
        numpy.testing.assert_allclose(finite, brute, atol=1e-9)
        got = {tuple(paths[b, i, :n]) for i in range(len(finite))}
        assert len(got) == len(finite)
        for i, s in enumerate(finite):
            p = paths[b, i, :n]
            assert is_valid([tags[j] for j in p], scheme)
            assert (paths[b, i, n:] == 0).all()
            own = start[p[0]] + end[p[-1]] + pot[b, numpy.arange(n), p].sum()
            assert own + trans[p[:-1], p[1:]].sum() == pytest.approx(s, abs=1e-9)


def test_candidates_match_brute_force(light):
    pipe = light.get_pipe("crf_ner")
    pipe.candidates_key, pipe.candidates_threshold = "cands", 0.0
    try:
        for text in SHORT:
            doc = light(text)
            spans, probs = brute_force(pipe, light.make_doc(text))
            expected = {}
            for path_spans, p in zip(spans, probs):
                for span in path_spans:
                    if span[1] - span[0] <= pipe.candidates_max_length:
                        expected[span] = expected.get(span, 0.0) + p
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
    finally:
        pipe.candidates_key, pipe.candidates_threshold = None, 0.1


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
    pipe.threshold = cut
    try:
        for doc, (ents, scores) in zip(light.pipe(texts), before):
            group = doc.spans["crf_ner"]
            assert [(s.start_char, s.end_char, s.label_) for s in group] == ents
            assert group.attrs["below_threshold"].tolist() == [p < cut for p in scores]
            assert entities(doc) == [e for e, p in zip(ents, scores) if p >= cut]
    finally:
        pipe.threshold = 0.0
    assert [entities(d) for d in light.pipe(texts)] == [ents for ents, _ in before]


def test_temperature_scales_every_probability(light, tmp_path):
    pipe = light.get_pipe("crf_ner")
    doc = light.make_doc("Tom Baker left Quito")
    best = pipe.nbest([doc], 3)[0]
    pipe.temperature = 2.0
    try:
        warm = pipe.nbest([doc], 3)[0]
        spans, probs = brute_force(pipe, doc, temperature=2.0)
        numpy.testing.assert_allclose([p for _, p in warm], numpy.sort(probs)[::-1][:3], rtol=1e-6)
        assert as_tuples(warm[0][0]) == as_tuples(best[0][0])  # the best path does not change
        assert warm[0][1] < best[0][1]
        annotated = light("Tom Baker left Quito")
        by_spans = {}
        for path_spans, p in zip(spans, probs):
            for span in path_spans:
                by_spans[span] = by_spans.get(span, 0.0) + p
        group = annotated.spans["crf_ner"]
        for span, p in zip(group, group.attrs["scores"]):
            expected = by_spans[(span.start, span.end, span.label_)]
            assert float(p) == pytest.approx(expected, abs=1e-6)
        light.to_disk(tmp_path / "pipeline")
        loaded = spacy.load(tmp_path / "pipeline")
        assert loaded.get_pipe("crf_ner").temperature == 2.0
        group2 = loaded("Tom Baker left Quito").spans["crf_ner"]
        numpy.testing.assert_allclose(group2.attrs["scores"], group.attrs["scores"], rtol=1e-5)
    finally:
        pipe.temperature = 1.0
    for bad in (0.0, -1.0, 100.0, "2"):
        with pytest.raises(ValueError, match="Invalid temperature"):
            pipe.temperature = bad


@pytest.mark.parametrize("peak", [0.0, 4.0])
def test_pruned_kbest_is_exact_on_long_ragged_rows(peak):
    """kbest_exact (pruned trellis, collapsed runs) equals the plain k-best recursion on rows
    far too long to enumerate, from uncertain (peak 0) to confident (peak 4) emissions."""
    tags = make_tags(["PER", "LOC"], "BILUO")
    K = len(tags)
    rng = numpy.random.default_rng(7)
    allowed_t, allowed_s, allowed_e = constraints(tags, "BILUO")
    trans = numpy.where(allowed_t, rng.normal(size=(K, K)), -numpy.inf)
    start = numpy.where(allowed_s, rng.normal(size=K), -numpy.inf)
    end = numpy.where(allowed_e, rng.normal(size=K), -numpy.inf)
    lengths = [1500, 37, 900]
    pot = rng.normal(size=(3, 1500, K)) * 2
    pot[:, :, 0] += peak
    mask = numpy.arange(1500)[None, :] < numpy.asarray(lengths)[:, None]
    for k in (1, 5, 12):
        plain_paths, plain_scores = kbest_numpy(pot, mask, trans, start, end, k)
        paths, scores = kbest_exact(pot, mask, trans, start, end, k)
        numpy.testing.assert_allclose(scores, plain_scores, rtol=1e-12, atol=1e-7)
        for b, n in enumerate(lengths):
            for i in range(k):
                p = paths[b, i, :n]
                own = start[p[0]] + end[p[-1]] + pot[b, numpy.arange(n), p].sum()
                assert own + trans[p[:-1], p[1:]].sum() == pytest.approx(scores[b, i], abs=1e-7)
            assert len({tuple(paths[b, i, :n]) for i in range(k)}) == k


def test_kbest_numpy_with_local_tags_equals_global_tags():
    """kbest_numpy over local tags (each position's tags in its own order, as kbest_exact hands
    them) finds the paths and scores of the plain recursion, over rows of many steps (the
    local transitions are looked up a chunk of steps at a time) in no order of length."""
    tags = make_tags(["PER", "LOC"], "BILUO")
    K = len(tags)
    rng = numpy.random.default_rng(5)
    allowed_t, allowed_s, allowed_e = constraints(tags, "BILUO")
    trans = numpy.where(allowed_t, rng.normal(size=(K, K)), -numpy.inf)
    start = numpy.where(allowed_s, rng.normal(size=K), -numpy.inf)
    end = numpy.where(allowed_e, rng.normal(size=K), -numpy.inf)
    lengths = numpy.array([90, 301, 1, 300, 64])
    B, T = len(lengths), 301
    pot = rng.normal(size=(B, T, K)) * 2
    pot[:, :, 0] += 2.0
    mask = numpy.arange(T)[None, :] < lengths[:, None]
    tag_ids = numpy.argsort(rng.random((B, T, K)), axis=2)  # a permutation per position
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

    pipe = light.get_pipe("crf_ner")
    pipe.candidates_key = "cands"
    try:
        doc = light("Tom Baker left Quito")
    finally:
        pipe.candidates_key = None
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

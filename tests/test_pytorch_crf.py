"""The CRF against brute force over every tag sequence, on small random cases."""
import itertools

import numpy
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from spacy_bert_crf.layers.pytorch_crf import CRF
from spacy_bert_crf.tag_schemes import constraints, is_valid, make_tags, spans_to_tag_ids, tags_to_spans

# (scheme, labels) pairs with at most 6 tags: BIO with 1-2 labels (3/5 tags), BILUO with 1 (5).
CASES = [("BIO", ["PER"]), ("BIO", ["PER", "LOC"]), ("BILUO", ["PER"])]


def make_crf(scheme, labels, objective, seed):
    tags = make_tags(labels, scheme)
    torch.manual_seed(seed)
    crf = CRF(*constraints(tags, scheme), objective=objective).double()
    if objective == "crf":
        with torch.no_grad():
            for p in (crf.transitions, crf.start, crf.end):
                p.normal_(0, 1.0)
    return crf, tags


def path_score(crf, pot, path):
    trans, start, end = crf._scores(float("-inf"))
    s = start[path[0]] + pot[0, path[0]]
    for a, b in zip(path, path[1:]):
        s = s + trans[a, b]
    for t, b in enumerate(path[1:], 1):
        s = s + pot[t, b]
    return s + end[path[-1]]


def all_valid_paths(tags, scheme, T):
    return [p for p in itertools.product(range(len(tags)), repeat=T)
            if is_valid([tags[i] for i in p], scheme)]


@st.composite
def problems(draw):
    scheme, labels = draw(st.sampled_from(CASES))
    objective = draw(st.sampled_from(["crf", "softmax"]))
    lengths = draw(st.lists(st.integers(1, 5), min_size=1, max_size=3))
    seed = draw(st.integers(0, 10_000))
    return scheme, labels, objective, lengths, seed


def batch(crf, lengths, seed):
    gen = torch.Generator().manual_seed(seed)
    T = max(lengths)
    em = torch.randn(len(lengths), T, crf.num_tags, generator=gen, dtype=torch.float64) * 2
    mask = torch.tensor([[t < n for t in range(T)] for n in lengths])
    return em, mask


@settings(max_examples=60, deadline=None)
@given(problems())
def test_viterbi_partition_marginals_match_brute_force(problem):
    scheme, labels, objective, lengths, seed = problem
    crf, tags = make_crf(scheme, labels, objective, seed)
    em, mask = batch(crf, lengths, seed)
    best = crf.viterbi(em, mask)
    log_z = crf.log_partition(em, mask)
    margs = crf.marginals(em, mask)
    for b, n in enumerate(lengths):
        pot = crf.potentials(em[b : b + 1, :n])[0]
        paths = all_valid_paths(tags, scheme, n)
        scores = torch.stack([path_score(crf, pot, p) for p in paths])
        decoded = tuple(best[b, :n].tolist())
        assert is_valid([tags[i] for i in decoded], scheme)
        assert path_score(crf, pot, decoded).item() == pytest.approx(scores.max().item(), abs=1e-9)
        assert log_z[b].item() == pytest.approx(torch.logsumexp(scores, 0).item(), abs=1e-8)
        probs = (scores - torch.logsumexp(scores, 0)).exp()
        brute = torch.zeros(n, len(tags), dtype=torch.float64)
        for p, pr in zip(paths, probs):
            brute[torch.arange(n), torch.tensor(p)] += pr
        assert torch.allclose(margs[b, :n], brute, atol=1e-8)
        assert torch.allclose(margs[b, :n].sum(1), torch.ones(n, dtype=torch.float64))
        assert float(margs[b, n:].abs().sum()) == 0.0


@settings(max_examples=60, deadline=None)
@given(problems(), st.data())
def test_partial_annotation_numerator_and_span_probs(problem, data):
    scheme, labels, objective, lengths, seed = problem
    crf, tags = make_crf(scheme, labels, objective, seed)
    em, mask = batch(crf, lengths, seed)
    T = em.shape[1]
    allowed = torch.ones(len(lengths), T, len(tags), dtype=torch.bool)
    for b, n in enumerate(lengths):
        for t in range(n):
            if data.draw(st.booleans()):  # annotated position: exactly one tag
                k = data.draw(st.integers(0, len(tags) - 1))
                allowed[b, t] = False
                allowed[b, t, k] = True
    nll = crf(em, mask, allowed)
    for b, n in enumerate(lengths):
        pot = crf.potentials(em[b : b + 1, :n])[0]
        paths = all_valid_paths(tags, scheme, n)
        scores = torch.stack([path_score(crf, pot, p) for p in paths])
        log_z = torch.logsumexp(scores, 0)
        if objective == "crf":
            ok = [i for i, p in enumerate(paths) if all(allowed[b, t, k] for t, k in enumerate(p))]
            if not ok:  # the annotation admits no valid path: the loss is huge, not NaN
                # (the forward recursion floors a step's total mass at 1e-30, i.e. log -69)
                assert numpy.isfinite(nll[b].item()) and nll[b].item() > 60
                continue
            expected = log_z - torch.logsumexp(scores[ok], 0)
        else:
            logp = em[b, :n].log_softmax(-1)
            expected = -sum(torch.logsumexp(logp[t][allowed[b, t]], 0) for t in range(n))
        assert nll[b].item() == pytest.approx(expected.item(), abs=1e-7)
        # Span probability = total mass of the valid paths whose spans include exactly that one.
        probs = (scores - log_z).exp()
        decoded = crf.viterbi(em[b : b + 1, :n], mask[b : b + 1, :n])[0].tolist()
        spans = tags_to_spans([tags[i] for i in decoded], scheme)
        queries = [(0, s, e, spans_to_tag_ids(n, [(s, e, lab)], tags, scheme)[s:e]) for s, e, lab in spans]
        got = crf.span_log_probs(em[b : b + 1, :n], mask[b : b + 1, :n], queries, scheme=scheme)
        for (s, e, lab), lp in zip(spans, got):
            mass = sum(pr for p, pr in zip(paths, probs)
                       if (s, e, lab) in tags_to_spans([tags[i] for i in p], scheme))
            assert numpy.exp(lp) == pytest.approx(float(mass.detach()), abs=1e-8)


def test_gradcheck_nll_float64():
    crf, tags = make_crf("BILUO", ["PER", "LOC"], "crf", 0)
    em, mask = batch(crf, [4, 2, 3], 1)
    em.requires_grad_(True)
    allowed = torch.ones(3, 4, len(tags), dtype=torch.bool)
    allowed[0, 0] = False
    allowed[0, 0, 0] = True  # first token of row 0 annotated as O, the rest missing

    assert torch.autograd.gradcheck(lambda e: crf(e, mask, allowed), (em,))
    params = tuple(p.detach().clone().requires_grad_(True) for p in (crf.transitions, crf.start, crf.end))

    def g(trans, start, end):
        weights = {"transitions": trans, "start": start, "end": end}
        return torch.func.functional_call(crf, weights, (em.detach(), mask, allowed))

    assert torch.autograd.gradcheck(g, params)


def test_no_invalid_path_even_with_adversarial_emissions():
    tags = make_tags(["PER", "LOC", "ORG", "MISC"], "BILUO")
    crf = CRF(*constraints(tags, "BILUO"))
    em = torch.full((1, 6, len(tags)), -50.0)
    em[0, :, tags.index("I-PER")] = 100.0  # every position wants an invalid I- tag
    em[0, 2, tags.index("L-LOC")] = 100.0
    path = crf.viterbi(em, torch.ones(1, 6, dtype=torch.bool))[0].tolist()
    assert is_valid([tags[i] for i in path], "BILUO")


def test_bad_shapes_raise_clear_errors():
    crf = CRF(*constraints(make_tags(["PER"], "BIO"), "BIO"))
    with pytest.raises(ValueError, match="emissions of shape"):
        crf.viterbi(torch.zeros(1, 2, 7), torch.ones(1, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="at least one position"):
        crf.viterbi(torch.zeros(1, 2, 3), torch.zeros(1, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="objective"):
        CRF(*constraints(make_tags(["PER"], "BIO"), "BIO"), objective="hinge")

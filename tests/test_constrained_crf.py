"""The CRF against brute force over every tag sequence, on small random cases."""
import copy
import itertools

import numpy
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from spacy_bert_crf.layers import constrained_crf, crf_decode, crf_viterbi
from spacy_bert_crf.layers.constrained_crf import ConstrainedCRF
from spacy_bert_crf.tag_schemes import (
    constraints,
    continuations,
    make_tags,
    tags_to_spans,
)

from .util import is_valid, spans_to_tag_ids

# (scheme, labels) pairs with at most 6 tags: BIO with 1-2 labels (3/5 tags), BILUO with 1 (5).
CASES = [("BIO", ["PER"]), ("BIO", ["PER", "LOC"]), ("BILUO", ["PER"])]


def crf_for(tags, scheme, **kwargs):
    """The CRF with the constraints the crf_ner pipe hands it for these tags."""
    return ConstrainedCRF(*constraints(tags, scheme), continuations(tags, scheme), **kwargs)


def make_crf(scheme, labels, objective, seed):
    tags = make_tags(labels, scheme)
    torch.manual_seed(seed)
    crf = crf_for(tags, scheme, objective=objective).double()
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
        queries = [
            (0, s, e, spans_to_tag_ids(n, [(s, e, lab)], tags, scheme)[s:e]) for s, e, lab in spans
        ]
        got = crf.span_log_probs(em[b : b + 1, :n], mask[b : b + 1, :n], queries)
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
    params = tuple(
        p.detach().clone().requires_grad_(True) for p in (crf.transitions, crf.start, crf.end)
    )

    def g(trans, start, end):
        weights = {"transitions": trans, "start": start, "end": end}
        return torch.func.functional_call(crf, weights, (em.detach(), mask, allowed))

    assert torch.autograd.gradcheck(g, params)


def test_no_invalid_path_even_with_adversarial_emissions():
    tags = make_tags(["PER", "LOC", "ORG", "MISC"], "BILUO")
    crf = crf_for(tags, "BILUO")
    em = torch.full((1, 6, len(tags)), -50.0)
    em[0, :, tags.index("I-PER")] = 100.0  # every position wants an invalid I- tag
    em[0, 2, tags.index("L-LOC")] = 100.0
    path = crf.viterbi(em, torch.ones(1, 6, dtype=torch.bool))[0].tolist()
    assert is_valid([tags[i] for i in path], "BILUO")


def test_bad_shapes_raise_clear_errors():
    crf = crf_for(make_tags(["PER"], "BIO"), "BIO")
    with pytest.raises(ValueError, match="emissions of shape"):
        crf.viterbi(torch.zeros(1, 2, 7), torch.ones(1, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="at least one position"):
        crf.viterbi(torch.zeros(1, 2, 3), torch.zeros(1, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="objective"):
        crf_for(make_tags(["PER"], "BIO"), "BIO", objective="hinge")


# ------------------------------------------------------------------------------------------
# decoding on the CPU runs in numpy (issue 18): same paths as the torch recursion, no per-step
# torch ops (each would go through torch's intra-op thread pool, which stalls on a busy CPU)
# ------------------------------------------------------------------------------------------

DECODE_CASES = [("BIO", ["PER"]), ("BIO", ["PER", "LOC"]), ("BILUO", ["LOC", "MISC", "ORG", "PER"])]


def random_decode_problem(rng, scheme, labels, objective, dtype, ties):
    """A CRF with random scores, and a ragged batch whose emissions may tie and hold _NEG."""
    tags = make_tags(labels, scheme)
    crf = crf_for(tags, scheme, objective=objective).to(dtype)
    K = len(tags)
    B, T = int(rng.integers(1, 6)), int(rng.integers(1, 30))
    lengths = rng.integers(1, T + 1, size=B)
    lengths[rng.integers(B)] = T
    if ties:  # few distinct values: many equal scores, so the tie-breaking must agree too
        em = rng.integers(-2, 3, size=(B, T, K)).astype(float)
        params = [rng.integers(-1, 2, size=p.shape).astype(float) for p in (crf.start, crf.end)]
        params.append(rng.integers(-1, 2, size=(K, K)).astype(float))
    else:
        em = rng.normal(0, 3, size=(B, T, K))
        params = [rng.normal(0, 1, size=p.shape) for p in (crf.start, crf.end, crf.transitions)]
    em[rng.random((B, T, K)) < 0.15] = -1.0e4  # tags the pipe rules out (crf.py's _NEG)
    with torch.no_grad():
        for p, value in zip((crf.start, crf.end, crf.transitions), params):
            p.copy_(torch.as_tensor(value))
    mask = torch.as_tensor(numpy.arange(T)[None, :] < lengths[:, None])
    return crf, torch.as_tensor(em, dtype=dtype), mask


@pytest.fixture
def torch_path(monkeypatch):
    """Within the block: decode with the torch recursions, as on a GPU (and before issue 18)."""

    class Switch:
        def __enter__(self):
            monkeypatch.setattr(constrained_crf, "_in_numpy", lambda tensor: False)

        def __exit__(self, *exc):
            monkeypatch.undo()

    return Switch()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("ties", [False, True])
def test_numpy_viterbi_equals_torch_viterbi(dtype, ties, torch_path):
    rng = numpy.random.default_rng(18 + ties)
    for i in range(30):
        scheme, labels = DECODE_CASES[i % len(DECODE_CASES)]
        objective = "softmax" if i % 4 == 3 else "crf"
        crf, em, mask = random_decode_problem(rng, scheme, labels, objective, dtype, ties)
        got = crf.viterbi(em, mask)
        with torch_path:
            expected = crf.viterbi(em, mask)
        assert got.dtype == expected.dtype == torch.long
        assert torch.equal(got, expected), (i, scheme, objective)
        tags = make_tags(labels, scheme)
        for row, n in enumerate(mask.sum(1).tolist()):
            assert is_valid([tags[k] for k in got[row, :n].tolist()], scheme)
            assert got[row, n:].eq(0).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_numpy_chain_equals_torch_chain(dtype, torch_path):
    """forward_backward, marginals and span_log_probs: numpy vs the torch recursions in float64,
    on ragged batches with ruled-out tags. The numpy path runs in float64 whatever the input
    (float32 emissions as from the pipe): the torch path in float32 is off by up to ~1e-3 in
    log probability, the numpy path is not."""
    rng = numpy.random.default_rng(5)
    for i in range(18):
        scheme, labels = DECODE_CASES[i % len(DECODE_CASES)]
        objective = "softmax" if i % 4 == 3 else "crf"
        crf, em, mask = random_decode_problem(rng, scheme, labels, objective, dtype, False)
        tags = make_tags(labels, scheme)
        paths = crf.viterbi(em, mask)
        queries = []
        for row, n in enumerate(mask.sum(1).tolist()):
            path = paths[row, :n].tolist()
            spans = tags_to_spans([tags[k] for k in path], scheme)
            queries += [(row, s, e, path[s:e]) for s, e, _ in spans]
        got = (crf.forward_backward(em, mask), crf.marginals(em, mask))
        got_spans = crf.span_log_probs(em, mask, queries)
        crf64, em64 = copy.deepcopy(crf).double(), em.double()
        with torch_path:
            expected = (crf64.forward_backward(em64, mask), crf64.marginals(em64, mask))
            expected_spans = crf64.span_log_probs(em64, mask, queries)
        # float32 results are float64 ones rounded (softmax: potentials computed in float32)
        tol = 1e-10 if dtype == torch.float64 else 1e-5
        (alpha, beta, log_z), marg = got
        (alpha_ref, beta_ref, log_z_ref), marg_ref = expected
        real = mask.unsqueeze(2).expand_as(alpha)
        for x, ref in ((alpha, alpha_ref), (beta, beta_ref), (log_z, log_z_ref), (marg, marg_ref)):
            assert x.dtype == dtype
            finite = ref.isfinite() & (real if x.dim() == 3 else True)
            assert torch.equal(x.isfinite() & finite, finite)
            assert torch.allclose(x[finite].double(), ref[finite], rtol=tol, atol=tol)
        assert got_spans == pytest.approx(expected_spans, abs=tol)


def test_numpy_chain_large_batch_without_blas(torch_path):
    """Past _BLAS_ONE_THREAD the per-step product is einsum's; the result is the same."""
    tags = make_tags(["LOC", "MISC", "ORG", "PER"], "BILUO")
    crf = crf_for(tags, "BILUO").double()
    gen = torch.Generator().manual_seed(0)
    B = crf_decode._BLAS_ONE_THREAD // len(tags) ** 2 + 1
    em = torch.randn(B, 6, len(tags), generator=gen, dtype=torch.float64) * 3
    mask = torch.arange(6)[None, :] < torch.randint(1, 7, (B,), generator=gen)[:, None]
    mask[:, 0] = True
    assert crf._numpy_chain(em, mask).product is not numpy.dot
    got = crf.marginals(em, mask)
    with torch_path:
        expected = crf.marginals(em, mask)
    assert torch.allclose(got, expected, atol=1e-10)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_numpy_decoding_fast_paths_equal_torch(dtype, torch_path):
    """The numpy recursions' fast paths give the torch recursions' results: one long row (one
    row: views made once, potentials folded into the transitions chunk by chunk) with padding
    after it, and a batch of many rows in no order of length (run longest first, each step over
    the rows still running) whose padding outlasts every row."""
    tags = make_tags(["LOC", "MISC", "ORG", "PER"], "BILUO")
    crf = crf_for(tags, "BILUO").to(dtype)
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in (crf.transitions, crf.start, crf.end):
            p.copy_(torch.randn(p.shape, generator=gen, dtype=dtype))
    long_row = torch.arange(1300)[None, :] < torch.tensor([[1250]])
    lengths = torch.randint(1, 30, (41,), generator=gen)
    lengths[7] = 1
    many_rows = torch.arange(33)[None, :] < lengths[:, None]
    assert not (lengths[1:] <= lengths[:-1]).all()
    for mask in (long_row, many_rows):
        em = torch.randn(*mask.shape, len(tags), generator=gen, dtype=dtype) * 3
        em[:, :, 0] += 2.0
        em[torch.rand(em.shape, generator=gen) < 0.1] = -1.0e4  # tags the pipe rules out
        got = (crf.viterbi(em, mask), crf.marginals(em, mask), crf.forward_backward(em, mask))
        crf64, em64 = copy.deepcopy(crf).double(), em.double()
        with torch_path:
            paths = crf.viterbi(em, mask)
            marg = crf64.marginals(em64, mask)
            alpha, beta, log_z = crf64.forward_backward(em64, mask)
        assert torch.equal(got[0], paths)
        real = mask.unsqueeze(2).expand_as(marg)
        tol = 1e-9 if dtype == torch.float64 else 1e-5
        assert torch.allclose(got[1][real].double(), marg[real], atol=tol)
        for x, ref in zip(got[2][:2], (alpha, beta)):
            finite = ref.isfinite() & real
            assert torch.allclose(x[finite].double(), ref[finite], rtol=tol, atol=tol)
        assert torch.allclose(got[2][2].double(), log_z, rtol=tol, atol=tol)


def test_row_order_runs_rows_longest_first():
    """RowOrder: the rows still running at step t are the first running[t] after sorting, and
    the time-major and batch-major layouts are each other's inverse (also reversed rows)."""
    lengths = numpy.array([3, 5, 1, 5, 2])
    mask = numpy.arange(6)[None, :] < lengths[:, None]
    rows = crf_viterbi.RowOrder.of(mask)
    assert rows.running == [5, 4, 3, 2, 2, 0]
    assert rows.lengths.tolist() == [5, 5, 3, 2, 1]
    x = numpy.arange(5 * 6 * 2, dtype=float).reshape(5, 6, 2)
    tm = rows.time_major(x)
    assert tm.shape == (6, 5, 2) and tm.flags.c_contiguous
    assert numpy.array_equal(tm[:, 0], x[1]) and numpy.array_equal(tm[:, 4], x[2])
    assert numpy.array_equal(rows.batch_major(tm), x)
    flat = tm.reshape(-1, 2)
    reversed_rows = flat[rows.reversed_index()]  # each row reversed within its length
    assert numpy.array_equal(reversed_rows[:3, 2], x[0, 2::-1])
    assert numpy.array_equal(reversed_rows[3:, 2], x[0, 3:])
    assert numpy.array_equal(rows.batch_major(reversed_rows, reversed_rows=True), x)
    in_order = crf_viterbi.RowOrder.of(mask[[1, 3, 0, 4, 2]])
    assert in_order.order is None and in_order.running == rows.running


class CountTorchCalls(torch.overrides.TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self.calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.calls += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("method", ["viterbi", "marginals", "forward_backward", "span_log_probs"])
def test_cpu_decoding_runs_no_torch_op_per_step(method):
    """The number of torch calls does not grow with the length: the recursions are numpy's."""
    tags = make_tags(["PER", "LOC"], "BILUO")
    crf = crf_for(tags, "BILUO")
    counts = []
    for length in (5, 200):
        em = torch.randn(2, length, len(tags))
        mask = torch.ones(2, length, dtype=torch.bool)
        args = (em, mask, [(0, 0, 1, [0])]) if method == "span_log_probs" else (em, mask)
        kwargs = {}
        with CountTorchCalls() as mode:
            getattr(crf, method)(*args, **kwargs)
        counts.append(mode.calls)
    assert counts[0] == counts[1] < 100


def test_decoding_leaves_torch_threads_alone():
    tags = make_tags(["PER"], "BIO")
    crf = crf_for(tags, "BIO")
    before = torch.get_num_threads()
    em, mask = torch.randn(1, 50, len(tags)), torch.ones(1, 50, dtype=torch.bool)
    crf.viterbi(em, mask)
    crf.span_log_probs(em, mask, [(0, 0, 1, [1])])
    assert torch.get_num_threads() == before


def test_constraint_shapes_are_checked():
    tags = make_tags(["PER"], "BIO")
    trans, start, end = constraints(tags, "BIO")
    for bad in ((trans[:2, :2], start, end), (trans, start[:2], end), (trans, start, end[:2])):
        with pytest.raises(ValueError, match="Constraint shapes do not match"):
            ConstrainedCRF(*bad)

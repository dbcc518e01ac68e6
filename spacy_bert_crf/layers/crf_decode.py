"""CRF decoding on the CPU in numpy: Viterbi, the forward-backward recursions, and from them the
probabilities of entity spans (the confidences of the entities found, and candidate spans).

A decoding step is a handful of ops on (batch, K, K) arrays, far too small for threads. torch
would still hand each op to its intra-op thread pool, and on a machine whose cores are busy
every op then waits for a thread to be scheduled (milliseconds instead of microseconds). numpy
runs them in the calling thread, and no global thread setting is touched. `viterbi_numpy` gives
exactly the paths of the torch recursion in `crf_chain` (same dtype, same additions, the
first maximum on ties; in crf_viterbi.py); the forward-backward pass runs in float64.

What a step costs is mostly numpy's fixed cost per call, so the recursions keep the calls per
step few and allocate nothing per step: the rows of a batch are processed longest first, so that
the rows still running at a step are a prefix of the batch (a batch of short sentences costs its
real tokens, not its padding), into buffers allocated once (`out=`); the best score of each
(row, tag) is read at its argmax (`take`) rather than reduced a second time.
"""
import functools
import math
from typing import Any, Callable, Optional, Tuple

import numpy

from .crf_viterbi import RowOrder

# Sums of probabilities below this are treated as this (log -69): keeps log() finite where no
# valid path reaches a position (an impossible partial annotation); such sequences get a huge but
# finite loss instead of NaN.
TINY = 1.0e-30
# Products with at most this many multiply-adds (batch x K x K) run in the calling thread in
# the common BLAS libraries (OpenBLAS, numpy's, splits a GEMM across threads only above
# 4 x 65536); larger batches use einsum, which never starts threads.
_BLAS_ONE_THREAD = 65536


def batch_product(B: int, K: int) -> Callable[..., Any]:
    """The product (B, K) @ (K, K) -> out of a recursion step, in the calling thread: numpy.dot
    where every common BLAS runs it there (B K K <= _BLAS_ONE_THREAD), einsum otherwise."""
    if B * K * K <= _BLAS_ONE_THREAD:
        return numpy.dot
    return functools.partial(numpy.einsum, "bi,ij->bj")


class NumpyChain:
    """The recursions of `crf_chain.TorchChain` in numpy, time-major inside, for decoding on
    the CPU.

    The same scaled probability space and shifts as `crf_chain.TorchChain`, in the dtype of the
    inputs (float64 from the CRF). The rows run longest first (RowOrder), each step over the
    rows still running; results are returned in the rows' own order. The per-step product uses
    BLAS only where the batch is small enough for every BLAS to run it in the calling thread,
    and einsum's own loop otherwise. Positions past a row's end hold finite values of no meaning.
    """

    def __init__(
        self,
        pot: numpy.ndarray,
        mask: numpy.ndarray,
        trans: numpy.ndarray,
        start: numpy.ndarray,
        end: numpy.ndarray,
    ) -> None:
        """pot (B, T, K), mask (B, T) bool, trans (K, K), start (K,), end (K,)."""
        B, T, K = pot.shape
        self.pot, self.trans, self.mask = pot, trans, mask
        self.T = T
        self.rows = numpy.arange(B)
        self.last = mask.sum(1) - 1
        self.order = RowOrder.of(mask)
        self.trans_max = trans.max()
        self.exp_trans = numpy.exp(trans - self.trans_max)
        shifted = self.order.time_major(pot, copy=True)  # (T, B, K), rows sorted
        shifted[0] += start
        self.pot_max = shifted.max(2)  # (T, B)
        shifted -= self.pot_max[:, :, None]
        self.exp_pot = numpy.exp(shifted, out=shifted)
        self.end_max = end.max()
        self.exp_end = numpy.exp(end - self.end_max)
        self.product = batch_product(B, K)
        self._forward: Optional[Tuple[numpy.ndarray, numpy.ndarray]] = None
        self._backward: Optional[Tuple[numpy.ndarray, numpy.ndarray]] = None

    def _recursion(
        self, first: numpy.ndarray, steps: numpy.ndarray, backward: bool
    ) -> Tuple[numpy.ndarray, numpy.ndarray]:
        """forward: h_0 = first * steps[0], h_u = (h_{u-1} @ exp_trans) * steps[u]; backward:
        h_0 = first, h_u = (steps[u - 1] * h_{u-1}) @ exp_trans.T; each h_u normalised to sum 1
        (clamped at TINY, but for a backward h_0).

        steps (T, B, K), rows sorted; returns h (T, B, K) and log of the normalisers (T, B),
        each 0 / uniform past a row's end.
        """
        T, B, K = steps.shape
        running = self.order.running
        out = numpy.full_like(steps, 1.0 / K)
        norms = numpy.ones((T, B, 1), dtype=steps.dtype)
        numpy.multiply(first, 1.0 if backward else steps[0], out=out[0])
        out[0].sum(1, keepdims=True, out=norms[0])
        if not backward:
            numpy.maximum(norms[0], TINY, out=norms[0])
        numpy.divide(out[0], norms[0], out=out[0])
        matrix = self.exp_trans.T if backward else self.exp_trans
        if B == 1:
            recursion_one_row(out[:, 0], norms[:, 0, 0], steps[:, 0], matrix, backward)
            return out, numpy.log(norms[:, :, 0])
        product = self.product
        scaled = numpy.empty((B, K), dtype=steps.dtype)
        for u in range(1, T):
            n = running[u]
            if not n:
                break
            h, norm = out[u, :n], norms[u, :n]
            if backward:
                x = scaled[:n]
                numpy.multiply(steps[u - 1, :n], out[u - 1, :n], out=x)
                product(x, matrix, out=h)
            else:
                product(out[u - 1, :n], matrix, out=h)
                numpy.multiply(h, steps[u, :n], out=h)
            h.sum(1, keepdims=True, out=norm)
            numpy.maximum(norm, TINY, out=norm)
            numpy.divide(h, norm, out=h)
        return out, numpy.log(norms[:, :, 0])

    def _forward_sorted(self) -> Tuple[numpy.ndarray, numpy.ndarray]:
        """Normalised alphas (T, B, K) and log of their scale (T, B), rows sorted."""
        if self._forward is None:
            a_hat, log_norms = self._recursion(numpy.ones(1), self.exp_pot, backward=False)
            log_norms += self.pot_max
            log_a = log_norms.cumsum(0)
            log_a += (numpy.arange(self.T) * self.trans_max)[:, None]
            self._forward = a_hat, log_a
        return self._forward

    def _backward_sorted(self) -> Tuple[numpy.ndarray, numpy.ndarray]:
        """Normalised betas (T, B, K) and log of their scale (T, B), rows sorted, each row
        reversed within its length (position u holds the row's position length - 1 - u), as
        `_Chain.backward` runs."""
        if self._backward is None:
            rev = self.order.reversed_index()
            exp_pot = numpy.take(self.exp_pot.reshape(-1, self.exp_pot.shape[2]), rev, 0)
            b_rev, log_norms = self._recursion(self.exp_end, exp_pot, backward=True)
            pot_max = numpy.take(self.pot_max.reshape(-1), rev)
            log_norms[1:] += pot_max[:-1]
            log_scale = log_norms.cumsum(0)
            log_scale += (numpy.arange(self.T) * self.trans_max + self.end_max)[:, None]
            self._backward = b_rev, log_scale
        return self._backward

    def _log_z_sorted(self) -> numpy.ndarray:
        a_hat, log_a = self._forward_sorted()
        last, rows = self.order.lengths - 1, self.rows
        final = a_hat[last, rows]
        total = numpy.maximum((final * self.exp_end).sum(1), TINY)
        return numpy.log(total) + self.end_max + log_a[last, rows]

    def log_z(self) -> numpy.ndarray:
        """log Z (B,), from the forward pass alone."""
        return self.order.rows(self._log_z_sorted())

    def log_alpha_beta(self) -> Tuple[numpy.ndarray, numpy.ndarray, numpy.ndarray]:
        """log alpha (B, T, K), log beta (B, T, K) and log Z (B,)."""
        a_hat, log_a = self._forward_sorted()
        b_rev, log_b = self._backward_sorted()
        with numpy.errstate(divide="ignore"):  # a tag no valid path reaches: log 0 = -inf
            log_alpha = numpy.log(a_hat)
            log_alpha += log_a[:, :, None]
            log_beta = numpy.log(b_rev)
            log_beta += log_b[:, :, None]
        log_beta = self.order.batch_major(log_beta, reversed_rows=True)
        return self.order.batch_major(log_alpha), log_beta, self.log_z()

    def marginals(self) -> numpy.ndarray:
        """P(y_t = k), (B, T, K), at real positions, 0 at padding."""
        a_hat = self.order.batch_major(self._forward_sorted()[0])
        prod = self.order.batch_major(self._backward_sorted()[0], reversed_rows=True)
        prod *= a_hat
        total = numpy.maximum(prod.sum(2, keepdims=True), TINY)
        return prod / total * self.mask[:, :, None]


def recursion_one_row(
    out: numpy.ndarray,
    norms: numpy.ndarray,
    steps: numpy.ndarray,
    matrix: numpy.ndarray,
    backward: bool,
    chunk: int = 512,
) -> None:
    """NumpyChain._recursion for one row (a long document), out (T, K) and norms (T,) in place
    from out[0]: the step's potentials are folded into the transition matrix for a chunk of
    steps at a time (one vectorised product), so that a step is a vector-matrix product, a sum
    and a scaling, with the normaliser a Python float."""
    T, K = steps.shape
    rows = list(out)
    ones = numpy.ones(K, dtype=out.dtype)
    for first in range(1, T, chunk):
        stop = min(T, first + chunk)
        if backward:  # (steps[u - 1] * h) @ matrix = h @ (steps[u - 1][:, None] * matrix)
            folded = steps[first - 1 : stop - 1, :, None] * matrix
        else:  # (h @ matrix) * steps[u] = h @ (matrix * steps[u][None, :])
            folded = matrix * steps[first:stop, None, :]
        for u, m in zip(range(first, stop), folded):
            h = rows[u]
            numpy.dot(rows[u - 1], m, out=h)
            norm = max(float(numpy.dot(h, ones)), TINY)
            norms[u] = norm
            h *= 1.0 / norm


def entity_log_probs(
    log_alpha: numpy.ndarray,
    log_beta: numpy.ndarray,
    log_z: numpy.ndarray,
    pot: numpy.ndarray,
    trans: numpy.ndarray,
    continuation: numpy.ndarray,
    lengths: numpy.ndarray,
    spans,
) -> numpy.ndarray:
    """log P(exactly this span, with these tags) for each (row, start, end, tag ids), as
    `constrained_crf.ConstrainedCRF.span_log_probs` computes it, from precomputed log alphas and
    betas (B, T, K), log Z (B,) and the potentials (B, T, K) and transitions (K, K)."""
    out = numpy.empty(len(spans))
    for n, (row, start, stop, tags) in enumerate(spans):
        last = stop - 1
        score = log_alpha[row, start, tags[0]] - log_z[row]
        for t in range(start + 1, stop):
            score += trans[tags[t - start - 1], tags[t - start]] + pot[row, t, tags[t - start]]
        score += _tail(log_beta, pot, trans, continuation, lengths, row, last, tags[-1])
        out[n] = score
    return out


def _tail(log_beta, pot, trans, continuation, lengths, row, last, tag) -> float:
    """The log mass after an entity ending on `tag` at `last`, the entity not continued."""
    cont = continuation[tag]
    if cont < 0 or last == lengths[row] - 1:
        return float(log_beta[row, last, tag])
    nxt = trans[tag] + pot[row, last + 1] + log_beta[row, last + 1]
    return float(numpy.logaddexp.reduce(numpy.delete(nxt, cont)))


def candidate_spans(
    log_alpha: numpy.ndarray,
    log_beta: numpy.ndarray,
    log_z: numpy.ndarray,
    pot: numpy.ndarray,
    trans: numpy.ndarray,
    continuation: numpy.ndarray,
    lengths: numpy.ndarray,
    patterns: numpy.ndarray,
    max_length: int,
    threshold: float,
) -> Tuple[numpy.ndarray, numpy.ndarray, numpy.ndarray, numpy.ndarray, numpy.ndarray]:
    """Every entity span of at most max_length tokens, of every label, whose probability of
    being exactly that entity is >= threshold (and > 0): rows, starts, ends, label indices and
    probabilities, as arrays.

    patterns (4, n_labels): per label the tag ids single, first, middle, last (a one-token
    entity is `single`; longer ones are first, middle * (length - 2), last). Each length costs a
    few array operations over (B, T, n_labels): the scores of an entity's first and middle tags
    are carried from one length to the next, so the whole is O(B T max_length n_labels).
    """
    single, first, middle, last = patterns
    B, T, _ = pot.shape
    tail_single = _tails_per_label(log_beta, pot, trans, continuation, lengths, single)
    tail_last = _tails_per_label(log_beta, pot, trans, continuation, lengths, last)
    pot_middle, pot_last = pot[:, :, middle], pot[:, :, last]
    log_z = log_z[:, None, None]
    floor = math.log(threshold) if threshold > 0 else -numpy.inf
    found = []
    inner = numpy.empty((B, 0, len(single)))  # first and middle tags' scores, per length
    for length in range(1, min(max_length, T) + 1):
        n = T - length + 1
        if length == 1:
            log_p = log_alpha[:, :, single] + tail_single - log_z
        else:
            if length == 2:
                inner = log_alpha[:, : T - 1, first]
            else:
                step = trans[first, middle] if length == 3 else trans[middle, middle]
                inner = inner[:, :n] + step + pot_middle[:, length - 2 : length - 2 + n]
            log_p = (inner[:, :n] + trans[middle if length > 2 else first, last]
                     + pot_last[:, length - 1 :] + tail_last[:, length - 1 :] - log_z)
        fits = numpy.arange(n)[None, :] + length <= lengths[:, None]
        keep = (log_p >= floor) & (log_p > _LOG_TINY) & fits[:, :, None]
        rows, starts, labels = numpy.nonzero(keep)
        probs = numpy.exp(numpy.minimum(log_p[rows, starts, labels], 0.0))
        found.append((rows, starts, starts + length, labels, probs))
    if not found:
        empty = numpy.zeros(0, dtype=numpy.int64)
        return empty, empty, empty, empty, numpy.zeros(0)
    return tuple(numpy.concatenate(parts) for parts in zip(*found))  # type: ignore


# log of the least probability a candidate span may have (below: 0 after exp, or nearly)
_LOG_TINY = math.log(TINY)


def _tails_per_label(log_beta, pot, trans, continuation, lengths, tags) -> numpy.ndarray:
    """_tails at every position for each of `tags`, (B, T, len(tags))."""
    return numpy.stack(
        [_tails(log_beta, pot, trans, continuation, lengths, tag) for tag in tags], 2
    )


def _tails(log_beta, pot, trans, continuation, lengths, tag) -> numpy.ndarray:
    """_tail at every position for one tag, (B, T)."""
    cont = continuation[tag]
    base = log_beta[:, :, tag]
    if cont < 0:
        return base
    keep = numpy.arange(len(continuation)) != cont
    nxt = trans[tag, keep][None, None, :] + pot[:, 1:, keep] + log_beta[:, 1:, keep]
    out = base.copy()
    with numpy.errstate(invalid="ignore"):
        out[:, :-1] = numpy.logaddexp.reduce(nxt, axis=2)
    rows = numpy.arange(len(lengths))
    out[rows, lengths - 1] = base[rows, lengths - 1]
    return out

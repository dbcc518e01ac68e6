"""CRF decoding on the CPU in numpy: Viterbi and the forward-backward recursions.

A decoding step is a handful of ops on (batch, K, K) arrays, far too small for threads. torch
would still hand each op to its intra-op thread pool, and on a machine whose cores are busy
every op then waits for a thread to be scheduled (milliseconds instead of microseconds). numpy
runs them in the calling thread, and no global thread setting is touched. `viterbi_numpy` gives
exactly the paths of the torch recursion in `constrained_crf` (same dtype, same additions, the
first maximum on ties); the forward-backward pass runs in float64.
"""
import functools
from typing import Optional, Tuple

import numpy

# Sums of probabilities below this are treated as this (log -69): keeps log() finite where no
# valid path reaches a position (an impossible partial annotation); such sequences get a huge but
# finite loss instead of NaN.
TINY = 1.0e-30
# Products with at most this many multiply-adds (batch x K x K) run in the calling thread in
# the common BLAS libraries (OpenBLAS, numpy's, splits a GEMM across threads only above
# 4 x 65536); larger batches use einsum, which never starts threads.
_BLAS_ONE_THREAD = 65536


def viterbi_numpy(
    pot: numpy.ndarray,
    mask: numpy.ndarray,
    trans: numpy.ndarray,
    start: numpy.ndarray,
    end: numpy.ndarray,
) -> numpy.ndarray:
    """The recursion of `constrained_crf._viterbi_torch` in numpy, (B, T) int64: same dtype, same
    paths.

    Each step adds the same numbers in the same dtype and takes the first maximum on ties, as
    torch's max does. Candidates are laid out (batch, to, from) so that the reductions run over
    the contiguous last axis.
    """
    B, T, K = pot.shape
    steps = numpy.ascontiguousarray(pot.transpose(1, 0, 2))  # (T, B, K)
    trans_to_from = numpy.ascontiguousarray(trans.T)
    scores = numpy.empty_like(steps)
    backpointers = numpy.empty((T, B, K), dtype=numpy.intp)
    score = scores[0] = start + steps[0]
    for t in range(1, T):
        cand = score[:, None, :] + trans_to_from
        backpointers[t] = cand.argmax(2)
        score = scores[t] = cand.max(2) + steps[t]
    rows = numpy.arange(B)
    last = (scores[mask.sum(1) - 1, rows] + end).argmax(1)
    backpointers[1:][~mask.T[1:]] = numpy.arange(K)  # padding: identity
    path = numpy.empty((T, B), dtype=numpy.int64)
    path[T - 1] = last
    if B == 1:  # one long document: Python's list indexing beats a numpy call per step
        bps, tag, column = backpointers[:, 0].tolist(), int(last[0]), path[:, 0]
        tags = [tag]
        for t in range(T - 1, 0, -1):
            tag = bps[t][tag]
            tags.append(tag)
        column[:] = tags[::-1]
    else:
        for t in range(T - 1, 0, -1):
            last = backpointers[t, rows, last]
            path[t - 1] = last
    path = path.T
    path[~mask] = 0
    return numpy.ascontiguousarray(path)


class NumpyChain:
    """The recursions of `constrained_crf._Chain` in numpy, time-major inside, for decoding on
    the CPU.

    The same scaled probability space and shifts as `constrained_crf._Chain`, in the dtype of the
    inputs
    (float64 from the CRF). The per-step product uses BLAS only where the batch is small
    enough for every BLAS to run it in the calling thread, and einsum's own loop otherwise.
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
        self.trans_max = trans.max()
        self.exp_trans = numpy.exp(trans - self.trans_max)
        shifted = pot.copy()
        shifted[:, 0] += start
        self.pot_max = shifted.max(2)  # (B, T)
        self.exp_pot = numpy.exp(shifted - self.pot_max[:, :, None])
        self.end_max = end.max()
        self.exp_end = numpy.exp(end - self.end_max)
        if B * K * K <= _BLAS_ONE_THREAD:
            self.product = numpy.dot
        else:
            self.product = functools.partial(numpy.einsum, "bi,ij->bj")
        self._forward: Optional[Tuple[numpy.ndarray, numpy.ndarray]] = None
        self._backward: Optional[Tuple[numpy.ndarray, numpy.ndarray]] = None

    def _forward_steps(self, steps: numpy.ndarray) -> Tuple[numpy.ndarray, numpy.ndarray]:
        """h_0 = steps[0], h_u = (h_{u-1} @ exp_trans) * steps[u], each normalised to sum 1.

        steps (T, B, K); returns the normalised h (T, B, K) and the normalisers (T, B, 1).
        """
        out = numpy.empty_like(steps)
        norms = numpy.empty((*steps.shape[:2], 1), dtype=steps.dtype)
        h = out[0]
        h[...] = steps[0]
        _normalise(h, norms[0], clamp=True)
        for u in range(1, len(steps)):
            prev, h = h, out[u]
            self.product(prev, self.exp_trans, out=h)
            numpy.multiply(h, steps[u], out=h)
            _normalise(h, norms[u], clamp=True)
        return out, norms

    def _backward_steps(self, steps: numpy.ndarray) -> Tuple[numpy.ndarray, numpy.ndarray]:
        """h_0 = exp_end, h_u = (steps[u - 1] * h_{u-1}) @ exp_trans.T, each normalised."""
        out = numpy.empty_like(steps)
        norms = numpy.empty((*steps.shape[:2], 1), dtype=steps.dtype)
        h = out[0]
        h[...] = self.exp_end
        _normalise(h, norms[0], clamp=False)
        scaled = numpy.empty_like(h)
        exp_trans_t = self.exp_trans.T
        for u in range(1, len(steps)):
            prev, h = h, out[u]
            numpy.multiply(steps[u - 1], prev, out=scaled)
            self.product(scaled, exp_trans_t, out=h)
            _normalise(h, norms[u], clamp=True)
        return out, norms

    def forward(self) -> Tuple[numpy.ndarray, numpy.ndarray]:
        """Normalised alphas (T, B, K) and log of their scale (B, T)."""
        if self._forward is None:
            steps = numpy.ascontiguousarray(self.exp_pot.transpose(1, 0, 2))
            a_hat, norms = self._forward_steps(steps)
            log_norms = numpy.log(norms[:, :, 0]).cumsum(0).T
            ts = numpy.arange(self.T)
            log_a = log_norms + self.pot_max.cumsum(1) + ts * self.trans_max
            self._forward = a_hat, log_a
        return self._forward

    def backward(self) -> Tuple[numpy.ndarray, numpy.ndarray]:
        """Normalised betas (T, B, K) and log of their scale (B, T).

        Runs over each row reversed within its length, as `_Chain.backward` does.
        """
        if self._backward is None:
            ts = numpy.arange(self.T)
            rev = numpy.where(self.mask, self.last[:, None] - ts, ts)  # (B, T)
            exp_pot = numpy.take_along_axis(self.exp_pot, rev[:, :, None], 1)
            pot_max = numpy.take_along_axis(self.pot_max, rev, 1)
            steps = numpy.ascontiguousarray(exp_pot.transpose(1, 0, 2))
            b_rev, norms = self._backward_steps(steps)
            log_norms = numpy.log(norms[:, :, 0]).cumsum(0).T
            shift = numpy.concatenate([numpy.zeros_like(pot_max[:, :1]), pot_max[:, :-1]], 1)
            log_scale = log_norms + shift.cumsum(1) + ts * self.trans_max + self.end_max
            b_hat = numpy.take_along_axis(b_rev, rev.T[:, :, None], 0)
            self._backward = b_hat, numpy.take_along_axis(log_scale, rev, 1)
        return self._backward

    def log_alpha_beta(self) -> Tuple[numpy.ndarray, numpy.ndarray, numpy.ndarray]:
        """log alpha (B, T, K), log beta (B, T, K) and log Z (B,)."""
        a_hat, log_a = self.forward()
        b_hat, log_b = self.backward()
        final = a_hat[self.last, self.rows]
        total = numpy.maximum((final * self.exp_end).sum(1), TINY)
        log_z = numpy.log(total) + self.end_max + log_a[self.rows, self.last]
        with numpy.errstate(divide="ignore"):  # a tag no valid path reaches: log 0 = -inf
            log_alpha = numpy.log(a_hat.transpose(1, 0, 2)) + log_a[:, :, None]
            log_beta = numpy.log(b_hat.transpose(1, 0, 2)) + log_b[:, :, None]
        return log_alpha, log_beta, log_z

    def marginals(self) -> numpy.ndarray:
        """P(y_t = k), (B, T, K), at real positions, 0 at padding."""
        prod = (self.forward()[0] * self.backward()[0]).transpose(1, 0, 2)
        total = numpy.maximum(prod.sum(2, keepdims=True), TINY)
        return prod / total * self.mask[:, :, None]


def _normalise(h: numpy.ndarray, norm: numpy.ndarray, *, clamp: bool) -> None:
    """Divide each row of h (B, K) by its sum, written to norm (B, 1), in place."""
    h.sum(1, keepdims=True, out=norm)
    if clamp:
        numpy.maximum(norm, TINY, out=norm)
    numpy.divide(h, norm, out=h)

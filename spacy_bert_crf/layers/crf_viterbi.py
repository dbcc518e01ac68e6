"""Viterbi on the CPU in numpy, and the row order that the numpy recursions share.

A decoding step is a handful of ops on (batch, K, K) arrays, far too small for threads: numpy
runs them in the calling thread (see crf_decode.py). `viterbi_numpy` gives exactly the paths of
the torch recursion in `crf_chain.viterbi_torch` (same dtype, same additions, the first maximum
on ties). The rows of a batch are processed longest first (`RowOrder`), so that the rows still
running at a step are a prefix of the batch, into buffers allocated once (`out=`); the best
score of each (row, tag) is read at its argmax (`take`) rather than reduced a second time.
`max_product` is Viterbi's forward max-product pass (scores and backpointers).
"""
from typing import List, NamedTuple, Optional, Tuple

import numpy


class RowOrder(NamedTuple):
    """The rows of a right-padded batch sorted longest first (stable), so that the rows still
    running at step t are the first running[t] rows."""

    order: Optional[numpy.ndarray]  # (B,) sorted row -> row; None: the rows are in order already
    inverse: Optional[numpy.ndarray]  # (B,) row -> sorted row
    lengths: numpy.ndarray  # (B,) per sorted row
    running: List[int]  # (T,) rows with length > t

    @classmethod
    def of(cls, mask: numpy.ndarray) -> "RowOrder":
        """The order of the rows of mask (B, T) bool, right-padded: no sorting (order None)
        where they already are longest first."""
        B, T = mask.shape
        lengths = mask.sum(1)
        order: Optional[numpy.ndarray] = None
        inverse: Optional[numpy.ndarray] = None
        if B > 1 and numpy.any(lengths[1:] > lengths[:-1]):
            order = numpy.argsort(-lengths, kind="stable")
            inverse = numpy.empty_like(order)
            inverse[order] = numpy.arange(B)
            lengths = lengths[order]
        ended = numpy.bincount(numpy.minimum(lengths, T), minlength=T + 1)
        running = (B - numpy.cumsum(ended)[:T]).tolist()
        return cls(order, inverse, lengths, running)

    def time_index(self) -> numpy.ndarray:
        """(T, B): the flat index (row * T + position) in a (B, T) array of each time-major
        sorted (position, row)."""
        T, B = len(self.running), len(self.lengths)
        rows = numpy.arange(B) if self.order is None else self.order
        return numpy.arange(T)[:, None] + rows[None, :] * T

    def time_major(self, x: numpy.ndarray, *, copy: bool = False) -> numpy.ndarray:
        """(B, T, ...) -> (T, B, ...) with the rows sorted, C-contiguous: one copy (or none if
        not `copy` and x already has that layout: one row)."""
        if self.order is None:
            out = numpy.ascontiguousarray(x.swapaxes(0, 1))
            return out.copy() if copy and numpy.may_share_memory(out, x) else out
        B, T = x.shape[:2]
        return numpy.take(x.reshape(B * T, *x.shape[2:]), self.time_index(), 0)

    def rows(self, x: numpy.ndarray) -> numpy.ndarray:
        """Per sorted row -> per row (along the first axis)."""
        return x if self.inverse is None else x[self.inverse]

    def reversed_index(self) -> numpy.ndarray:
        """(T, B): flat index into (T, B) time-major sorted arrays of each row reversed within
        its length (past its length, a position stays where it is)."""
        T, B = len(self.running), len(self.lengths)
        ts = numpy.arange(T)[:, None]
        lengths = self.lengths[None, :]
        rev = numpy.where(ts < lengths, lengths - 1 - ts, ts)
        return rev * B + numpy.arange(B)[None, :]

    def batch_index(self, reversed_rows: bool = False) -> numpy.ndarray:
        """(B, T): the flat index (position * B + sorted row) in a (T, B) time-major sorted
        array of each row's positions, in the rows' own order (reversed_rows: the array holds
        each row reversed within its length)."""
        T, B = len(self.running), len(self.lengths)
        if reversed_rows:
            index = self.reversed_index().T  # (B sorted, T)
        else:
            index = numpy.arange(T)[None, :] * B + numpy.arange(B)[:, None]
        return index if self.inverse is None else index[self.inverse]

    def batch_major(self, x: numpy.ndarray, reversed_rows: bool = False) -> numpy.ndarray:
        """(T, B, ...) time-major with the rows sorted (and reversed within their lengths if
        reversed_rows) -> (B, T, ...) in the rows' own order and time: one take."""
        T, B = x.shape[:2]
        return numpy.take(x.reshape(T * B, *x.shape[2:]), self.batch_index(reversed_rows), 0)


def viterbi_numpy(
    pot: numpy.ndarray,
    mask: numpy.ndarray,
    trans: numpy.ndarray,
    start: numpy.ndarray,
    end: numpy.ndarray,
) -> numpy.ndarray:
    """The recursion of `crf_chain.viterbi_torch` in numpy, (B, T) int64: same dtype, same
    paths.

    Each step adds the same numbers in the same dtype and takes the first maximum on ties, as
    torch's max does. Candidates are laid out (batch, to, from) so that the reductions run over
    the contiguous last axis; the rows run longest first (RowOrder), each step over the rows
    still running.
    """
    B, T, K = pot.shape
    dtype = numpy.result_type(pot, trans, start, end)
    pot, trans, start, end = (x.astype(dtype, copy=False) for x in (pot, trans, start, end))
    rows = RowOrder.of(mask)
    steps = rows.time_major(pot)  # (T, B, K)
    scores, backpointers = max_product(steps, rows.running, trans, start)
    sorted_rows = numpy.arange(B)
    last = (scores[rows.lengths - 1, sorted_rows] + end).argmax(1)
    path = numpy.zeros((T, B), dtype=numpy.int64)
    if B == 1:  # one long document: Python's list indexing beats a numpy call per step
        n = int(rows.lengths[0])
        bps, tag = backpointers[:n, 0].tolist(), int(last[0])
        tags = [tag]
        for t in range(n - 1, 0, -1):
            tag = bps[t][tag]
            tags.append(tag)
        path[:n, 0] = tags[::-1]
    else:
        for t in range(T - 1, 0, -1):
            n = rows.running[t]
            if n:  # rows that end at t start from their last tag
                path[t, :n] = last[:n]
                last[:n] = backpointers[t, sorted_rows[:n], last[:n]]
        path[0] = last
    return numpy.ascontiguousarray(rows.rows(path.T))


def max_product(
    steps: numpy.ndarray, running: List[int], trans: numpy.ndarray, start: numpy.ndarray
) -> Tuple[numpy.ndarray, numpy.ndarray]:
    """The Viterbi scores (T, B, K) of steps (T, B, K) (time-major, the rows still running at t
    the first running[t]), score[0] = start + steps[0], score[t][j] = max_i (score[t - 1][i] +
    trans[i, j]) + steps[t][j], and the first argmax i (T, B, K) intp. Past a row's end: -inf
    (backpointers unset).

    Per step: one broadcast add into a buffer, argmax into the backpointers, a take of the
    maxima at the argmax (much cheaper than a second reduction over a short axis), an add.
    """
    T, B, K = steps.shape
    trans_to_from = numpy.ascontiguousarray(trans.T)
    scores = numpy.full_like(steps, -numpy.inf)
    bps = numpy.empty((T, B, K), dtype=numpy.intp)
    numpy.add(start, steps[0], out=scores[0])
    cand = numpy.empty((B, K, K), dtype=numpy.result_type(steps, trans))
    flat = cand.reshape(-1)
    # flat index of cand[b, j, i] is (b * K + j) * K + i
    offsets = numpy.arange(B * K, dtype=numpy.intp).reshape(B, K) * K
    index = numpy.empty((B, K), dtype=numpy.intp)
    if B == 1:  # one long document: views made once, no slicing per step
        cand_1, offsets_1, index_1 = cand[0], offsets[0], index[0]
        step_rows, bp_rows, score_rows = list(steps[:, 0]), list(bps[:, 0]), list(scores[:, 0])
        for t in range(1, T if running[T - 1] else running.index(0)):
            numpy.add(trans_to_from, score_rows[t - 1], out=cand_1)
            bp = bp_rows[t]
            cand_1.argmax(1, out=bp)
            numpy.add(bp, offsets_1, out=index_1)
            score = score_rows[t]
            numpy.take(flat, index_1, out=score, mode="clip")
            numpy.add(score, step_rows[t], out=score)
    else:
        for t in range(1, T):
            n = running[t]
            if not n:
                break
            c, bp, ix = cand[:n], bps[t, :n], index[:n]
            score = scores[t, :n]
            numpy.add(scores[t - 1, :n, None, :], trans_to_from, out=c)
            c.argmax(2, out=bp)
            numpy.add(bp, offsets[:n], out=ix)
            numpy.take(flat, ix, out=score, mode="clip")
            numpy.add(score, steps[t, :n], out=score)
    return scores, bps

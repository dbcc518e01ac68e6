"""k-best constrained Viterbi in numpy, for crf_ner's n-best analyses.

`kbest_numpy` is the plain recursion: each (position, tag) keeps its k best prefixes, O(T K^2 k).
`kbest_exact` gives the same paths and scores faster: it keeps only the nodes whose best path
(max-marginals: a forward and a backward Viterbi pass) scores within a margin of the best path,
collapses the runs where a single node is kept, and runs the recursion over the rest with only
the tags kept there. Both are linear in the length, in time and memory.
"""
from typing import NamedTuple, Optional, Tuple

import numpy

from .crf_viterbi import RowOrder, max_product


# kbest_numpy looks up the local transitions of this many steps at a time (one fancy index
# instead of one per step; memory O(_CHUNK B K^2), not O(T B K^2))
_CHUNK = 64


class Carries(NamedTuple):
    """Runs of positions collapsed into one step of kbest_numpy (see kbest_exact): at step t, row
    b with active[t, b] comes from tag src[t, b] only, adds const[t, b] and then goes on as from
    tag via[t, b] (the run's last tag) to the step's own position."""

    active: numpy.ndarray  # (T, B) bool
    src: numpy.ndarray  # (T, B) int
    via: numpy.ndarray  # (T, B) int
    const: numpy.ndarray  # (T, B) float


def kbest_numpy(
    pot: numpy.ndarray,
    mask: numpy.ndarray,
    trans: numpy.ndarray,
    start: numpy.ndarray,
    end: numpy.ndarray,
    k: int,
    carries: Optional[Carries] = None,
    tag_ids: Optional[numpy.ndarray] = None,
) -> Tuple[numpy.ndarray, numpy.ndarray]:
    """The k best paths per row by k-best Viterbi: paths (B, k, T) int64 and their scores (B, k),
    best first; rows with fewer than k paths of finite score fill the rest with score -inf.

    pot (B, T, K), trans (K, K), start (K,), end (K,) or (B, K): scores with -inf where a tag,
    transition, first or last tag is not allowed. Each (position, tag) keeps its k best prefixes:
    a step takes the top k of K * k candidates per tag (unordered: only the final k are sorted),
    so time and memory are O(T K^2 k) and O(T K k), linear in the length.
    tag_ids (B, T, K'): when given, pot holds K' local tags per position, local tag j at (b, t)
    being the tag tag_ids[b, t, j] (K' < K makes each step cheaper; see kbest_exact); the paths
    are returned as tag ids.
    """
    B, T, K = pot.shape
    rows = RowOrder.of(mask)
    end_rows = end if end.ndim == 2 else numpy.broadcast_to(end, (B, len(end)))
    if rows.order is not None:  # longest first: the rows still running are a prefix
        o = rows.order
        pot, mask, end_rows = pot[o], mask[o], end_rows[o]
        tag_ids = None if tag_ids is None else tag_ids[o]
        carries = None if carries is None else Carries(*(x[:, o] for x in carries))
    paths, scores = _kbest_sorted(
        pot, mask, rows.running, trans, start, end_rows, k, carries, tag_ids
    )
    return numpy.ascontiguousarray(rows.rows(paths)), rows.rows(scores)


def _kbest_sorted(pot, mask, running, trans, start, end_rows, k, carries, tag_ids):
    """kbest_numpy on rows sorted longest first (running[t]: the rows with length > t)."""
    B, T, K = pot.shape
    n = K * k
    steps = numpy.ascontiguousarray(pot.transpose(1, 0, 2))  # (T, B, K)
    if tag_ids is None:
        local_start, local_end = start[None, :], end_rows
        step_trans = numpy.ascontiguousarray(trans.T)[None, :, :, None]  # (1, K_to, K_from, 1)
    else:
        local_start = start[tag_ids[:, 0]]
        last = mask.sum(1) - 1
        local_end = numpy.take_along_axis(
            end_rows, tag_ids[numpy.arange(B), last], 1
        )
    index_dtype = numpy.int16 if n <= numpy.iinfo(numpy.int16).max else numpy.int32
    # backpointers[t, b] at (j, slot) (flat j * k + slot): the prefix state (i * k + r) at t - 1
    backpointers = numpy.empty((T, B, n), dtype=index_dtype)
    score = numpy.full((B, K, k), -numpy.inf)
    score[:, :, 0] = local_start + steps[0]
    final = score.copy()
    if tag_ids is not None:
        to_tags = tag_ids.transpose(1, 0, 2)  # (T, B, K)
    cand = numpy.empty((B, K, K, k))
    flat = cand.reshape(B, K, n)
    # flat index of cand[b, j, i, r] in cand: ((b * K + j) * K + i) * k + r = offsets[b, j] + state
    offsets = (numpy.arange(B * K) * n).reshape(B, K, 1)
    local = numpy.arange(K)
    active = carries.active.any(1) if carries is not None else numpy.zeros(T, dtype=bool)
    running = list(running) + [0]
    for t in range(1, T):
        m = running[t]
        if not m:
            break
        if tag_ids is not None:
            if (t - 1) % _CHUNK == 0:  # the transitions of the next _CHUNK steps at once
                ids = to_tags[t - 1 : t + _CHUNK]  # (chunk + 1, B, K)
                chunk_trans = trans[ids[:-1, :, None, :], ids[1:, :, :, None]][..., None]
            step_trans = chunk_trans[(t - 1) % _CHUNK, :m]  # (m, K_to, K_from, 1)
        numpy.add(score[:m, None, :, :], step_trans, out=cand[:m])
        if active[t]:
            rows = numpy.flatnonzero(carries.active[t])
            src = carries.src[t, rows]
            from_src = score[rows, src][:, None, :] + carries.const[t, rows][:, None, None]
            to_tags_t = local[None, :] if tag_ids is None else tag_ids[rows, t]
            cand[rows] = -numpy.inf
            cand[rows[:, None], local[None, :], src[:, None]] = (
                from_src + trans[carries.via[t, rows][:, None], to_tags_t][:, :, None]
            )
        if n > k:
            idx = numpy.argpartition(flat[:m], n - k, axis=2)[:, :, n - k:]
        else:
            idx = numpy.broadcast_to(numpy.arange(n), (m, K, n))
        score = numpy.take(cand, idx + offsets[:m])
        score += steps[t, :m, :, None]
        backpointers[t, :m] = idx.reshape(m, n)
        final[running[t + 1]: m] = score[running[t + 1]:]  # the rows whose last position is t
    backpointers[1:][~mask.T[1:]] = numpy.arange(n, dtype=index_dtype)  # padding: identity
    total = (final + local_end[:, :, None]).reshape(B, n)
    order = numpy.argsort(-total, axis=1, kind="stable")[:, :k]
    scores = numpy.take_along_axis(total, order, 1)
    states = numpy.empty((T, B, order.shape[1]), dtype=numpy.int64)
    cur: numpy.ndarray = order
    states[T - 1] = cur
    row_offsets = (numpy.arange(B) * n)[:, None]
    for t in range(T - 1, 0, -1):
        cur = states[t - 1] = numpy.take(backpointers[t], cur + row_offsets)
    paths = (states // k).transpose(1, 2, 0)  # (B, k, T)
    if tag_ids is not None:
        paths = numpy.take_along_axis(tag_ids.transpose(0, 2, 1), paths, 1)
    paths[~numpy.broadcast_to(mask[:, None, :], paths.shape)] = 0
    return paths, scores


def max_marginals(
    pot: numpy.ndarray,
    mask: numpy.ndarray,
    trans: numpy.ndarray,
    start: numpy.ndarray,
    end: numpy.ndarray,
) -> numpy.ndarray:
    """The score of the best path through each (position, tag), (B, T, K): a forward and a
    backward max-product pass (Viterbi both ways); -inf where no valid path passes. Padding
    holds -inf."""
    B, T, K = pot.shape
    rows = RowOrder.of(mask)
    steps = rows.time_major(pot)  # (T, B, K), rows sorted longest first
    forward, _ = max_product(steps, rows.running, trans, start, backpointers=False)
    # backward[u][i] = max_j (trans[i, j] + back_steps[u - 1][j] + backward[u - 1][j]) over
    # each row reversed within its length: the forward recursion from `end` with trans.T, read
    # before each step's potentials are added. (Both passes as one recursion over twice the
    # rows, with two transition matrices, measured slower.)
    back_steps = numpy.take(steps.reshape(T * B, K), rows.reversed_index(), 0)
    backward, _ = max_product(
        back_steps, rows.running, trans.T, end, backpointers=False, before_steps=True
    )
    out = rows.batch_major(forward)
    out += rows.batch_major(backward, reversed_rows=True)
    out[~mask] = -numpy.inf
    return out


def kbest_exact(
    pot: numpy.ndarray,
    mask: numpy.ndarray,
    trans: numpy.ndarray,
    start: numpy.ndarray,
    end: numpy.ndarray,
    k: int,
) -> Tuple[numpy.ndarray, numpy.ndarray]:
    """What kbest_numpy returns, computed on a pruned trellis, in about the time of two Viterbi
    passes when the model is confident.

    Only the (position, tag) nodes whose best path (max_marginals) scores within a margin of the
    best path are kept. Where one tag is kept at a position and at the one before, no ranking
    changes: such runs are collapsed into one step (Carries), so the k-best recursion runs over
    the positions where the kept trellis branches only. When the k-th path found scores at least
    best - margin, every path through a pruned node scores less, so the result is exact;
    otherwise that row is redone with the margin at the k-th found path (exact then), or, with
    fewer than k paths found, a wider margin, up to the whole trellis.
    """
    B, T, K = pot.shape
    marginals = max_marginals(pot, mask, trans, start, end)
    finite = numpy.isfinite(marginals)
    best = marginals.max((1, 2))  # max-marginals are finite or -inf
    # the best path's own nodes score `best` up to rounding (the passes add in different orders)
    tol = 1e-9 * numpy.maximum(1.0, numpy.abs(best))
    with numpy.errstate(invalid="ignore"):  # a row without any valid path: -inf - -inf
        below = best[:, None, None] - marginals  # how far below the best each node's path is
    below[~finite] = numpy.inf
    gaps = below.reshape(B, -1).copy()
    gaps.sort(1)
    n_finite = finite.reshape(B, -1).sum(1)
    # The best path through a node is one path; nodes with different gaps lie on different
    # paths. So the k - 1 smallest distinct positive gaps belong to k - 1 paths besides the best
    # one: the k-th best path is no further below the best, and a margin there keeps every
    # node of the k best paths (the check below is a safety net against rounding).
    rank = _rank_of_kth_path(gaps, n_finite, tol, k)
    paths = numpy.zeros((B, k, T), dtype=numpy.int64)
    scores = numpy.full((B, k), -numpy.inf)
    todo = numpy.arange(B)
    while len(todo):
        rows = slice(None) if len(todo) == B else todo  # no copies in the first round
        margin = numpy.maximum(gaps[todo, rank[todo]], tol[todo])
        keep = finite[rows] & (below[rows] <= margin[:, None, None])
        got_paths, got_scores = _kbest_kept(pot[rows], mask[rows], trans, start, end, k, keep)
        paths[todo], scores[todo] = got_paths, got_scores
        n_found = numpy.isfinite(got_scores).sum(1)
        kth = got_scores[:, -1]
        done = (n_found == k) & (kth >= best[todo] - margin) | (rank[todo] == n_finite[todo] - 1)
        for b, kth_b, n_b in zip(todo[~done], kth[~done], n_found[~done]):
            if n_b == k:  # every path at least as good as the k-th found is kept next time
                rank[b] = numpy.searchsorted(gaps[b], best[b] - kth_b, "right")
            else:
                rank[b] = 4 * rank[b] + 1
            rank[b] = min(rank[b], n_finite[b] - 1)
        todo = todo[~done]
    return paths, scores


def _rank_of_kth_path(
    gaps: numpy.ndarray, n_finite: numpy.ndarray, tol: numpy.ndarray, k: int
) -> numpy.ndarray:
    """Per row of gaps (B, N) (sorted, the first n_finite finite): the index of its (k - 1)-th
    distinct positive gap (gaps within tol of each other are one; the first above tol always
    counts), or n_finite - 1 where there are fewer; 0 for k = 1."""
    B, N = gaps.shape
    if k == 1:
        return numpy.zeros(B, dtype=numpy.int64)
    real = numpy.arange(N)[None, :] < n_finite[:, None]
    positive = real & (gaps > tol[:, None])
    first = positive.copy()
    first[:, 1:] &= ~positive[:, :-1]
    with numpy.errstate(invalid="ignore"):  # inf - inf past the finite gaps
        step = numpy.diff(gaps, axis=1, prepend=0.0) > tol[:, None]
    count = numpy.cumsum(positive & (step | first), 1)
    found = (count >= k - 1).argmax(1)
    return numpy.where(count[:, -1] >= k - 1, found, n_finite - 1).astype(numpy.int64)


def _kbest_kept(pot, mask, trans, start, end, k, keep) -> Tuple[numpy.ndarray, numpy.ndarray]:
    """kbest_numpy through the kept nodes only, with runs of single kept tags collapsed."""
    B, T, K = pot.shape
    lengths = mask.sum(1)
    rows = numpy.arange(B)
    p = numpy.where(keep, pot, -numpy.inf)
    single = keep.sum(2) == 1
    tag_of = keep.argmax(2)  # (B, T): the tag where only one is kept
    forced = numpy.zeros((B, T), dtype=bool)
    forced[:, 1:] = single[:, 1:] & single[:, :-1] & mask[:, 1:]
    inc = numpy.zeros((B, T))
    prev_tag = numpy.concatenate([tag_of[:, :1], tag_of[:, :-1]], 1)
    step = trans[prev_tag, tag_of] + numpy.take_along_axis(p, tag_of[:, :, None], 2)[:, :, 0]
    inc[forced] = step[forced]
    cum = numpy.cumsum(inc, 1)
    anchor = ~forced & mask
    n_anchors = anchor.sum(1)
    width = int(n_anchors.max())
    # position of each row's a-th anchor (padding: the row's last anchor)
    order = numpy.argsort(~anchor, axis=1, kind="stable")[:, :width]
    compressed_mask = numpy.arange(width)[None, :] < n_anchors[:, None]
    last_anchor = order[rows, n_anchors - 1]
    pos = numpy.where(compressed_mask, order, last_anchor[:, None])
    prev = numpy.concatenate([pos[:, :1], pos[:, :-1]], 1)
    carried = compressed_mask & (pos - 1 > prev)
    carried[:, 0] = False
    carries = Carries(
        carried.T,
        numpy.zeros_like(carried.T, dtype=numpy.int64),  # the single kept tag: local tag 0
        numpy.take_along_axis(tag_of, numpy.maximum(pos - 1, 0), 1).T,
        (numpy.take_along_axis(cum, numpy.maximum(pos - 1, 0), 1)
         - numpy.take_along_axis(cum, prev, 1)).T,
    )
    compressed = numpy.take_along_axis(p, pos[:, :, None], 1)
    # K' local tags per position: the kept ones first (a single kept tag is local tag 0)
    kept_here = numpy.take_along_axis(keep, pos[:, :, None], 1)
    width_k = max(1, int(kept_here.sum(2).max()))
    tag_ids = numpy.argsort(~kept_here, axis=2, kind="stable")[:, :, :width_k]
    compressed = numpy.where(
        numpy.take_along_axis(kept_here, tag_ids, 2),
        numpy.take_along_axis(compressed, tag_ids, 2),
        -numpy.inf,
    )
    # a run of single kept tags after the last anchor goes into the end scores
    end_rows = numpy.repeat(end[None, :], B, 0)
    tail = lengths - 1 > last_anchor
    if tail.any():
        tb = numpy.flatnonzero(tail)
        new_end = numpy.full((len(tb), K), -numpy.inf)
        new_end[numpy.arange(len(tb)), tag_of[tb, last_anchor[tb]]] = (
            cum[tb, lengths[tb] - 1] - cum[tb, last_anchor[tb]]
            + end[tag_of[tb, lengths[tb] - 1]]
        )
        end_rows[tb] = new_end
    short_paths, scores = kbest_numpy(
        compressed, compressed_mask, trans, start, end_rows, k, carries, tag_ids
    )
    paths = numpy.repeat(tag_of[:, None, :], k, 1)
    # each anchor's tags to its position; padding repeats the row's last anchor
    last_index = numpy.minimum(numpy.arange(width)[None, :], n_anchors[:, None] - 1)
    tags_at = numpy.take_along_axis(short_paths, last_index[:, None, :], 2)
    numpy.put_along_axis(paths, numpy.broadcast_to(pos[:, None, :], tags_at.shape), tags_at, 2)
    paths[~numpy.broadcast_to(mask[:, None, :], paths.shape)] = 0
    return paths, scores

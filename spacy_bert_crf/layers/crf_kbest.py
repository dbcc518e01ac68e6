"""k-best constrained Viterbi in numpy, for crf_ner's n-best analyses.

`kbest_numpy` is the plain recursion: each (position, tag) keeps its k best prefixes, O(T K^2 k).
`kbest_exact` gives the same paths and scores faster: it keeps only the nodes whose best path
(max-marginals: a forward and a backward Viterbi pass, run as one recursion through the allowed
transitions) scores within a margin of the best path, collapses the runs where a single node is
kept, and runs the recursion over the rest with only the tags kept there. Between the
recursions it works on the real tokens of a batch only, not its padding. Both are linear in the
length, in time and memory.
"""
from typing import Any, NamedTuple, Optional, Tuple

import numpy

from .crf_decode import TINY, batch_product, recursion_one_row
from .crf_viterbi import RowOrder


# kbest_numpy looks up the local transitions of this many steps at a time (one fancy index
# instead of one per step; memory O(_CHUNK B K^2), not O(T B K^2))
_CHUNK = 64


class KBest(NamedTuple):
    """kbest_exact's result: paths (B, k, T) int64 and their scores (B, k), best first (-inf
    where a row has fewer than k paths), and log Z (B,), the log of the sum over every valid
    path of exp(score)."""

    paths: numpy.ndarray
    scores: numpy.ndarray
    log_z: numpy.ndarray


class Links(NamedTuple):
    """Runs of positions collapsed between two steps of kbest_numpy (see kbest_exact): where
    via[b, t] >= 0, row b reaches step t from local tag 0 of step t - 1 only (the one tag kept
    there), through a run of single tags that adds const[b, t] and whose last tag via[b, t]
    goes on to the tags of step t."""

    via: numpy.ndarray  # (B, T) int, -1: no run
    const: numpy.ndarray  # (B, T) float


def kbest_numpy(
    pot: numpy.ndarray,
    mask: numpy.ndarray,
    trans: numpy.ndarray,
    start: numpy.ndarray,
    end: numpy.ndarray,
    k: int,
    tag_ids: Optional[numpy.ndarray] = None,
    links: Optional[Links] = None,
) -> Tuple[numpy.ndarray, numpy.ndarray]:
    """The k best paths per row by k-best Viterbi: paths (B, k, T) int64 and their scores (B, k),
    best first; rows with fewer than k paths of finite score fill the rest with score -inf.

    pot (B, T, K), trans (K, K), start (K,), end (K,) or (B, K): scores with -inf where a tag,
    transition, first or last tag is not allowed. Each (position, tag) keeps its k best prefixes:
    a step takes the top k of K * k candidates per tag (unordered: only the final k are sorted),
    so time and memory are O(T K^2 k) and O(T K k), linear in the length.
    tag_ids (B, T, K'): when given, pot holds K' local tags per position, local tag j at (b, t)
    being the tag tag_ids[b, t, j] (K' < K makes each step cheaper; see kbest_exact); the paths
    are returned as tag ids. links: runs collapsed between steps (with tag_ids only).
    """
    B, T, K = pot.shape
    rows = RowOrder.of(mask)
    end_rows = end if end.ndim == 2 else numpy.broadcast_to(end, (B, len(end)))
    if rows.order is not None:  # longest first: the rows still running are a prefix
        o = rows.order
        pot, mask, end_rows = pot[o], mask[o], end_rows[o]
        tag_ids = None if tag_ids is None else tag_ids[o]
        links = None if links is None else Links(links.via[o], links.const[o])
    paths, scores = _kbest_sorted(
        pot, mask, rows.running, trans, start, end_rows, k, tag_ids, links
    )
    return numpy.ascontiguousarray(rows.rows(paths)), rows.rows(scores)


def _kbest_sorted(pot, mask, running, trans, start, end_rows, k, tag_ids, links):
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
        to_tags = tag_ids.transpose(1, 0, 2)  # (T, B, K)
        if links is not None:
            via, const = links.via.T, links.const.T  # (T, B)
    index_dtype = numpy.int16 if n <= numpy.iinfo(numpy.int16).max else numpy.int32
    # backpointers[t, b] at (j, slot) (flat j * k + slot): the prefix state (i * k + r) at t - 1
    backpointers = numpy.empty((T, B, n), dtype=index_dtype)
    score = numpy.full((B, K, k), -numpy.inf)
    score[:, :, 0] = local_start + steps[0]
    final = score.copy()
    cand = numpy.empty((B, K, K, k))
    flat = cand.reshape(B, K, n)
    # flat index of cand[b, j, i, r] in cand: ((b * K + j) * K + i) * k + r = offsets[b, j] + state
    offsets = (numpy.arange(B * K) * n).reshape(B, K, 1)
    every = numpy.arange(n)
    running = list(running) + [0]
    for t in range(1, T):
        m = running[t]
        if not m:
            break
        if tag_ids is not None:
            if (t - 1) % _CHUNK == 0:  # the transitions of the next _CHUNK steps at once
                stop = t + _CHUNK
                chunk_trans = _local_transitions(
                    trans, to_tags[t - 1 : stop],
                    None if links is None else (via[t:stop], const[t:stop]),
                )
            step_trans = chunk_trans[(t - 1) % _CHUNK, :m]  # (m, K_to, K_from, 1)
        numpy.add(score[:m, None, :, :], step_trans, out=cand[:m])
        if n > k:
            idx = numpy.argpartition(flat[:m], n - k, axis=2)[:, :, n - k:]
        else:
            idx = numpy.broadcast_to(every, (m, K, n))
        score = numpy.take(cand, idx + offsets[:m])
        score += steps[t, :m, :, None]
        backpointers[t, :m] = idx.reshape(m, n)
        final[running[t + 1]: m] = score[running[t + 1]:]  # the rows whose last position is t
    backpointers[1:][~mask.T[1:]] = every.astype(index_dtype)  # padding: identity
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


def _local_transitions(
    trans: numpy.ndarray,
    tags: numpy.ndarray,
    links: Optional[Tuple[numpy.ndarray, numpy.ndarray]],
) -> numpy.ndarray:
    """The transition scores between the local tags of consecutive steps, (c, B, K_to, K_from,
    1), for tags (c + 1, B, K) (the tag ids of c + 1 steps) and links (via, const) (c, B) of
    those c steps: a linked row comes from local tag 0 only, through its run."""
    out = trans[tags[:-1, :, None, :], tags[1:, :, :, None]]
    if links is not None:
        via, const = links
        t, b = numpy.nonzero(via >= 0)
        if len(t):
            into = trans[via[t, b][:, None], tags[1:][t, b]] + const[t, b][:, None]
            out[t, b] = -numpy.inf
            out[t, b, :, 0] = into
    return out[..., None]


class _Packed(NamedTuple):
    """The real positions of a right-padded batch (B, T), time-major with the rows sorted
    longest first (RowOrder): position t of sorted row b < running[t] is token offsets[t] + b.
    Arrays over the tokens (N, ...) hold no padding, and each position's rows are contiguous,
    as a recursion over the positions wants them."""

    rows: RowOrder
    offsets: numpy.ndarray  # (T + 1,) the first token of each position
    row: numpy.ndarray  # (N,) each token's sorted row
    time: numpy.ndarray  # (N,) each token's position
    source: numpy.ndarray  # (N,) each token's flat index (row * T + position) in (B, T) arrays
    reverse: numpy.ndarray  # (N,) the token at position length - 1 - t of the same row
    padded: numpy.ndarray  # (N,) each token's flat index (position * B + sorted row) in (T, B)

    @classmethod
    def of(cls, mask: numpy.ndarray) -> "_Packed":
        B, T = mask.shape
        rows = RowOrder.of(mask)
        running = numpy.asarray(rows.running, dtype=numpy.intp)
        offsets = numpy.zeros(T + 1, dtype=numpy.intp)
        numpy.cumsum(running, out=offsets[1:])
        time = numpy.repeat(numpy.arange(T), running)
        row = numpy.arange(int(offsets[-1])) - offsets[time]
        own = row if rows.order is None else rows.order[row]
        reverse = offsets[rows.lengths[row] - 1 - time] + row
        return cls(rows, offsets, row, time, own * T + time, reverse, time * B + row)

    def to_padded(self, values: numpy.ndarray, fill: Any) -> numpy.ndarray:
        """Per-token values (N,) as (T, B), position by sorted row, `fill` at padding."""
        T, B = len(self.rows.running), len(self.rows.lengths)
        out = numpy.full(T * B, fill, dtype=values.dtype)
        out[self.padded] = values
        return out.reshape(T, B)


def max_marginals(
    pot: numpy.ndarray,
    mask: numpy.ndarray,
    trans: numpy.ndarray,
    start: numpy.ndarray,
    end: numpy.ndarray,
) -> numpy.ndarray:
    """The score of the best path through each (position, tag), (B, T, K): a forward and a
    backward max-product pass (Viterbi both ways); -inf where no valid path passes. Padding
    holds -inf. Rows are of length >= 1."""
    B, T, K = pot.shape
    packed = _Packed.of(mask)
    marginals, _ = _packed_max_marginals(pot, packed, trans, start, end)
    out = numpy.full((B * T, K), -numpy.inf)
    out[packed.source] = marginals
    return out.reshape(B, T, K)


def _packed_max_marginals(
    pot: numpy.ndarray,
    packed: _Packed,
    trans: numpy.ndarray,
    start: numpy.ndarray,
    end: numpy.ndarray,
) -> Tuple[numpy.ndarray, numpy.ndarray]:
    """max_marginals per token (N, K), and the potentials per token (N, 2K): each token's own
    (first K) and those of the token at the reversed position of its row (last K).

    Both passes run as one recursion over a state of 2K scores per row (the forward pass's and,
    over each row reversed within its length, the backward pass's), through the allowed
    transitions only (_Sources): one gather of every target's sources, one add and one maximum
    over the sources per step for both. The state holds the rows as its last axis (2K, rows),
    so that the maximum is over the outermost axis: elementwise maxima of contiguous blocks,
    faster than a segmented maximum along each row.
    """
    B, T, K = pot.shape
    sources = _Sources.of(trans)
    own = packed.source
    steps = numpy.take(
        pot.reshape(B * T, K), numpy.stack([own, own[packed.reverse]], 1), 0
    ).reshape(len(own), 2 * K)
    # maxima[token]: max over the sources of (the row's score at the token before +
    # transition), forward (first K) and backward (last K); the first tokens hold start, end
    maxima = numpy.empty_like(steps)
    first = packed.rows.running[0]
    maxima[:first, :K], maxima[:first, K:] = start, end
    # the state (2K, rows) and a last row of -inf, the padding of the sources
    state = numpy.full((2 * K + 1, first), -numpy.inf)
    numpy.add(maxima[:first].T, steps[:first].T, out=state[: 2 * K])
    if B == 1:  # one long document: views made once, no slicing per step
        _pairs_one_row(state[:, 0], maxima, steps, sources)
    else:
        offsets = packed.offsets
        for t, n in enumerate(packed.rows.running[1:], 1):
            if not n:
                break
            gathered = state[sources.source, :n]
            gathered += sources.scores[:, None]
            m = maxima[offsets[t] : offsets[t] + n].T
            gathered.reshape(sources.width, 2 * K, n).max(0, out=m)
            numpy.add(m, steps[offsets[t] : offsets[t] + n].T, out=state[: 2 * K, :n])
    out = maxima[packed.reverse, K:]
    out += maxima[:, :K]
    out += steps[:, :K]
    return out, steps


def _pairs_one_row(state, maxima, steps, sources) -> None:
    """_packed_max_marginals' recursion for one row: state (2K + 1,), maxima and steps (T, 2K)."""
    index, scores, width = sources
    K2 = len(state) - 1
    gathered = numpy.empty(len(index))
    by_source = gathered.reshape(width, K2)
    take, add = numpy.take, numpy.add
    head = state[:K2]
    for m, step in zip(list(maxima[1:]), list(steps[1:])):
        take(state, index, out=gathered)
        add(gathered, scores, out=gathered)
        by_source.max(0, out=m)
        add(m, step, out=head)


def _packed_log_z(
    own: numpy.ndarray,
    packed: _Packed,
    trans: numpy.ndarray,
    start: numpy.ndarray,
    end: numpy.ndarray,
) -> numpy.ndarray:
    """log Z per sorted row (B,) from the potentials per token (N, K) (-inf: not allowed): the
    forward recursion of crf_decode.NumpyChain (the same scaled probabilities and shifts,
    float64), run on the real tokens only, as the max-marginals are, rather than on a padded
    copy of the batch."""
    rows = packed.rows
    K, B = own.shape[1], len(rows.lengths)
    first = rows.running[0]
    scores = own.copy()
    scores[:first] += start
    shift = scores.max(1)
    shift[~numpy.isfinite(shift)] = 0.0  # a token without an allowed tag: all zero below
    scores -= shift[:, None]
    weights = numpy.exp(scores, out=scores)  # (N, K) exp(potential - its token's maximum)
    trans_max, end_max = _finite_max(trans), _finite_max(end)
    exp_trans = numpy.exp(trans - trans_max)
    h = numpy.empty_like(weights)  # the normalised alphas
    norms = numpy.ones(len(own))
    numpy.maximum(weights[:first].sum(1), TINY, out=norms[:first])
    numpy.divide(weights[:first], norms[:first, None], out=h[:first])
    if B == 1:
        recursion_one_row(h, norms, weights, exp_trans, False)
    else:
        product = batch_product(B, K)
        offsets = packed.offsets
        for t, n in enumerate(rows.running[1:], 1):
            if not n:
                break
            here, before = offsets[t], offsets[t - 1]
            step, norm = h[here : here + n], norms[here : here + n]
            product(h[before : before + n], exp_trans, out=step)
            step *= weights[here : here + n]
            step.sum(1, out=norm)
            numpy.maximum(norm, TINY, out=norm)
            step /= norm[:, None]
    last = packed.offsets[rows.lengths - 1] + numpy.arange(B)
    total = numpy.maximum(h[last] @ numpy.exp(end - end_max), TINY)
    scales = numpy.bincount(packed.row, numpy.log(norms) + shift, minlength=B)
    return numpy.log(total) + end_max + scales + (rows.lengths - 1) * trans_max


def _finite_max(x: numpy.ndarray) -> float:
    finite = x[numpy.isfinite(x)]
    return float(finite.max()) if len(finite) else 0.0


class _Sources(NamedTuple):
    """The allowed transitions of both max-product passes, by target: the state is 2K scores
    (forward pass: tags i -> j scored trans[i, j]; backward pass, state K + j: tags j -> i
    scored trans[i, j]), each target's sources padded to the most any target has (width):
    source (width * 2K,), the state position of source s of target j at s * 2K + j (2K, one
    past the state, at the padding), and scores (width * 2K,), the transitions' scores (-inf
    at the padding)."""

    source: numpy.ndarray
    scores: numpy.ndarray
    width: int

    @classmethod
    def of(cls, trans: numpy.ndarray) -> "_Sources":
        K = len(trans)
        by_target = numpy.concatenate([trans.T, trans])  # (2K targets, K sources)
        allowed = numpy.isfinite(by_target)
        width = max(1, int(allowed.sum(1).max()))
        index = numpy.full((width, 2 * K), 2 * K)
        scores = numpy.full((width, 2 * K), -numpy.inf)
        target, source = numpy.nonzero(allowed)  # by target, then source
        slot = numpy.arange(len(target)) - numpy.searchsorted(target, target)
        index[slot, target] = source + K * (target >= K)
        scores[slot, target] = by_target[target, source]
        return cls(index.ravel(), scores.ravel(), width)


def kbest_exact(
    pot: numpy.ndarray,
    mask: numpy.ndarray,
    trans: numpy.ndarray,
    start: numpy.ndarray,
    end: numpy.ndarray,
    k: int,
) -> KBest:
    """What kbest_numpy returns, computed on a pruned trellis, in about the time of two Viterbi
    passes when the model is confident, and log Z (what the paths' probabilities need; one
    forward pass over the same packed tokens). Rows are of length >= 1.

    Only the (position, tag) nodes whose best path (max_marginals) scores within a margin of the
    best path are kept. Where one tag is kept at a position and at the one before, no ranking
    changes: such runs are collapsed into one step (Links), so the k-best recursion runs over
    the positions where the kept trellis branches only. When the k-th path found scores at least
    best - margin, every path through a pruned node scores less, so the result is exact;
    otherwise that row is redone with the margin at the k-th found path (exact then), or, with
    fewer than k paths found, a wider margin, up to the whole trellis. The work outside the
    recursions runs on the real tokens only (_Packed), not on the padding of a batch.
    """
    paths, scores, redo, log_z = _kbest_pruned(pot, mask, trans, start, end, k, None)
    todo = numpy.flatnonzero(~numpy.isnan(redo))
    while len(todo):
        found_paths, found_scores, again, _ = _kbest_pruned(
            pot[todo], mask[todo], trans, start, end, k, redo[todo]
        )
        paths[todo], scores[todo], redo[todo] = found_paths, found_scores, again
        todo = todo[~numpy.isnan(again)]
    return KBest(paths, scores, log_z)


def _kbest_pruned(pot, mask, trans, start, end, k, margin):
    """The k best paths and scores of the rows (as kbest_numpy) through the nodes within
    margin (B,) of their row's best path (None: _margin_of_kth_path's), per row the margin to
    redo it with (NaN: the result is exact), and, on the first pass (margin None), log Z per
    row (None on a redo)."""
    B, T, K = pot.shape
    packed = _Packed.of(mask)
    rows = packed.rows
    marginals, steps = _packed_max_marginals(pot, packed, trans, start, end)
    log_z = None
    if margin is None:
        log_z = rows.rows(_packed_log_z(steps[:, :K], packed, trans, start, end))
    first = rows.running[0]
    best = numpy.full(B, -numpy.inf)  # per sorted row: every path passes position 0
    best[:first] = marginals[:first].max(1)
    # the best path's own nodes score `best` up to rounding (the passes add in different orders)
    tol = 1e-9 * numpy.maximum(1.0, numpy.abs(best))
    with numpy.errstate(invalid="ignore"):  # a row without any valid path: -inf - -inf
        below = best[packed.row, None] - marginals  # +inf where no valid path passes
    if not numpy.isfinite(best).all():
        below[~numpy.isfinite(best)[packed.row]] = numpy.inf
    if margin is None:
        margin = tol if k == 1 else _margin_of_kth_path(_smallest_gaps(below, packed, tol, k),
                                                        tol, k)
    elif rows.order is not None:
        margin = margin[rows.order]
    # (an infinite margin keeps every node a valid path passes, not the others)
    keep = below <= numpy.minimum(margin, numpy.finfo(float).max)[packed.row, None]
    paths, scores = _kbest_kept(steps[:, :K], packed, trans, start, end, k, keep)
    n_found = numpy.isfinite(scores).sum(1)
    kth = scores[:, -1]
    done = (n_found == k) & (kth >= best - margin) | numpy.isinf(margin)
    redo = numpy.full(B, numpy.nan)
    for b in numpy.flatnonzero(~done):
        if n_found[b] == k:  # every path at least as good as the k-th found is kept next time
            redo[b] = best[b] - kth[b] + tol[b]
        else:  # a wider margin, up to every node with a valid path
            gaps = below[packed.row == b]
            widest = gaps[numpy.isfinite(gaps)].max()
            redo[b] = 4 * margin[b] + tol[b] if 4 * margin[b] < widest else numpy.inf
    return rows.rows(paths), rows.rows(scores), rows.rows(redo), log_z


def _smallest_gaps(
    below: numpy.ndarray, packed: _Packed, tol: numpy.ndarray, k: int
) -> numpy.ndarray:
    """The k - 1 (k > 1) smallest gaps above tol of each token, per sorted row (B, T (k - 1)),
    +inf where there are fewer (the candidates of _margin_of_kth_path: the k - 1 paths it looks
    for have no more than k - 1 gaps at one token)."""
    K = below.shape[1]
    T, B = len(packed.rows.running), len(packed.rows.lengths)
    n = min(k - 1, K)
    positive = numpy.where(below > tol[packed.row, None], below, numpy.inf)
    if n < K:
        positive = numpy.partition(positive, n - 1, axis=1)[:, :n]
    out = numpy.full((T * B, n), numpy.inf)
    out[packed.padded] = positive
    return out.reshape(T, B, n).transpose(1, 0, 2).reshape(B, T * n)


def _margin_of_kth_path(below: numpy.ndarray, tol: numpy.ndarray, k: int) -> numpy.ndarray:
    """How far below its best path a row's nodes are kept so that its k best paths are among
    them: below (B, N) is how far the best path through each of N nodes of the row scores below
    the row's best path (+inf: none; the nodes may be a subset of the row's, see _smallest_gaps),
    tol (B,) the rounding tolerance.

    The best path through a node is one path, and nodes whose gaps differ by more than tol lie
    on different paths. So the gaps g_1 < g_2 < ... picked from the smallest up, each more than
    tol above the one picked before (g_1 the least above tol: not the best path), belong to
    that many paths besides the best one, and the k-th best path is no further below the best
    than g_(k - 1) (picking from a subset of the nodes only makes g_(k - 1) larger). Unlike
    chaining gaps that lie within tol of their neighbours, this does not run away where gaps
    are dense (a long document of uncertain emissions). Returns g_(k - 1) per row, tol for
    k = 1, and +inf (every node) for a row with fewer such gaps. Only the smallest gaps are
    sorted (a few per path looked for, more for the rows that need them).
    """
    B, N = below.shape
    margin = tol.astype(float)
    if k == 1:
        return margin
    positive = numpy.where(below > tol[:, None], below, numpy.inf)
    todo = numpy.arange(B)
    width = 8 * k
    while len(todo):
        if width < N:
            smallest = numpy.partition(positive[todo], width - 1, axis=1)[:, :width]
        else:
            smallest = positive[todo]
        smallest.sort(1)
        rows = numpy.arange(len(todo))
        found = numpy.ones(len(todo), dtype=bool)
        threshold, at = tol[todo].astype(float), numpy.zeros(len(todo))
        for _ in range(k - 1):  # the first gap above the threshold, then tol above it
            above = smallest > threshold[:, None]
            first = above.argmax(1)
            at = smallest[rows, first]
            found &= above[rows, first] & numpy.isfinite(at)
            threshold = at + tol[todo]
        complete = found | (width >= N) | numpy.isinf(smallest[:, -1])
        margin[todo[found]] = at[found]
        margin[todo[complete & ~found]] = numpy.inf
        todo = todo[~complete]
        width *= 4
    return margin


def _kbest_kept(pot, packed, trans, start, end, k, keep) -> Tuple[numpy.ndarray, numpy.ndarray]:
    """kbest_numpy through the kept nodes only, with runs of single kept tags collapsed: pot
    and keep (N, K) per token; paths (B, k, T) and scores (B, k) per sorted row."""
    rows = packed.rows
    B, T, K = len(rows.lengths), len(rows.running), pot.shape[1]
    lengths = rows.lengths
    index = numpy.arange(B)
    kept_tag = keep.argmax(1)
    # per position and sorted row (T, B)
    single = packed.to_padded(keep.sum(1) == 1, False)  # (never at padding)
    tag_of = packed.to_padded(kept_tag, 0)
    pot_of = packed.to_padded(pot[numpy.arange(len(pot)), kept_tag], 0.0)
    forced = numpy.zeros((T, B), dtype=bool)
    forced[1:] = single[1:] & single[:-1]
    # what a forced position adds: the transition into its tag and its potential
    inc = numpy.zeros((T, B))
    inc[1:] = numpy.where(forced[1:], trans[tag_of[:-1], tag_of[1:]] + pot_of[1:], 0.0)
    cum = numpy.cumsum(inc, 0).T  # (B, T) from here on
    tag_of, mask = tag_of.T, numpy.arange(T)[None, :] < lengths[:, None]
    anchor = ~forced.T & mask
    n_anchors = anchor.sum(1)
    width = int(n_anchors.max())
    # position of each row's a-th anchor (padding: the row's last anchor)
    order = numpy.argsort(~anchor, axis=1, kind="stable")[:, :width]
    compressed_mask = numpy.arange(width)[None, :] < n_anchors[:, None]
    last_anchor = order[index, n_anchors - 1]
    pos = numpy.where(compressed_mask, order, last_anchor[:, None])
    prev = numpy.concatenate([pos[:, :1], pos[:, :-1]], 1)
    before = numpy.maximum(pos - 1, 0)
    linked = compressed_mask & (before > prev)  # a collapsed run between two anchors
    links = Links(
        numpy.where(linked, numpy.take_along_axis(tag_of, before, 1), -1),
        numpy.where(
            linked,
            numpy.take_along_axis(cum, before, 1) - numpy.take_along_axis(cum, prev, 1),
            0.0,
        ),
    )
    # K' local tags per anchor: the kept ones first (a single kept tag is local tag 0)
    tokens = packed.offsets[pos] + index[:, None]  # (B, width)
    kept_here = keep[tokens]
    width_k = max(1, int(kept_here.sum(2).max()))
    tag_ids = numpy.argsort(~kept_here, axis=2, kind="stable")[:, :, :width_k]
    compressed = numpy.where(
        numpy.take_along_axis(kept_here, tag_ids, 2),
        numpy.take_along_axis(pot[tokens], tag_ids, 2),
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
        compressed, compressed_mask, trans, start, end_rows, k, tag_ids, links
    )
    paths = numpy.repeat(tag_of[:, None, :], k, 1)
    # each anchor's tags to its position; padding repeats the row's last anchor
    last_index = numpy.minimum(numpy.arange(width)[None, :], n_anchors[:, None] - 1)
    tags_at = numpy.take_along_axis(short_paths, last_index[:, None, :], 2)
    numpy.put_along_axis(paths, numpy.broadcast_to(pos[:, None, :], tags_at.shape), tags_at, 2)
    paths[~numpy.broadcast_to(mask[:, None, :], paths.shape)] = 0
    return paths, scores

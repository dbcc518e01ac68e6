"""A constrained linear-chain CRF as a PyTorch module.

Everything is vectorised over the batch and the tags and loops only over time. Ragged batches are
right-padded and described by a boolean ``mask`` of shape (batch, length). Tag-scheme constraints
(see ``tag_schemes.constraints``) enter as -inf transitions / start / end scores, so the model is
normalised over valid paths only and decoding can never produce an invalid sequence.

Two objectives share the module:

- ``"crf"``: learned transitions; loss = log Z - log Z(gold), where the gold term is a forward
  pass restricted to the tags allowed at each position (one tag where annotated, every tag where
  the annotation is missing), i.e. partial annotation is marginalised, not treated as ``O``.
- ``"softmax"``: per-token cross-entropy (again marginalising missing positions); decoding runs the
  same constrained Viterbi over log-softmax scores with transitions fixed at 0. This is the
  ablation that isolates what the CRF adds.

Decoding (Viterbi, forward-backward, marginals, span probabilities) on the CPU runs its time
recursions in numpy: a step is a handful of ops on (batch, K, K) arrays, far too small for
threads. torch would still hand each op to its intra-op thread pool, and on a machine whose
cores are busy every op then waits for a thread to be scheduled (milliseconds instead of
microseconds). numpy runs them in the calling thread, and no global thread setting is touched.
Viterbi gives exactly the paths the torch recursion gives (same dtype, same additions, the first
maximum on ties); the forward-backward pass runs in float64. Tensors on another device, or in a
dtype numpy lacks, take the torch path. Training (the autograd path) stays in torch.
"""
import functools
from typing import List, Optional, Sequence, Tuple

import numpy
import torch
from torch import nn

# Differentiable paths use a large finite penalty instead of -inf so gradients stay finite
# (logsumexp of all -inf has a NaN gradient). exp(-1e4) underflows to exactly 0 in float32 and
# float64, so invalid paths carry exactly zero probability mass. Viterbi uses a true -inf.
NEG = -1.0e4
OBJECTIVES = ("crf", "softmax")
# dtypes the numpy Viterbi handles bit for bit like torch
_NUMPY_DTYPES = (torch.float32, torch.float64)


class CRF(nn.Module):
    def __init__(
        self,
        allowed_transitions: numpy.ndarray,
        allowed_start: numpy.ndarray,
        allowed_end: numpy.ndarray,
        *,
        objective: str = "crf",
    ):
        super().__init__()
        if objective not in OBJECTIVES:
            raise ValueError(f"Unknown objective {objective!r}: expected one of {OBJECTIVES}.")
        K = allowed_transitions.shape[0]
        if allowed_transitions.shape != (K, K) or allowed_start.shape != (K,):
            raise ValueError(
                f"Constraint shapes do not match: transitions {allowed_transitions.shape}, "
                f"start {allowed_start.shape}, end {allowed_end.shape}."
            )
        self.num_tags = K
        self.objective = objective
        self.register_buffer("allowed_transitions", torch.as_tensor(allowed_transitions, dtype=torch.bool))
        self.register_buffer("allowed_start", torch.as_tensor(allowed_start, dtype=torch.bool))
        self.register_buffer("allowed_end", torch.as_tensor(allowed_end, dtype=torch.bool))
        if objective == "crf":
            self.transitions = nn.Parameter(torch.empty(K, K).uniform_(-0.1, 0.1))
            self.start = nn.Parameter(torch.empty(K).uniform_(-0.1, 0.1))
            self.end = nn.Parameter(torch.empty(K).uniform_(-0.1, 0.1))
        else:
            self.register_buffer("transitions", torch.zeros(K, K))
            self.register_buffer("start", torch.zeros(K))
            self.register_buffer("end", torch.zeros(K))

    # ------------------------------------------------------------------ scores
    def _scores(self, neg: float) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        trans = self.transitions.masked_fill(~self.allowed_transitions, neg)
        start = self.start.masked_fill(~self.allowed_start, neg)
        end = self.end.masked_fill(~self.allowed_end, neg)
        return trans, start, end

    def potentials(self, emissions: torch.Tensor) -> torch.Tensor:
        """Per-token scores the chain runs on: raw emissions (crf) or log-softmax (softmax)."""
        if self.objective == "softmax":
            return emissions.log_softmax(-1)
        return emissions

    # ---------------------------------------------------------------- training
    def forward(
        self, emissions: torch.Tensor, mask: torch.Tensor, allowed: torch.Tensor
    ) -> torch.Tensor:
        """Negative log-likelihood per sequence, shape (batch,).

        emissions (B, T, K) float; mask (B, T) bool, right-padded, every row non-empty;
        allowed (B, T, K) bool: the tags the gold annotation allows at each position.
        """
        self._check(emissions, mask)
        if allowed.shape != emissions.shape:
            raise ValueError(f"allowed {tuple(allowed.shape)} != emissions {tuple(emissions.shape)}")
        if self.objective == "softmax":
            logp = emissions.log_softmax(-1).masked_fill(~allowed, NEG)
            token_ll = torch.logsumexp(logp, -1).masked_fill(~mask, 0.0)
            return -token_ll.sum(1)
        both = torch.cat([emissions, emissions.masked_fill(~allowed, NEG)], 0)
        log_z = self.log_partition(both, torch.cat([mask, mask], 0))
        batch = emissions.shape[0]
        return log_z[:batch] - log_z[batch:]

    def log_partition(self, emissions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """log Z over valid paths by the forward algorithm, shape (batch,).

        Differentiable: the gradient is computed from forward-backward marginals (see
        _LogPartition), not by backpropagating through every step of the recursion.
        """
        trans, start, end = self._scores(NEG)
        return _LogPartition.apply(self.potentials(emissions), trans, start, end, mask)

    # ---------------------------------------------------------------- decoding
    @torch.no_grad()
    def viterbi(self, emissions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Best valid path per sequence, (B, T) long, 0 at padding, on the emissions' device.

        On the CPU the recursion runs in numpy (see the module docstring), elsewhere in torch;
        both give the same paths.
        """
        self._check(emissions, mask)
        trans, start, end = self._scores(float("-inf"))
        pot = self.potentials(emissions)
        dtype = functools.reduce(torch.promote_types, [x.dtype for x in (pot, trans, start, end)])
        if not _in_numpy(pot) or dtype not in _NUMPY_DTYPES:
            return _viterbi_torch(pot, mask, trans, start, end)
        pot, trans, start, end = (x.detach().to(dtype).numpy() for x in (pot, trans, start, end))
        return torch.from_numpy(_viterbi_numpy(pot, mask.numpy().astype(bool), trans, start, end))

    @torch.no_grad()
    def forward_backward(
        self, emissions: torch.Tensor, mask: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """log alpha (B, T, K), log beta (B, T, K) and log Z (B,) over valid paths.

        alpha[t] includes the score of position t; beta[t] covers positions after t (and the
        end score), so alpha[t] + beta[t] - log Z is the log marginal of each tag at t (at real
        positions; padded positions hold no meaningful values). In the dtype of emissions and
        parameters combined; on the CPU computed in float64 by numpy.
        """
        if _in_numpy(emissions):
            alpha, beta, log_z = self._numpy_chain(emissions, mask).log_alpha_beta()
            dtype = torch.promote_types(emissions.dtype, self.transitions.dtype)
            return tuple(torch.from_numpy(x).to(dtype) for x in (alpha, beta, log_z))
        chain = self._chain(emissions, mask)
        a_hat, log_a = chain.forward()
        b_hat, log_b = chain.backward()
        log_alpha = a_hat.log() + log_a.unsqueeze(2)
        log_beta = b_hat.log() + log_b.unsqueeze(2)
        return log_alpha, log_beta, chain.log_z(a_hat, log_a)

    @torch.no_grad()
    def marginals(self, emissions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """P(tag at t = k), (B, T, K); rows sum to 1 at real positions, 0 at padding."""
        if _in_numpy(emissions):
            marg = self._numpy_chain(emissions, mask).marginals()
            dtype = torch.promote_types(emissions.dtype, self.transitions.dtype)
            return torch.from_numpy(marg).to(dtype)
        chain = self._chain(emissions, mask)
        return chain.marginals(chain.forward()[0], chain.backward()[0])

    def _chain(self, emissions: torch.Tensor, mask: torch.Tensor) -> "_Chain":
        self._check(emissions, mask)
        trans, start, end = self._scores(NEG)
        return _Chain(self.potentials(emissions), mask, trans, start, end)

    @torch.no_grad()
    def _numpy_chain(self, emissions: torch.Tensor, mask: torch.Tensor) -> "_NumpyChain":
        self._check(emissions, mask)
        trans, start, end = self._scores(NEG)
        args = (self.potentials(emissions), trans, start, end)
        pot, trans, start, end = (x.detach().cpu().double().numpy() for x in args)
        return _NumpyChain(pot, mask.cpu().numpy().astype(bool), trans, start, end)

    @torch.no_grad()
    def span_log_probs(
        self,
        emissions: torch.Tensor,
        mask: torch.Tensor,
        spans: Sequence[Tuple[int, int, int, Sequence[int]]],
        *,
        scheme: str,
    ) -> List[float]:
        """log P(exactly this span with this label) for each (row, start, end, tag_ids).

        tag_ids are the gold tags over [start, end) under `scheme`. For BILUO the path from the
        B to the L (or a single U) pins the span down; for BIO the token after the span must not
        continue it, so the tail sums over every next tag except the span's I- tag.
        """
        if not spans:
            return []
        if _in_numpy(emissions):
            chain = self._numpy_chain(emissions, mask)
            alpha, beta, log_z = chain.log_alpha_beta()
            pot, trans, lengths = chain.pot, chain.trans, chain.last + 1
        else:
            alpha, beta, log_z = self.forward_backward(emissions, mask)
            alpha, beta, log_z = (x.double().cpu().numpy() for x in (alpha, beta, log_z))
            pot = self.potentials(emissions).detach().double().cpu().numpy()
            trans = self._scores(NEG)[0].detach().double().cpu().numpy()
            lengths = mask.sum(1).cpu().numpy()
        continuation = _continuations(self.allowed_transitions.cpu().numpy())
        out = []
        for row, start, stop, tags in spans:
            last = stop - 1
            score = alpha[row, start, tags[0]] - log_z[row]
            for t in range(start + 1, stop):
                score += trans[tags[t - start - 1], tags[t - start]] + pot[row, t, tags[t - start]]
            if scheme == "BILUO" or last == lengths[row] - 1:
                score += beta[row, last, tags[-1]]
            else:
                nxt = trans[tags[-1]] + pot[row, last + 1] + beta[row, last + 1]
                cont = continuation[tags[-1]]
                if cont >= 0:
                    nxt = numpy.delete(nxt, cont)
                score += float(numpy.logaddexp.reduce(nxt))
            out.append(float(score))
        return out

    def _check(self, emissions: torch.Tensor, mask: torch.Tensor) -> None:
        if emissions.dim() != 3 or emissions.shape[2] != self.num_tags:
            raise ValueError(
                f"Expected emissions of shape (batch, length, {self.num_tags}), "
                f"got {tuple(emissions.shape)}."
            )
        if mask.shape != emissions.shape[:2]:
            raise ValueError(f"mask {tuple(mask.shape)} != emissions {tuple(emissions.shape[:2])}")
        if emissions.shape[1] == 0 or not bool(mask[:, 0].all()):
            raise ValueError("Every sequence must have at least one position (mask[:, 0]).")


# Sums of probabilities below this are treated as this (log -69): keeps log() finite where no
# valid path reaches a position (an impossible partial annotation); such sequences get a huge but
# finite loss instead of NaN.
_TINY = 1.0e-30
# Products with at most this many multiply-adds (batch x K x K) run in the calling thread in
# the common BLAS libraries (OpenBLAS, numpy's, splits a GEMM across threads only above
# 4 x 65536); larger batches use einsum, which never starts threads.
_BLAS_ONE_THREAD = 65536


class _Chain:
    """Forward and backward recursions in scaled probability space.

    Each step is a (B, K) x (K, K) matrix product with exp(trans), a product with the position's
    exp(potentials) and a renormalisation: four or five small ops a step, where logsumexp over a
    (B, K, K) tensor takes about ten. Shifts keep every exponent <= 0 (the potentials by their
    maximum per position, the transitions by their global maximum) and the logs of the shifts and
    normalisers are accumulated outside the loop, so nothing overflows and log Z is exact.
    Right-padded rows need no masking inside the loop: the forward pass is causal (each row is
    read at its own last position) and the backward pass runs over each row reversed within its
    length.
    """

    def __init__(self, pot, mask, trans, start, end):
        B, T, K = pot.shape
        self.mask = mask
        self.T = T
        self.rows = torch.arange(B, device=pot.device)
        self.last = mask.sum(1) - 1
        self.trans_max = trans.max()
        self.exp_trans = (trans - self.trans_max).exp()
        first = pot[:, :1] + start
        shifted = torch.cat([first, pot[:, 1:]], 1) if T > 1 else first
        self.pot_max = shifted.amax(2)  # (B, T)
        self.exp_pot = (shifted - self.pot_max.unsqueeze(2)).exp()
        self.end_max = end.max()
        self.exp_end = (end - self.end_max).exp()
        # log of the scalar factors pulled out of alpha[t]: potential shifts and transition shifts
        ts = torch.arange(T, device=pot.device, dtype=pot.dtype)
        self.alpha_shift = self.pot_max.cumsum(1) + ts * self.trans_max

    def forward(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """Normalised alphas (B, T, K) and log of their scale (B, T)."""
        steps = self.exp_pot.unbind(1)
        a = steps[0]
        norm = a.sum(1, keepdim=True).clamp_min(_TINY)
        a = a / norm
        alphas, norms = [a], [norm]
        for t in range(1, self.T):
            a = (a @ self.exp_trans) * steps[t]
            norm = a.sum(1, keepdim=True).clamp_min(_TINY)
            a = a / norm
            alphas.append(a)
            norms.append(norm)
        log_scale = torch.cat(norms, 1).log().cumsum(1) + self.alpha_shift
        return torch.stack(alphas, 1), log_scale

    def backward(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """Normalised betas (B, T, K) and log of their scale (B, T)."""
        B, T = self.mask.shape
        ts = torch.arange(T, device=self.mask.device)
        # reverse each row within its length (an involution; padding stays in place)
        rev = torch.where(self.mask, self.last.unsqueeze(1) - ts, ts)
        idx = rev.unsqueeze(2).expand_as(self.exp_pot)
        exp_pot = self.exp_pot.gather(1, idx)
        pot_max = self.pot_max.gather(1, rev)
        steps = exp_pot.unbind(1)
        b = self.exp_end.expand(B, -1)
        norm = b.sum(1, keepdim=True)
        b = b / norm
        betas, norms = [b], [norm]
        trans_t = self.exp_trans.t()
        for u in range(1, T):
            b = (steps[u - 1] * b) @ trans_t
            norm = b.sum(1, keepdim=True).clamp_min(_TINY)
            b = b / norm
            betas.append(b)
            norms.append(norm)
        # reversed position u holds beta of position last - u; its scale adds the potential
        # shifts of positions last - u + 1 .. last and one transition shift per step
        us = ts.to(self.pot_max.dtype)
        shift = torch.cat([torch.zeros_like(pot_max[:, :1]), pot_max[:, :-1]], 1).cumsum(1)
        log_scale = torch.cat(norms, 1).log().cumsum(1) + shift + us * self.trans_max + self.end_max
        beta = torch.stack(betas, 1).gather(1, idx)
        return beta, log_scale.gather(1, rev)

    def log_z(self, a_hat: torch.Tensor, log_a: torch.Tensor) -> torch.Tensor:
        final = a_hat[self.rows, self.last]
        total = (final * self.exp_end).sum(1).clamp_min(_TINY)
        return total.log() + self.end_max + log_a[self.rows, self.last]

    def marginals(self, a_hat: torch.Tensor, b_hat: torch.Tensor) -> torch.Tensor:
        """P(y_t = k) at real positions, 0 at padding: alpha * beta renormalised per position."""
        prod = a_hat * b_hat
        return prod / prod.sum(2, keepdim=True).clamp_min(_TINY) * self.mask.unsqueeze(2)


class _LogPartition(torch.autograd.Function):
    """log Z with its gradient from the marginals (the classic CRF gradient).

    d logZ / d pot[b, t, k] = P(y_t = k), d logZ / d trans[i, j] = expected count of i -> j,
    d start / d end: the first / last marginals. One backward recursion plus a few batched ops,
    instead of autograd through every small op of every time step.
    """

    @staticmethod
    def forward(ctx, pot, trans, start, end, mask):
        chain = _Chain(pot, mask, trans, start, end)
        a_hat, log_a = chain.forward()
        ctx.chain = chain
        ctx.a_hat = a_hat
        return chain.log_z(a_hat, log_a)

    @staticmethod
    def backward(ctx, grad):
        chain, a_hat = ctx.chain, ctx.a_hat
        b_hat, _ = chain.backward()
        marg = chain.marginals(a_hat, b_hat)
        d_pot = marg * grad[:, None, None]
        d_trans = d_start = d_end = None
        if ctx.needs_input_grad[1] and chain.T > 1:
            # xi_t(i, j) ~ a_hat[t, i] E[i, j] P[t+1, j] b_hat[t+1, j], normalised per (b, t)
            nxt = chain.exp_pot[:, 1:] * b_hat[:, 1:]
            norm = ((a_hat[:, :-1] @ chain.exp_trans) * nxt).sum(2).clamp_min(_TINY)
            weight = chain.mask[:, 1:].to(norm.dtype) * grad[:, None] / norm
            K = a_hat.shape[2]
            left = (a_hat[:, :-1] * weight.unsqueeze(2)).reshape(-1, K)
            d_trans = chain.exp_trans * (left.t() @ nxt.reshape(-1, K))
        elif ctx.needs_input_grad[1]:
            d_trans = torch.zeros_like(chain.exp_trans)
        if ctx.needs_input_grad[2]:
            d_start = d_pot[:, 0].sum(0)
        if ctx.needs_input_grad[3]:
            d_end = d_pot[chain.rows, chain.last].sum(0)
        return d_pot, d_trans, d_start, d_end, None


def _in_numpy(tensor: torch.Tensor) -> bool:
    """Whether decoding runs in numpy (tensors on the CPU) rather than in torch."""
    return tensor.device.type == "cpu"


def _viterbi_torch(pot, mask, trans, start, end) -> torch.Tensor:
    """Viterbi in torch, for tensors that are not on the CPU (the backtrace stays on device).

    The recursion runs unmasked over the padded length (three ops a step); each row's end
    score is then read at its own last position, and padded backpointers are made the
    identity so the backtrace passes through them unchanged.
    """
    B, T, K = pot.shape
    steps = pot.unbind(1)
    score = start + steps[0]
    scores, backpointers = [score], []
    for t in range(1, T):
        best, idx = (score.unsqueeze(2) + trans).max(dim=1)
        score = best + steps[t]
        scores.append(score)
        backpointers.append(idx)
    last_pos = mask.sum(1) - 1
    final = torch.stack(scores, 1)[torch.arange(B, device=pot.device), last_pos]
    last = (final + end).argmax(dim=1, keepdim=True)  # (B, 1)
    path = [last]
    if T > 1:
        identity = torch.arange(K, device=pot.device).expand(B, T - 1, K)
        bps = torch.where(mask[:, 1:, None], torch.stack(backpointers, 1), identity)
        for bp in reversed(bps.unbind(1)):
            last = bp.gather(1, last)
            path.append(last)
    path.reverse()
    return torch.cat(path, dim=1).masked_fill(~mask, 0)


def _viterbi_numpy(
    pot: numpy.ndarray,
    mask: numpy.ndarray,
    trans: numpy.ndarray,
    start: numpy.ndarray,
    end: numpy.ndarray,
) -> numpy.ndarray:
    """The recursion of `_viterbi_torch` in numpy, (B, T) int64; same dtype, same paths.

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


class _NumpyChain:
    """The recursions of `_Chain` in numpy, time-major inside, for decoding on the CPU.

    The same scaled probability space and shifts as `_Chain`, in the dtype of the inputs
    (float64 from the CRF). The per-step product uses BLAS only where the batch is small
    enough for every BLAS to run it in the calling thread, and einsum's own loop otherwise.
    """

    def __init__(self, pot, mask, trans, start, end):
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
        total = numpy.maximum((final * self.exp_end).sum(1), _TINY)
        log_z = numpy.log(total) + self.end_max + log_a[self.rows, self.last]
        with numpy.errstate(divide="ignore"):  # a tag no valid path reaches: log 0 = -inf
            log_alpha = numpy.log(a_hat.transpose(1, 0, 2)) + log_a[:, :, None]
            log_beta = numpy.log(b_hat.transpose(1, 0, 2)) + log_b[:, :, None]
        return log_alpha, log_beta, log_z

    def marginals(self) -> numpy.ndarray:
        """P(y_t = k), (B, T, K), at real positions, 0 at padding."""
        prod = (self.forward()[0] * self.backward()[0]).transpose(1, 0, 2)
        total = numpy.maximum(prod.sum(2, keepdims=True), _TINY)
        return prod / total * self.mask[:, :, None]


def _normalise(h: numpy.ndarray, norm: numpy.ndarray, *, clamp: bool) -> None:
    """Divide each row of h (B, K) by its sum, written to norm (B, 1), in place."""
    h.sum(1, keepdims=True, out=norm)
    if clamp:
        numpy.maximum(norm, _TINY, out=norm)
    numpy.divide(h, norm, out=h)


def _continuations(allowed_transitions: numpy.ndarray) -> numpy.ndarray:
    """For each tag, the tag that would extend its entity past it under BIO, else -1.

    That is the unique tag allowed after it that may not follow O (tag 0): I-X after B-X or I-X.
    """
    extend = allowed_transitions & ~allowed_transitions[0][None, :]
    out = numpy.full(allowed_transitions.shape[0], -1, dtype=int)
    for i, row in enumerate(extend):
        cands = numpy.flatnonzero(row)
        if len(cands) == 1:
            out[i] = cands[0]
    return out

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
"""
from typing import List, Sequence, Tuple

import numpy
import torch
from torch import nn

# Differentiable paths use a large finite penalty instead of -inf so gradients stay finite
# (logsumexp of all -inf has a NaN gradient). exp(-1e4) underflows to exactly 0 in float32 and
# float64, so invalid paths carry exactly zero probability mass. Viterbi uses a true -inf.
NEG = -1.0e4
OBJECTIVES = ("crf", "softmax")


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
        """Best valid path per sequence, (B, T) long, 0 at padding. Backtrace stays on device."""
        self._check(emissions, mask)
        trans, start, end = self._scores(float("-inf"))
        pot = self.potentials(emissions)
        B, T, K = pot.shape
        score = start + pot[:, 0]
        identity = torch.arange(K, device=pot.device).expand(B, K)
        backpointers = []
        for t in range(1, T):
            best, idx = (score.unsqueeze(2) + trans).max(dim=1)
            step = mask[:, t].unsqueeze(1)
            score = torch.where(step, best + pot[:, t], score)
            backpointers.append(torch.where(step, idx, identity))
        last = (score + end).argmax(dim=1)
        path = [last]
        for bp in reversed(backpointers):
            last = bp.gather(1, last.unsqueeze(1)).squeeze(1)
            path.append(last)
        path.reverse()
        return torch.stack(path, dim=1).masked_fill(~mask, 0)

    @torch.no_grad()
    def forward_backward(
        self, emissions: torch.Tensor, mask: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """log alpha (B, T, K), log beta (B, T, K) and log Z (B,) over valid paths.

        alpha[t] includes the score of position t; beta[t] covers positions after t (and the
        end score), so alpha[t] + beta[t] - log Z is the log marginal of each tag at t.
        """
        self._check(emissions, mask)
        trans, start, end = self._scores(NEG)
        pot = self.potentials(emissions)
        alpha = _alphas(pot, mask, trans, start)
        beta = _betas(pot, mask, trans, end)
        log_z = torch.logsumexp(alpha[:, -1] + end, dim=1)
        return alpha, beta, log_z

    @torch.no_grad()
    def marginals(self, emissions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """P(tag at t = k), (B, T, K); rows sum to 1 at real positions, 0 at padding."""
        alpha, beta, log_z = self.forward_backward(emissions, mask)
        probs = (alpha + beta - log_z[:, None, None]).exp()
        return probs * mask.unsqueeze(2)

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
        alpha, beta, log_z = self.forward_backward(emissions, mask)
        trans, _, _ = self._scores(NEG)
        pot = self.potentials(emissions).detach()
        alpha, beta, log_z = (x.double().cpu().numpy() for x in (alpha, beta, log_z))
        pot = pot.double().cpu().numpy()
        trans = trans.detach().double().cpu().numpy()
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


# Sums of probabilities below this are treated as this (log -69): keeps log() and its gradient
# finite where a tag is unreachable; such tags weigh exp(-69) ~ 1e-30 of the total, i.e. nothing.
_TINY = 1.0e-30


def _exp_columns(trans: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """exp(trans - max of each column) (entries <= 1, no overflow) and the column maxima."""
    col_max = trans.amax(0)
    return (trans - col_max).exp(), col_max


def _log_matmul_exp(
    alpha: torch.Tensor, exp_trans: torch.Tensor, col_max: torch.Tensor
) -> torch.Tensor:
    """logsumexp_i(alpha[b, i] + trans[i, j]) as one matrix product: (B, K) -> (B, K).

    The forward algorithm's inner step. A matmul of exp-shifted scores is several times faster
    than materialising the (B, K, K) sum and reducing it, forward and backward.
    """
    shift = alpha.amax(1, keepdim=True)
    total = ((alpha - shift).exp() @ exp_trans).clamp_min(_TINY)
    return total.log() + shift + col_max


def _alphas(pot, mask, trans, start) -> torch.Tensor:
    """Forward scores (B, T, K); padded positions repeat the last real one."""
    steps, masks = pot.unbind(1), mask.unbind(1)
    exp_trans, col_max = _exp_columns(trans)
    alphas = [start + steps[0]]
    for t in range(1, len(steps)):
        nxt = _log_matmul_exp(alphas[-1], exp_trans, col_max) + steps[t]
        alphas.append(torch.where(masks[t].unsqueeze(1), nxt, alphas[-1]))
    return torch.stack(alphas, 1)


def _betas(pot, mask, trans, end) -> torch.Tensor:
    """Backward scores (B, T, K): beta[t] covers t+1.. and the end; `end` at the last position."""
    steps, masks = pot.unbind(1), mask.unbind(1)
    exp_trans_t, row_max = _exp_columns(trans.t())
    end_b = end.expand_as(steps[0])
    betas = [end_b]
    for t in range(len(steps) - 2, -1, -1):
        nxt = _log_matmul_exp(steps[t + 1] + betas[-1], exp_trans_t, row_max)
        betas.append(torch.where(masks[t + 1].unsqueeze(1), nxt, end_b))
    betas.reverse()
    return torch.stack(betas, 1)


class _LogPartition(torch.autograd.Function):
    """log Z with its gradient from the marginals (the classic CRF gradient).

    d logZ / d pot[b, t, k] = P(y_t = k), d logZ / d trans[i, j] = expected count of i -> j,
    d start / d end: the first / last marginals. One backward pass (beta) plus a few batched
    ops, instead of autograd through ~10 small ops per time step.
    """

    @staticmethod
    def forward(ctx, pot, trans, start, end, mask):
        alpha = _alphas(pot, mask, trans, start)
        log_z = torch.logsumexp(alpha[:, -1] + end, dim=1)
        ctx.save_for_backward(pot, trans, end, mask, alpha, log_z)
        return log_z

    @staticmethod
    def backward(ctx, grad):
        pot, trans, end, mask, alpha, log_z = ctx.saved_tensors
        beta = _betas(pot, mask, trans, end)
        g = grad[:, None, None]
        lz = log_z[:, None, None]
        d_pot = (alpha + beta - lz).exp() * mask.unsqueeze(2) * g
        pair = alpha[:, :-1, :, None] + trans + (pot + beta)[:, 1:, None, :] - lz.unsqueeze(3)
        weight = (mask[:, 1:] * grad[:, None]).to(pair.dtype)
        d_trans = torch.einsum("btij,bt->ij", pair.exp(), weight)
        d_start = d_pot[:, 0].sum(0)
        d_end = ((alpha[:, -1] + end - log_z[:, None]).exp() * grad[:, None]).sum(0)
        return d_pot, d_trans, d_start, d_end, None


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

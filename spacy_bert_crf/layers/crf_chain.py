"""The time recursions of the constrained CRF in torch (constrained_crf.py): forward-backward in
scaled probability space (TorchChain), log Z with the classic CRF gradient from the marginals
(LogPartition), and Viterbi for tensors that are not on the CPU (viterbi_torch). On the CPU,
decoding runs the same recursions in numpy instead (crf_decode.py); training always runs these.

The scores come in with the tag constraints already applied (a large finite penalty, or -inf for
Viterbi, where a transition, first or last tag is not allowed): nothing here knows about them.
"""
from typing import Tuple

import torch

from .crf_decode import TINY


class TorchChain:
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
        norm = a.sum(1, keepdim=True).clamp_min(TINY)
        a = a / norm
        alphas, norms = [a], [norm]
        for t in range(1, self.T):
            a = (a @ self.exp_trans) * steps[t]
            norm = a.sum(1, keepdim=True).clamp_min(TINY)
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
            norm = b.sum(1, keepdim=True).clamp_min(TINY)
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
        total = (final * self.exp_end).sum(1).clamp_min(TINY)
        return total.log() + self.end_max + log_a[self.rows, self.last]

    def marginals(self, a_hat: torch.Tensor, b_hat: torch.Tensor) -> torch.Tensor:
        """P(y_t = k) at real positions, 0 at padding: alpha * beta renormalised per position."""
        prod = a_hat * b_hat
        return prod / prod.sum(2, keepdim=True).clamp_min(TINY) * self.mask.unsqueeze(2)


class LogPartition(torch.autograd.Function):
    """log Z with its gradient from the marginals (the classic CRF gradient).

    d logZ / d pot[b, t, k] = P(y_t = k), d logZ / d trans[i, j] = expected count of i -> j,
    d start / d end: the first / last marginals. One backward recursion plus a few batched ops,
    instead of autograd through every small op of every time step.
    """

    @staticmethod
    def forward(ctx, pot, trans, start, end, mask):
        chain = TorchChain(pot, mask, trans, start, end)
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
            norm = ((a_hat[:, :-1] @ chain.exp_trans) * nxt).sum(2).clamp_min(TINY)
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


def viterbi_torch(pot, mask, trans, start, end) -> torch.Tensor:
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

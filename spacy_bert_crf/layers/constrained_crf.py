"""A constrained linear-chain CRF as a PyTorch module, with no knowledge of labels or schemes.

The component (``crf_ner``) turns its tags into constraints (``tag_schemes``) and hands them to
the module: which transitions, first and last tags are allowed, and which tag would continue an
entity past its last token (for the confidence of exactly that span).

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
recursions in numpy (``crf_decode``), so that a busy CPU cannot stall it; tensors on another
device, or in a dtype numpy lacks, take the torch path. Training (the autograd path) stays in
torch. The torch recursions themselves are in ``crf_chain``.

The module is called through thinc's PyTorchWrapper (``layers/crf.py``): ``forward`` computes the
loss, or with ``task="viterbi"`` / ``task="span_log_probs"`` decodes.
"""
import functools
from typing import List, Optional, Sequence, Tuple

import numpy
import torch
from torch import nn

from .crf_chain import LogPartition, TorchChain, viterbi_torch
from .crf_decode import TINY, NumpyChain
from .crf_viterbi import viterbi_numpy

# Differentiable paths use a large finite penalty instead of -inf so gradients stay finite
# (logsumexp of all -inf has a NaN gradient). exp(-1e4) underflows to exactly 0 in float32 and
# float64, so invalid paths carry exactly zero probability mass. Viterbi uses a true -inf.
NEG = -1.0e4
OBJECTIVES = ("crf", "softmax")
# dtypes the numpy Viterbi handles bit for bit like torch
_NUMPY_DTYPES = (torch.float32, torch.float64)


class ConstrainedCRF(nn.Module):
    # buffers (register_buffer) and, for "crf", parameters: declared for the type checker, which
    # otherwise sees nn.Module.__getattr__'s Tensor | Module
    allowed_transitions: torch.Tensor
    allowed_start: torch.Tensor
    allowed_end: torch.Tensor
    continuation: torch.Tensor
    transitions: torch.Tensor
    start: torch.Tensor
    end: torch.Tensor

    def __init__(
        self,
        allowed_transitions: numpy.ndarray,
        allowed_start: numpy.ndarray,
        allowed_end: numpy.ndarray,
        continuation: Optional[numpy.ndarray] = None,
        *,
        objective: str = "crf",
    ):
        """allowed_transitions (K, K), allowed_start (K,), allowed_end (K,): bools.
        continuation (Optional[numpy.ndarray]): (K,) ints, for each tag the tag that would
            continue an entity ending on it (BIO: I-X after B-X or I-X), -1 for none.
        objective (str): "crf" (learned transitions) or "softmax" (the ablation).
        """
        super().__init__()
        if objective not in OBJECTIVES:
            raise ValueError(f"Unknown objective {objective!r}: expected one of {OBJECTIVES}.")
        K = allowed_transitions.shape[0]
        shapes = (allowed_transitions.shape, allowed_start.shape, allowed_end.shape)
        if shapes != ((K, K), (K,), (K,)):
            raise ValueError(
                f"Constraint shapes do not match: transitions {allowed_transitions.shape}, "
                f"start {allowed_start.shape}, end {allowed_end.shape}."
            )
        self.num_tags = K
        self.objective = objective
        self.register_buffer(
            "allowed_transitions", torch.as_tensor(allowed_transitions, dtype=torch.bool)
        )
        self.register_buffer("allowed_start", torch.as_tensor(allowed_start, dtype=torch.bool))
        self.register_buffer("allowed_end", torch.as_tensor(allowed_end, dtype=torch.bool))
        if continuation is None:
            continuation = numpy.full(K, -1)
        if numpy.shape(continuation) != (K,):
            raise ValueError(f"continuation {numpy.shape(continuation)} != ({K},)")
        # derived from the constraints by the caller, so not saved with the weights
        self.register_buffer(
            "continuation", torch.as_tensor(continuation, dtype=torch.long), persistent=False
        )
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
        self,
        emissions: torch.Tensor,
        mask: torch.Tensor,
        allowed: torch.Tensor,
        *,
        task: str = "nll",
        spans: Sequence[Tuple[int, int, int, Sequence[int]]] = (),
    ) -> torch.Tensor:
        """The loss, or a decoding, over the tag sequences `allowed` admits.

        emissions (B, T, K) float; mask (B, T) bool, right-padded, every row non-empty;
        allowed (B, T, K) bool: the tags each position may take (training: the gold annotation;
            decoding: what earlier components fixed).
        task (str): "nll": negative log-likelihood per sequence (B,). "viterbi": the best path
            per sequence (B, T) long. "span_log_probs": log P(exactly this span) for each of
            `spans` (see span_log_probs), as a (len(spans),) float64 tensor.
        """
        if task != "nll":
            with torch.no_grad():
                restricted = emissions.masked_fill(~allowed, NEG)
                if task == "viterbi":
                    return self.viterbi(restricted, mask)
                if task == "span_log_probs":
                    span_logp = self.span_log_probs(restricted, mask, spans)
                    return torch.tensor(span_logp, dtype=torch.float64)
            raise ValueError(f"Unknown task {task!r}: expected nll, viterbi or span_log_probs.")
        self._check(emissions, mask)
        if allowed.shape != emissions.shape:
            raise ValueError(
                f"allowed {tuple(allowed.shape)} != emissions {tuple(emissions.shape)}"
            )
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
        LogPartition), not by backpropagating through every step of the recursion.
        """
        trans, start, end = self._scores(NEG)
        return LogPartition.apply(self.potentials(emissions), trans, start, end, mask)

    def token_log_probs(self, emissions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """log P(y_t = k) of every position and tag under the model, (B, T, K), differentiable.

        "crf": the marginals of the chain over valid paths by forward-backward, in the scaled
        probability space of TorchChain, with autograd through the recursions (this, not the
        custom backward of log_partition, so that the marginals themselves have a gradient).
        "softmax": the per-token log-softmax, the distribution that objective trains.
        Positions with no probability (padding, tags no valid path reaches) hold log TINY, a
        finite value, so that a zero target times it is zero and not NaN.
        """
        self._check(emissions, mask)
        if self.objective == "softmax":
            return emissions.log_softmax(-1)
        chain = self._chain(emissions, mask)
        marginals = chain.marginals(chain.forward()[0], chain.backward()[0])
        return marginals.clamp_min(TINY).log()

    def kl_to_targets(
        self,
        emissions: torch.Tensor,
        mask: torch.Tensor,
        targets: torch.Tensor,
        target_mask: torch.Tensor,
    ) -> torch.Tensor:
        """KL(targets || model) summed over the positions of target_mask, per sequence (B,).

        targets (B, T, K): a distribution over the tags at each position (e.g. a teacher's
            marginals), not differentiated; target_mask (B, T) bool: the positions that have
            one (a subset of mask). Each position contributes sum_k q_k (log q_k - log p_k)
            with 0 log 0 = 0 and p from token_log_probs.
        """
        if targets.shape != emissions.shape or target_mask.shape != mask.shape:
            raise ValueError(
                f"targets {tuple(targets.shape)} / target_mask {tuple(target_mask.shape)} do not "
                f"match emissions {tuple(emissions.shape)} / mask {tuple(mask.shape)}."
            )
        log_p = self.token_log_probs(emissions, mask)
        q = targets.to(log_p.dtype)
        log_q = torch.where(q > 0, q.clamp_min(TINY).log(), torch.zeros_like(q))
        per_token = (q * (log_q - log_p)).sum(2)
        return (per_token * (target_mask & mask).to(per_token.dtype)).sum(1)

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
            return viterbi_torch(pot, mask, trans, start, end)
        np_pot, np_trans, np_start, np_end = (
            x.detach().to(dtype).numpy() for x in (pot, trans, start, end)
        )
        return torch.from_numpy(
            viterbi_numpy(np_pot, mask.numpy().astype(bool), np_trans, np_start, np_end)
        )

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
            return (
                torch.from_numpy(alpha).to(dtype),
                torch.from_numpy(beta).to(dtype),
                torch.from_numpy(log_z).to(dtype),
            )
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

    def _chain(self, emissions: torch.Tensor, mask: torch.Tensor) -> TorchChain:
        self._check(emissions, mask)
        trans, start, end = self._scores(NEG)
        return TorchChain(self.potentials(emissions), mask, trans, start, end)

    @torch.no_grad()
    def _numpy_chain(self, emissions: torch.Tensor, mask: torch.Tensor) -> NumpyChain:
        self._check(emissions, mask)
        trans, start, end = self._scores(NEG)
        args = (self.potentials(emissions), trans, start, end)
        # numpy's float64 copy: torch's .double() splits the copy across its busy thread pool
        pot, np_trans, np_start, np_end = (
            x.detach().cpu().numpy().astype(numpy.float64) for x in args
        )
        return NumpyChain(pot, mask.cpu().numpy().astype(bool), np_trans, np_start, np_end)

    @torch.no_grad()
    def span_log_probs(
        self,
        emissions: torch.Tensor,
        mask: torch.Tensor,
        spans: Sequence[Tuple[int, int, int, Sequence[int]]],
    ) -> List[float]:
        """log P(exactly this span with this label) for each (row, start, end, tag_ids).

        tag_ids are the tags over [start, end). The path over the span pins it down, except that
        the token after it must not continue it (BIO: an I- tag after the span's last tag): the
        tail sums over every next tag but the last tag's continuation.
        """
        if not spans:
            return []
        if _in_numpy(emissions):
            chain = self._numpy_chain(emissions, mask)
            alpha, beta, log_z = chain.log_alpha_beta()
            pot, trans, lengths = chain.pot, chain.trans, chain.last + 1
        else:
            t_alpha, t_beta, t_log_z = self.forward_backward(emissions, mask)
            alpha, beta, log_z = (x.double().cpu().numpy() for x in (t_alpha, t_beta, t_log_z))
            pot = self.potentials(emissions).detach().double().cpu().numpy()
            trans = self._scores(NEG)[0].detach().double().cpu().numpy()
            lengths = mask.sum(1).cpu().numpy()
        continuation = self.continuation.cpu().numpy()
        out = []
        for row, start, stop, tags in spans:
            last = stop - 1
            score = alpha[row, start, tags[0]] - log_z[row]
            for t in range(start + 1, stop):
                score += trans[tags[t - start - 1], tags[t - start]] + pot[row, t, tags[t - start]]
            cont = continuation[tags[-1]]
            if cont < 0 or last == lengths[row] - 1:
                score += beta[row, last, tags[-1]]
            else:
                nxt = trans[tags[-1]] + pot[row, last + 1] + beta[row, last + 1]
                score += float(numpy.logaddexp.reduce(numpy.delete(nxt, cont)))
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


def _in_numpy(tensor: torch.Tensor) -> bool:
    """Whether decoding runs in numpy (tensors on the CPU) rather than in torch."""
    return tensor.device.type == "cpu"

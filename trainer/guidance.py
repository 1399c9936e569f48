"""Memory-guided decoding: the arithmetic both in-process engines share.

A reply with a memory block is decoded from two prompts at once: the prompt as served (the
block in its system turn) and the same prompt without the block. At each token the next-token
distribution with the block is pushed away from the one without it, so what the block makes
likelier becomes likelier still (context-aware decoding, Shi et al. 2023), with a strength
that follows how much the two disagree (AdaCAD, Wang et al. 2024, arXiv 2409.07394):

    alpha  = memory_guidance * JSD(p_with, p_without)            (bits, in [0, 1])
    scores = logits_with + alpha * (log p_with - log p_without)

so the distribution sampled from is p_with^(1 + alpha) / p_without^alpha, renormalised. Where
the block changes nothing (an ordinary "ok, see you") the two agree, alpha is about 0 and the
reply is the plain one; where it tells the answer ("mint green") they part and the block's
tokens win. The usual sampling steps (repetition penalty, temperature, top-k, top-p) come
after, on `scores`: alpha 0 leaves the raw logits exactly as plain decoding sees them.
"""

from __future__ import annotations

import math

import torch

# A token is pushed only where its probability with the block is at least this share of the
# likeliest token's (Li et al. 2023 use 0.1).
PLAUSIBLE = 0.1


def guided_scores(
    with_memory: torch.Tensor, without_memory: torch.Tensor, scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """The guided next-token scores of each row ([rows, vocab] logits of the two prompts),
    and each row's strength alpha. At least float32 (the vocabulary sums need it); float64
    logits stay float64."""
    dtype = torch.promote_types(with_memory.dtype, torch.float32)
    logits = with_memory.to(dtype)
    log_p = torch.log_softmax(logits, -1)
    log_q = torch.log_softmax(without_memory.to(dtype), -1)
    alpha = scale * jensen_shannon(log_p, log_q)
    # Only tokens the prompt with the block finds plausible are pushed (contrastive
    # decoding's plausibility constraint): a token unlikely with the block and far less likely
    # without it would otherwise win on the ratio alone, and the reply breaks into fragments.
    plausible = log_p >= log_p.max(-1, keepdim=True).values + math.log(PLAUSIBLE)
    push = torch.where(plausible, log_p - log_q, 0.0)
    return logits + alpha[:, None] * push, alpha


def jensen_shannon(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """Jensen-Shannon divergence of each row's two distributions (log-probabilities), in bits:
    0 for the same distribution, 1 for two with nothing in common."""
    log_m = torch.logaddexp(log_p, log_q) - math.log(2.0)
    # p * (log p - log m), with 0 where p is 0 (its log may be -inf).
    kl_p = torch.where(log_p > -math.inf, log_p.exp() * (log_p - log_m), 0.0).sum(-1)
    kl_q = torch.where(log_q > -math.inf, log_q.exp() * (log_q - log_m), 0.0).sum(-1)
    return ((kl_p + kl_q) / (2.0 * math.log(2.0))).clamp(0.0, 1.0)

"""GRPO objective terms: the PPO-clipped policy loss and the KL to the reference policy."""

from __future__ import annotations

import torch


def clipped_policy_loss(log_prob: torch.Tensor, old_log_prob: torch.Tensor, advantages: torch.Tensor,
                        clip_range: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO-clipped surrogate (Schulman et al. 2017) on per-sample transition log-probs.

    rho_i = exp(log p_theta - log p_old)
    L_i   = max(-A_i * rho_i, -A_i * clip(rho_i, 1 - eps, 1 + eps))
    Returns the per-sample losses L_i (the objective is their mean over a batch, which the caller
    forms: under data parallelism a process holds only part of the batch) and detached statistics
    of these samples: the ratios, the clipped fraction and the approximate KL
    0.5 * mean((log p_theta - log p_old)^2).
    """
    log_ratio = log_prob - old_log_prob
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)
    losses = torch.maximum(unclipped, clipped)
    stats = {
        "ratio": ratio.detach(),
        "clip_fraction": ((ratio - 1.0).abs() > clip_range).float().mean().detach(),
        "approx_kl": 0.5 * (log_ratio.detach() ** 2).mean(),
    }
    return losses, stats


def mean_kl(mean: torch.Tensor, ref_mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, s^2) || N(ref_mean, s^2)) = (mean - ref_mean)^2 / (2 s^2), averaged over
    non-batch dimensions: the KL between the policy's and the reference's step distributions,
    which share the step's standard deviation. Zero where s = 0. Shape (B,)."""
    safe = torch.where(std > 0, std, torch.ones_like(std))
    kl = (mean - ref_mean) ** 2 / (2 * safe**2) * (std > 0)
    return kl.mean(dim=tuple(range(1, kl.ndim)))

"""DRIFT's per-step advantages for one iteration, built from the component functions.

Samples are grouped by prompt in blocks of G. For each group: the reward-concentrated subset is
selected on the raw rewards (component 1), the rewards are shaped toward intra-group diversity
(component 3, terminal or dense), and the returns are normalised within the kept subset.
Component 2 (prompt noise) acts on the rollouts, not here.
"""

from __future__ import annotations

import torch

from drift.method.shaping import (diversity_potential, dense_shaping_terms, returns_to_go, shaping_scale,
                                  terminal_bonus)
from drift.method.subset import select_subset


def group_advantages(returns: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """GRPO advantages normalised within each group's kept subset.

    A_i = (R_i - mean_{kept} R) / (std_{kept} R + eps) for kept i, 0 for dropped i.
    ``returns`` is (P, G) or (P, G, T) (per-step returns, normalised per step); ``mask`` is (P, G).
    """
    m = mask.to(returns.dtype)
    while m.ndim < returns.ndim:
        m = m.unsqueeze(-1)
    n = m.sum(dim=1, keepdim=True).clamp(min=1)
    mean = (returns * m).sum(dim=1, keepdim=True) / n
    var = (((returns - mean) ** 2) * m).sum(dim=1, keepdim=True) / n
    return (returns - mean) / (var.sqrt() + eps) * m


def shaped_returns(rewards: torch.Tensor, features: torch.Tensor, step_features: torch.Tensor | None, shaping,
                   num_steps: int) -> torch.Tensor:
    """Per-step returns (P, G, T): the reward, plus the diversity shaping when it is on.

    ``rewards`` (P, G); ``features`` (P, G, D) of the final samples; ``step_features``
    (P, G, T - 1, D) of the clean samples predicted at steps 1 .. T - 1 (dense mode only).
    terminal: R_t = r'_i = r_i + lambda * std_g(r) * Phi_i for every t.
    dense:    R_t = r_i + sum_{t' >= t} F_t', with F_t from ``dense_shaping_terms``.
    """
    P, G, T = rewards.shape[0], rewards.shape[1], num_steps
    if not shaping.enabled:
        return rewards[..., None].expand(P, G, T)
    final_potential = torch.stack([diversity_potential(f) for f in features])
    if shaping.mode == "terminal":
        shaped = torch.stack([terminal_bonus(r, phi, shaping.weight, shaping.gate)
                              for r, phi in zip(rewards, final_potential)])
        return shaped[..., None].expand(P, G, T)
    scale = torch.stack([shaping_scale(r, shaping.weight, shaping.gate) for r in rewards])
    potentials = torch.zeros(P, G, T + 1)
    potentials[..., T] = final_potential
    for t in range(1, T):
        potentials[:, :, t] = torch.stack([diversity_potential(f[:, t - 1]) for f in step_features])
    terms = torch.stack([dense_shaping_terms(potentials[p], scale[p], shaping.gamma) for p in range(P)])
    return torch.stack([returns_to_go(rewards[p], terms[p]) for p in range(P)])


def drift_advantages(rewards: torch.Tensor, features: torch.Tensor, step_features: torch.Tensor | None, cfg,
                     num_steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Advantages (B, T) and the kept mask (B,) for a whole iteration batch (B = P * G).

    Optional reward-concentrated subset (on the raw rewards), optional diversity shaping,
    advantages normalised within each group's kept subset, then clipped to +- train.adv_clip.
    """
    P, G = cfg.sampling.prompts_per_iteration, cfg.sampling.group_size
    r = rewards.reshape(P, G)
    sub = cfg.drift.subset
    mask = select_subset(r, sub.mode, sub.keep_ratio, sub.z_max) if sub.enabled else torch.ones(P, G, dtype=torch.bool)
    step_f = None if step_features is None else step_features.reshape(P, G, *step_features.shape[1:])
    returns = shaped_returns(r, features.reshape(P, G, -1), step_f, cfg.drift.shaping, num_steps)
    adv = group_advantages(returns, mask).reshape(P * G, -1)
    return adv.clamp(-cfg.train.adv_clip, cfg.train.adv_clip), mask.reshape(-1)

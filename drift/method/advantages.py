"""DRIFT's per-step advantages for one iteration, built from the component functions.

Samples are grouped by prompt in blocks of G. For each group: the reward-concentrated subset is
selected on the raw rewards (component 1), the rewards are shaped toward intra-group diversity
(component 3, terminal or dense), and the returns are normalised within the kept subset.
Component 2 (prompt noise) acts on the rollouts, not here.
"""

from __future__ import annotations

import torch

from drift.config import DriftConfig, ShapingSection
from drift.method.iteration_schedule import linear_schedule
from drift.method.shaping import (
    dense_shaping_terms,
    diversity_potential,
    gate_mask,
    potential_support,
    returns_to_go,
    shaping_scale,
    terminal_bonus,
)
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


def shaped_returns(rewards: torch.Tensor, features: torch.Tensor, step_features: torch.Tensor | None,
                   kept: torch.Tensor, shaping: ShapingSection, weight: float, num_steps: int) -> torch.Tensor:
    """Per-step returns (P, G, T): the reward, plus the diversity shaping when it is on.

    ``rewards`` (P, G); ``features`` (P, G, D) of the final samples; ``step_features``
    (P, G, T - 1, D) of the clean samples predicted at steps 1 .. T - 1 (dense mode only); ``kept``
    (P, G) the subset mask; ``weight`` lambda at this iteration. Per group, with A = the kept subset
    (shaping.over = kept) or the whole group, R = the gate's receivers within A and S = the
    potential's support (``drift.method.shaping``):
    terminal: R_t = r'_i = r_i + lambda * std_A(r) * 1[i in R] * Phi_i for every t;
    dense:    R_t = r_i + sum_{t' >= t} F_t', with F_t from ``dense_shaping_terms``.
    """
    P, G, T = rewards.shape[0], rewards.shape[1], num_steps
    if not shaping.enabled:
        return rewards[..., None].expand(P, G, T)
    among = kept if shaping.over == "kept" else torch.ones_like(kept)
    receives = torch.stack([gate_mask(r, shaping.gate, a) for r, a in zip(rewards, among)])
    support = potential_support(receives, among, shaping.gate)
    scale = torch.stack([shaping_scale(r, weight, rc, a) for r, rc, a in zip(rewards, receives, among)])
    final_potential = torch.stack([diversity_potential(f, s) for f, s in zip(features, support)])
    if shaping.mode == "terminal":
        return terminal_bonus(rewards, final_potential, scale)[..., None].expand(P, G, T)
    potentials = torch.zeros(P, G, T + 1)
    potentials[..., T] = final_potential
    for t in range(1, T):
        potentials[:, :, t] = torch.stack([diversity_potential(f[:, t - 1], s) for f, s in zip(step_features, support)])
    terms = torch.stack([dense_shaping_terms(potentials[p], scale[p], shaping.gamma) for p in range(P)])
    return torch.stack([returns_to_go(rewards[p], terms[p]) for p in range(P)])


def drift_advantages(rewards: torch.Tensor, features: torch.Tensor, step_features: torch.Tensor | None,
                     cfg: DriftConfig, num_steps: int, iteration: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Advantages (B, T) and the kept mask (B,) for a whole iteration batch (B = P * G).

    Optional reward-concentrated subset (on the raw rewards), optional diversity shaping with
    its weight scheduled over training iterations (lambda(i) linear from shaping.weight to
    shaping.final_weight over shaping.weight_iterations), advantages normalised within each group's
    kept subset, then clipped to +- train.adv_clip.
    """
    P, G = cfg.sampling.prompts_per_iteration, cfg.sampling.group_size
    r = rewards.reshape(P, G)
    sub = cfg.drift.subset
    mask = select_subset(r, sub.mode, sub.keep_ratio, sub.z_max) if sub.enabled else torch.ones(P, G, dtype=torch.bool)
    step_f = None if step_features is None else step_features.reshape(P, G, *step_features.shape[1:])
    sh = cfg.drift.shaping
    weight = linear_schedule(iteration, sh.weight, sh.final_weight, sh.weight_iterations)
    returns = shaped_returns(r, features.reshape(P, G, -1), step_f, mask, sh, weight, num_steps)
    adv = group_advantages(returns, mask).reshape(P * G, -1)
    return adv.clamp(-cfg.train.adv_clip, cfg.train.adv_clip), mask.reshape(-1)

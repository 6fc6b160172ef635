"""DRIFT component 3: potential-based reward shaping toward intra-group diversity.

Potentials are computed within one prompt group of G samples from an embedding f of each sample.
"""

from __future__ import annotations

import torch

from drift.scoring.diversity import cosine_similarity_matrix


def diversity_potential(features: torch.Tensor) -> torch.Tensor:
    """Phi_i = minmax_i(d_i) with d_i = 1 - mean_{j != i} cos(f_i, f_j), for features (G, D).

    Min-max normalised within the group to [0, 1]; all zeros when the group's d are equal.
    """
    g = features.shape[0]
    k = cosine_similarity_matrix(features)
    d = 1 - (k.sum(dim=1) - k.diagonal()) / max(g - 1, 1)
    spread = d.max() - d.min()
    if spread <= 1e-12:
        return torch.zeros_like(d)
    return (d - d.min()) / spread


def shaping_scale(rewards: torch.Tensor, weight: float, gate: bool) -> torch.Tensor:
    """c_i = lambda * std_g(r), zeroed by the optional gate for samples with r_i < mean_g(r).

    lambda is in units of the group's reward spread, so the bonus is scale-free. ``rewards`` is (G,).
    """
    c = weight * rewards.std(unbiased=False) * torch.ones_like(rewards)
    if gate:
        c = c * (rewards >= rewards.mean()).to(rewards.dtype)
    return c


def terminal_bonus(rewards: torch.Tensor, potential: torch.Tensor, weight: float, gate: bool) -> torch.Tensor:
    """Terminal shaping: r'_i = r_i + lambda * std_g(r) * Phi_i (per group, shapes (G,))."""
    return rewards + shaping_scale(rewards, weight, gate) * potential


def dense_shaping_terms(potentials: torch.Tensor, scale: torch.Tensor, gamma: float) -> torch.Tensor:
    """Per-step shaping terms F_t = c * (gamma * Phi_{t+1} - Phi_t), t = 0 .. T-1.

    ``potentials`` is (G, T + 1): Phi_0 = 0 for the pure-noise state, Phi_t (0 < t < T) the potential
    of the clean sample predicted at step t, Phi_T that of the final sample. With gamma = 1 the terms
    telescope: sum_t F_t = c * Phi_T, the terminal bonus. ``scale`` is c from ``shaping_scale`` (G,).
    """
    return scale[:, None] * (gamma * potentials[:, 1:] - potentials[:, :-1])


def returns_to_go(rewards: torch.Tensor, terms: torch.Tensor) -> torch.Tensor:
    """Per-step returns R_t = r + sum_{t' >= t} F_t' for rewards (G,) and shaping terms (G, T)."""
    tail = torch.flip(torch.cumsum(torch.flip(terms, dims=[1]), dim=1), dims=[1])
    return rewards[:, None] + tail

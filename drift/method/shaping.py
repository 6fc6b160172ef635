"""DRIFT component 3: potential-based reward shaping toward intra-group diversity.

Potentials are computed within one prompt group of G samples from an embedding f of each sample.
Three masks over the group say who takes part: ``among`` (whose rewards set the bonus's scale
and the gate's mean: the whole group, or the subset kept by component 1), ``receives`` (who gets
a bonus: ``among``, or by the gate only its samples at or above the mean), and the samples the
potential is min-max normalised over (``among``, or with the DRIVE gate only ``receives``).
"""

from __future__ import annotations

import torch

from drift.scoring.diversity import cosine_similarity_matrix

GATES = ("none", "mean", "drive")


def mean_cosine_distance(features: torch.Tensor) -> torch.Tensor:
    """d_i = 1 - mean_{j != i} cos(f_i, f_j) within the group, for features (G, D)."""
    g = features.shape[0]
    k = cosine_similarity_matrix(features)
    return 1 - (k.sum(dim=1) - k.diagonal()) / max(g - 1, 1)


def diversity_potential(features: torch.Tensor, over: torch.Tensor | None = None) -> torch.Tensor:
    """Phi_i = (d_i - min_{j in S} d_j) / (max_{j in S} d_j - min_{j in S} d_j) for i in S, 0 elsewhere.

    d_i = 1 - mean_{j != i} cos(f_i, f_j) is taken against the whole group (features (G, D)); S is
    ``over`` (a boolean mask (G,), default the whole group), so Phi is in [0, 1] on S. All zeros
    when the d of S are equal (or S has fewer than two samples).
    """
    d = mean_cosine_distance(features)
    over = torch.ones_like(d, dtype=torch.bool) if over is None else over
    if int(over.sum()) < 2:
        return torch.zeros_like(d)
    lo, hi = d[over].min(), d[over].max()
    if hi - lo <= 1e-12:
        return torch.zeros_like(d)
    return torch.where(over, (d - lo) / (hi - lo), torch.zeros_like(d))


def gate_mask(rewards: torch.Tensor, gate: str, among: torch.Tensor | None = None) -> torch.Tensor:
    """Who receives the bonus: every sample of ``among`` for gate 'none'; for 'mean' and 'drive' only
    those with r_i >= mean_{j in among} r_j. ``rewards`` (G,), ``among`` a mask (G,) (default all)."""
    among = torch.ones_like(rewards, dtype=torch.bool) if among is None else among
    if gate == "none":
        return among.clone()
    if gate in ("mean", "drive"):
        return among & (rewards >= rewards[among].mean())
    raise ValueError(f"unknown shaping gate {gate!r}: expected one of {', '.join(GATES)}")


def potential_support(receives: torch.Tensor, among: torch.Tensor, gate: str) -> torch.Tensor:
    """The samples the potential is normalised over: the bonus receivers for the DRIVE gate (as in
    DRIVE, so that the diversity ranking is among the successful samples only), else ``among``."""
    return receives if gate == "drive" else among


def shaping_scale(rewards: torch.Tensor, weight: float, receives: torch.Tensor | None = None,
                  among: torch.Tensor | None = None) -> torch.Tensor:
    """c_i = lambda * std_{j in among}(r_j) * 1[i receives], shape (G,).

    lambda is in units of the reward spread of ``among`` (default the whole group), so the bonus is
    scale-free; ``receives`` (default all) zeroes it for the samples the gate excludes.
    """
    among = torch.ones_like(rewards, dtype=torch.bool) if among is None else among
    receives = torch.ones_like(rewards, dtype=torch.bool) if receives is None else receives
    return weight * rewards[among].std(unbiased=False) * receives.to(rewards.dtype)


def terminal_bonus(rewards: torch.Tensor, potential: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Terminal shaping: r'_i = r_i + c_i * Phi_i, with c from ``shaping_scale`` (shapes (G,))."""
    return rewards + scale * potential


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

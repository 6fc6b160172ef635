"""DRIFT component 2: annealed noise on the prompt embeddings during rollouts.

Condition annealing as in CADS (Sadat et al. 2023): early in denoising (tau near 1, pure noise)
the conditioning is noisy, which widens the conditioning space beyond the literal prompt; late in
denoising it is the clean prompt embedding. The noise tensor of each sample is drawn from that
sample's own seed, so the update reproduces the exact conditioning its rollout used.
"""

from __future__ import annotations

import torch


def anneal_weight(tau: float, tau1: float, tau2: float) -> float:
    """g(tau) = 1 for tau <= tau1, 0 for tau >= tau2, linear in between (tau = 1 is pure noise)."""
    if tau <= tau1:
        return 1.0
    if tau >= tau2:
        return 0.0
    return (tau2 - tau) / (tau2 - tau1)


def noise_scale(iteration: int, scale: float, final_scale: float, decay_iterations: int) -> float:
    """s at a training iteration: linear decay from ``scale`` to ``final_scale`` over
    ``decay_iterations`` iterations, constant afterwards (no decay when decay_iterations = 0)."""
    if decay_iterations <= 0:
        return scale
    frac = min(iteration / decay_iterations, 1.0)
    return scale + (final_scale - scale) * frac


def anneal_condition(
    y: torch.Tensor, noise: torch.Tensor, g: float, scale: float, rescale: bool, psi: float
) -> torch.Tensor:
    """Noisy conditioning y' for clean embeddings ``y`` (B, ...) and a standard-normal ``noise``.

    y'  = sqrt(g) * y + s * sqrt(1 - g) * n
    with ``rescale``: y'' = (y' - mean(y')) / std(y') * std(y) + mean(y)  (per sample), and
    y'  <- psi * y'' + (1 - psi) * y'.
    Where g = 1 the clean embedding is returned unchanged.
    """
    if g >= 1.0 or scale == 0.0:
        return y
    y32 = y.to(torch.float32)
    out = (g**0.5) * y32 + scale * ((1 - g) ** 0.5) * noise.to(torch.float32)
    if rescale:
        dims = tuple(range(1, y.ndim))
        mean_in, std_in = y32.mean(dims, keepdim=True), y32.std(dims, keepdim=True)
        mean_out, std_out = out.mean(dims, keepdim=True), out.std(dims, keepdim=True)
        rescaled = (out - mean_out) / std_out * std_in + mean_in
        out = psi * rescaled + (1 - psi) * out
    return out.to(y.dtype)

"""DRIFT component 2: annealed noise on the prompt embeddings during rollouts.

Condition annealing after CADS (Sadat et al. 2023): early in denoising (tau near 1, pure noise)
the conditioning is perturbed, which widens the conditioning space beyond the literal prompt;
late in denoising it is the clean prompt embedding. Three forms of the perturbation:
'cads' replaces the prompt by noise where g = 0 (unless g has a floor), 'additive' and 'anchored'
keep the prompt at every tau. The noise tensor of each sample is drawn from that sample's own
seed, so the update reproduces the exact conditioning its rollout used.
"""

from __future__ import annotations

import torch

FORMS = ("cads", "additive", "anchored")


def anneal_weight(tau: float, tau1: float, tau2: float, floor: float = 0.0) -> float:
    """g(tau) = max(floor, w(tau)), w = 1 for tau <= tau1, 0 for tau >= tau2, linear in between
    (tau = 1 is pure noise); the floor keeps part of the prompt in the CADS form."""
    if tau <= tau1:
        return 1.0
    if tau >= tau2:
        return max(floor, 0.0)
    return max(floor, (tau2 - tau) / (tau2 - tau1))


def perturb(y: torch.Tensor, n: torch.Tensor, g: float, scale: float, form: str) -> torch.Tensor:
    """The perturbed conditioning y' for clean embeddings ``y`` (B, ...) and standard-normal ``n``.

    cads:     y' = sqrt(g) y + s sqrt(1 - g) n            (the prompt vanishes where g = 0)
    additive: y' = y + s sqrt(1 - g) n                     (the prompt is kept at every tau)
    anchored: y' = g y + (1 - g) y~,  y~ = y + s rms(y) n  (a perturbed copy within a radius of s
              times the prompt's own per-sample RMS, blended back to y as tau falls; as in E2PO)
    All equal y where g = 1 or s = 0.
    """
    if form == "cads":
        return (g**0.5) * y + scale * ((1 - g) ** 0.5) * n
    if form == "additive":
        return y + scale * ((1 - g) ** 0.5) * n
    if form == "anchored":
        rms = y.pow(2).mean(dim=tuple(range(1, y.ndim)), keepdim=True).sqrt()
        return y + (1 - g) * scale * rms * n
    raise ValueError(f"unknown prompt-noise form {form!r}: expected one of {', '.join(FORMS)}")


def anneal_condition(y: torch.Tensor, noise: torch.Tensor, g: float, scale: float, rescale: bool, psi: float,
                     form: str = "cads") -> torch.Tensor:
    """Noisy conditioning for clean embeddings ``y`` (B, ...) and a standard-normal ``noise``.

    y'  = perturb(y, n, g, s, form)
    with ``rescale``: y'' = (y' - mean(y')) / std(y') * std(y) + mean(y)  (per sample), and
    y'  <- psi * y'' + (1 - psi) * y'.
    Where g = 1 or s = 0 the clean embedding is returned unchanged. Computed in float32.
    """
    if g >= 1.0 or scale == 0.0:
        return y
    y32 = y.to(torch.float32)
    out = perturb(y32, noise.to(torch.float32), g, scale, form)
    if rescale:
        dims = tuple(range(1, y.ndim))
        mean_in, std_in = y32.mean(dims, keepdim=True), y32.std(dims, keepdim=True)
        mean_out, std_out = out.mean(dims, keepdim=True), out.std(dims, keepdim=True)
        rescaled = (out - mean_out) / std_out * std_in + mean_in
        out = psi * rescaled + (1 - psi) * out
    return out.to(y.dtype)

"""DRIFT component 2: annealed noise on the prompt embeddings during rollouts.

Condition annealing after CADS (Sadat et al. 2023): early in denoising (tau near 1, pure noise)
the conditioning is perturbed, which widens the conditioning space beyond the literal prompt;
late in denoising it is the clean prompt embedding. Three forms of the perturbation:
'cads' replaces the prompt by noise where g = 0 (unless g has a floor), 'additive' and 'anchored'
keep the prompt at every tau. The noise tensor of each sample is drawn from that sample's own
seed, so the update reproduces the exact conditioning its rollout used; it is isotropic, or
confined to the leading principal directions of a prompt corpus's embeddings (``confine``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

FORMS = ("cads", "additive", "anchored")


@dataclass(frozen=True)
class Directions:
    """Principal directions of a set of prompt embeddings flattened per prompt: ``basis`` (K, D) with
    orthonormal rows v_k, ``spread`` (K,) the standard deviation sd_k of the set along each."""

    basis: torch.Tensor
    spread: torch.Tensor


def principal_directions(embeddings: torch.Tensor, k: int, groups: torch.Tensor | None = None) -> Directions:
    """The leading ``k`` principal directions of embeddings (N, ...) of a prompt corpus, and the
    corpus's standard deviation along each (singular values / sqrt(N - 1) of the centred set).
    With ``groups`` (N,), each embedding is centred on its group's mean instead of the corpus's:
    the directions in which captions of one subject differ (within-group scatter), not those that
    tell subjects apart."""
    x = embeddings.flatten(1).to(torch.float64)
    if groups is None:
        groups = torch.zeros(len(x), dtype=torch.long)
    _, index = torch.unique(groups, return_inverse=True)
    means = torch.zeros(int(index.max()) + 1, x.shape[1], dtype=x.dtype).index_add_(0, index, x)
    means /= torch.bincount(index).to(x.dtype)[:, None]
    _, s, vh = torch.linalg.svd(x - means[index], full_matrices=False)
    k = min(k, len(s))
    return Directions(vh[:k].to(torch.float32), (s[:k] / math.sqrt(max(len(x) - 1, 1))).to(torch.float32))


def confine(n: torch.Tensor, directions: Directions) -> torch.Tensor:
    """Standard-normal noise ``n`` (B, ...) confined to the principal directions and scaled to the
    corpus's spread along each: n' = V^T diag(sd) V n per sample, so that n' has standard deviation
    sd_k along v_k and nothing elsewhere (structured noise that moves a prompt the way the corpus's
    prompts differ: toward its attribute words, not across every entry)."""
    v = directions.basis.to(n.device)
    flat = n.flatten(1).to(torch.float32)
    return (((flat @ v.T) * directions.spread.to(n.device)) @ v).reshape(n.shape)


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

"""Diversity of a set of image embeddings: mean pairwise cosine distance and the Vendi score."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def cosine_similarity_matrix(features: torch.Tensor) -> torch.Tensor:
    """K_ij = cos(f_i, f_j) for features of shape (N, D); float32."""
    f = F.normalize(features.to(torch.float32).flatten(1), dim=1, eps=1e-12)
    return f @ f.T


def mean_pairwise_cosine_distance(features: torch.Tensor) -> torch.Tensor:
    """mean_{i != j} (1 - cos(f_i, f_j)); 0 for fewer than two samples."""
    n = features.shape[0]
    if n < 2:
        return torch.zeros((), dtype=torch.float32)
    k = cosine_similarity_matrix(features)
    off_diag = k.sum() - k.diagonal().sum()
    return 1 - off_diag / (n * (n - 1))


def vendi_score(features: torch.Tensor) -> torch.Tensor:
    """Vendi score (Friedman & Dieng 2023) with the cosine kernel.

    VS = exp(-sum_i lambda_i log lambda_i), lambda = eigenvalues of K / N, K_ij = cos(f_i, f_j).
    It is the effective number of distinct samples: 1 for identical samples, N for orthogonal ones.
    """
    n = features.shape[0]
    k = cosine_similarity_matrix(features).to(torch.float64) / n
    eig = torch.linalg.eigvalsh(k).clamp(min=0)
    eig = eig[eig > 1e-12]
    return torch.exp(-(eig * eig.log()).sum()).to(torch.float32)


def each_group(metric, features: torch.Tensor, group_ids: torch.Tensor) -> torch.Tensor:
    """A set metric evaluated on each group of ``features`` (grouped by ``group_ids``, in the order
    of the sorted ids): shape (groups,)."""
    return torch.stack([metric(features[group_ids == g]) for g in torch.unique(group_ids)])


def per_group(metric, features: torch.Tensor, group_ids: torch.Tensor) -> torch.Tensor:
    """A set metric evaluated on each group of ``features`` (grouped by ``group_ids``), averaged."""
    return each_group(metric, features, group_ids).mean()


DIVERSITY_METRICS = {"diversity": mean_pairwise_cosine_distance, "vendi": vendi_score}
"""The two per-prompt diversity figures this project reports, by name."""


def diversity_by_group(features: torch.Tensor, group_ids: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each diversity figure of each prompt's group: name -> (groups,)."""
    return {name: each_group(metric, features, group_ids) for name, metric in DIVERSITY_METRICS.items()}


def diversity_report(features: torch.Tensor, group_ids: torch.Tensor) -> dict[str, float]:
    """Per-prompt diversity, averaged over prompts: the two metrics this project reports."""
    return {name: float(values.mean()) for name, values in diversity_by_group(features, group_ids).items()}

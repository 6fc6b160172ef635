"""Coverage of real data by generated samples, in an embedding space.

Precision and recall of Kynkaanniemi et al. 2019 ("Improved precision and recall metric for
assessing generative models"): each set's manifold is the union of balls around its points, of
radius the distance to the point's k-th nearest neighbour in the same set. Precision is the share
of generated samples inside the real manifold (are they realistic); recall the share of real
samples inside the generated manifold (is the real variety covered). The Frechet distance compares
the two sets' Gaussian fits (means and covariances). All in float64.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ReferenceSet:
    """Real images per class, and which class a prompt asks for (e.g. the digit it names)."""

    classify: Callable[[str], Hashable]
    images: dict[Hashable, torch.Tensor]  # class -> (N, C, H, W) in [0, 1]


def knn_radii(features: torch.Tensor, k: int) -> torch.Tensor:
    """Distance of each point of ``features`` (N, D) to its k-th nearest other point (k <= N - 1)."""
    d = torch.cdist(features.double(), features.double())
    return d.kthvalue(min(k, features.shape[0] - 1) + 1, dim=1).values  # the 1st smallest is the point itself


def share_inside(points: torch.Tensor, manifold: torch.Tensor, k: int) -> float:
    """Share of ``points`` (M, D) inside the k-NN manifold of ``manifold`` (N, D):
    mean_i 1[exists j: ||p_i - m_j|| <= r_k(m_j)]."""
    radii = knn_radii(manifold, k)
    inside = torch.cdist(points.double(), manifold.double()) <= radii[None, :]
    return float(inside.any(dim=1).double().mean())


def precision_recall(generated: torch.Tensor, real: torch.Tensor, k: int = 3) -> tuple[float, float]:
    """precision = share of generated samples inside the real manifold; recall = share of real
    samples inside the generated manifold (k-NN manifolds, Kynkaanniemi et al. 2019)."""
    return share_inside(generated, real, k), share_inside(real, generated, k)


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """FD = ||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a^1/2 S_b S_a^1/2)^1/2) between the Gaussian fits
    (sample mean, covariance with N - 1) of ``a`` (N, D) and ``b`` (M, D); 0 for a set with itself."""
    a, b = a.double(), b.double()
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = torch.cov(a.T).reshape(a.shape[1], -1), torch.cov(b.T).reshape(b.shape[1], -1)
    eig_a, vec_a = torch.linalg.eigh(cov_a)
    sqrt_a = vec_a @ torch.diag(eig_a.clamp(min=0).sqrt()) @ vec_a.T
    cross = torch.linalg.eigvalsh(sqrt_a @ cov_b @ sqrt_a).clamp(min=0).sqrt().sum()
    fd = (mu_a - mu_b).pow(2).sum() + torch.trace(cov_a) + torch.trace(cov_b) - 2 * cross
    return max(float(fd), 0.0)


def coverage_report(features: torch.Tensor, classes: list[Hashable], real: dict[Hashable, torch.Tensor],
                    k: int = 3) -> dict[str, float]:
    """Precision, recall and Frechet distance of the generated ``features`` (B, D) of each class
    against the real features of that class, averaged over the classes present. A class pools all
    its samples (every prompt that asks for it), since one prompt's few samples are too few for a
    covariance."""
    rows = []
    for c in dict.fromkeys(classes):
        gen = features[torch.tensor([x == c for x in classes])]
        rows.append((*precision_recall(gen, real[c], k), frechet_distance(gen, real[c])))
    mean = torch.tensor(rows, dtype=torch.float64).mean(0).tolist()
    return dict(zip(("precision", "recall", "frechet"), mean))

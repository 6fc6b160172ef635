"""DRIFT component 1: update only on a reward-concentrated subset of each prompt group.

Dropping the group's reward outliers keeps a few extreme samples from pulling the policy
prematurely toward one mode. ``drift.method.advantages`` normalises the advantages within the kept
subset; dropped samples get no gradient.
"""

from __future__ import annotations

import math

import torch


def window_subset(rewards: torch.Tensor, keep_ratio: float) -> torch.Tensor:
    """Keep the contiguous window of k sorted rewards with the smallest range.

    k = ceil(keep_ratio * G); among the windows r_(j) .. r_(j+k-1) of the sorted rewards,
    the kept one minimises r_(j+k-1) - r_(j) (the first such window on ties).
    Returns a boolean mask of shape (G,).
    """
    g = rewards.shape[0]
    k = min(g, max(1, math.ceil(keep_ratio * g)))
    order = torch.argsort(rewards, stable=True)
    sorted_r = rewards[order]
    ranges = sorted_r[k - 1 :] - sorted_r[: g - k + 1]
    start = int(torch.argmin(ranges))
    mask = torch.zeros(g, dtype=torch.bool, device=rewards.device)
    mask[order[start : start + k]] = True
    return mask


def zscore_subset(rewards: torch.Tensor, z_max: float) -> torch.Tensor:
    """Keep samples with |r_i - mean(r)| <= z_max * std(r) (population std; all kept if std = 0)."""
    std = rewards.std(unbiased=False)
    if std == 0:
        return torch.ones_like(rewards, dtype=torch.bool)
    return (rewards - rewards.mean()).abs() <= z_max * std


def select_subset(rewards: torch.Tensor, mode: str, keep_ratio: float, z_max: float) -> torch.Tensor:
    """The kept mask for each group of ``rewards`` (P, G) under ``mode`` ('window' or 'zscore')."""
    if mode == "window":
        return torch.stack([window_subset(r, keep_ratio) for r in rewards])
    if mode == "zscore":
        return torch.stack([zscore_subset(r, z_max) for r in rewards])
    raise ValueError(f"unknown subset mode {mode!r}: expected 'window' or 'zscore'")

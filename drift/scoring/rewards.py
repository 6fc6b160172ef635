"""Rewards: pointwise functions of (images in [0, 1], prompts) -> one score per image.

Each reward is registered by name (``REWARDS``); a run's reward is a weighted sum of terms.
"""

from __future__ import annotations

import torch

from drift.config import RewardTerm
from drift.registry import REWARDS
from drift.scoring.protocols import Reward


class WeightedReward:
    """r = sum_k w_k * r_k(images, prompts); also returns each term for logging."""

    def __init__(self, terms: list[tuple[str, float, Reward]]):
        self.terms = terms

    @classmethod
    def from_config(cls, specs: list[RewardTerm], device: str = "cpu") -> WeightedReward:
        return cls([(s.name, s.weight, REWARDS.build(s.name, device=device, **s.args)) for s in specs])

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, prompts: list[str]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        parts = {name: fn(images, prompts).to(torch.float32).cpu() for name, _, fn in self.terms}
        total = sum(w * parts[name] for name, w, _ in self.terms)
        return total, parts


__all__ = ["REWARDS", "Reward", "WeightedReward"]

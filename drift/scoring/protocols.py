"""What a reward term and an embedding are, as types: any callable of this shape fits (the
registered factories in drift.scoring and drift.testbed return such callables)."""

from __future__ import annotations

from typing import Protocol

import torch


class Reward(Protocol):
    """A reward term: images (B, C, H, W) in [0, 1] and their B prompts -> one score per image (B,)."""

    def __call__(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor: ...


class Embedding(Protocol):
    """An image embedding: images (B, C, H, W) in [0, 1] -> features (B, D)."""

    def __call__(self, images: torch.Tensor) -> torch.Tensor: ...

"""Figures: image grids and alignment-diversity plots (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image
from torchvision.utils import make_grid


def image_grid(images: torch.Tensor, nrow: int, upscale: int = 1) -> Image.Image:
    """Images (N, C, H, W) in [0, 1] as one PIL grid, each image enlarged ``upscale`` times."""
    if upscale > 1:
        images = torch.nn.functional.interpolate(images, scale_factor=upscale, mode="nearest")
    grid = make_grid(images.clamp(0, 1), nrow=nrow, padding=2, pad_value=0.5)
    array = (grid.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
    return Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)


def save_grid(images: torch.Tensor, nrow: int, path: str | Path, upscale: int = 1) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image_grid(images, nrow, upscale).save(path)
    return path

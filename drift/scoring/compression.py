"""JPEG (in)compressibility, the DDPO toy rewards: the encoded size of each image in kilobytes."""

from __future__ import annotations

import io

import numpy as np
import torch

from drift.plots import to_pil
from drift.registry import REWARDS


def jpeg_size_kb(images: torch.Tensor, quality: int = 95) -> torch.Tensor:
    """Size in kB of each image (B, C, H, W in [0, 1]) encoded as JPEG at ``quality``."""
    sizes = []
    for image in images:
        buf = io.BytesIO()
        to_pil(image).save(buf, format="JPEG", quality=quality)
        sizes.append(buf.tell() / 1000)
    return torch.tensor(np.array(sizes), dtype=torch.float32)


@REWARDS.register("jpeg_compressibility")
def jpeg_compressibility(device="cpu", quality: int = 95):
    """r = -size_kb(JPEG(image)): smaller files score higher."""
    return lambda images, prompts: -jpeg_size_kb(images, quality)


@REWARDS.register("jpeg_incompressibility")
def jpeg_incompressibility(device="cpu", quality: int = 95):
    """r = size_kb(JPEG(image)): larger files score higher."""
    return lambda images, prompts: jpeg_size_kb(images, quality)

"""JPEG (in)compressibility, the DDPO toy rewards: the encoded size of each image in kilobytes."""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image

from drift.registry import REWARDS


def jpeg_size_kb(images: torch.Tensor, quality: int = 95) -> torch.Tensor:
    """Size in kB of each image (B, C, H, W in [0, 1]) encoded as JPEG at ``quality``."""
    arrays = (images.detach().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    sizes = []
    for a in arrays:
        buf = io.BytesIO()
        Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a).save(buf, format="JPEG", quality=quality)
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

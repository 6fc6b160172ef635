"""Image embeddings for diversity: registered by name in ``EMBEDDINGS``.

An embedding maps images (B, C, H, W in [0, 1]) to features (B, D). The testbed registers its
classifier features; ``pixels`` is the model-free fallback.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from drift.registry import EMBEDDINGS


@EMBEDDINGS.register("pixels")
def pixels(device="cpu", size: int = 32):
    """Raw pixels, resized to at most ``size`` x ``size`` and centred per image."""

    @torch.no_grad()
    def embed(images: torch.Tensor) -> torch.Tensor:
        x = images.to(torch.float32)
        if x.shape[-1] > size:
            x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        x = x.flatten(1)
        return x - x.mean(dim=1, keepdim=True)

    return embed

"""Latents packed as 2 x 2 patches, the token layout of FLUX-class transformers.

Copied from diffusers 0.42's ``FluxPipeline._pack_latents``, ``_unpack_latents`` and
``_prepare_latent_image_ids`` (private static methods, so not an API to call), in the form these
adapters need; diffusers' tests of those methods are what this code must agree with, and
tests/test_flux.py checks the whole rollout against ``FluxPipeline`` itself.
"""

from __future__ import annotations

import torch


def pack_2x2(latents: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, (H/2)(W/2), 4C): row-major patches, each its C x 2 x 2 values."""
    b, c, h, w = latents.shape
    x = latents.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b, (h // 2) * (w // 2), c * 4)


def unpack_2x2(latents: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(B, (H/2)(W/2), 4C) -> (B, C, H, W) for a latent grid of ``height`` x ``width`` cells: the
    inverse of ``pack_2x2``."""
    b, _, channels = latents.shape
    x = latents.view(b, height // 2, width // 2, channels // 4, 2, 2).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(b, channels // 4, height, width)


def patch_positions(rows: int, columns: int, device, dtype) -> torch.Tensor:
    """(rows * columns, 3) position ids of the patches: (0, row, column), row-major."""
    ids = torch.zeros(rows, columns, 3)
    ids[..., 1] = torch.arange(rows)[:, None]
    ids[..., 2] = torch.arange(columns)[None, :]
    return ids.reshape(rows * columns, 3).to(device=device, dtype=dtype)

"""Latents packed as 2 x 2 patches, the token layout of FLUX-class transformers (FLUX.1, FLUX.2,
Qwen-Image), and the image and latent sizes those families share.

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


class PackedLatents:
    """Sizes of an adapter (a T2IModel subclass, listed before T2IModel in its bases) whose
    transformer takes 2 x 2 patches of the VAE latent as tokens: image sizes in multiples of one
    patch, the pipeline's default_sample_size as the default, and latents packed into (patches, 4C)."""

    @property
    def resolution_multiple(self) -> int:
        # one patch covers 2 x 2 latent cells
        return 2 * self.vae_scale_factor

    def default_resolution(self) -> tuple[int, int]:
        size = self.pipe.default_sample_size * self.vae_scale_factor
        return size, size

    @property
    def latent_grid(self) -> tuple[int, int]:
        """(H, W) of the unpacked VAE latent."""
        return self.height // self.vae_scale_factor, self.width // self.vae_scale_factor

    @property
    def token_grid(self) -> tuple[int, int]:
        """(rows, columns) of 2 x 2 patches."""
        h, w = self.latent_grid
        return h // 2, w // 2

    @property
    def latent_shape(self) -> tuple[int, int]:
        """Packed latents: ((H/2)(W/2) patches, 4C channels = the transformer's in_channels)."""
        rows, columns = self.token_grid
        return rows * columns, self.denoiser.config.in_channels

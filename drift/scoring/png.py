"""Images as 8-bit PNG, the way they travel to and from reward services (base64 text in JSON).

A score computed in-process compares with a served one only on the same 8-bit images: ``quantize``
rounds a batch exactly as ``encode`` followed by ``decode`` does.
"""

from __future__ import annotations

import base64
import binascii
import io

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """Images (B, C, H, W) in [0, 1] -> (B, H, W, C) uint8, rounded to the nearest level."""
    levels = (images.detach().to(torch.float32).clamp(0, 1) * 255).round().to(torch.uint8)
    return levels.permute(0, 2, 3, 1).cpu().numpy()


def quantize(images: torch.Tensor) -> torch.Tensor:
    """The float images a PNG round trip gives back: each value rounded to k / 255."""
    return torch.from_numpy(to_uint8(images)).permute(0, 3, 1, 2).to(torch.float32) / 255


def encode(images: torch.Tensor) -> list[str]:
    """Images (B, C, H, W) in [0, 1], C = 1 or 3 -> B base64 PNGs (grey or RGB)."""
    encoded = []
    for array in to_uint8(images):
        buf = io.BytesIO()
        Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array).save(buf, format="PNG")
        encoded.append(base64.b64encode(buf.getvalue()).decode("ascii"))
    return encoded


def decode(encoded: list[str]) -> torch.Tensor:
    """B base64 PNGs of one size and mode -> images (B, C, H, W) in [0, 1] (C = 1 for grey, else 3).
    Raises ValueError naming the first image that is not a PNG of the batch's shape."""
    arrays = []
    for i, text in enumerate(encoded):
        try:
            image = Image.open(io.BytesIO(base64.b64decode(text, validate=True)))
            if image.format != "PNG":
                raise ValueError(f"a {image.format} image")
            array = np.asarray(image if image.mode in ("L", "RGB") else image.convert("RGB"))
        except (binascii.Error, UnidentifiedImageError, OSError, ValueError) as err:
            raise ValueError(f"image {i} is not a base64 PNG: {err}") from None
        array = array[..., None] if array.ndim == 2 else array
        if arrays and array.shape != arrays[0].shape:
            raise ValueError(f"image {i} has shape {array.shape}, image 0 {arrays[0].shape}: one batch, one size")
        arrays.append(array)
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).to(torch.float32) / 255

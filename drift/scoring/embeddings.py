"""Image embeddings for diversity: registered by name in ``EMBEDDINGS``.

An embedding maps images (B, C, H, W in [0, 1]) to features (B, D). Real images use open_clip
(``clip_image``, the default) or DINOv2; the testbed registers its classifier features; ``pixels``
is the model-free fallback.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from drift.registry import EMBEDDINGS
from drift.scoring.clip import OpenClip, missing_model, preprocess


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


@EMBEDDINGS.register("clip_image")
def clip_image(device="cpu", arch: str = "ViT-L-14", pretrained: str | None = "openai"):
    """Normalised open_clip image embeddings: the default diversity embedding for real images."""
    return OpenClip(arch, pretrained, device).image_features


@EMBEDDINGS.register("dinov2")
def dinov2(device="cpu", model: str = "facebook/dinov2-base", random_config: dict | None = None):
    """DINOv2 CLS embeddings through transformers (``random_config`` builds random weights from a config)."""
    from transformers import AutoImageProcessor, Dinov2Config, Dinov2Model

    if random_config is not None:
        net = Dinov2Model(Dinov2Config(**random_config))
        size, mean, std = random_config.get("image_size", 224), [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    else:
        try:
            proc = AutoImageProcessor.from_pretrained(model)
            net = Dinov2Model.from_pretrained(model)
        except (OSError, ValueError) as err:
            raise missing_model("DINOv2", f"'{model}'", err, "Download it where there is network and set the "
                           "embedding's 'model' argument to the local directory.") from err
        size, mean, std = proc.crop_size["height"], proc.image_mean, proc.image_std
    net = net.to(device).eval().requires_grad_(False)

    @torch.no_grad()
    def embed(images: torch.Tensor) -> torch.Tensor:
        return net(pixel_values=preprocess(images.to(device), size, mean, std)).pooler_output

    return embed

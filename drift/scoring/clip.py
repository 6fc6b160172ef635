"""Preference rewards for real images: CLIP score (open_clip), PickScore (transformers) and the
LAION aesthetic predictor (an MLP head on open_clip ViT-L/14 image embeddings).

All are batched, gradient-free and run on the training device, with each model's own
preprocessing applied to tensors (resize, centre crop, normalise). Weights load by hub id, open_clip
tag or local path; ``pretrained: null`` builds random weights (tests, smoke runs) and says so.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from drift.errors import ModelNotFoundError
from drift.registry import REWARDS

log = logging.getLogger(__name__)


def missing_model(what: str, where: str, err: Exception, how: str) -> ModelNotFoundError:
    return ModelNotFoundError(f"{what} could not be loaded from {where}: {str(err).splitlines()[0][:300]}. {how}")


def preprocess(images: torch.Tensor, size: int, mean, std) -> torch.Tensor:
    """Images (B, C, H, W) in [0, 1] -> resized (shorter side), centre-cropped, normalised RGB."""
    x = images.to(torch.float32)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    h, w = x.shape[-2:]
    scale = size / min(h, w)
    x = F.interpolate(x, size=(max(size, round(h * scale)), max(size, round(w * scale))), mode="bicubic",
                      antialias=True, align_corners=False).clamp(0, 1)
    top, left = (x.shape[-2] - size) // 2, (x.shape[-1] - size) // 2
    x = x[..., top : top + size, left : left + size]
    mean = torch.tensor(mean, device=x.device).view(1, -1, 1, 1)
    std = torch.tensor(std, device=x.device).view(1, -1, 1, 1)
    return (x - mean) / std


class OpenClip:
    """An open_clip model with its tokenizer and tensor preprocessing."""

    def __init__(self, arch: str, pretrained: str | None, device="cpu"):
        import open_clip

        try:
            model = open_clip.create_model(arch, pretrained=pretrained or None, device=device)
        except (RuntimeError, OSError, ValueError) as err:
            raise missing_model(f"open_clip model {arch}", f"pretrained={pretrained!r}", err,
                           "Give an open_clip tag whose weights are in the Hugging Face cache (download them where "
                           "there is network), or a local checkpoint path, as the 'pretrained' argument.") from err
        if not pretrained:
            log.warning("open_clip %s built with random weights (pretrained: null)", arch)
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = open_clip.get_tokenizer(arch)
        cfg = open_clip.get_model_preprocess_cfg(model)
        size = cfg["size"]
        self.size = size if isinstance(size, int) else size[0]
        self.mean, self.std = cfg["mean"], cfg["std"]
        self.device = device

    @torch.no_grad()
    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        x = preprocess(images.to(self.device), self.size, self.mean, self.std)
        return F.normalize(self.model.encode_image(x).float(), dim=-1)

    @torch.no_grad()
    def text_features(self, prompts: list[str]) -> torch.Tensor:
        return F.normalize(self.model.encode_text(self.tokenizer(prompts).to(self.device)).float(), dim=-1)


@REWARDS.register("clip_score")
def clip_score(device="cpu", arch: str = "ViT-H-14", pretrained: str | None = "laion2b_s32b_b79k"):
    """r = cos(image embedding, prompt embedding) under an open_clip model."""
    clip = OpenClip(arch, pretrained, device)
    return lambda images, prompts: (clip.image_features(images) * clip.text_features(prompts)).sum(-1)


class AestheticHead(nn.Module):
    """The LAION improved aesthetic predictor's MLP (sac+logos+ava1-l14-linearMSE)."""

    def __init__(self, dim: int = 768):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(dim, 1024), nn.Dropout(0.2), nn.Linear(1024, 128), nn.Dropout(0.2), nn.Linear(128, 64),
            nn.Dropout(0.1), nn.Linear(64, 16), nn.Linear(16, 1),
        )

    def forward(self, x):
        return self.layers(x)


@REWARDS.register("aesthetic")
def aesthetic(device="cpu", arch: str = "ViT-L-14", pretrained: str | None = "openai",
              head_checkpoint: str | None = "sac+logos+ava1-l14-linearMSE.pth", random_head: bool = False):
    """r = MLP(normalised open_clip image embedding), the LAION aesthetic score (about 1-10)."""
    clip = OpenClip(arch, pretrained, device)
    head = AestheticHead(clip.model.visual.output_dim)
    if not random_head:
        path = Path(head_checkpoint or "")
        if not path.is_file():
            raise ModelNotFoundError(
                f"aesthetic head checkpoint not found at '{path}'. Download sac+logos+ava1-l14-linearMSE.pth from the "
                "LAION improved-aesthetic-predictor release and set the reward's 'head_checkpoint' argument to "
                "its path.")
        head.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    head = head.to(device).eval().requires_grad_(False)

    @torch.no_grad()
    def reward(images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        return head(clip.image_features(images)).squeeze(-1)

    return reward


@REWARDS.register("pickscore")
def pickscore(device="cpu", model: str = "yuvalkirstain/PickScore_v1",
              processor: str = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"):
    """r = logit_scale * cos(image, prompt) under PickScore (CLIP-H fine-tuned on Pick-a-Pic)."""
    from transformers import AutoModel, AutoProcessor

    try:
        proc = AutoProcessor.from_pretrained(processor)
        net = AutoModel.from_pretrained(model).to(device).eval().requires_grad_(False)
    except (OSError, ValueError) as err:
        raise missing_model("PickScore", f"model '{model}' / processor '{processor}'", err,
                       "Download both where there is network (`hf download ...`) and point the reward's 'model' and "
                       "'processor' arguments at the local directories, or set HF_HOME to a cache that has "
                       "them.") from err
    size = proc.image_processor.crop_size["height"]
    mean, std = proc.image_processor.image_mean, proc.image_processor.image_std

    @torch.no_grad()
    def reward(images, prompts):
        pixels = preprocess(images.to(device), size, mean, std)
        img = F.normalize(net.get_image_features(pixel_values=pixels).float(), dim=-1)
        tokens = proc(text=list(prompts), padding=True, truncation=True, max_length=77, return_tensors="pt").to(device)
        txt = F.normalize(net.get_text_features(**tokens).float(), dim=-1)
        return net.logit_scale.exp() * (img * txt).sum(-1)

    return reward

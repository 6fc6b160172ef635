"""The testbed's reward and feature model: a small digit classifier on 8 x 8 images.

Reward ``digit_margin``: logit of the prompted digit minus the largest other logit (unbounded,
like a preference score). Embedding ``digit_features``: the classifier's penultimate layer.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from huggingface_hub import PyTorchModelHubMixin
from torch import nn

from drift.registry import EMBEDDINGS, REWARDS
from drift.scoring.modules import load_module

DIGIT_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
IMAGE_SIZE = 8


class DigitClassifier(nn.Module, PyTorchModelHubMixin):
    """conv(32) - conv(64) - pool - linear(feature_dim) - linear(10) on 1 x 8 x 8 images in [0, 1]."""

    def __init__(self, feature_dim: int = 64, dropout: float = 0.25):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)
        )
        self.features_head = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(64 * 4 * 4, feature_dim),
                                           nn.ReLU())
        self.out = nn.Linear(feature_dim, 10)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.features_head(self.conv(to_digit_images(images)))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.out(self.features(images))


def to_digit_images(images: torch.Tensor) -> torch.Tensor:
    """Any (B, C, H, W) image batch in [0, 1] as the classifier's 1 x 8 x 8 grey input."""
    x = images.to(torch.float32)
    if x.shape[1] != 1:
        x = x.mean(dim=1, keepdim=True)
    if x.shape[-2:] != (IMAGE_SIZE, IMAGE_SIZE):
        x = F.interpolate(x, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", antialias=True, align_corners=False)
    return x


def digit_from_prompt(prompt: str) -> int:
    """The digit a prompt asks for: a numeral or a number word ('the number 3', 'a digit three')."""
    words = re.findall(r"[a-z]+|\d", prompt.lower())
    for w in words:
        if w.isdigit():
            return int(w)
        if w in DIGIT_WORDS:
            return DIGIT_WORDS.index(w)
    raise ValueError(f"prompt names no digit: {prompt!r}")


def digit_margin(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """margin_i = z_{i, y_i} - max_{k != y_i} z_{i, k}."""
    target = logits.gather(1, targets[:, None]).squeeze(1)
    others = logits.scatter(1, targets[:, None], float("-inf")).max(dim=1).values
    return target - others


def load_classifier(checkpoint: str | Path, device="cpu") -> DigitClassifier:
    return load_module(DigitClassifier, checkpoint, device, what="digit classifier",
                       remedy="build the testbed with `dvc repro` (stage train_classifier) or set the reward's "
                              "'checkpoint' argument")


@REWARDS.register("digit_margin")
def digit_margin_reward(device="cpu", checkpoint: str = "data/testbed/classifier"):
    model = load_classifier(checkpoint, device)

    @torch.no_grad()
    def reward(images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        targets = torch.tensor([digit_from_prompt(p) for p in prompts], device=device)
        return digit_margin(model(images.to(device)), targets)

    return reward


@EMBEDDINGS.register("digit_features")
def digit_features(device="cpu", checkpoint: str = "data/testbed/classifier"):
    model = load_classifier(checkpoint, device)

    @torch.no_grad()
    def embed(images: torch.Tensor) -> torch.Tensor:
        return model.features(images.to(device))

    return embed


def train_classifier(images: np.ndarray, labels: np.ndarray, is_test: np.ndarray, epochs: int = 30,
                     lr: float = 2e-3, batch_size: int = 64, seed: int = 0, progress: bool = False):
    """Train on the non-test images with one-pixel random shifts; returns (model, test accuracy)."""
    from tqdm.auto import tqdm

    torch.manual_seed(seed)
    x = torch.from_numpy(images)
    y = torch.from_numpy(labels)
    x_tr, y_tr, x_te, y_te = x[~is_test], y[~is_test], x[is_test], y[is_test]
    model = DigitClassifier()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    gen = torch.Generator().manual_seed(seed)
    for _ in tqdm(range(epochs), desc="classifier", disable=None if progress else True):
        model.train()
        for idx in torch.randperm(len(x_tr), generator=gen).split(batch_size):
            shift = torch.randint(-1, 2, (2,), generator=gen).tolist()
            batch = torch.roll(x_tr[idx], shifts=shift, dims=(2, 3))
            loss = F.cross_entropy(model(batch), y_tr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
    model.eval()
    with torch.no_grad():
        accuracy = float((model(x_te).argmax(1) == y_te).float().mean())
    return model, accuracy

"""A preference reward model: a linear head on an image embedding, fitted with the Bradley-Terry loss.

P(A preferred over B) = sigmoid(r(A) - r(B)),  r(x) = w . f(x) + b
loss = -[y log P + (1 - y) log(1 - P)],  y = 1 (first), 0 (second), 0.5 (tie)
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from huggingface_hub import PyTorchModelHubMixin
from torch import nn

from drift.errors import ModelNotFoundError
from drift.registry import EMBEDDINGS, REWARDS

TARGETS = {"first": 1.0, "second": 0.0, "tie": 0.5}


class PreferenceHead(nn.Module, PyTorchModelHubMixin):
    def __init__(self, dim: int):
        super().__init__()
        self.linear = nn.Linear(dim, 1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear(features.to(torch.float32)).squeeze(-1)


def targets(choices) -> torch.Tensor:
    return torch.tensor([TARGETS[c] for c in choices], dtype=torch.float32)


def fit_bradley_terry(feat_a: torch.Tensor, feat_b: torch.Tensor, choices, epochs: int = 300, lr: float = 0.05,
                      weight_decay: float = 1e-3, seed: int = 0) -> PreferenceHead:
    """Fit r on pairs with the Bradley-Terry loss (full batch, AdamW)."""
    torch.manual_seed(seed)
    head = PreferenceHead(feat_a.shape[1])
    y = targets(choices)
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    for _ in range(epochs):
        loss = F.binary_cross_entropy_with_logits(head(feat_a) - head(feat_b), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        # Bradley-Terry fixes r only up to a constant: choose it so the training images average 0.
        head.linear.bias -= torch.cat([head(feat_a), head(feat_b)]).mean()
    return head.eval()


@torch.no_grad()
def pairwise_accuracy(head: PreferenceHead, feat_a: torch.Tensor, feat_b: torch.Tensor, choices) -> float:
    """Share of decided (non-tie) pairs whose winner the head scores higher; NaN with none."""
    y = targets(choices)
    decided = y != 0.5
    if not decided.any():
        return float("nan")
    predicted = (head(feat_a) > head(feat_b)).float()
    return float((predicted[decided] == y[decided]).float().mean())


def load_head(path: str | Path) -> PreferenceHead:
    path = Path(path)
    if not (path / "config.json").is_file():
        raise ModelNotFoundError(f"preference head not found at {path} (looked for {path / 'config.json'}); "
                                 "train one with the retraining pipeline or set the reward's 'head' argument")
    return PreferenceHead.from_pretrained(str(path)).eval()


@REWARDS.register("preference")
def preference_reward(device="cpu", head: str = "", embedding: str = "digit_features",
                      embedding_args: dict | None = None):
    """r = w . f(image) + b: the learned preference score on the embedding it was fitted on."""
    model = load_head(head).to(device)
    embed = EMBEDDINGS.build(embedding, device=device, **(embedding_args or {}))
    return torch.no_grad()(lambda images, prompts: model(embed(images)))

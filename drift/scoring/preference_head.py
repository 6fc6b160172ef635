"""A preference reward model: a linear head on an image embedding, fitted with the Bradley-Terry loss.

P(A preferred over B) = sigmoid(r(A) - r(B)),  r(x) = w . f(x) + b
loss = -[y log P + (1 - y) log(1 - P)],  y = 1 (first), 0 (second), 0.5 (tie)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from huggingface_hub import PyTorchModelHubMixin
from torch import nn

from drift.registry import EMBEDDINGS, REWARDS
from drift.scoring.modules import load_module

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
    return load_module(PreferenceHead, path, what="preference head",
                       remedy="train one with the retraining pipeline or set the reward's 'head' argument")


@dataclass
class PairFeatures:
    """Embeddings of both images of each row, split into fitting and held-out pairs. Several
    raters of one pair are several rows (ties and disagreements included: the Bradley-Terry fit
    weighs each), always on the same side of the split."""

    train_a: torch.Tensor
    train_b: torch.Tensor
    train_choices: list[str]
    held_a: torch.Tensor
    held_b: torch.Tensor
    held_choices: list[str]
    identity: pd.DataFrame  # each row's pair (drift.data.preferences.pair_identity)
    held: np.ndarray  # which rows are held out


def pair_features(pairs: pd.DataFrame, root: str | Path, embed, holdout_fraction: float) -> PairFeatures:
    """Embed every row's images (paths relative to ``root``) and hold out a stable share of the
    pairs (by a hash of the pair's content, so adding data never moves a pair between the splits
    and one pair's raters never land on both sides)."""
    from drift.data.preferences import is_held_out, load_pair_images, pair_identity

    img_a, img_b = load_pair_images(pairs, root)
    with torch.no_grad():
        fa, fb = embed(img_a).cpu(), embed(img_b).cpu()
    identity = pair_identity(pairs, root)
    held_rows = is_held_out(identity["key"], holdout_fraction)
    held = torch.from_numpy(held_rows)
    choices = pairs["choice"].tolist()
    return PairFeatures(fa[~held], fb[~held], [c for c, h in zip(choices, held_rows) if not h],
                        fa[held], fb[held], [c for c, h in zip(choices, held_rows) if h], identity, held_rows)


def heldout_accuracy(head: PreferenceHead, data: PairFeatures) -> float:
    return pairwise_accuracy(head, data.held_a, data.held_b, data.held_choices)


@torch.no_grad()
def heldout_correct(head: PreferenceHead, data: PairFeatures) -> tuple[np.ndarray, np.ndarray]:
    """For each decided (non-tie) held-out row: 1 where ``head`` scores the rater's winner higher,
    else 0; and the row's pair key (a pair's raters are not independent: a bootstrap resamples pairs)."""
    y = targets(data.held_choices)
    decided = (y != 0.5).numpy()
    predicted = (head(data.held_a) > head(data.held_b)).float()
    correct = (predicted == y).numpy()[decided].astype(np.float64)
    return correct, data.identity["key"].to_numpy()[data.held][decided]


@torch.no_grad()
def heldout_choices(head: PreferenceHead, data: PairFeatures) -> pd.Series:
    """The head's choice (first or second; tie where it scores both alike) for each held-out row,
    indexed like the rows' table."""
    margin = head(data.held_a) - head(data.held_b)
    choices = ["first" if m > 0 else "second" if m < 0 else "tie" for m in margin.tolist()]
    return pd.Series(choices, index=data.identity.index[data.held], dtype=object)


def rater_agreement(pairs: pd.DataFrame, root: str | Path, head: PreferenceHead | None = None, embed=None,
                    holdout_fraction: float = 0.2, which: str = "", source: str = "<pairs>"):
    """The raters' report (drift.data.agreement.rater_report) of ``pairs`` (images under ``root``),
    with ``head``'s agreement with each rater on the held-out pairs when a head (and the ``embed``
    it was fitted on) is given; ``which`` says which head it is, or why there is none."""
    from drift.data.agreement import rater_report
    from drift.data.preferences import pair_identity

    if head is None or pairs.empty:
        return rater_report(pairs, pair_identity(pairs, root), head=which, source=source)
    data = pair_features(pairs, root, embed, holdout_fraction)
    return rater_report(pairs, data.identity, heldout_choices(head, data), which, source)


@REWARDS.register("preference")
def preference_reward(device="cpu", head: str = "", embedding: str = "digit_features",
                      embedding_args: dict | None = None):
    """r = w . f(image) + b: the learned preference score on the embedding it was fitted on."""
    model = load_head(head).to(device)
    embed = EMBEDDINGS.build(embedding, device=device, **(embedding_args or {}))

    @torch.no_grad()
    def reward(images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        return model(embed(images))

    return reward

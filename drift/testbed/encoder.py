"""The testbed's evaluation embedding: a small image encoder that neither the reward nor the shaping
term uses, trained on the real digits by its own objective.

The reward and the default shaping potential read the digit classifier (drift.testbed.classifier);
measuring diversity in that classifier's features as well would score a method on the space it
optimises. This encoder plays the part DreamSim or DINO play for real images: it is trained without
labels, contrastively (SimCLR's NT-Xent: two augmented views of an image are each other's positive,
the other images of the batch its negatives), so its features tell one drawing from another rather
than one digit from another. The views differ only by what does not change how a digit is drawn (a
one-pixel shift, pixel noise, a few dropped pixels), so thickness, slant and size stay in the
features; a linear probe on held-out real digits checks that they do (``attribute_probe``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from huggingface_hub import PyTorchModelHubMixin
from torch import nn

from drift.registry import EMBEDDINGS
from drift.scoring.modules import load_module
from drift.testbed.attributes import ATTRIBUTES, attribute_levels
from drift.testbed.classifier import IMAGE_SIZE, to_digit_images

# A linear probe on the encoder's features must predict each attribute's tercile (within its
# digit) on held-out real digits at least this often: chance is 1/3, and with the ~360 held-out
# digits one standard error is about 0.025, so 0.5 is far above chance.
PROBE_THRESHOLD = 0.5


class DigitEncoder(nn.Module, PyTorchModelHubMixin):
    """MLP 64 - hidden - hidden - feature_dim on 1 x 8 x 8 images in [0, 1]."""

    def __init__(self, feature_dim: int = 32, hidden: int = 256):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(IMAGE_SIZE * IMAGE_SIZE, hidden), nn.ReLU(),
                                 nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, feature_dim))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(to_digit_images(images))


def augment(images: torch.Tensor, gen: torch.Generator, noise: float = 0.1, drop: float = 0.1) -> torch.Tensor:
    """A view of each image that is drawn the same way: the batch shifted by at most one pixel
    (zero-padded, not wrapped), Gaussian pixel noise of std ``noise``, a share ``drop`` of pixels
    set to 0; clamped to [0, 1]."""
    h, w = images.shape[-2:]
    i, j = torch.randint(0, 3, (2,), generator=gen).tolist()
    x = F.pad(images, (1, 1, 1, 1))[..., i : i + h, j : j + w]
    x = x + noise * torch.randn(x.shape, generator=gen)
    return (x * (torch.rand(x.shape, generator=gen) >= drop)).clamp(0, 1)


def nt_xent(z: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR's loss for projections ``z`` (2n, d) of n images' two views (view k and k + n pair up):
    cross-entropy of each view's cosine similarities / temperature, its pair being the target."""
    z = F.normalize(z, dim=1)
    n = len(z) // 2
    sim = (z @ z.T / temperature).fill_diagonal_(float("-inf"))
    targets = torch.cat([torch.arange(n) + n, torch.arange(n)])
    return F.cross_entropy(sim, targets)


def train_encoder(images: np.ndarray, is_test: np.ndarray, steps: int = 500, batch_size: int = 256,
                  lr: float = 2e-3, temperature: float = 0.2, feature_dim: int = 32,
                  seed: int = 0) -> tuple[DigitEncoder, dict]:
    """Contrastive training on the non-test images (no labels); returns the encoder and its final loss."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    x = torch.from_numpy(images[~is_test])
    model = DigitEncoder(feature_dim)
    head = nn.Sequential(nn.ReLU(), nn.Linear(feature_dim, 64))  # SimCLR's projection, dropped after training
    params = list(model.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    losses = []
    for _ in range(steps):
        batch = x[torch.randint(len(x), (batch_size,), generator=gen)]
        loss = nt_xent(head(model(torch.cat([augment(batch, gen), augment(batch, gen)]))), temperature)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return model.eval(), {"steps": steps, "final_loss": float(np.mean(losses[-20:]))}


def attribute_probe(features: np.ndarray, images: np.ndarray, labels: np.ndarray,
                    is_test: np.ndarray) -> dict[str, float]:
    """Held-out accuracy of a linear probe (standardised features, logistic regression) fitted on the
    training images' features to each attribute's tercile within its digit
    (drift.testbed.attributes), by attribute name. The labels check the features; nothing is
    trained on them but the probe."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    levels = attribute_levels(images, labels)
    out = {}
    for a, (name, _) in enumerate(ATTRIBUTES):
        probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
        probe.fit(features[~is_test], levels[~is_test, a])
        out[name] = float(probe.score(features[is_test], levels[is_test, a]))
    return out


def encoder_probe(model: DigitEncoder, images: np.ndarray, labels: np.ndarray, is_test: np.ndarray) -> dict[str, float]:
    """``attribute_probe`` on the encoder's features of the real digits."""
    with torch.no_grad():
        features = model(torch.from_numpy(images)).numpy()
    return attribute_probe(features, images, labels, is_test)


def load_encoder(checkpoint: str | Path, device="cpu") -> DigitEncoder:
    return load_module(DigitEncoder, checkpoint, device, what="digit encoder",
                       remedy="build the testbed with `dvc repro` (stage train_encoder) or set the embedding's "
                              "'checkpoint' argument")


@EMBEDDINGS.register("digit_encoder")
def digit_encoder(device="cpu", checkpoint: str = "data/testbed/encoder"):
    """The evaluation embedding of the testbed: the contrastive encoder's features."""
    model = load_encoder(checkpoint, device)

    @torch.no_grad()
    def embed(images: torch.Tensor) -> torch.Tensor:
        return model(images.to(device))

    return embed

"""Human (or synthetic) preference data: which of two images for a prompt is better.

Format, under data/preferences/ (versioned by DVC):

    pairs.csv   pair_id, prompt, image_a, image_b, choice, annotator, timestamp
                image paths are relative to the CSV's directory; choice is first, second or tie;
                timestamp is ISO 8601.
    images/     the PNG files the pairs refer to.

The testbed's synthetic annotator (clearly labelled in the annotator column) prefers bolder
strokes: the image with more ink (higher mean intensity) wins, a tie when the two differ by less
than ``tie_margin``. It exists so that the retraining loop can be exercised end to end offline.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from drift.models.base import T2IModel
from drift.plots import to_pil
from drift.sampling.rollout import rollout

COLUMNS = ["pair_id", "prompt", "image_a", "image_b", "choice", "annotator", "timestamp"]
CHOICES = ("first", "second", "tie")
SYNTHETIC_ANNOTATOR = "synthetic:bold-strokes-v1"


def read_pairs(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    return pd.read_csv(path, dtype=str) if path.is_file() else pd.DataFrame(columns=COLUMNS)


def bold_strokes_choice(a: torch.Tensor, b: torch.Tensor, tie_margin: float = 0.005) -> str:
    """The synthetic annotator: prefer the image with more ink (mean intensity in [0, 1])."""
    diff = float(a.mean() - b.mean())
    return "tie" if abs(diff) < tie_margin else ("first" if diff > 0 else "second")


def synthetic_batch(model: T2IModel, prompts: list[str], pairs: int, out_dir: str | Path, seed: int,
                    num_steps: int = 10, noise_level: float = 0.7) -> pd.DataFrame:
    """Sample ``pairs`` image pairs from ``model`` for random prompts, annotate them with the
    synthetic annotator, write the images, and append the rows to out_dir/pairs.csv."""
    out = Path(out_dir)
    batch = f"batch-{seed:06d}"
    (out / "images" / batch).mkdir(parents=True, exist_ok=True)
    existing = read_pairs(out / "pairs.csv")
    if existing["pair_id"].astype(str).str.startswith(batch).any():
        raise ValueError(f"{out / 'pairs.csv'} already holds {batch}: use another seed for a new batch")
    rng = np.random.default_rng(seed)
    chosen = [prompts[i] for i in rng.integers(len(prompts), size=pairs)]
    seeds = torch.as_tensor(rng.integers(0, 2**31 - 1, size=2 * pairs), dtype=torch.long)
    images = rollout(model, chosen, 2, seeds, num_steps, noise_level).images
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()
    rows = []
    for k, prompt in enumerate(chosen):
        a, b = images[2 * k], images[2 * k + 1]
        names = [f"images/{batch}/{k:05d}_{side}.png" for side in ("a", "b")]
        for name, img in zip(names, (a, b)):
            to_pil(img).save(out / name)
        rows.append({"pair_id": f"{batch}-{k:05d}", "prompt": prompt, "image_a": names[0], "image_b": names[1],
                     "choice": bold_strokes_choice(a, b), "annotator": SYNTHETIC_ANNOTATOR, "timestamp": now})
    table = pd.concat([existing, pd.DataFrame(rows, columns=COLUMNS)], ignore_index=True)
    table.to_csv(out / "pairs.csv", index=False)
    return table


def load_pair_images(table: pd.DataFrame, root: str | Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Images A and B of every pair as (N, C, H, W) tensors in [0, 1]."""
    from PIL import Image

    def load(rel):
        with Image.open(Path(root) / rel) as im:
            a = np.asarray(im, dtype=np.float32) / 255.0
        return torch.from_numpy(a[None] if a.ndim == 2 else a.transpose(2, 0, 1))

    return (torch.stack([load(p) for p in table["image_a"]]), torch.stack([load(p) for p in table["image_b"]]))


def is_held_out(pair_ids: pd.Series, fraction: float) -> np.ndarray:
    """A stable held-out split: a pair is held out by a hash of its id, so adding batches never
    moves an existing pair between the splits."""
    import zlib

    return np.array([zlib.crc32(str(p).encode()) % 1000 < fraction * 1000 for p in pair_ids])

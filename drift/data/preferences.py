"""Human (or synthetic) preference data: which of two images for a prompt is better.

Format, under data/preferences/ (versioned by DVC):

    pairs.csv   pair_id, prompt, image_a, image_b, choice, annotator, timestamp
                image paths are relative to the CSV's directory; choice is first, second or tie;
                timestamp is ISO 8601. Optional provenance columns, which older files lack:
                seed_a, seed_b (the sampling seed of each image, when the images were generated
                here), model, model_version (the generator that drew them) and source (how the
                row arrived: label, label-studio, choice-log, synthetic).
    images/     the image files the pairs refer to.

Writers go through ``append_pairs``: it holds the folder's lock, writes the images before the
rows that refer to them and replaces pairs.csv atomically, so several writers at once (raters
on the labelling page, an import, ``dvc add``) never lose, duplicate or half-write rows.

The testbed's synthetic annotator (clearly labelled in the annotator column) prefers bolder
strokes: the image with more ink (higher mean intensity) wins, a tie when the two differ by less
than ``tie_margin``. It exists so that the retraining loop can be exercised end to end offline.
"""

from __future__ import annotations

import datetime as dt
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from drift.models.base import T2IModel
from drift.plots import to_pil
from drift.sampling.rollout import rollout

COLUMNS = ["pair_id", "prompt", "image_a", "image_b", "choice", "annotator", "timestamp"]
OPTIONAL_COLUMNS = ["seed_a", "seed_b", "model", "model_version", "source"]
CHOICES = ("first", "second", "tie")
SYNTHETIC_ANNOTATOR = "synthetic:bold-strokes-v1"
PAIRS_FILE = "pairs.csv"


def read_pairs(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    return pd.read_csv(path, dtype=str) if path.is_file() else pd.DataFrame(columns=COLUMNS)


def utc_now() -> str:
    """The current time as the timestamp column writes it (ISO 8601, UTC, whole seconds)."""
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()


@contextmanager
def preferences_lock(out_dir: str | Path) -> Iterator[Path]:
    """Hold the exclusive lock of a preference folder (created if missing) for a read-modify-write
    of pairs.csv. It is a flock on the directory itself, so no lock file lands in the DVC-tracked
    data, and it excludes other threads and processes alike."""
    import fcntl

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fd = os.open(out, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield out
    finally:
        os.close(fd)  # closing releases the lock


def ordered_columns(table: pd.DataFrame) -> pd.DataFrame:
    """The format's columns first (those present), then any others."""
    known = [c for c in COLUMNS + OPTIONAL_COLUMNS if c in table.columns]
    return table[known + [c for c in table.columns if c not in known]]


def write_pairs(table: pd.DataFrame, path: str | Path) -> None:
    """Replace ``path`` atomically (a temporary file beside it, then os.replace): a crash leaves
    the old file or the new one, never half of one. Call it under ``preferences_lock``."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as f:
            ordered_columns(table).to_csv(f, index=False)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def append_pairs(out_dir: str | Path, rows: list[dict], images: dict | None = None) -> pd.DataFrame:
    """Append ``rows`` (dicts with COLUMNS and optionally OPTIONAL_COLUMNS) to out_dir/pairs.csv
    under the folder's lock and return the whole table. ``images`` maps paths relative to out_dir
    to PIL images, written before the rows that refer to them. A pair id that is already in the
    file raises ValueError and writes nothing."""
    with preferences_lock(out_dir) as out:
        return append_pairs_locked(out, rows, images)


def append_pairs_locked(out: Path, rows: list[dict], images: dict | None = None) -> pd.DataFrame:
    """``append_pairs`` for a caller that already holds ``preferences_lock(out)``."""
    missing = sorted({c for r in rows for c in COLUMNS if c not in r})
    if missing:
        raise ValueError(f"preference rows lack column(s) {', '.join(missing)}")
    existing = read_pairs(out / PAIRS_FILE)
    clash = sorted(set(existing["pair_id"].astype(str)) & {str(r["pair_id"]) for r in rows})
    if clash:
        raise ValueError(f"{out / PAIRS_FILE} already holds pair id(s) {', '.join(clash[:5])}")
    for rel, image in (images or {}).items():
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        image.save(out / rel)
    new = pd.DataFrame(rows).astype(object)
    table = new if existing.empty else pd.concat([existing, new], ignore_index=True)
    write_pairs(table, out / PAIRS_FILE)
    return ordered_columns(table)


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
    existing = read_pairs(out / PAIRS_FILE)
    if existing["pair_id"].astype(str).str.startswith(batch).any():
        raise ValueError(f"{out / PAIRS_FILE} already holds {batch}: use another seed for a new batch")
    rng = np.random.default_rng(seed)
    chosen = [prompts[i] for i in rng.integers(len(prompts), size=pairs)]
    seeds = torch.as_tensor(rng.integers(0, 2**31 - 1, size=2 * pairs), dtype=torch.long)
    images = rollout(model, chosen, 2, seeds, num_steps, noise_level).images
    now = utc_now()
    rows, files = [], {}
    for k, prompt in enumerate(chosen):
        a, b = images[2 * k], images[2 * k + 1]
        names = [f"images/{batch}/{k:05d}_{side}.png" for side in ("a", "b")]
        files.update({names[0]: to_pil(a), names[1]: to_pil(b)})
        rows.append({"pair_id": f"{batch}-{k:05d}", "prompt": prompt, "image_a": names[0], "image_b": names[1],
                     "choice": bold_strokes_choice(a, b), "annotator": SYNTHETIC_ANNOTATOR, "timestamp": now,
                     "seed_a": str(int(seeds[2 * k])), "seed_b": str(int(seeds[2 * k + 1])), "source": "synthetic"})
    return append_pairs(out, rows, files)


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

"""Human (or synthetic) preference data: which of two images for a prompt is better.

Format, under data/preferences/ (versioned by DVC):

    pairs.csv   pair_id, prompt, image_a, image_b, choice, annotator, timestamp
                image paths are relative to the CSV's directory; choice is first, second or tie;
                timestamp (ISO 8601) is when the recorded choice was made. Optional columns, which
                older files lack: seed_a, seed_b (the sampling seed of each image, when the images
                were generated here), model, model_version (the generator that drew them), source
                (how the row arrived: label, label-studio, choice-log, synthetic) and shown_at
                (ISO 8601, when the pair was shown to the rater).
    images/     the image files the pairs refer to.

A pair is its content: the prompt and the two images' file contents (``pair_identity``), in either
order, wherever the files are stored. A row is one annotator's choice on a pair: several raters of
one pair are several rows, one annotator has at most one row per pair, and ``pair_id`` names the
row (a source's annotation id, or one made here).

Writers go through ``append_pairs``: it holds the folder's lock, writes the images before the
rows that refer to them and replaces pairs.csv atomically, so several writers at once (raters
on the labelling page, an import, ``dvc add``) never lose, duplicate or half-write rows.

The testbed's synthetic annotator (clearly labelled in the annotator column) prefers bolder
strokes: the image with more ink (higher mean intensity) wins, a tie when the two differ by less
than ``tie_margin``. It exists so that the retraining loop can be exercised end to end offline.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import uuid
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from drift.errors import DriftError

if TYPE_CHECKING:  # torch and the models load only where images are drawn or read
    import torch

    from drift.models.base import T2IModel

COLUMNS = ["pair_id", "prompt", "image_a", "image_b", "choice", "annotator", "timestamp"]
OPTIONAL_COLUMNS = ["seed_a", "seed_b", "model", "model_version", "source", "shown_at"]
CHOICES = ("first", "second", "tie")
SYNTHETIC_ANNOTATOR = "synthetic:bold-strokes-v1"
PAIRS_FILE = "pairs.csv"


def read_pairs(path: str | Path) -> pd.DataFrame:
    """The rows of a pairs.csv as strings (none when the file does not exist yet); a file that is
    not CSV text is a user mistake, said in one line."""
    path = Path(path)
    if not path.is_file():
        return pd.DataFrame(columns=COLUMNS)
    try:
        return pd.read_csv(path, dtype=str, encoding="utf-8-sig")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise DriftError(f"{path} is not a preference pairs CSV: {str(err).splitlines()[0]}") from None


def utc_now() -> str:
    """The current time as the timestamp columns write it (ISO 8601, UTC, milliseconds: answers
    take seconds, so the time per answer needs finer steps than whole seconds)."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


def parse_time(value) -> dt.datetime | None:
    """An ISO 8601 timestamp column value as an aware datetime (UTC where it names no zone);
    None when it is empty or not ISO 8601."""
    try:
        when = dt.datetime.fromisoformat(str(value).strip())
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


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
    the old file or the new one, never half of one. Call it under ``preferences_lock``. The file
    gets the user's normal permissions (0666 less the umask), so teammates sharing the folder can
    read it as they read the images."""
    path = Path(path)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
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


def append_pairs_locked(out: Path, rows: list[dict], images: dict | None = None,
                        replacing: list[dict] = ()) -> pd.DataFrame:
    """``append_pairs`` for a caller that already holds ``preferences_lock(out)``. Each row of
    ``replacing`` takes the place of the row with its pair id (which must exist)."""
    missing = sorted({c for r in [*rows, *replacing] for c in COLUMNS if c not in r})
    if missing:
        raise ValueError(f"preference rows lack column(s) {', '.join(missing)}")
    existing = read_pairs(out / PAIRS_FILE)
    ids = existing["pair_id"].astype(str)
    clash = sorted(set(ids) & {str(r["pair_id"]) for r in rows})
    if clash:
        raise ValueError(f"{out / PAIRS_FILE} already holds pair id(s) {', '.join(clash[:5])}")
    absent = sorted({str(r["pair_id"]) for r in replacing} - set(ids))
    if absent:
        raise ValueError(f"{out / PAIRS_FILE} has no pair id(s) {', '.join(absent[:5])} to replace")
    for rel, image in (images or {}).items():
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        image.save(out / rel)
    table = changed_pairs(existing, rows, replacing)
    write_pairs(table, out / PAIRS_FILE)
    return table


def changed_pairs(table: pd.DataFrame, rows: list[dict], replacing: list[dict] = ()) -> pd.DataFrame:
    """A copy of ``table`` with ``rows`` appended and each row of ``replacing`` in the place of the
    row with its pair id."""
    table = table.copy()
    ids = table["pair_id"].astype(str)
    for row in replacing:
        for column in row:
            if column not in table.columns:
                table[column] = None
        table.loc[ids == str(row["pair_id"]), list(row)] = list(row.values())
    new = pd.DataFrame(rows).astype(object)
    table = table if new.empty else new if table.empty else pd.concat([table, new], ignore_index=True)
    return ordered_columns(table)


def remove_pair_locked(out: Path, pair_id: str, annotator: str) -> bool:
    """Remove the row ``pair_id`` if ``annotator`` recorded it, and its image files that no other
    row refers to; the caller holds ``preferences_lock(out)``. The row goes first: a crash leaves
    an unused image, never a row without its image. Returns whether a row was removed."""
    table = read_pairs(out / PAIRS_FILE)
    gone = (table["pair_id"].astype(str) == str(pair_id)) & (table["annotator"].astype(str) == str(annotator))
    if not gone.any():
        return False
    kept = table[~gone]
    write_pairs(kept, out / PAIRS_FILE)
    used = set(kept["image_a"].astype(str)) | set(kept["image_b"].astype(str))
    for rel in set(table.loc[gone, "image_a"].astype(str)) | set(table.loc[gone, "image_b"].astype(str)):
        if rel not in used and (out / rel).resolve().is_relative_to(out.resolve()):
            (out / rel).unlink(missing_ok=True)
    return True


def file_digest(path: str | Path) -> str:
    """The SHA-256 of a file's bytes (hex): how images are compared wherever they are stored."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def pair_key(prompt: str, digest_a: str, digest_b: str) -> tuple[str, bool]:
    """A pair's key (the prompt and both images' digests, in a fixed order) and whether (a, b) is
    the other order than the key's."""
    ordered = sorted((digest_a, digest_b))
    return hashlib.sha256("\0".join([str(prompt), *ordered]).encode()).hexdigest()[:24], digest_a > digest_b


def pair_identity(table: pd.DataFrame, root: str | Path, digests: dict[str, str] | None = None) -> pd.DataFrame:
    """Each row's pair, by content (``pair_key``): ``key`` is the same wherever the files are stored
    and whichever image was shown first; ``flipped`` says the row shows them in the other order
    than the key's. An image that cannot be read counts by its path. ``digests`` (image path ->
    file digest) is filled in, for callers that compare images with the stored ones."""
    digests = {} if digests is None else digests

    def digest(rel) -> str:
        rel = str(rel)
        if rel not in digests:
            try:
                digests[rel] = file_digest(Path(root) / rel)
            except (OSError, RuntimeError):  # missing, unreadable, a symlink loop
                digests[rel] = f"unreadable:{rel}"
        return digests[rel]

    keys = [pair_key(p, digest(a), digest(b)) for p, a, b in zip(table["prompt"], table["image_a"], table["image_b"])]
    return pd.DataFrame(keys, columns=["key", "flipped"], index=table.index).astype({"key": object, "flipped": bool})


def oriented_choices(choices: pd.Series, flipped: pd.Series) -> pd.Series:
    """Choices said of the pair in its key's order: first and second swap where the row is flipped."""
    swap = {"first": "second", "second": "first"}
    return pd.Series([swap.get(c, c) if f else c for c, f in zip(choices, flipped)], index=choices.index)


def bold_strokes_choice(a: torch.Tensor, b: torch.Tensor, tie_margin: float = 0.005) -> str:
    """The synthetic annotator: prefer the image with more ink (mean intensity in [0, 1])."""
    diff = float(a.mean() - b.mean())
    return "tie" if abs(diff) < tie_margin else ("first" if diff > 0 else "second")


def synthetic_batch(model: T2IModel, prompts: list[str], pairs: int, out_dir: str | Path, seed: int,
                    num_steps: int = 10, noise_level: float = 0.7) -> pd.DataFrame:
    """Sample ``pairs`` image pairs from ``model`` for random prompts, annotate them with the
    synthetic annotator, write the images, and append the rows to out_dir/pairs.csv."""
    import torch

    from drift.plots import to_pil
    from drift.sampling.rollout import rollout

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
    import torch
    from PIL import Image

    def load(rel):
        with Image.open(Path(root) / rel) as im:
            a = np.asarray(im, dtype=np.float32) / 255.0
        return torch.from_numpy(a[None] if a.ndim == 2 else a.transpose(2, 0, 1))

    return (torch.stack([load(p) for p in table["image_a"]]), torch.stack([load(p) for p in table["image_b"]]))


def is_held_out(keys: pd.Series, fraction: float) -> np.ndarray:
    """A stable held-out split by pair (``pair_identity``'s key): a pair is held out by a hash of
    its key, so all rows of one pair (its raters) land on one side, and adding data never moves
    an existing pair between the splits."""
    return np.array([zlib.crc32(str(k).encode()) % 1000 < fraction * 1000 for k in keys])

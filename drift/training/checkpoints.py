"""Training checkpoints that load without executing code and say when they are damaged.

A checkpoint is a directory ``iter_NNNNNN`` holding

    weights.safetensors   the trained weights (LoRA adapters or the full denoiser)
    tensors.safetensors   every other tensor of the training state (optimizer moments, EMA, RNG)
    state.json            the rest as plain data, with each tensor replaced by {"__tensor__": key}
    manifest.json         written last: the SHA-256 of each file above

Nothing is unpickled. The manifest is the completion marker: a directory without one, or whose
files do not match it, is not a checkpoint (on object stores, where a rename is not atomic, this is
what decides completeness). Loading refuses non-finite weights, and ``find_resumable`` falls back to
the newest intact checkpoint, naming what was wrong with the newer ones.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from drift.data.provenance import file_digest
from drift.errors import CheckpointError, DiskFullError

WEIGHTS, TENSORS, STATE, MANIFEST = "weights.safetensors", "tensors.safetensors", "state.json", "manifest.json"
PREFIX = "iter_"


@dataclass
class Checkpoint:
    weights: dict[str, torch.Tensor]
    state: dict[str, Any]  # plain data with the tensors put back in place
    path: Path


def checkpoint_name(iteration: int) -> str:
    return f"{PREFIX}{iteration:06d}"


def split_tensors(obj, tensors: dict[str, torch.Tensor], prefix: str = "t"):
    """``obj`` (nested dicts, lists, tuples, scalars, tensors) as plain data: each tensor is moved
    into ``tensors`` and replaced by {"__tensor__": key}. Tuples become lists."""
    if isinstance(obj, torch.Tensor):
        key = f"{prefix}"
        tensors[key] = obj.detach().contiguous().cpu()
        return {"__tensor__": key}
    if isinstance(obj, dict):
        return {str(k): split_tensors(v, tensors, f"{prefix}.{k}") for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [split_tensors(v, tensors, f"{prefix}.{i}") for i, v in enumerate(obj)]
    if hasattr(obj, "tolist"):  # numpy arrays and scalars
        return obj.tolist()
    return obj


def join_tensors(obj, tensors: dict[str, torch.Tensor]):
    """The inverse of ``split_tensors`` (lists stay lists)."""
    if isinstance(obj, dict):
        if set(obj) == {"__tensor__"}:
            return tensors[obj["__tensor__"]]
        return {k: join_tensors(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [join_tensors(v, tensors) for v in obj]
    return obj


def _write_synced(path: Path, write) -> None:
    write(path)
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def _sync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _disk_full(err: BaseException) -> bool:
    if isinstance(err, OSError):
        return err.errno in (errno.ENOSPC, errno.EDQUOT)
    # safetensors reports the OS error in its message: "IoError(Os { code: 28, kind: StorageFull, ... })"
    return any(s in str(err) for s in ("StorageFull", "QuotaExceeded", "No space left", "code: 28,"))


def _megabytes(size: float) -> str:
    return f"{size / 1e6:,.0f} MB" if size >= 1e6 else f"{size / 1e3:,.0f} kB"


def save_checkpoint(path: str | Path, weights: dict[str, torch.Tensor], state: dict[str, Any]) -> Path:
    """Write a checkpoint to a temporary directory, flush every file to disk, then rename it into
    place; the manifest is written last, so a kill at any point leaves no checkpoint that looks
    complete. An existing checkpoint at ``path`` is replaced. A full disk removes the partial
    directory and raises ``DiskFullError`` with the space needed; earlier checkpoints are untouched."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tensors: dict[str, torch.Tensor] = {}
    plain = split_tensors(state, tensors)
    files = {
        WEIGHTS: lambda p: save_file({k: v.detach().contiguous().cpu() for k, v in weights.items()}, p),
        TENSORS: lambda p: save_file(tensors, p),
        STATE: lambda p: p.write_text(json.dumps(plain)),
    }
    try:
        tmp.mkdir(parents=True)
        for name, write in files.items():
            _write_synced(tmp / name, write)
        manifest = {"files": {name: file_digest(tmp / name, "sha256") for name in files}}
        _write_synced(tmp / MANIFEST, lambda p: p.write_text(json.dumps(manifest, indent=1)))
        _sync_dir(tmp)
    except (OSError, SafetensorError) as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if not _disk_full(err):
            raise
        needed = sum(t.nbytes for t in (*weights.values(), *tensors.values())) + len(json.dumps(plain))
        intact = [p.name for p in list_checkpoints(path.parent) if p != path]
        raise DiskFullError(
            f"disk full while writing the checkpoint {path}: it needs about {_megabytes(needed)}, "
            f"{_megabytes(shutil.disk_usage(path.parent).free)} are free there. The partial checkpoint was removed; "
            f"{'the newest intact one, ' + intact[-1] + ', is untouched' if intact else 'no earlier checkpoint exists'}"
            ". Free some space (or put the run's folder on a larger disk) and run again: it resumes from the newest "
            "intact checkpoint.") from None
    if path.exists():
        shutil.rmtree(path)
    os.replace(tmp, path)
    _sync_dir(path.parent)
    return path


def verify(path: str | Path) -> None:
    """Raise ``CheckpointError`` naming the problem unless every file matches the manifest."""
    path = Path(path)
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise CheckpointError(f"{path}: incomplete (no {MANIFEST}: the write was interrupted)")
    try:
        expected = json.loads(manifest_path.read_text())["files"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise CheckpointError(f"{path}: unreadable {MANIFEST} ({err})") from None
    for name in (WEIGHTS, TENSORS, STATE):
        if name not in expected:
            raise CheckpointError(f"{path}: {MANIFEST} does not list {name}")
        if not (path / name).is_file():
            raise CheckpointError(f"{path}: {name} is missing")
        if file_digest(path / name, "sha256") != expected[name]:
            raise CheckpointError(f"{path}: {name} does not match its SHA-256 in {MANIFEST} (corrupted or modified)")


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read a verified checkpoint; non-finite weights or optimizer values are refused."""
    path = Path(path)
    verify(path)
    try:
        weights = load_file(path / WEIGHTS)
        tensors = load_file(path / TENSORS)
        state = json.loads((path / STATE).read_text())
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: unreadable ({type(err).__name__}: {err})") from None
    for group, named in (("weights", weights), ("training state", tensors)):
        bad = [k for k, v in named.items() if v.is_floating_point() and not torch.isfinite(v).all()]
        if bad:
            raise CheckpointError(f"{path}: non-finite values in {group} ({', '.join(bad[:5])})")
    return Checkpoint(weights=weights, state=join_tensors(state, tensors), path=path)


def list_checkpoints(directory: str | Path) -> list[Path]:
    """Checkpoint directories, oldest first (temporary directories of interrupted writes excluded)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.glob(f"{PREFIX}*") if p.is_dir() and not p.name.endswith(".tmp"))


def remove_partial(directory: str | Path) -> list[Path]:
    """Delete the temporary directories of interrupted writes (``iter_N.tmp``); returns them."""
    directory = Path(directory)
    partial = sorted(directory.glob(f"{PREFIX}*.tmp")) if directory.is_dir() else []
    for path in partial:
        shutil.rmtree(path, ignore_errors=True)
    return partial


def load_newest(directory: str | Path) -> tuple[Checkpoint | None, list[str]]:
    """The newest checkpoint that verifies and loads, and what was wrong with each newer one."""
    problems = []
    for path in reversed(list_checkpoints(directory)):
        try:
            return load_checkpoint(path), problems
        except CheckpointError as err:
            problems.append(str(err))
    return None, problems


def prune(directory: str | Path, keep_last: int) -> list[Path]:
    """Delete all but the newest ``keep_last`` intact checkpoints (0 keeps all); damaged or
    incomplete ones older than the newest intact one go too. Returns what was deleted."""
    if keep_last <= 0:
        return []
    intact = []
    removed = []
    for path in reversed(list_checkpoints(directory)):
        try:
            verify(path)
            ok = True
        except CheckpointError:
            ok = False
        if ok and len(intact) < keep_last:
            intact.append(path)
        elif intact:
            shutil.rmtree(path)
            removed.append(path)
    return removed

"""Where the data came from: the DVC hash of a file (from dvc.lock) and the git revision."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import yaml


def file_digest(path: str | Path, algorithm: str = "md5") -> str:
    """Hex digest of a file's bytes (md5 is what DVC records; sha256 guards checkpoints)."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_md5(path: str | Path) -> str:
    return file_digest(path, "md5")


def content_digest(path: str | Path) -> str:
    """SHA-256 hex digest of a file or a directory tree's contents: for each file in sorted order,
    its path relative to the directory (a lone file: its name) and its bytes. Renaming, adding,
    removing or editing a file changes it; where the tree lies does not."""
    root = Path(path)
    files = sorted(p for p in ([root] if root.is_file() else root.rglob("*")) if p.is_file())
    digest = hashlib.sha256()
    for f in files:
        digest.update(str(f.relative_to(root) if f != root else f.name).encode())
        with open(f, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def dvc_locked_md5(path: str | Path, lock_file: str | Path = "dvc.lock") -> str | None:
    """The md5 dvc.lock records for ``path`` as a stage output, or None if it is not a DVC output."""
    lock = Path(lock_file)
    if not lock.is_file():
        return None
    target = Path(path).resolve()
    stages = (yaml.safe_load(lock.read_text()) or {}).get("stages", {})
    for stage in stages.values():
        for out in stage.get("outs", []):
            if (lock.parent / out["path"]).resolve() == target:
                return out.get("md5")
    return None


def git_revision(cwd: str | Path = ".") -> str:
    """HEAD's commit, with '-dirty' when tracked files have uncommitted changes; 'unknown' outside git."""
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd, capture_output=True,
                               text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return rev + ("-dirty" if dirty else "")


def data_version(path: str | Path, lock_file: str | Path = "dvc.lock") -> dict[str, str]:
    """{'data_path', 'data_md5', 'dvc_md5' (or 'untracked'), 'dvc_in_sync', 'git_revision'}."""
    md5 = file_md5(path)
    locked = dvc_locked_md5(path, lock_file)
    return {
        "data_path": str(path),
        "data_md5": md5,
        "dvc_md5": locked or "untracked",
        "dvc_in_sync": str(locked == md5).lower() if locked else "n/a",
        "git_revision": git_revision(Path(lock_file).parent if Path(lock_file).parent.exists() else "."),
    }

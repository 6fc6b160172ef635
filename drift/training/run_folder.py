"""Run folders: where one training run keeps its checkpoints, metrics log and, once trained, its
model until the registry has decided on it.

    <output_dir>/<run key>/<run id>/
        .claim            held (flock) by the process that trains in the folder
        holder.json       who holds it: host, process, since when (for messages)
        checkpoints/ metrics.jsonl   see drift.training.run
        model/ trajectory.json preview.png finished.json   a finished run (finished.json written last)

Every run gets a folder of its own. The claim is an exclusive ``flock`` that the operating system
drops when its process ends, however it ends (kill -9 included), so a folder whose holder is gone is
free without any clean-up, and a live run's folder is never taken: a second run of the same
configuration trains in another folder. A new run of a configuration takes over a free folder of it:
one with a finished model first (the model is reused; a failure after training does not cost the
training), else the one with the newest intact checkpoint (training resumes), else a new folder.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import shutil
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

from drift.errors import DriftError
from drift.training import checkpoints

CLAIM, HOLDER, FINISHED = ".claim", "holder.json", "finished.json"
MODEL, TRAJECTORY, PREVIEW = "model", "trajectory.json", "preview.png"


@dataclass
class RunFolder:
    """A claimed run folder; ``finished`` is finished.json's content when it holds a trained model."""

    path: Path
    finished: dict | None = None
    _fd: int | None = field(default=None, repr=False)

    @property
    def model_dir(self) -> Path:
        return self.path / MODEL

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # drops the flock
            self._fd = None

    def __enter__(self) -> RunFolder:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def holder(path: Path) -> str:
    """Who holds (or last held) a run folder, from its holder.json."""
    try:
        info = json.loads((path / HOLDER).read_text())
        return f"process {info['pid']} on {info['host']} since {info['since']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


def claim(path: str | Path) -> RunFolder | None:
    """Claim ``path`` (created if missing) for this process; None while a live process holds it."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    fd = os.open(path / CLAIM, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    (path / HOLDER).write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                                           "since": time.strftime("%Y-%m-%d %H:%M:%S")}))
    return RunFolder(path, read_finished(path), fd)


def claim_or_fail(path: str | Path) -> RunFolder:
    """Claim ``path``, or stop with a message naming its live holder."""
    folder = claim(path)
    if folder is None:
        raise DriftError(f"{path} is in use by {holder(Path(path))}: wait for that run to end, or use another folder")
    return folder


def read_finished(path: Path) -> dict | None:
    try:
        finished = json.loads((path / FINISHED).read_text())
    except (OSError, ValueError):
        return None
    return finished if isinstance(finished, dict) and (path / MODEL).is_dir() else None


def mark_finished(path: Path, digest: str, iterations: int) -> None:
    """Record that ``path`` holds a trained model (written last, after the model and its previews)."""
    tmp = path / (FINISHED + ".tmp")
    tmp.write_text(json.dumps({"digest": digest, "iterations": iterations}))
    os.replace(tmp, path / FINISHED)


def _newest_checkpoint(path: Path) -> str:
    found = checkpoints.list_checkpoints(path / "checkpoints")
    return found[-1].name if found else ""


def choose(parent: str | Path, fresh: bool = False) -> RunFolder:
    """A claimed folder for a new run of the configuration whose folders lie in ``parent``: a free
    one with a finished model, else the free one with the newest checkpoint, else a new one. With
    ``fresh``, always a new one, and the free folders are removed."""
    parent = Path(parent)
    existing = sorted((p for p in parent.iterdir() if p.is_dir()), key=lambda p: p.name) if parent.is_dir() else []
    if fresh:
        for path in existing:
            folder = claim(path)
            if folder is not None:
                shutil.rmtree(path)
                folder.release()
        existing = []
    ranked = sorted(existing, key=lambda p: (read_finished(p) is not None, _newest_checkpoint(p)), reverse=True)
    for path in ranked:
        folder = claim(path)
        if folder is not None:
            return folder
    while True:
        folder = claim(parent / f"run-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}")
        if folder is not None:
            return folder


def forget(output_dir: str | Path, digests: set[str]) -> list[Path]:
    """Remove the free run folders (under any configuration of ``output_dir``) whose finished model
    has one of ``digests``: their registered version has been decided. Returns what was removed."""
    removed = []
    for finished in sorted(Path(output_dir).glob(f"*/*/{FINISHED}")):
        path = finished.parent
        if (read_finished(path) or {}).get("digest") not in digests:
            continue
        folder = claim(path)
        if folder is not None:
            shutil.rmtree(path)
            folder.release()
            removed.append(path)
    return removed

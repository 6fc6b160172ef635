"""What the labelling page does, without HTTP: draw a pair for a prompt, remember it until the
rater answers, and record the answer in the preference data (drift.data.preferences).

A pair is drawn on demand with two fresh seeds and kept in memory under a one-time token; only an
answer (first, second, tie) writes anything: both images, then the row (with when the pair was
shown and when it was answered), through ``append_pairs``, which serialises writers across
threads and processes. A skip, or a pair never answered, leaves no trace. Answering a token twice
records it once. Each recorded answer comes with an undo handle that only its rater can use, until
the data is versioned (``version``): undoing removes the row and its images under the same lock.
"""

from __future__ import annotations

import base64
import importlib.util
import io
import random
import re
import subprocess
import sys
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from drift.data.preferences import (
    CHOICES,
    PAIRS_FILE,
    append_pairs,
    preferences_lock,
    read_pairs,
    remove_pair_locked,
    utc_now,
)
from drift.errors import DriftError
from drift.plots import to_pil
from mlops.labelling.access import LabelError, check_rater
from mlops.labelling.generator import Generator

MAX_PENDING = 1000  # pairs shown but not answered yet; the oldest are forgotten first
MAX_UNDO = 1000  # answers that can still be undone; the oldest are forgotten first
SOURCE = "label"


class AnsweredError(LabelError):
    """A pair that was already answered or skipped, or was forgotten; an answer already undone."""


@dataclass
class Pending:
    prompt: str
    seeds: tuple[int, int]
    images: tuple  # two PIL images
    shown_at: str  # when the pair was sent to the rater


def _png_data_url(image) -> str:
    """A PIL image inlined in the JSON reply, so that a pair is one request."""
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


class LabelSession:
    """Pairs for the raters of one server; thread-safe."""

    def __init__(self, generator: Generator, prompts: list[str], out_dir: str | Path, seed: int | None = None):
        if not prompts:
            raise DriftError("no prompts to label: the prompt set's training split is empty")
        self.generator, self.prompts, self.out = generator, list(prompts), Path(out_dir)
        self._rng = random.Random(seed)
        self._pending: OrderedDict[str, Pending] = OrderedDict()
        self._undo: OrderedDict[str, tuple[str, str]] = OrderedDict()  # handle -> (pair id, rater)
        self._lock = threading.Lock()

    def next_pair(self) -> dict:
        """A new pair: its token, the prompt and both images as PNG data URLs."""
        with self._lock:
            prompt = self._rng.choice(self.prompts)
            seeds = (self._rng.randrange(2**31 - 1), self._rng.randrange(2**31 - 1))
        images = tuple(to_pil(img) for img in self.generator.images(prompt, seeds))
        token = uuid.uuid4().hex
        with self._lock:
            self._pending[token] = Pending(prompt, seeds, images, utc_now())
            while len(self._pending) > MAX_PENDING:
                self._pending.popitem(last=False)
        return {"token": token, "prompt": prompt, "image_a": _png_data_url(images[0]),
                "image_b": _png_data_url(images[1])}

    def answer(self, token: str, choice: str, rater: str) -> dict | None:
        """Record ``choice`` (first, second, tie) by ``rater`` for the pair ``token``, or forget
        the pair on 'skip'. Returns the recorded pair id and the handle that undoes it (None for
        a skip)."""
        if choice not in (*CHOICES, "skip"):
            raise LabelError(f"choice must be one of {', '.join(CHOICES)} or skip, got {choice!r}")
        rater = check_rater(rater) if choice != "skip" else rater
        with self._lock:
            pair = self._pending.pop(str(token), None)
        if pair is None:
            raise AnsweredError("this pair was already answered or skipped (or has expired): load the next one")
        if choice == "skip":
            return None
        slug = re.sub(r"[^a-z0-9]+", "-", rater.lower()).strip("-")[:24] or "rater"
        pair_id = f"{SOURCE}-{slug}-{uuid.uuid4().hex[:12]}"
        names = [f"images/{SOURCE}/{pair_id}_{side}.png" for side in ("a", "b")]
        row = {"pair_id": pair_id, "prompt": pair.prompt, "image_a": names[0], "image_b": names[1],
               "choice": choice, "annotator": rater, "timestamp": utc_now(), "seed_a": str(pair.seeds[0]),
               "seed_b": str(pair.seeds[1]), "model": self.generator.name, "model_version": self.generator.version,
               "source": SOURCE, "shown_at": pair.shown_at}
        try:
            append_pairs(self.out, [row], dict(zip(names, pair.images)))
        except BaseException:
            with self._lock:  # not recorded: the rater may answer again
                self._pending[str(token)] = pair
            raise
        handle = uuid.uuid4().hex
        with self._lock:
            self._undo[handle] = (pair_id, rater)
            while len(self._undo) > MAX_UNDO:
                self._undo.popitem(last=False)
        return {"pair_id": pair_id, "undo": handle}

    def undo(self, handle: str, rater: str) -> str:
        """Remove the answer ``handle`` stands for, if ``rater`` gave it and the data has not been
        versioned since; returns its pair id."""
        with preferences_lock(self.out) as out:  # held first, so that versioning waits or wins whole
            with self._lock:
                pair_id, who = self._undo.get(str(handle), (None, None))
                if pair_id is None:
                    raise AnsweredError("nothing to undo: that answer was undone already, or the data has been "
                                        "versioned with dvc add since")
                if who != rater:
                    raise LabelError("only the rater who gave an answer can undo it")
                del self._undo[str(handle)]
            if not remove_pair_locked(out, pair_id, rater):
                raise AnsweredError(f"answer {pair_id} is no longer in the preference data")
        return pair_id

    def version(self) -> tuple[bool, str]:
        """`dvc add` the preference folder (``dvc_add``); once versioned, answers given before can no
        longer be undone."""

        def forget_undo() -> None:
            with self._lock:
                self._undo.clear()

        return dvc_add(self.out, forget_undo)

    def progress(self, rater: str | None = None) -> dict:
        """Pairs in the preference data, and those of ``rater``."""
        table = read_pairs(self.out / PAIRS_FILE)
        mine = int((table["annotator"] == str(rater or "").strip()).sum()) if rater else 0
        return {"total": len(table), "mine": mine}

    def describe(self) -> dict:
        """What the page's footer shows: the model, the prompt count, where choices go."""
        return {"model": self.generator.describe(), "prompts": len(self.prompts),
                "data": str(self.out / PAIRS_FILE)}


def dvc_add(out_dir: str | Path, on_versioned: Callable[[], None] | None = None) -> tuple[bool, str]:
    """`dvc add` the preference folder, as `make preferences` does, holding the folder's lock so
    that no rater's row lands half-way through (``on_versioned`` runs under it once dvc succeeded).
    Returns (done, message); a missing DVC repository or a failing dvc changes nothing in the data."""
    out = Path(out_dir).resolve()
    root = next((p for p in out.parents if (p / ".dvc").is_dir()), None)
    if not (out / PAIRS_FILE).is_file():
        return False, f"nothing to version yet: {out / PAIRS_FILE} does not exist"
    if root is None:
        return False, (f"{out} is not inside a DVC repository (no .dvc folder above it): the data is kept; "
                       f"version it by hand (dvc init, then dvc add {out})")
    if importlib.util.find_spec("dvc") is None:
        return False, f"dvc is not installed in this environment: the data is kept; run `dvc add {out}` yourself"
    target = out.relative_to(root)
    with preferences_lock(out):
        done = subprocess.run([sys.executable, "-m", "dvc", "add", str(target)], cwd=root, capture_output=True,
                              text=True)
        if done.returncode == 0 and on_versioned is not None:
            on_versioned()
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip().splitlines()
        return False, f"dvc add {target} failed ({detail[-1] if detail else 'no output'}): the data is kept"
    return True, f"versioned {target} with DVC: commit {target}.dvc with git to record this version"

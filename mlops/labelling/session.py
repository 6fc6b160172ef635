"""What the labelling page does, without HTTP: draw a pair for a prompt, remember it until the
rater answers, and record the answer in the preference data (drift.data.preferences).

A pair is drawn on demand with two fresh seeds and kept in memory under a one-time token; only an
answer (first, second, tie) writes anything: both images, then the row, through
``append_pairs``, which serialises writers across threads and processes. A skip, or a pair
never answered, leaves no trace. Answering a token twice records it once.
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
from dataclasses import dataclass
from pathlib import Path

from drift.data.preferences import CHOICES, PAIRS_FILE, append_pairs, preferences_lock, read_pairs, utc_now
from drift.errors import DriftError
from drift.plots import to_pil
from mlops.labelling.generator import Generator

MAX_PENDING = 1000  # pairs shown but not answered yet; the oldest are forgotten first
MAX_RATER_LENGTH = 64
SOURCE = "label"


class LabelError(DriftError):
    """A request the page should not have sent (no rater name, an unknown choice)."""


class AnsweredError(LabelError):
    """A pair that was already answered or skipped, or was forgotten."""


@dataclass
class Pending:
    prompt: str
    seeds: tuple[int, int]
    images: tuple  # two PIL images


def _png_data_url(image) -> str:
    """A PIL image inlined in the JSON reply, so that a pair is one request."""
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def check_rater(name) -> str:
    """The rater's name as recorded in the annotator column, or a LabelError saying what is wrong."""
    name = str(name or "").strip()
    if not name:
        raise LabelError("enter your name before choosing: it is recorded with every choice")
    if len(name) > MAX_RATER_LENGTH or not name.isprintable():
        raise LabelError(f"a rater name is printable text of at most {MAX_RATER_LENGTH} characters")
    return name


class LabelSession:
    """Pairs for the raters of one server; thread-safe."""

    def __init__(self, generator: Generator, prompts: list[str], out_dir: str | Path, seed: int | None = None):
        if not prompts:
            raise DriftError("no prompts to label: the prompt set's training split is empty")
        self.generator, self.prompts, self.out = generator, list(prompts), Path(out_dir)
        self._rng = random.Random(seed)
        self._pending: OrderedDict[str, Pending] = OrderedDict()
        self._lock = threading.Lock()

    def next_pair(self) -> dict:
        """A new pair: its token, the prompt and both images as PNG data URLs."""
        with self._lock:
            prompt = self._rng.choice(self.prompts)
            seeds = (self._rng.randrange(2**31 - 1), self._rng.randrange(2**31 - 1))
        images = tuple(to_pil(img) for img in self.generator.images(prompt, seeds))
        token = uuid.uuid4().hex
        with self._lock:
            self._pending[token] = Pending(prompt, seeds, images)
            while len(self._pending) > MAX_PENDING:
                self._pending.popitem(last=False)
        return {"token": token, "prompt": prompt, "image_a": _png_data_url(images[0]),
                "image_b": _png_data_url(images[1])}

    def answer(self, token: str, choice: str, rater: str) -> str | None:
        """Record ``choice`` (first, second, tie) by ``rater`` for the pair ``token``, or forget
        the pair on 'skip'. Returns the recorded pair id (None for a skip)."""
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
               "source": SOURCE}
        try:
            append_pairs(self.out, [row], dict(zip(names, pair.images)))
        except BaseException:
            with self._lock:  # not recorded: the rater may answer again
                self._pending[str(token)] = pair
            raise
        return pair_id

    def progress(self, rater: str | None = None) -> dict:
        """Pairs in the preference data, and those of ``rater``."""
        table = read_pairs(self.out / PAIRS_FILE)
        mine = int((table["annotator"] == str(rater or "").strip()).sum()) if rater else 0
        return {"total": len(table), "mine": mine}

    def describe(self) -> dict:
        """What the page's footer shows: the model, the prompt count, where choices go."""
        return {"model": self.generator.describe(), "prompts": len(self.prompts),
                "data": str(self.out / PAIRS_FILE)}


def dvc_add(out_dir: str | Path) -> tuple[bool, str]:
    """`dvc add` the preference folder, as `make preferences` does, holding the folder's lock so
    that no rater's row lands half-way through. Returns (done, message); a missing DVC repository
    or a failing dvc changes nothing in the data."""
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
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip().splitlines()
        return False, f"dvc add {target} failed ({detail[-1] if detail else 'no output'}): the data is kept"
    return True, f"versioned {target} with DVC: commit {target}.dvc with git to record this version"

"""Bring preference data collected elsewhere into the preferences format (drift.data.preferences).

Two sources:

- Label Studio's JSON export of a pairwise-comparison project: a list of tasks whose ``data``
  holds the prompt and the two image references, and whose ``annotations`` each hold a result
  of type ``pairwise`` with ``value.selected`` = ``left`` (first) or ``right`` (second).
  Cancelled (skipped) annotations and tasks nobody annotated are skipped.
- A plain choice log, the "pick one of N" signal products collect: CSV (columns prompt,
  images separated by ``|``, chosen, and optionally annotator and timestamp) or JSON Lines
  (the same keys, images as a list). A pick of one among N becomes N - 1 pairs, the chosen image
  against each other one; an empty ``chosen`` is a skip.

Image references are resolved against a folder the user names. Each source row is checked on
its own and refused with a reason when it cannot become a valid pair; then the would-be
pairs.csv (the rows already there plus the new ones) goes through the same Great Expectations
suite as retraining. Only then are the images moved in and pairs.csv replaced, all under the
folder's lock: a refused import writes nothing, an accepted one is written whole. By default one
refused row refuses the import; ``keep_valid`` imports the others and reports the refused ones.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
import re
import shutil
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

import pandas as pd

from drift.data.preferences import PAIRS_FILE, append_pairs_locked, preferences_lock, read_pairs
from drift.data.validation import ValidationReport, validate_preferences
from drift.errors import DriftError

LABEL_STUDIO = "label-studio"
CHOICE_LOG = "choice-log"
KINDS = {LABEL_STUDIO: "Label Studio export", CHOICE_LOG: "choice log"}
# Label Studio prefixes uploaded file names with 8 hex digits of a uuid: /data/upload/3/0b7f8a6c-cat.png
_UPLOAD_PREFIX = re.compile(r"^[0-9a-f]{8}-")


class ImportFormatError(DriftError):
    """A file that is not the export or log format it was read as."""


class _Refused(Exception):
    """One source row that cannot become a valid pair; the message says why."""


@dataclass
class Note:
    where: str  # "task 12, annotation 1001" or "line 5"
    reason: str


@dataclass
class ImportReport:
    source: str
    kind: str  # LABEL_STUDIO or CHOICE_LOG
    pairs: int = 0
    refused: list[Note] = field(default_factory=list)
    skipped: list[Note] = field(default_factory=list)
    validation: ValidationReport | None = None
    written: bool = False
    destination: str = ""
    keep_valid: bool = False

    def to_text(self) -> str:
        what = f"{KINDS[self.kind]} {self.source}"
        if self.written:
            head = f"imported {self.pairs} pair(s) from {what} into {self.destination}"
        elif self.refused or self.validation is not None:
            head = f"{what}: REFUSED, nothing written"
        else:
            head = f"{what}: nothing to import"
        lines = [head]
        if self.refused:
            lines.append(f"  {len(self.refused)} row(s) refused:")
            lines += [f"    {n.where}: {n.reason}" for n in self.refused]
        if self.skipped:
            lines.append(f"  {len(self.skipped)} row(s) skipped (no choice recorded):")
            lines += [f"    {n.where}: {n.reason}" for n in self.skipped]
        if self.validation is not None and not self.validation.success:
            lines.append("  the would-be preference data fails validation:")
            lines += ["  " + line for line in self.validation.to_text().splitlines()]
        if not self.written and self.refused and self.validation is None and not self.keep_valid:
            lines.append("  fix the rows above, or pass --keep-valid to import the other rows")
        return "\n".join(lines)


@dataclass
class _Pair:
    """A would-be row before its images are staged: source files instead of stored paths."""

    where: str
    row: dict
    image_a: Path
    image_b: Path


def resolve_image(reference: str, folder: Path) -> Path:
    """The file under ``folder`` an exported image reference points to. Tried in order: Label
    Studio local-files references (``/data/local-files/?d=PATH``), the URL's or path's path
    below ``folder`` (without a leading ``data/``), its file name, and its file name without
    Label Studio's upload prefix. Nothing outside ``folder`` is ever read."""
    url = urlparse(str(reference).strip())
    path = parse_qs(url.query).get("d", [unquote(url.path)])[0].lstrip("/")
    name = Path(path).name
    tried = [path, path.removeprefix("data/"), name, _UPLOAD_PREFIX.sub("", name)]
    root = folder.resolve()
    for candidate in dict.fromkeys(c for c in tried if c):
        file = (root / candidate).resolve()
        if file.is_relative_to(root) and file.is_file():
            return file
    raise _Refused(f"image {reference!r} not found under {folder} (looked for {', '.join(dict.fromkeys(tried))})")


def _timestamp(value, what: str) -> str:
    """An ISO 8601 timestamp, normalised so that the validation suite's pattern holds."""
    try:
        return dt.datetime.fromisoformat(str(value).strip()).isoformat()
    except ValueError:
        raise _Refused(f"{what} {value!r} is not an ISO 8601 time") from None


def _text(value) -> str:
    return "" if value is None or (isinstance(value, float) and pd.isna(value)) else str(value).strip()


# --- Label Studio -----------------------------------------------------------------------------

def _annotator(annotation: dict) -> str:
    who = annotation.get("completed_by")
    if isinstance(who, dict):  # some exports expand the user
        who = who.get("email") or who.get("id")
    if who in (None, ""):
        raise _Refused("annotation has no completed_by")
    return f"label-studio:{who}" if isinstance(who, int) else str(who)


def _label_studio_choice(annotation: dict) -> str:
    results = [r for r in annotation.get("result") or [] if isinstance(r, dict) and r.get("type") == "pairwise"]
    if len(results) != 1:
        raise _Refused(f"expected one result of type 'pairwise', found {len(results)}")
    selected = (results[0].get("value") or {}).get("selected")
    if selected not in ("left", "right"):
        raise _Refused(f"pairwise value.selected is {selected!r}, expected 'left' or 'right'")
    return "first" if selected == "left" else "second"


def read_label_studio(path: Path, images: Path, left_key: str, right_key: str, prompt_key: str):
    """Would-be pairs, refused rows and skipped rows of a Label Studio JSON export."""
    try:
        tasks = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ImportFormatError(f"{path} is not a readable JSON file: {err}") from None
    if not isinstance(tasks, list) or not all(isinstance(t, dict) and isinstance(t.get("data"), dict) for t in tasks):
        raise ImportFormatError(f"{path} is not a Label Studio JSON export: expected a list of tasks, each with "
                                "'data' and 'annotations' (Export > JSON; JSON_MIN and CSV exports lack the "
                                "annotations)")
    pairs, refused, skipped = [], [], []
    for n, task in enumerate(tasks, start=1):
        task_id = task.get("id", f"#{n}")
        annotations = task.get("annotations") or []
        if not annotations:
            skipped.append(Note(f"task {task_id}", "no annotation"))
        for annotation in annotations:
            if not isinstance(annotation, dict):
                refused.append(Note(f"task {task_id}", f"annotation {annotation!r} is not an object"))
                continue
            where = f"task {task_id}, annotation {annotation.get('id', '?')}"
            if annotation.get("was_cancelled"):
                skipped.append(Note(where, "cancelled (skipped by the annotator)"))
                continue
            try:
                data = task["data"]
                missing = [k for k in (prompt_key, left_key, right_key) if not _text(data.get(k))]
                if missing:
                    raise _Refused(f"data has no {', '.join(map(repr, missing))} (keys present: {', '.join(data)}); "
                                   "name the keys with --prompt-key / --left-key / --right-key")
                row = {"pair_id": "-".join(["ls", *([str(task["project"])] if "project" in task else []), str(task_id),
                                            str(annotation.get("id", n))]),
                       "prompt": _text(data[prompt_key]), "choice": _label_studio_choice(annotation),
                       "annotator": _annotator(annotation),
                       "timestamp": _timestamp(annotation.get("created_at") or annotation.get("updated_at"),
                                               "created_at"),
                       "source": LABEL_STUDIO}
                pairs.append(_Pair(where, row, resolve_image(data[left_key], images),
                                   resolve_image(data[right_key], images)))
            except _Refused as err:
                refused.append(Note(where, str(err)))
    return pairs, refused, skipped


# --- choice logs ------------------------------------------------------------------------------

def _log_records(path: Path) -> list[tuple[str, dict]]:
    """(where, record) for each line of a CSV or JSON Lines choice log."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ImportFormatError(f"{path} is not a readable UTF-8 file: {err}") from None
    if path.suffix.lower() == ".csv":
        reader = csv.DictReader(io.StringIO(text, newline=""))
        missing = [c for c in ("prompt", "images", "chosen") if c not in (reader.fieldnames or [])]
        if missing:
            raise ImportFormatError(f"{path} lacks column(s) {', '.join(missing)} (a choice log has prompt, images "
                                    "separated by '|', chosen, and optionally annotator and timestamp)")
        return [(f"line {reader.line_num}", {**r, "images": (r["images"] or "").split("|")}) for r in reader]
    records = []
    for i, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise ImportFormatError(f"{path} line {i} is not JSON: {err}") from None
            records.append((f"line {i}", record if isinstance(record, dict) else {}))
    return records


def read_choice_log(path: Path, images: Path, annotator: str | None):
    """Would-be pairs, refused rows and skipped rows of a pick-one-of-N choice log."""
    pairs, refused, skipped = [], [], []
    for where, record in _log_records(path):
        listed = record.get("images")
        shown = [_text(i) for i in listed if _text(i)] if isinstance(listed, list) else []
        chosen = _text(record.get("chosen"))
        try:
            prompt = _text(record.get("prompt"))
            if not prompt:
                raise _Refused("no prompt")
            if len(shown) < 2 or len(set(shown)) != len(shown):
                raise _Refused(f"needs two or more distinct images, got {shown}")
            if not chosen:
                skipped.append(Note(where, "no image chosen"))
                continue
            if chosen not in shown:
                raise _Refused(f"chosen {chosen!r} is not one of the images shown {shown}")
            who = _text(record.get("annotator")) or annotator
            if not who:
                raise _Refused("no annotator (add an annotator column, or pass --annotator)")
            when = _timestamp(record.get("timestamp"), "timestamp") if _text(record.get("timestamp")) else None
            if when is None:
                raise _Refused("no timestamp")
            files = {ref: resolve_image(ref, images) for ref in shown}
        except _Refused as err:
            refused.append(Note(where, str(err)))
            continue
        key = hashlib.sha1(json.dumps([prompt, shown, chosen, who, when]).encode()).hexdigest()[:12]
        others = [ref for ref in shown if ref != chosen]
        for k, other in enumerate(others):
            # Alternate the chosen image's side so that neither position always wins.
            first = k % 2 == 0
            a, b = (chosen, other) if first else (other, chosen)
            row = {"pair_id": f"log-{key}-{k}", "prompt": prompt, "choice": "first" if first else "second",
                   "annotator": who, "timestamp": when, "source": CHOICE_LOG}
            pairs.append(_Pair(f"{where} ({chosen} vs {other})", row, files[a], files[b]))
    return pairs, refused, skipped


# --- staging and writing ----------------------------------------------------------------------

def _image_shape(path: Path) -> tuple[tuple[int, int], str]:
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()
            return im.size, im.mode
    except (OSError, ValueError) as err:
        raise _Refused(f"image {path.name} does not decode ({type(err).__name__})") from None


def _reference_shape(existing: pd.DataFrame, root: Path):
    """The size and mode of the images already in the preference data, or None for new data."""
    for rel in existing.get("image_a", pd.Series(dtype=str)):
        try:
            return _image_shape(root / str(rel))
        except _Refused:
            continue
    return None


def _stage(pairs: list[_Pair], existing: pd.DataFrame, root: Path, staging: Path, batch: str):
    """Copy each pair's images into ``staging``/images/``batch``/ as PNG named by content, and
    refuse the pairs that cannot be valid: undecodable images, a size or mode other than the
    data's (retraining stacks them into one batch), pair ids already present, the same pair twice."""
    from PIL import Image

    shape = _reference_shape(existing, root)
    ids = set(existing["pair_id"].astype(str))
    seen: dict[tuple, str] = {}
    staged, refused = [], []
    (staging / "images" / batch).mkdir(parents=True)
    for pair in pairs:
        try:
            names = []
            for src in (pair.image_a, pair.image_b):
                this = _image_shape(src)
                shape = shape or this
                if this != shape:
                    raise _Refused(f"image {src.name} is {this[0][0]}x{this[0][1]} {this[1]}, the preference "
                                   f"data's images are {shape[0][0]}x{shape[0][1]} {shape[1]}")
                rel = f"images/{batch}/{hashlib.sha1(src.read_bytes()).hexdigest()[:16]}.png"
                if not (staging / rel).exists():
                    try:
                        with Image.open(src) as im:
                            im.save(staging / rel, format="PNG")
                    except (OSError, ValueError) as err:
                        raise _Refused(f"image {src.name} cannot be stored as PNG ({err})") from None
                names.append(rel)
            if pair.row["pair_id"] in ids:
                raise _Refused(f"pair id {pair.row['pair_id']} is already in {PAIRS_FILE} (imported before?)")
            key = (pair.row["prompt"], *names)
            if key in seen:
                raise _Refused(f"the same pair as {seen[key]} (one choice per pair is kept)")
            seen[key] = pair.where
            ids.add(pair.row["pair_id"])
            staged.append({**pair.row, "image_a": names[0], "image_b": names[1]})
        except _Refused as err:
            refused.append(Note(pair.where, str(err)))
    return staged, refused


def commit_import(pairs: list[_Pair], refused: list[Note], skipped: list[Note], out_dir: str | Path,
                  report: ImportReport, keep_valid: bool = False) -> ImportReport:
    """Stage, check and validate the would-be preference data; write it only if it all holds."""
    out = Path(out_dir)
    report.refused, report.skipped, report.destination = list(refused), list(skipped), str(out / PAIRS_FILE)
    report.keep_valid = keep_valid
    if (refused and not keep_valid) or not pairs:
        return report
    batch = f"{report.kind}-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"
    with preferences_lock(out):
        # Staged beside the folder (same file system, so the move is a rename) and outside it,
        # so that nothing half-made is ever inside the DVC-tracked data.
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-import-", dir=out.parent))
        try:
            existing = read_pairs(out / PAIRS_FILE)
            rows, late = _stage(pairs, existing, out, staging, batch)
            report.refused += late
            if (report.refused and not keep_valid) or not rows:
                return report
            # Validate the would-be file; the new rows point at their staged images (absolute paths).
            new = pd.DataFrame(rows).astype(object)
            absolute = new.assign(image_a=[str(staging / p) for p in new["image_a"]],
                                  image_b=[str(staging / p) for p in new["image_b"]])
            would_be = absolute if existing.empty else pd.concat([existing, absolute], ignore_index=True)
            report.validation = validate_preferences(would_be, out, f"{out / PAIRS_FILE} after the import")
            if not report.validation.success:
                return report
            (out / "images").mkdir(exist_ok=True)
            (staging / "images" / batch).rename(out / "images" / batch)
            append_pairs_locked(out, rows)
            report.pairs, report.written = len(rows), True
            return report
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def import_preferences(path: str | Path, out_dir: str | Path, kind: str | None = None, images: str | Path | None = None,
                       keep_valid: bool = False, annotator: str | None = None, left_key: str = "image1",
                       right_key: str = "image2", prompt_key: str = "prompt") -> ImportReport:
    """Import a Label Studio JSON export (``kind`` 'label-studio', the default for .json) or a
    choice log ('choice-log', the default for .csv and .jsonl) into out_dir/pairs.csv; image
    references are resolved against ``images`` (default: the file's folder)."""
    path = Path(path)
    if not path.is_file():
        raise DriftError(f"{path} does not exist")
    kind = kind or {".json": LABEL_STUDIO, ".csv": CHOICE_LOG, ".jsonl": CHOICE_LOG}.get(path.suffix.lower())
    if kind not in (LABEL_STUDIO, CHOICE_LOG):
        raise DriftError(f"cannot tell the format of {path} from its extension: "
                         "pass --format label-studio or choice-log")
    folder = Path(images) if images is not None else path.parent
    if not folder.is_dir():
        raise DriftError(f"image folder {folder} does not exist")
    if kind == LABEL_STUDIO:
        found = read_label_studio(path, folder, left_key, right_key, prompt_key)
    else:
        found = read_choice_log(path, folder, annotator)
    return commit_import(*found, out_dir, ImportReport(str(path), kind), keep_valid)

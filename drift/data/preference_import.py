"""Bring preference data collected elsewhere into the preferences format (drift.data.preferences).

Two sources:

- Label Studio's JSON export of a pairwise-comparison project: a list of tasks whose ``data``
  holds the prompt and the two image references, and whose ``annotations`` each hold a result
  of type ``pairwise`` with ``value.selected`` = ``left`` (first) or ``right`` (second). Each
  annotation is a row (several annotators of one task are several rows); its time is when its
  choice was last changed (``updated_at``), and its ``lead_time`` says how long it took.
  Cancelled (skipped) annotations, annotations whose selection was cleared before submitting
  (an empty result) and tasks nobody annotated are skipped.
- A plain choice log, the "pick one of N" signal products collect: CSV (columns prompt,
  images separated by ``|``, chosen, and optionally annotator and timestamp) or JSON Lines
  (the same keys, images as a list). A pick of one among N becomes N - 1 pairs, the chosen image
  against each other one; an empty ``chosen`` is a skip; a row without annotator or timestamp
  takes the import's (by default the time of the import).

Both are read as UTF-8 with or without a byte-order mark, and the file is parsed before anything
heavier loads, so a file of another format fails at once. Image references are resolved against
a folder the user names. Each source row is checked on its own and refused with a reason when it
cannot become a valid pair. Rows already in the data are recognised by content (the pair's prompt
and image contents, and the annotator; ``drift.data.preferences``), so importing the same export
again adds nothing: an unchanged row is counted as already imported, an annotation edited since
(same pair id, a later time, another choice) replaces its row and is reported as updated, an older
version of one is skipped. Then the would-be pairs.csv goes through the same Great Expectations
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

from drift.data.agreement import overlap
from drift.data.preferences import (
    PAIRS_FILE,
    append_pairs_locked,
    changed_pairs,
    oriented_choices,
    pair_identity,
    pair_key,
    parse_time,
    preferences_lock,
    read_pairs,
    utc_now,
)
from drift.data.prompts import MAX_PROMPT_LENGTH, normalize_prompt
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
    added: int = 0
    updated: list[Note] = field(default_factory=list)
    already: int = 0  # rows already in the data, unchanged
    refused: list[Note] = field(default_factory=list)
    skipped: list[Note] = field(default_factory=list)
    validation: ValidationReport | None = None
    written: bool = False
    destination: str = ""
    keep_valid: bool = False
    multi_rater_pairs: int | None = None  # in the data after the import
    disagreeing_pairs: int | None = None

    def to_text(self) -> str:
        what = f"{KINDS[self.kind]} {self.source}"
        if self.written:
            updated = f" and updated {len(self.updated)}" if self.updated else ""
            head = f"imported {self.added} new row(s){updated} from {what} into {self.destination}"
        elif self.refused or self.validation is not None:
            head = f"{what}: REFUSED, nothing written"
        elif self.already:
            head = f"{what}: nothing new, nothing written ({self.destination} already holds all of it)"
        else:
            head = f"{what}: nothing to import"
        lines = [head]
        if self.already:
            lines.append(f"  {self.already} row(s) already imported (the same annotator's same choice on the same "
                         "prompt and images), left as they are")
        if self.updated:
            lines.append(f"  {len(self.updated)} row(s) updated (the annotation was edited since it was imported):")
            lines += [f"    {n.where}: {n.reason}" for n in self.updated]
        if self.refused:
            lines.append(f"  {len(self.refused)} row(s) refused:")
            lines += [f"    {n.where}: {n.reason}" for n in self.refused]
        if self.skipped:
            lines.append(f"  {len(self.skipped)} row(s) skipped:")
            lines += [f"    {n.where}: {n.reason}" for n in self.skipped]
        if self.validation is not None and not self.validation.success:
            lines.append("  the would-be preference data fails validation:")
            lines += ["  " + line for line in self.validation.to_text().splitlines()]
        if not self.written and self.refused and self.validation is None and not self.keep_valid:
            lines.append("  fix the rows above, or pass --keep-valid to import the other rows")
        if self.multi_rater_pairs is not None:
            lines.append(f"  raters: {self.multi_rater_pairs} pair(s) in the data have more than one rater, "
                         f"{self.disagreeing_pairs} of them disagree (drift preferences report: agreement per rater)")
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
        try:
            file = (root / candidate).resolve()
            found = file.is_relative_to(root) and file.is_file()
        except (OSError, RuntimeError):  # a symlink loop (RuntimeError before Python 3.13)
            raise _Refused(f"image {reference!r} is a symlink loop under {folder}") from None
        if found:
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


def _prompt(value, max_length: int) -> str:
    """The prompt as prompt files are read (normalised text), within their length limit."""
    prompt = normalize_prompt(_text(value)).strip()
    if not prompt:
        raise _Refused("no prompt")
    if len(prompt) > max_length:
        raise _Refused(f"the prompt is {len(prompt)} characters, over the {max_length} that prompts may have")
    return prompt


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")  # a byte-order mark (Excel's "CSV UTF-8") is dropped
    except (OSError, UnicodeDecodeError) as err:
        raise ImportFormatError(f"{path} is not a readable UTF-8 file: {err}") from None


# --- Label Studio -----------------------------------------------------------------------------

def load_label_studio(path: Path) -> list[dict]:
    """The tasks of a Label Studio JSON export, or an ImportFormatError saying what the file is not."""
    try:
        tasks = json.loads(_read_text(path))
    except json.JSONDecodeError as err:
        raise ImportFormatError(f"{path} is not a readable JSON file: {err}") from None
    if not isinstance(tasks, list) or not all(isinstance(t, dict) and isinstance(t.get("data"), dict) for t in tasks):
        raise ImportFormatError(f"{path} is not a Label Studio JSON export: expected a list of tasks, each with "
                                "'data' and 'annotations' (Export > JSON; JSON_MIN and CSV exports lack the "
                                "annotations)")
    return tasks


def _annotator(annotation: dict) -> str:
    who = annotation.get("completed_by")
    if isinstance(who, dict):  # some exports expand the user
        who = who.get("email") or who.get("id")
    if who in (None, ""):
        raise _Refused("annotation has no completed_by")
    return f"label-studio:{who}" if isinstance(who, int) else str(who)


def _pairwise(annotation: dict) -> list[dict]:
    return [r for r in annotation.get("result") or [] if isinstance(r, dict) and r.get("type") == "pairwise"]


def _label_studio_choice(results: list[dict]) -> str:
    if len(results) != 1:
        raise _Refused(f"expected one result of type 'pairwise', found {len(results)}")
    selected = (results[0].get("value") or {}).get("selected")
    if selected not in ("left", "right"):
        raise _Refused(f"pairwise value.selected is {selected!r}, expected 'left' or 'right'")
    return "first" if selected == "left" else "second"


def _shown_at(answered: str, lead_time) -> str | None:
    """When the pair was shown: the answer's time less Label Studio's lead_time (seconds spent)."""
    if isinstance(lead_time, bool) or not isinstance(lead_time, (int, float)) or not 0 <= lead_time < 1e7:
        return None
    when = parse_time(answered)
    return (when - dt.timedelta(seconds=lead_time)).isoformat(timespec="milliseconds") if when else None


def read_label_studio(tasks: list[dict], images: Path, left_key: str, right_key: str, prompt_key: str,
                      max_prompt_length: int = MAX_PROMPT_LENGTH):
    """Would-be pairs, refused rows and skipped rows of a Label Studio JSON export's tasks."""
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
            if not annotation.get("result"):
                skipped.append(Note(where, "no choice (the selection was cleared before submitting)"))
                continue
            try:
                data = task["data"]
                missing = [k for k in (prompt_key, left_key, right_key) if not _text(data.get(k))]
                if missing:
                    raise _Refused(f"data has no {', '.join(map(repr, missing))} (keys present: {', '.join(data)}); "
                                   "name the keys with --prompt-key / --left-key / --right-key")
                when = _timestamp(annotation.get("updated_at") or annotation.get("created_at"), "updated_at")
                row = {"pair_id": "-".join(["ls", *([str(task["project"])] if "project" in task else []), str(task_id),
                                            str(annotation.get("id", n))]),
                       "prompt": _prompt(data[prompt_key], max_prompt_length),
                       "choice": _label_studio_choice(_pairwise(annotation)), "annotator": _annotator(annotation),
                       "timestamp": when, "source": LABEL_STUDIO,
                       "shown_at": _shown_at(when, annotation.get("lead_time"))}
                pairs.append(_Pair(where, row, resolve_image(data[left_key], images),
                                   resolve_image(data[right_key], images)))
            except _Refused as err:
                refused.append(Note(where, str(err)))
    return pairs, refused, skipped


# --- choice logs ------------------------------------------------------------------------------

def load_choice_log(path: Path) -> list[tuple[str, dict]]:
    """(where, record) for each line of a CSV or JSON Lines choice log, or an ImportFormatError."""
    text = _read_text(path)
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


def read_choice_log(records: list[tuple[str, dict]], images: Path, annotator: str | None, timestamp: str | None = None,
                    max_prompt_length: int = MAX_PROMPT_LENGTH):
    """Would-be pairs, refused rows and skipped rows of a pick-one-of-N choice log's records; rows
    without a time take ``timestamp`` (default: now)."""
    default_time = _timestamp(timestamp, "--timestamp") if timestamp else utc_now()
    pairs, refused, skipped = [], [], []
    for where, record in records:
        listed = record.get("images")
        shown = [_text(i) for i in listed if _text(i)] if isinstance(listed, list) else []
        chosen = _text(record.get("chosen"))
        try:
            prompt = _prompt(record.get("prompt"), max_prompt_length)
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
            when = _timestamp(record.get("timestamp"), "timestamp") if _text(record.get("timestamp")) else default_time
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


# --- reconciling with the data, staging and writing ---------------------------------------------

def _png(path: Path) -> tuple[bytes, tuple[int, int], str]:
    """The image as the PNG bytes the data would store, with its size and mode."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()
            buf = io.BytesIO()
            im.save(buf, format="PNG")
            return buf.getvalue(), im.size, im.mode
    except (OSError, ValueError, RuntimeError) as err:
        raise _Refused(f"image {path.name} does not decode ({type(err).__name__})") from None


def _reference_shape(existing: pd.DataFrame, root: Path):
    """The size and mode of the images already in the preference data, or None for new data."""
    for rel in existing.get("image_a", []):
        try:
            _, size, mode = _png(root / str(rel))
            return size, mode
        except _Refused:
            continue
    return None


@dataclass
class _Plan:
    """What an import would change: rows to add, rows that replace older versions of themselves."""

    added: list[dict] = field(default_factory=list)
    replacing: list[dict] = field(default_factory=list)
    keys: dict[str, tuple[str, bool]] = field(default_factory=dict)  # pair id -> (pair key, flipped)


class _Reconciler:
    """Stages each would-be row's images (content-named PNGs, or the stored file with the same
    content) and decides its fate against the data and the rows before it: new, already imported,
    an update of an imported annotation, an older version of one, or refused."""

    def __init__(self, existing: pd.DataFrame, root: Path, staging: Path, batch: str, report: ImportReport):
        digests: dict[str, str] = {}
        identity = pair_identity(existing, root, digests)
        self.stored = {d: rel for rel, d in digests.items() if not d.startswith("unreadable:")}
        self.shape = _reference_shape(existing, root)
        self.staging, self.batch, self.report, self.plan = staging, batch, report, _Plan()
        self.by_id: dict[str, dict] = {}
        self.by_rater: dict[tuple[str, str], dict] = {}
        choices = oriented_choices(existing["choice"].astype(str), identity["flipped"])
        for (_, row), key, flipped, oriented in zip(existing.iterrows(), identity["key"], identity["flipped"], choices):
            self._remember(row.to_dict(), key, flipped, oriented, new=False)
        (staging / "images" / batch).mkdir(parents=True)

    def _remember(self, row: dict, key: str, flipped: bool, oriented: str, new: bool) -> None:
        entry = {"row": row, "key": key, "oriented": oriented, "new": new}
        self.by_id[str(row["pair_id"])] = entry
        self.by_rater[key, str(row["annotator"])] = entry
        self.plan.keys[str(row["pair_id"])] = (key, flipped)

    def _store(self, src: Path) -> tuple[str, str]:
        """(the image's path in the data or the staging folder, its digest)."""
        data, size, mode = _png(src)
        self.shape = self.shape or (size, mode)
        if (size, mode) != self.shape:
            (w, h), m = self.shape
            raise _Refused(f"image {src.name} is {size[0]}x{size[1]} {mode}, the preference data's images are "
                           f"{w}x{h} {m}")
        digest = hashlib.sha256(data).hexdigest()
        if digest not in self.stored:
            rel = f"images/{self.batch}/{digest[:16]}.png"
            (self.staging / rel).write_bytes(data)
            self.stored[digest] = rel
        return self.stored[digest], digest

    def add(self, pair: _Pair) -> None:
        try:
            (rel_a, digest_a), (rel_b, digest_b) = self._store(pair.image_a), self._store(pair.image_b)
        except _Refused as err:
            self.report.refused.append(Note(pair.where, str(err)))
            return
        row = {**pair.row, "image_a": rel_a, "image_b": rel_b}
        pair_id, annotator = str(row["pair_id"]), str(row["annotator"])
        key, flipped = pair_key(row["prompt"], digest_a, digest_b)
        oriented = oriented_choices(pd.Series([row["choice"]]), pd.Series([flipped]))[0]
        same_id = self.by_id.get(pair_id)
        prior = same_id or self.by_rater.get((key, annotator))
        if prior is None:
            self.plan.added.append(row)
        elif prior["key"] == key and prior["oriented"] == oriented:
            self.report.already += 1
            return
        elif same_id is None:
            old = prior["row"]
            self.report.refused.append(Note(pair.where, f"{annotator} already chose {old['choice']!r} for this prompt "
                                            f"and these images (pair id {old['pair_id']}): one row per pair and "
                                            "annotator"))
            return
        elif same_id["new"]:
            self.report.refused.append(Note(pair.where, f"pair id {pair_id} is in the file twice, with other choices "
                                                        "or images"))
            return
        elif _later(row["timestamp"], same_id["row"]["timestamp"]):
            self.plan.replacing.append(row)
            self.report.updated.append(Note(pair.where, f"{same_id['row']['choice']} -> {row['choice']} "
                                                        f"(changed {row['timestamp']})"))
        else:
            self.report.skipped.append(Note(pair.where, "an older version of an imported annotation (the data keeps "
                                                        f"its choice {same_id['row']['choice']!r} of "
                                                        f"{same_id['row']['timestamp']})"))
            return
        self._remember(row, key, flipped, oriented, new=True)


def _later(time, than) -> bool:
    """Whether ISO 8601 ``time`` is after ``than`` (an unreadable time is never after anything)."""
    a, b = parse_time(time), parse_time(than)
    return a is not None and (b is None or a > b)


def commit_import(pairs: list[_Pair], refused: list[Note], skipped: list[Note], out_dir: str | Path,
                  report: ImportReport, keep_valid: bool = False) -> ImportReport:
    """Reconcile, stage, check and validate the would-be preference data; write it only if it all holds."""
    out = Path(out_dir)
    report.refused, report.skipped, report.destination = list(refused), list(skipped), str(out / PAIRS_FILE)
    report.keep_valid = keep_valid
    if (refused and not keep_valid) or not pairs:
        return report
    batch = f"{report.kind}-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"
    with preferences_lock(out):
        # Staged beside the folder (same file system, so the move is a rename) and outside it,
        # so that nothing half-made is ever inside the DVC-tracked data. Absolute: the validation
        # below reads staged images by this path, and a relative one would be read below the data.
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-import-", dir=out.absolute().parent))
        try:
            existing = read_pairs(out / PAIRS_FILE)
            reconciler = _Reconciler(existing, out, staging, batch, report)
            for pair in pairs:
                reconciler.add(pair)
            plan = reconciler.plan
            changes = plan.added + plan.replacing
            if (report.refused and not keep_valid) or not changes:
                if not report.refused:
                    report.multi_rater_pairs, report.disagreeing_pairs = _overlap(existing, plan)
                return report
            # Validate the would-be file; staged images are read by their absolute paths.
            def located(rows):
                return [{**r, **{c: str(staging / r[c]) for c in ("image_a", "image_b")
                                 if r[c].startswith(f"images/{batch}/")}} for r in rows]

            would_be = changed_pairs(existing, located(plan.added), located(plan.replacing))
            report.validation = validate_preferences(would_be, out, f"{out / PAIRS_FILE} after the import")
            if not report.validation.success:
                return report
            if any((staging / "images" / batch).iterdir()):
                (out / "images").mkdir(exist_ok=True)
                (staging / "images" / batch).rename(out / "images" / batch)
            table = append_pairs_locked(out, plan.added, replacing=plan.replacing)
            report.added, report.written = len(plan.added), True
            report.multi_rater_pairs, report.disagreeing_pairs = _overlap(table, plan)
            return report
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def _overlap(table: pd.DataFrame, plan: _Plan) -> tuple[int, int]:
    """Pairs of ``table`` with more than one rater, and how many of them disagree."""
    keys = [plan.keys[str(p)] for p in table["pair_id"]]
    identity = pd.DataFrame(keys, columns=["key", "flipped"], index=table.index)
    return overlap(identity, table["annotator"], table["choice"].astype(str))


def import_preferences(path: str | Path, out_dir: str | Path, kind: str | None = None, images: str | Path | None = None,
                       keep_valid: bool = False, annotator: str | None = None, left_key: str = "image1",
                       right_key: str = "image2", prompt_key: str = "prompt", timestamp: str | None = None,
                       max_prompt_length: int = MAX_PROMPT_LENGTH) -> ImportReport:
    """Import a Label Studio JSON export (``kind`` 'label-studio', the default for .json) or a
    choice log ('choice-log', the default for .csv and .jsonl) into out_dir/pairs.csv; image
    references are resolved against ``images`` (default: the file's folder); choice-log rows
    without a time take ``timestamp`` (default: the time of the import)."""
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
        found = read_label_studio(load_label_studio(path), folder, left_key, right_key, prompt_key, max_prompt_length)
    else:
        try:
            found = read_choice_log(load_choice_log(path), folder, annotator, timestamp, max_prompt_length)
        except _Refused as err:  # the --timestamp given
            raise DriftError(str(err)) from None
    return commit_import(*found, out_dir, ImportReport(str(path), kind), keep_valid)

"""Importing preference data from Label Studio's pairwise export and from pick-one-of-N choice
logs: valid exports land in the preferences format and pass its validation; malformed ones are
refused with a report and write nothing."""

import hashlib
import json
import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from drift import cli
from drift.data.preference_import import import_preferences
from drift.data.preferences import append_pairs, load_pair_images, read_pairs
from drift.data.validation import validate_preferences
from drift.scoring.preference_head import pair_features
from tests.conftest import ROOT

EXPORT = Path(__file__).parent / "fixtures" / "label_studio_pairwise.json"
# Where the fixture's references are found in the folder given with --images: Label Studio's
# media layout (upload/<project>/<prefix>-name), a plain download without the upload prefix,
# and a local-files path.
MEDIA = ["upload/7/0b7f8a6c-three_a.png", "three_b.png", "digits/seven_a.png", "digits/seven_b.png",
         "one_a.png", "one_b.png", "nine_a.png", "nine_b.png"]


def digit(path: Path, value: int, size=(8, 8), mode="L") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = (np.arange(size[0] * size[1]).reshape(size[1], size[0]) * 7 + value * 31) % 256
    Image.fromarray(pixels.astype(np.uint8)).convert(mode).save(path)


@pytest.fixture
def media(tmp_path):
    folder = tmp_path / "media"
    for k, rel in enumerate(MEDIA):
        digit(folder / rel, k)
    return folder


def write_export(tmp_path, tasks, name="export.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(tasks))
    return path


def snapshot(prefs: Path) -> dict:
    """Every file under the preference folder with its digest, to show that nothing changed."""
    return {str(p.relative_to(prefs)): hashlib.md5(p.read_bytes()).hexdigest()
            for p in sorted(prefs.rglob("*")) if p.is_file()} if prefs.exists() else {}


def leftovers(prefs: Path) -> list[str]:
    return [p.name for p in prefs.parent.iterdir() if p.name.startswith(f".{prefs.name}-import-")]


def test_label_studio_export_becomes_valid_preference_data(tmp_path, media):
    prefs = tmp_path / "prefs"
    report = import_preferences(EXPORT, prefs, images=media)
    assert report.written and report.added == 2 and not report.refused, report.to_text()
    assert {n.reason for n in report.skipped} == {"cancelled (skipped by the annotator)", "no annotation"}
    table = read_pairs(prefs / "pairs.csv")
    assert table["pair_id"].tolist() == ["ls-7-101-2001", "ls-7-102-2002"]
    assert table["choice"].tolist() == ["first", "second"]
    assert table["annotator"].tolist() == ["label-studio:3", "label-studio:4"]
    assert table["prompt"].tolist() == ["a handwritten digit three", "a handwritten digit seven"]
    assert (table["source"] == "label-studio").all() and table["timestamp"][0] == "2026-11-20T09:15:02.513790+00:00"
    assert table["shown_at"][0] == "2026-11-20T09:14:59.093+00:00"  # less its lead_time of 3.42 s
    assert validate_preferences(table, prefs).success
    # the stored images are the exported ones, pixel for pixel
    for rel, src in zip(table["image_a"], ["upload/7/0b7f8a6c-three_a.png", "digits/seven_a.png"]):
        assert np.array_equal(np.asarray(Image.open(prefs / rel)), np.asarray(Image.open(media / src)))
    assert not leftovers(prefs)
    # the retraining loop reads them as it reads the synthetic batches
    a, b = load_pair_images(table, prefs)
    assert a.shape == b.shape == (2, 1, 8, 8)
    data = pair_features(table, prefs, lambda images: images.flatten(1), 0.5)
    assert len(data.train_choices) + len(data.held_choices) == 2


def _mutate(change):
    tasks = json.loads(EXPORT.read_text())
    change(tasks)
    return tasks


MALFORMED = {
    "no selection": (lambda t: t[0]["annotations"][0]["result"][0]["value"].pop("selected"), "value.selected is None"),
    "unknown side": (lambda t: t[0]["annotations"][0]["result"][0]["value"].update(selected="none"),
                     "expected 'left' or 'right'"),
    "no pairwise result": (lambda t: t[1]["annotations"][0].update(result=[
        {"type": "choices", "from_name": "c", "to_name": "img", "value": {"choices": ["A"]}}]),
        "expected one result of type 'pairwise', found 0"),
    "missing image": (lambda t: t[1]["data"].update(image2="/data/upload/7/12345678-gone.png"), "not found under"),
    "image outside the folder": (lambda t: t[1]["data"].update(image2="/data/local-files/?d=../export.json"),
                                 "not found under"),
    "missing prompt": (lambda t: t[0]["data"].pop("prompt"), "data has no 'prompt'"),
    "bad time": (lambda t: t[0]["annotations"][0].update(created_at="yesterday", updated_at=None),
                 "is not an ISO 8601 time"),
    "prompt over the length of prompts": (lambda t: t[0]["data"].update(prompt="a handwritten digit " * 11),
                                          "the prompt is 219 characters, over the 200"),
    "one annotator twice on one pair, two choices": (lambda t: t[1].update(
        data=dict(t[0]["data"]), annotations=[{**t[1]["annotations"][0], "completed_by": 3}]),
        "label-studio:3 already chose 'first' for this prompt and these images (pair id ls-7-101-2001)"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_label_studio_export_is_refused_whole(tmp_path, media, case):
    change, reason = MALFORMED[case]
    prefs = tmp_path / "prefs"
    old = {"images/old/a.png": Image.open(media / "one_a.png"), "images/old/b.png": Image.open(media / "one_b.png")}
    append_pairs(prefs, [{"pair_id": "old-1", "prompt": "a handwritten digit two", "image_a": "images/old/a.png",
                          "image_b": "images/old/b.png", "choice": "tie", "annotator": "ana",
                          "timestamp": "2026-11-01T10:00:00+00:00"}], old)
    before = snapshot(prefs)
    report = import_preferences(write_export(tmp_path, _mutate(change)), prefs, images=media)
    text = report.to_text()
    assert not report.written and "REFUSED, nothing written" in text
    assert any(reason in n.reason for n in report.refused), text
    assert snapshot(prefs) == before and not leftovers(prefs)

    kept = import_preferences(write_export(tmp_path, _mutate(change)), prefs, images=media, keep_valid=True)
    assert kept.written and kept.added == 1 and len(kept.refused) == 1, kept.to_text()
    assert validate_preferences(read_pairs(prefs / "pairs.csv"), prefs).success


def test_images_of_another_size_and_broken_images_are_refused(tmp_path, media):
    digit(media / "three_b.png", 1, size=(16, 16), mode="RGB")
    (media / "digits" / "seven_b.png").write_bytes(b"not a png")
    prefs = tmp_path / "prefs"
    report = import_preferences(EXPORT, prefs, images=media)
    reasons = {n.where: n.reason for n in report.refused}
    assert not report.written and snapshot(prefs) == {}
    assert "16x16 RGB, the preference data's images are 8x8 L" in reasons["task 101, annotation 2001"]
    assert "does not decode" in reasons["task 102, annotation 2002"]


def test_reimporting_an_export_adds_nothing_and_existing_data_must_validate(tmp_path, media, capsys):
    prefs = tmp_path / "prefs"
    args = ["preferences", "import", str(EXPORT), "--images", str(media), "--out", str(prefs)]
    assert cli.main(args) == 0
    before = snapshot(prefs)
    capsys.readouterr()
    assert cli.main(args) == 0  # the same export again: nothing new, and that is not an error
    out = capsys.readouterr().out
    assert "nothing new, nothing written" in out and "2 row(s) already imported" in out, out
    assert snapshot(prefs) == before and not leftovers(prefs)

    # the would-be file goes through the Great Expectations suite: a bad row already there stops it
    table = read_pairs(prefs / "pairs.csv")
    table.loc[0, "choice"] = "left"
    table.to_csv(prefs / "pairs.csv", index=False)
    before = snapshot(prefs)
    log = tmp_path / "log.csv"
    log.write_text("prompt,images,chosen,annotator,timestamp\n"
                   "a handwritten digit one,one_a.png|one_b.png,one_b.png,ana,2026-11-21T10:00:00Z\n")
    report = import_preferences(log, prefs, images=media)
    assert not report.written and report.validation is not None and not report.validation.success
    assert "choice in" in report.to_text() and snapshot(prefs) == before and not leftovers(prefs)


def _pairwise(selected: str) -> list[dict]:
    return [{"id": "pw", "type": "pairwise", "from_name": "pw", "to_name": "pw", "value": {"selected": selected}}]


def test_overlapping_annotators_are_kept_and_edits_replace_their_row(tmp_path, media):
    tasks = json.loads(EXPORT.read_text())
    first = tasks[0]["annotations"][0]
    tasks[0]["annotations"].append({**first, "id": 2009, "completed_by": 5, "result": _pairwise("right")})  # disagrees
    tasks[1]["annotations"].append({**tasks[1]["annotations"][0], "id": 2010, "completed_by": 6})  # agrees
    tasks[2]["annotations"][0].update(was_cancelled=False, result=[])  # deselected before submitting
    prefs = tmp_path / "prefs"
    report = import_preferences(write_export(tmp_path, tasks), prefs, images=media)
    text = report.to_text()
    assert report.written and report.added == 4 and not report.refused, text
    assert (report.multi_rater_pairs, report.disagreeing_pairs) == (2, 1)
    assert "2 pair(s) in the data have more than one rater, 1 of them disagree" in text
    assert "task 103, annotation 2003: no choice (the selection was cleared before submitting)" in text
    table = read_pairs(prefs / "pairs.csv")
    assert table["annotator"].tolist() == ["label-studio:3", "label-studio:5", "label-studio:4", "label-studio:6"]
    assert table["choice"].tolist() == ["first", "second", "second", "second"]
    assert table.loc[0, "image_a"] == table.loc[1, "image_a"]  # one pair's images are stored once
    assert validate_preferences(table, prefs).success

    # next week's export: 2009 edited (later, another choice), 2001 as it was before an edit (older)
    tasks[0]["annotations"][1].update(updated_at="2026-11-27T10:00:00Z", result=_pairwise("left"))
    tasks[0]["annotations"][0].update(updated_at="2026-11-19T10:00:00Z", result=_pairwise("right"))
    again = import_preferences(write_export(tmp_path, tasks), prefs, images=media)
    text = again.to_text()
    assert again.written and again.added == 0 and again.already == 2, text
    assert [n.where for n in again.updated] == ["task 101, annotation 2009"] and "second -> first" in text
    assert any("an older version of an imported annotation" in n.reason for n in again.skipped), text
    assert (again.multi_rater_pairs, again.disagreeing_pairs) == (2, 0)
    table = read_pairs(prefs / "pairs.csv")
    assert table["pair_id"].tolist() == ["ls-7-101-2001", "ls-7-101-2009", "ls-7-102-2002", "ls-7-102-2010"]
    assert table["choice"].tolist() == ["first", "first", "second", "second"]
    assert table.loc[1, "timestamp"] == "2026-11-27T10:00:00+00:00"
    assert validate_preferences(table, prefs).success and not leftovers(prefs)


def test_team_files_byte_order_marks_symlink_loops_and_prompt_rules(tmp_path, media):
    prefs = tmp_path / "prefs"
    bom = tmp_path / "export.json"
    bom.write_text(EXPORT.read_text(), encoding="utf-8-sig")
    assert import_preferences(bom, prefs, images=media).added == 2

    (media / "loop.png").symlink_to(media / "loop.png")
    log = tmp_path / "excel.csv"  # Excel's "CSV UTF-8": a byte-order mark, and no timestamp column
    log.write_text("prompt,images,chosen,annotator\n"
                   "a handwritten\u200b digit \u202eone,one_a.png|one_b.png,one_b.png,ana\n"
                   "a handwritten digit nine,nine_a.png|loop.png,nine_a.png,ana\n", encoding="utf-8-sig")
    refused = import_preferences(log, prefs, images=media, timestamp="2026-11-21T08:00:00Z")
    assert [(n.where, "is a symlink loop" in n.reason) for n in refused.refused] == [("line 3", True)]
    kept = import_preferences(log, prefs, images=media, timestamp="2026-11-21T08:00:00Z", keep_valid=True)
    assert kept.added == 1, kept.to_text()
    row = read_pairs(prefs / "pairs.csv").iloc[-1]
    assert row["prompt"] == "a handwritten digit one" and row["timestamp"] == "2026-11-21T08:00:00+00:00"

    # without --timestamp, a row without one takes the time of the import
    log.write_text("prompt,images,chosen,annotator\na handwritten digit nine,nine_a.png|nine_b.png,nine_b.png,bo\n")
    start = pd.Timestamp.now(tz="UTC").floor("ms")
    assert import_preferences(log, prefs, images=media).added == 1
    when = pd.Timestamp(read_pairs(prefs / "pairs.csv").iloc[-1]["timestamp"])
    assert start <= when <= pd.Timestamp.now(tz="UTC")

    # validation holds preference prompts to the rules of prompt files
    table = read_pairs(prefs / "pairs.csv")
    table.loc[0, "prompt"] = "a handwritten\u200b digit \u202ethree"
    table.loc[1, "prompt"] = "x" * 201
    report = validate_preferences(table, prefs)
    failed = {c.name for c in report.failed()}
    assert failed == {"prompt length in [3, 200]",
                      "prompt is normalised text (no zero-width or bidirectional characters, NFKC)"}, report.to_text()


def test_default_out_from_the_repository_root_and_normal_permissions(tmp_path, media, monkeypatch):
    repo = tmp_path / "repo"
    repo.mkdir()
    monkeypatch.chdir(repo)
    umask = os.umask(0o022)
    try:
        assert cli.main(["preferences", "import", str(EXPORT), "--images", str(media)]) == 0  # as the README shows
    finally:
        os.umask(umask)
    prefs = repo / "data" / "preferences"
    table = read_pairs(prefs / "pairs.csv")
    assert len(table) == 2 and validate_preferences(table, prefs).success
    assert stat.S_IMODE((prefs / "pairs.csv").stat().st_mode) == 0o644
    assert stat.S_IMODE((prefs / table.loc[0, "image_a"]).stat().st_mode) == 0o644


def test_a_file_of_another_format_fails_before_the_heavy_imports(tmp_path):
    bad = tmp_path / "export.json"
    bad.write_text("prompt,images\n")
    code = ("import sys; from mlops.cli import main; code = main(['preferences', 'import', sys.argv[1]]); "
            "sys.exit(3 if 'torch' in sys.modules else code)")
    done = subprocess.run([sys.executable, "-c", code, str(bad)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 2 and "is not a readable JSON file" in done.stderr, done.stderr


def test_pick_one_of_four_becomes_three_pairs(tmp_path, media):
    log = tmp_path / "picks.jsonl"
    shown = ["one_a.png", "one_b.png", "nine_a.png", "nine_b.png"]
    log.write_text("\n".join(json.dumps(r) for r in [
        {"prompt": "a handwritten digit one", "images": shown, "chosen": "nine_a.png", "annotator": "ana",
         "timestamp": "2026-11-21T10:00:00+00:00"},
        {"prompt": "a handwritten digit nine", "images": shown[:2], "chosen": "", "annotator": "ana",
         "timestamp": "2026-11-21T10:01:00+00:00"},
        {"prompt": "a handwritten digit nine", "images": shown[2:], "chosen": "nine_b.png",
         "timestamp": "2026-11-21"},
    ]) + "\n")
    prefs = tmp_path / "prefs"
    report = import_preferences(log, prefs, images=media, annotator="product-log")
    assert report.written and report.added == 4 and [n.where for n in report.skipped] == ["line 2"], report.to_text()
    table = read_pairs(prefs / "pairs.csv")
    assert validate_preferences(table, prefs).success and (table["source"] == "choice-log").all()
    picks = table.iloc[:3]
    chosen = {r.image_a if r.choice == "first" else r.image_b for r in picks.itertuples()}
    assert len(chosen) == 1 and sorted(picks["choice"]) == ["first", "first", "second"]  # the winner changes sides
    others = {r.image_b if r.choice == "first" else r.image_a for r in picks.itertuples()}
    assert len(others) == 3 and not others & chosen
    assert table["annotator"].tolist() == ["ana"] * 3 + ["product-log"]
    assert table["timestamp"].iloc[3] == "2026-11-21T00:00:00"


@pytest.mark.parametrize("line, reason", [
    ("a handwritten digit one,one_a.png|one_b.png,nine_a.png,ana,2026-11-21T10:00:00Z", "is not one of the images"),
    ("a handwritten digit one,one_a.png,one_a.png,ana,2026-11-21T10:00:00Z", "two or more distinct images"),
    ("a handwritten digit one,one_a.png|one_b.png,one_a.png,,2026-11-21T10:00:00Z", "no annotator"),
    ("a handwritten digit one,one_a.png|one_b.png,one_a.png,ana,tomorrow", "is not an ISO 8601 time"),
    (",one_a.png|one_b.png,one_a.png,ana,2026-11-21T10:00:00Z", "no prompt"),
])
def test_malformed_choice_log_rows_are_refused_with_their_line(tmp_path, media, line, reason):
    log = tmp_path / "log.csv"
    log.write_text("prompt,images,chosen,annotator,timestamp\n"
                   "a handwritten digit nine,nine_a.png|nine_b.png,nine_b.png,bo,2026-11-21T09:00:00Z\n" + line + "\n")
    prefs = tmp_path / "prefs"
    report = import_preferences(log, prefs, images=media)
    assert not report.written and snapshot(prefs) == {}
    assert [(n.where, reason in n.reason) for n in report.refused] == [("line 3", True)], report.to_text()


def test_cli_reports_and_exits_nonzero_when_refused(tmp_path, media, capsys):
    prefs = tmp_path / "prefs"
    bad = write_export(tmp_path, _mutate(MALFORMED["missing image"][0]))
    assert cli.main(["preferences", "import", str(bad), "--images", str(media), "--out", str(prefs)]) == 1
    err = capsys.readouterr().err
    assert "REFUSED" in err and "task 102, annotation 2002" in err and "--keep-valid" in err
    assert cli.main(["preferences", "import", str(EXPORT), "--images", str(media), "--out", str(prefs)]) == 0
    assert "imported 2 new row(s) from" in capsys.readouterr().out
    (tmp_path / "min.json").write_text(json.dumps([{"image1": "a.png", "pw": "left"}]))  # a JSON_MIN export
    assert cli.main(["preferences", "import", str(tmp_path / "min.json"), "--out", str(prefs)]) == 2
    assert "not a Label Studio JSON export" in capsys.readouterr().err


def test_old_files_stay_valid_and_concurrent_appends_lose_nothing(tmp_path, media):
    prefs = tmp_path / "prefs"
    (prefs / "images").mkdir(parents=True)
    for name in ("a.png", "b.png"):
        digit(prefs / "images" / name, len(name))
    old = pd.DataFrame([["p1", "the number 3", "images/a.png", "images/b.png", "first", "ana", "2026-11-01T10:00:00"]],
                       columns=["pair_id", "prompt", "image_a", "image_b", "choice", "annotator", "timestamp"])
    old.to_csv(prefs / "pairs.csv", index=False)
    assert validate_preferences(read_pairs(prefs / "pairs.csv"), prefs).success

    def rater(name):
        for k in range(10):
            rel = f"images/label/{name}-{k}.png"
            append_pairs(prefs, [{"pair_id": f"{name}-{k}", "prompt": "the number 3", "image_a": "images/a.png",
                                  "image_b": rel, "choice": "tie", "annotator": name,
                                  "timestamp": "2026-11-02T10:00:00+00:00", "seed_a": "1", "seed_b": str(k)}],
                         # pairs of their own
                         {rel: Image.fromarray(np.full((8, 8), 10 * int(name[1:]) + k, np.uint8))})

    threads = [threading.Thread(target=rater, args=(f"r{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    table = read_pairs(prefs / "pairs.csv")
    assert len(table) == 41 and table["pair_id"].is_unique
    assert pd.isna(table.loc[0, "seed_a"]) and list(table.columns[:7]) == list(old.columns)
    assert validate_preferences(table, prefs).success
    with pytest.raises(ValueError, match="already holds pair id"):
        append_pairs(prefs, [table.iloc[1].to_dict()])
    assert len(read_pairs(prefs / "pairs.csv")) == 41

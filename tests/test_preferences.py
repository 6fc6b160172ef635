"""Preference data, its validation, and the Bradley-Terry reward head."""

import pandas as pd
import pytest
import torch

from drift.data.preferences import bold_strokes_choice, is_held_out, read_pairs
from drift.scoring.preference_head import fit_bradley_terry, pairwise_accuracy
from drift.data.validation import validate_preferences


def test_bradley_terry_recovers_a_linear_preference():
    g = torch.Generator().manual_seed(0)
    fa, fb = torch.randn(400, 6, generator=g), torch.randn(400, 6, generator=g)
    w = torch.tensor([1.0, -2.0, 0.0, 0.5, 0.0, 0.0])
    choices = ["first" if float((a - b) @ w) > 0 else "second" for a, b in zip(fa, fb)]
    head = fit_bradley_terry(fa[:300], fb[:300], choices[:300], epochs=300)
    assert pairwise_accuracy(head, fa[300:], fb[300:], choices[300:]) > 0.9
    assert abs(float(torch.cat([head(fa[:300]), head(fb[:300])]).mean())) < 1e-4  # centred
    assert torch.isnan(torch.tensor(pairwise_accuracy(head, fa[:2], fb[:2], ["tie", "tie"])))


def test_synthetic_annotator_prefers_more_ink():
    light, bold = torch.full((1, 8, 8), 0.2), torch.full((1, 8, 8), 0.6)
    assert bold_strokes_choice(bold, light) == "first" and bold_strokes_choice(light, bold) == "second"
    assert bold_strokes_choice(light, light + 0.001) == "tie"


def test_held_out_split_is_stable_when_batches_are_added():
    ids = pd.Series([f"batch-000001-{k:05d}" for k in range(200)])
    first = is_held_out(ids, 0.2)
    more = is_held_out(pd.concat([ids, pd.Series([f"batch-000002-{k:05d}" for k in range(200)])]), 0.2)
    assert (more[:200] == first).all() and 0.1 < first.mean() < 0.3


def _pairs(tmp_path, rows):
    from PIL import Image

    (tmp_path / "images").mkdir(exist_ok=True)
    for name in ("a.png", "b.png", "c.png"):
        Image.new("L", (8, 8), 128).save(tmp_path / "images" / name)
    (tmp_path / "images" / "broken.png").write_bytes(b"not a png")
    table = pd.DataFrame(rows, columns=["pair_id", "prompt", "image_a", "image_b", "choice", "annotator", "timestamp"])
    table.to_csv(tmp_path / "pairs.csv", index=False)
    return read_pairs(tmp_path / "pairs.csv")


GOOD = ["p1", "the number 3", "images/a.png", "images/b.png", "first", "synthetic:bold-strokes-v1", "2026-11-24T01:00:00+00:00"]


@pytest.mark.parametrize("bad_row, failed", [
    ({"choice": "left"}, "choice in"),
    ({"image_b": "images/missing.png"}, "images exist and decode"),
    ({"image_b": "images/broken.png"}, "images exist and decode"),
    ({"prompt": "the number 3", "image_a": "images/a.png", "image_b": "images/b.png"}, "one row per pair and annotator"),
    ({"prompt": "  "}, "prompt is not blank"),
])
def test_malformed_preference_files_fail_with_a_readable_report(tmp_path, bad_row, failed):
    keys = ["pair_id", "prompt", "image_a", "image_b", "choice", "annotator", "timestamp"]
    second = dict(zip(keys, ["p2", "the number 5", "images/b.png", "images/c.png", "second", GOOD[5], GOOD[6]]))
    second.update(bad_row)
    table = _pairs(tmp_path, [GOOD, [second[k] for k in keys]])
    report = validate_preferences(table, tmp_path, "pairs.csv")
    assert not report.success
    assert any(failed in c.name for c in report.failed()), report.to_text()
    assert "INVALID" in report.to_text() and "line 3" in report.to_text()


def test_valid_preference_file_passes(tmp_path):
    table = _pairs(tmp_path, [GOOD, ["p2", "the number 5", "images/b.png", "images/c.png", "tie", GOOD[5], GOOD[6]]])
    assert validate_preferences(table, tmp_path).success


def test_synthetic_batch_saves_the_images_themselves(tiny_sd15_dir, tmp_path):
    from PIL import Image

    from drift.models import load_model
    from drift.data.preferences import synthetic_batch

    table = synthetic_batch(load_model(str(tiny_sd15_dir)), ["a cat"], 2, tmp_path, seed=3, num_steps=2)
    assert len(table) == 2 and set(table["choice"]) <= {"first", "second", "tie"}
    with Image.open(tmp_path / table.loc[0, "image_a"]) as im:
        assert im.size == (16, 16) and im.mode == "RGB"  # no grid border or padding
    assert validate_preferences(read_pairs(tmp_path / "pairs.csv"), tmp_path).success

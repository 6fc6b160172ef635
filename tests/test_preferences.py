"""Preference data, its validation, and the Bradley-Terry reward head."""

import numpy as np
import pandas as pd
import pytest
import torch

from drift.data.preferences import bold_strokes_choice, is_held_out, read_pairs
from drift.data.validation import validate_preferences
from drift.scoring.preference_head import fit_bradley_terry, pairwise_accuracy


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


GOOD = ["p1", "the number 3", "images/a.png", "images/b.png", "first", "synthetic:bold-strokes-v1",
        "2026-11-24T01:00:00+00:00"]


@pytest.mark.parametrize("bad_row, failed", [
    ({"choice": "left"}, "choice in"),
    ({"image_b": "images/missing.png"}, "images exist and decode"),
    ({"image_b": "images/broken.png"}, "images exist and decode"),
    ({"prompt": "the number 3", "image_a": "images/a.png", "image_b": "images/b.png"},
     "one row per pair and annotator"),
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

    from drift.data.preferences import synthetic_batch
    from drift.models import load_model

    table = synthetic_batch(load_model(str(tiny_sd15_dir)), ["a cat"], 2, tmp_path, seed=3, num_steps=2)
    assert len(table) == 2 and set(table["choice"]) <= {"first", "second", "tie"}
    with Image.open(tmp_path / table.loc[0, "image_a"]) as im:
        assert im.size == (16, 16) and im.mode == "RGB"  # no grid border or padding
    assert validate_preferences(read_pairs(tmp_path / "pairs.csv"), tmp_path).success


def test_rater_report_kappa_matches_a_hand_computation(tmp_path):
    from PIL import Image

    from drift.data.agreement import rater_report
    from drift.data.preferences import pair_identity

    (tmp_path / "images").mkdir()
    for k in range(1, 7):
        for side, value in (("a", 10 * k), ("b", 10 * k + 5)):
            Image.new("L", (8, 8), value).save(tmp_path / "images" / f"p{k}_{side}.png")
    rows = [("ana", k, c) for k, c in enumerate(["first", "first", "second", "tie", "first", "second"], start=1)]
    rows += [("bo", k, c) for k, c in enumerate(["first", "second", "second", "tie"], start=1)]
    rows += [("cy", 5, "tie"), ("cy", 6, "second")]
    table = pd.DataFrame([{"pair_id": f"{who}-{k}", "prompt": "the number 3", "image_a": f"images/p{k}_a.png",
                           "image_b": f"images/p{k}_b.png", "choice": choice, "annotator": who,
                           "timestamp": "2026-11-24T01:00:10+00:00"} for who, k, choice in rows])
    # bo saw pair 5 the other way round and chose its first image ("second" as shown)
    table.loc[len(table)] = {"pair_id": "bo-5", "prompt": "the number 3", "image_a": "images/p5_b.png",
                             "image_b": "images/p5_a.png", "choice": "second", "annotator": "bo",
                             "timestamp": "2026-11-24T01:00:10+00:00"}
    table["shown_at"] = None
    table.loc[:2, "shown_at"] = ["2026-11-24T01:00:08+00:00", "2026-11-24T01:00:06+00:00", "2026-11-24T01:00:00+00:00"]
    head = pd.Series({0: "first", 2: "first", 3: "first"})  # ana's pairs 1, 3 and 4 (a tie: not compared)
    report = rater_report(table, pair_identity(table, tmp_path), head, "a test head")

    # by hand: ana-bo on pairs 1-5: ana f f s t f, bo f s s t f: agree 4/5; marginals ana (f, s, t) 3/5 1/5 1/5,
    # bo 2/5 2/5 1/5: chance 9/25. ana-cy on pairs 5, 6: ana f s, cy t s: agree 1/2, chance 1/4.
    # bo-cy on pair 5: f against t: agree 0, chance 0.
    kappa = {"ab": (4 / 5 - 9 / 25) / (1 - 9 / 25), "ac": (1 / 2 - 1 / 4) / (1 - 1 / 4), "bc": 0.0}
    by_name = {r.rater: r for r in report.raters}
    ana, bo, cy = by_name["ana"], by_name["bo"], by_name["cy"]
    assert (ana.pairs, bo.pairs, cy.pairs) == (6, 5, 2) and (ana.shared, bo.shared, cy.shared) == (7, 6, 3)
    assert ana.agreement == pytest.approx((4 / 5 * 5 + 1 / 2 * 2) / 7)
    assert ana.kappa == pytest.approx((kappa["ab"] * 5 + kappa["ac"] * 2) / 7)
    assert bo.kappa == pytest.approx((kappa["ab"] * 5 + kappa["bc"] * 1) / 6)
    assert cy.kappa == pytest.approx((kappa["ac"] * 2 + kappa["bc"] * 1) / 3)
    assert (ana.tie_rate, bo.tie_rate, cy.tie_rate) == pytest.approx((1 / 6, 1 / 5, 1 / 2))
    assert ana.median_seconds == 4.0 and np.isnan(bo.median_seconds)
    assert (ana.head_agreement, ana.head_pairs) == (0.5, 2) and bo.head_pairs == 0
    assert (report.multi_rater_pairs, report.disagreeing_pairs) == (6, 2)
    text = report.to_text()
    assert "mean over partners weighted by shared pairs" in text and "a test head" in text
    assert report.metrics()["raters/ana/kappa"] == pytest.approx(ana.kappa) and "raters/bo/median_seconds" not in \
        report.metrics()


def test_held_out_split_keeps_each_pairs_raters_together(tmp_path):
    from PIL import Image

    from drift.scoring.preference_head import pair_features

    (tmp_path / "images").mkdir()
    rows = []
    for k in range(40):
        for side in "ab":
            Image.new("L", (4, 4), 3 * k + (side == "b")).save(tmp_path / "images" / f"{k}{side}.png")
        for who, flipped in (("ana", False), ("bo", k % 2 == 1)):  # bo saw every other pair the other way round
            a, b = (f"images/{k}b.png", f"images/{k}a.png") if flipped else (f"images/{k}a.png", f"images/{k}b.png")
            rows.append({"pair_id": f"{who}-{k}", "prompt": "a cat", "image_a": a, "image_b": b, "choice": "first",
                         "annotator": who})
    data = pair_features(pd.DataFrame(rows), tmp_path, lambda images: images.flatten(1), 0.5)
    held = pd.Series(data.held).groupby(data.identity["key"].to_numpy())
    assert data.identity["key"].nunique() == 40 and (held.nunique() == 1).all()  # both raters on one side
    assert 10 < held.first().sum() < 30 and len(data.held_choices) == 2 * held.first().sum()


def test_report_command_measures_a_head_on_each_raters_held_out_pairs(tmp_path, capsys):
    import json

    from PIL import Image

    from drift import cli
    from drift.data.preferences import load_pair_images
    from drift.scoring.embeddings import pixels
    from tests.conftest import ROOT

    (tmp_path / "images").mkdir()
    rows = []
    for k in range(40):  # images with a bright left half: ana prefers the brighter one, bo the darker
        for side, value in (("a", 100 + 3 * k), ("b", 230 - 3 * k)):
            pixels_ = np.zeros((8, 8), np.uint8)
            pixels_[:, :4] = value
            Image.fromarray(pixels_).save(tmp_path / "images" / f"{k}{side}.png")
        brighter_first = 100 + 3 * k > 230 - 3 * k
        for who, wants_brighter in (("ana", True), ("bo", False)):
            rows.append({"pair_id": f"{who}-{k}", "prompt": "a cat", "image_a": f"images/{k}a.png",
                         "image_b": f"images/{k}b.png", "choice": "first" if brighter_first == wants_brighter
                         else "second", "annotator": who, "timestamp": "2026-11-24T01:00:00+00:00"})
    table = pd.DataFrame(rows)
    table.to_csv(tmp_path / "pairs.csv", index=False)
    ana = table[table["annotator"] == "ana"]
    embed = pixels()
    a, b = load_pair_images(ana, tmp_path)
    fit_bradley_terry(embed(a), embed(b), ana["choice"].tolist()).save_pretrained(tmp_path / "head")

    args = ["preferences", "report", str(tmp_path / "pairs.csv"), "-c", str(ROOT / "configs" / "retrain_local.yaml"),
            "--set", "preferences.embedding={name: pixels}", "--head", str(tmp_path / "head"),
            "--json", str(tmp_path / "raters.json")]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert f"the reward head in {tmp_path / 'head'}" in out and "mean over partners weighted by shared pairs" in out
    figures = {r["rater"]: r for r in json.loads((tmp_path / "raters.json").read_text())["raters"]}
    assert figures["ana"]["agreement"] == 0 and figures["ana"]["shared"] == 40  # they never agree
    held = figures["ana"]["head_pairs"]
    assert 0 < held < 40 and figures["bo"]["head_pairs"] == held  # the held-out pairs, for both
    assert figures["ana"]["head_agreement"] == 1 and figures["bo"]["head_agreement"] == 0
    assert cli.main(args[:3] + ["--head", str(tmp_path / "head")]) == 2  # a head needs the config's embedding

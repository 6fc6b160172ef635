"""The digits testbed, built small in a temporary directory: data, classifier, base model, and the
direction of the two effects the product is about (GRPO collapses, DRIFT keeps diversity)."""

import math
from pathlib import Path

import torch

from drift.build import build_trainer
from drift.data.prompts import read_prompts
from drift.evaluation.matching import matched_comparison
from drift.models import load_model
from drift.testbed.classifier import digit_from_prompt
from drift.testbed.data import build_data, load_images
from drift.testbed.pretrain import pretrain
from tests.conftest import small_config


def test_prompt_dataset_has_held_out_phrasings(testbed):
    table = read_prompts(testbed["prompts"])
    train, held_out = table[table.split == "train"], table[table.split == "eval"]
    assert set(train.prompt).isdisjoint(held_out.prompt)
    for split in (train, held_out):
        assert sorted({digit_from_prompt(p) for p in split.prompt}) == list(range(10))
        assert all(int(d) == digit_from_prompt(p) for p, d in zip(split.prompt, split.digit))


def test_data_build_is_deterministic(testbed, tmp_path):
    again = build_data(tmp_path)
    assert Path(again["prompts"]).read_bytes() == Path(testbed["prompts"]).read_bytes()
    a, b = load_images(again["images"]), load_images(testbed["images"])
    assert all((a[k] == b[k]).all() for k in a)


def test_classifier_is_accurate_even_when_small(testbed):
    assert testbed["accuracy"] >= 0.95


def test_the_evaluation_encoder_separates_styles_on_held_out_digits(testbed):
    from drift.testbed.encoder import PROBE_THRESHOLD, encoder_probe, load_encoder

    data = load_images(testbed["images"])
    probe = encoder_probe(load_encoder(testbed["root"] / "encoder"), data["images"], data["labels"], data["is_test"])
    assert list(probe) == ["thickness", "slant", "size"]
    assert min(probe.values()) >= PROBE_THRESHOLD, probe  # chance is 1/3


def test_base_model_opens_like_a_hub_model(testbed):
    model = load_model(str(testbed["root"] / "base_model"))
    assert model.family == "flow" and model.vae is None and model.latent_shape == (1, 8, 8)
    cond = model.encode(["a handwritten digit three", "the number 3"])
    assert cond.embeds.shape[0] == 2 and torch.isfinite(cond.embeds).all()


def test_pretraining_is_seeded(testbed):
    data = load_images(testbed["images"])
    table = read_prompts(testbed["prompts"])
    runs = [pretrain(data["images"], data["labels"], ~data["is_test"], table, steps=3, batch_size=16, seed=7)[0]
            for _ in range(2)]
    for a, b in zip(runs[0].unet.state_dict().values(), runs[1].unet.state_dict().values()):
        assert torch.equal(a, b)


def test_grpo_collapses_and_drift_keeps_diversity(testbed):
    base = small_config(testbed, **{"train.iterations": 25, "eval.every": 5})
    runs = {name: build_trainer(cfg).train() for name, cfg in (("grpo", base.without_drift()), ("drift", base))}
    grpo = runs["grpo"]
    assert grpo[-1]["alignment"] > grpo[0]["alignment"] + 1.0
    assert grpo[-1]["diversity"] < 0.75 * grpo[0]["diversity"]
    rows = matched_comparison(runs["drift"], grpo, count=3)
    assert rows, "the two runs share no alignment range"
    assert all(row["gain"] > 0 for row in rows), rows


def test_attributes_are_terciles_within_each_digit_and_captions_name_the_chosen_ones():
    from drift.testbed.attributes import HIGH, LOW, MIDDLE, UNNAMED, attribute_levels, attribute_values, caption
    from drift.testbed.data import digit_images

    data = digit_images(0.2, 0)
    levels, values = attribute_levels(data["images"], data["labels"]), attribute_values(data["images"])
    for d in range(10):
        mine = data["labels"] == d
        for a in range(3):
            counts = [(levels[mine, a] == lv).sum() for lv in (LOW, MIDDLE, HIGH)]
            assert max(counts) - min(counts) <= 2  # terciles of the class
            assert values[mine & (levels[:, a] == LOW), a].max() < values[mine & (levels[:, a] == HIGH), a].min()
    # an image and its copy widened by one column of ink: more ink per extent, i.e. bolder
    img = data["images"][:1].copy()
    bolder = img.copy()
    bolder[0, 0, :, 1:] = img[0, 0, :, 1:].clip(min=img[0, 0, :, :-1])
    assert attribute_values(bolder)[0, 0] > attribute_values(img)[0, 0]
    assert caption("a handwritten three", (HIGH, UNNAMED, LOW)) == "a handwritten three bold small"
    assert caption("the number 3", (MIDDLE, LOW, UNNAMED)) == "the number 3 regular leftward"
    assert caption("the number 3", (UNNAMED,) * 3) == "the number 3"


def test_attribute_control_pairs_the_low_and_high_words_on_the_same_seeds(testbed):
    from drift.bench.testbed import attribute_control
    from drift.build import build_parts

    cfg = small_config(testbed, **{"eval.num_prompts": 3})
    rows = attribute_control(cfg, build_parts(cfg), samples_per_prompt=4)
    assert [r["attribute"] for r in rows] == ["thickness", "slant", "size"]
    for r in rows:
        assert 0.0 <= r["high_above_low"] <= 1.0 and all(math.isfinite(r[k]) for k in ("low", "plain", "high"))

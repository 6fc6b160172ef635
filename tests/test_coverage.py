"""Coverage metrics (precision, recall, Frechet distance) and their place in the evaluation."""

import math

import pytest
import torch

from drift.scoring.coverage import coverage_report, frechet_distance, knn_radii, precision_recall


def _cloud(n=200, d=8, seed=0):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


def test_a_set_against_itself_is_fully_covered_at_distance_zero():
    x = _cloud()
    assert precision_recall(x, x, k=3) == (1.0, 1.0)
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-8)


def test_shifted_sets_lose_precision_and_recall_and_gain_distance():
    real, gen = _cloud(seed=0), _cloud(seed=1)
    near, far = precision_recall(gen + 0.5, real), precision_recall(gen + 3.0, real)
    assert near[0] < 1 and near[1] < 1
    assert far[0] < near[0] and far[1] < near[1]
    assert frechet_distance(gen + 3.0, real) > frechet_distance(gen + 0.5, real) > frechet_distance(gen, real)
    # the mean term: for equal covariances FD = ||mu_a - mu_b||^2
    assert frechet_distance(real + 2.0, real) == pytest.approx(4.0 * real.shape[1], rel=1e-6)


def test_a_collapsed_sample_is_precise_but_has_no_recall():
    real = _cloud()
    collapsed = real[:1].repeat(30, 1) + 1e-3 * _cloud(30, seed=2)
    precision, recall = precision_recall(collapsed, real, k=3)
    assert precision == 1.0 and recall < 0.1


def test_knn_radius_is_the_kth_neighbour_distance():
    x = torch.tensor([[0.0], [1.0], [3.0], [6.0]])
    assert knn_radii(x, 1).tolist() == [1.0, 1.0, 2.0, 3.0]
    assert knn_radii(x, 2).tolist() == [3.0, 2.0, 3.0, 5.0]


def test_report_pools_the_samples_of_each_class():
    real = {"a": _cloud(seed=3), "b": _cloud(seed=4) + 5}
    feats = torch.cat([real["a"][:40], real["b"][:40], real["a"][40:80]])
    classes = ["a"] * 40 + ["b"] * 40 + ["a"] * 40
    report = coverage_report(feats, classes, real, k=3)
    assert report["precision"] == 1.0 and 0 < report["recall"] < 1 and math.isfinite(report["frechet"])
    swapped = coverage_report(feats, ["b"] * 40 + ["a"] * 40 + ["b"] * 40, real, k=3)
    assert swapped["precision"] < 0.1 and swapped["frechet"] > report["frechet"]


def test_evaluation_reports_coverage_of_the_prompted_digits(testbed):
    from drift.build import build_parts
    from drift.evaluation.protocol import evaluate_with_config
    from tests.conftest import small_config

    cfg = small_config(testbed, **{"eval.num_prompts": 10, "eval.samples_per_prompt": 4})
    parts = build_parts(cfg)
    metrics = evaluate_with_config(cfg, parts.model, parts.reward, parts.embed, parts.eval_prompts).metrics
    assert {"precision", "recall", "frechet"} <= set(metrics)
    assert 0 <= metrics["recall"] <= 1 and 0 < metrics["precision"] <= 1 and metrics["frechet"] > 0
    # the same figures in the further embeddings: the classifier's features and pixels
    assert {f"{e}/{k}" for e in ("classifier", "pixels") for k in ("diversity", "vendi", "recall")} <= set(metrics)
    assert metrics["classifier/diversity"] != metrics["diversity"] != metrics["pixels/diversity"]
    off = evaluate_with_config(cfg.with_overrides({"eval.coverage": None}), parts.model, parts.reward, parts.embed,
                               parts.eval_prompts).metrics
    assert "recall" not in off and off["alignment"] == metrics["alignment"]

"""The three DRIFT components and the diversity metrics satisfy their stated properties."""

import itertools
import math

import pytest
import torch

from drift.method import shaping
from drift.scoring.diversity import mean_pairwise_cosine_distance, per_group, vendi_score
from drift.method.prompt_noise import anneal_condition, anneal_weight, noise_scale
from drift.method.advantages import group_advantages
from drift.method.subset import select_subset, window_subset, zscore_subset


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("keep_ratio", [0.25, 0.5, 0.75, 1.0])
def test_window_is_the_minimum_range_window(seed, keep_ratio):
    r = torch.randn(9, generator=torch.Generator().manual_seed(seed)) ** 3
    mask = window_subset(r, keep_ratio)
    k = math.ceil(keep_ratio * 9)
    assert int(mask.sum()) == k
    kept = r[mask]
    best = min(max(c) - min(c) for c in itertools.combinations(r.tolist(), k))
    assert float(kept.max() - kept.min()) == pytest.approx(best)
    # contiguous in sorted order: nothing dropped lies inside the kept range
    dropped = r[~mask]
    assert not ((dropped > kept.min()) & (dropped < kept.max())).any()


def test_zscore_drops_outliers_only():
    r = torch.tensor([0.0, 0.1, -0.1, 0.05, 10.0])
    mask = zscore_subset(r, 1.5)
    assert mask.tolist() == [True, True, True, True, False]
    assert zscore_subset(torch.ones(4), 1.0).all()


def test_advantages_are_normalised_within_the_kept_subset():
    r = torch.tensor([[1.0, 2.0, 3.0, 100.0], [5.0, 5.0, 6.0, 7.0]])
    mask = select_subset(r, "window", 0.75, 1.0)
    adv = group_advantages(r, mask)
    assert mask[0].tolist() == [True, True, True, False]
    assert adv[0, 3] == 0
    kept = adv[0, :3]
    assert kept.mean().abs() < 1e-6 and kept.std(unbiased=False) == pytest.approx(1.0, abs=1e-4)
    per_step = group_advantages(r[..., None].expand(2, 4, 3), mask)
    torch.testing.assert_close(per_step, adv[..., None].expand(2, 4, 3))


def test_anneal_weight_and_noise_is_zero_where_g_is_one():
    assert anneal_weight(0.1, 0.3, 0.8) == 1.0 and anneal_weight(0.9, 0.3, 0.8) == 0.0
    assert anneal_weight(0.55, 0.3, 0.8) == pytest.approx(0.5)
    y, n = torch.randn(2, 5, 8), torch.randn(2, 5, 8)
    for rescale in (False, True):
        assert torch.equal(anneal_condition(y, n, 1.0, 0.5, rescale, 1.0), y)
    noisy = anneal_condition(y, n, 0.0, 0.5, False, 1.0)
    torch.testing.assert_close(noisy, 0.5 * n)
    half = anneal_condition(y, n, 0.25, 0.5, False, 1.0)
    torch.testing.assert_close(half, 0.5 * y + 0.5 * math.sqrt(0.75) * n)


def test_rescaled_condition_keeps_the_clean_statistics():
    y, n = torch.randn(3, 4, 16) * 2 + 1, torch.randn(3, 4, 16)
    out = anneal_condition(y, n, 0.3, 1.0, True, 1.0)
    torch.testing.assert_close(out.mean(dim=(1, 2)), y.mean(dim=(1, 2)), atol=1e-5, rtol=0)
    torch.testing.assert_close(out.std(dim=(1, 2)), y.std(dim=(1, 2)), atol=1e-5, rtol=1e-5)


def test_noise_scale_decays_linearly_then_stays():
    assert noise_scale(0, 0.4, 0.0, 10) == 0.4
    assert noise_scale(5, 0.4, 0.0, 10) == pytest.approx(0.2)
    assert noise_scale(50, 0.4, 0.1, 10) == pytest.approx(0.1)
    assert noise_scale(50, 0.4, 0.0, 0) == 0.4


def test_potential_is_min_max_normalised_diversity():
    f = torch.tensor([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0]])
    phi = shaping.diversity_potential(f)
    assert phi.min() == 0 and phi.max() == 1
    assert int(phi.argmax()) == 2  # the odd one out
    assert torch.equal(shaping.diversity_potential(torch.ones(4, 3)), torch.zeros(4))


def test_dense_terms_telescope_to_the_terminal_bonus():
    g = torch.Generator().manual_seed(0)
    r = torch.randn(6, generator=g)
    potentials = torch.rand(6, 5, generator=g)
    potentials[:, 0] = 0
    scale = shaping.shaping_scale(r, 0.7, gate=False)
    terms = shaping.dense_shaping_terms(potentials, scale, gamma=1.0)
    terminal = shaping.terminal_bonus(r, potentials[:, -1], 0.7, gate=False)
    torch.testing.assert_close(r + terms.sum(dim=1), terminal)
    torch.testing.assert_close(shaping.returns_to_go(r, terms)[:, 0], terminal)
    torch.testing.assert_close(shaping.returns_to_go(r, terms)[:, -1], r + terms[:, -1])


def test_lambda_zero_changes_nothing_and_gate_spares_low_rewards():
    r = torch.tensor([0.0, 1.0, 2.0, 3.0])
    phi = torch.tensor([1.0, 0.5, 0.0, 0.2])
    assert torch.equal(shaping.terminal_bonus(r, phi, 0.0, gate=False), r)
    assert torch.equal(shaping.dense_shaping_terms(torch.rand(4, 6), shaping.shaping_scale(r, 0.0, False), 0.9),
                       torch.zeros(4, 5))
    gated = shaping.terminal_bonus(r, phi, 1.0, gate=True)
    assert gated[:2].tolist() == [0.0, 1.0]  # below the mean: no bonus
    assert gated[3] > r[3]
    # lambda is in units of the reward spread: scaling rewards scales the bonus
    torch.testing.assert_close(shaping.terminal_bonus(10 * r, phi, 1.0, False), 10 * shaping.terminal_bonus(r, phi, 1.0, False))


def test_diversity_metrics():
    same = torch.ones(5, 4)
    assert mean_pairwise_cosine_distance(same) == pytest.approx(0.0, abs=1e-6)
    assert vendi_score(same) == pytest.approx(1.0, abs=1e-4)
    ortho = torch.eye(4)
    assert mean_pairwise_cosine_distance(ortho) == pytest.approx(1.0)
    assert vendi_score(ortho) == pytest.approx(4.0, rel=1e-4)
    groups = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    assert per_group(vendi_score, torch.cat([same[:4], ortho]), groups) == pytest.approx(2.5, rel=1e-4)


def test_matched_levels_interpolate_along_the_trajectory():
    from drift.evaluation.matching import at_level, matched_comparison, pareto_front

    xs, ys = [0.0, 1.0, 3.0], [1.0, 0.5, 0.1]
    assert at_level(xs, ys, 2.0) == pytest.approx(0.3)
    assert math.isnan(at_level(xs, ys, 5.0))
    method = [{"alignment": a, "diversity": d} for a, d in [(0, 1.0), (4, 0.6)]]
    base = [{"alignment": a, "diversity": d} for a, d in [(0, 1.0), (4, 0.2)]]
    rows = matched_comparison(method, base, count=3)
    assert [r["alignment"] for r in rows] == [1.0, 2.0, 3.0]
    assert rows[1]["gain"] == pytest.approx((0.8 - 0.6) / 0.6)
    assert pareto_front([(0, 1), (1, 0.5), (0.5, 0.4), (2, 0.1)]) == [0, 1, 3]

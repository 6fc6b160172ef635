"""The three DRIFT components and the diversity metrics satisfy their stated properties."""

import itertools
import math

import pytest
import torch

from drift.method import shaping
from drift.method.advantages import group_advantages
from drift.method.iteration_schedule import linear_schedule
from drift.method.prompt_noise import anneal_condition, anneal_weight, perturb
from drift.method.subset import select_subset, window_subset, zscore_subset
from drift.scoring.diversity import mean_pairwise_cosine_distance, per_group, vendi_score


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


def test_linear_schedule_endpoints():
    assert linear_schedule(0, 0.4, 0.0, 10) == 0.4
    assert linear_schedule(5, 0.4, 0.0, 10) == pytest.approx(0.2)
    assert linear_schedule(10, 0.4, 0.1, 10) == pytest.approx(0.1)
    assert linear_schedule(50, 0.4, 0.1, 10) == pytest.approx(0.1)
    assert linear_schedule(50, 0.4, 0.0, 0) == 0.4
    assert linear_schedule(3, 1.0, 4.0, 6) == pytest.approx(2.5)  # rising as well as falling


@pytest.mark.parametrize("form", ["cads", "additive", "anchored"])
def test_every_noise_form_is_the_clean_prompt_at_scale_zero_or_g_one(form):
    y, n = torch.randn(2, 5, 8), torch.randn(2, 5, 8)
    for g in (0.0, 0.3, 1.0):
        assert torch.equal(anneal_condition(y, n, g, 0.0, False, 1.0, form), y)
    assert torch.equal(anneal_condition(y, n, 1.0, 0.7, True, 0.5, form), y)


def test_additive_and_anchored_forms_keep_the_prompt_at_every_tau():
    y, n = torch.randn(3, 4, 16) * 2, torch.randn(3, 4, 16)
    rms = y.pow(2).mean(dim=(1, 2), keepdim=True).sqrt()
    for g in (0.0, 0.25, 0.81):
        torch.testing.assert_close(perturb(y, n, g, 0.5, "additive"), y + 0.5 * math.sqrt(1 - g) * n)
        torch.testing.assert_close(perturb(y, n, g, 0.5, "anchored"), y + (1 - g) * 0.5 * rms * n)
    # where the CADS form has lost the prompt (g = 0), the others are centred on it
    torch.testing.assert_close(perturb(y, n, 0.0, 0.5, "cads"), 0.5 * n)
    anchored = perturb(y, n, 0.0, 0.1, "anchored")
    assert ((anchored - y).pow(2).mean(dim=(1, 2)).sqrt() < 0.2 * rms.flatten()).all()  # within ~s * rms(y)


def test_floor_keeps_g_at_or_above_it():
    taus = [i / 20 for i in range(21)]
    for floor in (0.0, 0.25, 0.6):
        gs = [anneal_weight(t, 0.6, 0.9, floor) for t in taus]
        assert min(gs) == pytest.approx(max(floor, 0.0)) and all(g >= floor for g in gs)
        assert gs[0] == 1.0  # late steps: the clean prompt
    y, n = torch.randn(2, 4, 8), torch.randn(2, 4, 8)
    floored = anneal_condition(y, n, anneal_weight(1.0, 0.6, 0.9, 0.25), 0.5, False, 1.0, "cads")
    torch.testing.assert_close(floored, 0.5 * y + 0.5 * math.sqrt(0.75) * n)


def test_unknown_noise_form_is_refused():
    with pytest.raises(ValueError, match="form"):
        perturb(torch.zeros(1, 2), torch.zeros(1, 2), 0.5, 0.1, "gaussian")


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
    scale = shaping.shaping_scale(r, 0.7)
    terms = shaping.dense_shaping_terms(potentials, scale, gamma=1.0)
    terminal = shaping.terminal_bonus(r, potentials[:, -1], scale)
    torch.testing.assert_close(r + terms.sum(dim=1), terminal)
    torch.testing.assert_close(shaping.returns_to_go(r, terms)[:, 0], terminal)
    torch.testing.assert_close(shaping.returns_to_go(r, terms)[:, -1], r + terms[:, -1])


def test_lambda_zero_changes_nothing_and_bonus_scales_with_the_reward_spread():
    r = torch.tensor([0.0, 1.0, 2.0, 3.0])
    phi = torch.tensor([1.0, 0.5, 0.0, 0.2])
    assert torch.equal(shaping.terminal_bonus(r, phi, shaping.shaping_scale(r, 0.0)), r)
    assert torch.equal(shaping.dense_shaping_terms(torch.rand(4, 6), shaping.shaping_scale(r, 0.0), 0.9),
                       torch.zeros(4, 5))
    # lambda is in units of the reward spread: scaling rewards scales the bonus
    bonus = lambda rewards: shaping.terminal_bonus(rewards, phi, shaping.shaping_scale(rewards, 1.0))  # noqa: E731
    torch.testing.assert_close(bonus(10 * r), 10 * bonus(r))


@pytest.mark.parametrize("gate", ["mean", "drive"])
def test_gate_gives_no_bonus_below_the_mean(gate):
    g = torch.Generator().manual_seed(1)
    r, f = torch.randn(16, generator=g), torch.rand(16, 8, generator=g)
    receives = shaping.gate_mask(r, gate)
    assert torch.equal(receives, r >= r.mean())
    phi = shaping.diversity_potential(f, shaping.potential_support(receives, torch.ones(16, dtype=torch.bool), gate))
    shaped = shaping.terminal_bonus(r, phi, shaping.shaping_scale(r, 2.0, receives))
    assert torch.equal(shaped[~receives], r[~receives])
    assert (shaped[receives] >= r[receives]).all() and (shaped > r).any()


def test_drive_potential_is_normalised_over_the_gated_samples():
    g = torch.Generator().manual_seed(2)
    r, f = torch.randn(16, generator=g), torch.rand(16, 8, generator=g)
    receives = shaping.gate_mask(r, "drive")
    phi = shaping.diversity_potential(f, receives)
    assert phi[receives].min() == 0 and phi[receives].max() == 1 and (phi[~receives] == 0).all()
    # the diversity ranking among the gated samples is that of d against the whole group
    d = shaping.mean_cosine_distance(f)[receives]
    assert torch.equal(torch.argsort(phi[receives]), torch.argsort(d))


def test_statistics_over_the_kept_subset():
    r = torch.tensor([0.0, 1.0, 2.0, 3.0, 100.0])
    kept = torch.tensor([True, True, True, True, False])
    receives = shaping.gate_mask(r, "mean", kept)
    assert receives.tolist() == [False, False, True, True, False]  # mean over the kept is 1.5, not 21.2
    scale = shaping.shaping_scale(r, 1.0, receives, kept)
    torch.testing.assert_close(scale, r[:4].std(unbiased=False) * receives.float())


def test_advantages_follow_the_weight_schedule_and_the_old_gate_spelling():
    from drift.config import load_config
    from drift.method.advantages import drift_advantages
    from tests.conftest import ROOT

    cfg = load_config(ROOT / "configs/digits.yaml", {"drift.subset.enabled": False, "drift.shaping.weight": 0.0,
                                                      "drift.shaping.final_weight": 2.0,
                                                      "drift.shaping.weight_iterations": 10,
                                                      "drift.shaping.gate": "none"})
    P, G = cfg.sampling.prompts_per_iteration, cfg.sampling.group_size
    g = torch.Generator().manual_seed(3)
    r, f = torch.randn(P * G, generator=g), torch.rand(P * G, 8, generator=g)
    plain, _ = drift_advantages(r, f, None, cfg.without_drift(), 4)
    start, _ = drift_advantages(r, f, None, cfg, 4, iteration=0)
    end, _ = drift_advantages(r, f, None, cfg, 4, iteration=10)
    constant, _ = drift_advantages(r, f, None, cfg.with_overrides({"drift.shaping.weight": 2.0,
                                                                   "drift.shaping.weight_iterations": 0}), 4)
    torch.testing.assert_close(start, plain)
    torch.testing.assert_close(end, constant)
    assert cfg.with_overrides({"drift.shaping.gate": True}).drift.shaping.gate == "mean"


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


@pytest.mark.parametrize("field, value", [("drift.prompt_noise.form", "gaussian"), ("drift.prompt_noise.floor", 1.0),
                                          ("drift.shaping.gate", "sometimes"), ("drift.shaping.over", "batch"),
                                          ("drift.shaping.final_weight", -1.0), ("drift.shaping.weight_iterations", -2),
                                          ("eval.coverage.k", 0)])
def test_new_fields_are_validated_naming_the_field(field, value):
    from drift.config import load_config
    from drift.errors import ConfigError
    from tests.conftest import ROOT

    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        load_config(ROOT / "configs/digits.yaml", {field: value})


def test_retraining_configs_run_the_default_drift():
    import yaml

    from tests.conftest import ROOT

    section = lambda name: yaml.safe_load((ROOT / "configs" / name).read_text())["parameters"]["config"]  # noqa: E731
    default = section("digits.yaml")
    for name in ("retrain.yaml", "retrain_local.yaml"):
        retrain = section(name)
        # the diversity bonus's weight is the retraining's own (tuned with its KL term); all else is the default's
        shaping = {**retrain["drift"]["shaping"], "weight": default["drift"]["shaping"]["weight"]}
        assert {**retrain["drift"], "shaping": shaping} == default["drift"]
        assert retrain["eval"] == default["eval"]
        # no SDE window in retraining (see its comment); the sampler otherwise the default's
        assert retrain["sampling"]["sde_window"] == {"size": None} and retrain["train"]["trained_steps"] is None
        assert {**retrain["sampling"], "sde_window": None} == {**default["sampling"], "sde_window": None}

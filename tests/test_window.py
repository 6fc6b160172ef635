"""The SDE window (deterministic steps outside it, trained steps inside it) and compute accounting,
on tiny random-weight pipelines, on CPU."""

import numpy as np
import pytest
import torch

from drift.config import SdeWindowSection
from drift.errors import ConfigError
from drift.models import load_model
from drift.sampling.rollout import condition_noise, conditioning_at, rollout_samples
from drift.sampling.window import sde_steps
from drift.scoring.embeddings import pixels
from drift.scoring.rewards import WeightedReward
from drift.training.checkpoints import list_checkpoints
from drift.training.trainer import UPDATE_STREAM, WINDOW_STREAM, Trainer, _rng
from tests.test_trainer import DRIFT_ON, PROMPTS, make_config

WINDOW = {"size": 2, "placement": "fixed", "start": 1}  # steps 1 and 2 of 4


def windowed_trainer(source, window=None, drift=None, **train):
    cfg = make_config(source, drift=drift, **train)
    if window is not None:
        cfg = cfg.with_overrides({"sampling.sde_window": window})
    model = load_model(cfg.model.source, **cfg.model.options.model_dump())
    return Trainer(cfg, model, WeightedReward.from_config(cfg.reward), pixels(), PROMPTS, PROMPTS[:2])


@pytest.fixture(params=["sd15", "sd3"])
def source(request, tiny_sd15_dir, tiny_sd3_dir):
    return {"sd15": tiny_sd15_dir, "sd3": tiny_sd3_dir}[request.param]


@pytest.mark.parametrize("size", [None, 4, 9])
def test_a_window_covering_every_step_is_todays_sampler_and_plan(tiny_sd3_dir, size):
    trainer = windowed_trainer(tiny_sd3_dir, {"size": size}, drift=DRIFT_ON)
    ro, mine = trainer.collect()
    s = trainer.cfg.sampling
    prompts, seeds = trainer.iteration_batch()
    today = rollout_samples(trainer.model, [p for p in prompts for _ in range(s.group_size)], ro.group_ids, seeds,
                            trainer.cfg.sampler(), prompt_noise=trainer.prompt_noise())
    assert torch.equal(ro.latents, today.latents) and torch.equal(ro.log_probs, today.log_probs)
    assert ro.trainable.all()
    # today's draw of the trained timesteps: round(T * fraction) of range(T)
    kept = torch.ones(len(seeds), dtype=torch.bool)
    rng = _rng(trainer.cfg.run.seed, 0, UPDATE_STREAM, 0)
    order = torch.as_tensor(rng.permutation(len(seeds)))
    expected = [sorted(rng.choice(4, size=2, replace=False).tolist()) for _ in range(0, len(seeds), 4)]
    plan = trainer.micro_batches(kept, ro.trainable, 0)
    assert [steps for _, steps in plan] == expected
    assert torch.equal(torch.cat([b for b, _ in plan]), order)


def test_outside_the_window_steps_are_deterministic_without_log_prob(source):
    trainer = windowed_trainer(source, WINDOW, drift=DRIFT_ON)
    ro, _ = trainer.collect()
    assert ro.trainable.tolist() == [False, True, True, False]
    schedule = trainer.model.schedule(ro.num_steps)
    s = trainer.cfg.sampling
    idx = torch.arange(len(ro.seeds))
    noise = condition_noise(ro.cond, ro.seeds)
    with torch.no_grad():
        for i in range(ro.num_steps):
            cond = conditioning_at(trainer.model, ro.cond, noise, schedule.tau(i), ro.prompt_noise)
            out = trainer.model.predict(ro.latents[:, i], schedule.model_time(i), cond, ro.uncond, s.guidance_scale)
            deterministic = schedule.step(i, out, ro.latents[:, i], 0.0).prev_sample
            if ro.trainable[i]:
                assert (ro.log_probs[:, i] != 0).all()
                assert not torch.allclose(ro.latents[:, i + 1], deterministic)
                # inside the window the stored step rescores to its log-probability
                lp = trainer.recompute_transition(ro, schedule, idx, i, noise).log_prob
                torch.testing.assert_close(lp, ro.log_probs[:, i], rtol=0, atol=1e-5)
            else:
                assert (ro.log_probs[:, i] == 0).all()
                torch.testing.assert_close(ro.latents[:, i + 1], deterministic, rtol=0, atol=1e-5)
    # every sample keeps its own initial noise
    assert len({tuple(x.flatten()[:8].tolist()) for x in ro.latents[:, 0]}) == len(ro.seeds)


def test_window_placement_is_a_function_of_seed_and_iteration():
    def starts(window, seed, iterations=range(12)):
        return [int(torch.nonzero(sde_steps(window, 10, it, _rng(seed, it, WINDOW_STREAM)))[0]) for it in iterations]

    rnd = SdeWindowSection(size=2, placement="random", start=1, max_start=5)
    assert starts(rnd, 7) == starts(rnd, 7)
    assert starts(rnd, 7) != starts(rnd, 8)
    assert set(starts(rnd, 7, range(200))) == {1, 2, 3, 4, 5}
    assert starts(SdeWindowSection(size=3, placement="fixed", start=4), 7) == [4] * 12
    sliding = SdeWindowSection(size=2, placement="sliding", start=2, max_start=4, slide_every=2)
    assert starts(sliding, 7, range(8)) == [2, 2, 3, 3, 4, 4, 2, 2]
    assert sde_steps(SdeWindowSection(size=3, placement="fixed", start=4), 10, 0, None).sum() == 3


def test_window_must_fit_the_steps(tiny_sd3_dir):
    with pytest.raises(ConfigError, match=r"sde_window\.start \(3\)"):
        make_config(tiny_sd3_dir).with_overrides({"sampling.sde_window": {"size": 2, "start": 3}})
    with pytest.raises(ConfigError, match=r"sde_window\.max_start \(3\)"):
        make_config(tiny_sd3_dir).with_overrides({"sampling.sde_window": {"size": 2, "max_start": 3}})


def test_first_update_with_a_window_has_unit_ratio_and_trains_only_window_steps(source):
    trainer = windowed_trainer(source, {"size": 2, "placement": "random"}, drift=DRIFT_ON, grad_accum=100,
                               timestep_fraction=1.0, iterations=1)
    window = trainer.sde_step_mask()
    plan = trainer.micro_batches(torch.ones(8, dtype=torch.bool), window, 0)
    assert all(window[steps].all() and len(steps) == 2 for _, steps in plan)
    metrics = trainer.step()
    assert metrics["ratio_max_abs_dev"] < 1e-5
    assert metrics["sde_steps"] == 2


def count_denoiser_passes(model):
    """Wrap the denoiser call: samples through it with and without gradients."""
    seen = {"grad": 0, "no_grad": 0}
    forward = model.forward

    def counting(denoiser, latents, *args, **kwargs):
        seen["grad" if torch.is_grad_enabled() else "no_grad"] += latents.shape[0]
        return forward(denoiser, latents, *args, **kwargs)

    model.forward = counting
    return seen


def test_pass_counts_are_exact(tiny_sd3_dir):
    # P * G = 8 samples, T = 4, CFG (2 passes a prediction), window of 2 trained steps, KL on,
    # subset keeps 3 of 4 per group: rollout 8 * 4 * 2 = 64; trained 6 * 2 * 2 = 24 forwards with
    # gradients, 24 backwards, 24 reference forwards.
    trainer = windowed_trainer(tiny_sd3_dir, WINDOW, drift=DRIFT_ON, kl_coef=0.01, trained_steps=2)
    seen = count_denoiser_passes(trainer.model)
    metrics = trainer.step()
    assert (metrics["compute/forward"], metrics["compute/backward"]) == (64 + 24 + 24, 24)
    assert metrics["compute/forward_equivalents"] == 112 + 2 * 24
    assert seen == {"grad": 24, "no_grad": 64 + 24}  # what really went through the denoiser
    trainer.step()
    assert metrics["compute/cum_forward"] == 112 and trainer.compute.forward == 224
    trainer.record_evaluation()  # 2 prompts x 2 samples x 4 steps x 2
    assert trainer.compute.eval_forward == 32


def test_resume_keeps_cumulative_counts(tiny_sd15_dir, tmp_path):
    full = windowed_trainer(tiny_sd15_dir, {"size": 2, "placement": "sliding"}, drift=DRIFT_ON, iterations=2)
    full.train()
    first = windowed_trainer(tiny_sd15_dir, {"size": 2, "placement": "sliding"}, drift=DRIFT_ON, iterations=2)
    first.train(checkpoint_dir=tmp_path, until=1)
    resumed = windowed_trainer(tiny_sd15_dir, {"size": 2, "placement": "sliding"}, drift=DRIFT_ON, iterations=2)
    resumed.load_checkpoint(list_checkpoints(tmp_path)[-1])
    assert resumed.compute.forward == first.compute.forward > 0
    resumed.train()
    assert (resumed.compute.forward, resumed.compute.backward) == (full.compute.forward, full.compute.backward)
    assert resumed.compute.seconds > first.compute.seconds
    for (n, a), (_, b) in zip(full.model.denoiser.state_dict().items(), resumed.model.denoiser.state_dict().items()):
        assert torch.equal(a, b), n


def test_efficiency_analysis_interpolates_where_the_target_is_first_reached():
    from drift.bench.efficiency import analyse

    def run(alignments, fpe_per_iteration):
        return [{"iteration": 5 * k, "alignment": a, "diversity": 0.1 - 0.01 * k, "vendi": 1.0,
                 "fpe": 5 * k * fpe_per_iteration, "seconds": k} for k, a in enumerate(alignments)]

    trajectories = {"grpo": {0: run([0, 2, 4], 100)}, "fast": {0: run([0, 3, 5, 3], 50)}, "slow": {0: run([0, 1], 50)}}
    rows = {r["method"]: r for r in analyse(trajectories, "grpo", 10)["table"]}
    assert rows["grpo"]["fpe_ratio"] == [1.0] and rows["grpo"]["iteration"] == [10.0]
    fast = rows["fast"]
    # 4 is reached between iterations 5 (3) and 10 (5): iteration 7.5, 375 fpe of grpo's 1000
    assert fast["iteration"] == [7.5] and fast["fpe"] == [375.0] and fast["fpe_ratio"] == [0.375]
    assert fast["fpe_per_iteration_ratio"] == [0.5] and fast["iteration_ratio"] == [0.75]
    assert fast["diversity"] == [pytest.approx(0.085)]
    assert np.isnan(rows["slow"]["fpe"][0]) and rows["slow"]["reached"] == 0

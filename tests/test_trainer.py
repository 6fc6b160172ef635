"""GRPO and DRIFT runs on tiny random-weight pipelines of each family (SD 1.5, SD 3, FLUX.1), on CPU."""

import pytest
import torch

from drift.config import parse_config
from drift.models import load_model
from drift.scoring.embeddings import pixels
from drift.scoring.rewards import WeightedReward
from drift.training.checkpoints import list_checkpoints
from drift.training.trainer import Trainer

PROMPTS = ["a red cat", "a blue dog", "a green bird"]

DRIFT_ON = {
    "subset": {"enabled": True, "mode": "window", "keep_ratio": 0.75},
    "prompt_noise": {"enabled": True, "scale": 0.5, "tau1": 0.2, "tau2": 0.9, "rescale": True, "psi": 0.5},
    "shaping": {"enabled": True, "mode": "dense", "weight": 1.0, "gate": True},
}


def make_config(source, lora=False, drift=None, **train):
    return parse_config({
        "run": {"seed": 3},
        "model": {"source": str(source), "height": 16, "width": 16},  # every tiny pipeline draws 16 x 16 images
        "data": {"prompts": "unused.csv"},
        "sampling": {"num_steps": 4, "noise_level": 0.7, "group_size": 4, "prompts_per_iteration": 2,
                     "guidance_scale": 2.0},
        "reward": [{"name": "jpeg_incompressibility", "weight": 1.0}],
        "train": {"iterations": 3, "lr": 1e-3, "micro_batch": 4, "timestep_fraction": 0.5, "clip_range": 0.2,
                  "lora": {"enabled": lora, "rank": 4, "alpha": 4}, **train},
        "drift": drift or {},
        "eval": {"every": 0, "num_prompts": 2, "samples_per_prompt": 2},
    })


def make_trainer(source, **kw):
    cfg = make_config(source, **kw)
    model = load_model(cfg.model.source, **cfg.model.options.model_dump())
    reward = WeightedReward.from_config(cfg.reward)
    return Trainer(cfg, model, reward, pixels(), PROMPTS, PROMPTS[:2])


@pytest.fixture(params=["sd15", "sd3", "flux"])
def source(request, tiny_sd15_dir, tiny_sd3_dir, tiny_flux_dir):
    return {"sd15": tiny_sd15_dir, "sd3": tiny_sd3_dir, "flux": tiny_flux_dir}[request.param]


@pytest.mark.parametrize("lora", [False, True])
@pytest.mark.parametrize("drift", [None, DRIFT_ON], ids=["grpo", "drift"])
def test_runs_complete_with_finite_metrics(source, lora, drift):
    trainer = make_trainer(source, lora=lora, drift=drift, kl_coef=0.01, ema_decay=0.9 if lora else 0.0)
    before = {n: p.detach().clone() for n, p in trainer.model.denoiser.named_parameters()}
    seen = []
    trajectory = trainer.train(callback=lambda m, it: seen.append((it, m)))
    assert trainer.iteration == 3
    train_metrics = [m for _, m in seen if "reward_mean" in m]
    assert len(train_metrics) == 3
    for m in train_metrics:
        for key in ("reward_mean", "reward_std", "diversity", "vendi", "kept_fraction", "kl", "clip_fraction",
                    "approx_kl", "ratio_mean", "ratio_max", "time_iteration"):
            assert key in m and torch.isfinite(torch.tensor(m[key])), key
    assert [t["iteration"] for t in trajectory] == [0, 3]
    if drift:
        assert train_metrics[0]["kept_fraction"] == pytest.approx(0.75)
        assert "prompt_noise_scale" in train_metrics[0]
    changed = {n for n, p in trainer.model.denoiser.named_parameters() if not torch.equal(p, before[n])}
    assert changed, "no parameter moved"
    if lora:
        assert all("lora" in n for n in changed), "gradient reached non-LoRA weights"


def test_first_update_after_rollout_has_unit_ratio(source):
    # One optimizer step per iteration (grad_accum covers all micro-batches): every ratio of the
    # first update is computed before any weight moves, with prompt noise and CFG on.
    trainer = make_trainer(source, drift=DRIFT_ON, grad_accum=100, timestep_fraction=1.0, iterations=1)
    metrics = trainer.step()
    assert metrics["ratio_max_abs_dev"] < 1e-5


@pytest.mark.parametrize("directions", ["isotropic", "principal"])
def test_rescoring_reproduces_rollout_log_probs_for_every_step(source, directions, tmp_path):
    corpus = tmp_path / "captions.csv"  # prompt noise confined to the directions these captions differ in
    corpus.write_text("prompt,split\n" + "".join(f"a {c} {a},train\n" for c in ("red", "blue", "green", "small")
                                                  for a in ("cat", "dog", "bird", "fish")))
    noise_cfg = {**DRIFT_ON["prompt_noise"], "directions": directions, "components": 3,
                 "corpus": {"name": "prompt_file", "args": {"path": str(corpus)}}}
    trainer = make_trainer(source, drift={**DRIFT_ON, "prompt_noise": noise_cfg})
    ro, _ = trainer.collect()
    from drift.sampling.rollout import condition_noise

    schedule = trainer.model.schedule(ro.num_steps)
    idx = torch.tensor([1, 4, 6])
    noise = condition_noise(ro.cond[idx], ro.seeds[idx], ro.prompt_noise.directions)
    if directions == "principal":  # the noise of all 8 samples spans the three directions
        everyone = condition_noise(ro.cond, ro.seeds, ro.prompt_noise.directions)
        assert torch.linalg.matrix_rank(everyone.embeds.flatten(1), atol=1e-4) == 3
    with torch.no_grad():
        for i in range(ro.num_steps):
            lp = trainer.recompute_transition(ro, schedule, idx, i, noise).log_prob
            torch.testing.assert_close(lp, ro.log_probs[idx, i], rtol=0, atol=1e-5)


@pytest.mark.parametrize("lora", [False, True])
def test_resume_gives_identical_weights(tiny_sd15_dir, tmp_path, lora):
    kw = dict(lora=lora, drift=DRIFT_ON, iterations=3, ema_decay=0.8)
    full = make_trainer(tiny_sd15_dir, **kw)
    full.train()

    first = make_trainer(tiny_sd15_dir, **{**kw, "iterations": 3})
    first.train(checkpoint_dir=tmp_path, until=2)
    ckpt = list_checkpoints(tmp_path)[-1]
    assert ckpt.name == "iter_000002"

    resumed = make_trainer(tiny_sd15_dir, **kw)
    resumed.load_checkpoint(ckpt)
    assert resumed.iteration == 2
    resumed.train()
    for (n, a), (_, b) in zip(full.model.denoiser.state_dict().items(), resumed.model.denoiser.state_dict().items()):
        assert torch.equal(a, b), n
    # the interrupted run also evaluated at its last iteration; start and end agree
    assert resumed.trajectory[0] == full.trajectory[0] and resumed.trajectory[-1] == full.trajectory[-1]


def test_a_dedicated_shaping_embedding_sets_the_potential_and_not_the_diversity(tiny_sd15_dir):
    from drift.method.advantages import drift_advantages

    trainer = make_trainer(tiny_sd15_dir, drift={"shaping": {"enabled": True, "weight": 2.0}})
    trainer.shaping_embed = lambda images: torch.ones(len(images), 4)  # every sample alike: no potential
    ro, _ = trainer.collect()
    batch = trainer.score_rollout(ro)
    assert torch.equal(batch.features, trainer.embed(ro.images))
    assert torch.equal(batch.shaping_features, torch.ones(len(ro.images), 4))
    plain, _ = drift_advantages(batch.rewards, batch.features, None, trainer.cfg.without_drift(), ro.num_steps)
    shaped, _ = drift_advantages(batch.rewards, batch.shaping_features, None, trainer.cfg, ro.num_steps)
    pixel_shaped, _ = drift_advantages(batch.rewards, batch.features, None, trainer.cfg, ro.num_steps)
    torch.testing.assert_close(shaped, plain)
    assert not torch.allclose(pixel_shaped, plain)

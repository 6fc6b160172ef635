"""FLUX.1 support on a tiny random-weight FluxPipeline with everything FLUX.1-dev has (T5 and CLIP
text encoders, guidance embeddings, dynamic shifting), checked against diffusers' FluxPipeline.
GRPO / DRIFT iterations with and without LoRA, the first update's unit ratio and the rescoring of
rollout log-probabilities run on it in tests/test_trainer.py (its ``source`` fixture)."""


import pytest
import torch

from drift.config import SamplerSettings, load_config
from drift.errors import ConfigError, ModelNotFoundError
from drift.models import load_model, load_pipeline, wrap_pipeline
from drift.models.flux import FluxModel
from drift.models.trained import reference_base
from drift.sampling.rollout import PromptNoise, condition_noise, conditioning_at, rollout, sample_generators
from drift.scoring.embeddings import pixels
from drift.scoring.rewards import WeightedReward
from drift.training.trainer import Trainer
from tests.conftest import ROOT, local_registry
from tests.test_trainer import DRIFT_ON, PROMPTS, make_config

SIZE = {"height": 16, "width": 16}
# Rollouts and FluxPipeline run the same float32 operations: measured differences are exactly 0.
ATOL = 1e-5


@pytest.fixture(scope="module")
def flux(tiny_flux_dir):
    model = load_model(str(tiny_flux_dir), **SIZE, guidance=2.0)
    model.pipe.set_progress_bar_config(disable=True)
    return model


def flux_config_lora():
    return load_config(ROOT / "configs" / "flux_dev_pickscore.yaml").train.lora


def test_loads_as_flux_with_packed_latents(flux, tiny_flux_dir):
    assert isinstance(flux, FluxModel) and flux.family == "flow"
    # 16 px / VAE factor 2 = 8 x 8 latent cells of 4 channels -> 4 x 4 patches of 16 channels
    assert flux.latent_shape == (16, 16)
    cond = flux.encode(["a red cat", "a dog"])
    assert cond.embeds.shape == (2, flux.max_sequence_length, 32) and cond.pooled.shape == (2, 32)
    assert flux.decode(torch.zeros(2, *flux.latent_shape)).shape == (2, 3, 16, 16)
    # FluxPipeline's default size when none is given: 128 latent cells
    assert load_model(str(tiny_flux_dir)).latent_shape == (64 * 64, 16)
    with pytest.raises(ConfigError, match="multiple of 4"):
        load_model(str(tiny_flux_dir), height=18, width=16)


@pytest.mark.parametrize("size", [16, 32])
def test_schedule_is_the_pipelines_dynamically_shifted_one(flux, tiny_flux_dir, size):
    model = load_model(str(tiny_flux_dir), height=size, width=size)
    model.pipe.set_progress_bar_config(disable=True)
    model.pipe(["a cat"], height=size, width=size, num_inference_steps=5, output_type="latent", max_sequence_length=8)
    schedule = model.schedule(5)
    torch.testing.assert_close(schedule.sigmas, model.pipe.scheduler.sigmas.cpu(), rtol=0, atol=0)
    torch.testing.assert_close(schedule.timesteps, model.pipe.scheduler.timesteps.cpu(), rtol=0, atol=0)
    # the shift grows with the image sequence length: 16 px -> 16 patches, 32 px -> 64
    if size == 32:
        assert (schedule.sigmas[1:-1] > flux.schedule(5).sigmas[1:-1]).all()


@pytest.mark.parametrize("guidance, cfg, negative", [(None, 1.0, None), (2.0, 3.0, "blurry")],
                         ids=["distilled-guidance", "true-cfg"])
def test_noise_free_rollout_equals_flux_pipeline(tiny_flux_dir, guidance, cfg, negative):
    model = load_model(str(tiny_flux_dir), **SIZE, guidance=guidance)
    model.pipe.set_progress_bar_config(disable=True)
    ro = rollout(model, ["a red cat", "a blue dog"], 2, torch.arange(4), 4, noise_level=0.0, guidance_scale=cfg,
                 negative_prompt=negative or "")
    steps = []
    kwargs = dict(height=16, width=16, num_inference_steps=4, true_cfg_scale=cfg, latents=ro.latents[:, 0],
                  max_sequence_length=model.max_sequence_length,
                  negative_prompt=None if negative is None else [negative] * 4,
                  **({} if guidance is None else {"guidance_scale": guidance}))
    final = model.pipe(ro.prompts, output_type="latent", **kwargs,
                       callback_on_step_end=lambda p, i, t, kw: steps.append(kw["latents"]) or {}).images
    torch.testing.assert_close(torch.stack(steps, 1), ro.latents[:, 1:], rtol=0, atol=ATOL)
    torch.testing.assert_close(final, ro.latents[:, -1], rtol=0, atol=ATOL)
    images = model.pipe(ro.prompts, output_type="pt", **kwargs).images
    torch.testing.assert_close(images, ro.images, rtol=0, atol=ATOL)
    # a sample's seed draws the pipeline's own starting noise (unpacked, then packed)
    kwargs.pop("latents")
    seeded = model.pipe(ro.prompts, output_type="latent", generator=sample_generators(ro.seeds, 0), **kwargs).images
    torch.testing.assert_close(seeded, ro.latents[:, -1], rtol=0, atol=ATOL)


def test_a_scheduler_with_use_flow_sigmas_gives_the_pipelines_schedule(tiny_flux_dir, flux):
    pipe = load_pipeline(str(tiny_flux_dir))
    pipe.scheduler.register_to_config(use_flow_sigmas=True)
    pipe.set_progress_bar_config(disable=True)
    model = wrap_pipeline(pipe, **SIZE)
    pipe(["a cat"], **SIZE, num_inference_steps=5, output_type="latent", max_sequence_length=8)
    schedule = model.schedule(5)
    torch.testing.assert_close(schedule.sigmas, pipe.scheduler.sigmas.cpu(), rtol=0, atol=0)
    torch.testing.assert_close(schedule.timesteps, pipe.scheduler.timesteps.cpu(), rtol=0, atol=0)
    assert not torch.allclose(schedule.sigmas, flux.schedule(5).sigmas)


def test_t5_length_is_a_model_option(tiny_flux_dir):
    model = load_model(str(tiny_flux_dir), **SIZE, max_sequence_length=8)
    assert model.encode(["a red cat"]).embeds.shape[1] == 8


def test_guidance_is_an_input_of_the_distilled_transformer(tiny_flux_dir, flux):
    default = load_model(str(tiny_flux_dir), **SIZE)
    x = torch.randn(2, *flux.latent_shape, generator=torch.Generator().manual_seed(0))
    cond = flux.encode(["a cat", "a dog"])
    t = flux.schedule(4).model_time(1)
    assert not torch.allclose(flux.predict(x, t, cond), default.predict(x, t, cond))


def test_prompt_noise_perturbs_t5_tokens_and_clip_pooled_vector(flux):
    cond = flux.encode(["a red cat", "a blue dog"])
    seeds = torch.tensor([5, 6])
    pn = PromptNoise(scale=0.5, tau1=0.2, tau2=0.9)
    noisy = conditioning_at(flux, cond, condition_noise(cond, seeds), 1.0, pn)
    assert not torch.allclose(noisy.embeds, cond.embeds) and not torch.allclose(noisy.pooled, cond.pooled)
    again = conditioning_at(flux, cond, condition_noise(cond, seeds), 1.0, pn)
    assert torch.equal(noisy.embeds, again.embeds) and torch.equal(noisy.pooled, again.pooled)


def _trainer(source, dtype=torch.float32, **train):
    cfg = make_config(source, lora=True, drift=DRIFT_ON, iterations=1, **train)
    cfg = cfg.with_overrides({"train.lora.target_modules": flux_config_lora().target_modules,
                              "model.guidance": 2.0, "sampling.negative_prompt": "blurry"})
    model = load_model(cfg.model.source, dtype=dtype, **cfg.model.options.model_dump())
    return Trainer(cfg, model, WeightedReward.from_config(cfg.reward), pixels(), PROMPTS, PROMPTS[:1])


def test_bf16_lora_on_attention_and_mlp_projections_keeps_fp32_adapters(tiny_flux_dir):
    trainer = _trainer(tiny_flux_dir, dtype=torch.bfloat16, gradient_checkpointing=True)
    denoiser = trainer.model.denoiser
    adapted = {n.rsplit(".lora_A", 1)[0] for n, _ in denoiser.named_parameters() if ".lora_A" in n}
    for target in flux_config_lora().target_modules:
        assert any(name.endswith(target) for name in adapted), f"peft found no {target}"
    assert any(n.startswith("single_transformer_blocks") and n.endswith("proj_mlp") for n in adapted)
    assert denoiser.is_gradient_checkpointing
    assert trainer.params and all(p.dtype == torch.float32 for p in trainer.params)
    assert all(p.dtype == torch.bfloat16 for n, p in denoiser.named_parameters() if "lora" not in n)
    metrics = trainer.step()
    assert all(torch.isfinite(torch.tensor(v)) for v in metrics.values())


def test_saved_model_reloads_with_equal_outputs_and_the_pyfunc_generates(tiny_flux_dir, tmp_path):
    trainer = _trainer(tiny_flux_dir)
    trainer.step()
    trainer.save_model(tmp_path / "model", reference_base(str(tiny_flux_dir)))
    options = trainer.cfg.model.options.model_dump()
    reloaded = load_model(str(tmp_path / "model"), base=str(tiny_flux_dir), **options)
    assert isinstance(reloaded, FluxModel) and reloaded.guidance == 2.0
    x = torch.randn(2, *reloaded.latent_shape, generator=torch.Generator().manual_seed(1))
    cond = reloaded.encode(["a red cat", "a dog"])
    t = reloaded.schedule(4).model_time(2)
    with torch.no_grad():
        torch.testing.assert_close(reloaded.predict(x, t, cond), trainer.model.predict(x, t, cond), rtol=1e-4,
                                   atol=1e-5)

    import mlflow
    import pandas as pd

    from mlops.model_registry import register_generator

    sampler = SamplerSettings(num_steps=2, noise_level=0.0, guidance_scale=2.0, negative_prompt="blurry",
                              model_options=options)
    with local_registry(tmp_path, "flux-test") as (_, client):
        version = register_generator("flux-gen", tmp_path / "model", sampler, {})
        out = mlflow.pyfunc.load_model(f"models:/flux-gen/{version}", model_config={"base_model": str(tiny_flux_dir)}
                                       ).predict(pd.DataFrame({"prompt": ["a red cat"], "seed": [3]}))
    assert len(out) == 1 and len(out["image_png_base64"][0]) > 50


def test_gated_model_message_says_licence_and_token(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError) as err:
        load_model("black-forest-labs/FLUX.1-dev")
    msg = str(err.value)
    assert "licence" in msg and "HF_TOKEN" in msg and "hf auth login" in msg and "model.source" in msg


def test_flux_config_validates():
    cfg = load_config(ROOT / "configs" / "flux_dev_pickscore.yaml")
    assert cfg.model.source == "black-forest-labs/FLUX.1-dev" and cfg.model.dtype == "bfloat16"
    assert cfg.model.guidance == 3.5 and cfg.sampling.guidance_scale == 1.0 and cfg.model.height == 512
    assert cfg.train.lora.enabled and cfg.train.gradient_checkpointing and cfg.reward[0].name == "pickscore"

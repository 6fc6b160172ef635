"""Qwen-Image, FLUX.2 (dev and klein) and Z-Image on tiny random-weight pipelines built offline
(drift.models.tiny), each checked against diffusers' own pipeline: the schedule, every step and the
decoded images of a noise-free rollout (float32, within 1e-5; measured: identical), the starting
noise a seed draws, the first update's unit ratio with prompt noise and guidance on, and the saved
model. The trainer's other paths run on these families as on FLUX.1 (tests/test_trainer.py)."""

from dataclasses import dataclass, field

import pytest
import torch

from drift.config import load_config
from drift.errors import ConfigError, ModelNotFoundError
from drift.models import load_model
from drift.models.flux2 import Flux2Model
from drift.models.qwen_image import QwenImageModel
from drift.models.tiny import (
    TINY_FLUX2,
    TINY_FLUX2_KLEIN,
    TINY_FLUX2_OUT_LAYERS,
    TINY_QWEN_IMAGE,
    TINY_Z_IMAGE,
    build_tiny,
)
from drift.models.trained import reference_base
from drift.models.z_image import ZImageModel
from drift.sampling.rollout import PromptNoise, condition_noise, conditioning_at, rollout, sample_generators
from drift.scoring.embeddings import pixels
from drift.scoring.rewards import WeightedReward
from drift.training.trainer import Trainer
from tests.conftest import ROOT
from tests.test_trainer import DRIFT_ON, PROMPTS, make_config

ATOL = 1e-5
SIZE = {"height": 16, "width": 16}


@dataclass
class Family:
    arch: dict
    adapter: type
    config: str  # the family's configuration in configs/ (its LoRA targets are trained here)
    options: dict = field(default_factory=dict)  # model options the tiny pipeline needs


# FLUX.2's text encoders here are 3 layers deep, the pipelines read layers 10-30; FLUX.2-dev's system
# prompt is 168 characters, one token each with the tiny byte-level tokenizer.
FLUX2_OPTIONS = {"text_encoder_out_layers": TINY_FLUX2_OUT_LAYERS}
FAMILIES = {
    "qwen_image": Family(TINY_QWEN_IMAGE, QwenImageModel, "qwen_image_pickscore.yaml"),
    "flux2": Family(TINY_FLUX2, Flux2Model, "flux2_klein_pickscore.yaml",
                    {**FLUX2_OPTIONS, "max_sequence_length": 256, "guidance": 2.5}),
    "flux2_klein": Family(TINY_FLUX2_KLEIN, Flux2Model, "flux2_klein_pickscore.yaml",
                          {**FLUX2_OPTIONS, "max_sequence_length": 64}),
    "z_image": Family(TINY_Z_IMAGE, ZImageModel, "z_image_turbo_pickscore.yaml", {"max_sequence_length": 64}),
}


@pytest.fixture(scope="session")
def family_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("families")
    return {name: build_tiny(f.arch, root / name) for name, f in FAMILIES.items()}


def load(family_dirs, name, **options):
    model = load_model(str(family_dirs[name]), **{**SIZE, **FAMILIES[name].options, **options})
    model.pipe.set_progress_bar_config(disable=True)
    return model


def pipeline_latents(model, x):
    """A rollout's starting latents in the form the family's pipeline takes them."""
    if isinstance(model, Flux2Model):  # the pipeline takes (B, 4C, H/2, W/2) and flattens it itself
        return x.transpose(1, 2).reshape(x.shape[0], -1, *model.token_grid)
    return x


def pipeline_kwargs(name, model, cfg, negative, options) -> dict:
    """The pipeline call that samples as a rollout of ``model`` with CFG ``cfg`` does; fresh lists
    each call (ZImagePipeline writes the templated prompts into the lists it is given)."""
    kwargs = {"height": 16, "width": 16, "num_inference_steps": 4, "max_sequence_length": model.max_sequence_length}
    if name == "qwen_image":
        return {**kwargs, "true_cfg_scale": cfg, "negative_prompt": None if cfg == 1 else [negative] * 4}
    if name == "flux2":
        return {**kwargs, "guidance_scale": options["guidance"], "text_encoder_out_layers": model.out_layers}
    if name == "flux2_klein":  # the pipeline's negative prompt is always ""
        return {**kwargs, "guidance_scale": cfg, "text_encoder_out_layers": model.out_layers}
    return {**kwargs, "guidance_scale": cfg - 1, "negative_prompt": [negative] * 4, **options}  # Z-Image: w - 1


@pytest.mark.parametrize("name, steps", [("qwen_image", 5), ("flux2", 5), ("flux2", 28), ("z_image", 5)])
def test_schedule_is_the_pipelines(family_dirs, name, steps):
    model = load(family_dirs, name)
    assert isinstance(model, FAMILIES[name].adapter) and model.family == "flow"
    model.pipe(prompt=["a cat"], **SIZE, num_inference_steps=steps, output_type="latent",
               max_sequence_length=model.max_sequence_length,
               **({"text_encoder_out_layers": model.out_layers} if name == "flux2" else {}))
    schedule = model.schedule(steps)
    torch.testing.assert_close(schedule.sigmas, model.pipe.scheduler.sigmas.cpu(), rtol=0, atol=0)
    torch.testing.assert_close(schedule.timesteps, model.pipe.scheduler.timesteps.cpu(), rtol=0, atol=0)


@pytest.mark.parametrize("name, cfg, negative, options", [
    ("qwen_image", 1.0, "", {}),
    ("qwen_image", 3.0, "blurry", {}),  # two passes of their own lengths, norm-rescaled
    ("flux2", 1.0, "", {"guidance": 2.5}),  # guidance-distilled: the guidance input
    ("flux2_klein", 1.0, "", {}),
    ("flux2_klein", 3.0, "", {}),
    ("z_image", 1.0, "", {}),
    ("z_image", 3.0, "blurry", {}),
    ("z_image", 3.0, "blurry", {"cfg_normalization": 0.9, "cfg_truncation": 0.3}),  # capped; unguided last step
], ids=["qwen-image", "qwen-image-cfg", "flux2-dev", "flux2-klein", "flux2-klein-cfg", "z-image", "z-image-cfg",
        "z-image-cfg-bounded"])
def test_noise_free_rollout_equals_the_pipeline(family_dirs, name, cfg, negative, options):
    model = load(family_dirs, name, **options)
    ro = rollout(model, ["a red cat", "a blue dog"], 2, torch.arange(4), 4, noise_level=0.0, guidance_scale=cfg,
                 negative_prompt=negative)

    def call(output_type, **more):
        return model.pipe(prompt=list(ro.prompts), output_type=output_type, **more,
                          **pipeline_kwargs(name, model, cfg, negative, options)).images

    steps = []
    call("latent", latents=pipeline_latents(model, ro.latents[:, 0]),
         callback_on_step_end=lambda pipe, i, t, kw: steps.append(kw["latents"]) or {})
    torch.testing.assert_close(torch.stack(steps, 1), ro.latents[:, 1:], rtol=0, atol=ATOL)
    images = call("pt", latents=pipeline_latents(model, ro.latents[:, 0]))
    torch.testing.assert_close(images, ro.images, rtol=0, atol=ATOL)
    # a sample's seed draws the pipeline's own starting noise
    seeded = call("pt", generator=sample_generators(ro.seeds, 0))
    torch.testing.assert_close(seeded, ro.images, rtol=0, atol=ATOL)


def family_trainer(family_dirs, name, dtype=torch.float32, **train):
    """A GRPO/DRIFT trainer of tests/test_trainer.py's tiny settings (prompt noise on, CFG 2) with
    LoRA on the family configuration's targets."""
    f = FAMILIES[name]
    cfg = make_config(family_dirs[name], lora=True, drift=DRIFT_ON, **train).with_overrides({
        "train.lora.target_modules": load_config(ROOT / "configs" / f.config).train.lora.target_modules,
        **{f"model.{k}": list(v) if isinstance(v, tuple) else v for k, v in f.options.items()},
    })
    model = load_model(cfg.model.source, dtype=dtype, **cfg.model.options.model_dump())
    return Trainer(cfg, model, WeightedReward.from_config(cfg.reward), pixels(), PROMPTS, PROMPTS[:1])


@pytest.fixture(scope="module", params=["qwen_image", "flux2", "flux2_klein", "z_image"])
def first_update(request, family_dirs):
    """A trainer after its first iteration, one optimizer step (grad_accum covers every micro-batch):
    every ratio of that update is computed before any weight moves."""
    trainer = family_trainer(family_dirs, request.param, grad_accum=100, timestep_fraction=1.0, iterations=1)
    return request.param, trainer, trainer.step()


def test_first_update_reproduces_the_rollout_log_probs(first_update):
    _, _, metrics = first_update
    assert metrics["ratio_max_abs_dev"] < 1e-5


def test_lora_adapts_every_kind_of_layer_the_configuration_names(first_update):
    name, trainer, _ = first_update
    name = name.removesuffix("_klein")
    adapted = {n.rsplit(".lora_A", 1)[0] for n, _ in trainer.model.denoiser.named_parameters() if ".lora_A" in n}
    targets = trainer.cfg.train.lora.target_modules
    expected = {"qwen_image": ["attn.to_q", "attn.add_v_proj", "attn.to_add_out", "img_mlp.net.2",
                               "txt_mlp.net.0.proj"],
                "flux2": ["transformer_blocks.0.attn.to_out.0", "transformer_blocks.0.ff_context.linear_out",
                          "single_transformer_blocks.0.attn.to_qkv_mlp_proj",
                          "single_transformer_blocks.0.attn.to_out"],
                "z_image": ["layers.0.attention.to_out.0", "noise_refiner.0.feed_forward.w3",
                            "context_refiner.0.attention.to_k"]}[name]
    for layer in expected:
        assert any(n == layer or n.endswith("." + layer) for n in adapted), f"{layer} not adapted by {targets}"
    assert not any("mod" in n or "embed" in n for n in adapted)  # modulation and embedders stay frozen


def test_saved_model_reloads_and_generates_the_same_images(first_update, tmp_path):
    name, trainer, _ = first_update
    trainer.save_model(tmp_path / "model", reference_base(trainer.cfg.model.source))
    reloaded = load_model(str(tmp_path / "model"), base=trainer.cfg.model.source,
                          **trainer.cfg.model.options.model_dump())
    assert type(reloaded) is type(trainer.model)
    sample = dict(prompts=PROMPTS[:2], group_size=2, seeds=torch.arange(4), num_steps=3, noise_level=0.0,
                  guidance_scale=2.0)
    with trainer.evaluation_weights():
        before = rollout(trainer.model, **sample).images
    # the saved adapters loaded on the base: the same function up to float rounding
    torch.testing.assert_close(rollout(reloaded, **sample).images, before, rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", list(FAMILIES))
def test_bf16_weights_train_fp32_adapters_with_checkpointing(family_dirs, name):
    trainer = family_trainer(family_dirs, name, dtype=torch.bfloat16, iterations=1, gradient_checkpointing=True)
    denoiser = trainer.model.denoiser
    assert denoiser.is_gradient_checkpointing and trainer.params
    assert all(p.dtype == torch.float32 for p in trainer.params)
    assert all(p.dtype == torch.bfloat16 for n, p in denoiser.named_parameters() if "lora" not in n)
    metrics = trainer.step()
    assert all(torch.isfinite(torch.tensor(v)) for v in metrics.values())


def test_prompt_noise_acts_where_each_family_keeps_its_prompt(family_dirs):
    pn = PromptNoise(scale=0.5, tau1=0.2, tau2=0.9, rescale=True, psi=0.5)
    seeds = torch.tensor([5, 6])
    prompts = ["a red cat", "a dog"]  # of different lengths
    # Qwen-Image: each prompt's own tokens; its padding stays as encoded (zeros) and masked
    qwen = load(family_dirs, "qwen_image")
    cond = qwen.encode(prompts)
    noisy = conditioning_at(qwen, cond, condition_noise(cond, seeds), 1.0, pn)
    pad = ~cond.mask.bool()
    assert pad.any() and torch.equal(noisy.embeds[pad], cond.embeds[pad]) and torch.equal(noisy.mask, cond.mask)
    assert not torch.allclose(noisy.embeds[~pad], cond.embeds[~pad])
    # Z-Image: per-prompt sequences of their own lengths, each perturbed
    z_image = load(family_dirs, "z_image")
    cond = z_image.encode(prompts)
    noisy = conditioning_at(z_image, cond, condition_noise(cond, seeds), 1.0, pn)
    assert cond.embeds[0].shape[0] != cond.embeds[1].shape[0]
    assert all(n.shape == c.shape and not torch.allclose(n, c) for n, c in zip(noisy.embeds, cond.embeds))
    # FLUX.2: every token of the stacked layers, padding included (it takes part in attention)
    flux2 = load(family_dirs, "flux2_klein")
    cond = flux2.encode(prompts)
    noisy = conditioning_at(flux2, cond, condition_noise(cond, seeds), 1.0, pn)
    assert cond.embeds.shape == (2, 64, 3 * 16) and (noisy.embeds != cond.embeds).all(dim=-1).all()


def test_options_the_pipelines_refuse_are_refused_with_the_field_to_set(family_dirs):
    with pytest.raises(ConfigError, match="model.text_encoder_out_layers"):
        load_model(str(family_dirs["flux2"]), **SIZE)  # the pipeline's layers 10, 20, 30 of 3
    with pytest.raises(ConfigError, match="model.max_sequence_length"):
        load(family_dirs, "qwen_image", max_sequence_length=2048)
    with pytest.raises(ConfigError, match="multiple of 4"):
        load(family_dirs, "z_image", height=18)
    distilled = load(family_dirs, "flux2_klein")
    distilled.pipe.register_to_config(is_distilled=True)
    with pytest.raises(ConfigError, match="sampling.guidance_scale"):
        rollout(distilled, ["a cat"], 1, torch.arange(1), 2, noise_level=0.0, guidance_scale=2.0)


@pytest.mark.parametrize("source, gated", [("Qwen/Qwen-Image", False), ("black-forest-labs/FLUX.2-dev", True)])
def test_missing_weights_name_the_download_and_the_licence(monkeypatch, source, gated):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError) as err:
        load_model(source)
    msg = str(err.value)
    assert f"hf download {source}" in msg and "model.source" in msg
    assert ("Apache 2.0" in msg) != gated and ("HF_TOKEN" in msg) == gated


@pytest.mark.parametrize("config, source", [("qwen_image_pickscore.yaml", "Qwen/Qwen-Image"),
                                            ("flux2_klein_pickscore.yaml", "black-forest-labs/FLUX.2-klein-base-4B"),
                                            ("z_image_turbo_pickscore.yaml", "Tongyi-MAI/Z-Image-Turbo")])
def test_family_configs_validate(config, source):
    cfg = load_config(ROOT / "configs" / config)
    assert cfg.model.source == source and cfg.model.dtype == "bfloat16" and cfg.model.height % 16 == 0
    assert cfg.train.lora.enabled and cfg.train.gradient_checkpointing and cfg.reward[0].name == "pickscore"
    assert (ROOT / cfg.data.prompts).is_file()


@pytest.mark.parametrize("name, overrides", [
    ("qwen_image", []),
    ("flux2", ["sampling.guidance_scale=1", "model.guidance=4"]),  # FLUX.2-dev: guidance-distilled
    ("flux2_klein", []),
    ("z_image", []),
])
def test_drift_train_runs_two_iterations_of_each_family_from_its_configuration(family_dirs, tmp_path, name,
                                                                                overrides):
    from drift import cli

    f = FAMILIES[name]
    options = [f"model.{k}={list(v) if isinstance(v, tuple) else v}" for k, v in f.options.items()]
    tiny = [f"model.source={family_dirs[name]}", "model.dtype=float32", "run.device=cpu", "model.height=16",
            "model.width=16", "reward=[{name: jpeg_compressibility}]", "embedding={name: pixels}",
            "train.iterations=2", "sampling.group_size=4", "sampling.prompts_per_iteration=2", "train.micro_batch=4",
            "train.grad_accum=1", "eval.every=0", "eval.num_prompts=2", "eval.samples_per_prompt=2",
            "checkpoint.every=0", f"run.output_dir={tmp_path}"]
    argv = ["train", "-c", str(ROOT / "configs" / f.config)]
    for pair in tiny + options + overrides:
        argv += ["--set", pair]
    assert cli.main(argv) == 0
    run = next(tmp_path.iterdir())
    assert len((run / "metrics.jsonl").read_text().splitlines()) >= 2
    assert isinstance(load_model(str(run / "model"), base=str(family_dirs[name]), **{**SIZE, **f.options}), f.adapter)

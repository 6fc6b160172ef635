"""Real-model code paths on random weights: SD 1.5 / SD 3 architecture pipelines with LoRA, trained
against CLIP-score and aesthetic rewards built from open_clip configs (no download), and the clear
failures for missing weights."""

import time

import pytest
import torch

from drift.config import load_config
from drift.errors import ModelNotFoundError
from drift.registry import EMBEDDINGS, REWARDS
from tests.conftest import ROOT
from tests.test_trainer import DRIFT_ON, make_config

CLIP = {"arch": "ViT-S-32", "pretrained": None}


@pytest.fixture(scope="module")
def rewards():
    from drift.config import RewardTerm
    from drift.scoring.rewards import WeightedReward

    return WeightedReward.from_config([RewardTerm(name="clip_score", weight=1.0, args=CLIP),
                                       RewardTerm(name="aesthetic", weight=0.1, args={**CLIP, "random_head": True})])


def test_rewards_are_batched_finite_and_deterministic(rewards):
    images = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    prompts = ["a cat", "a dog", "a bird"]
    total, parts = rewards(images, prompts)
    assert total.shape == (3,) and set(parts) == {"clip_score", "aesthetic"}
    assert torch.isfinite(total).all()
    again, _ = rewards(images.clone(), prompts)
    assert torch.equal(total, again)
    assert not torch.equal(total, rewards(images.flip(0), prompts)[0])


@pytest.mark.parametrize("which", ["sd15", "sd3"])
def test_lora_rollout_and_update_with_clip_rewards(which, tiny_sd15_dir, tiny_sd3_dir, rewards):
    from drift.models import load_model
    from drift.training.trainer import Trainer

    source = {"sd15": tiny_sd15_dir, "sd3": tiny_sd3_dir}[which]
    cfg = make_config(source, lora=True, drift=DRIFT_ON, iterations=2, kl_coef=0.01)
    model = load_model(str(source))
    embed = EMBEDDINGS.build("clip_image", **CLIP)
    trainer = Trainer(cfg, model, rewards, embed, ["a red cat", "a blue dog"], ["a red cat"])
    frozen = {n: p.detach().clone() for n, p in model.denoiser.named_parameters() if "lora" not in n}
    lora_before = {n: p.detach().clone() for n, p in model.denoiser.named_parameters() if "lora" in n}
    ro, _ = trainer.collect()
    assert ro.images.shape == (8, 3, 16, 16) and ro.log_probs.shape == (8, 4)
    assert torch.isfinite(ro.latents).all() and torch.isfinite(ro.log_probs).all()
    for _ in range(2):
        metrics = trainer.step()
        assert all(torch.isfinite(torch.tensor(v)) for v in metrics.values())
    assert all(torch.equal(p, frozen[n]) for n, p in model.denoiser.named_parameters() if "lora" not in n)
    assert any(not torch.equal(p, lora_before[n]) for n, p in model.denoiser.named_parameters() if "lora" in n)
    assert embed(ro.images).shape[0] == 8


def test_dinov2_embedding_from_config():
    embed = EMBEDDINGS.build("dinov2", random_config={"hidden_size": 32, "num_hidden_layers": 1,
                                                      "num_attention_heads": 2, "intermediate_size": 64,
                                                      "image_size": 28, "patch_size": 14})
    assert embed(torch.rand(2, 3, 16, 16)).shape == (2, 32)


@pytest.mark.parametrize("name, args", [
    ("clip_score", {"arch": "ViT-B-32", "pretrained": "laion2b_s34b_b79k"}),
    ("pickscore", {}),
    ("aesthetic", {"arch": "ViT-S-32", "pretrained": None, "head_checkpoint": "/nowhere/head.pth"}),
])
def test_missing_reward_weights_fail_fast_and_say_what_to_do(monkeypatch, name, args):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(ModelNotFoundError) as err:
        REWARDS.build(name, **args)
    assert time.perf_counter() - start < 60
    assert "could not be loaded" in str(err.value) or "not found" in str(err.value)


@pytest.mark.parametrize("path", ["configs/sd15_pickscore.yaml", "configs/sd35m_pickscore.yaml"])
def test_real_model_configs_validate(path):
    cfg = load_config(ROOT / path)
    assert cfg.train.lora.enabled and cfg.model.dtype == "bfloat16" and cfg.sampling.guidance_scale > 1
    assert cfg.reward[0].name == "pickscore" and (ROOT / cfg.data.prompts).is_file()


def test_mixed_precision_lora_trains_float32_adapters(tiny_sd15_dir):
    from drift.models import load_model
    from drift.scoring.embeddings import pixels
    from drift.scoring.rewards import WeightedReward
    from drift.training.trainer import Trainer

    cfg = make_config(tiny_sd15_dir, lora=True, iterations=1, gradient_checkpointing=True)
    model = load_model(str(tiny_sd15_dir), dtype=torch.bfloat16)
    trainer = Trainer(cfg, model, WeightedReward.from_config(cfg.reward), pixels(), ["a red cat"], ["a red cat"])
    assert all(p.dtype == torch.float32 for p in trainer.params)
    assert all(p.dtype == torch.bfloat16 for n, p in model.denoiser.named_parameters() if "lora" not in n)
    ro, _ = trainer.collect()
    assert ro.log_probs.dtype == torch.float32 and ro.latents.dtype == torch.float32
    metrics = trainer.step()
    assert torch.isfinite(torch.tensor(metrics["loss"]))

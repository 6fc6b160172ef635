"""Bytes a LoRA run stores, per model of the shipped LoRA configs: the whole pipeline (what runs stored
before adapters-only artifacts) against the adapters, and what checkpoints hold. Parameter counts of
the published architectures (configs/gpu/*.json; SD 1.5's published UNet, CLIP-L and VAE), built on
the meta device, so nothing is allocated. Usage: PYTHONPATH=. python scripts/artifact_bytes.py"""

import tempfile

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from peft import LoraConfig
from transformers import CLIPTextConfig, CLIPTextModel

from drift.bench.gpu import load_spec
from drift.config import load_config
from drift.models.tiny import random_pipeline


def count(module) -> int:
    return sum(p.numel() for p in module.parameters())


def lora_count(denoiser, cfg) -> int:
    lora = cfg.train.lora
    denoiser.add_adapter(LoraConfig(r=lora.rank, lora_alpha=lora.alpha, target_modules=lora.target_modules))
    return sum(p.numel() for n, p in denoiser.named_parameters() if "lora" in n)


def sd15() -> tuple[int, int, int, object]:
    with torch.device("meta"):
        unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=768, attention_head_dim=8,
                                    layers_per_block=2, block_out_channels=(320, 640, 1280, 1280))
        vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
                            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
        clip = CLIPTextModel(CLIPTextConfig(vocab_size=49408, hidden_size=768, intermediate_size=3072,
                                            num_hidden_layers=12, num_attention_heads=12,
                                            max_position_embeddings=77))
    cfg = load_config("configs/sd15_pickscore.yaml")
    return count(unet), count(clip) + count(vae), lora_count(unet, cfg), cfg


def published(key: str) -> tuple[int, int, int, object]:
    spec = load_spec(key)
    with tempfile.TemporaryDirectory() as tokenizers:
        pipe = random_pipeline(spec["scales"]["full"]["architecture"], tokenizers, "meta", torch.bfloat16)
    frozen = sum(count(getattr(pipe, n)) for n in ("text_encoder", "text_encoder_2", "text_encoder_3", "vae")
                 if getattr(pipe, n, None) is not None)
    cfg = load_config(spec["run_config"])
    return count(pipe.transformer), frozen, lora_count(pipe.transformer, cfg), cfg


def main() -> None:
    print("| model (LoRA params) | whole pipeline, bf16 | adapters, fp32 | checkpoints kept |")
    print("|---|---|---|---|")
    for title, counts in (("SD 1.5", sd15()), ("SD 3.5 Medium", published("sd35m")),
                          ("FLUX.1-dev", published("flux-dev"))):
        denoiser, frozen, lora, cfg = counts
        whole, adapters = 2 * (denoiser + frozen), 4 * lora
        copies = 1 + 2 + (cfg.train.ema_decay > 0)  # adapters, AdamW's two moments, EMA
        kept = cfg.checkpoint.keep_last or 1
        print(f"| {title} ({lora / 1e6:.1f}M) | {whole / 1e9:.2f} GB | {adapters / 1e6:.1f} MB | "
              f"{kept} x {copies * adapters / 1e6:.0f} MB |")


if __name__ == "__main__":
    main()

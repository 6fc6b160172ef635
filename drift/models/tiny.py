"""Random-weight miniature pipelines of the real architectures (SD 1.5 and SD 3 class).

Built from configs with no download, saved with ``save_pretrained``, and opened again through
``drift.models.load_model`` exactly like a hub model: tests and smoke runs exercise the real
loading, encoding, denoising and decoding code on CPU in seconds.
"""

from __future__ import annotations

import json
import string
from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    FlowMatchEulerDiscreteScheduler,
    SD3Transformer2DModel,
    StableDiffusion3Pipeline,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

TEXT_DIM = 32
MAX_TOKENS = 16


def tiny_clip_tokenizer(directory: Path) -> CLIPTokenizer:
    """A character-level CLIP BPE tokenizer (no merges) over lowercase letters and digits."""
    directory.mkdir(parents=True, exist_ok=True)
    chars = string.ascii_lowercase + string.digits
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1, "!": 2}
    for c in chars:
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    (directory / "vocab.json").write_text(json.dumps(vocab))
    (directory / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(str(directory / "vocab.json"), str(directory / "merges.txt"), model_max_length=MAX_TOKENS,
                         pad_token="!")


def _clip_config(tokenizer) -> CLIPTextConfig:
    return CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=TEXT_DIM, intermediate_size=64, num_hidden_layers=2,
                          num_attention_heads=4, max_position_embeddings=MAX_TOKENS, projection_dim=TEXT_DIM,
                          bos_token_id=0, eos_token_id=1, pad_token_id=2)


def _tiny_vae() -> AutoencoderKL:
    # Two blocks: 16 x 16 RGB images <-> 8 x 8 x 4 latents.
    return AutoencoderKL(in_channels=3, out_channels=3, block_out_channels=(8, 16), layers_per_block=1,
                         down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                         latent_channels=4, norm_num_groups=4, sample_size=16)


def build_tiny_sd15(directory: str | Path, seed: int = 0) -> Path:
    """An SD 1.5-architecture pipeline: UNet2DConditionModel, AutoencoderKL, CLIP text encoder, DDIM."""
    directory = Path(directory)
    torch.manual_seed(seed)
    tokenizer = tiny_clip_tokenizer(directory / "_tokenizer_src")
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(16, 32), layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=TEXT_DIM, attention_head_dim=8, norm_num_groups=8,
    )
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    pipe = StableDiffusionPipeline(vae=_tiny_vae(), text_encoder=CLIPTextModel(_clip_config(tokenizer)),
                                   tokenizer=tokenizer, unet=unet, scheduler=scheduler, safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(directory)
    return directory


def build_tiny_sd3(directory: str | Path, seed: int = 0) -> Path:
    """An SD 3-architecture pipeline: SD3Transformer2DModel, AutoencoderKL, two CLIP text encoders
    with projection (no T5, which the SD 3 pipeline allows), FlowMatchEulerDiscreteScheduler."""
    directory = Path(directory)
    torch.manual_seed(seed)
    tokenizer = tiny_clip_tokenizer(directory / "_tokenizer_src")
    transformer = SD3Transformer2DModel(
        sample_size=8, patch_size=1, in_channels=4, out_channels=4, num_layers=1, attention_head_dim=8,
        num_attention_heads=4, caption_projection_dim=32, joint_attention_dim=TEXT_DIM, pooled_projection_dim=2 * TEXT_DIM,
    )
    vae = _tiny_vae()
    vae.register_to_config(shift_factor=0.0609, scaling_factor=1.5035)
    pipe = StableDiffusion3Pipeline(
        transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), vae=vae,
        text_encoder=CLIPTextModelWithProjection(_clip_config(tokenizer)), tokenizer=tokenizer,
        text_encoder_2=CLIPTextModelWithProjection(_clip_config(tokenizer)), tokenizer_2=tokenizer,
        text_encoder_3=None, tokenizer_3=None,
    )
    pipe.save_pretrained(directory)
    return directory

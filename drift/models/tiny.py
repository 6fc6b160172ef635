"""Random-weight miniature pipelines of the real architectures (SD 1.5, SD 3 and FLUX.1 class).

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
    FluxPipeline,
    FluxTransformer2DModel,
    SD3Transformer2DModel,
    StableDiffusion3Pipeline,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
    T5Config,
    T5EncoderModel,
    T5Tokenizer,
)

TEXT_DIM = 32
MAX_TOKENS = 16
MAX_T5_TOKENS = 32


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


def tiny_t5_tokenizer() -> T5Tokenizer:
    """A character-level T5 (Unigram) tokenizer over lowercase letters and digits: <pad> 0, </s> 1,
    <unk> 2, the word boundary, then one piece per character."""
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    pieces += [(c, -3.0) for c in string.ascii_lowercase + string.digits]
    return T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=MAX_T5_TOKENS)


def _clip_config(tokenizer) -> CLIPTextConfig:
    return CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=TEXT_DIM, intermediate_size=64, num_hidden_layers=2,
                          num_attention_heads=4, max_position_embeddings=MAX_TOKENS, projection_dim=TEXT_DIM,
                          bos_token_id=0, eos_token_id=1, pad_token_id=2)


def _tiny_vae(**kwargs) -> AutoencoderKL:
    # Two blocks: 16 x 16 RGB images <-> 8 x 8 x 4 latents.
    return AutoencoderKL(in_channels=3, out_channels=3, block_out_channels=(8, 16), layers_per_block=1,
                         down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                         latent_channels=4, norm_num_groups=4, sample_size=16, **kwargs)


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
        num_attention_heads=4, caption_projection_dim=32, joint_attention_dim=TEXT_DIM,
        pooled_projection_dim=2 * TEXT_DIM,
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


def build_tiny_flux(directory: str | Path, seed: int = 0) -> Path:
    """A FLUX.1-dev-architecture pipeline: FluxTransformer2DModel with guidance embeddings and
    rotary position ids, a CLIP text encoder (pooled vector) and a T5 encoder (token embeddings,
    gated-GELU as T5 v1.1), an AutoencoderKL without quant convs and with FLUX's scaling and shift
    factors, and FLUX.1-dev's scheduler (dynamic shifting). Its default size is FluxPipeline's
    (128 latent cells, 256 px here): pass height / width to ``load_model`` for fast tests."""
    directory = Path(directory)
    torch.manual_seed(seed)
    tokenizer = tiny_clip_tokenizer(directory / "_tokenizer_src")
    t5_tokenizer = tiny_t5_tokenizer()
    t5 = T5EncoderModel(T5Config(vocab_size=len(t5_tokenizer), d_model=TEXT_DIM, d_kv=8, d_ff=64, num_layers=2,
                                 num_heads=4, relative_attention_num_buckets=8, feed_forward_proj="gated-gelu",
                                 pad_token_id=0, eos_token_id=1, decoder_start_token_id=0))
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=8, num_attention_heads=4,
        joint_attention_dim=TEXT_DIM, pooled_projection_dim=TEXT_DIM, guidance_embeds=True, axes_dims_rope=(2, 2, 4),
    )
    vae = _tiny_vae(use_quant_conv=False, use_post_quant_conv=False)
    vae.register_to_config(shift_factor=0.1159, scaling_factor=0.3611)
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True, base_image_seq_len=256,
                                                max_image_seq_len=4096, base_shift=0.5, max_shift=1.15)
    pipe = FluxPipeline(scheduler=scheduler, vae=vae, text_encoder=CLIPTextModel(_clip_config(tokenizer)),
                        tokenizer=tokenizer, text_encoder_2=t5, tokenizer_2=t5_tokenizer, transformer=transformer)
    pipe.save_pretrained(directory)
    return directory

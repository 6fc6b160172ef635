"""Random-weight pipelines of the real architectures (SD 1.5, SD 3, FLUX.1, Qwen-Image, FLUX.2 and
FLUX.2 [klein], Z-Image).

Miniature ones (``build_tiny_*``) are built from configs with no download, saved with
``save_pretrained``, and opened again through ``drift.models.load_model`` exactly like a hub
model: tests and smoke runs exercise the real loading, encoding, denoising and decoding code on
CPU in seconds. ``random_pipeline`` builds a pipeline of any of the transformer families at any size
from an architecture specification (the components' configs, as in a hub repository), initialised
directly on a device and in a dtype: the GPU benchmark builds SD 3.5 Medium and FLUX.1-dev at
full size this way (configs/gpu/).

Tokenizers need no files from a hub: CLIP's and T5's are character-level over lowercase letters
and digits, the chat models' (Qwen2.5-VL, Mistral Small 3.1, Qwen3) byte-level BPE without merges
(one token per byte) with their special tokens and a chat template of the same layout as the real
one for the messages the pipelines send. The text encoders' vocabulary fields (size, special token
ids) follow the tokenizers, whatever a specification says, so that a published text-encoder config
can be used as it is.
"""

from __future__ import annotations

import json
import string
from contextlib import contextmanager
from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    AutoencoderKLFlux2,
    AutoencoderKLQwenImage,
    DDIMScheduler,
    FlowMatchEulerDiscreteScheduler,
    Flux2KleinPipeline,
    Flux2Pipeline,
    Flux2Transformer2DModel,
    FluxPipeline,
    FluxTransformer2DModel,
    QwenImagePipeline,
    QwenImageTransformer2DModel,
    SD3Transformer2DModel,
    StableDiffusion3Pipeline,
    StableDiffusionPipeline,
    UNet2DConditionModel,
    ZImagePipeline,
    ZImageTransformer2DModel,
)
from tokenizers import pre_tokenizers
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
    Mistral3Config,
    Mistral3ForConditionalGeneration,
    PixtralImageProcessor,
    PixtralProcessor,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2Tokenizer,
    Qwen3Config,
    Qwen3ForCausalLM,
    Qwen3Model,
    T5Config,
    T5EncoderModel,
    T5Tokenizer,
)

TEXT_DIM = 32
MAX_TOKENS = 16
MAX_T5_TOKENS = 32


def tiny_clip_tokenizer(directory: Path, max_length: int = MAX_TOKENS) -> CLIPTokenizer:
    """A character-level CLIP BPE tokenizer (no merges) over lowercase letters and digits."""
    directory.mkdir(parents=True, exist_ok=True)
    chars = string.ascii_lowercase + string.digits
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1, "!": 2}
    for c in chars:
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    (directory / "vocab.json").write_text(json.dumps(vocab))
    (directory / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(str(directory / "vocab.json"), str(directory / "merges.txt"), model_max_length=max_length,
                         pad_token="!")


def tiny_t5_tokenizer(max_length: int = MAX_T5_TOKENS) -> T5Tokenizer:
    """A character-level T5 (Unigram) tokenizer over lowercase letters and digits: <pad> 0, </s> 1,
    <unk> 2, the word boundary, then one piece per character."""
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    pieces += [(c, -3.0) for c in string.ascii_lowercase + string.digits]
    return T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=max_length)


# Chat templates of the real tokenizers' layout for what the pipelines send: Qwen3's (user turn, then
# the assistant's turn opened, with an empty thinking block where thinking is off) and Mistral Small
# 3.1's (system prompt and user turn, each given as text parts).
QWEN3_CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and not enable_thinking %}<think>\n\n</think>\n\n{% endif %}{% endif %}"
)
MISTRAL_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{% set text = m['content'][0]['text'] %}"
    "{% if m['role'] == 'system' %}[SYSTEM_PROMPT]{{ text }}[/SYSTEM_PROMPT]"
    "{% else %}[INST]{{ text }}[/INST]{% endif %}{% endfor %}"
)


def tiny_byte_tokenizer(special_tokens: dict, chat_template: str | None = None) -> Qwen2Tokenizer:
    """A byte-level BPE tokenizer without merges (one token per byte), Qwen2's class, with
    ``special_tokens`` (``add_special_tokens``' argument) after the 256 bytes."""
    vocab = {c: i for i, c in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=[])
    tokenizer.add_special_tokens(special_tokens)
    tokenizer.chat_template = chat_template
    return tokenizer


def tiny_qwen_tokenizer() -> Qwen2Tokenizer:
    """Qwen2.5-VL's and Qwen3's special tokens and Qwen3's chat template."""
    return tiny_byte_tokenizer({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]}, QWEN3_CHAT_TEMPLATE)


def tiny_mistral_processor() -> PixtralProcessor:
    """FLUX.2-dev's tokenizer component: a Pixtral processor (Mistral Small 3.1's) with its special tokens
    and chat template."""
    tokenizer = tiny_byte_tokenizer({"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>",
                                     "additional_special_tokens": ["[IMG]", "[IMG_BREAK]", "[IMG_END]", "[INST]",
                                                                   "[/INST]", "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]"]})
    return PixtralProcessor(image_processor=PixtralImageProcessor(), tokenizer=tokenizer,
                            chat_template=MISTRAL_CHAT_TEMPLATE)


def _depth(layers: int | None, key: str) -> dict:
    return {} if layers is None else {key: layers}


def clip_text_encoder(tokenizer, arch: dict, with_projection: bool, layers: int | None = None) -> CLIPTextModel:
    """A CLIP text encoder of the architecture ``arch`` (a CLIPTextConfig's fields), ``layers`` deep
    if given, over the vocabulary of ``tokenizer`` (``tiny_clip_tokenizer``)."""
    config = CLIPTextConfig(**{**arch, **_depth(layers, "num_hidden_layers"), "vocab_size": len(tokenizer),
                               "bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 2})
    return (CLIPTextModelWithProjection if with_projection else CLIPTextModel)(config)


def t5_encoder(tokenizer, arch: dict, layers: int | None = None) -> T5EncoderModel:
    """A T5 encoder of the architecture ``arch`` (a T5Config's fields), ``layers`` deep if given,
    over the vocabulary of ``tokenizer`` (``tiny_t5_tokenizer``)."""
    return T5EncoderModel(T5Config(**{**arch, **_depth(layers, "num_layers"), "vocab_size": len(tokenizer),
                                      "pad_token_id": 0, "eos_token_id": 1, "decoder_start_token_id": 0}))


def _vocabulary(tokenizer) -> dict:
    """A chat model's vocabulary fields from its tokenizer."""
    return {"vocab_size": len(tokenizer), "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id}


def qwen2_5_vl_encoder(tokenizer, arch: dict, layers: int | None = None) -> Qwen2_5_VLForConditionalGeneration:
    """Qwen-Image's text encoder: a Qwen2.5-VL of the architecture ``arch`` (Qwen2_5_VLConfig's
    ``text_config`` and ``vision_config``), its language model ``layers`` deep if given."""
    text = {**arch["text_config"], **_depth(layers, "num_hidden_layers"), **_vocabulary(tokenizer)}
    return Qwen2_5_VLForConditionalGeneration(Qwen2_5_VLConfig(text_config=text, vision_config=arch["vision_config"]))


def mistral3_encoder(processor, arch: dict, layers: int | None = None) -> Mistral3ForConditionalGeneration:
    """FLUX.2-dev's text encoder: a Mistral 3 (Mistral Small 3.1) of the architecture ``arch``
    (Mistral3Config's ``text_config`` and ``vision_config``), its language model ``layers`` deep if given."""
    tokenizer = processor.tokenizer
    text = {**arch["text_config"], **_depth(layers, "num_hidden_layers"), **_vocabulary(tokenizer)}
    return Mistral3ForConditionalGeneration(Mistral3Config(text_config=text, vision_config=arch["vision_config"],
                                                           image_token_index=tokenizer.convert_tokens_to_ids("[IMG]")))


def qwen3_encoder(tokenizer, arch: dict, layers: int | None = None, causal_lm: bool = False):
    """A Qwen3 of the architecture ``arch`` (Qwen3Config's fields), ``layers`` deep if given: the bare
    model (Z-Image's text encoder) or with its language-model head (FLUX.2 [klein]'s)."""
    config = Qwen3Config(**{**arch, **_depth(layers, "num_hidden_layers"), **_vocabulary(tokenizer)})
    return (Qwen3ForCausalLM if causal_lm else Qwen3Model)(config)


@contextmanager
def _init_on(device: torch.device | str, dtype: torch.dtype):
    """Modules built inside are allocated and initialised on ``device`` in ``dtype``: no float32
    copy on the CPU first, so that billions of parameters build in seconds on a GPU."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            yield
    finally:
        torch.set_default_dtype(previous)


def _sd3_pipeline(arch: dict, tokenizer_dir: Path, layers: int | None) -> StableDiffusion3Pipeline:
    tokenizer = tiny_clip_tokenizer(tokenizer_dir, arch["clip_tokens"])
    transformer = SD3Transformer2DModel.from_config(arch["transformer"])
    vae = AutoencoderKL.from_config(arch["vae"])
    text_encoder = clip_text_encoder(tokenizer, arch["text_encoder"], with_projection=True, layers=layers)
    text_encoder_2 = clip_text_encoder(tokenizer, arch["text_encoder_2"], with_projection=True, layers=layers)
    t5_tokenizer = t5 = None
    if arch.get("text_encoder_3") is not None:
        t5_tokenizer = tiny_t5_tokenizer(arch["t5_tokens"])
        t5 = t5_encoder(t5_tokenizer, arch["text_encoder_3"], layers)
    return StableDiffusion3Pipeline(
        transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler.from_config(arch["scheduler"]), vae=vae,
        text_encoder=text_encoder, tokenizer=tokenizer, text_encoder_2=text_encoder_2, tokenizer_2=tokenizer,
        text_encoder_3=t5, tokenizer_3=t5_tokenizer,
    )


def _flux_pipeline(arch: dict, tokenizer_dir: Path, layers: int | None) -> FluxPipeline:
    tokenizer = tiny_clip_tokenizer(tokenizer_dir, arch["clip_tokens"])
    t5_tokenizer = tiny_t5_tokenizer(arch["t5_tokens"])
    t5 = t5_encoder(t5_tokenizer, arch["text_encoder_2"], layers)
    transformer = FluxTransformer2DModel.from_config(arch["transformer"])
    vae = AutoencoderKL.from_config(arch["vae"])
    return FluxPipeline(scheduler=FlowMatchEulerDiscreteScheduler.from_config(arch["scheduler"]), vae=vae,
                        text_encoder=clip_text_encoder(tokenizer, arch["text_encoder"], with_projection=False,
                                                                 layers=layers),
                        tokenizer=tokenizer, text_encoder_2=t5, tokenizer_2=t5_tokenizer, transformer=transformer)


def _scheduler(arch: dict) -> FlowMatchEulerDiscreteScheduler:
    return FlowMatchEulerDiscreteScheduler.from_config(arch["scheduler"])


def _qwen_image_pipeline(arch: dict, tokenizer_dir: Path, layers: int | None) -> QwenImagePipeline:
    tokenizer = tiny_qwen_tokenizer()
    text_encoder = qwen2_5_vl_encoder(tokenizer, arch["text_encoder"], layers)
    return QwenImagePipeline(scheduler=_scheduler(arch), vae=AutoencoderKLQwenImage.from_config(arch["vae"]),
                             text_encoder=text_encoder, tokenizer=tokenizer,
                             transformer=QwenImageTransformer2DModel.from_config(arch["transformer"]))


def _flux2_vae(arch: dict) -> AutoencoderKLFlux2:
    vae = AutoencoderKLFlux2.from_config(arch["vae"])
    # batch-norm statistics away from the identity, as a trained VAE's are
    vae.bn.running_mean.normal_()
    vae.bn.running_var.uniform_(0.5, 2.0)
    return vae


def _flux2_pipeline(arch: dict, tokenizer_dir: Path, layers: int | None) -> Flux2Pipeline:
    processor = tiny_mistral_processor()
    text_encoder = mistral3_encoder(processor, arch["text_encoder"], layers)
    return Flux2Pipeline(scheduler=_scheduler(arch), vae=_flux2_vae(arch), text_encoder=text_encoder,
                         tokenizer=processor, transformer=Flux2Transformer2DModel.from_config(arch["transformer"]))


def _flux2_klein_pipeline(arch: dict, tokenizer_dir: Path, layers: int | None) -> Flux2KleinPipeline:
    tokenizer = tiny_qwen_tokenizer()
    text_encoder = qwen3_encoder(tokenizer, arch["text_encoder"], layers, causal_lm=True)
    return Flux2KleinPipeline(scheduler=_scheduler(arch), vae=_flux2_vae(arch), text_encoder=text_encoder,
                              tokenizer=tokenizer, is_distilled=arch.get("is_distilled", False),
                              transformer=Flux2Transformer2DModel.from_config(arch["transformer"]))


def _z_image_pipeline(arch: dict, tokenizer_dir: Path, layers: int | None) -> ZImagePipeline:
    tokenizer = tiny_qwen_tokenizer()
    text_encoder = qwen3_encoder(tokenizer, arch["text_encoder"], layers)
    transformer = ZImageTransformer2DModel.from_config(arch["transformer"])
    # the padding embeddings are allocated uninitialised (torch.empty); a checkpoint sets them
    with torch.no_grad():
        transformer.x_pad_token.normal_()
        transformer.cap_pad_token.normal_()
    return ZImagePipeline(scheduler=_scheduler(arch), vae=AutoencoderKL.from_config(arch["vae"]),
                          text_encoder=text_encoder, tokenizer=tokenizer, transformer=transformer)


PIPELINES = {"StableDiffusion3Pipeline": _sd3_pipeline, "FluxPipeline": _flux_pipeline,
             "QwenImagePipeline": _qwen_image_pipeline, "Flux2Pipeline": _flux2_pipeline,
             "Flux2KleinPipeline": _flux2_klein_pipeline, "ZImagePipeline": _z_image_pipeline}


def random_pipeline(arch: dict, tokenizer_dir: str | Path, device: torch.device | str = "cpu",
                    dtype: torch.dtype = torch.float32, text_encoder_layers: int | None = None):
    """A pipeline with random weights from an architecture specification, laid out like a hub
    repository's model_index.json with each component's config inline:

    * ``_class_name``: one of ``PIPELINES``;
    * ``transformer``, ``vae``, ``scheduler``: the diffusers configs (config.json, scheduler_config.json);
    * ``text_encoder``, ``text_encoder_2`` (and SD 3's ``text_encoder_3``, which may be None): the
      CLIPTextConfig / T5Config fields of the pipeline's text encoders (SD 3: CLIP-L, CLIP-G, T5;
      FLUX: CLIP-L, T5); Qwen-Image's and FLUX.2-dev's ``text_encoder`` holds the ``text_config`` and
      ``vision_config`` of its Qwen2.5-VL / Mistral 3, FLUX.2 [klein]'s and Z-Image's the Qwen3Config
      fields of its Qwen3;
    * SD 3 and FLUX.1: ``clip_tokens``, ``t5_tokens``, the tokenizers' lengths (the pipelines pad
      prompts to them); FLUX.2 [klein]: ``is_distilled``, the pipeline's flag for step-distilled models.

    The CLIP tokenizer's files are written to ``tokenizer_dir``. With ``text_encoder_layers`` the
    text encoders are built that many layers deep (shallow, at their full width) instead of their
    configs' depth. The modules are initialised on ``device`` in ``dtype``, in the order of their
    fields above (FLUX: the T5 encoder first), each from the global torch RNG; on the "meta" device
    nothing is allocated (parameter counts only)."""
    if arch.get("_class_name") not in PIPELINES:
        raise ValueError(f"architecture _class_name must be one of {', '.join(PIPELINES)}, "
                         f"got {arch.get('_class_name')!r}")
    with _init_on(device, dtype):
        pipe = PIPELINES[arch["_class_name"]](arch, Path(tokenizer_dir), text_encoder_layers)
    # Buffers that a module computes in float32 whatever the default (SD 3's position embedding)
    # take the dtype too, as loading a hub pipeline in a dtype does. nn.Module's own `to`: diffusers'
    # override warns about modules to keep in float32, which these architectures have none of.
    for module in pipe.components.values():
        if isinstance(module, torch.nn.Module):
            torch.nn.Module.to(module, dtype)
    return pipe


def _tiny_vae(**kwargs) -> dict:
    # Two blocks: 16 x 16 RGB images <-> 8 x 8 x 4 latents.
    return dict(in_channels=3, out_channels=3, block_out_channels=(8, 16), layers_per_block=1,
                down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                latent_channels=4, norm_num_groups=4, sample_size=16, **kwargs)


TINY_CLIP = dict(hidden_size=TEXT_DIM, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                 max_position_embeddings=MAX_TOKENS, projection_dim=TEXT_DIM)

# SD 3 without T5 (the SD 3 pipeline allows it): two CLIP text encoders with projection.
TINY_SD3 = {
    "_class_name": "StableDiffusion3Pipeline",
    "transformer": dict(sample_size=8, patch_size=1, in_channels=4, out_channels=4, num_layers=1, attention_head_dim=8,
                        num_attention_heads=4, caption_projection_dim=32, joint_attention_dim=TEXT_DIM,
                        pooled_projection_dim=2 * TEXT_DIM),
    "vae": _tiny_vae(shift_factor=0.0609, scaling_factor=1.5035),
    "scheduler": dict(shift=3.0),
    "text_encoder": TINY_CLIP, "text_encoder_2": TINY_CLIP, "text_encoder_3": None,
    "clip_tokens": MAX_TOKENS, "t5_tokens": MAX_T5_TOKENS,
}

# FLUX.1-dev's: guidance embeddings, rotary position ids, gated-GELU T5 (v1.1), a VAE without quant
# convs, dynamic shifting.
TINY_FLUX = {
    "_class_name": "FluxPipeline",
    "transformer": dict(patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=8,
                        num_attention_heads=4, joint_attention_dim=TEXT_DIM, pooled_projection_dim=TEXT_DIM,
                        guidance_embeds=True, axes_dims_rope=(2, 2, 4)),
    "vae": _tiny_vae(use_quant_conv=False, use_post_quant_conv=False, shift_factor=0.1159, scaling_factor=0.3611),
    "scheduler": dict(shift=3.0, use_dynamic_shifting=True, base_image_seq_len=256, max_image_seq_len=4096,
                      base_shift=0.5, max_shift=1.15),
    "text_encoder": TINY_CLIP,
    "text_encoder_2": dict(d_model=TEXT_DIM, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                           relative_attention_num_buckets=8, feed_forward_proj="gated-gelu"),
    "clip_tokens": MAX_TOKENS, "t5_tokens": MAX_T5_TOKENS,
}


# Qwen-Image's: a video VAE (frame axis, per-channel latent statistics), a Qwen2.5-VL text encoder,
# Qwen-Image's scheduler (dynamic exponential shifting up to 8192 tokens, terminal sigma 0.02).
TINY_QWEN_IMAGE = {
    "_class_name": "QwenImagePipeline",
    "transformer": dict(patch_size=2, in_channels=16, out_channels=4, num_layers=1, attention_head_dim=8,
                        num_attention_heads=4, joint_attention_dim=TEXT_DIM, axes_dims_rope=(2, 2, 4)),
    "vae": dict(base_dim=8, z_dim=4, dim_mult=[1, 2], num_res_blocks=1, temperal_downsample=[False],
                latents_mean=[0.1, -0.2, 0.3, 0.0], latents_std=[1.5, 0.8, 1.2, 2.0]),
    "scheduler": dict(base_image_seq_len=256, base_shift=0.5, max_image_seq_len=8192, max_shift=0.9, shift=1.0,
                      shift_terminal=0.02, time_shift_type="exponential", use_dynamic_shifting=True),
    "text_encoder": {
        "text_config": dict(hidden_size=TEXT_DIM, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                            num_key_value_heads=2, max_position_embeddings=1024,
                            rope_scaling={"mrope_section": [1, 1, 2], "rope_type": "default", "type": "default"}),
        "vision_config": dict(depth=1, hidden_size=16, intermediate_size=16, num_heads=2, out_hidden_size=TEXT_DIM),
    },
}

# FLUX.2's: 4-D rotary positions, a batch-normalised latent, guidance embeddings (dev), a text encoder
# read at three layers (here all three of its layers: the pipelines' defaults are deeper, see
# TINY_FLUX2_OUT_LAYERS) concatenated, FLUX.2's scheduler.
TINY_FLUX2_TRANSFORMER = dict(patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=8,
                              num_attention_heads=2, joint_attention_dim=3 * 16, timestep_guidance_channels=32,
                              axes_dims_rope=(2, 2, 2, 2))
TINY_FLUX2_OUT_LAYERS = (1, 2, 3)
TINY_FLUX2_SCHEDULER = dict(shift=3.0, use_dynamic_shifting=True, base_image_seq_len=256, max_image_seq_len=4096,
                            base_shift=0.5, max_shift=1.15, time_shift_type="exponential")
TINY_FLUX2 = {
    "_class_name": "Flux2Pipeline",
    "transformer": {**TINY_FLUX2_TRANSFORMER, "guidance_embeds": True},
    "vae": _tiny_vae(use_quant_conv=False, use_post_quant_conv=False),
    "scheduler": TINY_FLUX2_SCHEDULER,
    "text_encoder": {
        "text_config": dict(model_type="mistral", hidden_size=16, intermediate_size=32, num_hidden_layers=3,
                            num_attention_heads=2, num_key_value_heads=1, head_dim=8, max_position_embeddings=1024,
                            sliding_window=None),
        "vision_config": dict(model_type="pixtral", hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                              intermediate_size=16, image_size=32, patch_size=16, head_dim=8),
    },
}
TINY_QWEN3 = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=3, num_attention_heads=2,
                  num_key_value_heads=1, head_dim=8, max_position_embeddings=1024)
# FLUX.2 [klein] base: a Qwen3 (with its language-model head) instead of Mistral, classifier-free
# guidance instead of the guidance embedding.
TINY_FLUX2_KLEIN = {
    "_class_name": "Flux2KleinPipeline",
    "transformer": {**TINY_FLUX2_TRANSFORMER, "guidance_embeds": False},
    "vae": _tiny_vae(use_quant_conv=False, use_post_quant_conv=False),
    "scheduler": TINY_FLUX2_SCHEDULER,
    "text_encoder": TINY_QWEN3,
    "is_distilled": False,
}

# Z-Image-Turbo's: the single-stream transformer with its refiners, a bare Qwen3, FLUX.1's VAE
# factors, a static shift of 3.
TINY_Z_IMAGE = {
    "_class_name": "ZImagePipeline",
    "transformer": dict(all_patch_size=(2,), all_f_patch_size=(1,), in_channels=4, dim=32, n_layers=1,
                        n_refiner_layers=1, n_heads=2, n_kv_heads=2, cap_feat_dim=16, axes_dims=[8, 4, 4],
                        axes_lens=[256, 32, 32]),
    "vae": _tiny_vae(use_quant_conv=False, use_post_quant_conv=False, shift_factor=0.1159, scaling_factor=0.3611),
    "scheduler": dict(shift=3.0, use_dynamic_shifting=False),
    "text_encoder": TINY_QWEN3,
}


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
    pipe = StableDiffusionPipeline(vae=AutoencoderKL(**_tiny_vae()),
                                   text_encoder=clip_text_encoder(tokenizer, TINY_CLIP, with_projection=False),
                                   tokenizer=tokenizer, unet=unet, scheduler=scheduler, safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(directory)
    return directory


def build_tiny_sd3(directory: str | Path, seed: int = 0) -> Path:
    """An SD 3-architecture pipeline (``TINY_SD3``): SD3Transformer2DModel, AutoencoderKL, two CLIP
    text encoders with projection, no T5, FlowMatchEulerDiscreteScheduler."""
    return build_tiny(TINY_SD3, directory, seed)


def build_tiny_flux(directory: str | Path, seed: int = 0) -> Path:
    """A FLUX.1-dev-architecture pipeline (``TINY_FLUX``): FluxTransformer2DModel with guidance
    embeddings and rotary position ids, a CLIP text encoder (pooled vector) and a T5 encoder (token
    embeddings), an AutoencoderKL with FLUX's scaling and shift factors, and FLUX.1-dev's scheduler.
    Its default size is FluxPipeline's (128 latent cells, 256 px here): pass height / width to
    ``load_model`` for fast tests."""
    return build_tiny(TINY_FLUX, directory, seed)


def build_tiny(arch: dict, directory: str | Path, seed: int = 0) -> Path:
    """A miniature pipeline of the specification ``arch`` (one of the ``TINY_*`` above), saved to
    ``directory``. Its default size is its pipeline's (1024 px): pass height / width to
    ``load_model`` for fast tests; FLUX.2's text encoder needs ``text_encoder_out_layers``
    (``TINY_FLUX2_OUT_LAYERS``)."""
    directory = Path(directory)
    torch.manual_seed(seed)
    random_pipeline(arch, directory / "_tokenizer_src").save_pretrained(directory)
    return directory

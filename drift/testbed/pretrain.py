"""Pretrain the testbed's base model: a miniature text-to-image model trained with flow matching.

The parts are the library classes real models use: a diffusers ``UNet2DConditionModel`` with
cross-attention on the text embeddings (pixel space, 1 x 8 x 8), a transformers ``CLIPTextModel``
with a word-level tokenizer built from the prompt vocabulary, and a
``FlowMatchEulerDiscreteScheduler``. Saved as a ``StableDiffusionPipeline`` without VAE, which
``drift.models.load_model`` opens exactly as it opens a hub model.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from diffusers import FlowMatchEulerDiscreteScheduler, StableDiffusionPipeline, UNet2DConditionModel
from diffusers.training_utils import EMAModel
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from tqdm.auto import tqdm
from transformers import CLIPTextConfig, CLIPTextModel, PreTrainedTokenizerFast

from drift.testbed.attributes import ATTRIBUTES, LEVEL_COMBINATIONS, UNNAMED, attribute_levels, pretraining_captions

MAX_TOKENS = 16
SPECIALS = ["[PAD]", "[UNK]", "[BOS]", "[EOS]"]


def build_tokenizer(prompts: list[str]) -> PreTrainedTokenizerFast:
    """Word-level tokenizer over every word of ``prompts`` (punctuation split off)."""
    pre = pre_tokenizers.Whitespace()
    words = sorted({w for p in prompts for w, _ in pre.pre_tokenize_str(p.lower())})
    vocab = {tok: i for i, tok in enumerate(SPECIALS + words)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre
    tok.post_processor = processors.TemplateProcessing(
        single="[BOS] $A [EOS]", special_tokens=[("[BOS]", vocab["[BOS]"]), ("[EOS]", vocab["[EOS]"])]
    )
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", bos_token="[BOS]",
                                   eos_token="[EOS]", model_max_length=MAX_TOKENS)


def build_models(vocab_size: int, text_dim: int = 32) -> tuple[CLIPTextModel, UNet2DConditionModel]:
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=vocab_size, hidden_size=text_dim, intermediate_size=2 * text_dim, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=MAX_TOKENS, pad_token_id=0, bos_token_id=2, eos_token_id=3,
    ))
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=1, out_channels=1, block_out_channels=(32, 48), layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        mid_block_type=None, cross_attention_dim=text_dim, attention_head_dim=16, norm_num_groups=8,
    )
    return text_encoder, unet


def pretrain(images: np.ndarray, labels: np.ndarray, train_mask: np.ndarray, prompts: pd.DataFrame, steps: int,
             batch_size: int = 128, lr: float = 2e-3, ema_decay: float = 0.995, cond_dropout: float = 0.1,
             seed: int = 0, progress: bool = False,
             attribute_rate: float = 0.5) -> tuple[StableDiffusionPipeline, dict]:
    """Flow matching: x_sigma = (1 - sigma) x0 + sigma * n, the UNet predicts v = n - x0 from
    (x_sigma, 1000 * sigma, text); sigma ~ U(0, 1). Each image is captioned with a random training
    phrasing of its digit followed by the words of each of its attributes (drift.testbed.attributes)
    named with probability ``attribute_rate``, or with the empty prompt with probability
    ``cond_dropout`` (for CFG)."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    train = prompts[prompts["split"] == "train"]
    phrasings = [train[train["digit"].astype(int) == d]["prompt"].tolist() for d in range(10)]
    per_digit = len(phrasings[0])
    captions = pretraining_captions([p for ps in phrasings for p in ps])
    tokenizer = build_tokenizer(prompts["prompt"].tolist() + captions)
    text_encoder, unet = build_models(len(tokenizer))
    ids = tokenizer(captions + [""], padding="max_length", max_length=MAX_TOKENS, return_tensors="pt").input_ids
    x_all = torch.from_numpy(images[train_mask]) * 2 - 1
    y_all = torch.from_numpy(labels[train_mask])
    levels_all = torch.from_numpy(attribute_levels(images, labels)[train_mask])
    combo_index = torch.tensor([(UNNAMED + 1) ** k for k in reversed(range(len(ATTRIBUTES)))])
    params = list(unet.parameters()) + list(text_encoder.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.05)
    ema = EMAModel(params, decay=ema_decay)
    start, losses = time.perf_counter(), []
    for _ in tqdm(range(steps), desc="pretrain", disable=None if progress else True):
        idx = torch.randint(len(x_all), (batch_size,), generator=gen)
        x0, digit = x_all[idx], y_all[idx]
        phrasing = digit * per_digit + torch.randint(per_digit, (batch_size,), generator=gen)
        named = torch.rand(batch_size, len(ATTRIBUTES), generator=gen) < attribute_rate
        levels = torch.where(named, levels_all[idx], UNNAMED)
        text_id = phrasing * len(LEVEL_COMBINATIONS) + (levels * combo_index).sum(dim=1)
        text_id = torch.where(torch.rand(batch_size, generator=gen) < cond_dropout, len(ids) - 1, text_id)
        sigma = torch.rand(batch_size, generator=gen)
        noise = torch.randn(x0.shape, generator=gen)
        s = sigma.view(-1, 1, 1, 1)
        x_t = (1 - s) * x0 + s * noise
        text = text_encoder(ids[text_id]).last_hidden_state
        loss = F.mse_loss(unet(x_t, sigma * 1000, encoder_hidden_states=text).sample, noise - x0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        ema.step(params)
        losses.append(float(loss.detach()))
    ema.copy_to(params)
    stats = {"seconds": time.perf_counter() - start, "steps": steps, "batch_size": batch_size,
             "attribute_rate": attribute_rate,
             "final_loss": float(np.mean(losses[-50:])),
             "denoiser_parameters": sum(p.numel() for p in unet.parameters())}
    pipe = StableDiffusionPipeline(vae=None, text_encoder=text_encoder.eval(), tokenizer=tokenizer, unet=unet.eval(),
                                   scheduler=FlowMatchEulerDiscreteScheduler(shift=1.0), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    return pipe, stats


def save(pipe: StableDiffusionPipeline, stats: dict, out_dir: str | Path) -> Path:
    """The pipeline and its training statistics, without the wall time: a DVC output must depend
    only on the stage's parameters and code, not on how fast the machine was."""
    out = Path(out_dir)
    pipe.save_pretrained(out)
    (out / "pretrain_stats.json").write_text(json.dumps({k: v for k, v in stats.items() if k != "seconds"}, indent=2))
    return out

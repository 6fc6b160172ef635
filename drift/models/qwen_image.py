"""QwenImageTransformer2DModel pipelines (Qwen-Image): rectified flow on packed latents, a
Qwen2.5-VL text encoder with an attention mask.

Everything Qwen-Image does differently is done as diffusers' ``QwenImagePipeline`` does it:

* the VAE is a video VAE: its latents carry a frame axis of 1 (B, C, 1, H, W) and are normalised
  per channel by ``latents_mean`` / ``latents_std``; the denoiser sees them packed 2 x 2 as FLUX's
  (``drift.models.patches``), with image shapes (1, H/2, W/2) for its rotary positions; the
  starting noise is drawn with the frame axis and then packed, as the pipeline draws it;
* the conditioning is the encoder's last hidden state over a chat template (a fixed system prompt,
  whose first 34 tokens the pipeline drops), each prompt its own length, padded to the batch's
  longest with a mask (``Conditioning.mask``) that the transformer attends with; prompt noise
  perturbs each prompt's own tokens and leaves the padding as encoded;
* classifier-free guidance runs the prompt and the negative prompt as two passes (their lengths
  differ) and rescales the guided output to the conditional output's norm, token by token;
* the transformer takes time as timestep / 1000; the sigmas are linspace(1, 1/T, T), shifted by
  mu = calculate_shift(image sequence length) (and stretched to the scheduler's shift_terminal).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
from diffusers import QwenImageTransformer2DModel
from diffusers.pipelines.qwenimage.pipeline_qwenimage import calculate_shift
from diffusers.utils.torch_utils import randn_tensor

from drift.errors import ConfigError
from drift.method.prompt_noise import anneal_condition
from drift.models.base import Conditioning, T2IModel
from drift.models.patches import PackedLatents, pack_2x2, unpack_2x2
from drift.sampling.schedules import FlowSchedule

# QwenImagePipeline's prompt tokens when none are given, and the most it accepts.
MAX_SEQUENCE_LENGTH = 512
SEQUENCE_LENGTH_LIMIT = 1024


class QwenImageModel(PackedLatents, T2IModel):
    denoiser_class, denoiser_attr = QwenImageTransformer2DModel, "transformer"
    families = ("flow",)
    description = "Qwen-Image"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.max_sequence_length > SEQUENCE_LENGTH_LIMIT:
            raise ConfigError(f"model.max_sequence_length {self.max_sequence_length} is more than the "
                              f"{SEQUENCE_LENGTH_LIMIT} prompt tokens QwenImagePipeline accepts")
        if self.denoiser.config.guidance_embeds and self.guidance is None:
            raise ConfigError("this Qwen-Image transformer is guidance-distilled: set model.guidance")

    @property
    def vae_scale_factor(self) -> int:
        # a video VAE: one spatial halving per temporal-downsample entry
        return 2 ** len(self.vae.config.temperal_downsample)

    @property
    def max_sequence_length(self) -> int:
        return self.requested_sequence_length or MAX_SEQUENCE_LENGTH

    def schedule(self, num_steps: int) -> FlowSchedule:
        cfg = self.scheduler_config
        mu = calculate_shift(self.latent_shape[0], cfg.get("base_image_seq_len", 256),
                             cfg.get("max_image_seq_len", 4096), cfg.get("base_shift", 0.5),
                             cfg.get("max_shift", 1.15))
        return FlowSchedule(cfg, num_steps, sigmas=np.linspace(1.0, 1 / num_steps, num_steps).tolist(), mu=mu)

    def initial_latents(self, generators: list[torch.Generator]) -> torch.Tensor:
        """Noise (B, 1, C, H, W) with the frame axis, packed: QwenImagePipeline.prepare_latents' draw."""
        h, w = self.latent_grid
        noise = randn_tensor((len(generators), 1, self.denoiser.config.in_channels // 4, h, w),
                             generator=generators, device=self.device, dtype=torch.float32)
        return pack_2x2(noise[:, 0])

    def encode(self, prompts: list[str]) -> Conditioning:
        with torch.no_grad():
            embeds, mask = self.pipe.encode_prompt(list(prompts), device=self.device,
                                                   max_sequence_length=self.max_sequence_length)
        # the pipeline drops a mask of all ones; the mask is kept so that prompt noise knows the padding
        mask = torch.ones(embeds.shape[:2], dtype=torch.long, device=self.device) if mask is None else mask
        return Conditioning(embeds=embeds.to(torch.float32), mask=mask)

    def forward(self, denoiser, latents, model_time, cond: Conditioning) -> torch.Tensor:
        h, w = self.latent_grid
        guidance = None
        if self.denoiser.config.guidance_embeds:
            guidance = torch.full((latents.shape[0],), self.guidance, device=self.device, dtype=torch.float32)
        return denoiser(
            hidden_states=latents.to(self.dtype),
            timestep=model_time.to(self.dtype) / 1000,
            guidance=guidance,
            # as the pipeline: no mask where no prompt of the batch is padded
            encoder_hidden_states_mask=None if bool(cond.mask.all()) else cond.mask,
            encoder_hidden_states=cond.embeds.to(self.dtype),
            img_shapes=[[(1, h // 2, w // 2)]] * latents.shape[0],
            return_dict=False,
        )[0]

    def perturb_conditioning(self, cond: Conditioning, noise: Conditioning, g: float, pn) -> Conditioning:
        """Prompt noise on each prompt's own tokens (mask 1); the padding stays as encoded."""
        embeds = cond.embeds.clone()
        for b, keep in enumerate(cond.mask.bool()):
            embeds[b, keep] = anneal_condition(cond.embeds[b, keep][None], noise.embeds[b, keep][None], g, pn.scale,
                                               pn.rescale, pn.psi, pn.form)[0]
        return replace(cond, embeds=embeds)

    def guided_outputs(self, denoiser, latents, t, cond: Conditioning, uncond: Conditioning):
        """Two passes, the prompt's then the negative prompt's, as the pipeline runs them: their token
        counts differ."""
        out_c = self.forward(denoiser, latents, t, cond).to(torch.float32)
        out_u = self.forward(denoiser, latents, t, uncond).to(torch.float32)
        return out_u, out_c

    def combine_guidance(self, out_uncond, out_cond, scale: float) -> torch.Tensor:
        """CFG rescaled to the conditional output's norm over the channels of each token."""
        guided = out_uncond + scale * (out_cond - out_uncond)
        return guided * (torch.norm(out_cond, dim=-1, keepdim=True) / torch.norm(guided, dim=-1, keepdim=True))

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Unpack, undo the per-channel normalisation, decode the single frame."""
        cfg = self.vae.config
        x = unpack_2x2(latents, *self.latent_grid)[:, :, None].to(self.vae.dtype)
        mean = torch.tensor(cfg.latents_mean).view(1, cfg.z_dim, 1, 1, 1).to(x.device, x.dtype)
        inverse_std = 1.0 / torch.tensor(cfg.latents_std).view(1, cfg.z_dim, 1, 1, 1).to(x.device, x.dtype)
        image = self.vae.decode(x / inverse_std + mean, return_dict=False)[0][:, :, 0]
        return (image.to(torch.float32) / 2 + 0.5).clamp(0, 1)

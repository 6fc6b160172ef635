"""FluxTransformer2DModel pipelines (FLUX.1 class): rectified flow on packed latents, T5 + CLIP text.

Everything FLUX does differently is done as diffusers' ``FluxPipeline`` does it:

* latents are packed 2 x 2 patches, (B, (H/2)(W/2), 4C) for a (B, C, H, W) VAE latent, with image
  position ids (0, row, column) per patch and all-zero text position ids (``drift.models.patches``);
  the starting noise is drawn unpacked and then packed, as the pipeline draws it, so that a seed
  gives the pipeline's image;
* the conditioning is T5 token embeddings plus the CLIP pooled vector (both perturbed by prompt
  noise; the position ids are rebuilt in ``forward`` and never are). FLUX has no text attention
  mask: padding tokens take part in attention, so the T5 length (``model.max_sequence_length``,
  the pipeline's 512 by default) changes the conditioning as well as the cost;
* the transformer takes time as timestep / 1000, and guidance-distilled models (FLUX.1-dev) a
  guidance value as an input instead of classifier-free guidance;
* the sigmas are linspace(1, 1/T, T) (the scheduler's own when its config sets
  ``use_flow_sigmas``), shifted by mu = calculate_shift(image sequence length).
"""

from __future__ import annotations

import numpy as np
import torch
from diffusers import FluxTransformer2DModel
from diffusers.pipelines.flux.pipeline_flux import calculate_shift
from diffusers.utils.torch_utils import randn_tensor

from drift.models.base import Conditioning, T2IModel
from drift.models.patches import PackedLatents, pack_2x2, patch_positions, unpack_2x2
from drift.sampling.schedules import FlowSchedule

# FluxPipeline's defaults: the guidance value of guidance-distilled models, the T5 sequence length.
DEFAULT_GUIDANCE = 3.5
MAX_SEQUENCE_LENGTH = 512


class FluxModel(PackedLatents, T2IModel):
    denoiser_class, denoiser_attr = FluxTransformer2DModel, "transformer"
    families = ("flow",)
    description = "FLUX.1 class"

    @property
    def max_sequence_length(self) -> int:
        """T5 tokens: model.max_sequence_length, else the pipeline's 512 (or fewer if the tokenizer is
        shorter)."""
        return self.requested_sequence_length or min(MAX_SEQUENCE_LENGTH, self.pipe.tokenizer_2.model_max_length)

    def schedule(self, num_steps: int) -> FlowSchedule:
        """The pipeline's schedule: sigmas linspace(1, 1/T, T) unless the scheduler config sets
        use_flow_sigmas, shifted with mu = base_shift + (seq_len - base_seq_len) (max_shift -
        base_shift) / (max_seq_len - base_seq_len)."""
        cfg = self.scheduler_config
        mu = calculate_shift(self.latent_shape[0], cfg.get("base_image_seq_len", 256),
                             cfg.get("max_image_seq_len", 4096),
                             cfg.get("base_shift", 0.5), cfg.get("max_shift", 1.15))
        if cfg.get("use_flow_sigmas"):
            # not a FlowMatchEulerDiscreteScheduler option: FluxPipeline reads it, the scheduler warns on it
            return FlowSchedule({k: v for k, v in cfg.items() if k != "use_flow_sigmas"}, num_steps, mu=mu)
        return FlowSchedule(cfg, num_steps, sigmas=np.linspace(1.0, 1 / num_steps, num_steps).tolist(), mu=mu)

    def initial_latents(self, generators: list[torch.Generator]) -> torch.Tensor:
        """Unpacked noise (B, C, H, W), packed: FluxPipeline.prepare_latents' draw."""
        h, w = self.latent_grid
        noise = randn_tensor((len(generators), self.denoiser.config.in_channels // 4, h, w), generator=generators,
                             device=self.device, dtype=torch.float32)
        return pack_2x2(noise)

    def encode(self, prompts: list[str]) -> Conditioning:
        with torch.no_grad():
            embeds, pooled, _ = self.pipe.encode_prompt(list(prompts), device=self.device,
                                                        max_sequence_length=self.max_sequence_length)
        return Conditioning(embeds=embeds.to(torch.float32), pooled=pooled.to(torch.float32))

    def forward(self, denoiser, latents, model_time, cond: Conditioning) -> torch.Tensor:
        h, w = self.latent_grid
        guidance = None
        if self.denoiser.config.guidance_embeds:
            value = DEFAULT_GUIDANCE if self.guidance is None else self.guidance
            guidance = torch.full((latents.shape[0],), value, device=self.device, dtype=torch.float32)
        return denoiser(
            hidden_states=latents.to(self.dtype),
            timestep=model_time.to(self.dtype) / 1000,  # the pipeline's time input; the transformer scales it back
            guidance=guidance,
            pooled_projections=cond.pooled.to(self.dtype),
            encoder_hidden_states=cond.embeds.to(self.dtype),
            txt_ids=torch.zeros(cond.embeds.shape[1], 3, device=self.device, dtype=self.dtype),
            img_ids=patch_positions(h // 2, w // 2, self.device, self.dtype),
            return_dict=False,
        )[0]

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Unpack the 2 x 2 patches, then decode with the VAE's scaling and shift factors."""
        return super().decode(unpack_2x2(latents, *self.latent_grid))

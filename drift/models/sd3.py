"""SD3Transformer2DModel pipelines (Stable Diffusion 3 / 3.5 class): rectified flow, pooled text."""

from __future__ import annotations

import torch
from diffusers import SD3Transformer2DModel

from drift.models.base import Conditioning, T2IModel

# StableDiffusion3Pipeline's T5 token count when none is given.
MAX_SEQUENCE_LENGTH = 256


class SD3Model(T2IModel):
    denoiser_class, denoiser_attr = SD3Transformer2DModel, "transformer"
    families = ("flow",)
    description = "SD 3 class"

    def encode(self, prompts: list[str]) -> Conditioning:
        with torch.no_grad():
            embeds, _, pooled, _ = self.pipe.encode_prompt(
                list(prompts), None, None, device=self.device, do_classifier_free_guidance=False,
                max_sequence_length=self.requested_sequence_length or MAX_SEQUENCE_LENGTH,
            )
        return Conditioning(embeds=embeds.to(torch.float32), pooled=pooled.to(torch.float32))

    def forward(self, denoiser, latents, model_time, cond: Conditioning) -> torch.Tensor:
        return denoiser(
            hidden_states=latents.to(self.dtype),
            encoder_hidden_states=cond.embeds.to(self.dtype),
            pooled_projections=cond.pooled.to(self.dtype),
            timestep=model_time,
        ).sample

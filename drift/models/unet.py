"""UNet2DConditionModel pipelines (Stable Diffusion 1.5 class, and the digits testbed).

The family follows the scheduler: a ``FlowMatchEulerDiscreteScheduler`` means a UNet trained with
flow matching ('flow'); any other scheduler is treated as epsilon prediction and sampled with DDIM.
"""

from __future__ import annotations

import torch
from diffusers import UNet2DConditionModel

from drift.models.base import Conditioning, T2IModel


class UNetModel(T2IModel):
    denoiser_class, denoiser_attr = UNet2DConditionModel, "unet"
    description = "SD 1.5 class, or flow-matching UNets"

    def encode(self, prompts: list[str]) -> Conditioning:
        with torch.no_grad():
            embeds, _ = self.pipe.encode_prompt(list(prompts), self.device, 1, False)
        return Conditioning(embeds=embeds.to(torch.float32))

    def forward(self, denoiser, latents, model_time, cond: Conditioning) -> torch.Tensor:
        return denoiser(
            latents.to(self.dtype), model_time, encoder_hidden_states=cond.embeds.to(self.dtype)
        ).sample

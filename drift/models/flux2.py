"""Flux2Transformer2DModel pipelines (FLUX.2-dev and FLUX.2 [klein]): rectified flow on 2 x 2
patches of a batch-normalised latent, a chat-model text encoder read at several layers.

Everything FLUX.2 does differently is done as diffusers' ``Flux2Pipeline`` (dev) and
``Flux2KleinPipeline`` (klein) do it:

* the latent tokens are 2 x 2 patches of the VAE latent in FLUX.1's layout (``drift.models.patches``),
  (B, (H/2)(W/2), 4C), normalised by the VAE's batch-norm statistics in that patch space; the
  starting noise is drawn as (B, 4C, H/2, W/2) and flattened to tokens, as the pipelines draw it;
  position ids are 4-D, (0, row, column, 0) for image tokens and (0, 0, 0, k) for text token k;
* the conditioning is the text encoder's hidden states at ``model.text_encoder_out_layers`` (the
  pipeline's (10, 20, 30) of Mistral Small 3.1 for dev, (9, 18, 27) of Qwen3 for klein),
  concatenated per token, over a chat template, padded to ``model.max_sequence_length`` without a
  mask: padding tokens take part in attention, and prompt noise perturbs them with the rest;
* FLUX.2-dev is guidance-distilled (``model.guidance``, the pipeline's 4.0, as a transformer input);
  klein base models take classifier-free guidance (``sampling.guidance_scale``), klein's
  step-distilled models neither;
* the transformer takes time as timestep / 1000; the sigmas are linspace(1, 1/T, T) (the
  scheduler's own when its config sets ``use_flow_sigmas``), shifted by FLUX.2's empirical mu of the
  image sequence length and the step count.
"""

from __future__ import annotations

import inspect

import numpy as np
import torch
from diffusers import Flux2Transformer2DModel
from diffusers.pipelines.flux2.pipeline_flux2 import compute_empirical_mu
from diffusers.utils.torch_utils import randn_tensor

from drift.errors import ConfigError
from drift.models.base import Conditioning, T2IModel
from drift.models.patches import PackedLatents, unpack_2x2
from drift.sampling.schedules import FlowSchedule

# Flux2Pipeline's guidance input when none is given, and both pipelines' prompt tokens.
DEFAULT_GUIDANCE = 4.0
MAX_SEQUENCE_LENGTH = 512


class Flux2Model(PackedLatents, T2IModel):
    denoiser_class, denoiser_attr = Flux2Transformer2DModel, "transformer"
    families = ("flow",)
    description = "FLUX.2 class, dev and klein"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        text = self.pipe.text_encoder.config
        depth = getattr(text, "text_config", text).num_hidden_layers
        beyond = [k for k in self.out_layers if not -(depth + 1) <= k <= depth]
        if beyond:
            raise ConfigError(f"text encoder layers {list(self.out_layers)} include {beyond}, beyond this text "
                              f"encoder's {depth + 1} hidden states (0 = embeddings, {depth} = last layer): set "
                              "model.text_encoder_out_layers")

    @property
    def out_layers(self) -> tuple[int, ...]:
        """model.text_encoder_out_layers, else the pipeline's own default."""
        default = inspect.signature(self.pipe.encode_prompt).parameters["text_encoder_out_layers"].default
        return self.text_encoder_out_layers or tuple(default)

    @property
    def step_distilled(self) -> bool:
        """klein's distilled models, which the pipeline runs without classifier-free guidance."""
        return bool(self.pipe.config.get("is_distilled", False))

    @property
    def max_sequence_length(self) -> int:
        return self.requested_sequence_length or MAX_SEQUENCE_LENGTH

    def schedule(self, num_steps: int) -> FlowSchedule:
        mu = compute_empirical_mu(self.latent_shape[0], num_steps)
        cfg = self.scheduler_config
        if cfg.get("use_flow_sigmas"):
            # not a FlowMatchEulerDiscreteScheduler option: the pipelines read it, the scheduler warns on it
            return FlowSchedule({k: v for k, v in cfg.items() if k != "use_flow_sigmas"}, num_steps, mu=mu)
        return FlowSchedule(cfg, num_steps, sigmas=np.linspace(1.0, 1 / num_steps, num_steps).tolist(), mu=mu)

    def initial_latents(self, generators: list[torch.Generator]) -> torch.Tensor:
        """Noise (B, 4C, H/2, W/2), flattened to tokens: the pipelines' prepare_latents."""
        noise = randn_tensor((len(generators), self.denoiser.config.in_channels, *self.token_grid),
                             generator=generators, device=self.device, dtype=torch.float32)
        return noise.flatten(2).transpose(1, 2)

    def encode(self, prompts: list[str]) -> Conditioning:
        with torch.no_grad():
            embeds, _ = self.pipe.encode_prompt(list(prompts), device=self.device,
                                                max_sequence_length=self.max_sequence_length,
                                                text_encoder_out_layers=self.out_layers)
        return Conditioning(embeds=embeds.to(torch.float32))

    def _positions(self, text_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
        """4-D position ids (t, row, column, k) of the text and the image tokens."""
        rows, columns = self.token_grid
        text = torch.zeros(text_tokens, 4)
        text[:, 3] = torch.arange(text_tokens)
        image = torch.zeros(rows, columns, 4)
        image[..., 1] = torch.arange(rows)[:, None]
        image[..., 2] = torch.arange(columns)[None, :]
        return text.to(self.device), image.reshape(rows * columns, 4).to(self.device)

    def forward(self, denoiser, latents, model_time, cond: Conditioning) -> torch.Tensor:
        guidance = None
        if self.denoiser.config.guidance_embeds:
            value = DEFAULT_GUIDANCE if self.guidance is None else self.guidance
            guidance = torch.full((latents.shape[0],), value, device=self.device, dtype=torch.float32)
        txt_ids, img_ids = self._positions(cond.embeds.shape[1])
        return denoiser(
            hidden_states=latents.to(self.dtype),
            timestep=model_time.to(self.dtype) / 1000,
            guidance=guidance,
            encoder_hidden_states=cond.embeds.to(self.dtype),
            txt_ids=txt_ids,
            img_ids=img_ids,
            return_dict=False,
        )[0]

    def guided_outputs(self, denoiser, latents, t, cond, uncond):
        if self.step_distilled:
            raise ConfigError("this FLUX.2 [klein] model is step-distilled and takes no classifier-free guidance "
                              "(its pipeline ignores it): set sampling.guidance_scale to 1")
        return super().guided_outputs(denoiser, latents, t, cond, uncond)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Undo the batch-norm normalisation of the patches, unpack them, decode."""
        bn = self.vae.bn
        x = latents.to(self.vae.dtype)
        std = torch.sqrt(bn.running_var + self.vae.config.batch_norm_eps).to(x.device, x.dtype)
        x = x * std + bn.running_mean.to(x.device, x.dtype)
        rows, columns = self.token_grid
        image = self.vae.decode(unpack_2x2(x, 2 * rows, 2 * columns), return_dict=False)[0]
        return (image.to(torch.float32) / 2 + 0.5).clamp(0, 1)

"""ZImageTransformer2DModel pipelines (Z-Image, Z-Image-Turbo): a single-stream transformer on
lists of per-sample sequences, a Qwen3 text encoder, velocity of the opposite sign.

Everything Z-Image does differently is done as diffusers' ``ZImagePipeline`` does it:

* latents are the plain VAE latents (B, C, H, W), which the transformer patchifies itself; it takes
  them, and the conditioning, as lists of per-sample tensors;
* the conditioning is the encoder's second-to-last hidden state over the chat template (thinking on)
  with the padding dropped: a list of B per-prompt tensors (L_i, D) of their own lengths
  (``Conditioning.embeds`` as a list); prompt noise perturbs each prompt's tokens;
* the transformer takes time as (1000 - timestep) / 1000 (0 is pure noise) and predicts
  x0 - noise, the opposite of the rectified-flow velocity: ``forward`` returns it negated, as the
  pipeline negates it before the scheduler step;
* classifier-free guidance is one pass over the prompts and then the negative prompts, combined as
  out + (w - 1) (out - out_negative): ZImagePipeline's ``guidance_scale`` is this project's
  ``sampling.guidance_scale`` - 1 (Z-Image-Turbo's 0 is 1 here, no guidance). ``model.cfg_truncation``
  turns guidance off once 1 - t/1000 exceeds it, ``model.cfg_normalization`` caps the guided
  output's norm at that multiple of the conditional output's, each sample as a whole;
* the sigmas are linspace(1, 1/T, T) computed in float32, shifted by mu = calculate_shift(image
  sequence length) where the scheduler shifts dynamically; images are 1024 px unless set.
"""

from __future__ import annotations

import torch
from diffusers import ZImageTransformer2DModel
from diffusers.pipelines.z_image.pipeline_z_image import calculate_shift

from drift.models.base import Conditioning, T2IModel
from drift.sampling.schedules import FlowSchedule

# ZImagePipeline's image size and prompt tokens when none are given.
DEFAULT_SIZE = 1024
MAX_SEQUENCE_LENGTH = 512


class ZImageModel(T2IModel):
    denoiser_class, denoiser_attr = ZImageTransformer2DModel, "transformer"
    families = ("flow",)
    description = "Z-Image"

    @property
    def resolution_multiple(self) -> int:
        return 2 * self.vae_scale_factor

    def default_resolution(self) -> tuple[int, int]:
        return DEFAULT_SIZE, DEFAULT_SIZE

    @property
    def max_sequence_length(self) -> int:
        return self.requested_sequence_length or MAX_SEQUENCE_LENGTH

    def schedule(self, num_steps: int) -> FlowSchedule:
        cfg = self.scheduler_config
        _, h, w = self.latent_shape
        mu = calculate_shift((h // 2) * (w // 2), cfg.get("base_image_seq_len", 256),
                             cfg.get("max_image_seq_len", 4096), cfg.get("base_shift", 0.5),
                             cfg.get("max_shift", 1.15))
        # ZImagePipeline's default sigmas, float32 linspace (not numpy's float64)
        return FlowSchedule(cfg, num_steps, sigmas=torch.linspace(1.0, 1 / num_steps, num_steps).tolist(), mu=mu)

    def encode(self, prompts: list[str]) -> Conditioning:
        with torch.no_grad():
            # a fresh list: the pipeline writes the templated prompts into the list it is given
            embeds, _ = self.pipe.encode_prompt(list(prompts), device=self.device, do_classifier_free_guidance=False,
                                                max_sequence_length=self.max_sequence_length)
        return Conditioning(embeds=[e.to(torch.float32) for e in embeds])

    def forward(self, denoiser, latents, model_time, cond: Conditioning) -> torch.Tensor:
        out = denoiser(
            list(latents.to(self.dtype).unsqueeze(2).unbind(0)),
            (1000 - model_time) / 1000,
            [e.to(self.dtype) for e in cond.embeds],
            return_dict=False,
        )[0]
        return -torch.stack(out).squeeze(2)

    def guided_outputs(self, denoiser, latents, t, cond: Conditioning, uncond: Conditioning):
        """One pass over prompts then negative prompts, as the pipeline batches them; past the
        truncation point the prompts' pass alone, as its output for both."""
        progress = float((1000 - t[0].float()) / 1000)
        if self.cfg_truncation is not None and progress > self.cfg_truncation:
            out_c = self.forward(denoiser, latents, t, cond).to(torch.float32)
            return out_c, out_c
        both = self.forward(denoiser, latents.repeat(2, 1, 1, 1), t.repeat(2), Conditioning.cat([cond, uncond]))
        out_c, out_u = both.to(torch.float32).chunk(2)
        return out_u, out_c

    def combine_guidance(self, out_uncond, out_cond, scale: float) -> torch.Tensor:
        """out + (w - 1)(out - out_negative), its norm capped at cfg_normalization times the
        conditional output's; past the truncation point (``guided_outputs`` gave the conditional
        output for both) the conditional output as it is."""
        if out_uncond is out_cond:
            return out_cond
        guided = out_cond + (scale - 1) * (out_cond - out_uncond)
        if self.cfg_normalization:
            cond_norm = torch.linalg.vector_norm(out_cond.flatten(1), dim=1)
            guided_norm = torch.linalg.vector_norm(guided.flatten(1), dim=1)
            cap = cond_norm * self.cfg_normalization
            factor = torch.where(guided_norm > cap, cap / guided_norm, torch.ones_like(guided_norm))
            guided = guided * factor.view(-1, *[1] * (guided.ndim - 1))
        return guided

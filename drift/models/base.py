"""The adapter every model family implements: encode prompts, denoise, decode.

The trainer and the rollout only talk to this interface; one subclass per denoiser family
(``unet.py``, ``sd3.py``) fills in prompt encoding and the denoiser call.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import nn

from drift.sampling.schedules import DDIMSchedule, FlowSchedule


@dataclass
class Conditioning:
    """Text conditioning of a batch: token embeddings, and a pooled vector for models that use one."""

    embeds: torch.Tensor
    pooled: torch.Tensor | None = None

    def map(self, fn) -> "Conditioning":
        """Apply ``fn(tensor, name)`` to each present tensor."""
        return Conditioning(**{f.name: (None if getattr(self, f.name) is None else fn(getattr(self, f.name), f.name))
                               for f in fields(self)})

    def __getitem__(self, index) -> "Conditioning":
        return self.map(lambda t, _: t[index])

    @staticmethod
    def cat(items: list["Conditioning"]) -> "Conditioning":
        first = items[0]
        return first.map(lambda _, name: torch.cat([getattr(c, name) for c in items]))


class T2IModel:
    """A text-to-image model: a trainable ``denoiser`` plus frozen text encoders and VAE.

    ``family`` is 'flow' (velocity prediction, rectified flow) or 'eps' (noise prediction, DDIM).
    Images are returned as float32 tensors in [0, 1], shape (B, C, H, W).
    """

    family: str

    def __init__(self, pipe, denoiser: nn.Module, family: str, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32):
        self.pipe = pipe
        self.denoiser = denoiser
        self.vae = getattr(pipe, "vae", None)
        self.family = family
        self.device = torch.device(device)
        self.dtype = dtype
        self.scheduler_config = pipe.scheduler.config
        for module in self._frozen_modules():
            module.requires_grad_(False)
            module.eval()
        pipe.to(self.device)
        # Only cast when needed: diffusers warns on a dtype cast of modules it keeps in float32.
        denoiser.to(self.device)
        if denoiser.dtype != dtype:
            denoiser.to(dtype=dtype)

    def _frozen_modules(self) -> list[nn.Module]:
        names = ["vae", "text_encoder", "text_encoder_2", "text_encoder_3"]
        return [m for m in (getattr(self.pipe, n, None) for n in names) if isinstance(m, nn.Module)]

    # -- family-specific -------------------------------------------------------------------------
    def encode(self, prompts: list[str]) -> Conditioning:
        raise NotImplementedError

    def forward(self, latents: torch.Tensor, model_time: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        raise NotImplementedError

    # -- shared ----------------------------------------------------------------------------------
    def schedule(self, num_steps: int):
        cls = FlowSchedule if self.family == "flow" else DDIMSchedule
        return cls(self.scheduler_config, num_steps)

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        cfg = self.denoiser.config
        return (cfg.in_channels, cfg.sample_size, cfg.sample_size)

    def predict(self, latents, model_time, cond: Conditioning, uncond: Conditioning | None = None,
                guidance_scale: float = 1.0) -> torch.Tensor:
        """Denoiser output in float32, with classifier-free guidance when guidance_scale > 1:
        out = out_uncond + w * (out_cond - out_uncond)."""
        t = torch.as_tensor(model_time, device=self.device).expand(latents.shape[0])
        if guidance_scale <= 1.0 or uncond is None:
            return self.forward(latents, t, cond).to(torch.float32)
        both = self.forward(torch.cat([latents, latents]), torch.cat([t, t]), Conditioning.cat([uncond, cond]))
        out_u, out_c = both.to(torch.float32).chunk(2)
        return out_u + guidance_scale * (out_c - out_u)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents to images in [0, 1]; pixel-space models (no VAE) decode as identity."""
        x = latents
        if self.vae is not None:
            cfg = self.vae.config
            shift = getattr(cfg, "shift_factor", None) or 0.0
            x = self.vae.decode((latents / cfg.scaling_factor + shift).to(self.vae.dtype)).sample
        return (x.to(torch.float32) / 2 + 0.5).clamp(0, 1)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.denoiser.parameters() if p.requires_grad]

    def save_pretrained(self, directory) -> None:
        """Save the whole pipeline with the current denoiser; LoRA adapters are fused into a copy,
        so the result loads with ``load_model`` like any base model."""
        import copy

        denoiser = self.denoiser
        if getattr(denoiser, "peft_config", None):
            denoiser = copy.deepcopy(denoiser)
            denoiser.fuse_lora()
            denoiser.unload_lora()
        name = "transformer" if getattr(self.pipe, "transformer", None) is not None else "unet"
        original = getattr(self.pipe, name)
        self.pipe.register_modules(**{name: denoiser})
        try:
            self.pipe.save_pretrained(directory)
        finally:
            self.pipe.register_modules(**{name: original})

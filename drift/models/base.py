"""The adapter every model family implements: encode prompts, denoise, decode.

The trainer and the rollout only talk to this interface; one subclass per denoiser family
(``unet.py``, ``sd3.py``, ``flux.py``) fills in prompt encoding and the denoiser call, and one
line in ``drift.models.loading.ADAPTERS`` registers it.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import nn

from drift.errors import ConfigError
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
    Images are returned as float32 tensors in [0, 1], shape (B, C, H, W). ``height`` / ``width``
    are the image size in pixels (None: the pipeline's default); ``guidance`` is the guidance
    input of guidance-distilled denoisers (not classifier-free guidance), ignored by the others.

    A new family is one file with a subclass and one line in ``drift.models.loading.ADAPTERS``.
    The subclass provides:

    * ``denoiser_class`` and ``denoiser_attr``: the diffusers denoiser class that identifies the
      family and the pipeline attribute that holds it; ``families``: the sampler families it
      supports; ``description``: a few words for error messages;
    * ``encode(prompts) -> Conditioning``: the text conditioning in float32, batch first. Prompt
      noise perturbs every tensor of a ``Conditioning``: inputs that are not prompt content
      (position ids, masks) stay out of it and are built in ``forward``;
    * ``forward(latents, model_time, cond)``: the raw denoiser output for latents of
      ``latent_shape`` at the schedule's ``model_time``, in the denoiser's dtype.

    and overrides, where the pipeline differs from the defaults below: ``latent_shape`` (C, H / f,
    W / f), ``schedule`` (the scheduler's own discretisation), ``decode`` (VAE with scaling and
    shift factors), ``default_resolution`` and ``resolution_multiple``.
    """

    family: str
    denoiser_class: type[nn.Module]
    denoiser_attr: str
    families: tuple[str, ...] = ("flow", "eps")
    description: str = ""

    def __init__(self, pipe, denoiser: nn.Module, family: str, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32, height: int | None = None, width: int | None = None,
                 guidance: float | None = None):
        self.pipe = pipe
        self.denoiser = denoiser
        # What ``forward`` calls: the denoiser, or the trainer's data-parallel wrapper of it (DDP,
        # FSDP) once accelerate has prepared it. ``denoiser`` stays the bare module.
        self.forward_module: nn.Module = denoiser
        self.vae = getattr(pipe, "vae", None)
        self.family = family
        self.device = torch.device(device)
        self.dtype = dtype
        self.guidance = guidance
        self.scheduler_config = pipe.scheduler.config
        default_height, default_width = self.default_resolution()
        self.height, self.width = height or default_height, width or default_width
        if self.height % self.resolution_multiple or self.width % self.resolution_multiple:
            raise ConfigError(f"image size {self.height} x {self.width} is not a multiple of {self.resolution_multiple} "
                              f"pixels, which {type(self).__name__} needs: set model.height and model.width")
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
    @property
    def vae_scale_factor(self) -> int:
        """Pixels per latent cell: 2^(VAE blocks - 1), or 1 for pixel-space models."""
        return 1 if self.vae is None else 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def resolution_multiple(self) -> int:
        """Image sizes must be multiples of this many pixels."""
        return self.vae_scale_factor

    def default_resolution(self) -> tuple[int, int]:
        """The pipelines' default size: the denoiser's sample_size latent cells."""
        size = self.denoiser.config.sample_size * self.vae_scale_factor
        return size, size

    def schedule(self, num_steps: int):
        cls = FlowSchedule if self.family == "flow" else DDIMSchedule
        return cls(self.scheduler_config, num_steps)

    @property
    def latent_shape(self) -> tuple[int, ...]:
        f = self.vae_scale_factor
        return (self.denoiser.config.in_channels, self.height // f, self.width // f)

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
        original = getattr(self.pipe, self.denoiser_attr)
        self.pipe.register_modules(**{self.denoiser_attr: denoiser})
        try:
            self.pipe.save_pretrained(directory)
        finally:
            self.pipe.register_modules(**{self.denoiser_attr: original})

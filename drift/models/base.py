"""The adapter every model family implements: encode prompts, denoise, decode.

The trainer and the rollout only talk to this interface; one subclass per denoiser family
(``unet.py``, ``sd3.py``, ``flux.py``) fills in prompt encoding and the denoiser call, and one
line in ``drift.models.loading.ADAPTERS`` registers it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from typing import ClassVar

import torch
from diffusers.utils.torch_utils import randn_tensor
from torch import nn

from drift.errors import ConfigError
from drift.method.prompt_noise import anneal_condition
from drift.sampling.schedules import DDIMSchedule, FlowSchedule

Field = torch.Tensor | list[torch.Tensor]


def _take(value: Field, index) -> Field:
    if isinstance(value, torch.Tensor):
        return value[index]
    picked = range(len(value))[index] if isinstance(index, slice) else torch.as_tensor(index).reshape(-1).tolist()
    return [value[i] for i in picked]


@dataclass
class Conditioning:
    """Text conditioning of a batch, batch first.

    ``embeds``: token embeddings (B, L, D), or a list of B per-prompt tensors (L_i, D) for families
    that take sequences of their own length (Z-Image); ``pooled``: a pooled vector (B, D') for families
    that use one; ``mask``: an attention mask over the tokens (B, L) for families that use one
    (Qwen-Image). The ``CONTENT`` fields are what prompt noise perturbs; the mask says which tokens
    exist and is never perturbed.
    """

    embeds: Field
    pooled: torch.Tensor | None = None
    mask: torch.Tensor | None = None

    CONTENT: ClassVar[tuple[str, ...]] = ("embeds", "pooled")

    def _present(self) -> list[str]:
        return [f.name for f in fields(self) if getattr(self, f.name) is not None]

    def __len__(self) -> int:
        return len(self.embeds)

    def __getitem__(self, index) -> Conditioning:
        return replace(self, **{name: _take(getattr(self, name), index) for name in self._present()})

    @staticmethod
    def cat(items: list[Conditioning]) -> Conditioning:
        def join(values: list[Field]) -> Field:
            return torch.cat(values) if isinstance(values[0], torch.Tensor) else [t for v in values for t in v]

        return replace(items[0], **{name: join([getattr(c, name) for c in items]) for name in items[0]._present()})

    def content(self) -> dict[str, Field]:
        """The present ``CONTENT`` fields by name."""
        return {name: getattr(self, name) for name in self.CONTENT if getattr(self, name) is not None}

    def map_content(self, fn: Callable[..., torch.Tensor], *others: Conditioning) -> Conditioning:
        """Apply ``fn(tensor, *the same field of others)`` to each present content field: to the batch
        tensor, or to each per-prompt tensor of a list field as a batch of one."""

        def apply(name: str) -> Field:
            values = [getattr(c, name) for c in (self, *others)]
            if isinstance(values[0], torch.Tensor):
                return fn(*values)
            return [fn(*(v[k][None] for v in values))[0] for k in range(len(values[0]))]

        return replace(self, **{name: apply(name) for name in self.content()})


class T2IModel:
    """A text-to-image model: a trainable ``denoiser`` plus frozen text encoders and VAE.

    ``family`` is 'flow' (velocity prediction, rectified flow) or 'eps' (noise prediction, DDIM).
    Images are returned as float32 tensors in [0, 1], shape (B, C, H, W). The keyword options are
    ``drift.config.ModelOptions``' fields, each None for the pipeline's default: ``height`` /
    ``width`` the image size in pixels; ``guidance`` the guidance input of guidance-distilled
    denoisers (not classifier-free guidance), ignored by the others; ``max_sequence_length`` the
    text encoder's token count; ``text_encoder_out_layers`` the text encoder's hidden states that
    form the conditioning; ``cfg_normalization`` and ``cfg_truncation`` how classifier-free guidance
    is bounded. Families read the ones their pipeline has and ignore the others.

    The denoiser module a call runs is passed explicitly (``denoiser=``, default the bare
    ``denoiser``): the trainer passes the module accelerate prepared (DDP, FSDP) or the reference
    policy, and the adapter itself is never changed by training.

    A new family is one file with a subclass and one line in ``drift.models.loading.ADAPTERS``.
    The subclass provides:

    * ``denoiser_class`` and ``denoiser_attr``: the diffusers denoiser class that identifies the
      family and the pipeline attribute that holds it; ``families``: the sampler families it
      supports; ``description``: a few words for error messages;
    * ``encode(prompts) -> Conditioning``: the text conditioning in float32, batch first. Inputs
      that are not prompt content (position ids) are built in ``forward``; masks travel in the
      ``Conditioning``, outside prompt noise;
    * ``forward(denoiser, latents, model_time, cond)``: the raw output of ``denoiser`` for latents of
      ``latent_shape`` at the schedule's ``model_time``, in the denoiser's dtype.

    and overrides, where the pipeline differs from the defaults below: ``latent_shape`` (C, H / f,
    W / f), ``initial_latents`` (the pipeline's draw of the starting noise), ``schedule`` (the
    scheduler's own discretisation), ``perturb_conditioning`` (where prompt noise acts),
    ``guided_outputs`` and ``combine_guidance`` (classifier-free guidance), ``decode`` (VAE with
    scaling and shift factors), ``default_resolution`` and ``resolution_multiple``.
    """

    family: str
    denoiser_class: type[nn.Module]
    denoiser_attr: str
    families: tuple[str, ...] = ("flow", "eps")
    description: str = ""

    def __init__(self, pipe, denoiser: nn.Module, family: str, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32, height: int | None = None, width: int | None = None,
                 guidance: float | None = None, max_sequence_length: int | None = None,
                 text_encoder_out_layers: tuple[int, ...] | None = None, cfg_normalization: float | None = None,
                 cfg_truncation: float | None = None):
        self.pipe = pipe
        self.denoiser = denoiser
        self.vae = getattr(pipe, "vae", None)
        self.family = family
        self.device = torch.device(device)
        self.dtype = dtype
        self.guidance = guidance
        self.requested_sequence_length = max_sequence_length
        self.text_encoder_out_layers = None if text_encoder_out_layers is None else tuple(text_encoder_out_layers)
        self.cfg_normalization = cfg_normalization
        self.cfg_truncation = cfg_truncation
        self.scheduler_config = pipe.scheduler.config
        default_height, default_width = self.default_resolution()
        self.height, self.width = height or default_height, width or default_width
        if self.height % self.resolution_multiple or self.width % self.resolution_multiple:
            raise ConfigError(f"image size {self.height} x {self.width} is not a multiple of "
                              f"{self.resolution_multiple} "
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

    def forward(self, denoiser: nn.Module, latents: torch.Tensor, model_time: torch.Tensor,
                cond: Conditioning) -> torch.Tensor:
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

    def initial_latents(self, generators: list[torch.Generator]) -> torch.Tensor:
        """The starting noise of one sample per generator, (B, *latent_shape) in float32, drawn as
        the family's pipeline draws it, so that a generator's seed gives the pipeline's image."""
        return randn_tensor((len(generators), *self.latent_shape), generator=generators, device=self.device,
                            dtype=torch.float32)

    def perturb_conditioning(self, cond: Conditioning, noise: Conditioning, g: float, pn) -> Conditioning:
        """Prompt noise at annealing weight ``g`` (``pn`` a ``drift.sampling.rollout.PromptNoise``):
        ``anneal_condition`` on every content field of ``cond`` with the same field of ``noise``."""
        return cond.map_content(lambda y, n: anneal_condition(y, n, g, pn.scale, pn.rescale, pn.psi, pn.form), noise)

    def guided_outputs(self, denoiser: nn.Module, latents: torch.Tensor, t: torch.Tensor, cond: Conditioning,
                       uncond: Conditioning) -> tuple[torch.Tensor, torch.Tensor]:
        """The denoiser's (negative, positive) outputs for classifier-free guidance, in float32: one
        pass over both halves stacked."""
        both = self.forward(denoiser, torch.cat([latents, latents]), torch.cat([t, t]),
                            Conditioning.cat([uncond, cond]))
        out_u, out_c = both.to(torch.float32).chunk(2)
        return out_u, out_c

    def combine_guidance(self, out_uncond: torch.Tensor, out_cond: torch.Tensor, scale: float) -> torch.Tensor:
        """Classifier-free guidance: out = out_uncond + w (out_cond - out_uncond)."""
        return out_uncond + scale * (out_cond - out_uncond)

    def predict(self, latents, model_time, cond: Conditioning, uncond: Conditioning | None = None,
                guidance_scale: float = 1.0, denoiser: nn.Module | None = None) -> torch.Tensor:
        """Output of ``denoiser`` (default the bare denoiser) in float32, guided by ``uncond`` when
        guidance_scale > 1."""
        denoiser = self.denoiser if denoiser is None else denoiser
        t = torch.as_tensor(model_time, device=self.device).expand(latents.shape[0])
        if guidance_scale <= 1.0 or uncond is None:
            return self.forward(denoiser, latents, t, cond).to(torch.float32)
        out_u, out_c = self.guided_outputs(denoiser, latents, t, cond, uncond)
        return self.combine_guidance(out_u, out_c, guidance_scale)

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

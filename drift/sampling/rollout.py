"""Rollouts: groups of G samples per prompt with everything the update needs to rescore them.

All randomness of a sample comes from its seed: the initial latent and the step noise from a
generator seeded with 2 * seed, the prompt-embedding noise from one seeded with 2 * seed + 1.
A sample is therefore reproducible whatever batch it was drawn in, and the update regenerates
the exact conditioning its rollout used.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers.utils.torch_utils import randn_tensor
from torch import nn
from tqdm.auto import tqdm

from drift.config import SamplerSettings
from drift.errors import ConfigError
from drift.method.prompt_noise import Directions, anneal_weight, confine, principal_directions
from drift.models.base import Conditioning, T2IModel


@dataclass(frozen=True)
class PromptNoise:
    """Prompt-noise settings in force for one rollout (scale already decayed for the iteration)."""

    scale: float
    tau1: float
    tau2: float
    rescale: bool = False
    psi: float = 1.0
    form: str = "cads"  # drift.method.prompt_noise.FORMS
    floor: float = 0.0  # lower bound on the annealing weight g
    # the noise confined to principal directions, per content field of the conditioning; None: isotropic
    directions: dict[str, Directions] | None = None


@dataclass
class Rollout:
    prompts: list[str]  # (B,) the prompt of each sample
    group_ids: torch.Tensor  # (B,) which prompt group each sample belongs to
    seeds: torch.Tensor  # (B,) per-sample seed
    latents: torch.Tensor  # (B, T + 1, *model.latent_shape): x_0 (noise) .. x_T (final)
    log_probs: torch.Tensor  # (B, T) log-probability of each transition under the sampling policy
    cond: Conditioning  # (B, ...) clean prompt conditioning
    uncond: Conditioning | None  # (B, ...) negative-prompt conditioning when guidance > 1
    prompt_noise: PromptNoise | None
    images: torch.Tensor  # (B, C, H, W) in [0, 1]
    x0_preds: torch.Tensor | None  # (B, T, *model.latent_shape) predicted clean latents per step, if kept
    trainable: torch.Tensor  # (T,) bool: the stochastic steps; the others are deterministic, log-prob 0

    @property
    def num_steps(self) -> int:
        return self.log_probs.shape[1]


def sample_generators(seeds: torch.Tensor, offset: int) -> list[torch.Generator]:
    """One generator per sample: offset 0 draws its latents and step noise, 1 its prompt noise."""
    return [torch.Generator().manual_seed(2 * int(s) + offset) for s in seeds]


def condition_noise(cond: Conditioning, seeds: torch.Tensor,
                    directions: dict[str, Directions] | None = None) -> Conditioning:
    """Standard-normal noise shaped like the content of ``cond``, drawn from each sample's
    prompt-noise generator (field by field, in ``Conditioning.CONTENT`` order); with ``directions``,
    each field's confined to its principal directions (``drift.method.prompt_noise.confine``)."""
    gens = sample_generators(seeds, offset=1)

    def draw(name, value):
        if isinstance(value, torch.Tensor):
            n = randn_tensor(value.shape, generator=gens, device=value.device, dtype=torch.float32)
            return n if directions is None else confine(n, directions[name])
        return [randn_tensor(t.shape, generator=g, device=t.device, dtype=torch.float32) for t, g in zip(value, gens)]

    return Conditioning(**{name: draw(name, value) for name, value in cond.content().items()})


@torch.no_grad()
def prompt_directions(model: T2IModel, corpus: list[list[str]], k: int, batch_size: int = 256) -> dict[str, Directions]:
    """The ``k`` leading principal directions in which the captions of each group of a prompt corpus
    differ (``principal_directions`` with the groups), per content field of their conditioning,
    encoded by the model's own text encoders (the space prompt noise acts in)."""
    captions = [c for group in corpus for c in group]
    groups = torch.tensor([g for g, group in enumerate(corpus) for _ in group])
    cond = Conditioning.cat([model.encode(captions[i : i + batch_size]) for i in range(0, len(captions), batch_size)])
    fields = cond.content()
    if not all(isinstance(v, torch.Tensor) for v in fields.values()):
        raise ConfigError("drift.prompt_noise.directions 'principal' needs prompt embeddings of one length; this "
                          "model family encodes each prompt to a sequence of its own length")
    return {name: principal_directions(value.float().cpu(), k, groups) for name, value in fields.items()}


def conditioning_at(model: T2IModel, cond: Conditioning, noise: Conditioning | None, tau: float,
                    pn: PromptNoise | None) -> Conditioning:
    """The conditioning used at denoising time ``tau``: annealed noise when prompt noise is on,
    where the model's family puts it (``T2IModel.perturb_conditioning``)."""
    if pn is None or noise is None:
        return cond
    return model.perturb_conditioning(cond, noise, anneal_weight(tau, pn.tau1, pn.tau2, pn.floor), pn)


def _denoise(model: T2IModel, denoiser: nn.Module | None, schedule, x, cond, cond_noise, uncond,
             sampler: SamplerSettings, pn, gens, keep_x0, progress, sde_steps):
    latents, log_probs, x0_preds = [x], [], []
    for i in tqdm(range(schedule.num_steps), desc="sampling", leave=False, disable=None if progress else True):
        c = conditioning_at(model, cond, cond_noise, schedule.tau(i), pn)
        out = model.predict(x, schedule.model_time(i), c, uncond, sampler.guidance_scale, denoiser=denoiser)
        # Outside the SDE window the step is deterministic; it still draws (and discards) its noise,
        # so that the window's steps see the noise the full SDE sampler would give them.
        step = schedule.step(i, out, x, sampler.noise_level if sde_steps[i] else 0.0, generator=gens)
        if keep_x0:
            x0_preds.append(schedule.predict_x0(i, out, x))
        x = step.prev_sample
        latents.append(x)
        log_probs.append(step.log_prob)
    return torch.stack(latents, 1), torch.stack(log_probs, 1), (torch.stack(x0_preds, 1) if keep_x0 else None)


def expand_groups(prompts: list[str], group_size: int) -> tuple[list[str], torch.Tensor]:
    """One entry per sample: each prompt repeated ``group_size`` times, with its group index."""
    return [p for p in prompts for _ in range(group_size)], torch.arange(len(prompts)).repeat_interleave(group_size)


@torch.no_grad()
def rollout(model: T2IModel, prompts: list[str], group_size: int, seeds: torch.Tensor, num_steps: int,
            noise_level: float, guidance_scale: float = 1.0, prompt_noise: PromptNoise | None = None,
            keep_x0: bool = False, batch_size: int = 256, progress: bool = False,
            negative_prompt: str = "", sde_steps: torch.Tensor | None = None) -> Rollout:
    """Sample ``group_size`` images for each prompt (B = P * G, ``seeds`` of shape (B,)); with
    guidance_scale > 1 the guidance's negative branch is conditioned on ``negative_prompt``.
    ``sde_steps`` (T,) bool marks the steps sampled with ``noise_level`` (the SDE window; None: all),
    the others are deterministic. The sampler settings as loose arguments (the documented public
    form); ``sample_groups`` takes them as one ``SamplerSettings``."""
    sampler = SamplerSettings(num_steps=num_steps, noise_level=noise_level, guidance_scale=guidance_scale,
                              negative_prompt=negative_prompt)
    return sample_groups(model, prompts, group_size, seeds, sampler, prompt_noise=prompt_noise, keep_x0=keep_x0,
                         batch_size=batch_size, progress=progress, sde_steps=sde_steps)


def sample_groups(model: T2IModel, prompts: list[str], group_size: int, seeds: torch.Tensor,
                  sampler: SamplerSettings, **options) -> Rollout:
    """``rollout`` with its sampler settings as one value; ``options`` as in ``rollout_samples``."""
    sample_prompts, group_ids = expand_groups(prompts, group_size)
    return rollout_samples(model, sample_prompts, group_ids, seeds, sampler, **options)


@torch.no_grad()
def rollout_samples(model: T2IModel, sample_prompts: list[str], group_ids: torch.Tensor, seeds: torch.Tensor,
                    sampler: SamplerSettings, *, prompt_noise: PromptNoise | None = None, keep_x0: bool = False,
                    batch_size: int = 256, progress: bool = False, sde_steps: torch.Tensor | None = None,
                    denoiser: nn.Module | None = None) -> Rollout:
    """Sample one image per (prompt, group id, seed): any subset of a batch's samples, e.g. one
    process's shard, gives exactly the samples the whole batch would. ``denoiser`` is the module
    that denoises (default the model's bare denoiser; the trainer passes the one it prepared).
    ``sampler.model_options`` are the ones ``model`` was loaded with; the rollout does not apply them."""
    seeds = torch.as_tensor(seeds, dtype=torch.long)
    if seeds.shape != (len(sample_prompts),):
        raise ValueError(f"need one seed per sample: {len(sample_prompts)}, got {tuple(seeds.shape)}")
    num_steps = sampler.num_steps
    sde_steps = torch.ones(num_steps, dtype=torch.bool) if sde_steps is None else torch.as_tensor(sde_steps).bool()
    if sde_steps.shape != (num_steps,):
        raise ValueError(f"need one SDE flag per step: {num_steps}, got {tuple(sde_steps.shape)}")
    schedule = model.schedule(num_steps)
    unique = sorted(set(sample_prompts))
    cond = model.encode(unique)[torch.tensor([unique.index(p) for p in sample_prompts], device=model.device)]
    guided = sampler.guidance_scale > 1
    uncond = model.encode([sampler.negative_prompt] * len(sample_prompts)) if guided else None
    parts = []
    for idx in _chunks(len(sample_prompts), batch_size):
        gens = sample_generators(seeds[idx], offset=0)
        x = model.initial_latents(gens)
        noise = None if prompt_noise is None else condition_noise(cond[idx], seeds[idx], prompt_noise.directions)
        parts.append(_denoise(model, denoiser, schedule, x, cond[idx], noise, None if uncond is None else uncond[idx],
                              sampler, prompt_noise, gens, keep_x0, progress, sde_steps))
    latents = torch.cat([p[0] for p in parts])
    return Rollout(
        prompts=list(sample_prompts), group_ids=torch.as_tensor(group_ids), seeds=seeds, latents=latents,
        log_probs=torch.cat([p[1] for p in parts]),
        cond=cond, uncond=uncond, prompt_noise=prompt_noise,
        images=torch.cat([model.decode(latents[idx, -1]) for idx in _chunks(len(sample_prompts), batch_size)]),
        x0_preds=torch.cat([p[2] for p in parts]) if keep_x0 else None, trainable=sde_steps,
    )


def _chunks(n: int, size: int) -> list[slice]:
    return [slice(s, s + size) for s in range(0, n, size)]

"""Stochastic sampler steps that return the log-probability of the step they took.

Two families, one function each, written like a diffusers scheduler step: a small pure
function of tensors. All step math runs in float32 whatever the model's dtype.

* ``flow_sde_step``: the Flow-GRPO "sde" step for rectified-flow models
  (x_sigma = (1 - sigma) x0 + sigma * noise, velocity = noise - x0, sigma decreasing to 0).
* ``ddim_step_with_logprob``: the DDPO step for epsilon-prediction models (DDIM with eta > 0).

``log_prob`` is the Gaussian log-density of ``prev_sample`` under N(mean, std_step^2),
averaged over all non-batch dimensions (the Flow-GRPO / DDPO convention). A deterministic
step (zero noise) has no density; its ``log_prob`` is reported as 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from diffusers.utils.torch_utils import randn_tensor

_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


@dataclass
class StepOutput:
    prev_sample: torch.Tensor
    log_prob: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor  # standard deviation of prev_sample (per sample, broadcastable)


def _as_batch_tensor(value, like: torch.Tensor) -> torch.Tensor:
    """A float or per-sample tensor as float32, broadcastable to ``like`` (B, 1, 1, ...)."""
    t = torch.as_tensor(value, dtype=torch.float32, device=like.device)
    if t.ndim == 0:
        return t.reshape([1] * like.ndim)
    return t.reshape(t.shape[0], *([1] * (like.ndim - 1)))


def gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """log N(x; mean, std^2) averaged over non-batch dimensions; 0 where std == 0.

    log p = -(x - mean)^2 / (2 std^2) - log(std) - log(sqrt(2 pi))
    """
    std = std.expand_as(mean)
    safe_std = torch.where(std > 0, std, torch.ones_like(std))
    lp = -((x.detach() - mean) ** 2) / (2 * safe_std**2) - torch.log(safe_std) - _LOG_SQRT_2PI
    lp = torch.where(std > 0, lp, torch.zeros_like(lp))
    return lp.mean(dim=tuple(range(1, lp.ndim)))


def _draw_or_take(prev_sample, mean, std, generator):
    """The stored transition if given, else a draw; ``generator`` may be one per sample (a list)."""
    if prev_sample is not None:
        return prev_sample.to(torch.float32)
    noise = randn_tensor(mean.shape, generator=generator, device=mean.device, dtype=torch.float32)
    return mean + std * noise


def flow_sde_step(
    model_output: torch.Tensor,
    sample: torch.Tensor,
    sigma,
    sigma_next,
    noise_level: float,
    prev_sample: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    sigma_max=None,
) -> StepOutput:
    """One Flow-GRPO SDE step from ``sigma`` to ``sigma_next`` with its log-probability.

    dt   = sigma_next - sigma                                   (negative)
    std  = noise_level * sqrt(sigma / (1 - sigma))              (sigma = 1 uses sigma_max below)
    mean = sample * (1 + std^2 dt / (2 sigma))
           + model_output * (1 + std^2 (1 - sigma) / (2 sigma)) * dt
    prev_sample = mean + std * sqrt(-dt) * eps,  eps ~ N(0, I)

    ``sigma_max`` is the largest sigma below 1 of the schedule, used in the denominator where
    sigma is exactly 1; it defaults to ``sigma_next``, which is that value for a schedule's first
    step. With ``noise_level = 0`` the step is the deterministic Euler step ``sample + v dt``.
    Pass ``prev_sample`` to score a stored transition instead of drawing a new one.
    """
    model_output = model_output.to(torch.float32)
    sample = sample.to(torch.float32)
    sigma_t = _as_batch_tensor(sigma, sample)
    sigma_n = _as_batch_tensor(sigma_next, sample)
    sigma_cap = sigma_n if sigma_max is None else _as_batch_tensor(sigma_max, sample)
    dt = sigma_n - sigma_t
    denom = 1 - torch.where(sigma_t >= 1, sigma_cap, sigma_t)
    std_t = noise_level * torch.sqrt(sigma_t / denom)
    mean = (sample * (1 + std_t**2 * dt / (2 * sigma_t))
            + model_output * (1 + std_t**2 * (1 - sigma_t) / (2 * sigma_t)) * dt)
    step_std = std_t * torch.sqrt(-dt)
    prev = _draw_or_take(prev_sample, mean, step_std, generator)
    return StepOutput(prev_sample=prev, log_prob=gaussian_log_prob(prev, mean, step_std), mean=mean, std=step_std)


def ddim_step_with_logprob(
    model_output: torch.Tensor,
    sample: torch.Tensor,
    alpha_prod_t,
    alpha_prod_t_prev,
    eta: float,
    prev_sample: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> StepOutput:
    """One DDIM step (Song et al. 2021, eq. 12) with its log-probability, as in DDPO.

    x0_hat   = (x_t - sqrt(1 - a_t) eps) / sqrt(a_t)
    sigma_t  = eta * sqrt((1 - a_prev) / (1 - a_t)) * sqrt(1 - a_t / a_prev)
    mean     = sqrt(a_prev) x0_hat + sqrt(1 - a_prev - sigma_t^2) eps
    prev_sample = mean + sigma_t * z,  z ~ N(0, I)

    ``alpha_prod_t`` / ``alpha_prod_t_prev`` are the cumulative alphas at the current and the
    next timestep (floats or per-sample tensors; see ``DDIMSchedule`` for taking them from a
    diffusers ``DDIMScheduler``). With ``eta = 0`` the step is deterministic DDIM.
    """
    model_output = model_output.to(torch.float32)
    sample = sample.to(torch.float32)
    a_t = _as_batch_tensor(alpha_prod_t, sample)
    a_prev = _as_batch_tensor(alpha_prod_t_prev, sample)
    x0_hat = (sample - torch.sqrt(1 - a_t) * model_output) / torch.sqrt(a_t)
    variance = (1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)
    std_t = eta * torch.sqrt(variance.clamp(min=0))
    direction = torch.sqrt((1 - a_prev - std_t**2).clamp(min=0)) * model_output
    mean = torch.sqrt(a_prev) * x0_hat + direction
    prev = _draw_or_take(prev_sample, mean, std_t, generator)
    return StepOutput(prev_sample=prev, log_prob=gaussian_log_prob(prev, mean, std_t), mean=mean, std=std_t)


def flow_predict_x0(model_output: torch.Tensor, sample: torch.Tensor, sigma) -> torch.Tensor:
    """Predicted clean sample of a rectified-flow model: x0_hat = x_sigma - sigma * v."""
    return sample.to(torch.float32) - _as_batch_tensor(sigma, sample) * model_output.to(torch.float32)


def eps_predict_x0(model_output: torch.Tensor, sample: torch.Tensor, alpha_prod_t) -> torch.Tensor:
    """Predicted clean sample of an epsilon model: x0_hat = (x_t - sqrt(1 - a_t) eps) / sqrt(a_t)."""
    a_t = _as_batch_tensor(alpha_prod_t, sample)
    return (sample.to(torch.float32) - torch.sqrt(1 - a_t) * model_output.to(torch.float32)) / torch.sqrt(a_t)

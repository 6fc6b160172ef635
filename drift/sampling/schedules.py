"""Bind a diffusers scheduler's discretisation to the step functions of ``drift.sampling``.

A schedule answers, for step i of a rollout: the time value the denoiser expects, the
denoising time tau in [0, 1] (1 = pure noise) that prompt-noise annealing uses, the stochastic
step with its log-probability, and the predicted clean sample.
"""

from __future__ import annotations

import torch
from diffusers import DDIMScheduler, FlowMatchEulerDiscreteScheduler

from drift.sampling.transitions import (
    StepOutput,
    ddim_step_with_logprob,
    eps_predict_x0,
    flow_predict_x0,
    flow_sde_step,
)


class FlowSchedule:
    """Rectified flow on the sigmas of a ``FlowMatchEulerDiscreteScheduler`` (sigma 1 -> 0).

    ``sigmas`` and ``mu`` go to the scheduler's ``set_timesteps`` as a pipeline passes them: the
    unshifted sigmas a pipeline chooses (None: the scheduler's own spacing) and, for schedulers with
    ``use_dynamic_shifting``, the resolution-dependent shift mu (sigma' = e^mu / (e^mu + 1 / sigma - 1)).
    """

    def __init__(self, scheduler_config, num_steps: int, sigmas: list[float] | None = None, mu: float | None = None):
        scheduler = FlowMatchEulerDiscreteScheduler.from_config(scheduler_config)
        scheduler.set_timesteps(num_steps, sigmas=sigmas, mu=mu)
        self.num_steps = num_steps
        self.sigmas = scheduler.sigmas.to(torch.float32)
        self.timesteps = scheduler.timesteps.to(torch.float32)
        below_one = self.sigmas[(self.sigmas < 1) & (self.sigmas > 0)]
        self.sigma_max = float(below_one.max()) if below_one.numel() else 0.0

    def model_time(self, i: int) -> torch.Tensor:
        return self.timesteps[i]

    def tau(self, i: int) -> float:
        return float(self.sigmas[i])

    def step(self, i, model_output, sample, noise_level, prev_sample=None, generator=None) -> StepOutput:
        return flow_sde_step(
            model_output, sample, float(self.sigmas[i]), float(self.sigmas[i + 1]), noise_level,
            prev_sample=prev_sample, generator=generator, sigma_max=self.sigma_max,
        )

    def predict_x0(self, i, model_output, sample) -> torch.Tensor:
        return flow_predict_x0(model_output, sample, float(self.sigmas[i]))


class DDIMSchedule:
    """DDIM on the timesteps of a ``DDIMScheduler`` built from the pipeline's scheduler config."""

    def __init__(self, scheduler_config, num_steps: int):
        scheduler = DDIMScheduler.from_config(scheduler_config)
        scheduler.set_timesteps(num_steps)
        self.num_steps = num_steps
        self.num_train_timesteps = scheduler.config.num_train_timesteps
        self.timesteps = scheduler.timesteps
        stride = self.num_train_timesteps // num_steps
        alphas = scheduler.alphas_cumprod.to(torch.float32)
        final = float(scheduler.final_alpha_cumprod)
        self.alpha = [float(alphas[t]) for t in self.timesteps]
        self.alpha_prev = [float(alphas[t - stride]) if t - stride >= 0 else final for t in self.timesteps]

    def model_time(self, i: int) -> torch.Tensor:
        return self.timesteps[i]

    def tau(self, i: int) -> float:
        return float(self.timesteps[i]) / self.num_train_timesteps

    def step(self, i, model_output, sample, noise_level, prev_sample=None, generator=None) -> StepOutput:
        return ddim_step_with_logprob(
            model_output, sample, self.alpha[i], self.alpha_prev[i], noise_level,
            prev_sample=prev_sample, generator=generator,
        )

    def predict_x0(self, i, model_output, sample) -> torch.Tensor:
        return eps_predict_x0(model_output, sample, self.alpha[i])

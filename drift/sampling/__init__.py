"""Sampling with log-probabilities: transition functions, scheduler bindings, rollouts.

``transitions`` holds the stochastic steps (one small pure function per family), ``schedules``
binds a diffusers scheduler's discretisation to them, ``rollout`` draws groups of samples with
everything the update needs to rescore them.
"""

from drift.sampling.transitions import StepOutput, ddim_step_with_logprob, flow_sde_step

__all__ = ["StepOutput", "ddim_step_with_logprob", "flow_sde_step"]

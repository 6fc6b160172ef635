"""Hyperparameters that change over training iterations."""

from __future__ import annotations

import math


def linear_schedule(iteration: int, start: float, end: float, iterations: int) -> float:
    """v(i) = start + (end - start) * min(i / iterations, 1): linear from ``start`` at iteration 0
    to ``end`` at ``iterations``, constant afterwards; ``start`` throughout when iterations = 0."""
    if iterations <= 0:
        return start
    return start + (end - start) * min(iteration / iterations, 1.0)


def controlled_weight(weight: float, diversity: float, target: float, gain: float, low: float, high: float) -> float:
    """One step of the diversity controller on the shaping weight lambda.

    lambda' = clip(lambda * exp(kappa * clip(1 - D / D*, -1, 1)), lambda_min, lambda_max), with D the
    group diversity of this iteration's rollouts, D* the target and kappa the gain: lambda grows
    while the groups are less diverse than the target and shrinks while they are more, by at most a
    factor exp(kappa) per iteration. A proportional controller in log space, as the adaptive KL
    coefficient of PPO (Schulman et al. 2017) and of Ziegler et al. 2019, with diversity in place
    of the KL: alignment is free to rise as long as diversity holds the target.
    """
    error = min(max(1.0 - diversity / target, -1.0), 1.0)
    return min(max(weight * math.exp(gain * error), low), high)

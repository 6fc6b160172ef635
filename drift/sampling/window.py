"""The SDE window: which steps of a rollout are stochastic, carry a log-probability and are trained.

Steps inside the window use the configured noise level; steps outside it use noise level 0,
which is the deterministic step (Euler for rectified flow, DDIM with eta 0 for epsilon models).
Every sample still starts from its own initial noise, so a group keeps its spread outside the
window too. The window of an iteration depends only on (placement settings, iteration, rng),
and the trainer seeds the rng with (run seed, iteration): every process, and a resumed run,
draws the same window.
"""

from __future__ import annotations

import numpy as np
import torch

from drift.config import SdeWindowSection


def window_start(window: SdeWindowSection, num_steps: int, iteration: int, rng: np.random.Generator) -> int:
    """First step of the window at ``iteration``.

    fixed:   start
    random:  uniform on [start, max_start]               (one draw from ``rng``)
    sliding: start + (iteration // slide_every) mod (max_start - start + 1)
    with max_start = num_steps - size unless set.
    """
    if window.placement == "fixed":
        return window.start
    last = num_steps - window.size if window.max_start is None else window.max_start
    if window.placement == "random":
        return int(rng.integers(window.start, last + 1))
    return window.start + (iteration // window.slide_every) % (last - window.start + 1)


def sde_steps(window: SdeWindowSection, num_steps: int, iteration: int, rng: np.random.Generator) -> torch.Tensor:
    """(T,) bool mask of the stochastic (trainable) steps; all True without a window."""
    if window.size is None or window.size >= num_steps:
        return torch.ones(num_steps, dtype=torch.bool)
    start = window_start(window, num_steps, iteration, rng)
    mask = torch.zeros(num_steps, dtype=torch.bool)
    mask[start : start + window.size] = True
    return mask

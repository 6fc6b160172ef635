"""Public import path of the rollout (DESIGN.md): the code lives in ``drift.sampling.rollout``."""

from drift.sampling.rollout import Rollout, rollout

__all__ = ["Rollout", "rollout"]

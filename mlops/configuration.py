"""The run configuration a step works with."""

from __future__ import annotations

from pathlib import Path

from drift.config import DriftConfig, parse_config


def step_config(config: dict, reward_head: Path | None = None) -> DriftConfig:
    """The pipeline's run configuration, plus the learned preference reward when the retraining
    pipeline hands the step a reward-head artifact (a local copy of it)."""
    cfg = parse_config(config)
    return cfg if reward_head is None else cfg.with_preference_reward(str(reward_head))

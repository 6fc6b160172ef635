"""The run configuration a step works with."""

from __future__ import annotations

from pathlib import Path

from drift.config import DriftConfig, parse_config


def pipeline_config(config: dict) -> DriftConfig:
    """The run configuration of a `zenml pipeline run` (its ``parameters.config``), validated once
    when the pipeline is composed, before any step runs: a bad field stops the run with a message
    that names it. Steps then receive the typed value."""
    return parse_config(config, source="the run configuration's parameters.config")


def step_config(config: DriftConfig, reward_head: Path | None = None) -> DriftConfig:
    """The pipeline's run configuration, plus the learned preference reward when the retraining
    pipeline hands the step a reward-head artifact (a local copy of it)."""
    return config if reward_head is None else config.with_preference_reward(str(reward_head))

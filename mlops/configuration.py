"""The run configuration a step works with."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from drift.config import DriftConfig, parse_config
from drift.data.provenance import content_digest


def pipeline_config(config: dict) -> DriftConfig:
    """The run configuration of a `zenml pipeline run` (its ``parameters.config``), validated once
    when the pipeline is composed, before any step runs: a bad field stops the run with a message
    that names it. Steps then receive the typed value."""
    return parse_config(config, source="the run configuration's parameters.config")


def _by_content(directory: Path) -> Path:
    """A local copy of ``directory`` at a path named by its contents (made once per machine)."""
    digest = content_digest(directory)[:16]
    target = Path(tempfile.gettempdir()) / "drift-reward-heads" / digest
    if not target.is_dir():
        partial = target.with_name(f"{digest}.{os.getpid()}.tmp")
        shutil.copytree(directory, partial, dirs_exist_ok=True)
        try:
            os.rename(partial, target)
        except OSError:  # another process put it there first
            shutil.rmtree(partial, ignore_errors=True)
    return target


def step_config(config: DriftConfig, reward_head: Path | None = None) -> DriftConfig:
    """The pipeline's run configuration, plus the learned preference reward when the retraining
    pipeline hands the step a reward-head artifact. The head is referred to by a path named by its
    contents, not by the artifact's scratch copy: one head gives one configuration in every step and
    every run, so that a later run of it finds this one's run folder and checkpoints."""
    return config if reward_head is None else config.with_preference_reward(str(_by_content(reward_head)))

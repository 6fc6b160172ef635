"""Step 4: DRIFT fine-tuning, with per-iteration metrics in MLflow and checkpoints on disk."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import mlflow
import pandas as pd
from zenml import get_step_context, step

from drift.build import build_trainer
from drift.config import parse_config
from drift.trainer import latest_checkpoint
from steps import TRACKER


@step(enable_cache=False, experiment_tracker=TRACKER)
def drift_finetune(config: dict, prompts: pd.DataFrame) -> tuple[
        Annotated[str, "model_dir"], Annotated[list, "trajectory"]]:
    """Trains into run.output_dir/<pipeline run name>; resumes from a checkpoint found there."""
    cfg = parse_config(config)
    out = Path(cfg.run.output_dir) / get_step_context().pipeline_run.name
    trainer = build_trainer(cfg, prompts=prompts)
    if (ckpt := latest_checkpoint(out / "checkpoints")) is not None:
        trainer.load_checkpoint(ckpt)
    mlflow.log_params({"method": _method_name(cfg), "iterations": cfg.train.iterations, "lr": cfg.train.lr,
                       "group_size": cfg.sampling.group_size, "lora": cfg.train.lora.enabled})
    trajectory = trainer.train(lambda metrics, it: mlflow.log_metrics(metrics, step=it),
                               checkpoint_dir=out / "checkpoints", progress=True)
    with trainer.evaluation_weights():
        trainer.model.save_pretrained(out / "model")
    return str(out / "model"), trajectory


def _method_name(cfg) -> str:
    d = cfg.drift
    parts = [n for n, on in (("subset", d.subset.enabled), ("prompt_noise", d.prompt_noise.enabled),
                             ("shaping", d.shaping.enabled)) if on]
    return "drift[" + ",".join(parts) + "]" if parts else "grpo"

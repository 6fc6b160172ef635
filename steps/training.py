"""Step 4: DRIFT fine-tuning, with per-iteration metrics in MLflow and checkpoints on disk."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import mlflow
import pandas as pd
from zenml import get_step_context, step

from drift.build import build_parts
from drift.config import parse_config
from drift.training.run import run_training
from steps import TRACKER


@step(enable_cache=False, experiment_tracker=TRACKER)
def drift_finetune(config: dict, prompts: pd.DataFrame) -> tuple[
        Annotated[str, "model_dir"], Annotated[list, "trajectory"]]:
    """Trains into run.output_dir/<pipeline run name>; resumes from a checkpoint found there."""
    cfg = parse_config(config)
    out = Path(cfg.run.output_dir) / get_step_context().pipeline_run.name
    mlflow.log_params({"method": cfg.method_name, "iterations": cfg.train.iterations, "lr": cfg.train.lr,
                       "group_size": cfg.sampling.group_size, "lora": cfg.train.lora.enabled})
    run = run_training(cfg, out, build_parts(cfg, prompts=prompts),
                       callback=lambda metrics, it: mlflow.log_metrics(metrics, step=it))
    run.trainer.save_model(out / "model")
    return str(out / "model"), run.trainer.trajectory

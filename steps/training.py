"""Step 4: DRIFT fine-tuning, with per-iteration metrics in MLflow. The model leaves the step as an
artifact (the artifact store's copy is the only one); checkpoints stay in a scratch run directory
until the step succeeds, so that re-running a killed run's configuration resumes it."""

import shutil
import tempfile
from pathlib import Path
from typing import Annotated, Optional

import mlflow
import pandas as pd
from zenml import step

from drift.build import build_parts
from drift.plots import image_grid
from drift.training.run import run_key, run_training
from mlops.artifacts import PipelineArtifact
from mlops.configuration import step_config

PREVIEW_PROMPTS = 4


@step(enable_cache=False, experiment_tracker=True)
def drift_finetune(config: dict, prompts: pd.DataFrame, reward_head: Optional[Path] = None) -> tuple[
        Annotated[PipelineArtifact, "model"], Annotated[list, "trajectory"]]:
    cfg = step_config(config, reward_head)
    run_dir = Path(cfg.run.output_dir) / run_key(cfg)
    mlflow.log_params({"method": cfg.method_name, "iterations": cfg.train.iterations, "lr": cfg.train.lr,
                       "group_size": cfg.sampling.group_size, "lora": cfg.train.lora.enabled, "run_dir": run_dir})
    run = run_training(cfg, run_dir, build_parts(cfg, prompts=prompts), replay=True,
                       callback=lambda metrics, it: mlflow.log_metrics(metrics, step=it))
    if run.resumed_from is not None:
        mlflow.set_tag("resumed_from", str(run.resumed_from))
        print(f"resumed from {run.resumed_from}")
    trainer = run.trainer
    model_dir = Path(tempfile.mkdtemp(prefix="drift-model-"))
    trainer.save_model(model_dir)
    n = cfg.eval.samples_per_prompt
    preview = image_grid(trainer.last_evaluation.images[: PREVIEW_PROMPTS * n], n, upscale=4)
    shutil.rmtree(run_dir)
    return PipelineArtifact(model_dir, preview, temporary=True), trainer.trajectory

"""Step 4: DRIFT fine-tuning (mlops.finetuning), with per-iteration metrics in MLflow. The model
leaves the step as an artifact (the artifact store's copy is the only one)."""

import tempfile
from pathlib import Path
from typing import Annotated, Optional

import mlflow
import pandas as pd
from zenml import step

from drift.config import DriftConfig
from drift.training.run import run_key
from mlops.artifacts import ModelArtifact
from mlops.configuration import step_config
from mlops.finetuning import finetune, launch


@step(enable_cache=False, experiment_tracker=True)
def drift_finetune(config: DriftConfig, prompts: pd.DataFrame, reward_head: Optional[Path] = None) -> tuple[
        Annotated[ModelArtifact, "model"], Annotated[list, "trajectory"]]:
    cfg = step_config(config, reward_head)
    run_id = mlflow.active_run().info.run_id
    mlflow.log_params({"method": cfg.method_name, "iterations": cfg.train.iterations, "lr": cfg.train.lr,
                       "group_size": cfg.sampling.group_size, "lora": cfg.train.lora.enabled,
                       "processes": cfg.accelerate.num_processes, "run_dir": Path(cfg.run.output_dir) / run_key(cfg)})
    model_dir = Path(tempfile.mkdtemp(prefix="drift-model-"))  # consumed when the artifact is saved
    if cfg.accelerate.num_processes == 1:
        result = finetune(cfg, prompts, run_id, model_dir)
    else:
        with tempfile.TemporaryDirectory(prefix="drift-finetune-") as workdir:
            result = launch(cfg, prompts, run_id, mlflow.get_tracking_uri(), model_dir, Path(workdir))
    base_dir = Path(cfg.model.source) if Path(cfg.model.source).is_dir() else None
    return ModelArtifact(model_dir, result.preview, base_dir, temporary=True), result.trajectory

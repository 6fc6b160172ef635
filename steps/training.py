"""Step 4: DRIFT fine-tuning (mlops.finetuning) in a run folder of its own, with per-iteration
metrics in MLflow. The model leaves the step as an artifact; the run folder keeps it (and the
checkpoints) until the registration step has a decision on it, so that a failure in between costs no
training: the next run of the configuration reuses it."""

import shutil
import tempfile
from pathlib import Path
from typing import Annotated, Optional

import mlflow
import pandas as pd
from zenml import step

from drift.config import DriftConfig
from drift.data.provenance import content_digest
from drift.training import run_folder
from drift.training.run import run_key
from mlops.artifacts import ModelArtifact
from mlops.configuration import step_config
from mlops.finetuning import train_in


@step(enable_cache=False, experiment_tracker=True)
def drift_finetune(config: DriftConfig, prompts: pd.DataFrame, reward_head: Optional[Path] = None,
                   start: Optional[ModelArtifact] = None) -> tuple[
        Annotated[ModelArtifact, "model"], Annotated[list, "trajectory"]]:
    """``start``: the trained model to fine-tune further (the retraining's champion); else the base."""
    cfg = step_config(config, reward_head)
    run_id = mlflow.active_run().info.run_id
    start_dir = start.directory if start is not None else None
    parent = Path(cfg.run.output_dir) / run_key(cfg, content_digest(start_dir) if start_dir else None)
    with run_folder.choose(parent, fresh=not cfg.run.resume) as folder:
        mlflow.log_params({"method": cfg.method_name, "iterations": cfg.train.iterations, "lr": cfg.train.lr,
                           "group_size": cfg.sampling.group_size, "lora": cfg.train.lora.enabled,
                           "processes": cfg.accelerate.num_processes, "run_dir": folder.path,
                           "start": "registered champion" if start_dir else "base"})
        result = train_in(folder, cfg, prompts, run_id, mlflow.get_tracking_uri(), start_dir)
        # The artifact is saved after the step returns: from a copy, the folder being free by then.
        model_dir = Path(tempfile.mkdtemp(prefix="drift-model-"))
        shutil.copytree(result.model_dir, model_dir, dirs_exist_ok=True)
    base_dir = Path(cfg.model.source) if Path(cfg.model.source).is_dir() else None
    return ModelArtifact(model_dir, result.preview, base_dir, temporary=True), result.trajectory

"""Step 4: DRIFT fine-tuning, with per-iteration metrics in MLflow. The model leaves the step as an
artifact (the artifact store's copy is the only one); checkpoints stay in a scratch run directory
until the step succeeds, so that re-running a killed run's configuration resumes it.

With ``accelerate.num_processes`` > 1 the step runs ``finetune_processes`` on that many processes
through ZenML's ``run_with_accelerate``, which passes only simple-typed arguments on a command line
and reads them back from the annotations: hence the string arguments and no
``from __future__ import annotations`` in this module.
"""

import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Annotated, Optional

import mlflow
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import Metric
from zenml import step
from zenml.integrations.huggingface.steps import run_with_accelerate

from drift.build import build_parts
from drift.plots import image_grid
from drift.training import distributed as dist
from drift.training.run import run_key, run_training
from mlops.artifacts import PipelineArtifact
from mlops.configuration import step_config

PREVIEW_PROMPTS = 4


def _mlflow_logger(run_id: str):
    """Log to the step's MLflow run by id: launched processes must not start or end runs."""
    client = MlflowClient()

    def log(metrics: dict[str, float], iteration: int) -> None:
        now = int(time.time() * 1000)
        client.log_batch(run_id, metrics=[Metric(k, float(v), now, iteration) for k, v in metrics.items()])

    return log


@step(enable_cache=False)
def finetune_processes(config: str, prompts: str, reward_head: str = "", mlflow_run_id: str = "") -> tuple[
        Optional[PipelineArtifact], list]:
    """The fine-tuning itself, in the step's process or in each process accelerate launched.
    ``config``: the run configuration as JSON; ``prompts``: the validated prompt table as a CSV
    file; ``reward_head``: a reward-head directory or ''. The main process returns the model."""
    cfg = step_config(json.loads(config), Path(reward_head) if reward_head else None)
    run_dir = Path(cfg.run.output_dir) / run_key(cfg)
    table = pd.read_csv(prompts, dtype=str, keep_default_na=False)
    run = run_training(cfg, run_dir, build_parts(cfg, prompts=table), replay=True,
                       callback=_mlflow_logger(mlflow_run_id) if mlflow_run_id else None)
    trainer = run.trainer
    if not dist.is_main():
        return None, trainer.trajectory
    model_dir = Path(tempfile.mkdtemp(prefix="drift-model-"))
    trainer.save_model(model_dir)
    if run.resumed_from is not None:
        print(f"resumed from {run.resumed_from}")
    n = cfg.eval.samples_per_prompt
    preview = image_grid(trainer.last_evaluation.images[: PREVIEW_PROMPTS * n], n, upscale=4)
    shutil.rmtree(run_dir)
    return PipelineArtifact(model_dir, preview, temporary=True), trainer.trajectory


def launch_options(cfg) -> dict:
    """`accelerate launch` options for the run configuration's accelerate section."""
    options = {"num_processes": cfg.accelerate.num_processes}
    if cfg.accelerate.config_file is not None:
        options["config_file"] = str(cfg.accelerate.config_file)
    else:
        options["multi_gpu"] = True  # plain data parallelism (gloo on CPU, NCCL on GPUs)
    return options


@step(enable_cache=False, experiment_tracker=True)
def drift_finetune(config: dict, prompts: pd.DataFrame, reward_head: Optional[Path] = None) -> tuple[
        Annotated[PipelineArtifact, "model"], Annotated[list, "trajectory"]]:
    cfg = step_config(config, reward_head)
    run_id = mlflow.active_run().info.run_id
    mlflow.log_params({"method": cfg.method_name, "iterations": cfg.train.iterations, "lr": cfg.train.lr,
                       "group_size": cfg.sampling.group_size, "lora": cfg.train.lora.enabled,
                       "processes": cfg.accelerate.num_processes, "run_dir": Path(cfg.run.output_dir) / run_key(cfg)})
    with tempfile.TemporaryDirectory(prefix="drift-prompts-") as tmp:
        table = Path(tmp) / "prompts.csv"
        prompts.to_csv(table, index=False)
        args = {"config": json.dumps(config), "prompts": str(table), "reward_head": str(reward_head or ""),
                "mlflow_run_id": run_id}
        if cfg.accelerate.num_processes == 1:
            model, trajectory = finetune_processes.entrypoint(**args)
        else:
            # The launched processes inherit these: where to log, and that the device is the CPU.
            os.environ["MLFLOW_TRACKING_URI"] = mlflow.get_tracking_uri()
            if cfg.run.device == "cpu":
                os.environ["ACCELERATE_USE_CPU"] = "true"
            launched = run_with_accelerate(finetune_processes.copy(), **launch_options(cfg))
            model, trajectory = launched.entrypoint(**args)
    return model, trajectory

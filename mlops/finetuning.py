"""The pipeline's fine-tuning, in the step's own process or on several processes.

With ``accelerate.num_processes`` > 1 the step runs ``accelerate launch -m mlops.finetuning WORKDIR``:
the run configuration (JSON) and the prompt table (CSV) wait in WORKDIR; every launched process
trains its shard of each iteration and logs to the step's MLflow run by id; the main process writes
the model, its preview and the trajectory back into WORKDIR. What the launched processes need from
the environment (where MLflow is, that the device is the CPU) is given to that command alone: the
step's own process, and the steps that follow it in that process, see no change.

Checkpoints stay in a scratch run directory until training ends, so that re-running a killed run's
configuration resumes it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from PIL import Image

from drift.build import build_parts
from drift.config import DriftConfig, parse_config
from drift.errors import DriftError
from drift.plots import image_grid
from drift.training import distributed as dist
from drift.training.progress import ProgressLog
from drift.training.run import run_key, run_training

PREVIEW_PROMPTS = 4
CONFIG, PROMPTS, RUN_ID, TRAJECTORY, PREVIEW, MODEL_DIR = (
    "config.json", "prompts.csv", "mlflow_run_id", "trajectory.json", "preview.png", "model_dir")


@dataclass
class FineTuned:
    model_dir: Path
    preview: Image.Image
    trajectory: list[dict]


def _mlflow_logger(run_id: str):
    """Log to the step's MLflow run by id: launched processes must not start or end runs."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    client = MlflowClient()

    def log(metrics: dict[str, float], iteration: int) -> None:
        now = int(time.time() * 1000)
        client.log_batch(run_id, metrics=[Metric(k, float(v), now, iteration) for k, v in metrics.items()])

    return log


def finetune(cfg: DriftConfig, prompts: pd.DataFrame, mlflow_run_id: str | None, model_dir: Path) -> FineTuned | None:
    """Train ``cfg`` (resuming a killed run of the same configuration), log every iteration to the
    MLflow run ``mlflow_run_id`` and a progress line now and then; the main process saves the
    model into ``model_dir`` and returns it (the others return None)."""
    run_dir = Path(cfg.run.output_dir) / run_key(cfg)
    log = _mlflow_logger(mlflow_run_id) if mlflow_run_id else None
    progress = ProgressLog(cfg.train.iterations)

    def record(metrics: dict[str, float], iteration: int) -> None:
        if log is not None:
            log(metrics, iteration)
        progress(metrics, iteration)

    run = run_training(cfg, run_dir, build_parts(cfg, prompts=prompts), callback=record, progress=False, replay=True)
    if not dist.is_main():
        return None
    if run.resumed_from is not None:
        print(f"resumed from {run.resumed_from}")
    trainer = run.trainer
    trainer.save_model(model_dir, run.base)
    n = cfg.eval.samples_per_prompt
    preview = image_grid(trainer.last_evaluation.images[: PREVIEW_PROMPTS * n], n, upscale=4)
    shutil.rmtree(run_dir)
    return FineTuned(model_dir, preview, trainer.trajectory)


def launch_arguments(cfg: DriftConfig) -> list[str]:
    """`accelerate launch` options for the run configuration's accelerate section."""
    args = ["--num_processes", str(cfg.accelerate.num_processes)]
    if cfg.accelerate.config_file is not None:
        return args + ["--config_file", str(cfg.accelerate.config_file)]
    return args + ["--multi_gpu"]  # plain data parallelism (gloo on CPU, NCCL on GPUs)


def launch(cfg: DriftConfig, prompts: pd.DataFrame, mlflow_run_id: str, tracking_uri: str, model_dir: Path,
           workdir: Path) -> FineTuned:
    """``finetune`` on accelerate.num_processes processes, exchanging files through ``workdir``."""
    (workdir / CONFIG).write_text(cfg.model_dump_json())
    prompts.to_csv(workdir / PROMPTS, index=False)
    (workdir / RUN_ID).write_text(mlflow_run_id)
    (workdir / MODEL_DIR).write_text(str(model_dir))
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri}
    if cfg.run.device == "cpu":
        env["ACCELERATE_USE_CPU"] = "true"
    command = [sys.executable, "-m", "accelerate.commands.launch", *launch_arguments(cfg), "-m", "mlops.finetuning",
               str(workdir)]
    done = subprocess.run(command, env=env)
    if done.returncode != 0:
        raise DriftError(f"fine-tuning on {cfg.accelerate.num_processes} processes failed (exit code "
                         f"{done.returncode}): the processes' output is above")
    return FineTuned(model_dir, Image.open(workdir / PREVIEW), json.loads((workdir / TRAJECTORY).read_text()))


def main(workdir: str) -> int:
    """One launched process: train, and on the main process write the results into ``workdir``."""
    folder = Path(workdir)
    cfg = parse_config(json.loads((folder / CONFIG).read_text()), source=str(folder / CONFIG))
    prompts = pd.read_csv(folder / PROMPTS, dtype=str, keep_default_na=False)
    result = finetune(cfg, prompts, (folder / RUN_ID).read_text(), Path((folder / MODEL_DIR).read_text()))
    if result is not None:
        result.preview.save(folder / PREVIEW)
        (folder / TRAJECTORY).write_text(json.dumps(result.trajectory))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))

"""The pipeline's fine-tuning, in the step's own process or on several processes, in a run folder
of its own (drift.training.run_folder).

With ``accelerate.num_processes`` > 1 the step runs ``accelerate launch -m mlops.finetuning WORKDIR``:
the run configuration (JSON), the prompt table (CSV), the run folder and the model to start from wait
in WORKDIR; every launched process trains its shard of each iteration and logs to the step's MLflow
run by id; the main process writes the model, its preview and the trajectory into the run folder.
What the launched processes need from the environment (where MLflow is, that the device is the CPU) is
given to that command alone: the step's own process, and the steps that follow it in that process,
see no change.

The run folder keeps the checkpoints and the trained model after training: a failure in a later step
(evaluation, registration) costs no training, since the next run of the configuration takes the
folder over and reuses the model. The registration step removes the folder once the version is
decided.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from PIL import Image

from drift.build import build_parts
from drift.config import DriftConfig, parse_config
from drift.data.provenance import content_digest
from drift.errors import DriftError
from drift.plots import image_grid
from drift.training import distributed as dist
from drift.training.progress import ProgressLog
from drift.training.run import METRICS_LOG, read_metrics_log, run_training
from drift.training.run_folder import FINISHED, MODEL, PREVIEW, TRAJECTORY, RunFolder, mark_finished, read_finished

PREVIEW_PROMPTS = 4
CONFIG, PROMPTS, RUN_ID, RUN_DIR, START = "config.json", "prompts.csv", "mlflow_run_id", "run_dir", "start"


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


def finetune(cfg: DriftConfig, prompts: pd.DataFrame, mlflow_run_id: str | None, run_dir: Path,
             start: Path | None = None) -> None:
    """Train ``cfg`` in the claimed folder ``run_dir`` (resuming from its checkpoints), from the base
    model or from the trained model ``start``; log every iteration to the MLflow run
    ``mlflow_run_id`` and a progress line now and then. The main process saves the model, its preview
    and the trajectory in the folder and marks it finished."""
    from mlops.artifacts import base_from_store

    log = _mlflow_logger(mlflow_run_id) if mlflow_run_id else None
    progress = ProgressLog(cfg.train.iterations)

    def record(metrics: dict[str, float], iteration: int) -> None:
        if log is not None:
            log(metrics, iteration)
        progress(metrics, iteration)

    parts = build_parts(cfg, model_source=str(start) if start else None, prompts=prompts, locate=base_from_store)
    run = run_training(cfg, run_dir, parts, callback=record, progress=False, replay=True)
    if not dist.is_main():
        return
    trainer = run.trainer
    shutil.rmtree(run_dir / MODEL, ignore_errors=True)
    trainer.save_model(run_dir / MODEL, run.base)
    n = cfg.eval.samples_per_prompt
    image_grid(trainer.last_evaluation.images[: PREVIEW_PROMPTS * n], n, upscale=4).save(run_dir / PREVIEW)
    (run_dir / TRAJECTORY).write_text(json.dumps(trainer.trajectory))
    mark_finished(run_dir, content_digest(run_dir / MODEL), trainer.iteration)


def _finished(run_dir: Path) -> FineTuned:
    with Image.open(run_dir / PREVIEW) as preview:  # read now: the folder goes once the version is decided
        return FineTuned(run_dir / MODEL, preview.copy(), json.loads((run_dir / TRAJECTORY).read_text()))


def train_in(folder: RunFolder, cfg: DriftConfig, prompts: pd.DataFrame, mlflow_run_id: str, tracking_uri: str,
             start: Path | None = None) -> FineTuned:
    """The model of ``cfg`` trained in ``folder``: the one an earlier run finished there, or trained
    now (resuming from the folder's checkpoints), on one process or several."""
    if folder.finished is not None and folder.finished.get("iterations") == cfg.train.iterations:
        print(f"reusing the model an earlier run of this configuration trained in {folder.path} "
              f"({cfg.train.iterations} iterations; kept until its registered version is decided): no training. "
              "Set run.resume: false to train afresh.", flush=True)
        log = _mlflow_logger(mlflow_run_id)
        for record in read_metrics_log(folder.path / METRICS_LOG):
            log({k: v for k, v in record.items() if k != "iteration"}, record["iteration"])
        return _finished(folder.path)
    (folder.path / FINISHED).unlink(missing_ok=True)
    if cfg.accelerate.num_processes == 1:
        finetune(cfg, prompts, mlflow_run_id, folder.path, start)
    else:
        with tempfile.TemporaryDirectory(prefix="drift-finetune-") as workdir:
            launch(cfg, prompts, mlflow_run_id, tracking_uri, folder.path, start, Path(workdir))
    if read_finished(folder.path) is None:
        raise DriftError(f"fine-tuning ended without a model in {folder.path}")
    return _finished(folder.path)


def launch_arguments(cfg: DriftConfig) -> list[str]:
    """`accelerate launch` options for the run configuration's accelerate section."""
    args = ["--num_processes", str(cfg.accelerate.num_processes)]
    if cfg.accelerate.config_file is not None:
        return args + ["--config_file", str(cfg.accelerate.config_file)]
    return args + ["--multi_gpu"]  # plain data parallelism (gloo on CPU, NCCL on GPUs)


def launch(cfg: DriftConfig, prompts: pd.DataFrame, mlflow_run_id: str, tracking_uri: str, run_dir: Path,
           start: Path | None, workdir: Path) -> None:
    """``finetune`` on accelerate.num_processes processes, exchanging files through ``workdir``."""
    (workdir / CONFIG).write_text(cfg.model_dump_json())
    prompts.to_csv(workdir / PROMPTS, index=False)
    (workdir / RUN_ID).write_text(mlflow_run_id)
    (workdir / RUN_DIR).write_text(str(run_dir))
    (workdir / START).write_text(str(start) if start else "")
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri}
    if cfg.run.device == "cpu":
        env["ACCELERATE_USE_CPU"] = "true"
    command = [sys.executable, "-m", "accelerate.commands.launch", *launch_arguments(cfg), "-m", "mlops.finetuning",
               str(workdir)]
    done = subprocess.run(command, env=env)
    if done.returncode != 0:
        raise DriftError(f"fine-tuning on {cfg.accelerate.num_processes} processes failed (exit code "
                         f"{done.returncode}): the processes' output is above")


def main(workdir: str) -> int:
    """One launched process: train in the run folder named in ``workdir``."""
    folder = Path(workdir)
    cfg = parse_config(json.loads((folder / CONFIG).read_text()), source=str(folder / CONFIG))
    prompts = pd.read_csv(folder / PROMPTS, dtype=str, keep_default_na=False)
    start = (folder / START).read_text()
    finetune(cfg, prompts, (folder / RUN_ID).read_text(), Path((folder / RUN_DIR).read_text()),
             Path(start) if start else None)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))

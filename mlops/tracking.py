"""MLflow adapter for the benchmark's tracking interface (drift.bench.common.NullTracker):
one parent run, a nested run per method and seed."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import mlflow


class MlflowTracker:
    def __init__(self, tracking_uri: str, experiment: str, artifact_dir: Path):
        mlflow.set_tracking_uri(tracking_uri)
        if mlflow.get_experiment_by_name(experiment) is None:
            # An explicit artifact location keeps artifacts out of the working directory.
            mlflow.create_experiment(experiment, artifact_location=Path(artifact_dir).resolve().as_uri())
        mlflow.set_experiment(experiment)

    @contextmanager
    def run(self, name: str, params: dict, nested: bool = False):
        with mlflow.start_run(run_name=name, nested=nested):
            mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
            yield

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        mlflow.log_metrics(metrics, step=step)

    def log_artifact(self, path) -> None:
        mlflow.log_artifact(str(path))

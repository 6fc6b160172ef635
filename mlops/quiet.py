"""Pipeline output that reads like a report: library chatter silenced at its source."""

from __future__ import annotations

import logging
import os
import warnings

from drift.logs import DropMessages, quiet_libraries


def quiet_pipeline_output() -> None:
    quiet_libraries()
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # ZenML disables MLflow autologging for every framework MLflow knows, and warns about the ones
    # that are not installed here (fastai).
    logging.getLogger("zenml.integrations.mlflow.experiment_trackers.mlflow_experiment_tracker").addFilter(
        DropMessages("Failed to disable MLflow autologging"))
    # The registered generator takes prompts: an input example would make MLflow generate images
    # while logging the model.
    warnings.filterwarnings("ignore", message=".*An input example was not provided.*")

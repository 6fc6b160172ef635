"""Steps 1-2: load the DVC-versioned prompt CSV, record its version, validate it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import mlflow
import pandas as pd
from zenml import log_metadata, save_artifact, step

from drift.config import DriftConfig
from drift.data.prompts import read_prompts
from drift.data.provenance import data_version
from drift.data.validation import ValidationReport, rules_from_config, validate_file, validate_table
from drift.errors import DriftError
from mlops.recovery import claim_run


def _keep_report(report: ValidationReport) -> None:
    """Save the report as an artifact, print it, and stop the run if the data is invalid."""
    save_artifact(json.dumps(report.to_dict(), indent=2), name="prompt_validation_report")
    print(report.to_text())
    if not report.success:
        raise DriftError(report.to_text())


@step(enable_cache=False, experiment_tracker=True)
def load_prompts(config: DriftConfig) -> tuple[Annotated[pd.DataFrame, "prompts"], Annotated[dict, "data_version"]]:
    """The first step: it also marks runs left RUNNING by a dead process as failed and records
    which process owns this one (mlops.recovery)."""
    claim_run()
    path = Path(config.data.prompts)
    try:
        table = read_prompts(path, config.data.max_file_mb)
    except DriftError:
        # unreadable: fails with the report
        _keep_report(validate_file(path, config.data.max_file_mb, **rules_from_config(config.data)))
    version = data_version(path)
    log_metadata(metadata={"data_version": version})
    mlflow.set_tags({f"data.{k}": v for k, v in version.items()})
    return table, version


@step(enable_cache=False)
def validate_prompts(prompts: pd.DataFrame, config: DriftConfig) -> Annotated[pd.DataFrame, "validated_prompts"]:
    """Great Expectations checks; the report is an artifact whether or not they pass, and a failure
    stops the run here, before any model is loaded."""
    _keep_report(validate_table(prompts, str(config.data.prompts), **rules_from_config(config.data)))
    return prompts

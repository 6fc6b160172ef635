"""MLflow Model Registry helpers shared by the register steps: log a pyfunc from code, register
a version with its tags, read and move aliases."""

from __future__ import annotations

from pathlib import Path

import mlflow
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from mlops.pyfunc_model import requirements


def version_by_alias(client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def register_version(client: MlflowClient, name: str, code: Path, artifacts: dict[str, str], tags: dict,
                     signature=None, artifact_path: str = "model") -> str:
    """Log the pyfunc defined by the source file ``code`` with ``artifacts`` in the active run,
    register it as a new version of ``name``, tag it, and return the version."""
    info = mlflow.pyfunc.log_model(name=artifact_path, python_model=str(code), artifacts=artifacts,
                                   signature=signature, pip_requirements=requirements())
    version = mlflow.register_model(info.model_uri, name).version
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, str(value))
    return version

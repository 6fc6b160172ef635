"""Registered reward models: a reward term packaged with its weights (drift.scoring.packaged) and
logged as the RewardModel pyfunc, so that a version is servable as is:

    mlflow models serve --env-manager local -m models:/drift-digits-reward/3 -h 127.0.0.1 -p 5002

and scored by the ``remote`` reward term (protocol mlflow, model models:/drift-digits-reward/3).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from mlflow import MlflowClient
from mlflow.models import Model

from drift.config import RewardTerm
from drift.scoring.packaged import package_digest, package_term, packaged_args
from mlops.model_registry import register_version
from mlops.pyfunc_model import REWARD_CODE, REWARD_SIGNATURE

DIGEST_TAG = "reward.digest"


def register_reward(client: MlflowClient, name: str, term: RewardTerm, tags: dict) -> tuple[str, str]:
    """Package ``term``, log it in the active MLflow run and register it as a new version of
    ``name``, tagged with ``tags`` and its package digest; returns (version, digest)."""
    package = package_term(term.name, term.args, Path(tempfile.mkdtemp(prefix="drift-reward-")) / "reward")
    digest = package_digest(package)
    version = register_version(client, name, REWARD_CODE, {"reward": str(package)}, {**tags, DIGEST_TAG: digest},
                               signature=REWARD_SIGNATURE, artifact_path="reward_model")
    return version, digest


def downloaded_head(local: str | Path) -> Path:
    """The preference head directory of a downloaded reward model version: its packaged term's
    ``head``, or the ``head`` artifact of versions registered before terms were packaged."""
    local = Path(local)
    artifacts = Model.load(str(local)).flavors["python_function"].get("artifacts") or {}
    if "reward" not in artifacts:
        return local / artifacts["head"]["path"]
    return Path(packaged_args(local / artifacts["reward"]["path"])[1]["head"])

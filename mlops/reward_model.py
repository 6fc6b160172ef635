"""Registered reward models: a reward term packaged with its weights (drift.scoring.packaged) and
logged as the RewardModel pyfunc, so that a version is servable as is:

    mlflow models serve --env-manager local -m models:/drift-digits-reward/3 -h 127.0.0.1 -p 5002

and scored by the ``remote`` reward term (protocol mlflow, model models:/drift-digits-reward/3).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from mlflow import MlflowClient

from drift.config import RewardTerm
from drift.errors import DriftError
from drift.scoring.packaged import package_digest, package_term, packaged_args
from mlops.model_registry import download_version, register_version, version_by_alias
from mlops.pyfunc_model import REWARD_CODE, REWARD_SIGNATURE

DIGEST_TAG = "reward.digest"


def register_reward(name: str, term: RewardTerm, tags: dict) -> tuple[str, str]:
    """Package ``term``, log it in the active MLflow run and register it as a new version of
    ``name``, tagged with ``tags`` and its package digest; returns (version, digest)."""
    package = package_term(term.name, term.args, Path(tempfile.mkdtemp(prefix="drift-reward-")) / "reward")
    digest = package_digest(package)
    version = register_version(name, REWARD_CODE, {"reward": str(package)}, {**tags, DIGEST_TAG: digest},
                               signature=REWARD_SIGNATURE, artifact_path="reward_model")
    return version, digest


def download_reward_head(tracking_uri: str, name: str, dst: str | Path,
                         alias: str = "champion") -> tuple[Path, str] | None:
    """The preference head directory of the registered reward model ``name`` at ``alias``,
    downloaded into ``dst``, and its version; None when no version has the alias. Versions hold a
    packaged term (its ``head`` argument), or before terms were packaged a ``head`` artifact."""
    version = version_by_alias(MlflowClient(tracking_uri, tracking_uri), name, alias)
    if version is None:
        return None
    _, artifacts = download_version(tracking_uri, name, version.version, dst, set(), "reward model")
    if "reward" in artifacts:
        return Path(packaged_args(artifacts["reward"])[1]["head"]), version.version
    if "head" in artifacts:
        return artifacts["head"], version.version
    raise DriftError(f"{name} version {version.version} is not a registered preference reward model (its artifacts "
                     f"are {sorted(artifacts)}, expected 'reward' or 'head')")

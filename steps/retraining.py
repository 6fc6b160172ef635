"""Retraining steps: has the preference data changed, is it valid, and a new preference reward model."""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import Annotated

import mlflow
import pandas as pd
import torch
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from zenml import get_step_context, log_metadata, save_artifact, step

from drift.config import parse_config
from drift.errors import DriftError
from drift.preferences import is_held_out, load_pair_images, read_pairs
from drift.provenance import file_md5
from drift.registry import EMBEDDINGS
from drift.reward_model import fit_bradley_terry, load_head, pairwise_accuracy
from drift.validation import validate_preferences
from steps import TRACKER

VERSION_TAG = "data.preferences_md5"


def _version_of(client: MlflowClient, name: str, alias: str):
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


@step(enable_cache=False, experiment_tracker=TRACKER)
def check_preferences(config: dict) -> Annotated[dict, "preference_check"]:
    """Compare the preference data with what the latest trained generator (alias challenger) used:
    comparing with the champion instead would retrain a rejected challenger on the same data at
    every scheduled run."""
    cfg = parse_config(config)
    pairs = cfg.preferences.pairs
    if not pairs.is_file():
        raise DriftError(f"preference file {pairs} does not exist: add a batch first "
                         "(`make preferences SEED=1`, or `drift preferences add -c CONFIG --seed 1`)")
    version = file_md5(pairs)
    latest = _version_of(MlflowClient(), cfg.registry.model_name, "challenger")
    previous = latest.tags.get(VERSION_TAG) if latest else None
    changed = previous != version
    reason = (f"preference data {version} differs from {previous or 'none'} used by the latest trained "
              f"{cfg.registry.model_name}: retraining" if changed else
              f"no new preference data: {pairs} is version {version}, which {cfg.registry.model_name} "
              f"version {latest.version} was already trained with; nothing to do")
    print(reason)
    mlflow.set_tags({"retrain.decision": "retrain" if changed else "skip", "retrain.reason": reason,
                     VERSION_TAG: version})
    result = {"changed": changed, "version": version, "previous": previous, "reason": reason}
    log_metadata(metadata={"preference_check": result})
    return result


@step(enable_cache=False)
def validate_preference_data(config: dict) -> Annotated[pd.DataFrame, "preference_pairs"]:
    cfg = parse_config(config)
    path = cfg.preferences.pairs
    report = validate_preferences(read_pairs(path), path.parent, str(path))
    save_artifact(json.dumps(report.to_dict(), indent=2), name="preference_validation_report")
    print(report.to_text())
    if not report.success:
        raise DriftError(report.to_text())
    return read_pairs(path)


@step(enable_cache=False, experiment_tracker=TRACKER)
def update_reward_model(config: dict, pairs: pd.DataFrame, preference_version: str) -> Annotated[dict, "reward_model"]:
    """Fit a Bradley-Terry head on the training pairs, compare its held-out pairwise accuracy with
    the current reward model's (alias champion), and register it only if it is at least as accurate.
    Returns the head the generator should be trained with (the new one, or the champion's)."""
    cfg = parse_config(config)
    p = cfg.preferences
    embed = EMBEDDINGS.build(cfg.embedding.name, device=cfg.run.device, **cfg.embedding.args)
    img_a, img_b = load_pair_images(pairs, p.pairs.parent)
    with torch.no_grad():
        fa, fb = embed(img_a).cpu(), embed(img_b).cpu()
    held = torch.from_numpy(is_held_out(pairs["pair_id"], p.holdout_fraction))
    choices = pairs["choice"].tolist()
    train_choices = [c for c, h in zip(choices, held) if not h]
    test_choices = [c for c, h in zip(choices, held) if h]
    head = fit_bradley_terry(fa[~held], fb[~held], train_choices, p.epochs, p.lr, seed=cfg.run.seed)
    accuracy = pairwise_accuracy(head, fa[held], fb[held], test_choices)
    out = Path(p.head_dir) / get_step_context().pipeline_run.name
    head.save_pretrained(out)

    client = MlflowClient()
    champion = _version_of(client, p.reward_model_name, "champion")
    previous_accuracy, previous_head = math.nan, None
    if champion is not None:
        with tempfile.TemporaryDirectory() as tmp:
            local = mlflow.artifacts.download_artifacts(f"models:/{p.reward_model_name}@champion", dst_path=tmp)
            previous = load_head(Path(local) / "artifacts" / "head")
        previous_accuracy = pairwise_accuracy(previous, fa[held], fb[held], test_choices)
        previous_head = champion.tags.get("head_dir")
    better = champion is None or not math.isfinite(previous_accuracy) or accuracy >= previous_accuracy
    mlflow.log_metrics({"reward_model/heldout_accuracy": accuracy, "reward_model/train_pairs": float((~held).sum()),
                        "reward_model/heldout_pairs": float(held.sum())}
                       | ({"reward_model/previous_accuracy": previous_accuracy} if math.isfinite(previous_accuracy) else {}))
    version = None
    if better:
        info = mlflow.pyfunc.log_model(name="reward_model", python_model=PreferenceHeadModel(),
                                       artifacts={"head": str(out)}, pip_requirements=["torch", "huggingface_hub"])
        version = mlflow.register_model(info.model_uri, p.reward_model_name).version
        for key, value in {"heldout_accuracy": accuracy, VERSION_TAG: preference_version, "head_dir": str(out),
                           "embedding": cfg.embedding.name}.items():
            client.set_model_version_tag(p.reward_model_name, version, key, str(value))
        client.set_registered_model_alias(p.reward_model_name, "champion", version)
    reason = (f"registered {p.reward_model_name} version {version}: held-out accuracy {accuracy:.3f}"
              f" (previous {previous_accuracy:.3f})" if better else
              f"not registered: held-out accuracy {accuracy:.3f} below the champion's {previous_accuracy:.3f}")
    print(reason)
    result = {"head_dir": str(out) if better else previous_head, "accuracy": accuracy, "registered": better,
              "version": version, "previous_accuracy": None if math.isnan(previous_accuracy) else previous_accuracy,
              "reason": reason}
    log_metadata(metadata={"reward_model": result})
    return result


@step(enable_cache=False)
def retraining_config(config: dict, reward_model: dict) -> Annotated[dict, "retraining_config"]:
    """The generator's run config with the preference reward added to its reward terms."""
    cfg = parse_config(config)
    term = {"name": "preference", "weight": cfg.preferences.weight,
            "args": {"head": reward_model["head_dir"], "embedding": cfg.embedding.name,
                     "embedding_args": cfg.embedding.args}}
    data = cfg.model_dump(mode="json")
    data["reward"] = data["reward"] + [term]
    return parse_config(data).model_dump(mode="json")


class PreferenceHeadModel(mlflow.pyfunc.PythonModel):
    """Scores feature vectors (one row per image, the embedding's dimensions as columns)."""

    def load_context(self, context):
        self.head = load_head(context.artifacts["head"])

    def predict(self, context, model_input: pd.DataFrame, params=None):
        with torch.no_grad():
            return self.head(torch.tensor(model_input.to_numpy(), dtype=torch.float32)).numpy()

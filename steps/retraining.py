"""Retraining steps: has the preference data changed, is it valid, a new preference reward model
(with the raters' agreement figures and the head's agreement with each rater), and the registered
champion that retraining starts from (preferences.start_from)."""

import json
import tempfile
from pathlib import Path
from typing import Annotated, Optional

import mlflow
import pandas as pd
from mlflow import MlflowClient
from zenml import log_metadata, save_artifact, step

from drift.config import DriftConfig
from drift.data.agreement import rater_report
from drift.data.preferences import read_pairs
from drift.data.provenance import file_md5
from drift.data.validation import validate_preferences
from drift.errors import DriftError
from drift.evaluation.promotion import reward_head_decision
from drift.models.trained import read_manifest
from drift.registry import EMBEDDINGS
from drift.scoring.preference_head import (
    fit_bradley_terry,
    heldout_accuracy,
    heldout_choices,
    heldout_correct,
    load_head,
    pair_features,
)
from mlops.artifacts import ModelArtifact
from mlops.decisions import latest_decided
from mlops.model_registry import download_generator, version_by_alias
from mlops.reward_model import download_reward_head, register_reward

VERSION_TAG = "data.preferences_md5"


@step(enable_cache=False, experiment_tracker=True)
def check_preferences(config: DriftConfig) -> Annotated[dict, "preference_check"]:
    """Compare the preference data with what the latest decided generator version (promoted or
    rejected) was trained with: comparing with the champion instead would retrain a rejected version
    on the same data at every scheduled run, and a version whose run ended before its decision does
    not count (this run decides it, or trains it again)."""
    pairs = config.preferences.pairs
    if not pairs.is_file():
        raise DriftError(f"preference file {pairs} does not exist: add a batch first "
                         "(`make preferences SEED=1`, or `drift preferences add -c CONFIG --seed 1`)")
    version = file_md5(pairs)
    latest = latest_decided(MlflowClient(), config.registry.model_name)
    previous = latest.tags.get(VERSION_TAG) if latest else None
    changed = previous != version
    reason = (f"preference data {version} differs from {previous or 'none'} used by the latest decided "
              f"{config.registry.model_name} version: retraining" if changed else
              f"no new preference data: {pairs} is version {version}, which {config.registry.model_name} "
              f"version {latest.version} was already trained with and decided on; nothing to do")
    print(reason)
    mlflow.set_tags({"retrain.decision": "retrain" if changed else "skip", "retrain.reason": reason,
                     VERSION_TAG: version})
    result = {"changed": changed, "version": version, "previous": previous, "reason": reason}
    log_metadata(metadata={"preference_check": result})
    return result


@step(enable_cache=False)
def validate_preference_data(config: DriftConfig) -> Annotated[pd.DataFrame, "preference_pairs"]:
    path = config.preferences.pairs
    pairs = read_pairs(path)
    report = validate_preferences(pairs, path.parent, str(path), config.data.min_prompt_length,
                                  config.data.max_prompt_length)
    save_artifact(json.dumps(report.to_dict(), indent=2), name="preference_validation_report")
    print(report.to_text())
    if not report.success:
        raise DriftError(report.to_text())
    return pairs


@step(enable_cache=False, experiment_tracker=True)
def update_reward_model(config: DriftConfig, pairs: pd.DataFrame, preference_version: str) -> tuple[
        Annotated[Path, "reward_head"], Annotated[dict, "reward_model"]]:
    """Fit a Bradley-Terry head, compare it with the current reward model (alias champion) on the
    same held-out pairs, and register it if the gate accepts it. The head the generator is trained
    with (the new one, or the champion's) leaves the step as a directory artifact."""
    p = config.preferences
    features = config.preference_embedding
    embed = EMBEDDINGS.build(features.name, device=config.run.device, **features.args)
    data = pair_features(pairs, p.pairs.parent, embed, p.holdout_fraction)
    head = fit_bradley_terry(data.train_a, data.train_b, data.train_choices, p.epochs, p.lr, seed=config.run.seed)
    accuracy = heldout_accuracy(head, data)
    new_head = Path(tempfile.mkdtemp(prefix="drift-reward-head-"))
    head.save_pretrained(new_head)

    client = MlflowClient()
    champion = download_reward_head(mlflow.get_tracking_uri(), p.reward_model_name,
                                    tempfile.mkdtemp(prefix="drift-reward-head-"))
    correct, pair_keys = heldout_correct(head, data)
    champion_head, champion_model, champion_accuracy, champion_correct = None, None, None, None
    if champion is not None:
        champion_head, champion_model = champion[0], load_head(champion[0])
        champion_accuracy = heldout_accuracy(champion_model, data)
        champion_correct = heldout_correct(champion_model, data)[0]
    accept, reason = reward_head_decision(correct, champion_correct, pair_keys, config.registry.confidence,
                                          config.registry.bootstrap_resamples, p.min_accuracy_gain)
    mlflow.log_metrics({"reward_model/heldout_accuracy": accuracy, "reward_model/train_pairs": len(data.train_choices),
                        "reward_model/heldout_pairs": len(data.held_choices)})
    version = None
    if accept:
        tags = {"heldout_accuracy": accuracy, VERSION_TAG: preference_version, "embedding": features.name}
        version, _ = register_reward(p.reward_model_name, config.preference_term(new_head), tags)
        client.set_registered_model_alias(p.reward_model_name, "champion", version)
        reason = f"{p.reward_model_name} version {version} {reason}"
    elif champion_head is None:
        raise DriftError(f"no preference head to train the generator with: {reason}")
    print(reason)
    # How consistent the raters are, and how the head the generator is trained with agrees with each.
    which = f"{p.reward_model_name} version {version or champion[1]}"
    raters = rater_report(pairs, data.identity, heldout_choices(head if accept else champion_model, data),
                          f"{which} on the held-out pairs (ties excluded)", f"{p.pairs} ({preference_version})")
    print(raters.to_text())
    mlflow.log_metrics(raters.metrics())
    mlflow.log_dict({**raters.to_dict(), VERSION_TAG: preference_version}, "preferences/raters.json")
    result = {"accuracy": accuracy, "registered": accept, "version": version,
              "previous_accuracy": champion_accuracy, "reason": reason}
    log_metadata(metadata={"reward_model": result})
    return (new_head if accept else champion_head), result


@step(enable_cache=False, experiment_tracker=True)
def champion_generator(config: DriftConfig) -> Annotated[Optional[ModelArtifact], "start_model"]:
    """The registered champion of registry.model_name, which retraining fine-tunes further
    (preferences.start_from: champion); None, and training starts from the base, while there is none."""
    name = config.registry.model_name
    champion = version_by_alias(MlflowClient(), name, "champion")
    if champion is None:
        print(f"{name} has no champion yet: retraining starts from the base model {config.model.source}")
        return None
    registered = download_generator(mlflow.get_tracking_uri(), name, champion.version,
                                    tempfile.mkdtemp(prefix="drift-start-"))
    manifest = read_manifest(registered.model_dir)
    if manifest is not None and manifest.trained == "lora":
        raise DriftError(f"{name} version {champion.version} (the champion) holds LoRA adapters: retraining can "
                         "fine-tune further only a full fine-tune; set preferences.start_from: base")
    print(f"retraining starts from {name} version {champion.version} (the champion)")
    return ModelArtifact(registered.model_dir, temporary=True)

"""Retraining when new preference data arrives: validate it, update the preference reward model,
fine-tune the generator with DRIFT on the updated reward, evaluate, register and gate.

    zenml pipeline run pipelines.retraining.drift_retraining_pipeline -c configs/retrain_local.yaml

A dynamic pipeline: when the preference data is the version the latest generator was trained
with, it stops after the check, saying so.
"""

from zenml import pipeline

from steps.data import load_prompts, validate_prompts
from steps.evaluation import evaluate_model
from steps.registry import register_model
from steps.retraining import (
    VERSION_TAG,
    check_preferences,
    retraining_config,
    update_reward_model,
    validate_preference_data,
)
from steps.sampling import sample_reference
from steps.training import drift_finetune


@pipeline(dynamic=True, enable_cache=False)
def drift_retraining_pipeline(config: dict):
    check = check_preferences(config).load()
    if not check["changed"]:
        return
    pairs = validate_preference_data(config)
    reward = update_reward_model(config, pairs, check["version"])
    run_config = retraining_config(config, reward)
    prompts, version = load_prompts(run_config)
    valid = validate_prompts(prompts, run_config)
    reference, reference_images = sample_reference(run_config, valid)
    model_dir, trajectory = drift_finetune(run_config, valid)
    evaluation = evaluate_model(run_config, valid, model_dir, trajectory, reference, reference_images)
    register_model(run_config, model_dir, evaluation, reference, version, {VERSION_TAG: check["version"]})

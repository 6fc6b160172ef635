"""Retraining when new preference data arrives: validate it, update the preference reward model,
fine-tune the generator with DRIFT on the updated reward, evaluate, register and gate.

    zenml pipeline run pipelines.retraining.drift_retraining_pipeline -c configs/retrain_local.yaml

A dynamic pipeline: when the preference data is the version the latest decided generator was trained
with, it stops after the check, saying so. With preferences.start_from: champion, fine-tuning starts
from the registered champion.
"""

from zenml import pipeline

from mlops.configuration import pipeline_config
from steps.data import load_prompts, validate_prompts
from steps.evaluation import evaluate_model
from steps.registration import register_model
from steps.retraining import (
    VERSION_TAG,
    champion_generator,
    check_preferences,
    update_reward_model,
    validate_preference_data,
)
from steps.sampling import sample_reference
from steps.training import drift_finetune


@pipeline(dynamic=True, enable_cache=False)
def drift_retraining_pipeline(config: dict):
    cfg = pipeline_config(config)
    check = check_preferences(cfg).load()
    if not check["changed"]:
        return
    pairs = validate_preference_data(cfg)
    head, _ = update_reward_model(cfg, pairs, check["version"])
    prompts, version = load_prompts(cfg)
    valid = validate_prompts(prompts, cfg)
    reference, reference_images = sample_reference(cfg, valid, reward_head=head)
    start = champion_generator(cfg) if cfg.preferences.start_from == "champion" else None
    model, trajectory = drift_finetune(cfg, valid, reward_head=head, start=start)
    evaluation, champion, _ = evaluate_model(cfg, valid, model, trajectory, reference, reference_images,
                                             reward_head=head)
    register_model(cfg, valid, model, evaluation, champion, reference, version, reward_head=head,
                   extra_tags={VERSION_TAG: check["version"]})

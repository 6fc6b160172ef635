"""The main job: validate prompts, sample the reference, fine-tune with DRIFT, evaluate, register.

    zenml pipeline run pipelines.training.drift_training_pipeline -c configs/digits.yaml
"""

from zenml import pipeline

from mlops.configuration import pipeline_config
from steps.data import load_prompts, validate_prompts
from steps.evaluation import evaluate_model
from steps.registration import register_model
from steps.sampling import sample_reference
from steps.training import drift_finetune


@pipeline(enable_cache=False)
def drift_training_pipeline(config: dict):
    cfg = pipeline_config(config)
    prompts, version = load_prompts(cfg)
    valid = validate_prompts(prompts, cfg)
    reference, reference_images = sample_reference(cfg, valid)
    model, trajectory = drift_finetune(cfg, valid)
    evaluation, champion, _ = evaluate_model(cfg, valid, model, trajectory, reference, reference_images)
    register_model(cfg, valid, model, evaluation, champion, reference, version)

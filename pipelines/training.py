"""The main job: validate prompts, sample the reference, fine-tune with DRIFT, evaluate, register.

    zenml pipeline run pipelines.training.drift_training_pipeline -c configs/digits.yaml
"""

from zenml import pipeline

from steps.data import load_prompts, validate_prompts
from steps.evaluation import evaluate_model
from steps.registry import register_model
from steps.sampling import sample_reference
from steps.training import drift_finetune


@pipeline(enable_cache=False)
def drift_training_pipeline(config: dict):
    prompts, version = load_prompts(config)
    valid = validate_prompts(prompts, config)
    reference, reference_images = sample_reference(config, valid)
    model, trajectory = drift_finetune(config, valid)
    evaluation, champion, _ = evaluate_model(config, valid, model, trajectory, reference, reference_images)
    register_model(config, valid, model, evaluation, champion, reference, version)

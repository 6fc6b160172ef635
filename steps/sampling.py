"""Step 3: the base model's samples for the held-out prompts, with fixed seeds."""

from pathlib import Path
from typing import Annotated, Optional

import mlflow
import numpy as np
import pandas as pd
from zenml import step

from drift.build import build_parts
from drift.config import DriftConfig
from drift.evaluation.protocol import evaluate_with_config
from drift.plots import image_grid
from mlops.configuration import step_config


@step(enable_cache=False, experiment_tracker=True)
def sample_reference(config: DriftConfig, prompts: pd.DataFrame, reward_head: Optional[Path] = None) -> tuple[
        Annotated[dict, "reference_metrics"], Annotated[np.ndarray, "reference_images"]]:
    cfg = step_config(config, reward_head)
    parts = build_parts(cfg, prompts=prompts)
    ev = evaluate_with_config(cfg, parts.model, parts.reward, parts.embed, parts.eval_prompts, progress=True)
    mlflow.log_metrics({f"reference/{k}": v for k, v in ev.metrics.items()})
    mlflow.log_image(image_grid(ev.images, cfg.eval.samples_per_prompt, upscale=4), "grids/reference.png")
    return ev.metrics, ev.images.numpy()

"""Step 5: the fine-tuned model against the reference, on the same held-out prompts and seeds."""

import tempfile
from pathlib import Path
from typing import Annotated, Optional

import mlflow
import numpy as np
import pandas as pd
import torch
from zenml import step

from drift.build import build_parts
from drift.evaluation.protocol import evaluate_with_config
from drift.plots import side_by_side, trajectory_plot
from mlops.artifacts import PipelineArtifact
from mlops.configuration import step_config


@step(enable_cache=False, experiment_tracker=True)
def evaluate_model(config: dict, prompts: pd.DataFrame, model: PipelineArtifact, trajectory: list,
                   reference_metrics: dict, reference_images: np.ndarray, reward_head: Optional[Path] = None) -> tuple[
        Annotated[dict, "evaluation"], Annotated[np.ndarray, "evaluation_images"]]:
    cfg = step_config(config, reward_head)
    parts = build_parts(cfg, model_source=str(model.directory), prompts=prompts)
    ev = evaluate_with_config(cfg, parts.model, parts.reward, parts.embed, parts.eval_prompts, progress=True)
    metrics = dict(ev.metrics)
    for key in ("alignment", "diversity", "vendi"):
        metrics[f"{key}_change_vs_reference"] = metrics[key] - reference_metrics[key]
    mlflow.log_metrics({f"final/{k}": v for k, v in metrics.items()})
    with tempfile.TemporaryDirectory() as tmp:
        grid = side_by_side(torch.from_numpy(reference_images), ev.images, cfg.eval.samples_per_prompt,
                            ("reference (base model)", "fine-tuned"), Path(tmp) / "side_by_side.png")
        pareto = trajectory_plot({"fine-tuning checkpoints": trajectory}, Path(tmp) / "pareto.png",
                                 reference=reference_metrics, title="alignment vs diversity along training")
        mlflow.log_artifact(str(grid), "grids")
        mlflow.log_artifact(str(pareto), "plots")
    return metrics, ev.images.numpy()

"""Step 5: the fine-tuned model against the reference, on the same held-out prompts and seeds, and
the current champion's per-sample scores under the same evaluation protocol (measured again when it
was measured otherwise), so that the promotion gate compares like with like. The candidate's scores
are kept in its MLflow run (mlops.version_scores) for later gates."""

import tempfile
from pathlib import Path
from typing import Annotated, Optional

import mlflow
import numpy as np
import pandas as pd
import torch
from mlflow import MlflowClient
from zenml import step

from drift.build import build_parts
from drift.config import DriftConfig
from drift.evaluation.protocol import evaluate_with_config, protocol_id, protocol_spec
from drift.evaluation.scores import scores_of
from drift.plots import side_by_side, trajectory_plot
from mlops.artifacts import ModelArtifact, base_from_store
from mlops.configuration import step_config
from mlops.model_registry import version_by_alias
from mlops.version_scores import log_scores, protocol_json, scores_under_protocol


@step(enable_cache=False, experiment_tracker=True)
def evaluate_model(config: DriftConfig, prompts: pd.DataFrame, model: ModelArtifact, trajectory: list,
                   reference_metrics: dict, reference_images: np.ndarray, reward_head: Optional[Path] = None) -> tuple[
        Annotated[dict, "evaluation"], Annotated[Optional[dict], "champion_evaluation"],
        Annotated[np.ndarray, "evaluation_images"]]:
    cfg = step_config(config, reward_head)
    parts = build_parts(cfg, model_source=str(model.directory), prompts=prompts, locate=base_from_store)
    ev = evaluate_with_config(cfg, parts.model, parts.reward, parts.embed, parts.eval_prompts, progress=True)
    spec = protocol_spec(cfg, parts.eval_prompts)
    scores = scores_of(ev, protocol_id(spec), cfg.eval.samples_per_prompt)
    metrics = {**ev.metrics, "protocol_id": scores.protocol_id, "protocol": spec, "scores": scores.model_dump()}
    for key in ("alignment", "diversity", "vendi"):
        metrics[f"{key}_change_vs_reference"] = metrics[key] - reference_metrics[key]
    mlflow.log_metrics({f"final/{k}": v for k, v in metrics.items() if isinstance(v, float)})
    mlflow.set_tag("protocol.id", metrics["protocol_id"])
    mlflow.log_text(protocol_json(spec), "protocol.json")
    log_scores(MlflowClient(), mlflow.active_run().info.run_id, scores)

    champion = version_by_alias(MlflowClient(), cfg.registry.model_name, "champion")
    champion_eval = None
    if champion is not None:
        compared, re_evaluated = scores_under_protocol(mlflow.get_tracking_uri(), champion, cfg, prompts,
                                                       metrics["protocol_id"])
        champion_eval = {"version": str(champion.version), "scores": compared.model_dump(),
                         "re_evaluated": re_evaluated}
        mlflow.log_metrics({f"champion/{k}": v for k, v in compared.figures().items()})
        mlflow.set_tag("champion.re_evaluated", str(re_evaluated))
    with tempfile.TemporaryDirectory() as tmp:
        grid = side_by_side(torch.from_numpy(reference_images), ev.images, cfg.eval.samples_per_prompt,
                            ("reference (base model)", "fine-tuned"), Path(tmp) / "side_by_side.png")
        pareto = trajectory_plot({"fine-tuning checkpoints": trajectory}, Path(tmp) / "pareto.png",
                                 reference=reference_metrics, title="alignment vs diversity along training")
        mlflow.log_artifact(str(grid), "grids")
        mlflow.log_artifact(str(pareto), "plots")
    return metrics, champion_eval, ev.images.numpy()

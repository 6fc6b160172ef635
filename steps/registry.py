"""Step 6: register the fine-tuned model as a new version, set `challenger`, and move `champion`
only through the promotion gate (drift.evaluation.promotion); end the run with a short report."""

import json
import math
import tempfile
from pathlib import Path
from typing import Annotated, Optional

import mlflow
from mlflow import MlflowClient
from zenml import log_metadata, step

from drift.config import parse_config
from drift.evaluation.promotion import promotion_decision
from mlops.artifacts import PipelineArtifact
from mlops.pyfunc_model import GENERATOR_CODE, GENERATOR_SIGNATURE
from mlops.registry import register_version, version_by_alias
from mlops.report import run_summary

GATED = ("alignment", "diversity", "vendi")


def current_champion(client: MlflowClient, name: str) -> dict | None:
    version = version_by_alias(client, name, "champion")
    if version is None:
        return None
    return {"version": version.version, **{k: float(version.tags[k]) for k in GATED if k in version.tags}}


@step(enable_cache=False, experiment_tracker=True)
def register_model(config: dict, model: PipelineArtifact, evaluation: dict, reference_metrics: dict,
                   data_version: dict, extra_tags: Optional[dict] = None) -> Annotated[dict, "registration"]:
    cfg = parse_config(config)
    name = cfg.registry.model_name
    client = MlflowClient()
    candidate = {k: float(evaluation[k]) for k in GATED}
    run_id = mlflow.active_run().info.run_id
    tags = {**candidate, **{f"data.{k}": v for k, v in data_version.items()}, "mlflow_run_id": run_id,
            **(extra_tags or {})}
    with tempfile.TemporaryDirectory() as tmp:
        sampling = Path(tmp) / "sampling.json"
        sampling.write_text(json.dumps({"num_steps": cfg.sampling.num_steps, "noise_level": cfg.eval_noise_level,
                                        "guidance_scale": cfg.sampling.guidance_scale}))
        version = register_version(client, name, GENERATOR_CODE,
                                   {"pipeline": str(model.directory), "sampling": str(sampling)}, tags,
                                   GENERATOR_SIGNATURE)
    champion = current_champion(client, name)
    client.set_registered_model_alias(name, "challenger", version)
    promote, reason = promotion_decision(candidate, champion, reference_metrics, cfg.registry.min_diversity_fraction)
    if promote:
        client.set_registered_model_alias(name, "champion", version)
    client.set_model_version_tag(name, version, "promotion", reason)
    mlflow.set_tags({"promotion.decision": "promoted" if promote else "rejected", "promotion.reason": reason,
                     "registered_version": version})
    result = {"model_name": name, "version": int(version), "promoted": promote, "reason": reason,
              "previous_champion": champion["version"] if champion else None,
              **{k: v for k, v in candidate.items() if math.isfinite(v)}}
    log_metadata(metadata={"registration": result})
    print(run_summary(result, candidate, reference_metrics, champion, mlflow.get_tracking_uri(), run_id))
    return result

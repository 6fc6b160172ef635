"""Step 6: log the fine-tuned model, register a version, set `challenger`, and move `champion`
only through the promotion gate (drift.promotion)."""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import Annotated

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from zenml import log_metadata, step

from drift.config import parse_config
from drift.promotion import promotion_decision
from steps import TRACKER
from steps.pyfunc_model import SIGNATURE, DriftImageGenerator, requirements

GATED = ("alignment", "diversity", "vendi")


def current_champion(client: MlflowClient, name: str) -> dict | None:
    try:
        version = client.get_model_version_by_alias(name, "champion")
    except MlflowException:
        return None
    return {"version": version.version, **{k: float(version.tags[k]) for k in GATED if k in version.tags}}


@step(enable_cache=False, experiment_tracker=TRACKER)
def register_model(config: dict, model_dir: str, evaluation: dict, reference_metrics: dict,
                   data_version: dict, extra_tags: dict | None = None) -> Annotated[dict, "registration"]:
    cfg = parse_config(config)
    name = cfg.registry.model_name
    client = MlflowClient()
    with tempfile.TemporaryDirectory() as tmp:
        sampling = Path(tmp) / "sampling.json"
        sampling.write_text(json.dumps({"num_steps": cfg.sampling.num_steps, "noise_level": cfg.eval_noise_level,
                                        "guidance_scale": cfg.sampling.guidance_scale}))
        info = mlflow.pyfunc.log_model(name="model", python_model=DriftImageGenerator(), signature=SIGNATURE,
                                       artifacts={"pipeline": model_dir, "sampling": str(sampling)},
                                       pip_requirements=requirements())
    version = mlflow.register_model(info.model_uri, name).version
    candidate = {k: float(evaluation[k]) for k in GATED}
    for key, value in {**candidate, **{f"data.{k}": v for k, v in data_version.items()},
                       "mlflow_run_id": mlflow.active_run().info.run_id, **(extra_tags or {})}.items():
        client.set_model_version_tag(name, version, key, str(value))
    champion = current_champion(client, name)
    client.set_registered_model_alias(name, "challenger", version)
    promote, reason = promotion_decision(candidate, champion, reference_metrics, cfg.registry.min_diversity_fraction)
    if promote:
        client.set_registered_model_alias(name, "champion", version)
    client.set_model_version_tag(name, version, "promotion", reason)
    mlflow.set_tags({"promotion.decision": "promoted" if promote else "rejected", "promotion.reason": reason,
                     "registered_version": version})
    print(f"{name} version {version}: {reason}")
    result = {"model_name": name, "version": int(version), "promoted": promote, "reason": reason,
              "previous_champion": champion["version"] if champion else None,
              **{k: v for k, v in candidate.items() if math.isfinite(v)}}
    log_metadata(metadata={"registration": result})
    return result

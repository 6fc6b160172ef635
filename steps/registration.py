"""Step 6: register the fine-tuned model as a new version, set `challenger`, and move `champion`
only through the promotion gate (drift.evaluation.promotion), with the read-compare-set of the
alias under the registry's promotion lock; end the run with a short report."""

from pathlib import Path
from typing import Annotated, Optional

import mlflow
import pandas as pd
from mlflow import MlflowClient
from zenml import log_metadata, step

from drift.config import DriftConfig
from drift.evaluation.promotion import promotion_decision
from drift.models.trained import locate_base, read_manifest
from mlops.artifacts import ModelArtifact, base_from_store
from mlops.champion import figures_under_protocol, gated_figures, version_tags
from mlops.configuration import step_config
from mlops.model_registry import compare_and_promote, register_generator
from mlops.report import run_summary


@step(enable_cache=False, experiment_tracker=True)
def register_model(config: DriftConfig, prompts: pd.DataFrame, model: ModelArtifact, evaluation: dict,
                   champion_evaluation: Optional[dict], reference_metrics: dict, data_version: dict,
                   reward_head: Optional[Path] = None,
                   extra_tags: Optional[dict] = None) -> Annotated[dict, "registration"]:
    cfg = step_config(config, reward_head)
    name = cfg.registry.model_name
    client = MlflowClient()
    candidate = gated_figures(evaluation)
    run_id = mlflow.active_run().info.run_id
    tags = {**version_tags(candidate, evaluation["protocol_id"], evaluation["protocol"]),
            **{f"data.{k}": v for k, v in data_version.items()}, "mlflow_run_id": run_id, **(extra_tags or {})}
    # A version must load later: its base must be the one it was trained on (a changed local
    # base stops here, naming both digests).
    locate_base(read_manifest(model.directory).base, cfg.model.source, base_from_store)
    version = register_generator(client, name, model.directory, cfg.sampler(evaluation=True), tags)
    client.set_registered_model_alias(name, "challenger", version)
    compared: dict = {}

    def decide(champion):
        if champion is None:
            return promotion_decision(candidate, None, reference_metrics, cfg.registry)
        if champion_evaluation is not None and champion.version == champion_evaluation["version"]:
            compared.update(champion_evaluation)
        else:  # the champion changed since the evaluation step: measure the new one the same way
            compared.update(figures_under_protocol(mlflow.get_tracking_uri(), champion, cfg, prompts,
                                                   evaluation["protocol_id"]))
        promote, reason = promotion_decision(candidate, compared["figures"], reference_metrics, cfg.registry,
                                             compared["own_terms"])
        how = "re-evaluated under this run's protocol" if compared["re_evaluated"] else "same protocol"
        return promote, f"{reason} [champion version {compared['version']}, {how}]"

    promote, reason, _ = compare_and_promote(client, name, version, decide)
    client.set_model_version_tag(name, version, "promotion", reason)
    mlflow.set_tags({"promotion.decision": "promoted" if promote else "rejected", "promotion.reason": reason[:5000],
                     "registered_version": version})
    result = {"model_name": name, "version": int(version), "promoted": promote, "reason": reason,
              "previous_champion": compared.get("version"), "figures": candidate,
              "champion_figures": compared.get("figures")}
    log_metadata(metadata={"registration": result})
    print(run_summary(result, candidate, reference_metrics, compared or None, mlflow.get_tracking_uri(), run_id))
    return result

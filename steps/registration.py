"""Step 6: register the fine-tuned model as a new version and decide it with the promotion gate
(drift.evaluation.promotion), under the registry's promotion lock for the read-compare-set of the
`champion` alias only (mlops.decisions); versions earlier runs left undecided under this protocol are
decided first. Once decided, the run folders that kept the model are removed. The run ends with a
short report."""

from pathlib import Path
from typing import Annotated, Optional

import mlflow
import pandas as pd
from mlflow import MlflowClient
from zenml import log_metadata, step

from drift.config import DriftConfig
from drift.evaluation.scores import SampleScores
from drift.models.trained import locate_base, read_manifest
from drift.training import run_folder
from mlops.artifacts import ModelArtifact, base_from_store
from mlops.configuration import step_config
from mlops.decisions import decided_digests, register_and_decide
from mlops.report import run_summary
from mlops.version_scores import gated_figures, scores_under_protocol, version_tags


@step(enable_cache=False, experiment_tracker=True)
def register_model(config: DriftConfig, prompts: pd.DataFrame, model: ModelArtifact, evaluation: dict,
                   champion_evaluation: Optional[dict], reference_metrics: dict, data_version: dict,
                   reward_head: Optional[Path] = None,
                   extra_tags: Optional[dict] = None) -> Annotated[dict, "registration"]:
    cfg = step_config(config, reward_head)
    name, uri = cfg.registry.model_name, mlflow.get_tracking_uri()
    run_id = mlflow.active_run().info.run_id
    candidate = SampleScores.model_validate(evaluation["scores"])
    prepared = {} if champion_evaluation is None else {str(champion_evaluation["version"]): (
        SampleScores.model_validate(champion_evaluation["scores"]), champion_evaluation["re_evaluated"])}

    def champion_scores(version):
        found = prepared.get(str(version.version))
        return found or scores_under_protocol(uri, version, cfg, prompts, candidate.protocol_id)

    tags = {**version_tags(gated_figures(evaluation), evaluation["protocol_id"], evaluation["protocol"]),
            **{f"data.{k}": v for k, v in data_version.items()}, "mlflow_run_id": run_id, **(extra_tags or {})}
    # A version must load later: its base must be the one it was trained on (a changed local
    # base stops here, naming both digests).
    locate_base(read_manifest(model.directory).base, cfg.model.source, base_from_store)
    decision, _ = register_and_decide(name, model.directory, cfg.sampler(evaluation=True), tags, candidate,
                                      reference_metrics, cfg.registry, champion_scores)
    for path in run_folder.forget(cfg.run.output_dir, decided_digests(MlflowClient(), name)):
        print(f"removed {path}: its model's version is decided")
    mlflow.set_tags({"promotion.decision": "promoted" if decision.promoted else "rejected",
                     "promotion.reason": decision.reason[:5000], "registered_version": decision.version})
    figures = candidate.figures()
    compared = None if decision.champion is None else {"version": decision.champion,
                                                       "figures": decision.champion_figures}
    result = {"model_name": name, "version": int(decision.version), "promoted": decision.promoted,
              "reason": decision.reason, "previous_champion": decision.champion, "figures": figures,
              "champion_figures": decision.champion_figures}
    log_metadata(metadata={"registration": result})
    print(run_summary(result, figures, reference_metrics, compared, uri, run_id))
    return result

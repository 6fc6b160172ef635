"""A registered version's per-sample scores under an evaluation protocol (drift.evaluation.scores),
for a gate that compares like with like, sample by sample.

A run logs its candidate's scores in its MLflow run as ``scores/<protocol id>.json`` (the run that
registers the version). A version measured under another protocol, or registered before scores were
kept, is downloaded and evaluated exactly as the candidate was, once: its scores are then logged in
its own run for the next gate under that protocol.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from pydantic import ValidationError

from drift.build import build_parts
from drift.evaluation.protocol import evaluate_with_config
from drift.evaluation.scores import SampleScores, scores_of

PROTOCOL_ID, OWN_TERMS, RUN_ID = "protocol.id", "protocol.reward_terms", "mlflow_run_id"
SCORES_DIR = "scores"


def _gated(name: str) -> bool:
    return name in ("alignment", "diversity", "vendi") or name.startswith("reward/")


def gated_figures(metrics: dict) -> dict[str, float]:
    """The figures a registered version records: alignment, diversity, Vendi score and each reward term."""
    return {k: float(v) for k, v in metrics.items() if _gated(k)}


def version_tags(figures: dict, protocol_id: str, spec: dict) -> dict[str, str]:
    """What a registered version records about how it was measured."""
    return {**{k: str(v) for k, v in figures.items()}, PROTOCOL_ID: protocol_id,
            OWN_TERMS: ",".join(term["name"] for term in spec["reward"])}


def own_terms(version: ModelVersion) -> list[str]:
    """The reward terms of the protocol the version was registered under."""
    return [t for t in version.tags.get(OWN_TERMS, "").split(",") if t]


def version_run(version: ModelVersion) -> str | None:
    """The MLflow run that registered ``version``."""
    return version.tags.get(RUN_ID) or version.run_id or None


def scores_path(protocol_id: str) -> str:
    return f"{SCORES_DIR}/{protocol_id}.json"


def log_scores(client: MlflowClient, run_id: str, scores: SampleScores) -> None:
    client.log_text(run_id, scores.model_dump_json(), scores_path(scores.protocol_id))


def recorded_scores(client: MlflowClient, version: ModelVersion, protocol_id: str) -> SampleScores | None:
    """The scores logged for ``version`` under ``protocol_id``; None when there are none (or they do
    not read back: they are then measured again)."""
    run_id = version_run(version)
    if run_id is None:
        return None
    try:
        if scores_path(protocol_id) not in {a.path for a in client.list_artifacts(run_id, SCORES_DIR)}:
            return None
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(client.download_artifacts(run_id, scores_path(protocol_id), tmp))
            return SampleScores.model_validate_json(local.read_text())
    except (MlflowException, OSError, ValidationError, json.JSONDecodeError):
        return None


def _evaluate(tracking_uri: str, version: ModelVersion, cfg, prompts, protocol_id: str) -> SampleScores:
    """Download ``version`` and measure it under the run configuration's protocol."""
    from mlops.artifacts import base_from_store
    from mlops.model_registry import download_generator

    with tempfile.TemporaryDirectory() as tmp:
        registered = download_generator(tracking_uri, version.name, version.version, tmp)
        parts = build_parts(cfg, model_source=str(registered.model_dir), prompts=prompts, locate=base_from_store)
        ev = evaluate_with_config(cfg, parts.model, parts.reward, parts.embed, parts.eval_prompts)
    return scores_of(ev, protocol_id, cfg.eval.samples_per_prompt)


def scores_under_protocol(tracking_uri: str, version: ModelVersion, cfg, prompts, protocol_id: str
                          ) -> tuple[SampleScores, bool]:
    """(scores, evaluated now) of a registered version under this run's protocol: its recorded
    scores, else it is downloaded and evaluated now, exactly as the candidate was, and the scores are
    logged in its run."""
    client = MlflowClient(tracking_uri, tracking_uri)
    recorded = recorded_scores(client, version, protocol_id)
    if recorded is not None:
        return recorded, False
    scores = _evaluate(tracking_uri, version, cfg, prompts, protocol_id)
    run_id = version_run(version)
    if run_id is not None:
        try:
            log_scores(client, run_id, scores)
        except MlflowException as err:  # e.g. its run was deleted: measured again next time
            print(f"could not keep the scores of {version.name} version {version.version} in its run {run_id}: {err}")
    return scores, True


def protocol_json(spec: dict) -> str:
    return json.dumps(spec, indent=1, sort_keys=True)

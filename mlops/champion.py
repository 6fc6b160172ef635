"""The champion's figures under a run's evaluation protocol, for a gate that compares like with
like: the figures recorded with it when it was measured the same way, else measured again."""

from __future__ import annotations

import json
import tempfile

from mlflow.entities.model_registry import ModelVersion

from drift.build import build_parts
from drift.evaluation.protocol import evaluate_with_config

PROTOCOL_ID, OWN_TERMS = "protocol.id", "protocol.reward_terms"


def _gated(name: str) -> bool:
    return name in ("alignment", "diversity", "vendi") or name.startswith("reward/")


def gated_figures(metrics: dict) -> dict[str, float]:
    """The figures a gate compares: alignment, diversity, Vendi score and each reward term."""
    return {k: float(v) for k, v in metrics.items() if _gated(k)}


def version_tags(figures: dict, protocol_id: str, spec: dict) -> dict[str, str]:
    """What a registered version records about how it was measured."""
    return {**{k: str(v) for k, v in figures.items()}, PROTOCOL_ID: protocol_id,
            OWN_TERMS: ",".join(term["name"] for term in spec["reward"])}


def recorded_figures(version: ModelVersion) -> dict[str, float]:
    return {k: float(v) for k, v in version.tags.items() if _gated(k)}


def figures_under_protocol(tracking_uri: str, version: ModelVersion, cfg, prompts, protocol_id: str) -> dict:
    """{'version', 'figures', 're_evaluated', 'own_terms'} of a registered version under this run's
    protocol: its recorded figures when its protocol id matches, else it is downloaded and
    evaluated now, exactly as the candidate was."""
    from mlops.artifacts import base_from_store
    from mlops.model_registry import download_generator

    own_terms = [t for t in version.tags.get(OWN_TERMS, "").split(",") if t]
    recorded = recorded_figures(version)
    if version.tags.get(PROTOCOL_ID) == protocol_id and "alignment" in recorded:
        return {"version": version.version, "figures": recorded, "re_evaluated": False, "own_terms": own_terms}
    with tempfile.TemporaryDirectory() as tmp:
        registered = download_generator(tracking_uri, version.name, version.version, tmp)
        parts = build_parts(cfg, model_source=str(registered.model_dir), prompts=prompts, locate=base_from_store)
        ev = evaluate_with_config(cfg, parts.model, parts.reward, parts.embed, parts.eval_prompts)
    return {"version": version.version, "figures": gated_figures(ev.metrics), "re_evaluated": True,
            "own_terms": own_terms, "recorded_protocol": version.tags.get(PROTOCOL_ID, "none")}


def protocol_json(spec: dict) -> str:
    return json.dumps(spec, indent=1, sort_keys=True)

"""Methods compared by the benchmarks, as config overrides on top of a DRIFT run configuration."""

from __future__ import annotations

from drift.config import DriftConfig

ALL_OFF = {"drift.subset.enabled": False, "drift.prompt_noise.enabled": False, "drift.shaping.enabled": False}

METHODS: dict[str, dict] = {
    "grpo": ALL_OFF,
    "drift": {},
}


def method_config(base: DriftConfig, name: str, extra: dict | None = None) -> DriftConfig:
    """``base`` with the method's overrides (and ``extra``) applied; 'drift' keeps the base's DRIFT
    settings, every other method starts from them."""
    return base.with_overrides({**METHODS[name], **(extra or {})})

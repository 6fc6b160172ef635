"""The few lines a pipeline run ends with: what was registered, what the gate decided, how the
model compares, and where to look."""

from __future__ import annotations


def _figures(metrics: dict | None) -> str:
    if not metrics or "alignment" not in metrics:
        return "n/a"
    return f"alignment {metrics['alignment']:.3f}, diversity {metrics['diversity']:.4f}"


def run_summary(registration: dict, candidate: dict, reference: dict, champion: dict | None, tracking_uri: str,
                run_id: str) -> str:
    """``champion``: the champion compared against ({'version', 'figures', ...}), or None."""
    previous = f"version {champion['version']}: {_figures(champion['figures'])}" if champion else "none"
    ui = (f"mlflow ui --backend-store-uri '{tracking_uri}'" if not tracking_uri.startswith("http")
          else tracking_uri)
    lines = [
        "",
        "=" * 78,
        f"registered {registration['model_name']} version {registration['version']} (alias challenger)",
        f"decision:  {'PROMOTED to champion' if registration['promoted'] else 'not promoted'}",
        f"reason:    {registration['reason'].split('; ')[0]}",
        *([f"figures:   {registration['reason'].split('; ', 1)[1]}"] if "; " in registration["reason"] else []),
        f"candidate: {_figures(candidate)}",
        f"reference: {_figures(reference)} (base model)",
        f"champion before this run: {previous}",
        f"MLflow:    run {run_id}; {ui}",
        "ZenML:     zenml login --local (dashboard), zenml pipeline runs list",
        "=" * 78,
    ]
    return "\n".join(lines)

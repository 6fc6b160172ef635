"""Create (or reuse) the local ZenML stack the pipelines run on: the default orchestrator and
artifact store plus an MLflow experiment tracker whose SQLite tracking and registry store lives
in the artifact store, i.e. under $ZENML_CONFIG_PATH (the Makefile sets .state/zenml). Idempotent.

    python -m mlops.stack            # set up and activate
    python -m mlops.stack --uri      # print the MLflow tracking URI (for `mlflow ui`)
"""

from __future__ import annotations

import sys

from zenml.client import Client
from zenml.enums import StackComponentType

STACK = "drift_local"
# The experiment tracker the tracked steps name (steps.TRACKER).
TRACKER = "mlflow_tracker"


def ensure_stack() -> str:
    client = Client()
    trackers = {c.name for c in client.list_stack_components(type=StackComponentType.EXPERIMENT_TRACKER, size=100)}
    if TRACKER not in trackers:
        client.create_stack_component(name=TRACKER, flavor="mlflow", configuration={},
                                      component_type=StackComponentType.EXPERIMENT_TRACKER)
    if STACK not in {s.name for s in client.list_stacks(size=100)}:
        client.create_stack(name=STACK, components={
            StackComponentType.ORCHESTRATOR: "default",
            StackComponentType.ARTIFACT_STORE: "default",
            StackComponentType.EXPERIMENT_TRACKER: TRACKER,
        })
    if client.active_stack_model.name != STACK:
        client.activate_stack(STACK)
    return client.active_stack.experiment_tracker.get_tracking_uri()


if __name__ == "__main__":
    uri = ensure_stack()
    print(uri if "--uri" in sys.argv else f"ZenML stack '{STACK}' active; MLflow tracking and registry: {uri}")

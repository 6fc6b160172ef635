"""Register the project's ZenML stack where ZenML keeps stacks (the active ZenML store, as
`zenml stack register` would) and make it the active stack of this repository (as
`zenml stack set` would). Idempotent. The stores the stack points at live under ``.state/``:

    python -m mlops.stack                      # artifact store .state/artifacts, MLflow in SQLite there
    python -m mlops.stack --mlflow-uri URI     # an MLflow tracking server instead (see docs/deploy.md)
    python -m mlops.stack --uri                # print the active stack's MLflow tracking URI

The MLflow store is created here, once, so that concurrent pipeline runs never race to create it.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
from pathlib import Path

from zenml.client import Client
from zenml.enums import StackComponentType

LOCAL_STACK = "drift_local"
SERVER_STACK = "drift_mlflow_server"


def _component(client: Client, kind: StackComponentType, name: str, flavor: str, configuration: dict) -> str:
    """Create the component, or reuse one of that name with the same configuration. A component of
    that name configured otherwise (another clone's paths) gets a name suffixed with a hash of the
    configuration, so that two clones never share stores."""
    existing = {c.name: c for c in client.list_stack_components(type=kind, size=1000)}
    if name in existing and existing[name].configuration != configuration:
        name = f"{name}_{hashlib.sha1(repr(sorted(configuration.items())).encode()).hexdigest()[:8]}"
    if name not in existing:
        client.create_stack_component(name=name, flavor=flavor, configuration=configuration, component_type=kind)
    return name


def ensure_stack(state_dir: str | Path, mlflow_uri: str | None = None, mlflow_token: str | None = None) -> str:
    """Register (or reuse) and activate the stack; returns its MLflow tracking URI."""
    client = Client()
    state = Path(state_dir).resolve()
    store = _component(client, StackComponentType.ARTIFACT_STORE, "drift_artifacts", "local",
                       {"path": str(state / "artifacts")})
    (state / "artifacts").mkdir(parents=True, exist_ok=True)
    if mlflow_uri:
        # ZenML requires one authentication method for a remote server; an open server ignores the token.
        tracker_config = {"tracking_uri": mlflow_uri, "tracking_token": mlflow_token or "unused"}
        tracker = _component(client, StackComponentType.EXPERIMENT_TRACKER, "drift_mlflow_server", "mlflow",
                             tracker_config)
        stack = SERVER_STACK
    else:
        tracker = _component(client, StackComponentType.EXPERIMENT_TRACKER, "drift_mlflow", "mlflow", {})
        stack = LOCAL_STACK
    components = {StackComponentType.ORCHESTRATOR: "default", StackComponentType.ARTIFACT_STORE: store,
                  StackComponentType.EXPERIMENT_TRACKER: tracker}
    stacks = {s.name: s for s in client.list_stacks(size=1000)}
    if stack in stacks and {k: v[0].name for k, v in stacks[stack].components.items()} != components:
        stack = f"{stack}_{hashlib.sha1(str(state).encode()).hexdigest()[:8]}"
    if stack not in stacks:
        client.create_stack(name=stack, components=components)
    if client.active_stack_model.name != stack:
        client.activate_stack(stack)
    uri = client.active_stack.experiment_tracker.get_tracking_uri()
    create_mlflow_store(uri, mlflow_token)
    return uri


def create_mlflow_store(uri: str, token: str | None = None) -> None:
    """Create (or migrate) the tracking and registry store now, in one process."""
    from mlflow import MlflowClient

    if token:
        os.environ.setdefault("MLFLOW_TRACKING_TOKEN", token)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.search_experiments(max_results=1)
    client.search_registered_models(max_results=1)


def tracking_uri() -> str:
    """The active stack's MLflow tracking URI."""
    return Client().active_stack.experiment_tracker.get_tracking_uri()


def default_state_dir() -> Path:
    """``.state`` at the root of the ZenML repository (`zenml init`), else of the working directory."""
    root = Client.find_repository()
    return (root or Path.cwd()) / ".state"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mlops.stack", description=__doc__.splitlines()[0])
    parser.add_argument("--state", type=Path, help="where the stores live (default: .state at the repository root)")
    parser.add_argument("--mlflow-uri", help="an MLflow tracking server, e.g. http://127.0.0.1:5000")
    parser.add_argument("--mlflow-token", help="its bearer token (default: $MLFLOW_TRACKING_TOKEN)")
    parser.add_argument("--uri", action="store_true", help="only print the active stack's MLflow tracking URI")
    args = parser.parse_args(argv)
    if args.uri:
        print(tracking_uri())
        return 0
    uri = ensure_stack(args.state or default_state_dir(), args.mlflow_uri,
                       args.mlflow_token or os.environ.get("MLFLOW_TRACKING_TOKEN"))
    print(f"ZenML stack '{Client().active_stack_model.name}' active; MLflow tracking and registry: {uri}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The training pipeline against a real MLflow tracking server (artifacts served through it), and
its outputs read back from the stores alone: the run's local outputs are deleted first."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.conftest import BIN, make_zen_env, run_pipeline, small_config


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow_server")
    port = _free_port()
    cmd = [str(BIN / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
           "--artifacts-destination", str(root / "artifacts"), "--serve-artifacts", "--host", "127.0.0.1",
           "--port", str(port), "--workers", "1"]
    log = open(root / "server.log", "w")
    # The server's background job consumers are not needed here: they only cost CPU.
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true",
                                 "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
    uri = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while True:
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2) as response:
                if response.status == 200:
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            raise RuntimeError(f"mlflow server did not start: {(root / 'server.log').read_text()[-3000:]}")
        time.sleep(0.5)
    try:
        yield {"uri": uri, "root": root}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the server and its workers
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


LOAD_ARTIFACT = """
import json, sys, torch
from zenml.client import Client
from drift.models import load_model
from drift.rollout import rollout
run = Client().get_pipeline_run(sys.argv[1])
artifact = run.steps["drift_finetune"].outputs["model"][0]
model = artifact.load()
images = rollout(load_model(str(model.directory)), ["the number 3"], 2, torch.tensor([1, 2]), 5, 0.0).images
print(json.dumps({"shape": list(images.shape), "finite": bool(torch.isfinite(images).all()),
                  "visualizations": len(artifact.visualizations or [])}))
"""


def test_pipeline_against_an_mlflow_server_and_outputs_from_the_stores_alone(testbed, mlflow_server, tmp_path,
                                                                             tmp_path_factory):
    zen = make_zen_env(tmp_path_factory.mktemp("zenml_server_home"), mlflow_server["uri"])
    assert zen["tracking_uri"] == mlflow_server["uri"]
    cfg = small_config(testbed, **{"train.iterations": 4, "eval.every": 2, "registry.model_name": "drift-server",
                                   "run.output_dir": str(tmp_path / "runs")})
    result = run_pipeline(zen, cfg, tmp_path, "server-run")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    log = (result.stdout + result.stderr).splitlines()
    assert len(log) < 80, "\n".join(log)
    assert "registered drift-server version 1" in "\n".join(log[-14:])

    # The run's local outputs are gone: everything below comes from the artifact store and the server.
    shutil.rmtree(tmp_path / "runs", ignore_errors=True)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
    script = zen["cwd"] / "load_artifact.py"  # ZenML needs a main module with a file
    script.write_text(LOAD_ARTIFACT)
    loaded = subprocess.run([sys.executable, str(script), "server-run"], cwd=zen["cwd"], env=zen["env"],
                            capture_output=True, text=True, timeout=300)
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    out = json.loads(loaded.stdout.strip().splitlines()[-1])
    assert out == {"shape": [2, 1, 8, 8], "finite": True, "visualizations": 1}

    import mlflow
    import pandas as pd
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_server["uri"], registry_uri=mlflow_server["uri"])
    experiment = client.get_experiment_by_name("drift_training_pipeline")
    assert experiment.artifact_location.startswith("mlflow-artifacts:")  # proxied: no client-side file access
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert len(client.get_metric_history(run.info.run_id, "reward_mean")) == 4
    assert {"final/alignment", "reference/diversity", "eval/alignment"} <= set(run.data.metrics)
    artifacts = {a.path for d in ("grids", "plots") for a in client.list_artifacts(run.info.run_id, d)}
    assert {"grids/reference.png", "grids/side_by_side.png", "plots/pareto.png"} <= artifacts
    versions = client.search_model_versions("name='drift-server'")
    assert [v.version for v in versions] == ["1"]
    assert client.get_model_version_by_alias("drift-server", "champion").version == "1"
    assert client.get_model_version_by_alias("drift-server", "challenger").version == "1"
    mlflow.set_tracking_uri(mlflow_server["uri"])
    champion = mlflow.pyfunc.load_model("models:/drift-server@champion")
    images = champion.predict(pd.DataFrame({"prompt": ["the number 3", "a handwritten digit seven"], "seed": [1, 2]}))
    assert len(images) == 2 and all(len(s) > 50 for s in images["image_png_base64"])
    assert any((mlflow_server["root"] / "artifacts").rglob("MLmodel"))  # the server holds the files

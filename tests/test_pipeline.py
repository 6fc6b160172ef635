"""The ZenML pipeline end to end, exactly as users run it (`zenml pipeline run ... -c CONFIG`), in a
temporary ZenML home: the main scenario against a real MLflow tracking server (artifacts served
through it), its outputs read back from the stores alone after the run's local outputs are
deleted; invalid prompt files against the local SQLite stack."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from drift.data.validation import validate_file
from tests.conftest import make_zen_env, model_versions, registry, run_pipeline, small_config


def small(testbed, **kw):
    base = {"train.iterations": 10, "eval.every": 5, "registry.model_name": "drift-digits-test"}
    return small_config(testbed, **{**base, **kw})


def _kill_when_checkpointed(zen_env, cfg, tmp_path, name, iteration):
    """Start the pipeline and kill -9 its process group once the fine-tuning step has written the
    checkpoint of ``iteration``."""
    from drift.training.run import run_key

    pattern = f"*/checkpoints/iter_{iteration:06d}/manifest.json"  # in the run's own folder
    proc = run_pipeline(zen_env, cfg, tmp_path, name, wait=False)
    deadline = time.time() + 600
    while not list((Path(cfg.run.output_dir) / run_key(cfg)).glob(pattern)):
        assert proc.poll() is None and time.time() < deadline, proc.communicate()[0][-3000:]
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


LOAD_ARTIFACT = """
import json, sys, torch
from zenml.client import Client
from drift.models import load_model
from drift.rollout import rollout
from mlops.artifacts import base_from_store
run = Client().get_pipeline_run(sys.argv[1])
artifact = run.steps["drift_finetune"].outputs["model"][0]
model = artifact.load()
# the base too comes from the artifact store (the fine-tuning step put it there)
images = rollout(load_model(str(model.directory), locate=base_from_store), ["the number 3"], 2, torch.tensor([1, 2]), 5,
                 0.0).images
print(json.dumps({"shape": list(images.shape), "finite": bool(torch.isfinite(images).all()),
                  "visualizations": len(artifact.visualizations or [])}))
"""


def test_pipeline_registers_champion_then_rejects_a_worse_challenger(testbed, mlflow_server, tmp_path,
                                                                     tmp_path_factory):
    zen_env = make_zen_env(tmp_path_factory.mktemp("zenml_server_home"), mlflow_server["uri"])
    assert zen_env["tracking_uri"] == mlflow_server["uri"]
    # A run killed during fine-tuning resumes from its checkpoint when its configuration runs again.
    cfg = small(testbed, **{"checkpoint.every": 5, "run.output_dir": str(tmp_path / "runs")})
    _kill_when_checkpointed(zen_env, cfg, tmp_path, "first-killed", 5)
    first = run_pipeline(zen_env, cfg, tmp_path, "first")
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    log = (first.stdout + first.stderr).splitlines()
    assert any("resuming from" in line and "iter_000005 (iteration 5 of 10)" in line for line in log), log
    assert any("marked run first-killed failed" in line for line in log), log
    assert len(log) < 80 and "registered drift-digits-test version 1" in "\n".join(log[-14:]), "\n".join(log)
    assert not list((tmp_path / "runs").rglob("finished.json"))  # its version decided, the run folder is gone
    client = registry(zen_env)
    v1 = client.get_model_version_by_alias("drift-digits-test", "champion")
    assert client.get_model_version_by_alias("drift-digits-test", "challenger").version == v1.version
    for tag in ("alignment", "diversity", "vendi", "data.dvc_md5", "data.git_revision", "promotion"):
        assert tag in v1.tags, tag

    run = client.get_run(v1.tags["mlflow_run_id"])
    metrics = run.data.metrics
    for key in ("reward_mean", "diversity", "kept_fraction", "clip_fraction", "eval/alignment", "final/alignment",
                "final/vendi", "reference/diversity"):
        assert key in metrics, key
    assert len(client.get_metric_history(run.info.run_id, "reward_mean")) == cfg.train.iterations
    assert run.data.tags["data.data_md5"] and run.data.tags["promotion.decision"] == "promoted"
    artifacts = {a.path for d in ("grids", "plots") for a in client.list_artifacts(run.info.run_id, d)}
    assert {"grids/reference.png", "grids/side_by_side.png", "plots/pareto.png"} <= artifacts

    # The registered model generates images from a DataFrame of prompts.
    import mlflow
    import pandas as pd

    mlflow.set_tracking_uri(zen_env["tracking_uri"])
    model = mlflow.pyfunc.load_model("models:/drift-digits-test@champion",  # its local base is not at its recorded path
                                     model_config={"base_model": str(testbed["root"] / "base_model")})
    out = model.predict(pd.DataFrame({"prompt": ["the number 3", "a handwritten digit seven"], "seed": [1, 2]}))
    assert len(out) == 2 and all(len(s) > 50 for s in out["image_png_base64"])

    killed = client.search_runs([run.info.experiment_id], "attributes.run_name = 'first-killed'")
    assert [r.info.status for r in killed] == ["FAILED"]
    assert client.get_experiment(run.info.experiment_id).artifact_location.startswith("mlflow-artifacts:")
    local = Path(mlflow.artifacts.download_artifacts(f"models:/drift-digits-test/{v1.version}",
                                                     dst_path=str(tmp_path / "v1")))
    assert not list(local.rglob("*.pkl")), "the registered model must load without unpickling"
    assert any((mlflow_server["root"] / "artifacts").rglob("MLmodel"))  # the server holds the files

    # The run's local outputs are gone: the model comes back from the artifact store alone.
    shutil.rmtree(tmp_path / "runs", ignore_errors=True)
    script = zen_env["cwd"] / "load_artifact.py"  # ZenML needs a main module with a file
    script.write_text(LOAD_ARTIFACT)
    loaded = subprocess.run([sys.executable, str(script), "first"], cwd=zen_env["cwd"], env=zen_env["env"],
                            capture_output=True, text=True, timeout=300)
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    assert json.loads(loaded.stdout.strip().splitlines()[-1]) == {"shape": [2, 1, 8, 8], "finite": True,
                                                                  "visualizations": 1}

    # Measured on other evaluation prompts: the champion is evaluated again under them before the gate.
    worse = run_pipeline(zen_env, small(testbed, **{"train.iterations": 1, "eval.every": 1, "eval.num_prompts": 5}),
                         tmp_path, "worse")
    assert worse.returncode == 0, worse.stdout[-3000:] + worse.stderr[-3000:]
    challenger = client.get_model_version_by_alias("drift-digits-test", "challenger")
    champion = client.get_model_version_by_alias("drift-digits-test", "champion")
    assert int(challenger.version) == int(v1.version) + 1
    assert champion.version == v1.version, (v1.tags["alignment"], challenger.tags["alignment"])
    assert challenger.tags["promotion"].startswith("not promoted")
    assert "evaluated now under this protocol" in challenger.tags["promotion"]
    assert challenger.tags["protocol.id"] != v1.tags["protocol.id"]


BAD_FILES = {
    "blank": "prompt,split\n" + "".join(f"the number {i},train\n" for i in range(6)) + "   ,eval\n"
             + "".join(f"a drawing of the digit {i},eval\n" for i in range(5)),
    "duplicate": "prompt,split\n" + "the number 1,train\n" * 6 + "".join(f"digit {i} by hand,eval\n" for i in range(5)),
    "overlong": "prompt,split\n" + "".join(f"the number {i},train\n" for i in range(6)) + "x" * 500 + ",eval\n"
                + "".join(f"a drawing of the digit {i},eval\n" for i in range(5)),
}


def test_invalid_prompt_file_fails_before_any_model_and_registers_nothing(testbed, zen_env, tmp_path):
    # Every kind fails the same validation; one goes through the whole pipeline.
    for kind, text in BAD_FILES.items():
        (tmp_path / f"{kind}.csv").write_text(text)
        report = validate_file(tmp_path / f"{kind}.csv")
        assert not report.success and "INVALID" in report.to_text() and "FAILED" in report.to_text(), kind
    name = "drift-digits-bad-blank"
    result = run_pipeline(zen_env, small(testbed, **{"data.prompts": str(tmp_path / "blank.csv"),
                                                     "registry.model_name": name}), tmp_path, "bad-blank")
    assert result.returncode != 0
    log = result.stdout + result.stderr
    assert "INVALID" in log and "FAILED" in log
    assert "sample_reference" not in log.split("INVALID")[0].split("validate_prompts")[-1]
    assert model_versions(registry(zen_env), name) == []

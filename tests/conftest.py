import os

for key, value in {
    "ZENML_ANALYTICS_OPT_IN": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DVC_NO_ANALYTICS": "1",
    "HF_HUB_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}.items():
    os.environ.setdefault(key, value)

import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def tiny_sd15_dir(tmp_path_factory):
    from drift.models.tiny import build_tiny_sd15

    return build_tiny_sd15(tmp_path_factory.mktemp("sd15"))


@pytest.fixture(scope="session")
def tiny_sd3_dir(tmp_path_factory):
    from drift.models.tiny import build_tiny_sd3

    return build_tiny_sd3(tmp_path_factory.mktemp("sd3"))


@pytest.fixture(scope="session")
def tiny_flux_dir(tmp_path_factory):
    from drift.models.tiny import build_tiny_flux

    return build_tiny_flux(tmp_path_factory.mktemp("flux"))


ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@pytest.fixture(scope="session")
def testbed(tmp_path_factory):
    """The digits testbed built small (few epochs and steps) in a temporary directory."""
    from drift.data.prompts import read_prompts
    from drift.testbed.classifier import train_classifier
    from drift.testbed.data import build_data, load_images
    from drift.testbed.pretrain import pretrain, save

    root = tmp_path_factory.mktemp("testbed")
    paths = build_data(root)
    data = load_images(paths["images"])
    clf, accuracy = train_classifier(data["images"], data["labels"], data["is_test"], epochs=8)
    clf.save_pretrained(root / "classifier")
    pipe, stats = pretrain(data["images"], data["labels"], ~data["is_test"], read_prompts(paths["prompts"]), steps=400)
    save(pipe, stats, root / "base_model")
    return {"root": root, "accuracy": accuracy, "stats": stats, **paths}


def small_config(testbed, **overrides):
    """configs/digits.yaml pointed at the small testbed, with dotted-key overrides."""
    from drift.config import load_config

    root = testbed["root"]
    clf = {"checkpoint": str(root / "classifier")}
    return load_config(ROOT / "configs" / "digits.yaml", {
        "model.source": str(root / "base_model"), "data.prompts": str(testbed["prompts"]),
        "reward": [{"name": "digit_margin", "args": clf}], "embedding": {"name": "digit_features", "args": clf},
        "eval.coverage.args.images": str(testbed["images"]), "run.output_dir": str(root / "runs"), **overrides,
    })


def make_zen_env(home: Path, mlflow_uri: str | None = None) -> dict:
    """A ZenML home of its own with the project's stack registered in it. Commands run in
    ``home/work``, outside any ZenML repository, so that neither the user's ZenML store nor the
    repository's active stack (.zen) is touched."""
    work = home / "work"
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "ZENML_CONFIG_PATH": str(home / "zenml"), "ZENML_ANALYTICS_OPT_IN": "false",
           "MLFLOW_DISABLE_TELEMETRY": "true", "PATH": f"{BIN}:{os.environ['PATH']}"}
    env.pop("ZENML_REPOSITORY_PATH", None)
    cmd = [sys.executable, "-m", "mlops.stack", "--state", str(home / "state")]
    out = subprocess.run(cmd + (["--mlflow-uri", mlflow_uri] if mlflow_uri else []), cwd=work, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    uri = subprocess.run(cmd + ["--uri"], cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert uri.returncode == 0, uri.stderr[-3000:]
    return {"env": env, "tracking_uri": uri.stdout.strip().splitlines()[-1], "home": home, "cwd": work}


@pytest.fixture(scope="session")
def zen_env(tmp_path_factory):
    return make_zen_env(tmp_path_factory.mktemp("zenml_home"))


def run_pipeline(zen_env, cfg, tmp_path, name, pipeline="pipelines.training.drift_training_pipeline"):
    """`zenml pipeline run PIPELINE -c CONFIG` exactly as users run it, in the temporary ZenML home."""
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"enable_cache": False, "run_name": name,
                                    "parameters": {"config": cfg.model_dump(mode="json")}}))
    return subprocess.run([str(BIN / "zenml"), "pipeline", "run", pipeline,
                           "-c", str(path)], cwd=zen_env["cwd"], env=zen_env["env"], capture_output=True, text=True,
                          timeout=900)


def registry(zen_env):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=zen_env["tracking_uri"], registry_uri=zen_env["tracking_uri"])


def model_versions(client, name):
    from mlflow.exceptions import MlflowException

    try:
        return client.search_model_versions(f"name='{name}'")
    except MlflowException:
        return []

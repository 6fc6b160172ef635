import os

for key, value in {
    "ZENML_ANALYTICS_OPT_IN": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DVC_NO_ANALYTICS": "1",
    "HF_HUB_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}.items():
    os.environ.setdefault(key, value)

import signal  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import urllib.request  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402

# make test runs two pytest-xdist workers: one torch thread each (and in the processes they start),
# since two workers of two threads on two cores run far slower than one thread each.
WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if WORKERS > 1:
    os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // WORKERS))
torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or max(1, min(2, os.cpu_count() or 1))))


def pytest_collection_modifyitems(items):
    """The order in which make test's two pytest-xdist workers (--dist loadfile
    --no-loadscope-reorder: each module whole on one worker, for its module-scoped fixtures) take the
    modules: first one on the digits testbed, so that one worker starts building the testbed while
    the other runs the modules with costly module fixtures that do not need it; then the other
    testbed modules (the longest); then the rest, which fills the gaps."""

    def module_scoped(item) -> bool:
        return any(defs[-1].scope == "module" for defs in item._fixtureinfo.name2fixturedefs.values())

    on_testbed = {item.module for item in items if "testbed" in item.fixturenames}
    costly = {item.module for item in items if module_scoped(item)} - on_testbed
    first = next((item.module for item in items if item.module in on_testbed), None)
    items.sort(key=lambda item: (item.module is not first, item.module not in costly,
                                 item.module not in on_testbed))


@contextmanager
def built_once(tmp_path_factory, name: str):
    """A directory for session data that the whole test run shares: under pytest-xdist the first
    worker to ask builds it (the block runs with ``ready`` False) while the others wait on a lock,
    then reuse it. Yields (directory, ready)."""
    from filelock import FileLock

    base = tmp_path_factory.getbasetemp()
    root = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / name
    with FileLock(f"{root}.lock"):
        marker = root / ".built"
        root.mkdir(exist_ok=True)
        yield root, marker.is_file()
        marker.touch()


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


ENCODER_STEPS = 150  # a third of the DVC stage's: enough for the attribute probe's threshold


@pytest.fixture(scope="session")
def testbed(tmp_path_factory):
    """The digits testbed built small (few epochs and steps) in a temporary directory, once per test run."""
    import json

    from drift.data.prompts import read_prompts
    from drift.testbed.classifier import train_classifier
    from drift.testbed.data import build_data, load_images
    from drift.testbed.encoder import train_encoder
    from drift.testbed.pretrain import pretrain, save

    with built_once(tmp_path_factory, "testbed") as (root, ready):
        if not ready:
            paths = build_data(root)
            data = load_images(paths["images"])
            clf, accuracy = train_classifier(data["images"], data["labels"], data["is_test"], epochs=8)
            clf.save_pretrained(root / "classifier")
            encoder, _ = train_encoder(data["images"], data["is_test"], steps=ENCODER_STEPS)
            encoder.save_pretrained(root / "encoder")
            pipe, stats = pretrain(data["images"], data["labels"], ~data["is_test"], read_prompts(paths["prompts"]),
                                   steps=400)
            save(pipe, stats, root / "base_model")
            (root / "built.json").write_text(json.dumps({"accuracy": accuracy, "stats": stats,
                                                         **{k: str(v) for k, v in paths.items()}}))
    built = json.loads((root / "built.json").read_text())
    return {"root": root, "accuracy": built["accuracy"], "stats": built["stats"], "prompts": Path(built["prompts"]),
            "images": Path(built["images"])}


def small_config(testbed, **overrides):
    """configs/digits.yaml pointed at the small testbed, with dotted-key overrides."""
    from drift.config import load_config

    root = testbed["root"]
    clf = {"checkpoint": str(root / "classifier")}
    return load_config(ROOT / "configs" / "digits.yaml", {
        "eval.num_prompts": 10,  # a third of the default: the tests compare runs, not models
        "model.source": str(root / "base_model"), "data.prompts": str(testbed["prompts"]),
        "reward": [{"name": "digit_margin", "args": clf}],
        "embedding": {"name": "digit_encoder", "args": {"checkpoint": str(root / "encoder")}},
        "drift.shaping.embedding.args": clf, "eval.embeddings.classifier.args": clf,
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


def run_pipeline(zen_env, cfg, tmp_path, name, pipeline="pipelines.training.drift_training_pipeline", wait=True):
    """`zenml pipeline run PIPELINE -c CONFIG` exactly as users run it, in the temporary ZenML home
    (with ``wait=False``, the started process, in a process group of its own)."""
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"enable_cache": False, "run_name": name,
                                    "parameters": {"config": cfg.model_dump(mode="json")}}))
    cmd = [str(BIN / "zenml"), "pipeline", "run", pipeline, "-c", str(path)]
    if not wait:
        return subprocess.Popen(cmd, cwd=zen_env["cwd"], env=zen_env["env"], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True)
    return subprocess.run(cmd, cwd=zen_env["cwd"], env=zen_env["env"], capture_output=True, text=True, timeout=900)


@contextmanager
def local_registry(tmp_path: Path, experiment: str):
    """An MLflow store of its own in ``tmp_path`` as the tracking and registry URI, with a run of a new
    experiment open (whose artifacts go to ``tmp_path`` too: the default experiment keeps them in the
    working directory); yields (uri, client)."""
    import mlflow
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        experiment_id = mlflow.create_experiment(experiment, artifact_location=(tmp_path / "artifacts").as_uri())
        with mlflow.start_run(experiment_id=experiment_id):
            yield uri, MlflowClient(uri, uri)
    finally:
        mlflow.set_tracking_uri(previous)


def registry(zen_env):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=zen_env["tracking_uri"], registry_uri=zen_env["tracking_uri"])


def model_versions(client, name):
    from mlflow.exceptions import MlflowException

    try:
        return client.search_model_versions(f"name='{name}'")
    except MlflowException:
        return []


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
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

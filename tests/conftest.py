import os

for key, value in {
    "ZENML_ANALYTICS_OPT_IN": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DVC_NO_ANALYTICS": "1",
    "HF_HUB_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}.items():
    os.environ.setdefault(key, value)

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def tiny_sd15_dir(tmp_path_factory):
    from drift.models.tiny import build_tiny_sd15

    return build_tiny_sd15(tmp_path_factory.mktemp("sd15"))


@pytest.fixture(scope="session")
def tiny_sd3_dir(tmp_path_factory):
    from drift.models.tiny import build_tiny_sd3

    return build_tiny_sd3(tmp_path_factory.mktemp("sd3"))


ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def testbed(tmp_path_factory):
    """The digits testbed built small (few epochs and steps) in a temporary directory."""
    from drift.prompts import read_prompts
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
        "run.output_dir": str(root / "runs"), **overrides,
    })



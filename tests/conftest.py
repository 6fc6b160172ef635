import os

for key, value in {
    "ZENML_ANALYTICS_OPT_IN": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DVC_NO_ANALYTICS": "1",
    "HF_HUB_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}.items():
    os.environ.setdefault(key, value)

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

"""Configuration validation and model loading fail with messages that say what to do."""

import pytest
import yaml

from drift.config import load_config, parse_config
from drift.errors import ConfigError, ModelNotFoundError, UnsupportedModelError
from drift.models import load_model
from drift.registry import REWARDS

BASE = {"model": {"source": "m"}, "data": {"prompts": "p.csv"}, "reward": [{"name": "jpeg_compressibility"}]}


def test_minimal_config_gets_defaults():
    cfg = parse_config(BASE)
    assert cfg.sampling.group_size == 16 and cfg.drift.subset.mode == "window"


@pytest.mark.parametrize("patch, field", [
    ({"train": {"lr": -1}}, "train.lr"),
    ({"sampling": {"group_size": 1}}, "sampling.group_size"),
    ({"drift": {"subset": {"mode": "median"}}}, "drift.subset.mode"),
    ({"drift": {"prompt_noise": {"tau1": 0.9, "tau2": 0.5}}}, "drift.prompt_noise"),
    ({"train": {"learning_rate": 1e-4}}, "train.learning_rate"),
    ({"drift": {"shaping": {"weight": -0.5}}}, "drift.shaping.weight"),
    ({"model": {"source": "m", "height": 500}}, "model.height"),
    ({"model": {"source": "m", "guidance": -1.0}}, "model.guidance"),
    ({"drift": {"prompt_noise": {"directions": "principal"}}}, "drift.prompt_noise"),  # no corpus
    ({"eval": {"embeddings": {"Classifier features": {"name": "pixels"}}}}, "eval.embeddings"),
    ({"eval": {"embeddings": {"reward": {"name": "pixels"}}}}, "eval.embeddings"),
])
def test_errors_name_the_bad_field(patch, field):
    with pytest.raises(ConfigError) as err:
        parse_config({**BASE, **patch})
    assert field in str(err.value)


def test_zenml_run_config_carries_the_drift_config(tmp_path):
    path = tmp_path / "run.yaml"
    config = {**BASE, "train": {"iterations": 3}}
    path.write_text(yaml.safe_dump({"enable_cache": False, "parameters": {"config": config}}))
    assert load_config(path).train.iterations == 3
    assert load_config(path, {"train.iterations": 5}).train.iterations == 5


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_unknown_reward_lists_the_known_ones():
    with pytest.raises(ConfigError, match="jpeg_compressibility"):
        REWARDS.build("pickscore_v9")


def test_missing_hub_model_fails_fast_with_instructions(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError) as err:
        load_model("stabilityai/no-such-model-here")
    msg = str(err.value)
    assert "stabilityai/no-such-model-here" in msg and "model.source" in msg and "HF_HUB_OFFLINE" in msg


def test_missing_local_directory(tmp_path):
    with pytest.raises(ModelNotFoundError, match="could not be opened"):
        load_model(str(tmp_path / "absent"))


def test_unsupported_denoiser_is_named(tiny_sd3_dir):
    with pytest.raises(UnsupportedModelError, match="rectified-flow"):
        load_model(str(tiny_sd3_dir), family="eps")


@pytest.mark.parametrize("name", ["digits", "retrain_local", "retrain", "sd15_pickscore", "sd35m_pickscore",
                                  "flux_dev_pickscore"])
def test_committed_configs_are_valid_zenml_run_configs_carrying_drift_configs(name):
    from zenml.config.pipeline_run_configuration import PipelineRunConfiguration

    from tests.conftest import ROOT

    path = ROOT / "configs" / f"{name}.yaml"
    run = PipelineRunConfiguration.model_validate(yaml.safe_load(path.read_text()))
    assert run.enable_cache is False
    cfg = load_config(path)
    assert (cfg.preferences is not None) == name.startswith("retrain")
    if name == "retrain":
        assert run.schedule is not None and run.schedule.cron_expression == "0 3 * * *"


@pytest.mark.parametrize("name", ["sd15_pickscore", "sd35m_pickscore", "flux_dev_pickscore"])
def test_real_model_configs_ask_for_gpus_only_where_needed(name):
    from zenml.config.pipeline_run_configuration import PipelineRunConfiguration

    from tests.conftest import ROOT

    run = PipelineRunConfiguration.model_validate(yaml.safe_load((ROOT / "configs" / f"{name}.yaml").read_text()))
    gpu_steps = {"sample_reference", "drift_finetune", "evaluate_model"}
    assert set(run.steps) == gpu_steps  # validation and registration stay on CPU nodes
    for step in gpu_steps:
        assert run.steps[step].step_operator is True
        assert run.steps[step].settings["resources"].gpu_count == 1

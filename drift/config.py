"""The one typed run configuration: every hyperparameter of a run lives here.

A YAML file is either this configuration itself or a ZenML run configuration that carries it
under ``parameters.config`` (so one file serves ``drift`` commands and ``zenml pipeline run``).
Validation errors name the field, the rule and the value given.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from drift.errors import ConfigError


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class RunSection(_Section):
    name: str = "drift"
    seed: int = Field(0, ge=0)
    output_dir: Path = Path(".state/runs")
    device: str = "cpu"


class ModelSection(_Section):
    source: str = Field(..., description="hub id or local directory of a diffusers pipeline")
    family: Literal["auto", "flow", "eps"] = "auto"
    revision: str | None = None
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"


class DataSection(_Section):
    prompts: Path
    train_split: str = "train"
    eval_split: str = "eval"
    min_prompt_length: int = Field(3, ge=1, description="characters")
    max_prompt_length: int = Field(200, ge=1, description="characters")
    min_rows_per_split: int = Field(5, ge=1)

    @model_validator(mode="after")
    def _lengths(self):
        if self.min_prompt_length > self.max_prompt_length:
            raise ValueError(f"min_prompt_length ({self.min_prompt_length}) exceeds max_prompt_length "
                             f"({self.max_prompt_length})")
        return self


class SamplingSection(_Section):
    num_steps: int = Field(10, ge=1, le=1000)
    noise_level: float = Field(0.7, ge=0.0, le=10.0, description="SDE noise level (flow) or DDIM eta (eps)")
    guidance_scale: float = Field(1.0, ge=1.0, description="1 disables classifier-free guidance")
    group_size: int = Field(16, ge=2)
    prompts_per_iteration: int = Field(10, ge=1)
    batch_size: int = Field(256, ge=1, description="samples per denoiser call during rollouts")


class RewardTerm(_Section):
    name: str
    weight: float = 1.0
    args: dict[str, Any] = Field(default_factory=dict)


class EmbeddingSection(_Section):
    name: str = "pixels"
    args: dict[str, Any] = Field(default_factory=dict)


class LoraSection(_Section):
    enabled: bool = False
    rank: int = Field(8, ge=1)
    alpha: float = Field(8.0, gt=0)
    target_modules: list[str] = Field(default_factory=lambda: ["to_q", "to_k", "to_v", "to_out.0"])


class TrainSection(_Section):
    iterations: int = Field(40, ge=1)
    lr: float = Field(3e-4, gt=0, le=1.0)
    weight_decay: float = Field(0.0, ge=0)
    clip_range: float = Field(1e-3, gt=0, le=1.0)
    adv_clip: float = Field(5.0, gt=0)
    kl_coef: float = Field(0.0, ge=0)
    timestep_fraction: float = Field(1.0, gt=0, le=1.0)
    inner_epochs: int = Field(1, ge=1)
    micro_batch: int = Field(64, ge=1)
    grad_accum: int = Field(1, ge=1, description="micro-batches per optimizer step")
    max_grad_norm: float = Field(1.0, gt=0)
    ema_decay: float = Field(0.0, ge=0, lt=1.0, description="0 disables EMA")
    gradient_checkpointing: bool = False
    lora: LoraSection = Field(default_factory=LoraSection)


class SubsetSection(_Section):
    enabled: bool = False
    mode: Literal["window", "zscore"] = "window"
    keep_ratio: float = Field(0.75, gt=0, le=1.0)
    z_max: float = Field(1.0, gt=0)


class PromptNoiseSection(_Section):
    enabled: bool = False
    scale: float = Field(0.25, ge=0)
    tau1: float = Field(0.6, ge=0, le=1.0)
    tau2: float = Field(0.9, ge=0, le=1.0)
    rescale: bool = False
    psi: float = Field(1.0, ge=0, le=1.0)
    final_scale: float = Field(0.0, ge=0)
    decay_iterations: int = Field(0, ge=0, description="0 keeps the scale constant over training")

    @model_validator(mode="after")
    def _ordered(self):
        if self.tau1 >= self.tau2:
            raise ValueError(f"tau1 ({self.tau1}) must be smaller than tau2 ({self.tau2})")
        return self


class ShapingSection(_Section):
    enabled: bool = False
    mode: Literal["terminal", "dense"] = "terminal"
    weight: float = Field(1.0, ge=0, description="lambda, in units of the group's reward std")
    gamma: float = Field(1.0, gt=0, le=1.0)
    gate: bool = False


class DriftSection(_Section):
    subset: SubsetSection = Field(default_factory=SubsetSection)
    prompt_noise: PromptNoiseSection = Field(default_factory=PromptNoiseSection)
    shaping: ShapingSection = Field(default_factory=ShapingSection)


class EvalSection(_Section):
    every: int = Field(10, ge=0, description="iterations between evaluations; 0 = only at the end")
    num_prompts: int = Field(10, ge=1)
    samples_per_prompt: int = Field(16, ge=2)
    seed: int = Field(1234, ge=0)
    noise_level: float | None = Field(
        None, ge=0.0, description="sampler noise for evaluation (seeded, so still reproducible); "
        "None uses sampling.noise_level, 0 the deterministic sampler")


class CheckpointSection(_Section):
    every: int = Field(0, ge=0, description="iterations between checkpoints; 0 = only at the end")


class RegistrySection(_Section):
    model_name: str = Field("drift-digits", min_length=1, description="MLflow registered model name")
    min_diversity_fraction: float = Field(
        0.5, ge=0, le=10.0, description="promotion needs diversity >= this fraction of the reference's")


class PreferenceSection(_Section):
    """Retraining on preference data: the pairs, the Bradley-Terry reward head, and its weight in
    the generator's reward (added to the run's reward terms)."""

    pairs: Path = Path("data/preferences/pairs.csv")
    reward_model_name: str = Field("drift-digits-reward", min_length=1)
    holdout_fraction: float = Field(0.2, gt=0, lt=1)
    epochs: int = Field(300, ge=1)
    lr: float = Field(0.05, gt=0)
    weight: float = Field(1.0, ge=0, description="weight of the preference reward in the generator's reward")
    head_dir: Path = Field(Path(".state/reward_heads"), description="where new heads are written")


class DriftConfig(_Section):
    run: RunSection = Field(default_factory=RunSection)
    model: ModelSection
    data: DataSection
    sampling: SamplingSection = Field(default_factory=SamplingSection)
    reward: list[RewardTerm] = Field(..., min_length=1)
    embedding: EmbeddingSection = Field(default_factory=EmbeddingSection)
    train: TrainSection = Field(default_factory=TrainSection)
    drift: DriftSection = Field(default_factory=DriftSection)
    eval: EvalSection = Field(default_factory=EvalSection)
    checkpoint: CheckpointSection = Field(default_factory=CheckpointSection)
    registry: RegistrySection = Field(default_factory=RegistrySection)
    preferences: PreferenceSection | None = None

    @property
    def eval_noise_level(self) -> float:
        return self.sampling.noise_level if self.eval.noise_level is None else self.eval.noise_level

    def with_overrides(self, overrides: dict[str, Any]) -> "DriftConfig":
        """A copy with dotted-key overrides applied ({'train.iterations': 5}), validated again."""
        data = self.model_dump(mode="json")
        for dotted, value in overrides.items():
            node = data
            *parents, leaf = dotted.split(".")
            for key in parents:
                node = node.setdefault(key, {})
            node[leaf] = value
        return parse_config(data, source="overrides")


def describe_validation_error(err: ValidationError, source: str) -> str:
    lines = [f"invalid configuration in {source}:"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        got = "" if e["type"] == "missing" else f" (got {e.get('input')!r})"
        lines.append(f"  {loc}: {e['msg']}{got}")
    return "\n".join(lines)


def parse_config(data: Any, source: str = "<dict>") -> DriftConfig:
    if not isinstance(data, dict):
        raise ConfigError(f"invalid configuration in {source}: expected a mapping at the top level")
    if "parameters" in data and isinstance(data["parameters"], dict) and "config" in data["parameters"]:
        data = data["parameters"]["config"]
    try:
        return DriftConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(describe_validation_error(err, source)) from None


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> DriftConfig:
    """Read and validate a YAML configuration; relative data/model paths stay relative to the CWD."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"configuration file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"configuration file {path} is not valid YAML: {err}") from None
    config = parse_config(data, source=str(path))
    return config.with_overrides(overrides) if overrides else config


class ClassifierParams(_Section):
    epochs: int = Field(30, ge=1)
    lr: float = Field(2e-3, gt=0)


class BaseModelParams(_Section):
    steps: int = Field(1000, ge=1)
    batch_size: int = Field(128, ge=1)
    lr: float = Field(2e-3, gt=0)
    ema_decay: float = Field(0.995, ge=0, lt=1)
    cond_dropout: float = Field(0.1, ge=0, lt=1)


class TestbedParams(_Section):
    """The ``testbed`` section of params.yaml: how ``dvc repro`` builds the digits testbed."""

    seed: int = Field(0, ge=0)
    test_fraction: float = Field(0.2, gt=0, lt=1)
    classifier: ClassifierParams = Field(default_factory=ClassifierParams)
    base_model: BaseModelParams = Field(default_factory=BaseModelParams)


def load_testbed_params(path: str | Path) -> TestbedParams:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"parameters file {path} does not exist")
    data = yaml.safe_load(path.read_text()) or {}
    try:
        return TestbedParams.model_validate(data.get("testbed", {}))
    except ValidationError as err:
        raise ConfigError(describe_validation_error(err, f"{path} (section testbed)")) from None

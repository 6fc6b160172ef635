"""Build a run's parts from its configuration: model, reward, embedding, prompts, trainer."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch

from drift.config import DriftConfig
from drift.models import T2IModel, load_model
from drift.prompts import read_prompts, split_prompts
from drift.registry import EMBEDDINGS
from drift.rewards import WeightedReward
from drift.trainer import Trainer

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class RunParts:
    model: T2IModel
    reward: WeightedReward
    embed: object
    train_prompts: list[str]
    eval_prompts: list[str]


def build_parts(cfg: DriftConfig, model_source: str | None = None, prompts: pd.DataFrame | None = None) -> RunParts:
    """Everything a run needs; ``model_source`` overrides cfg.model.source (e.g. a fine-tuned model),
    ``prompts`` the prompt table read from cfg.data.prompts (e.g. one already validated)."""
    table = read_prompts(cfg.data.prompts) if prompts is None else prompts
    device = cfg.run.device
    model = load_model(model_source or cfg.model.source, cfg.model.family, device, DTYPES[cfg.model.dtype],
                       cfg.model.revision)
    return RunParts(
        model=model,
        reward=WeightedReward.from_config(cfg.reward, device),
        embed=EMBEDDINGS.build(cfg.embedding.name, device=device, **cfg.embedding.args),
        train_prompts=split_prompts(table, cfg.data.train_split),
        eval_prompts=split_prompts(table, cfg.data.eval_split),
    )


def build_trainer(cfg: DriftConfig, parts: RunParts | None = None, prompts: pd.DataFrame | None = None) -> Trainer:
    parts = parts or build_parts(cfg, prompts=prompts)
    return Trainer(cfg, parts.model, parts.reward, parts.embed, parts.train_prompts, parts.eval_prompts)

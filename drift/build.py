"""Build a run's parts from its configuration: model, reward, embedding, prompts, trainer."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch

from drift.config import DriftConfig
from drift.data.prompts import read_prompts, split_prompts
from drift.errors import DriftError
from drift.models import T2IModel, load_model
from drift.models.trained import BaseLocator
from drift.registry import EMBEDDINGS
from drift.scoring.protocols import Embedding
from drift.scoring.rewards import WeightedReward
from drift.training.trainer import Trainer

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class RunParts:
    model: T2IModel
    reward: WeightedReward
    embed: Embedding
    train_prompts: list[str]
    eval_prompts: list[str]
    shaping_embed: Embedding | None = None  # the potential's when drift.shaping.embedding names one (else ``embed``)


def check_device(device: str) -> str:
    """``device`` if this machine has it, else a message that says what to set instead."""
    kind = torch.device(device).type
    available = {"cpu": True, "cuda": torch.cuda.is_available(),
                 "mps": torch.backends.mps.is_available(), "xpu": hasattr(torch, "xpu") and torch.xpu.is_available()}
    if not available[kind]:
        raise DriftError(f"run.device is '{device}' but this machine has no {kind} device: set run.device: cpu "
                         "(or run on a machine that has one)")
    if kind in ("cuda", "xpu") and torch.device(device).index is not None:
        count = torch.cuda.device_count() if kind == "cuda" else torch.xpu.device_count()
        if torch.device(device).index >= count:
            raise DriftError(f"run.device is '{device}' but this machine has {count} {kind} device(s)")
    return device


def build_parts(cfg: DriftConfig, model_source: str | None = None, prompts: pd.DataFrame | None = None,
                locate: BaseLocator | None = None) -> RunParts:
    """Everything a run needs; ``model_source`` overrides cfg.model.source (e.g. a fine-tuned model,
    whose base is cfg.model.source or found by ``locate``: drift.models.trained), ``prompts`` the
    prompt table read from cfg.data.prompts (e.g. one already validated)."""
    table = read_prompts(cfg.data.prompts, cfg.data.max_file_mb) if prompts is None else prompts
    device = check_device(cfg.run.device)
    embed = EMBEDDINGS.build(cfg.embedding.name, device=device, **cfg.embedding.args)
    shaping = cfg.drift.shaping.embedding
    model = load_model(model_source or cfg.model.source, cfg.model.family, device, DTYPES[cfg.model.dtype],
                       cfg.model.revision, base=cfg.model.source, locate=locate, **cfg.model.options.model_dump())
    return RunParts(
        model=model,
        reward=WeightedReward.from_config(cfg.reward, device),
        embed=embed,
        shaping_embed=None if shaping is None else EMBEDDINGS.build(shaping.name, device=device, **shaping.args),
        train_prompts=split_prompts(table, cfg.data.train_split),
        eval_prompts=split_prompts(table, cfg.data.eval_split),
    )


def build_trainer(cfg: DriftConfig, parts: RunParts | None = None, prompts: pd.DataFrame | None = None) -> Trainer:
    parts = parts or build_parts(cfg, prompts=prompts)
    return Trainer(cfg, parts.model, parts.reward, parts.embed, parts.train_prompts, parts.eval_prompts,
                   parts.shaping_embed)

"""Open a text-to-image pipeline by hub id or local directory and wrap it in its adapter."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from diffusers import DiffusionPipeline, FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, UNet2DConditionModel

from drift.errors import ModelNotFoundError, UnsupportedModelError
from drift.models.base import T2IModel
from drift.models.sd3 import SD3Model
from drift.models.unet import UNetModel


def _missing_model_message(source: str, reason: Exception) -> str:
    where = "a local directory" if Path(source).is_absolute() or source.startswith(".") else "a hub id"
    offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
    return (
        f"model '{source}' could not be opened (read as {where}). Looked for a local directory "
        f"of that name with a model_index.json, then for a copy in the Hugging Face cache "
        f"({os.environ.get('HF_HOME', '~/.cache/huggingface')})"
        + (", hub downloads are off (HF_HUB_OFFLINE=1)" if offline else "")
        + ". To provide it: download it where there is network (`hf download "
        f"{source}`), then set model.source to that directory or point HF_HOME at that cache. "
        f"Cause: {type(reason).__name__}: {str(reason).splitlines()[0] if str(reason) else ''}"
    )


def load_pipeline(source: str, revision: str | None = None, dtype: torch.dtype = torch.float32) -> DiffusionPipeline:
    """``DiffusionPipeline.from_pretrained`` with components that model_index.json lists as null
    passed as None (a pixel-space model has no VAE), and one clear error when the model is missing."""
    try:
        index = DiffusionPipeline.load_config(source, revision=revision)
        absent = {k: None for k, v in index.items() if isinstance(v, list) and v and v[0] is None}
        return DiffusionPipeline.from_pretrained(source, revision=revision, dtype=dtype, **absent)
    except (OSError, ValueError) as err:
        raise ModelNotFoundError(_missing_model_message(source, err)) from err


def wrap_pipeline(pipe, family: str = "auto", device="cpu", dtype: torch.dtype = torch.float32) -> T2IModel:
    """The adapter for a loaded pipeline; ``family`` 'auto' follows the scheduler class."""
    is_flow = isinstance(pipe.scheduler, FlowMatchEulerDiscreteScheduler)
    if family == "auto":
        family = "flow" if is_flow else "eps"
    transformer = getattr(pipe, "transformer", None)
    unet = getattr(pipe, "unet", None)
    if isinstance(transformer, SD3Transformer2DModel):
        if family != "flow":
            raise UnsupportedModelError("SD3Transformer2DModel pipelines are rectified-flow models: use family 'flow'")
        return SD3Model(pipe, transformer, family, device, dtype)
    if isinstance(unet, UNet2DConditionModel):
        return UNetModel(pipe, unet, family, device, dtype)
    denoiser = type(transformer if transformer is not None else unet).__name__
    raise UnsupportedModelError(
        f"pipeline {type(pipe).__name__} with denoiser {denoiser} is not supported: the adapters cover "
        "UNet2DConditionModel (SD 1.5 class, or flow-matching UNets) and SD3Transformer2DModel (SD 3 class)"
    )


def load_model(source: str, family: str = "auto", device="cpu", dtype: torch.dtype = torch.float32,
               revision: str | None = None) -> T2IModel:
    """Load a text-to-image model from a hub id or a local directory, ready for rollouts."""
    return wrap_pipeline(load_pipeline(source, revision, dtype), family, device, dtype)

"""Open a text-to-image pipeline by hub id or local directory and wrap it in its adapter."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from diffusers import DiffusionPipeline, FlowMatchEulerDiscreteScheduler

from drift.errors import ModelNotFoundError, UnsupportedModelError
from drift.models.base import T2IModel
from drift.models.flux import FluxModel
from drift.models.flux2 import Flux2Model
from drift.models.qwen_image import QwenImageModel
from drift.models.sd3 import SD3Model
from drift.models.trained import BaseLocator, load_trained_pipeline, read_manifest
from drift.models.unet import UNetModel
from drift.models.z_image import ZImageModel

# The model families; a new one is its adapter file and one entry here.
ADAPTERS: tuple[type[T2IModel], ...] = (UNetModel, SD3Model, FluxModel, QwenImageModel, Flux2Model, ZImageModel)

FAMILY_KINDS = {"flow": "rectified-flow", "eps": "noise-prediction"}

# The hub models that configurations here name: the licence each is published under, and whether
# it downloads only for an account that accepted that licence on the model page (gated).
LICENCES: dict[str, tuple[str, bool]] = {
    "stable-diffusion-v1-5/stable-diffusion-v1-5": ("the CreativeML OpenRAIL-M licence", False),
    "stabilityai/stable-diffusion-3.5-medium": ("the Stability AI Community License", True),
    "stabilityai/stable-diffusion-3.5-large": ("the Stability AI Community License", True),
    "black-forest-labs/FLUX.1-dev": ("the FLUX.1 [dev] Non-Commercial License", True),
    "black-forest-labs/FLUX.2-dev": ("the FLUX [dev] Non-Commercial License", True),
    "black-forest-labs/FLUX.2-klein-base-4B": ("Apache 2.0", False),
    "black-forest-labs/FLUX.2-klein-4B": ("Apache 2.0", False),
    "black-forest-labs/FLUX.2-klein-base-9B": ("the FLUX Non-Commercial License", True),
    "black-forest-labs/FLUX.2-klein-9B": ("the FLUX Non-Commercial License", True),
    "Qwen/Qwen-Image": ("Apache 2.0", False),
    "Tongyi-MAI/Z-Image-Turbo": ("Apache 2.0", False),
    "Tongyi-MAI/Z-Image": ("Apache 2.0", False),
}


def _licence_note(source: str) -> str:
    if source not in LICENCES:
        return ""
    licence, gated = LICENCES[source]
    note = f" {source} is published under {licence}: read it on https://huggingface.co/{source} before use."
    if gated:
        note += (" It is gated: accept the licence there with your Hugging Face account, and download with a "
                 "token of that account (`hf auth login`, or HF_TOKEN in the environment).")
    return note


def _missing_model_message(source: str, reason: Exception) -> str:
    where = "a local directory" if Path(source).is_absolute() or source.startswith(".") else "a hub id"
    offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
    return (
        f"model '{source}' could not be opened (read as {where}). Looked for a local directory "
        f"of that name with a model_index.json, then for a copy in the Hugging Face cache "
        f"({os.environ.get('HF_HOME', '~/.cache/huggingface')})"
        + (", hub downloads are off (HF_HUB_OFFLINE=1)" if offline else "")
        + ". To provide it: download it where there is network (`hf download "
        f"{source}`), then set model.source to that directory or point HF_HOME at that cache.{_licence_note(source)} "
        f"Cause: {type(reason).__name__}: {str(reason).splitlines()[0] if str(reason) else ''}"
    )


def _cached_revisions(repo_id: str) -> list[str]:
    """The commits of ``repo_id`` in the local Hugging Face cache (for messages)."""
    try:
        from huggingface_hub import scan_cache_dir

        return sorted(r.commit_hash for repo in scan_cache_dir().repos if repo.repo_id == repo_id
                      for r in repo.revisions)
    except Exception:  # no cache at all: nothing to list
        return []


def load_pipeline(source: str, revision: str | None = None, dtype: torch.dtype = torch.float32,
                  **components) -> DiffusionPipeline:
    """``DiffusionPipeline.from_pretrained`` with components that model_index.json lists as null
    passed as None (a pixel-space model has no VAE), ``components`` in place of the saved ones, and
    one clear error when the model (at that revision) is missing."""
    try:
        index = DiffusionPipeline.load_config(source, revision=revision)
        absent = {k: None for k, v in index.items() if isinstance(v, list) and v and v[0] is None}
        return DiffusionPipeline.from_pretrained(source, revision=revision, dtype=dtype, **{**absent, **components})
    except (OSError, ValueError) as err:
        message = _missing_model_message(source, err)
        if revision is not None and not Path(source).is_dir():
            cached = _cached_revisions(source)
            message = (f"revision {revision} of {source} is needed (the one the model was trained on); the cache holds "
                       f"{', '.join(cached) if cached else 'no revision of it'}. " + message)
        raise ModelNotFoundError(message) from err


def wrap_pipeline(pipe, family: str = "auto", device="cpu", dtype: torch.dtype = torch.float32,
                  **options) -> T2IModel:
    """The adapter for a loaded pipeline; ``family`` 'auto' follows the scheduler class. The
    keyword ``options`` (``drift.config.ModelOptions``' fields) are documented on ``T2IModel``."""
    if family == "auto":
        family = "flow" if isinstance(pipe.scheduler, FlowMatchEulerDiscreteScheduler) else "eps"
    for adapter in ADAPTERS:
        denoiser = getattr(pipe, adapter.denoiser_attr, None)
        if isinstance(denoiser, adapter.denoiser_class):
            if family not in adapter.families:
                kinds = " or ".join(FAMILY_KINDS[f] for f in adapter.families)
                raise UnsupportedModelError(f"{adapter.denoiser_class.__name__} pipelines are {kinds} models: use "
                                            f"family {' or '.join(repr(f) for f in adapter.families)}")
            return adapter(pipe, denoiser, family, device, dtype, **options)
    found = next((getattr(pipe, a) for a in ("transformer", "unet") if getattr(pipe, a, None) is not None), None)
    covered = ", ".join(f"{a.denoiser_class.__name__} ({a.description})" for a in ADAPTERS)
    raise UnsupportedModelError(f"pipeline {type(pipe).__name__} with denoiser {type(found).__name__} is not "
                                f"supported: the adapters cover {covered}")


def load_model(source: str, family: str = "auto", device="cpu", dtype: torch.dtype = torch.float32,
               revision: str | None = None, *, base: str | None = None, locate: BaseLocator | None = None,
               **options) -> T2IModel:
    """Load a text-to-image model from a hub id or a local directory, ready for rollouts (the
    keyword ``options`` as in ``wrap_pipeline``: ``drift.config.ModelOptions``' fields). A
    directory a run wrote (drift.models.trained: trained parts and a pinned base) is rebuilt from
    its base, found at ``base`` (the run's configured model.source), at its recorded path, or by
    ``locate``; its family is the one it was trained with unless ``family`` says otherwise."""
    manifest = read_manifest(source) if Path(source).is_dir() else None
    if manifest is None:
        return wrap_pipeline(load_pipeline(source, revision, dtype), family, device, dtype, **options)
    pipe = load_trained_pipeline(source, manifest, dtype, base, locate)
    return wrap_pipeline(pipe, manifest.family if family == "auto" else family, device, dtype, **options)

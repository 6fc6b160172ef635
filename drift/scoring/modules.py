"""Small scoring networks (the testbed classifier, preference heads) saved with
``PyTorchModelHubMixin.save_pretrained``: config.json holds the constructor's arguments,
model.safetensors the weights. Loaded here without executing or printing anything."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_model

from drift.errors import ModelNotFoundError


def load_module(cls: type[torch.nn.Module], path: str | Path, device="cpu", *, what: str,
                remedy: str) -> torch.nn.Module:
    """The ``cls`` saved in ``path``; a missing one stops with ModelNotFoundError naming ``what`` was
    looked for where, and ``remedy`` (how to build it or which argument to set)."""
    path = Path(path)
    if not (path / "config.json").is_file():
        raise ModelNotFoundError(f"{what} not found at {path} (looked for {path / 'config.json'}); {remedy}")
    module = cls(**json.loads((path / "config.json").read_text()))
    load_model(module, path / "model.safetensors", device=str(device))
    return module.to(device).eval()

"""Small scoring networks (the testbed classifier, preference heads) saved with
``PyTorchModelHubMixin.save_pretrained``: config.json holds the constructor's arguments,
model.safetensors the weights. Loaded here without executing or printing anything."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_model


def load_module(cls: type[torch.nn.Module], path: str | Path, device="cpu") -> torch.nn.Module:
    path = Path(path)
    module = cls(**json.loads((path / "config.json").read_text()))
    load_model(module, path / "model.safetensors", device=str(device))
    return module.to(device).eval()

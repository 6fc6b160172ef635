"""The generator the labelling page draws from: a version of a registered generator (MLflow Model
Registry) or a local pipeline directory, with the sampler settings it is evaluated with."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

import torch

from drift.config import SamplerSettings
from drift.errors import DriftError
from drift.models.base import T2IModel
from drift.sampling.rollout import sample_groups


@dataclass
class Generator:
    model: T2IModel
    name: str  # the registered model's name, or the local directory
    version: str  # the registry version; "" for a local directory
    sampler: SamplerSettings
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def images(self, prompt: str, seeds: tuple[int, int]) -> torch.Tensor:
        """Two images (2, C, H, W) in [0, 1] for ``prompt``, one per seed: each is what
        ``rollout`` draws from that seed alone, so a recorded seed reproduces its image."""
        with self._lock:  # one rollout at a time: raters share the model and the CPU
            return sample_groups(self.model, [prompt], 2, torch.tensor(seeds), self.sampler).images

    def describe(self) -> str:
        """'name version N' for a registered model, the directory for a local one."""
        return f"{self.name} version {self.version}" if self.version else self.name


def from_directory(path: str | Path, sampler: SamplerSettings, family: str = "auto", device: str = "cpu",
                   base: str | None = None) -> Generator:
    """A local model directory (e.g. the model `drift train` writes, on the base ``base``: the run
    configuration's model.source), sampled as configured."""
    from drift.models import load_model

    model = load_model(str(path), family, device, base=base, **sampler.model_options.model_dump())
    return Generator(model, str(path), "", sampler)


def from_registry(name: str, tracking_uri: str, dst: str | Path, version: str | None = None,
                  alias: str = "champion", family: str = "auto", device: str = "cpu",
                  base: str | None = None) -> Generator:
    """Version ``version`` (or the one with ``alias``) of the registered generator ``name``,
    downloaded into ``dst`` (its model and the sampler settings registered with it), on the base
    ``base`` (the run configuration's model.source) where it is a local directory."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from drift.models import load_model
    from mlops.model_registry import download_generator

    client = MlflowClient(tracking_uri, tracking_uri)
    try:
        version = str(version or client.get_model_version_by_alias(name, alias).version)
        registered = download_generator(tracking_uri, name, version, dst)
    except MlflowException as err:
        which = f"version {version}" if version else f"version with alias '{alias}'"
        raise DriftError(f"the registry at {tracking_uri} has no {which} of model '{name}' "
                         f"({str(err).splitlines()[0]}): train and register one first (make demo), or pass "
                         "--version N, --alias NAME or --model DIR") from None
    sampler = registered.sampler
    model = load_model(str(registered.model_dir), family, device, base=base, **sampler.model_options.model_dump())
    return Generator(model, name, version, sampler)

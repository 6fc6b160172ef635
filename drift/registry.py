"""Name -> factory registries for rewards and embeddings, filled by the modules that define them."""

from __future__ import annotations

import importlib
from collections.abc import Callable

from drift.errors import ConfigError


class Registry:
    """Factories by name. ``modules`` are imported on first lookup so that their
    ``@registry.register`` decorators have run whichever module the caller imported."""

    def __init__(self, kind: str, modules: list[str]):
        self.kind = kind
        self._modules = modules
        self._factories: dict[str, Callable] = {}
        self._loaded = False

    def register(self, name: str):
        def decorator(factory):
            self._factories[name] = factory
            return factory

        return decorator

    def names(self) -> list[str]:
        self._load()
        return sorted(self._factories)

    def build(self, name: str, **kwargs):
        self._load()
        if name not in self._factories:
            raise ConfigError(f"unknown {self.kind} '{name}': known {self.kind}s are {', '.join(self.names())}")
        try:
            return self._factories[name](**kwargs)
        except TypeError as err:
            raise ConfigError(f"bad arguments for {self.kind} '{name}': {err}") from None

    def _load(self):
        if not self._loaded:
            self._loaded = True
            for module in self._modules:
                importlib.import_module(module)


REWARDS = Registry("reward", ["drift.scoring.compression", "drift.scoring.clip", "drift.testbed.classifier",
                                "drift.scoring.preference_head", "drift.scoring.remote"])
EMBEDDINGS = Registry("embedding", ["drift.scoring.embeddings", "drift.testbed.classifier",
                                      "drift.testbed.encoder"])
# Real images per class for the coverage metrics (drift.scoring.coverage.ReferenceSet).
REFERENCES = Registry("reference set", ["drift.testbed.data"])
# Prompt corpora for prompt noise's principal directions: groups of captions that share a subject.
CORPORA = Registry("prompt corpus", ["drift.data.prompts", "drift.testbed.data"])

"""Model adapters over diffusers / transformers components."""

from drift.models.base import Conditioning, T2IModel
from drift.models.loading import load_model, load_pipeline, wrap_pipeline

__all__ = ["Conditioning", "T2IModel", "load_model", "load_pipeline", "wrap_pipeline"]

"""Quieter third-party output: progress bars and INFO-level chatter of the libraries the pipeline
loads, silenced at their source loggers. Warnings and errors still show, except the few named here
that say nothing actionable about this project's use of the library."""

from __future__ import annotations

import logging


class DropMessages(logging.Filter):
    """Drop records whose message starts with one of ``prefixes``."""

    def __init__(self, *prefixes: str):
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefixes)


def quiet_great_expectations() -> None:
    """Great Expectations logs ~200 INFO lines on import ("Skipping registering function ..."), and
    one of its modules sets its own logger to INFO when imported: call this again after importing it."""
    for name in ("great_expectations", "great_expectations.data_context.types.base"):
        logging.getLogger(name).setLevel(logging.WARNING)


def quiet_libraries() -> None:
    import diffusers
    import transformers

    quiet_great_expectations()
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()
    # A pixel-space pipeline has no VAE to save; diffusers warns about the None component.
    logging.getLogger("diffusers.pipelines.pipeline_utils").addFilter(DropMessages("self.vae=None"))
    # Loading a denoiser's LoRA adapters, diffusers looks for text-encoder adapters too, and says so.
    logging.getLogger("diffusers.loaders.lora_base").addFilter(DropMessages("No LoRA keys associated to"))

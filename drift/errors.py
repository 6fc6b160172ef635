"""Errors that describe a user mistake: the CLI prints their message, never a traceback."""


class DriftError(Exception):
    """Base class: the message says what is wrong and what to do."""


class ConfigError(DriftError):
    """A configuration file that does not validate."""


class ModelNotFoundError(DriftError):
    """A model or reward checkpoint that is neither a local directory nor in the local hub cache."""


class UnsupportedModelError(DriftError):
    """A pipeline whose denoiser or scheduler the adapters do not support."""

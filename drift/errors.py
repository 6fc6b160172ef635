"""Errors that describe a user mistake: the CLI prints their message, never a traceback."""


class DriftError(Exception):
    """Base class: the message says what is wrong and what to do."""


class ConfigError(DriftError):
    """A configuration file that does not validate."""


class ModelNotFoundError(DriftError):
    """A model or reward checkpoint that is neither a local directory nor in the local hub cache."""


class UnsupportedModelError(DriftError):
    """A pipeline whose denoiser or scheduler the adapters do not support."""


class CheckpointError(DriftError):
    """A checkpoint that is incomplete, corrupted, or does not belong to this run."""


class DiskFullError(DriftError):
    """The disk filled up during a write: the message names the path, the space needed and what is left intact."""


class NonFiniteError(DriftError):
    """A NaN or infinite reward, advantage, loss or gradient: training stops before the weights change."""


class ConfigMismatchError(DriftError):
    """Resuming a run with a configuration other than the one its checkpoint was written with."""


class RewardServiceError(DriftError):
    """A reward service that stayed unreachable, or answered outside its protocol: the message names
    its URL and the last error; no score is made up in its place."""

"""Options several commands share, declared once: the run configuration (-c/--config) and its
overrides (--set), counts and image paths. They are checked at parsing, so a mistake exits 2 before
any work starts."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from drift.config import DriftConfig


@dataclass(frozen=True)
class Override:
    """One ``--set KEY=VALUE``: a dotted field name and its value, read as YAML (5, 0.1, true, [1, 2])."""

    key: str
    value: Any


def _override(text: str) -> Override:
    import yaml

    key, sep, value = text.partition("=")
    if not sep or not key:
        raise typer.BadParameter(f"expected KEY=VALUE (e.g. train.iterations=5), got {text!r}")
    return Override(key, yaml.safe_load(value))


def count(text: str) -> int:
    """A whole number of at least 1 (samples, pairs, iterations, workers)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise typer.BadParameter(f"expected a whole number of at least 1, got {text!r}")
    return value


def image_path(text: str) -> Path:
    """An output image path whose extension names a format Pillow writes (.png, .jpg, ...)."""
    from PIL import Image

    if Path(text).suffix.lower() not in Image.registered_extensions():
        raise typer.BadParameter(f"{text!r} does not end in an image extension such as .png")
    return Path(text)


def config_option(help: str) -> Any:
    """-c/--config with the help of its command (a run configuration, a benchmark configuration, ...)."""
    return typer.Option("-c", "--config", help=help, metavar="CONFIG", show_default=False)


def overrides_option(help: str, hidden: bool = False) -> Any:
    """--set KEY=VALUE, repeatable; ``hidden`` where the configuration is optional and rarely overridden."""
    return typer.Option("--set", parser=_override, metavar="KEY=VALUE", help=help, hidden=hidden, show_default=False)


Config = Annotated[Path, config_option("run configuration (YAML)")]
Overrides = Annotated[list[Override] | None,
                      overrides_option("override a config field, e.g. --set train.iterations=5 (repeatable)")]


def overrides_dict(overrides: list[Override] | None) -> dict[str, Any]:
    return {o.key: o.value for o in overrides or []}


def run_config(config: Path, overrides: list[Override] | None) -> DriftConfig:
    """The validated run configuration with its overrides applied."""
    from drift.config import load_config

    return load_config(config, overrides_dict(overrides))


def with_hook(command: Callable, name: str, hook: Callable | None, supplied: int, default: Callable) -> Callable:
    """``command`` with its keyword parameter ``name`` filled in, for a console script to extend a
    library command without the library importing what the hook needs: ``hook``'s first ``supplied``
    parameters are what the command passes when it calls it, its further keyword parameters
    (typer-annotated, as a command's) become options of the command, and their values are bound to
    it. Without a hook, ``default`` is passed."""
    own = [p for p in inspect.signature(command, eval_str=True).parameters.values() if p.name != name]
    added = list(inspect.signature(hook, eval_str=True).parameters.values())[supplied:] if hook else []

    @functools.wraps(command)
    def run(**values: Any) -> None:
        options = {p.name: values.pop(p.name) for p in added}
        command(**values, **{name: functools.partial(hook, **options) if hook else default})

    run.__signature__ = inspect.Signature(own + added)
    return run

"""The ``drift`` command line over the library, one module per command group: run (train, sample),
data (validation, preference data), bench (the benchmarks), testbed (its build stages).

A user mistake prints one line and exits 2, never a traceback: a ``DriftError`` as ``drift: error: ...``,
a usage error (a bad flag or value, checked at parsing) with the command's usage line; Ctrl-C exits 130.
Heavy libraries are imported inside the commands, so parsing and ``--help`` stay fast. The installed
console script (mlops.cli) adds the commands and options that record to MLflow through ``build_app``."""

from __future__ import annotations

import sys

import typer
from typer.core import TyperGroup

from drift.cli import bench, data, run, testbed
from drift.cli.bench import Tracking
from drift.cli.data import ChampionHead
from drift.errors import DriftError


class _Drift(TyperGroup):
    """The root command: every subcommand runs inside its ``invoke``, so its errors end here."""

    def invoke(self, ctx: typer.Context):
        try:
            return super().invoke(ctx)
        except DriftError as err:
            print(f"drift: error: {err}", file=sys.stderr)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            print("drift: interrupted", file=sys.stderr)
            raise typer.Exit(130) from None


def _help_without_command(ctx: typer.Context) -> None:
    if ctx.invoked_subcommand is None:
        print(ctx.get_help())


def build_app(commands: typer.Typer | None = None, tracking: Tracking | None = None,
              champion_head: ChampionHead | None = None) -> typer.Typer:
    """The library's commands, then those of ``commands``; the benchmarks that record their runs take
    ``tracking``'s options (drift.cli.bench.Tracking), `preferences report` finds the current reward
    head with ``champion_head`` (drift.cli.data.ChampionHead)."""
    app = typer.Typer(name="drift", cls=_Drift, add_completion=False, rich_markup_mode=None,
                      pretty_exceptions_enable=False, invoke_without_command=True,
                      context_settings={"help_option_names": ["-h", "--help"]},
                      help="DRIFT: diversity-preserving RL fine-tuning of text-to-image diffusion and flow models.")
    app.callback()(_help_without_command)
    app.add_typer(run.app)
    app.add_typer(data.build_app(champion_head))
    app.add_typer(bench.build_app(tracking), name="bench")
    app.add_typer(testbed.app, name="testbed")
    if commands is not None:
        app.add_typer(commands)
    return app


app = build_app()
"""The library's commands alone (``python -m drift.cli``); the installed `drift` script is mlops.cli's."""


def main(argv: list[str] | None = None, drift_app: typer.Typer = app) -> int:
    """Run one command line; returns its exit status (0, 1 for an invalid file, 2 for a user mistake)."""
    try:
        typer.main.get_command(drift_app).main(argv, prog_name="drift")
    except SystemExit as done:  # how click's standalone mode ends every command line
        return done.code or 0
    return 0

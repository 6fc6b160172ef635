"""The installed ``drift`` console script: the library's commands (drift.cli) plus the ones that
use MLflow, which the library itself never imports: `drift label`, `drift registry` (the operator's
commands on a registered model: its promotion lock and its undecided versions), and MLflow tracking
for the Pareto and efficiency benchmarks."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Annotated

import typer

from drift import cli
from drift.cli.options import Config, Overrides, run_config
from drift.errors import DriftError


def mlflow_tracking(
    out: Path,
    benchmark: str,
    tracking_uri: Annotated[str | None, typer.Option(
        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or OUT/mlflow.db)")] = None,
    no_mlflow: Annotated[bool, typer.Option("--no-mlflow", help="do not log to MLflow")] = False,
):
    """The MLflow tracker of a benchmark (None with --no-mlflow): drift.cli.bench.Tracking."""
    if no_mlflow:
        return None
    from mlops.tracking import MlflowTracker

    experiment = f"drift-{benchmark}-benchmark"
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(out / 'mlflow.db').resolve()}"
    out.mkdir(parents=True, exist_ok=True)
    print(f"MLflow: {uri} (experiment {experiment})")
    return MlflowTracker(uri, experiment, out / "mlartifacts")


def _tracking_uri(tracking_uri: str | None) -> str:
    """--tracking-uri, else $MLFLOW_TRACKING_URI, else the local stack's (registered if missing)."""
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        from mlops.stack import default_state_dir, ensure_stack

        uri = ensure_stack(default_state_dir())
    return uri


def registry_reward_head(
    cfg,
    tracking_uri: Annotated[str | None, typer.Option(
        help="MLflow registry URI of the reward head (default: $MLFLOW_TRACKING_URI, else the local stack's)")] = None,
) -> tuple[Path | None, str]:
    """The registry's champion of preferences.reward_model_name for `drift preferences report`
    (drift.cli.data.ChampionHead), downloaded into a folder removed when the process ends."""
    import atexit
    import shutil
    import tempfile

    from drift.config import PreferenceSection
    from mlops.reward_model import download_reward_head

    uri, name = _tracking_uri(tracking_uri), (cfg.preferences or PreferenceSection()).reward_model_name
    folder = tempfile.mkdtemp(prefix="drift-report-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    found = download_reward_head(uri, name, folder)
    if found is None:
        return None, f"not measured: the registry at {uri} has no champion of {name} (pass --head DIR)"
    return found[0], f"{name} version {found[1]} (the registry's champion)"


def _stop(signum, frame):
    raise KeyboardInterrupt


commands = typer.Typer()


@commands.command(short_help="serve a local page where raters choose between two generated images")
def label(
    config: Config,
    overrides: Overrides = None,
    version: Annotated[str | None, typer.Option(help="registered version to draw from")] = None,
    alias: Annotated[str | None, typer.Option(help="registered alias to draw from (default: champion)")] = None,
    model: Annotated[str | None, typer.Option(
        help="a local pipeline directory instead of the registry (e.g. .state/runs/digits/model from drift train)")
    ] = None,
    model_name: Annotated[str | None, typer.Option(
        help="registered model name (default: the config's registry.model_name)")] = None,
    tracking_uri: Annotated[str | None, typer.Option(
        help="MLflow tracking and registry URI (default: $MLFLOW_TRACKING_URI, else the local stack's)")] = None,
    out: Annotated[Path | None, typer.Option(
        help="preference folder (default: the config's preferences.pairs folder, else data/preferences)")] = None,
    host: Annotated[str, typer.Option(
        help="address to listen on (default: this machine only; any other needs raters' credentials)")] = "127.0.0.1",
    token: Annotated[str | None, typer.Option(
        help="a shared token raters sign in with, typing their name (default: $DRIFT_LABEL_TOKEN, which keeps it "
             "out of the process list)")] = None,
    rater: Annotated[list[str] | None, typer.Option(
        metavar="NAME[=TOKEN]",
        help="a rater and their own invite token (repeatable; without =TOKEN one is made and printed at start-up; "
             "default: $DRIFT_LABEL_RATER_TOKENS, NAME=TOKEN entries separated by commas)")] = None,
    port: Annotated[int, typer.Option(min=0, max=65535, help="port (0: any free one)")] = 8750,
    seed: Annotated[int | None, typer.Option(
        help="seed of the prompt and image-seed draws (default: random)")] = None,
    no_dvc: Annotated[bool, typer.Option("--no-dvc", help="do not run dvc add on exit")] = False,
) -> None:
    """Serve a page on which raters compare two images the generator draws for a prompt of the config's
    prompt set (training split) and record first, second or tie in the preference data. By default the
    generator is the registered model's champion. Ctrl-C (or SIGTERM) stops it, then `dvc add` versions
    the preference data."""
    chosen = [flag for flag, value in (("--version", version), ("--alias", alias), ("--model", model))
              if value is not None]
    if len(chosen) > 1:
        raise typer.BadParameter(f"not allowed with {chosen[0]}", param_hint=f"'{chosen[1]}'")
    import tempfile

    from drift.build import check_device
    from drift.config import PreferenceSection
    from drift.data.preferences import PAIRS_FILE
    from drift.data.prompts import read_prompts, split_prompts
    from mlops.labelling.access import access_for
    from mlops.labelling.generator import from_directory, from_registry
    from mlops.labelling.server import LabelServer
    from mlops.labelling.session import LabelSession, dvc_add

    access = access_for(host, token, rater or [])
    cfg = run_config(config, overrides)
    out = out or (cfg.preferences or PreferenceSection()).pairs.parent
    prompts = split_prompts(read_prompts(cfg.data.prompts), cfg.data.train_split)
    device = check_device(cfg.run.device)
    with tempfile.TemporaryDirectory(prefix="drift-label-") as tmp:
        if model:
            generator = from_directory(model, cfg.sampler(evaluation=True), cfg.model.family, device,
                                       cfg.model.source)
        else:
            generator = from_registry(model_name or cfg.registry.model_name, _tracking_uri(tracking_uri), tmp, version,
                                      alias or "champion", cfg.model.family, device, cfg.model.source)
        try:
            server = LabelServer(LabelSession(generator, prompts, out, seed), host, port, access)
        except OSError as err:
            raise DriftError(f"cannot serve on {host}:{port} ({err.strerror}): pass another --port") from None
        print(f"labelling page: {server.url}\n  model {generator.describe()}, {len(prompts)} prompts "
              f"({cfg.data.prompts}, split {cfg.data.train_split}); choices go to {out / PAIRS_FILE}\n"
              f"  {access.describe(server.url)}\n"
              f"  Ctrl-C stops it{'' if no_dvc else ' and runs dvc add ' + str(out)}", flush=True)
        for sig in (signal.SIGINT, signal.SIGTERM):  # SIGINT too: a background job may have it ignored
            signal.signal(sig, _stop)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            print("stopping the labelling page")
        finally:
            server.server_close()
    if not no_dvc:
        print(dvc_add(out)[1])


registry = typer.Typer(help="A registered model's promotion lock and undecided versions (for the operator).")
TrackingUri = Annotated[str | None, typer.Option(
    help="MLflow tracking and registry URI (default: $MLFLOW_TRACKING_URI, else the local stack's)")]
ModelName = Annotated[str, typer.Argument(metavar="NAME", help="registered model name, e.g. drift-digits")]


def _client(tracking_uri: str | None):
    from mlflow import MlflowClient

    uri = _tracking_uri(tracking_uri)
    return MlflowClient(uri, uri)


@registry.command(short_help="break a registered model's promotion lock")
def unlock(
    name: ModelName,
    force: Annotated[bool, typer.Option("--force", help="break it even while its holder looks alive")] = False,
    stale_after: Annotated[float, typer.Option(
        min=1.0, help="seconds without a heartbeat after which a lock counts as stale (registry.lock_stale_after)")
    ] = 120.0,
    tracking_uri: TrackingUri = None,
) -> None:
    """Break NAME's promotion lock when its holder is gone: its process no longer exists on this
    machine, or it has had no heartbeat for --stale-after seconds (or with --force, anyway). Runs
    waiting for the lock then go on."""
    from mlops.promotion_lock import unlock as unlock_lock

    print(unlock_lock(_client(tracking_uri), name, force, stale_after))


@registry.command(short_help="list the versions of a registered model that have no decision")
def undecided(name: ModelName, tracking_uri: TrackingUri = None) -> None:
    """The versions of NAME that were registered but never decided (their run ended first), one a
    line: when, by which run, under which evaluation protocol."""
    from mlops.decisions import describe
    from mlops.decisions import undecided as pending

    client = _client(tracking_uri)
    found = pending(client, name)
    print("\n".join(describe(client, v) for v in found) if found else f"{name}: every version is decided")


@registry.command(short_help="decide the undecided versions measured under a configuration's protocol")
def decide(config: Config, overrides: Overrides = None, tracking_uri: TrackingUri = None) -> None:
    """Decide the undecided versions of the configuration's registered model that were measured
    under its evaluation protocol, with its promotion gate, as its next pipeline run would (the
    champion is evaluated when its scores under that protocol were never recorded); mark failed those
    registered without their evaluation."""
    cfg = run_config(config, overrides)
    from mlops.decisions import settle_with_config

    done = settle_with_config(_tracking_uri(tracking_uri), cfg)
    print(f"decided {len(done)} version(s) of {cfg.registry.model_name}")


@registry.command(short_help="give up on an undecided version")
def fail(
    name: ModelName,
    version: Annotated[int, typer.Argument(metavar="VERSION", min=1, help="the version number")],
    reason: Annotated[str, typer.Option(help="why, recorded on the version")] = "given up by the operator",
    tracking_uri: TrackingUri = None,
) -> None:
    """Mark an undecided VERSION of NAME failed, with the reason: it is then neither compared nor
    counted as trained on by the retraining pipeline."""
    from mlflow.exceptions import MlflowException

    from mlops.decisions import PENDING, decision_of, mark_failed

    client = _client(tracking_uri)
    try:
        current = client.get_model_version(name, str(version))
    except MlflowException:
        raise DriftError(f"{name} has no version {version}") from None
    if decision_of(current) != PENDING:
        raise DriftError(f"{name} version {version} is decided already ({decision_of(current)})")
    mark_failed(client, name, str(version), reason)
    print(f"{name} version {version} marked failed: {reason}")


commands.add_typer(registry, name="registry")
app = cli.build_app(commands, tracking=mlflow_tracking, champion_head=registry_reward_head)


def main(argv: list[str] | None = None) -> int:
    return cli.main(argv, app)


if __name__ == "__main__":
    sys.exit(main())

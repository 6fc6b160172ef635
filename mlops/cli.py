"""The installed ``drift`` console script: the library's commands (drift.cli) plus the ones that
record to MLflow, which the library itself never imports."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from drift import cli
from drift.errors import DriftError


def _bench_tracker(args, experiment: str):
    """The MLflow tracker of a benchmark (None with --no-mlflow)."""
    if args.no_mlflow:
        return None
    from mlops.tracking import MlflowTracker

    out = Path(args.out)
    uri = args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(out / 'mlflow.db').resolve()}"
    out.mkdir(parents=True, exist_ok=True)
    print(f"MLflow: {uri} (experiment {experiment})")
    return MlflowTracker(uri, experiment, out / "mlartifacts")


def cmd_bench_pareto(args) -> int:
    return cli.cmd_bench_pareto(args, _bench_tracker(args, "drift-pareto-benchmark"))


def cmd_bench_efficiency(args) -> int:
    return cli.cmd_bench_efficiency(args, _bench_tracker(args, "drift-efficiency-benchmark"))


def _tracking_uri(args) -> str:
    """--tracking-uri, else $MLFLOW_TRACKING_URI, else the local stack's (registered if missing)."""
    uri = args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        from mlops.stack import default_state_dir, ensure_stack

        uri = ensure_stack(default_state_dir())
    return uri


def cmd_preferences_report(args) -> int:
    """The library's report, with the registry's champion reward head when --head is not given."""
    import tempfile

    from mlops.registry import download_reward_head

    with tempfile.TemporaryDirectory(prefix="drift-report-") as tmp:
        def champion_head(cfg):
            uri, name = _tracking_uri(args), cli._preferences(args, cfg).reward_model_name
            found = download_reward_head(uri, name, tmp)
            if found is None:
                return None, f"not measured: the registry at {uri} has no champion of {name} (pass --head DIR)"
            return found[0], f"{name} version {found[1]} (the registry's champion)"

        return cli.cmd_preferences_report(args, champion_head)


def _stop(signum, frame):
    raise KeyboardInterrupt


def cmd_label(args) -> int:
    """Serve the labelling page until Ctrl-C (or SIGTERM), then `dvc add` the preference data."""
    import tempfile

    from drift.build import check_device
    from drift.config import PreferenceSection
    from drift.data.preferences import PAIRS_FILE
    from drift.data.prompts import read_prompts, split_prompts
    from mlops.labelling.access import access_for
    from mlops.labelling.generator import from_directory, from_registry
    from mlops.labelling.server import LabelServer
    from mlops.labelling.session import LabelSession, dvc_add

    access = access_for(args.host, args.token, args.rater)
    cfg = cli._config(args)
    out = Path(args.out) if args.out else (cfg.preferences or PreferenceSection()).pairs.parent
    prompts = split_prompts(read_prompts(cfg.data.prompts), cfg.data.train_split)
    device = check_device(cfg.run.device)
    with tempfile.TemporaryDirectory(prefix="drift-label-") as tmp:
        if args.model:
            generator = from_directory(args.model, cfg.sampling.num_steps, cfg.eval_noise_level,
                                       cfg.sampling.guidance_scale, cfg.model.family, device)
        else:
            generator = from_registry(args.model_name or cfg.registry.model_name, _tracking_uri(args), tmp,
                                      args.version, args.alias, cfg.model.family, device)
        try:
            server = LabelServer(LabelSession(generator, prompts, out, args.seed), args.host, args.port, access)
        except OSError as err:
            raise DriftError(f"cannot serve on {args.host}:{args.port} ({err.strerror}): pass another --port") from None
        print(f"labelling page: {server.url}\n  model {generator.describe()}, {len(prompts)} prompts "
              f"({cfg.data.prompts}, split {cfg.data.train_split}); choices go to {out / PAIRS_FILE}\n"
              f"  {access.describe(server.url)}\n"
              f"  Ctrl-C stops it{'' if args.no_dvc else ' and runs dvc add ' + str(out)}", flush=True)
        for sig in (signal.SIGINT, signal.SIGTERM):  # SIGINT too: a background job may have it ignored
            signal.signal(sig, _stop)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            print("stopping the labelling page")
        finally:
            server.server_close()
    if not args.no_dvc:
        print(dvc_add(out)[1])
    return 0


def add_label_command(sub, with_config) -> None:
    p = with_config(sub.add_parser(
        "label", help="serve a local page where raters choose between two generated images",
        description="Serve a page on which raters compare two images the generator draws for a prompt of the "
        "config's prompt set (training split) and record first, second or tie in the preference data. By "
        "default the generator is the registered model's champion."))
    which = p.add_mutually_exclusive_group()
    which.add_argument("--version", help="registered version to draw from")
    which.add_argument("--alias", default="champion", help="registered alias to draw from (default: champion)")
    which.add_argument("--model", help="a local pipeline directory instead of the registry "
                       "(e.g. .state/runs/digits/model from drift train)")
    p.add_argument("--model-name", help="registered model name (default: the config's registry.model_name)")
    p.add_argument("--tracking-uri", help="MLflow tracking and registry URI (default: $MLFLOW_TRACKING_URI, "
                   "else the local stack's)")
    p.add_argument("--out", help="preference folder (default: the config's preferences.pairs folder, "
                   "else data/preferences)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only; any "
                   "other needs raters' credentials)")
    p.add_argument("--token", help="a shared token raters sign in with, typing their name (default: "
                   "$DRIFT_LABEL_TOKEN, which keeps it out of the process list)")
    p.add_argument("--rater", action="append", default=[], metavar="NAME[=TOKEN]",
                   help="a rater and their own invite token (repeatable; without =TOKEN one is made and printed at "
                   "start-up; default: $DRIFT_LABEL_RATER_TOKENS, NAME=TOKEN entries separated by commas)")
    p.add_argument("--port", type=int, default=8750, help="port (0: any free one)")
    p.add_argument("--seed", type=int, help="seed of the prompt and image-seed draws (default: random)")
    p.add_argument("--no-dvc", action="store_true", help="do not run dvc add on exit")
    p.set_defaults(handler=cmd_label)


def build_parser():
    parser, commands = cli.build_parser(extra=[add_label_command])
    for name, handler in (("bench pareto", cmd_bench_pareto), ("bench efficiency", cmd_bench_efficiency)):
        p = commands[name]
        p.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or OUT/mlflow.db)")
        p.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow")
        p.set_defaults(handler=handler)
    p = commands["preferences report"]
    p.add_argument("--tracking-uri", help="MLflow registry of the reward head (default: $MLFLOW_TRACKING_URI, else "
                   "the local stack's)")
    p.set_defaults(handler=cmd_preferences_report)
    return parser, commands


def main(argv: list[str] | None = None) -> int:
    return cli.run(build_parser()[0], argv)


if __name__ == "__main__":
    sys.exit(main())

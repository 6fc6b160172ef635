"""The installed ``drift`` console script: the library's commands (drift.cli) plus the ones that
record to MLflow, which the library itself never imports."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from drift import cli


def cmd_bench_pareto(args) -> int:
    tracker = None
    if not args.no_mlflow:
        from mlops.tracking import MlflowTracker

        out = Path(args.out)
        uri = args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(out / 'mlflow.db').resolve()}"
        out.mkdir(parents=True, exist_ok=True)
        tracker = MlflowTracker(uri, "drift-pareto-benchmark", out / "mlartifacts")
        print(f"MLflow: {uri} (experiment drift-pareto-benchmark)")
    return cli.cmd_bench_pareto(args, tracker)


def build_parser():
    parser, commands = cli.build_parser()
    p = commands["bench pareto"]
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or OUT/mlflow.db)")
    p.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow")
    p.set_defaults(handler=cmd_bench_pareto)
    return parser, commands


def main(argv: list[str] | None = None) -> int:
    return cli.run(build_parser()[0], argv)


if __name__ == "__main__":
    sys.exit(main())

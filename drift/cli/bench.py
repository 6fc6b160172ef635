"""`drift bench`: the benchmarks behind docs/. The Pareto and efficiency benchmarks can record their
runs to a tracker; the library records nothing, the console script (mlops.cli) passes a ``Tracking``."""

from __future__ import annotations

import math
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from drift.cli.options import (
    Config,
    Override,
    Overrides,
    config_option,
    count,
    overrides_dict,
    overrides_option,
    run_config,
    with_hook,
)

Tracking = Callable[..., Any]
"""How the benchmarks that record their runs are tracked: a function called, once a benchmark's
configuration is valid, with its output directory, its name ('pareto', 'efficiency') and the values of
the options that its further keyword parameters declare (typer-annotated, as a command's). It returns
the tracker (drift.bench.common.NullTracker's interface), or None to record nothing."""

Track = Callable[[Path, str], Any]


def _untracked(out: Path, benchmark: str) -> None:
    return None


def _tracked(command: Callable, tracking: Tracking | None) -> Callable:
    """``command`` with its ``track`` parameter filled in: ``tracking`` called with the output
    directory and the benchmark's name, its further keyword parameters options of the command."""
    return with_hook(command, "track", tracking, 2, _untracked)


BenchOverrides = Annotated[list[Override] | None,
                           overrides_option("override a benchmark field, e.g. --set iterations=10")]


def testbed(
    config: Config,
    overrides: Overrides = None,
    out: Path = Path("docs"),
    iterations: Annotated[int, typer.Option(parser=count, metavar="N",
                                            help="iterations of the GRPO and DRIFT runs")] = 60,
    # eval.every: 0 evaluates only at the start and the end of a run.
    every: Annotated[int, typer.Option(
        min=0, metavar="N", help="evaluate every N iterations (0: only at the start and the end)")] = 5,
) -> None:
    from drift.bench import testbed as benchmark

    result = benchmark.run(run_config(config, overrides), out, iterations=iterations, every=every)
    print((out / "testbed.md").read_text())
    print(f"finished in {result['wall_seconds']:.0f} s")


def _scale(text: str) -> float:
    """A prompt-noise scale s: a finite number of at least 0 (drift.prompt_noise.scale's bounds)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 <= value < math.inf:
        raise typer.BadParameter(f"expected a number of at least 0, got {text!r}", param_hint="'--scales'")
    return value


def prompt_noise(
    ctx: typer.Context,
    config: Config,
    overrides: Overrides = None,
    out: Path = Path("docs/prompt_noise"),
    scales: Annotated[list[float] | None, typer.Option(
        parser=_scale, metavar="S", help="noise scales s to probe, one or more: --scales 0.5 1 2 "
        "(default: 0.25 0.5 1.0 2.0)")] = None,
) -> None:
    # --scales takes one or more values, as it did under argparse (nargs="+"); a click option takes
    # one, so the values after the first arrive as the command's extra arguments.
    if ctx.args and not scales:
        ctx.fail(f"Got unexpected extra arguments ({' '.join(ctx.args)})")
    scales = [*(scales or [0.25, 0.5, 1.0, 2.0]), *map(_scale, ctx.args)]
    from drift.bench import prompt_noise as benchmark

    result = benchmark.run(run_config(config, overrides), out, scales)
    print(benchmark.markdown(result))
    print(f"finished in {result['wall_seconds']:.0f} s; outputs in {out}")


class GpuModel(StrEnum):
    sd35m = "sd35m"
    flux_dev = "flux-dev"


class GpuPhase(StrEnum):
    rollout = "rollout"
    update = "update"
    fit = "fit"


class GpuScale(StrEnum):
    full = "full"
    tiny = "tiny"


def gpu(
    out: Annotated[Path, typer.Option(help="output directory (bench_gpu.json, bench_gpu.md)", show_default=False)],
    model: Annotated[list[GpuModel] | None, typer.Option(help="only this model (repeatable; default both)")] = None,
    phase: Annotated[list[GpuPhase] | None, typer.Option(
        help="only this phase (repeatable; default all; update and fit roll out once, untimed, without "
             "rollout)")] = None,
    scale: Annotated[GpuScale, typer.Option(
        help="full: the published sizes (on cuda); tiny: small architectures (on the CPU)")] = GpuScale.full,
    device: Annotated[str | None, typer.Option(help="torch device (default: cuda at full scale, cpu at tiny)")] = None,
    resolution: Annotated[int | None, typer.Option(
        parser=count, metavar="PIXELS", help="image size in pixels (default 512 at full scale)")] = None,
    repeats: Annotated[int, typer.Option(
        parser=count, metavar="N", help="timed rounds of rollout and pipeline call after a warm-up round")] = 1,
    fit_seconds: Annotated[float, typer.Option(
        min=0.0, help="time the micro-batch search may take per model")] = 60.0,
    max_micro_batch: Annotated[int | None, typer.Option(
        parser=count, metavar="N",
        help="largest micro-batch the search tries (default 1024 on a GPU, twice the shipped one on the CPU)")] = None,
) -> None:
    """Builds each model from its published architecture (configs/gpu/*.json) with random weights and runs
    its shipped run configuration at 512 px on one prompt group: the rollout with log-probabilities
    against diffusers' pipeline call, the update, and the largest update micro-batch that fits. Runs
    without installing the project: PYTHONPATH=. python3 -m drift.cli bench gpu ..."""
    from drift.bench import gpu as benchmark

    result = benchmark.run(out, model and [m.value for m in model], phase and [p.value for p in phase], scale.value,
                           device, resolution, repeats, fit_seconds, max_micro_batch)
    print(benchmark.markdown(result))
    print(f"finished in {result['wall_seconds']:.0f} s; outputs in {out} (bench_gpu.json, bench_gpu.md)")


def pareto(
    config: Annotated[Path, config_option("benchmark configuration (configs/bench/*.yaml)")],
    out: Annotated[Path, typer.Option(help="output directory (table, plot, trajectories)", show_default=False)],
    overrides: BenchOverrides = None,
    seeds: Annotated[str, typer.Option(
        help="a count N (seeds 0 .. N-1) or a comma-separated list, e.g. 100,101,102")] = "3",
    resume: Annotated[bool, typer.Option(
        "--resume", help="reuse the runs recorded in --out (runs.json) whose configuration is unchanged")] = False,
    workers: Annotated[int, typer.Option(
        parser=count, metavar="N", help="runs trained at once, in processes of their own sharing torch's threads")] = 1,
    *,
    track: Track,
) -> None:
    from drift.bench.common import parse_seeds
    from drift.bench.pareto import run_benchmark
    from drift.config import load_bench_config

    seeds = parse_seeds(seeds)
    bench, base = load_bench_config(config, overrides_dict(overrides))
    out.mkdir(parents=True, exist_ok=True)
    result = run_benchmark(bench, base, seeds, out, track(out, "pareto"), resume=resume, workers=workers)
    print((out / "table.md").read_text())
    print(f"{len(bench.methods)} methods x seeds {','.join(map(str, seeds))} in {result['wall_seconds']:.0f} s "
          f"({result['run_seconds']:.0f} s of training in all, reused runs included); outputs in {out}")


def efficiency(
    config: Annotated[Path, config_option("benchmark configuration (configs/bench/*efficiency*.yaml)")],
    out: Annotated[Path, typer.Option(help="output directory (tables, plot, trajectories, summary)",
                                      show_default=False)],
    overrides: BenchOverrides = None,
    seeds: Annotated[str, typer.Option(
        help="a count N (seeds 0 .. N-1) or a comma-separated list; the default is the report seeds no setting "
             "was tuned on")] = "100,101,102",
    *,
    track: Track,
) -> None:
    from drift.bench.common import parse_seeds
    from drift.bench.efficiency import run_benchmark
    from drift.config import EfficiencyBenchConfig, load_bench_config

    seeds = parse_seeds(seeds)
    bench, base = load_bench_config(config, overrides_dict(overrides), schema=EfficiencyBenchConfig)
    result = run_benchmark(bench, base, seeds, out, track(out, "efficiency"))
    print((out / "table.md").read_text())
    print(f"{len(bench.methods)} methods x seeds {','.join(map(str, seeds))} in {result['wall_seconds']:.0f} s; "
          f"outputs in {out}")


def build_app(tracking: Tracking | None = None) -> typer.Typer:
    """The `drift bench` group; the Pareto and efficiency benchmarks take ``tracking``'s options."""
    app = typer.Typer(short_help="benchmarks that write their results under docs/")
    app.command(short_help="check the digits testbed against its targets")(testbed)
    app.command("prompt-noise", context_settings={"allow_extra_args": True},
                short_help="what each form and scale of prompt noise does to the base model's samples, and the "
                "prompts' distances in the conditioning space")(prompt_noise)
    app.command(short_help="time and memory of SD 3.5 Medium and FLUX.1-dev training steps at full size with "
                "random weights (--scale tiny: the same code small, on the CPU)")(gpu)
    app.command(short_help="DRIFT vs GRPO baselines and ablations at matched alignment/diversity")(
        _tracked(pareto, tracking))
    app.command(short_help="alignment against denoiser passes and wall time, with and without the SDE window")(
        _tracked(efficiency, tracking))
    return app

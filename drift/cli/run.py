"""`drift train` and `drift sample`: fine-tune a model, and draw a scored grid of images from one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from drift.cli.options import Config, Overrides, count, image_path, run_config

app = typer.Typer()


@app.command(short_help="fine-tune a model with GRPO / DRIFT")
def train(
    config: Config,
    overrides: Overrides = None,
    out: Annotated[Path | None, typer.Option(help="run directory (default: run.output_dir/run.name)")] = None,
    resume: Annotated[bool, typer.Option(
        "--resume", help="continue from the newest intact checkpoint in the run directory")] = False,
    allow_config_change: Annotated[bool, typer.Option(
        "--allow-config-change",
        help="resume even though the configuration differs from the checkpoint's (beyond train.iterations)")] = False,
) -> None:
    cfg = run_config(config, overrides)  # first: a mistake in it is reported before torch loads
    from accelerate import PartialState

    from drift.training.run import run_training
    from drift.training.run_folder import claim_or_fail

    # Under `accelerate launch` this joins the process group; each process then trains a shard of
    # every iteration's samples on its own device (or, with run.device: cpu, the CPU).
    state = PartialState(cpu=cfg.run.device == "cpu")
    if state.num_processes > 1 and cfg.run.device != "cpu":
        cfg = cfg.with_overrides({"run.device": str(state.device)})
    out = out or cfg.run.output_dir / cfg.run.name
    # One run per folder: a second `drift train` on it stops at once, naming the first.
    folder = claim_or_fail(out) if state.is_main_process else None
    run = run_training(cfg, out, resume=resume, allow_config_change=allow_config_change)
    if folder is None:
        return
    trainer = run.trainer
    (out / "trajectory.json").write_text(json.dumps(trainer.trajectory, indent=2))
    trainer.save_model(out / "model", run.base)
    print(f"trained {trainer.iteration} iterations; model in {out / 'model'}; "
          f"final evaluation {trainer.trajectory[-1]}")


@app.command(short_help="sample images, score them and save a grid")
def sample(
    config: Config,
    overrides: Overrides = None,
    model: Annotated[str | None, typer.Option(
        help="model directory or hub id (default: the config's model.source)")] = None,
    prompt: Annotated[list[str] | None, typer.Option(
        metavar="TEXT", help="prompt (repeatable; default: the evaluation prompts)")] = None,
    num: Annotated[int | None, typer.Option(
        "-n", "--num", parser=count, metavar="N", help="samples per prompt (default: eval.samples_per_prompt)")] = None,
    seed: int = 0,
    # The bounds of sampling.noise_level: beyond them the sampler's noise swamps the image.
    noise_level: Annotated[float, typer.Option(min=0.0, max=10.0, help="0 = deterministic sampler")] = 0.0,
    upscale: Annotated[int, typer.Option(parser=count, metavar="N", help="enlarge each image in the grid")] = 4,
    out: Annotated[Path, typer.Option(parser=image_path, metavar="IMAGE", help="the grid image")] = Path("samples.png"),
) -> None:
    from drift.build import build_parts
    from drift.evaluation.protocol import evaluate
    from drift.plots import save_grid

    cfg = run_config(config, overrides)
    parts = build_parts(cfg, model_source=model)
    prompts = prompt or parts.eval_prompts[: cfg.eval.num_prompts]
    n = num or cfg.eval.samples_per_prompt
    sampler = cfg.sampler().model_copy(update={"noise_level": noise_level})
    ev = evaluate(parts.model, parts.reward, parts.embed, prompts, n, seed, sampler,
                  batch_size=cfg.sampling.batch_size, progress=True)
    save_grid(ev.images, n, out, upscale=upscale)
    print(json.dumps(ev.metrics, indent=2))
    print(f"grid of {len(prompts)} prompts x {n} samples (one row per prompt) written to {out}")

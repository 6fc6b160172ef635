"""`drift testbed`: the build stages of the digits testbed, which the DVC stages (dvc.yaml) call."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(short_help="build the digits testbed (the DVC stages call these)")

Params = Annotated[Path, typer.Option(help="DVC parameters file (its testbed section)")]
Images = Annotated[Path, typer.Option(help="the digit images (from drift testbed data)")]
Timings = Annotated[Path, typer.Option(
    help="where the wall time goes (kept out of the DVC output, which must not depend on it)")]


@app.command(short_help="prompt CSV and digit images")
def data(params: Params = Path("params.yaml"), out: Path = Path("data")) -> None:
    from drift.config import load_testbed_params
    from drift.testbed.data import build_data

    p = load_testbed_params(params)
    paths = build_data(out, p.test_fraction, p.seed)
    print(f"wrote {paths['prompts']} and {paths['images']}")


@app.command(short_help="train the digit classifier (reward and feature model)")
def classifier(params: Params = Path("params.yaml"), images: Images = Path("data/testbed/digits.npz"),
               out: Path = Path("data/testbed/classifier")) -> None:
    from drift.config import load_testbed_params
    from drift.testbed import deterministic_build
    from drift.testbed.classifier import train_classifier
    from drift.testbed.data import load_images

    p = load_testbed_params(params)
    deterministic_build(p.threads)
    digits = load_images(images)
    model, accuracy = train_classifier(digits["images"], digits["labels"], digits["is_test"], p.classifier.epochs,
                                       p.classifier.lr, seed=p.seed, progress=True)
    model.save_pretrained(out)
    (out / "metrics.json").write_text(json.dumps({"test_accuracy": accuracy}, indent=2))
    print(f"digit classifier: held-out accuracy {accuracy:.4f}; saved to {out}")


@app.command(short_help="train the evaluation encoder (contrastive, no labels) and probe it")
def encoder(params: Params = Path("params.yaml"), images: Images = Path("data/testbed/digits.npz"),
            out: Path = Path("data/testbed/encoder"), timings: Timings = Path(".state/timings/train_encoder.json"),
            ) -> None:
    import time

    from drift.config import load_testbed_params
    from drift.testbed import deterministic_build
    from drift.testbed.data import load_images
    from drift.testbed.encoder import PROBE_THRESHOLD, encoder_probe, train_encoder

    p = load_testbed_params(params)
    deterministic_build(p.threads)
    digits = load_images(images)
    start = time.perf_counter()
    model, stats = train_encoder(digits["images"], digits["is_test"], **p.encoder.model_dump(), seed=p.seed)
    seconds = time.perf_counter() - start
    probe = encoder_probe(model, digits["images"], digits["labels"], digits["is_test"])
    model.save_pretrained(out)
    (out / "metrics.json").write_text(json.dumps({**stats, "probe_accuracy": probe,
                                                  "probe_threshold": PROBE_THRESHOLD}, indent=2))
    timings.parent.mkdir(parents=True, exist_ok=True)
    timings.write_text(json.dumps({"seconds": seconds, "steps": stats["steps"]}, indent=2))
    shown = ", ".join(f"{name} {acc:.2f}" for name, acc in probe.items())
    print(f"digit encoder: {stats['steps']} steps in {seconds:.1f} s, final loss {stats['final_loss']:.3f}; linear "
          f"probe of the attribute terciles on held-out digits (chance 0.33, threshold {PROBE_THRESHOLD}): {shown}; "
          f"saved to {out} (time recorded in {timings}, outside the DVC output)")


@app.command("pretrain", short_help="pretrain the base text-to-image model with flow matching")
def pretrain_base_model(
    params: Params = Path("params.yaml"),
    images: Images = Path("data/testbed/digits.npz"),
    prompts: Annotated[Path, typer.Option(help="the prompt CSV (from drift testbed data)")] = Path("data/prompts.csv"),
    out: Path = Path("data/testbed/base_model"),
    timings: Timings = Path(".state/timings/pretrain_base_model.json"),
) -> None:
    from drift.config import load_testbed_params
    from drift.data.prompts import read_prompts
    from drift.testbed import deterministic_build
    from drift.testbed.data import load_images
    from drift.testbed.pretrain import pretrain, save

    p = load_testbed_params(params)
    deterministic_build(p.threads)
    digits = load_images(images)
    pipe, stats = pretrain(digits["images"], digits["labels"], ~digits["is_test"], read_prompts(prompts),
                           **p.base_model.model_dump(), seed=p.seed, progress=True)
    save(pipe, stats, out)
    timings.parent.mkdir(parents=True, exist_ok=True)
    timings.write_text(json.dumps({"pretrain_seconds": stats["seconds"], "steps": stats["steps"]}, indent=2))
    print(f"base model: {stats['steps']} steps in {stats['seconds']:.0f} s, final loss {stats['final_loss']:.4f}; "
          f"saved to {out} (time recorded in {timings}, outside the DVC output)")

"""`drift bench testbed`: does the digits testbed meet its targets? Writes docs/testbed.md.

Measures: pretraining time (recorded by the DVC stage), the classifier's held-out accuracy,
how often base-model samples for held-out prompts show the prompted digit, their feature
diversity against the real images' per digit, the time to generate 160 images, and a short
GRPO run against a DRIFT run (collapse, and diversity at matched reward).
"""

from __future__ import annotations

import json
import math
import platform
import time
from pathlib import Path

import numpy as np
import torch

from drift.bench.common import further_embeddings
from drift.build import build_parts, build_trainer
from drift.config import DriftConfig
from drift.errors import ConfigError
from drift.evaluation.matching import matched_comparison
from drift.evaluation.protocol import eval_seeds, evaluate, evaluation_embeddings
from drift.plots import save_grid, trajectory_plot
from drift.sampling.rollout import sample_groups
from drift.scoring.diversity import mean_pairwise_cosine_distance
from drift.testbed.attributes import ATTRIBUTES, HIGH, LOW, UNNAMED, attribute_values, caption
from drift.testbed.classifier import digit_from_prompt, load_classifier
from drift.testbed.data import load_images


def classifier_checkpoint(cfg: DriftConfig) -> Path:
    """The digit classifier the reward reads (its digit_margin term's checkpoint)."""
    term = next((t for t in cfg.reward if t.name == "digit_margin"), None)
    if term is None:
        raise ConfigError("reward: the testbed benchmark needs a digit_margin term (the digit classifier)")
    return Path(term.args.get("checkpoint", "data/testbed/classifier"))


def subset_range(features: torch.Tensor, size: int, draws: int = 200, seed: int = 0) -> tuple[float, float]:
    """How far the diversity of ``size`` of the real digits ``features`` strays from all of theirs:
    the 5th and 95th percentiles, over ``draws`` random subsets, of the relative difference. A
    generated set of that size is measured as precisely as this."""
    full = float(mean_pairwise_cosine_distance(features))
    gen = torch.Generator().manual_seed(seed)
    size = min(size, len(features) - 1)
    rel = [float(mean_pairwise_cosine_distance(features[torch.randperm(len(features), generator=gen)[:size]]))
           / full - 1 for _ in range(draws)]
    return float(np.percentile(rel, 5)), float(np.percentile(rel, 95))


def base_model_quality(cfg: DriftConfig, parts, images_path: Path, samples_per_prompt: int = 32) -> dict:
    """How often the base model's samples for the held-out prompts show the prompted digit, and per
    digit the diversity of its samples against the real images' in each embedding: the run's
    (headline) one and each of eval.embeddings, with the range a real set of as many digits strays
    within (``subset_range``)."""
    clf = load_classifier(classifier_checkpoint(cfg))
    ev = evaluate(parts.model, parts.reward, parts.embed, parts.eval_prompts, samples_per_prompt, cfg.eval.seed,
                  cfg.sampler(evaluation=True).model_copy(update={"guidance_scale": 1.0, "negative_prompt": ""}))
    digits = torch.tensor([digit_from_prompt(p) for p in ev.prompts])
    data = load_images(images_path)
    real_images, labels = torch.from_numpy(data["images"]), torch.from_numpy(data["labels"])
    with torch.no_grad():
        accuracy = float((clf(ev.images).argmax(1) == digits).float().mean())
    per_digit = {}
    for name, embed in {cfg.embedding.name: parts.embed, **evaluation_embeddings(cfg)}.items():
        real_feats, gen_feats = embed(real_images).cpu(), embed(ev.images).cpu()
        per_digit[name] = []
        for d in range(10):
            real = float(mean_pairwise_cosine_distance(real_feats[labels == d]))
            gen = float(mean_pairwise_cosine_distance(gen_feats[digits == d]))
            per_digit[name].append({"digit": d, "real": real, "generated": gen, "relative_gap": (gen - real) / real,
                                    "real_range": subset_range(real_feats[labels == d], int((digits == d).sum()))})
    return {"held_out_accuracy": accuracy, "per_digit_diversity": per_digit,
            "samples_per_digit": int((digits == 0).sum()), "grid": ev.images[::samples_per_prompt // 4 or 1]}


def attribute_control(cfg: DriftConfig, parts, samples_per_prompt: int = 16) -> list[dict]:
    """Whether the words of an attribute steer the base model: for each attribute, the held-out
    prompts followed by its low word and by its high word, sampled from the same seeds; reported is
    the share of (prompt, seed) pairs whose high-word sample has the larger attribute value (0.5:
    the words mean nothing), and the mean value for the low word, the plain prompt and the high word."""
    prompts = parts.eval_prompts
    seeds = eval_seeds(cfg.eval.seed, len(prompts) * samples_per_prompt)
    s = cfg.sampling

    def values(texts: list[str]) -> torch.Tensor:
        """(N, attributes) of the samples of ``texts``."""
        samples = sample_groups(parts.model, texts, samples_per_prompt, seeds,
                                cfg.sampler(evaluation=True).model_copy(update={"negative_prompt": ""}),
                                batch_size=s.batch_size)
        return torch.from_numpy(attribute_values(samples.images.cpu().numpy()))

    plain_values = values(prompts)
    rows = []
    for a, (name, words) in enumerate(ATTRIBUTES):
        levels = {level: tuple(level if k == a else UNNAMED for k in range(len(ATTRIBUTES))) for level in (LOW, HIGH)}
        low = values([caption(p, levels[LOW]) for p in prompts])[:, a]
        high = values([caption(p, levels[HIGH]) for p in prompts])[:, a]
        plain = plain_values[:, a]
        rows.append({"attribute": name, "low_word": words[LOW], "high_word": words[HIGH],
                     "high_above_low": float((high > low).float().mean()), "low": float(low.mean()),
                     "plain": float(plain.mean()), "high": float(high.mean())})
    return rows


def generation_time(cfg: DriftConfig, parts, prompts: int = 10, per_prompt: int = 16, repeats: int = 3) -> float:
    """Best of ``repeats`` wall times to sample prompts x per_prompt images with the training sampler."""
    s = cfg.sampling
    chosen = parts.eval_prompts[:prompts]
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        samples = sample_groups(parts.model, chosen, per_prompt, eval_seeds(0, prompts * per_prompt), cfg.sampler(),
                                batch_size=s.batch_size)
        parts.reward(samples.images, samples.prompts)
        times.append(time.perf_counter() - start)
    return min(times)


def collapse_runs(cfg: DriftConfig, iterations: int, every: int) -> dict[str, list[dict]]:
    """Standard GRPO (every step stochastic, no SDE window) and the configuration's own settings
    ('default') on the same budget and seeds."""
    budget = {"train.iterations": iterations, "eval.every": every}
    grpo = cfg.without_drift().with_overrides({**budget, "sampling.sde_window": {"size": None},
                                               "train.trained_steps": None})
    configs = {"grpo": grpo, "default": cfg.with_overrides(budget)}
    return {name: build_trainer(run_cfg).train(progress=True) for name, run_cfg in configs.items()}


def pretrain_timing(path: Path) -> dict:
    """The pretraining wall time `drift testbed pretrain` recorded on this machine, if it did."""
    return {"seconds": json.loads(path.read_text())["pretrain_seconds"]} if path.is_file() else {"seconds": math.nan}


def encoder_figures(cfg: DriftConfig, timings_path: Path) -> dict | None:
    """The evaluation encoder's probe (its DVC stage's metrics.json) and the training time `drift
    testbed encoder` recorded on this machine; None when the run's embedding is not the encoder."""
    if cfg.embedding.name != "digit_encoder":
        return None
    metrics = json.loads((Path(cfg.embedding.args.get("checkpoint", "data/testbed/encoder")) / "metrics.json")
                         .read_text())
    seconds = json.loads(timings_path.read_text())["seconds"] if timings_path.is_file() else math.nan
    return {**metrics, "seconds": seconds}


def run(cfg: DriftConfig, out_dir: str | Path, iterations: int = 60, every: int = 5,
        images_path: str | Path = "data/testbed/digits.npz",
        base_model_dir: str | Path | None = None,
        timings_path: str | Path = ".state/timings/pretrain_base_model.json",
        encoder_timings_path: str | Path = ".state/timings/train_encoder.json") -> dict:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    base_dir = Path(base_model_dir or cfg.model.source)
    timings_path, encoder_timings_path = Path(timings_path), Path(encoder_timings_path)
    start = time.perf_counter()
    parts = build_parts(cfg)
    quality = base_model_quality(cfg, parts, Path(images_path))
    save_grid(quality.pop("grid"), 12, out / "testbed_base_samples.png", upscale=4)
    seconds_160 = generation_time(cfg, parts)
    attributes = attribute_control(cfg, parts)
    runs = collapse_runs(cfg, iterations, every)
    grpo, default = runs["grpo"], runs["default"]
    result = {
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}",
        "pretrain": {**json.loads((base_dir / "pretrain_stats.json").read_text()), **pretrain_timing(timings_path)},
        "classifier_accuracy": json.loads((classifier_checkpoint(cfg) / "metrics.json").read_text())["test_accuracy"],
        "encoder": encoder_figures(cfg, encoder_timings_path),
        **quality,
        "generate_160_seconds": seconds_160,
        "attribute_control": attributes,
        "grpo": {"reward_start": grpo[0]["alignment"], "reward_end": grpo[-1]["alignment"],
                 "diversity_start": grpo[0]["diversity"], "diversity_end": grpo[-1]["diversity"]},
        "matched_alignment": matched_comparison(default, grpo, count=5),
        "matched_alignment_further": {
            label: [row["gain"] for row in matched_comparison(default, grpo, 5, y=f"{label}/diversity")
                    if np.isfinite(row["gain"])] for label in further_embeddings(grpo[0])},
        "trajectories": runs,
        "iterations": iterations,
        "wall_seconds": time.perf_counter() - start,
    }
    panels = {"diversity": f"in {cfg.embedding.name}",
              **{f"{label}/diversity": f"in {label}" for label in further_embeddings(grpo[0])}}
    trajectory_plot({"GRPO": grpo, "DRIFT (default config)": default}, out / "testbed_collapse.png", reference=grpo[0],
                    title=f"digits testbed: {iterations} iterations, evaluated every {every}", panels=panels)
    (out / "testbed.json").write_text(json.dumps(result, indent=2))
    (out / "testbed.md").write_text(report(result))
    return result


def report(r: dict) -> str:
    grpo = r["grpo"]
    per_digit = r["per_digit_diversity"]
    gaps = {name: max(abs(p["relative_gap"]) for p in rows) for name, rows in per_digit.items()}
    encoder = r["encoder"]
    encoder_rows = [] if encoder is None else [
        f"| evaluation encoder built in at most 30 s on 2 threads | {encoder['seconds']:.1f} s "
        f"({encoder['steps']} steps) | {'yes' if encoder['seconds'] <= 30 else 'no'} |",
        f"| evaluation encoder separates styles: a linear probe predicts each attribute's tercile on held-out "
        f"digits at least {encoder['probe_threshold']:g} of the time (chance 0.33) | "
        + ", ".join(f"{a} {acc:.2f}" for a, acc in encoder["probe_accuracy"].items()) + " | "
        f"{'yes' if min(encoder['probe_accuracy'].values()) >= encoder['probe_threshold'] else 'no'} |"]
    div_drop = 1 - grpo["diversity_end"] / grpo["diversity_start"]
    steering = ", ".join(f"{a['attribute']} {100 * a['high_above_low']:.0f}%" for a in r["attribute_control"])
    gains = [row["gain"] for row in r["matched_alignment"] if np.isfinite(row["gain"])]
    lines = [
        "# The digits testbed: measured figures",
        "",
        "Produced by `drift bench testbed -c configs/digits.yaml --out docs` "
        f"(machine: {r['machine']}; wall time {r['wall_seconds']:.0f} s). Rerun it to refresh this page.",
        "",
        "| target | measured | met |",
        "|---|---|---|",
        f"| pretraining at most 5 min on 2 cores | {r['pretrain']['seconds']:.0f} s "
        f"({r['pretrain']['steps']} steps of {r['pretrain']['batch_size']}) | "
        f"{'yes' if r['pretrain']['seconds'] <= 300 else 'no'} |",
        f"| classifier held-out accuracy at least 97% | {100 * r['classifier_accuracy']:.1f}% | "
        f"{'yes' if r['classifier_accuracy'] >= 0.97 else 'no'} |",
        f"| held-out prompts show the prompted digit at least 90% | {100 * r['held_out_accuracy']:.1f}% | "
        f"{'yes' if r['held_out_accuracy'] >= 0.9 else 'no'} |",
        *encoder_rows,
        *[f"| diversity within 30% of real, per digit, in {name} | largest gap {100 * gap:.0f}% | "
          f"{'yes' if gap <= 0.3 else 'no'} |" for name, gap in gaps.items()],
        f"| 160 images (10 prompts x 16) in at most 5 s | {r['generate_160_seconds']:.2f} s | "
        f"{'yes' if r['generate_160_seconds'] <= 5 else 'no'} |",
        f"| attribute words steer the samples: the high word's sample above the low word's in at least 75% of pairs | "
        f"{steering} | "
        f"{'yes' if min(a['high_above_low'] for a in r['attribute_control']) >= 0.75 else 'no'} |",
        f"| GRPO: reward rises, diversity falls by at least half | "
        f"reward {grpo['reward_start']:.2f} -> {grpo['reward_end']:.2f}, "
        f"diversity {grpo['diversity_start']:.4f} -> {grpo['diversity_end']:.4f} (-{100 * div_drop:.0f}%) | "
        f"{'yes' if grpo['reward_end'] > grpo['reward_start'] and div_drop >= 0.5 else 'no'} |",
        f"| DRIFT keeps more diversity at matched reward | {', '.join(f'{100 * x:+.0f}%' for x in gains)} | "
        f"{'yes' if gains and min(gains) > 0 else 'no'} |",
        *[f"| the same in {label} | {', '.join(f'{100 * x:+.0f}%' for x in further)} | "
          f"{'yes' if further and min(further) > 0 else 'no'} |"
          for label, further in r["matched_alignment_further"].items()],
        "",
        f"Per-digit diversity (mean pairwise cosine distance) of the real digits and of the base model's "
        f"{r['samples_per_digit']} samples per digit for the held-out prompts, in each embedding; in brackets, the "
        f"range (5th to 95th percentile) in which the diversity of {r['samples_per_digit']} random real digits "
        "strays from all of theirs, i.e. how precisely a set of that size is measured:",
        "",
        "| digit | " + " | ".join(f"real, {n} | generated | gap" for n in per_digit) + " |",
        "|---" * (1 + 3 * len(per_digit)) + "|",
        *[f"| {d} | " + " | ".join(f"{rows[d]['real']:.4f} | {rows[d]['generated']:.4f} | "
                                   f"{100 * rows[d]['relative_gap']:+.0f}% ({100 * rows[d]['real_range'][0]:+.0f} "
                                   f"to {100 * rows[d]['real_range'][1]:+.0f})" for rows in per_digit.values()) + " |"
          for d in range(10)],
        "",
        "Attribute words (drift.testbed.attributes) after the held-out prompts, the same seeds for the low word, the "
        "plain prompt and the high word: the mean attribute of the samples, and how often the high word's sample "
        "has the larger value than the low word's:",
        "",
        "| attribute | low word | plain | high word | high above low |",
        "|---|---|---|---|---|",
        *[f"| {a['attribute']} | {a['low_word']}: {a['low']:.3f} | {a['plain']:.3f} | "
          f"{a['high_word']}: {a['high']:.3f} | "
          f"{100 * a['high_above_low']:.0f}% |" for a in r["attribute_control"]],
        "",
        "Diversity at matched alignment (DRIFT against GRPO, first crossing along each trajectory):",
        "",
        "| alignment | GRPO diversity | DRIFT diversity | gain |",
        "|---|---|---|---|",
        *[f"| {row['alignment']:.2f} | {row['diversity_baseline']:.4f} | {row['diversity_method']:.4f} | "
          f"{100 * row['gain']:+.0f}% |" for row in r["matched_alignment"]],
        "",
        "![trajectories](testbed_collapse.png)",
        "",
        "Base-model samples for the held-out prompts (four per prompt, one prompt after another):",
        "",
        "![samples](testbed_base_samples.png)",
        "",
    ]
    return "\n".join(lines)

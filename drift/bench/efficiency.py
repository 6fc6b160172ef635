"""`drift bench efficiency`: alignment against training compute for GRPO and DRIFT, with and
without the SDE window, on the same seeds.

Every method trains from the same base model with the same prompts and rollout seeds; after each
iteration the trainer reports its cumulative denoiser passes and wall time, and every
``eval_every`` iterations the held-out alignment and diversity. The target is the baseline's
(standard GRPO's) alignment after ``iterations`` iterations, per seed. For each method and seed,
the compute, wall time and diversity where its trajectory first reaches that target
(``drift.bench.common.reach``: interpolated between the two evaluations that bracket it) are
compared with the baseline's. The compute ratio splits into what an iteration costs and how many
iterations the target takes:

    fpe_to_target(m) / fpe_to_target(GRPO) = [fpe per iteration(m) / GRPO's] x [iterations(m) / GRPO's]

It also times a rollout with log-probabilities (full SDE and the windowed method's) against
diffusers' plain deterministic scheduler loop of the same model, steps and batch.
"""

from __future__ import annotations

import csv
import math
import platform
import time
from collections.abc import Callable
from contextlib import closing
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from drift.bench.common import (
    FIGURES,
    NullTracker,
    Progress,
    embedding_keys,
    embeddings_line,
    embeddings_used,
    finite_stats,
    further_embeddings,
    mean_trajectory,
    publish,
    ratio,
    reach,
)
from drift.build import build_parts, build_trainer
from drift.config import DriftConfig, EfficiencyBenchConfig
from drift.models.base import T2IModel
from drift.plots import pyplot, save_figure
from drift.sampling.rollout import expand_groups, rollout, sample_generators
from drift.sampling.window import sde_steps

FPE, SECONDS = "compute/cum_forward_equivalents", "compute/cum_seconds"


# -- the runs ------------------------------------------------------------------------------------
def train_with_compute(cfg: DriftConfig, tracker, advance: Callable[[int], None]) -> list[dict]:
    """Train one run, calling ``advance(iteration)`` after each iteration; its evaluation trajectory
    with the cumulative compute at each checkpoint."""
    ledger: dict[int, dict[str, float]] = {0: {FPE: 0.0, SECONDS: 0.0}}

    def callback(metrics: dict[str, float], iteration: int) -> None:
        tracker.log_metrics(metrics, iteration)
        advance(iteration)
        if FPE in metrics:
            ledger[iteration] = {k: v for k, v in metrics.items() if k.startswith("compute/")}

    trajectory = build_trainer(cfg).train(callback=callback)
    return [{**p, "fpe": ledger[p["iteration"]][FPE], "seconds": ledger[p["iteration"]][SECONDS]} for p in trajectory]


def analyse(trajectories: dict[str, dict[int, list[dict]]], baseline: str, iterations: int) -> dict:
    """Per method: the baseline's target reached where, at what cost, relative to the baseline."""
    seeds = sorted(trajectories[baseline])
    base_end = {s: next(p for p in trajectories[baseline][s] if p["iteration"] == iterations) for s in seeds}
    targets = {s: base_end[s]["alignment"] for s in seeds}
    figures = embedding_keys(base_end[seeds[0]])  # diversity, Vendi and coverage in every embedding
    table = []
    for name, runs in trajectories.items():
        hit = {s: reach(runs[s], targets[s], ("iteration", "fpe", "seconds", *figures)) for s in seeds}
        per_iteration = {s: runs[s][-1]["fpe"] / runs[s][-1]["iteration"] for s in seeds}
        base_per_iteration = {s: base_end[s]["fpe"] / iterations for s in seeds}
        row = {"method": name, "reached": sum(math.isfinite(hit[s]["fpe"]) for s in seeds), "seeds": len(seeds)}
        for key in ("iteration", "fpe", "seconds", *figures):
            row[key] = [hit[s][key] for s in seeds]
            row[f"{key}_ratio"] = [ratio(hit[s][key], base_end[s][key]) for s in seeds]
        row["fpe_per_iteration"] = [per_iteration[s] for s in seeds]
        row["fpe_per_iteration_ratio"] = [ratio(per_iteration[s], base_per_iteration[s]) for s in seeds]
        row["final_alignment"] = [runs[s][-1]["alignment"] for s in seeds]
        row["final_iteration"] = runs[seeds[0]][-1]["iteration"]
        row["mean"] = {k: finite_stats(v)["mean"] for k, v in row.items() if isinstance(v, list)}
        table.append(row)
    return {"targets": targets, "baseline_diversity": {s: base_end[s]["diversity"] for s in seeds}, "table": table,
            "figures": figures,
            "mean_trajectories": {name: mean_trajectory(runs, ("alignment", "diversity", "fpe", "seconds"))
                                  for name, runs in trajectories.items()}}


# -- rollout timing ------------------------------------------------------------------------------
@torch.no_grad()
def plain_sample(model: T2IModel, prompts: list[str], group_size: int, seeds: torch.Tensor, num_steps: int,
                 guidance_scale: float = 1.0, batch_size: int = 256, negative_prompt: str = "") -> torch.Tensor:
    """The reference sampler: diffusers' own scheduler (from the pipeline's config) stepping
    deterministically, nothing kept but the images; initial noise from each sample's seed, as in
    a rollout. Same model, steps, guidance and batches as ``rollout``. (Euler and DDIM need no
    input scaling and start at unit noise.)"""
    sample_prompts, _ = expand_groups(prompts, group_size)
    scheduler = type(model.pipe.scheduler).from_config(model.pipe.scheduler.config)
    scheduler.set_timesteps(num_steps)
    uncond_all = model.encode([negative_prompt] * len(sample_prompts)) if guidance_scale > 1 else None
    cond_all = model.encode(sample_prompts)
    images = []
    for s in range(0, len(sample_prompts), batch_size):
        idx = slice(s, s + batch_size)
        gens = sample_generators(seeds[idx], offset=0)
        x = model.initial_latents(gens)
        uncond = None if uncond_all is None else uncond_all[idx]
        for t in scheduler.timesteps:
            out = model.predict(x, t, cond_all[idx], uncond, guidance_scale)
            x = scheduler.step(out, t, x).prev_sample
        images.append(model.decode(x))
    return torch.cat(images)


def paired_times(samplers: dict[str, Any], repeats: int, reference: str) -> tuple[dict[str, float], dict[str, float]]:
    """Each sampler's best-of-``repeats`` seconds, and its median ratio to ``reference`` over rounds
    in which every sampler runs once, back to back (after one warm-up round): a ratio within a round
    cancels the slow and fast spells of a shared machine, which move a best-of time by 10% here."""
    best = {name: math.inf for name in samplers}
    ratios: dict[str, list[float]] = {name: [] for name in samplers}
    for r in range(repeats + 1):
        seconds = {}
        for name, fn in samplers.items():
            t0 = time.perf_counter()
            fn()
            seconds[name] = time.perf_counter() - t0
        if r:
            for name, value in seconds.items():
                best[name] = min(best[name], value)
                ratios[name].append(value / seconds[reference])
    return best, {name: float(np.median(values)) for name, values in ratios.items()}


def time_rollouts(cfg: DriftConfig, repeats: int) -> dict[str, float]:
    """Seconds of one iteration's rollout (P * G samples; ``paired_times``): with log-probabilities
    on every step, with the configured SDE window, and deterministic (noise 0), each against the
    plain diffusers loop; and how far the plain loop's images are from the rollout at noise 0."""
    s = cfg.sampling
    parts = build_parts(cfg)
    model, prompts = parts.model, parts.train_prompts[: s.prompts_per_iteration]
    seeds = torch.arange(len(prompts) * s.group_size)
    window = sde_steps(s.sde_window, s.num_steps, 0, np.random.default_rng(0))

    def run(noise_level, steps=None):
        return rollout(model, prompts, s.group_size, seeds, s.num_steps, noise_level, s.guidance_scale,
                       batch_size=s.batch_size, negative_prompt=s.negative_prompt, sde_steps=steps)

    samplers = {
        "plain": lambda: plain_sample(model, prompts, s.group_size, seeds, s.num_steps, s.guidance_scale, s.batch_size,
                                      s.negative_prompt),
        "sde_logprob": lambda: run(s.noise_level),
        "window_logprob": lambda: run(s.noise_level, window),
        "ode_logprob": lambda: run(0.0),
    }
    seconds, ratios = paired_times(samplers, repeats, reference="plain")
    gap = float((samplers["plain"]() - run(0.0).images).abs().max())
    return {"seconds": seconds, "ratio_to_plain": ratios,
            "sde_steps": int(window.sum()), "samples": len(seeds), "num_steps": s.num_steps, "repeats": repeats,
            "plain_vs_ode_rollout_max_abs_diff": gap}


# -- outputs -------------------------------------------------------------------------------------
def _fmt(values: list[float], fmt: str, unit: str = "", pct: bool = False) -> str:
    """mean ± std over the seeds that got there; a ratio as a percentage change with ``pct``."""
    stats, reached = finite_stats(values), sum(map(math.isfinite, values))
    if not reached:
        return "not reached"
    mean, std = stats["mean"], stats["std"]
    text = f"{100 * (mean - 1):+.0f}% ± {100 * std:.0f}" if pct else f"{mean:{fmt}}{unit} ± {std:{fmt}}"
    return text + (f" ({reached}/{len(values)} seeds)" if reached < len(values) else "")


COLUMNS = ("iteration", "fpe", "fpe_ratio", "fpe_per_iteration_ratio", "iteration_ratio", "seconds",
           "seconds_ratio", "diversity", "diversity_ratio", "final_alignment")


def write_outputs(out: Path, result: dict) -> None:
    analysis = result["analysis"]
    with (out / "table.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["method", "seed", *COLUMNS])
        for r in analysis["table"]:
            for k, seed in enumerate(result["seeds"]):
                w.writerow([r["method"], seed, *(r[c][k] for c in COLUMNS)])
    base = result["baseline"]
    lines = [
        embeddings_line(result["embeddings"]),
        "",
        f"Target: {base}'s alignment after {result['iterations']} iterations, per seed "
        f"({', '.join(f'{v:.2f}' for v in analysis['targets'].values())}); seeds {result['seeds']}. "
        "Compute in denoiser forward-pass equivalents (fpe = forwards + 2 x backwards), training only.",
        "",
        f"| method | iterations to target | fpe to target | fpe vs {base} | = fpe per iteration | x iterations | "
        f"wall s to target | wall vs {base} | diversity at target | diversity vs {base} | final alignment |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in analysis["table"]:
        lines.append(
            f"| {r['method']} | {_fmt(r['iteration'], '.1f')} | {_fmt(r['fpe'], ',.0f')} | "
            f"{_fmt(r['fpe_ratio'], '.2f', 'x')}"
            f" | {_fmt(r['fpe_per_iteration_ratio'], '.2f', 'x')} | {_fmt(r['iteration_ratio'], '.2f', 'x')}"
            f" | {_fmt(r['seconds'], '.0f')} | {_fmt(r['seconds_ratio'], '.2f', 'x')} | {_fmt(r['diversity'], '.4f')}"
            f" | {_fmt(r['diversity_ratio'], '', pct=True)} | {_fmt(r['final_alignment'], '.2f')}"
            f" (it {r['final_iteration']}) |")
    lines += ["", f"At the target, in each embedding (headline: {result['embeddings']['measured']}; "
              + ", ".join(f"{label}: {name}" for label, name in result["embeddings"]["further"].items())
              + f"): each figure, and as a change against {base}'s there.", "",
              "| method | embedding | " + " | ".join(f"{f} | vs {base}" for f in FIGURES) + " |",
              "|---" * (2 + 2 * len(FIGURES)) + "|"]
    labels = [result["embeddings"]["measured"], *further_embeddings(dict.fromkeys(analysis["figures"]))]
    for r in analysis["table"]:
        for k, label in enumerate(labels):
            keys = [f"{label}/{f}" if k else f for f in FIGURES]
            cells = [f"{_fmt(r[key], '.1f' if key.endswith('frechet') else '.4f')} | "
                     f"{_fmt(r[key + '_ratio'], '', pct=True)}" if key in r else "- | -" for key in keys]
            lines.append(f"| {r['method']} | {label} | " + " | ".join(cells) + " |")
    timing = result.get("rollout_timing")
    if timing:
        sec, ratio = timing["seconds"], timing["ratio_to_plain"]
        lines += ["", f"Rollout of {timing['samples']} samples x {timing['num_steps']} steps, "
                  f"{timing['repeats']} rounds "
                  "(best seconds; median ratio to diffusers' plain deterministic loop within a round):", "",
                  "| sampler | seconds | vs plain |", "|---|---|---|"]
        lines += [f"| {k} | {sec[k]:.3f} | {ratio[k]:.3f}x |" for k in sec]
    (out / "table.md").write_text("\n".join(lines) + "\n")
    efficiency_plot(analysis["mean_trajectories"], float(np.mean(list(analysis["targets"].values()))),
                    out / "efficiency.png", f"mean of seeds {result['seeds']}")


def efficiency_plot(trajectories: dict[str, list[dict]], target: float, path: Path, title: str) -> Path:
    """Alignment against cumulative compute and wall time, and diversity against compute; the
    target (the baseline's final alignment) as a dashed line."""
    fig, axes = pyplot().subplots(1, 3, figsize=(15, 4.5), dpi=110)
    panels = (("fpe", "alignment", "denoiser forward-pass equivalents (cumulative)"),
              ("seconds", "alignment", "training wall time, s (cumulative)"),
              ("fpe", "diversity", "denoiser forward-pass equivalents (cumulative)"))
    for ax, (x, y, xlabel) in zip(axes, panels):
        for name, points in trajectories.items():
            ax.plot([p[x] for p in points], [p[y] for p in points], marker=".", label=name)
        if y == "alignment":
            ax.axhline(target, color="black", linestyle="--", linewidth=0.8, label="target")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(y)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(title)
    return save_figure(fig, path)


def run_benchmark(bench: EfficiencyBenchConfig, base: DriftConfig, seeds: list[int], out_dir: str | Path,
                  tracker=None, progress: bool = True) -> dict[str, Any]:
    """Every method on every seed, one run after the other, the rollout timing, the analysis, and
    the outputs in ``out_dir``. With ``progress``, each run's start and end and the time left on
    stderr (``drift.bench.common.Progress``)."""
    tracker = tracker or NullTracker()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    trajectories: dict[str, dict[int, list[dict]]] = {name: {} for name in bench.methods}
    runs = {(name, seed): bench.run_config(base, name, seed) for seed in seeds for name in bench.methods}
    with closing(Progress({f"{n}/seed{s}": cfg.train.iterations for (n, s), cfg in runs.items()}, progress)) as shown, \
            tracker.run("efficiency-benchmark", {"seeds": ",".join(map(str, seeds)), "iterations": bench.iterations,
                                                 "methods": ",".join(bench.methods)}):
        for (name, seed), cfg in runs.items():
            run_id, run_start = f"{name}/seed{seed}", time.perf_counter()
            shown.advance(run_id, 0)
            with tracker.run(run_id, {"method": name, "seed": seed, **bench.methods[name]}, nested=True):
                trajectories[name][seed] = train_with_compute(cfg, tracker, partial(shown.advance, run_id))
            shown.finish(run_id, time.perf_counter() - run_start)
        result = {"baseline": bench.baseline, "seeds": seeds, "iterations": bench.iterations,
                  "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads",
                  "embeddings": embeddings_used(bench, base),
                  "trajectories": trajectories, "analysis": analyse(trajectories, bench.baseline, bench.iterations)}
        if bench.timing_method is not None:
            shown.message(f"timing the rollouts of {bench.timing_method} ({bench.timing_repeats} rounds)")
            result["rollout_timing"] = time_rollouts(bench.run_config(base, bench.timing_method, seeds[0]),
                                                     bench.timing_repeats)
        result["wall_seconds"] = time.perf_counter() - start
        publish(out, result, write_outputs, "efficiency.png", tracker)
    return result


__all__ = ["analyse", "plain_sample", "run_benchmark", "time_rollouts"]

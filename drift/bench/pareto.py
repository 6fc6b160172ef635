"""`drift bench pareto`: DRIFT against GRPO baselines and ablations on equal budgets and seeds.

Every method trains from the same base model with the same iterations, group size, prompts and
rollout seeds (all drawn from (seed, iteration)), and is evaluated every ``eval_every`` iterations
on the same held-out prompts and evaluation seeds. From the (alignment, diversity) trajectories:
each method's diversity at matched alignment and alignment at matched diversity relative to the
baseline (interpolated along each trajectory, averaged over the shared levels, then over seeds),
and the Pareto front of all checkpoints.
"""

from __future__ import annotations

import csv
import json
import math
import platform
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from drift.build import build_trainer
from drift.config import DriftConfig, describe_validation_error, load_config
from drift.errors import ConfigError
from drift.evaluation.matching import matched_comparison, pareto_front
from drift.plots import trajectory_plot


class BenchConfig(BaseModel):
    """configs/bench/*.yaml: the base run configuration and each method as overrides of it."""

    model_config = ConfigDict(extra="forbid")
    base_config: Path
    iterations: int = Field(60, ge=1)
    eval_every: int = Field(5, ge=1)
    levels: int = Field(5, ge=1, description="matched levels per comparison")
    baseline: str = "grpo"
    base_overrides: dict[str, Any] = Field(default_factory=dict)
    methods: dict[str, dict[str, Any]] = Field(..., min_length=2)

    @model_validator(mode="after")
    def _baseline_listed(self):
        if self.baseline not in self.methods:
            raise ValueError(f"baseline '{self.baseline}' is not one of the methods ({', '.join(self.methods)})")
        return self

    def run_config(self, base: DriftConfig, method: str, seed: int) -> DriftConfig:
        """The run configuration of one method and seed: the base plus the method's overrides."""
        return base.with_overrides({**self.methods[method], "run.seed": seed, "train.iterations": self.iterations,
                                    "eval.every": self.eval_every})


def load_bench_config(path: str | Path, overrides: dict[str, Any] | None = None,
                      schema: type[BenchConfig] = BenchConfig) -> tuple[BenchConfig, DriftConfig]:
    """The benchmark config (a ``schema``) and its validated base run config; every method's
    overrides are validated up front, so a typo fails before hours of training."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"benchmark configuration {path} does not exist")
    try:
        bench = schema.model_validate({**(yaml.safe_load(path.read_text()) or {}), **(overrides or {})})
    except ValidationError as err:
        raise ConfigError(describe_validation_error(err, str(path))) from None
    base = load_config(bench.base_config, bench.base_overrides)
    for name in bench.methods:
        try:
            bench.run_config(base, name, seed=0)
        except ConfigError as err:
            raise ConfigError(f"method '{name}' in {path}: {err}") from None
    return bench, base


class NullTracker:
    """Tracking interface of the benchmark; the MLflow adapter lives in steps/tracking.py."""

    @contextmanager
    def run(self, name: str, params: dict, nested: bool = False):
        yield

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        pass

    def log_artifact(self, path: str | Path) -> None:
        pass


def _mean_over_levels(rows: list[dict]) -> float:
    gains = [r["gain"] for r in rows if math.isfinite(r["gain"])]
    return float(np.mean(gains)) if gains else math.nan


def _stats(values: list[float]) -> dict:
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return {"mean": math.nan, "std": math.nan, "min": math.nan, "per_seed": values}
    return {"mean": float(np.mean(finite)), "std": float(np.std(finite)), "min": float(np.min(finite)),
            "per_seed": values}


def mean_trajectory(runs: dict[int, list[dict]]) -> list[dict]:
    """Checkpoint-wise mean over seeds (all runs share the evaluation schedule)."""
    per_seed = list(runs.values())
    return [{"iteration": pts[0]["iteration"],
             **{k: float(np.mean([p[k] for p in pts])) for k in ("alignment", "diversity", "vendi")}}
            for pts in zip(*per_seed)]


def analyse(trajectories: dict[str, dict[int, list[dict]]], baseline: str, levels: int) -> dict:
    base_runs = trajectories[baseline]
    table = []
    for name, runs in trajectories.items():
        div = [_mean_over_levels(matched_comparison(runs[s], base_runs[s], levels, "alignment", "diversity"))
               for s in sorted(runs)]
        ali = [_mean_over_levels(matched_comparison(runs[s], base_runs[s], levels, "diversity", "alignment"))
               for s in sorted(runs)]
        final = [runs[s][-1] for s in sorted(runs)]
        table.append({
            "method": name,
            "diversity_gain_at_matched_alignment": _stats(div),
            "alignment_gain_at_matched_diversity": _stats(ali),
            "final_alignment": _stats([f["alignment"] for f in final]),
            "final_diversity": _stats([f["diversity"] for f in final]),
            "final_vendi": _stats([f["vendi"] for f in final]),
        })
    means = {name: mean_trajectory(runs) for name, runs in trajectories.items()}
    points = [(name, p) for name, traj in means.items() for p in traj[1:]]
    front = [points[i] for i in pareto_front([(p["alignment"], p["diversity"]) for _, p in points])]
    return {"table": table, "mean_trajectories": means,
            "pareto_front": [{"method": n, **p} for n, p in front]}


def _fmt(stat: dict, pct: bool) -> str:
    if not math.isfinite(stat["mean"]):
        return "n/a"
    scale, unit = (100, "%") if pct else (1, "")
    return f"{scale * stat['mean']:+.1f}{unit} ± {scale * stat['std']:.1f}" if pct else \
        f"{stat['mean']:.4f} ± {stat['std']:.4f}"


def write_outputs(out: Path, result: dict) -> None:
    analysis = result["analysis"]
    (out / "trajectories.json").write_text(json.dumps(result["trajectories"], indent=2))
    with (out / "table.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["method", "diversity_gain_mean", "diversity_gain_std", "diversity_gain_min", "alignment_gain_mean",
                    "alignment_gain_std", "final_alignment", "final_diversity", "final_vendi"])
        for r in analysis["table"]:
            d, a = r["diversity_gain_at_matched_alignment"], r["alignment_gain_at_matched_diversity"]
            w.writerow([r["method"], d["mean"], d["std"], d["min"], a["mean"], a["std"], r["final_alignment"]["mean"],
                        r["final_diversity"]["mean"], r["final_vendi"]["mean"]])
    lines = [
        f"| method | diversity at matched alignment vs {result['baseline']} | per seed | "
        f"alignment at matched diversity vs {result['baseline']} | final alignment | final diversity | final Vendi |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in analysis["table"]:
        d = r["diversity_gain_at_matched_alignment"]
        per_seed = ", ".join("n/a" if not math.isfinite(v) else f"{100 * v:+.0f}%" for v in d["per_seed"])
        lines.append(f"| {r['method']} | {_fmt(d, True)} | {per_seed} | {_fmt(r['alignment_gain_at_matched_diversity'], True)}"
                     f" | {_fmt(r['final_alignment'], False)} | {_fmt(r['final_diversity'], False)} | "
                     f"{_fmt(r['final_vendi'], False)} |")
    lines += ["", "Pareto front of the seed-averaged checkpoints (alignment up, diversity up):", "",
              "| method | iteration | alignment | diversity |", "|---|---|---|---|"]
    lines += [f"| {p['method']} | {p['iteration']} | {p['alignment']:.3f} | {p['diversity']:.4f} |"
              for p in analysis["pareto_front"]]
    (out / "table.md").write_text("\n".join(lines) + "\n")
    reference = next(iter(analysis["mean_trajectories"].values()))[0]
    trajectory_plot(analysis["mean_trajectories"], out / "pareto.png", reference=reference,
                    title=f"{result['iterations']} iterations, mean of {result['seeds']} seed(s)")


def run_benchmark(bench: BenchConfig, base: DriftConfig, seeds: int, out_dir: str | Path, tracker=None,
                  progress: bool = True) -> dict:
    tracker = tracker or NullTracker()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    trajectories: dict[str, dict[int, list[dict]]] = {name: {} for name in bench.methods}
    with tracker.run("pareto-benchmark", {"seeds": seeds, "iterations": bench.iterations,
                                          "methods": ",".join(bench.methods)}):
        for seed in range(seeds):
            for name in bench.methods:
                cfg = bench.run_config(base, name, seed)
                if progress:
                    print(f"[{time.perf_counter() - start:6.0f} s] {name}, seed {seed}", flush=True)
                with tracker.run(f"{name}/seed{seed}", {"method": name, "seed": seed, **bench.methods[name]}, nested=True):
                    trajectories[name][seed] = build_trainer(cfg).train(callback=tracker.log_metrics, progress=progress)
        result = {
            "baseline": bench.baseline, "seeds": seeds, "iterations": bench.iterations,
            "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads",
            "trajectories": trajectories, "analysis": analyse(trajectories, bench.baseline, bench.levels),
        }
        result["wall_seconds"] = time.perf_counter() - start
        write_outputs(out, result)
        (out / "summary.json").write_text(json.dumps({k: v for k, v in result.items() if k != "trajectories"}, indent=2))
        for name in ("table.md", "table.csv", "pareto.png", "trajectories.json", "summary.json"):
            tracker.log_artifact(out / name)
    return result


__all__ = ["BenchConfig", "NullTracker", "load_bench_config", "run_benchmark"]

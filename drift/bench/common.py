"""What the training benchmarks (pareto.py, efficiency.py) share: seeds, where a trajectory reaches
an alignment level, means over seeds, the tracker interface, the published outputs, and the
progress a person watching a long benchmark reads."""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Iterable
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

import numpy as np
from tqdm.auto import tqdm

from drift.config import BenchConfig, DriftConfig
from drift.errors import ConfigError
from drift.logs import quiet_libraries


def parse_seeds(text: str) -> list[int]:
    """``--seeds``: a count N (the seeds 0 .. N-1) or an explicit comma-separated list ('100,101,102';
    one explicit seed as '100,')."""
    try:
        seeds = [int(x) for x in text.split(",") if x.strip()] if "," in text else list(range(int(text)))
    except ValueError:
        raise ConfigError(f"--seeds expects a count (3) or a comma-separated list of seeds (100,101,102), "
                          f"got {text!r}") from None
    if not seeds or any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds needs at least one seed, all distinct and non-negative, got {text!r}")
    return seeds


def reach(trajectory: list[dict], level: float, keys: Iterable[str]) -> dict[str, float]:
    """Where a trajectory of checkpoints (in training order) reaches alignment ``level``: each of
    ``keys`` at the first checkpoint whose alignment is at or above ``level``, interpolated linearly
    with the checkpoint before it (whose alignment is below); the first checkpoint's values if it
    starts there; NaN throughout if it never gets there.

    This is the first crossing of the alignment as measured, not of its running maximum. The two
    checkpoints interpolated between are neighbours whose alignments bracket the level, so the
    iteration, compute and diversity returned belong to one stretch of training. After a dip, the
    running maximum would interpolate from the earlier peak's alignment with the dipped checkpoint's
    iteration and diversity, pairing values the run never had together. (The Pareto figures in
    docs/ were computed this way; the efficiency figures there are the same either way.)"""
    keys = list(keys)
    first = next((i for i, p in enumerate(trajectory) if p["alignment"] >= level), None)
    if first is None:
        return {k: math.nan for k in keys}
    if first == 0:
        return {k: float(trajectory[0][k]) for k in keys}
    a, b = trajectory[first - 1], trajectory[first]
    w = (level - a["alignment"]) / (b["alignment"] - a["alignment"])
    return {k: float(a[k] + w * (b[k] - a[k])) for k in keys}


FIGURES = ("diversity", "vendi", "precision", "recall", "frechet")  # an evaluation's figures in one embedding


def further_embeddings(point: dict) -> list[str]:
    """The labels of the embeddings an evaluation checkpoint reports beside its headline one
    (eval.embeddings: metrics '<label>/diversity', ...)."""
    return [k.split("/")[0] for k in point if k.endswith("/diversity") and not k.startswith("reward/")]


def embedding_keys(point: dict, figures=FIGURES) -> list[str]:
    """The keys of ``figures`` a checkpoint has, in the headline embedding and then in each further one."""
    return [f"{p}{f}" for p in ["", *(f"{label}/" for label in further_embeddings(point))] for f in figures
            if f"{p}{f}" in point]


def embeddings_used(bench: BenchConfig, base: DriftConfig) -> dict:
    """The evaluation embedding, the further ones by label, and each method's shaping potential
    ('off' where shaping is off)."""
    shaping = {}
    for name in bench.methods:
        cfg = bench.run_config(base, name, seed=0)
        sh = cfg.drift.shaping
        shaping[name] = (sh.embedding or cfg.embedding).name if sh.enabled else "off"
    return {"measured": base.embedding.name, "further": {k: e.name for k, e in base.eval.embeddings.items()},
            "shaping": shaping}


def embeddings_line(embeddings: dict) -> str:
    """Which embedding measured the figures and which one each method's shaping potential read."""
    further = ", ".join(f"{label} ({name})" for label, name in embeddings["further"].items())
    shaped = ", ".join(f"{m}: {name}" for m, name in embeddings["shaping"].items())
    return (f"Diversity and coverage measured in {embeddings['measured']} (the evaluation embedding)"
            + (f", and beside it in {further}" if further else "") + f". Shaping potential: {shaped}.")


def mean_trajectory(runs: dict[int, list[dict]], keys: Iterable[str]) -> list[dict]:
    """Checkpoint-wise mean over seeds of each of ``keys`` that every run has; the runs share the
    evaluation schedule, whose iterations are kept."""
    per_seed = list(runs.values())
    keys = [k for k in keys if all(k in t[0] for t in per_seed)]
    return [{"iteration": pts[0]["iteration"], **{k: float(np.mean([p[k] for p in pts])) for k in keys}}
            for pts in zip(*per_seed)]


def finite_stats(values: list[float]) -> dict:
    """Mean, standard deviation and minimum over the seeds with a finite value (NaN if none), and
    the values of all seeds."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return {"mean": math.nan, "std": math.nan, "min": math.nan, "per_seed": values}
    return {"mean": float(np.mean(finite)), "std": float(np.std(finite)), "min": float(np.min(finite)),
            "per_seed": values}


def ratio(value: float, baseline: float) -> float:
    """``value / baseline``; NaN where the baseline is 0."""
    return value / baseline if baseline else math.nan


class NullTracker:
    """Tracking interface of the benchmarks (runs, metrics, artifacts), recording nothing; the
    MLflow adapter lives in mlops/tracking.py."""

    @contextmanager
    def run(self, name: str, params: dict, nested: bool = False):
        yield

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        pass

    def log_artifact(self, path: str | Path) -> None:
        pass


def publish(out: Path, result: dict, write_outputs, plot: str, tracker) -> None:
    """A benchmark's outputs: its tables and ``plot`` (by ``write_outputs``), the trajectories, and
    summary.json (everything but the trajectories); all logged to the tracker."""
    write_outputs(out, result)
    (out / "trajectories.json").write_text(json.dumps(result["trajectories"], indent=2))
    (out / "summary.json").write_text(json.dumps({k: v for k, v in result.items() if k != "trajectories"}, indent=2))
    for name in ("table.md", "table.csv", plot, "trajectories.json", "summary.json"):
        tracker.log_artifact(out / name)


class Progress:
    """What a benchmark has done and about how long it has left: runs done, iterations done across
    all runs (those training in worker processes included), the runs in flight, and the time left
    at the average rate so far. A tqdm bar where ``stream`` is a terminal; otherwise lines (for a
    log or a pipe): one as each run starts and ends, and one at most every ``every`` seconds between.

    ``planned`` is each run's budget in iterations. A run that trains on past it (the Pareto
    benchmark's extension) adds its extra iterations as it goes, so the estimate does not foresee
    extensions; a run recorded earlier and reused (``reuse``) leaves the work to do. Nothing is shown
    unless ``enabled``; when it is, the libraries' own bars (a pipeline's loading, once per run) are
    silenced, as they would break the bar and the lines."""

    def __init__(self, planned: dict[str, int], enabled: bool = True, every: float = 30.0,
                 stream: TextIO | None = None):
        self.planned = dict(planned)
        self.runs = len(planned)
        self.at: dict[str, int] = {}  # iterations each run that has started has reached
        self.done: set[str] = set()
        self.enabled, self.every = enabled, every
        self.stream = stream or sys.stderr
        if enabled:
            quiet_libraries()
        self.start = self.last_line = time.perf_counter()
        self.bar = None
        if enabled and self.stream.isatty():
            self.bar = tqdm(total=self._total(), unit="it", file=self.stream, smoothing=0, dynamic_ncols=True)

    def _total(self) -> int:
        return sum(self.planned.values())

    def _trained(self) -> int:
        return sum(self.at.values())

    def _running(self) -> str:
        return ", ".join(f"{r} at {i}" for r, i in self.at.items() if r not in self.done)

    def status(self) -> str:
        """Runs done, iterations done of those planned, the time left, and the runs in flight."""
        n, total = self._trained(), self._total()
        elapsed = time.perf_counter() - self.start
        left = "?" if not n else tqdm.format_interval((total - n) * elapsed / n)
        running = self._running()
        return (f"runs {len(self.done)}/{self.runs} done, iterations {n}/{total}, about {left} left"
                + (f"; running {running}" if running else ""))

    def message(self, text: str) -> None:
        if not self.enabled:
            return
        line = f"[{time.perf_counter() - self.start:6.0f} s] {text}"
        if self.bar is not None:
            self.bar.write(line, file=self.stream)
        else:
            print(line, file=self.stream, flush=True)

    def refresh(self, force: bool = False) -> None:
        """Show the status: the bar at once, a line if ``every`` seconds have passed (or ``force``)."""
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.total, self.bar.n = self._total(), self._trained()
            self.bar.set_description(f"runs {len(self.done)}/{self.runs}", refresh=False)
            self.bar.set_postfix_str(self._running(), refresh=False)
            self.bar.refresh()
        elif force or time.perf_counter() - self.last_line >= self.every:
            self.last_line = time.perf_counter()
            self.message(self.status())

    def reuse(self, run_id: str) -> None:
        """A run recorded earlier: done, with nothing to train."""
        self.planned.pop(run_id, None)
        self.done.add(run_id)

    def advance(self, run_id: str, iteration: int) -> None:
        """``run_id`` has trained ``iteration`` iterations (0 when it starts)."""
        if run_id not in self.at:
            self.at[run_id] = 0
            self.message(f"{run_id} started")
        self.at[run_id] = max(self.at[run_id], iteration)
        self.planned[run_id] = max(self.planned.get(run_id, 0), iteration)
        self.refresh()

    def finish(self, run_id: str, seconds: float) -> None:
        self.done.add(run_id)
        self.message(f"{run_id} done in {seconds:.0f} s")
        self.refresh(force=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


__all__ = ["FIGURES", "NullTracker", "Progress", "embedding_keys", "embeddings_line", "embeddings_used",
           "finite_stats", "further_embeddings",
           "mean_trajectory", "parse_seeds", "publish", "ratio", "reach"]

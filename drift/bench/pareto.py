"""`drift bench pareto`: DRIFT against GRPO baselines and ablations on equal budgets and seeds.

Every method trains from the same base model with the same iterations, group size, prompts and
rollout seeds (all drawn from (seed, iteration)), and is evaluated every ``eval_every`` iterations
on the same held-out prompts and evaluation seeds. From the trajectories, within the budget of
``iterations``: each method's diversity at matched alignment and alignment at matched diversity
relative to the baseline (interpolated along each trajectory, averaged over the shared levels, then
over seeds), its final metrics, and the Pareto front of all checkpoints. Beyond it: where each method
reaches fractions of the baseline's final alignment (training on past the budget, up to
``max_iterations``, where it needs to), after how many iterations, and its diversity and coverage
there against the baseline's when it passed the same level.
"""

from __future__ import annotations

import csv
import json
import math
import multiprocessing
import platform
import queue
import time
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack, closing
from pathlib import Path

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
from drift.build import build_trainer
from drift.config import DriftConfig, ParetoBenchConfig
from drift.evaluation.matching import matched_comparison, pareto_front
from drift.evaluation.protocol import fingerprint
from drift.logs import quiet_libraries
from drift.plots import trajectory_plot


def _mean_over_levels(rows: list[dict], key: str = "gain") -> float:
    return finite_stats([r[key] for r in rows])["mean"]


COVERAGE = ("precision", "recall", "frechet")


def _prefixes(point: dict) -> list[str]:
    """'' for the headline embedding, then '<label>/' for each further one."""
    return ["", *(f"{label}/" for label in further_embeddings(point))]


def within_budget(trajectory: list[dict], iterations: int) -> list[dict]:
    return [p for p in trajectory if p["iteration"] <= iterations]


def reach_table(run: list[dict], baseline: list[dict], iterations: int, fractions: list[float]) -> dict[str, float]:
    """For each fraction f of the baseline's final alignment A (at ``iterations``): the iterations the
    method needs to reach f A, its diversity and coverage there, and their ratio to the baseline's
    when the baseline passed the same level."""
    final = within_budget(baseline, iterations)[-1]["alignment"]
    metrics = embedding_keys(run[0], ("diversity", *COVERAGE))
    out = {}
    for f in fractions:
        mine, theirs = reach(run, f * final, ["iteration", *metrics]), reach(baseline, f * final, metrics)
        tag = f"{round(100 * f)}"
        out[f"iterations_to_{tag}"] = mine["iteration"]
        for k in metrics:
            out[f"{k}_at_{tag}"] = mine[k]
            out[f"{k}_ratio_at_{tag}"] = ratio(mine[k], theirs[k])
    return out


def compare(run: list[dict], base_run: list[dict], iterations: int, levels: int, fractions: list[float]) -> dict:
    """One method against the baseline on one seed: at matched levels in the headline embedding,
    diversity at matched alignment in each further one too, and the final figures in all."""
    mine, theirs = within_budget(run, iterations), within_budget(base_run, iterations)
    zero = run[0]["alignment"]  # the base model's alignment: both runs start from it
    final = mine[-1]
    out = {
        "alignment_gain_at_matched_diversity": _mean_over_levels(
            matched_comparison(mine, theirs, levels, "diversity", "alignment")),
        "alignment_improvement_gain_at_matched_diversity": _mean_over_levels(
            matched_comparison(mine, theirs, levels, "diversity", "alignment", zero=zero), "gain_over_zero"),
        "final_alignment": final["alignment"],
    }
    for p in _prefixes(final):
        out[f"{p}diversity_gain_at_matched_alignment"] = _mean_over_levels(
            matched_comparison(mine, theirs, levels, y=f"{p}diversity"))
        out.update({f"{p}final_{k}": final[f"{p}{k}"] for k in FIGURES if f"{p}{k}" in final})
    return {**out, **reach_table(run, base_run, iterations, fractions)}


def analyse(trajectories: dict[str, dict[int, list[dict]]], baseline: str, levels: int, iterations: int,
            fractions: list[float]) -> dict:
    base_runs = trajectories[baseline]
    table = []
    for name, runs in trajectories.items():
        per_seed = [compare(runs[s], base_runs[s], iterations, levels, fractions) for s in sorted(runs)]
        table.append({"method": name, **{k: finite_stats([c[k] for c in per_seed]) for k in per_seed[0]}})
    first = trajectories[baseline][min(base_runs)][0]
    means = {name: mean_trajectory({s: within_budget(t, iterations) for s, t in runs.items()},
                                   ["alignment", *embedding_keys(first)])
             for name, runs in trajectories.items()}
    points = [(name, p) for name, traj in means.items() for p in traj[1:]]
    front = [points[i] for i in pareto_front([(p["alignment"], p["diversity"]) for _, p in points])]
    return {"table": table, "mean_trajectories": means,
            "pareto_front": [{"method": n, **p} for n, p in front]}


def _pct(stat: dict) -> str:
    return "n/a" if not math.isfinite(stat["mean"]) else f"{100 * stat['mean']:+.1f}% ± {100 * stat['std']:.1f}"


def _num(stat: dict, digits: int = 4) -> str:
    return "n/a" if not math.isfinite(stat["mean"]) else f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}"


def _per_seed(stat: dict, fmt) -> str:
    return ", ".join("n/a" if not math.isfinite(v) else fmt(v) for v in stat["per_seed"])


def markdown_tables(result: dict) -> list[str]:
    """The benchmark's tables: matched comparisons and final metrics within the budget in the
    headline embedding, then the reach levels, then the same in each further embedding, then the
    Pareto front."""
    analysis, base = result["analysis"], result["baseline"]
    rows = analysis["table"]
    has = lambda key: key in rows[0]  # noqa: E731
    cov = [k for k in COVERAGE if has(f"final_{k}")]
    further = {label: name for label, name in result["embeddings"]["further"].items()
               if has(f"{label}/final_diversity")}
    pct = lambda v: f"{100 * v:+.0f}%"  # noqa: E731
    lines = [
        embeddings_line(result["embeddings"]),
        "",
        f"Seeds {', '.join(map(str, result['seeds']))}; {result['iterations']} iterations; gains relative to "
        f"{base} on the same seed (mean ± std over seeds). Alignment at matched diversity as the ratio of "
        "alignments, and as the ratio of improvements over the base model (iteration 0).",
        "",
        "| method | diversity at matched alignment | per seed | alignment at matched diversity | per seed | "
        "improvement at matched diversity | final alignment | final diversity | final Vendi | "
        + "".join(f"final {k} | " for k in cov),
        "|---" * (9 + len(cov)) + "|",
    ]
    for r in rows:
        lines.append(
            f"| {r['method']} | {_pct(r['diversity_gain_at_matched_alignment'])} | "
            f"{_per_seed(r['diversity_gain_at_matched_alignment'], pct)} | "
            f"{_pct(r['alignment_gain_at_matched_diversity'])} | "
            f"{_per_seed(r['alignment_gain_at_matched_diversity'], pct)} | "
            f"{_pct(r['alignment_improvement_gain_at_matched_diversity'])} | {_num(r['final_alignment'], 2)} | "
            f"{_num(r['final_diversity'])} | {_num(r['final_vendi'], 3)} | "
            + "".join(f"{_num(r[f'final_{k}'], 3)} | " for k in cov))
    for f in result["reach_fractions"]:
        tag = f"{round(100 * f)}"
        lines += ["", f"Reaching {tag}% of {base}'s final alignment (same seed; trained past {result['iterations']} "
                  f"iterations where needed, up to {result['max_iterations'] or result['iterations']}): the iterations "
                  f"it takes, and the diversity and coverage there as a ratio to {base}'s when it passed the same "
                  "level (diversity also in " + (", ".join(further) or "no other embedding") + ").",
                  "", "| method | iterations | per seed | diversity | x " + base + " | per seed | "
                  + "".join(f"{k} | x {base} | " for k in cov) + "".join(f"{label} diversity x {base} | "
                                                                          for label in further),
                  "|---" * (6 + 2 * len(cov) + len(further)) + "|"]
        for r in rows:
            ratio = r[f"diversity_ratio_at_{tag}"]
            lines.append(
                f"| {r['method']} | {_num(r[f'iterations_to_{tag}'], 1)} | "
                f"{_per_seed(r[f'iterations_to_{tag}'], lambda v: f'{v:.0f}')} | {_num(r[f'diversity_at_{tag}'])} | "
                f"{_num(ratio, 2)} | {_per_seed(ratio, lambda v: f'{v:.2f}x')} | "
                + "".join(f"{_num(r[f'{k}_at_{tag}'], 3)} | {_num(r[f'{k}_ratio_at_{tag}'], 2)} | " for k in cov)
                + "".join(f"{_num(r[f'{label}/diversity_ratio_at_{tag}'], 2)} | " for label in further))
    for label, name in further.items():
        lines += ["", f"The same runs measured in {label} ({name}): diversity at matched alignment (against {base}, "
                  "same seed) and the final figures.", "",
                  "| method | diversity at matched alignment | per seed | final diversity | final Vendi | "
                  + "".join(f"final {k} | " for k in cov), "|---" * (5 + len(cov)) + "|"]
        for r in rows:
            gain = r[f"{label}/diversity_gain_at_matched_alignment"]
            lines.append(f"| {r['method']} | {_pct(gain)} | {_per_seed(gain, pct)} | "
                         f"{_num(r[f'{label}/final_diversity'])} | {_num(r[f'{label}/final_vendi'], 3)} | "
                         + "".join(f"{_num(r[f'{label}/final_{k}'], 3)} | " for k in cov))
    lines += ["", "Pareto front of the seed-averaged checkpoints within the budget (alignment up, diversity up):", "",
              "| method | iteration | alignment | diversity |", "|---|---|---|---|"]
    lines += [f"| {p['method']} | {p['iteration']} | {p['alignment']:.3f} | {p['diversity']:.4f} |"
              for p in analysis["pareto_front"]]
    return lines


def write_outputs(out: Path, result: dict) -> None:
    analysis = result["analysis"]
    keys = [k for k in analysis["table"][0] if k != "method"]
    with (out / "table.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["method", "seeds", *[f"{k}_{s}" for k in keys for s in ("mean", "std")]])
        for r in analysis["table"]:
            w.writerow([r["method"], " ".join(map(str, result["seeds"])),
                        *[r[k][s] for k in keys for s in ("mean", "std")]])
    (out / "table.md").write_text("\n".join(markdown_tables(result)) + "\n")
    reference = next(iter(analysis["mean_trajectories"].values()))[0]
    embeddings = result["embeddings"]
    panels = {f"{p}diversity": f"in {embeddings['further'][p[:-1]] if p else embeddings['measured']}"
              for p in _prefixes(reference)}
    trajectory_plot(analysis["mean_trajectories"], out / "pareto.png", reference=reference, panels=panels,
                    title=f"{result['iterations']} iterations, mean of seeds {', '.join(map(str, result['seeds']))}")


def train_run(bench: ParetoBenchConfig, cfg: DriftConfig, target: float | None, callback) -> list[dict]:
    """One method on one seed for the budget; then, if ``target`` is given and not reached, on
    ``eval_every`` iterations at a time until its alignment reaches it or ``max_iterations``."""
    trainer = build_trainer(cfg)
    trajectory = trainer.train(callback=callback)
    cap = bench.max_iterations or bench.iterations
    while target is not None and max(p["alignment"] for p in trajectory) < target and trainer.iteration < cap:
        trajectory = trainer.train(callback=callback, until=min(trainer.iteration + bench.eval_every, cap))
    return trajectory


def _run_key(cfg: DriftConfig, target: float | None, bench: ParetoBenchConfig) -> str:
    """What determines a run's trajectory: its run configuration, with the files it names (base
    model, prompts, reward checkpoints) by content, and how far it trains on."""
    config = cfg.model_dump(mode="json")
    del config["run"]["output_dir"]  # where checkpoints would go, not what the run computes
    return json.dumps({"config": fingerprint(config), "target": target, "eval_every": bench.eval_every,
                       "max_iterations": bench.max_iterations}, sort_keys=True)


def load_runs(out: Path) -> dict:
    """Runs recorded in ``out`` by an earlier (possibly interrupted) benchmark, by 'method/seed'."""
    path = out / "runs.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _train_job(run_id: str, bench: ParetoBenchConfig, cfg: DriftConfig, target: float | None, report) -> dict:
    """One run, in this process or a worker's: its trajectory, its per-iteration metrics (logged to
    the tracker by the parent) and its training time. ``report(run_id, iteration)`` as it starts
    (iteration 0) and after every iteration."""
    metrics: list[tuple[int, dict]] = []

    def callback(values: dict[str, float], iteration: int) -> None:
        metrics.append((iteration, values))
        report(run_id, iteration)

    start = time.perf_counter()
    report(run_id, 0)
    trajectory = train_run(bench, cfg, target, callback)
    return {"trajectory": trajectory, "metrics": metrics, "seconds": time.perf_counter() - start}


_reports = None  # in a worker process: the queue its runs report their iterations to


def _start_worker(reports) -> None:
    global _reports
    _reports = reports
    quiet_libraries()  # the worker's output goes to the parent's stream, between its progress lines


def _worker_job(run_id: str, bench: ParetoBenchConfig, cfg: DriftConfig, target: float | None, threads: int) -> dict:
    """``_train_job`` in a worker process with ``threads`` torch threads, reporting to the parent;
    the run's reports end with (run id, None)."""
    torch.set_num_threads(threads)
    try:
        return _train_job(run_id, bench, cfg, target, lambda *report: _reports.put(report))
    finally:
        _reports.put((run_id, None))


def _runs_to_train(bench: ParetoBenchConfig, base: DriftConfig, seeds: list[int], methods: list[str],
                   trajectories: dict, recorded: dict) -> dict:
    """The runs of ``methods`` on ``seeds`` that must train, as run id -> (method, seed, run key, run
    configuration, reach target); the ones ``recorded`` with the same key go into ``trajectories``."""
    pending = {}
    for name in methods:
        for seed in seeds:
            cfg = bench.run_config(base, name, seed)
            target = None
            if name != bench.baseline and bench.max_iterations:
                target = max(bench.reach_fractions) * within_budget(
                    trajectories[bench.baseline][seed], bench.iterations)[-1]["alignment"]
            key, run_id = _run_key(cfg, target, bench), f"{name}/seed{seed}"
            if run_id in recorded and recorded[run_id]["key"] == key:
                trajectories[name][seed] = recorded[run_id]["trajectory"]
            else:
                pending[run_id] = (name, seed, key, cfg, target)
    return pending


def _train(bench: ParetoBenchConfig, pending: dict, pool: ProcessPoolExecutor | None, reports, workers: int,
           progress: Progress):
    """(run id, ``_train_job`` result) of each pending run as it finishes: one after the other in this
    process, or all at once in ``pool`` of ``workers`` processes, whose iterations come back on
    ``reports``; either way shown by ``progress``."""
    if not pending:  # a resumed benchmark with this phase recorded
        return
    if pool is None:
        for run_id, (*_, cfg, target) in pending.items():
            yield run_id, _train_job(run_id, bench, cfg, target, progress.advance)
        return
    # fewer runs than workers (the baseline on one seed): each takes a larger share of the threads
    threads = max(1, torch.get_num_threads() // min(workers, len(pending)))
    futures = {pool.submit(_worker_job, run_id, bench, cfg, target, threads): run_id
               for run_id, (*_, cfg, target) in pending.items()}
    reported = set()  # runs whose reports have all arrived: a result is yielded after its run's reports
    while futures:
        try:
            run_id, iteration = reports.get(timeout=1.0)
            if iteration is None:
                reported.add(run_id)
            else:
                progress.advance(run_id, iteration)
        except queue.Empty:
            progress.refresh()
        for future in [f for f, r in futures.items() if f.done() and (r in reported or f.exception())]:
            yield futures.pop(future), future.result()


def run_benchmark(bench: ParetoBenchConfig, base: DriftConfig, seeds: list[int], out_dir: str | Path, tracker=None,
                  progress: bool = True, resume: bool = False, workers: int = 1) -> dict:
    """Every method on every seed (the baseline on every seed first, since the others may train on
    to its final alignment), the analysis, and the outputs in ``out_dir``. Each finished run is
    recorded in ``out_dir``/runs.json with its configuration; with ``resume``, runs recorded there
    with the same configuration and extension are reused instead of trained again. With
    ``workers`` > 1, runs train in that many processes at once, sharing torch's threads equally (the
    same runs as one at a time, up to the rounding differences of another thread count). With
    ``progress``, the runs done, the iterations done across workers and the time left on stderr
    (``drift.bench.common.Progress``)."""
    tracker = tracker or NullTracker()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    recorded = load_runs(out) if resume else {}
    trajectories: dict[str, dict[int, list[dict]]] = {name: {} for name in bench.methods}
    with ExitStack() as stack:
        shown = stack.enter_context(closing(Progress(
            {f"{name}/seed{seed}": bench.iterations for name in bench.methods for seed in seeds}, progress)))
        pool = reports = None
        if workers > 1:
            context = multiprocessing.get_context("spawn")
            reports = context.Queue()
            pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_start_worker, initargs=(reports,))
            stack.callback(pool.shutdown, cancel_futures=True)  # an error or Ctrl-C drops the queued runs
        stack.enter_context(tracker.run("pareto-benchmark", {
            "seeds": ",".join(map(str, seeds)), "iterations": bench.iterations, "max_iterations": bench.max_iterations,
            "methods": ",".join(bench.methods), "workers": workers}))
        for phase in ([bench.baseline], [m for m in bench.methods if m != bench.baseline]):
            pending = _runs_to_train(bench, base, seeds, phase, trajectories, recorded)
            reused = [f"{name}/seed{seed}" for name in phase for seed in seeds if f"{name}/seed{seed}" not in pending]
            for run_id in reused:
                shown.reuse(run_id)
            if reused:
                shown.message(f"reusing {', '.join(reused)} from {out / 'runs.json'}")
            if pending:
                shown.message(f"training {', '.join(pending)} ({workers} at a time)")
            for run_id, run in _train(bench, pending, pool, reports, workers, shown):
                name, seed, key, *_ = pending[run_id]
                with tracker.run(run_id, {"method": name, "seed": seed, **bench.methods[name]}, nested=True):
                    for iteration, metrics in run["metrics"]:
                        tracker.log_metrics(metrics, iteration)
                trajectories[name][seed] = run["trajectory"]
                recorded[run_id] = {"key": key, "seconds": run["seconds"], "trajectory": run["trajectory"]}
                (out / "runs.json").write_text(json.dumps(recorded))
                shown.finish(run_id, run["seconds"])
        result = {
            "baseline": bench.baseline, "seeds": seeds, "iterations": bench.iterations,
            "max_iterations": bench.max_iterations, "reach_fractions": bench.reach_fractions,
            "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads shared by {workers} workers",
            "embeddings": embeddings_used(bench, base),
            "trajectories": trajectories,
            "analysis": analyse(trajectories, bench.baseline, bench.levels, bench.iterations, bench.reach_fractions),
            # training time of the runs in the table, whether trained now or reused
            "run_seconds": sum(recorded[f"{n}/seed{s}"]["seconds"] for n in bench.methods for s in seeds),
        }
        result["wall_seconds"] = time.perf_counter() - start
        publish(out, result, write_outputs, "pareto.png", tracker)
    return result


__all__ = ["analyse", "compare", "run_benchmark", "write_outputs"]

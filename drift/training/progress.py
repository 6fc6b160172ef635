"""Progress of a training run as plain lines, for logs that are not a terminal (a pipeline step's
output, a file): where a progress bar would print hundreds of carriage returns, this prints one line
every tenth of the run and one per evaluation."""

from __future__ import annotations

import time


class ProgressLog:
    """A metrics callback ``(metrics, iteration)`` that prints 'iteration i/N: reward ..., diversity
    ...; s/iteration, about T left' every ``every`` iterations (default a tenth of the run) and at
    the last, and the figures of each evaluation."""

    def __init__(self, total: int, every: int | None = None, print_fn=print):
        self.total = total
        self.every = every or max(1, total // 10)
        self.print = print_fn
        self.started: tuple[float, int] | None = None  # (time, iteration) of the first report

    def __call__(self, metrics: dict[str, float], iteration: int) -> None:
        if "alignment" in metrics or "eval/alignment" in metrics:
            figures = {k.removeprefix("eval/"): v for k, v in metrics.items()}
            self.print(f"evaluation at iteration {iteration}: alignment {figures['alignment']:.3f}, "
                       f"diversity {figures['diversity']:.4f}", flush=True)
            return
        done = iteration  # the trainer reports an iteration's metrics with the count done
        now = time.monotonic()
        if self.started is None:
            self.started = (now - metrics.get("time_iteration", 0.0), done - 1)
        if done % self.every and done != self.total:
            return
        start_time, start_iteration = self.started
        per_iteration = (now - start_time) / (done - start_iteration)
        self.print(f"iteration {done}/{self.total}: reward {metrics['reward_mean']:.3f}, diversity "
                   f"{metrics['diversity']:.4f}; {per_iteration:.1f} s/iteration, about "
                   f"{per_iteration * (self.total - done):.0f} s left", flush=True)

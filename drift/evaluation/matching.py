"""Compare (alignment, diversity) trajectories: values at matched levels, and the Pareto front."""

from __future__ import annotations

import math

import numpy as np


def at_level(xs: list[float], ys: list[float], level: float) -> float:
    """y where the trajectory first crosses x = ``level``, in either direction (diversity falls as
    training goes on), linearly interpolated between the two checkpoints that bracket it (in
    training order); NaN if the trajectory never gets there. Where a run reaches an alignment level
    is ``drift.bench.common.reach``."""
    for i in range(len(xs) - 1):
        x0, x1 = xs[i], xs[i + 1]
        if (x0 - level) * (x1 - level) <= 0:
            if x1 == x0:
                return float(ys[i])
            w = (level - x0) / (x1 - x0)
            return float(ys[i] + w * (ys[i + 1] - ys[i]))
    return math.nan


def shared_levels(a: list[float], b: list[float], count: int) -> list[float]:
    """``count`` evenly spaced levels inside the range both trajectories cover (empty if none)."""
    lo, hi = max(min(a), min(b)), min(max(a), max(b))
    if not lo < hi:
        return []
    return np.linspace(lo, hi, count + 2)[1:-1].tolist()


def relative_gain(method: float, baseline: float, zero: float = 0.0) -> float:
    """(method - baseline) / |baseline - zero|: the ratio (method - zero) / (baseline - zero) minus 1.
    With zero = 0 the ratio of the values; with zero = the base model's value, the ratio of the
    improvements over it (for scores such as a logit margin, which have no natural zero)."""
    return (method - baseline) / abs(baseline - zero) if baseline != zero else math.nan


def matched_comparison(method: list[dict], baseline: list[dict], count: int = 5,
                       x: str = "alignment", y: str = "diversity", zero: float | None = None) -> list[dict]:
    """At shared levels of ``x``: each trajectory's ``y`` there and the method's relative gain
    (``gain``), and with ``zero`` also the gain in improvement over it (``gain_over_zero``)."""
    mx, my = [p[x] for p in method], [p[y] for p in method]
    bx, by = [p[x] for p in baseline], [p[y] for p in baseline]
    rows = []
    for level in shared_levels(mx, bx, count):
        m, b = at_level(mx, my, level), at_level(bx, by, level)
        row = {x: level, f"{y}_method": m, f"{y}_baseline": b, "gain": relative_gain(m, b)}
        if zero is not None:
            row["gain_over_zero"] = relative_gain(m, b, zero)
        rows.append(row)
    return rows


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points not dominated in (x, y), both to be maximised, sorted by x."""
    front = [i for i, (x, y) in enumerate(points)
             if not any(x2 >= x and y2 >= y and (x2, y2) != (x, y) for x2, y2 in points)]
    return sorted(front, key=lambda i: points[i][0])

"""Hyperparameters that change over training iterations."""

from __future__ import annotations


def linear_schedule(iteration: int, start: float, end: float, iterations: int) -> float:
    """v(i) = start + (end - start) * min(i / iterations, 1): linear from ``start`` at iteration 0
    to ``end`` at ``iterations``, constant afterwards; ``start`` throughout when iterations = 0."""
    if iterations <= 0:
        return start
    return start + (end - start) * min(iteration / iterations, 1.0)

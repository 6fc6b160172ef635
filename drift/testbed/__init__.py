"""The embedded default: a miniature text-to-image testbed trained from the bundled digits."""

import torch


def deterministic_build() -> None:
    """Make a testbed build a function of its parameters and code on a given kind of CPU: one
    thread (a reduction's order, and with it its float result, depends on the thread count) and
    deterministic algorithms. DVC then sees the same outputs on every rebuild."""
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)

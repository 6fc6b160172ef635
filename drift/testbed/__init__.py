"""The embedded default: a miniature text-to-image testbed trained from the bundled digits."""

import os

import torch


def deterministic_build(threads: int) -> None:
    """Make a testbed build a function of its parameters and code on a given kind of CPU, so that
    DVC sees the same outputs on every rebuild there: a fixed number of threads (a reduction's
    order, and with it its float result, depends on the thread count, not on the cores that run
    them), MKL's conditional numerical reproducibility (run-to-run identical results for a fixed
    thread count; read when MKL first runs, so set before it does) and deterministic algorithms.

    Other kinds of CPU round differently (vector width, fused multiply-add, library code paths):
    measured, this machine's AVX-512, AVX2 and unvectorised kernels give three different sets of
    weights with the same accuracy and final loss, and even torch's unvectorised kernels with MKL
    in its compatible mode gave other weights on an emulated Intel Haswell than on the AMD host."""
    os.environ.setdefault("MKL_CBWR", "AUTO")
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)

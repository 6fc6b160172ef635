"""Sharding an iteration's samples over the processes accelerate launched.

Each process rolls out a shard of every iteration's samples (sample k goes to process k mod W), and
rewards and embeddings are gathered back into the whole batch, so that group statistics (subset
selection, shaping, advantages) are computed on whole groups whatever the process count. The
process group, devices and the collectives come from accelerate; without a launcher every
function is the single-process identity.
"""

from __future__ import annotations

import torch
from accelerate import PartialState
from accelerate.utils import gather


def world() -> tuple[int, int]:
    """(rank, world size) of this process."""
    state = PartialState()
    return state.process_index, state.num_processes


def is_main() -> bool:
    return world()[0] == 0


def shard(total: int) -> torch.Tensor:
    """This process's sample indices: rank, rank + W, rank + 2W, ... (sizes differ by at most one)."""
    rank, size = world()
    return torch.arange(rank, total, size)


def gather_samples(local: torch.Tensor, total: int) -> torch.Tensor:
    """The full batch (total, ...) from every process's shard (``local`` holds this rank's rows of
    ``shard(total)``); the same tensor on every process."""
    rank, size = world()
    if size == 1:
        return local
    longest = (total + size - 1) // size
    padded = local.new_zeros((longest, *local.shape[1:]))
    padded[: local.shape[0]] = local
    device = PartialState().device
    parts = gather(padded.to(device)).cpu().reshape(size, longest, *local.shape[1:])
    out = local.new_empty((total, *local.shape[1:]))
    for r in range(size):
        idx = torch.arange(r, total, size)
        out[idx] = parts[r, : len(idx)].to(out.dtype)
    return out


def mean_over_processes(stats: dict[str, float]) -> dict[str, float]:
    """Update statistics averaged over processes (minima and maxima reduced as such); every
    process must hold the same keys."""
    rank, size = world()
    if size == 1:
        return stats
    keys = sorted(stats)
    values = gather(torch.tensor([[stats[k] for k in keys]], dtype=torch.float64, device=PartialState().device)).cpu()
    reduce = {k: (values[:, j].min() if k.endswith("_min") else values[:, j].max() if k.endswith(("_max", "_abs_dev"))
                  else values[:, j].mean()) for j, k in enumerate(keys)}
    return {k: float(v) for k, v in reduce.items()}

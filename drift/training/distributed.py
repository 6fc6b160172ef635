"""Data parallelism over processes (``accelerate launch`` / torchrun): each process rolls out and
updates a shard of the iteration's samples, while group statistics (advantages, subset selection,
diversity shaping) are computed on whole groups gathered from all processes.

Without an initialised process group every function is the single-process identity.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def world() -> tuple[int, int]:
    """(rank, world size) of this process."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


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
    parts = [torch.empty_like(padded) for _ in range(size)]
    dist.all_gather(parts, padded.contiguous())
    out = local.new_empty((total, *local.shape[1:]))
    for r, part in enumerate(parts):
        idx = torch.arange(r, total, size)
        out[idx] = part[: len(idx)]
    return out


def average_gradients(params: list[torch.nn.Parameter]) -> None:
    """All-reduce gradients to their mean over processes (missing gradients count as zero)."""
    rank, size = world()
    if size == 1:
        return
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        dist.all_reduce(p.grad)
        p.grad /= size


def max_over_processes(value: int) -> int:
    """The largest ``value`` any process holds (so all run the same number of synchronised steps)."""
    if world()[1] == 1:
        return value
    t = torch.tensor([value])
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t)

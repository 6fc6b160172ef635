"""Compute accounting in denoiser passes, the cost that dominates RL fine-tuning on GPUs.

A pass is one sample through the denoiser once; with classifier-free guidance a prediction is
two passes (the conditional and the negative branch). A backward pass costs about two forwards,
so the total is reported in forward-pass equivalents: forwards + 2 x backwards. Counts are of the
whole iteration batch (all processes), from the global plan, so they do not depend on the
process count; evaluation passes are kept apart (they measure the model, they do not train it).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class Passes:
    forward: int = 0
    backward: int = 0

    @property
    def forward_equivalents(self) -> int:
        """forwards + 2 x backwards."""
        return self.forward + 2 * self.backward

    def __add__(self, other: Passes) -> Passes:
        return Passes(self.forward + other.forward, self.backward + other.backward)

    def metrics(self, prefix: str) -> dict[str, int]:
        return {f"{prefix}forward": self.forward, f"{prefix}backward": self.backward,
                f"{prefix}forward_equivalents": self.forward_equivalents}


def passes_per_prediction(guidance_scale: float) -> int:
    """2 with classifier-free guidance (conditional and negative branch), else 1."""
    return 2 if guidance_scale > 1 else 1


def sampling_passes(samples: int, num_steps: int, guidance_scale: float) -> Passes:
    """A rollout or an evaluation: samples x T x (2 with CFG) forwards."""
    return Passes(forward=samples * num_steps * passes_per_prediction(guidance_scale))


def update_passes(plan: list[tuple[list, list[int]]], guidance_scale: float, kl: bool) -> Passes:
    """An update following ``plan`` (micro-batches of samples, each with its trained steps):
    per micro-batch of n samples on k steps, n k c forwards with gradients and their n k c
    backwards, plus n k c no-gradient forwards of the reference policy when the KL penalty is on."""
    trained = sum(len(batch) * len(steps) for batch, steps in plan) * passes_per_prediction(guidance_scale)
    return Passes(forward=trained * (2 if kl else 1), backward=trained)


@dataclass
class ComputeLedger:
    """Cumulative compute of a run, saved in its checkpoints: training passes, training wall time
    (rollout and update, without evaluation) and evaluation forwards."""

    forward: int = 0
    backward: int = 0
    seconds: float = 0.0
    eval_forward: int = 0

    @property
    def train(self) -> Passes:
        return Passes(self.forward, self.backward)

    def add_iteration(self, passes: Passes, seconds: float) -> None:
        self.forward += passes.forward
        self.backward += passes.backward
        self.seconds += seconds

    def metrics(self) -> dict[str, float]:
        return {**self.train.metrics("compute/cum_"), "compute/cum_seconds": self.seconds,
                "compute/cum_eval_forward": self.eval_forward}

    def state_dict(self) -> dict:
        return asdict(self)

"""The per-sample scores of an evaluation: what a paired comparison of two models needs.

Both models of a comparison are measured under one protocol (drift.evaluation.protocol), so their
samples pair up: the same prompt and the same seed. The scores keep each sample's reward (total and
per term) and each prompt's diversity figures, in the protocol's order (prompt by prompt, each
prompt's seeds in turn); a few kilobytes of JSON per model, stored beside a registered version so
that a later gate compares against it without evaluating it again.
"""

from __future__ import annotations

import math

import torch
from pydantic import BaseModel, ConfigDict, model_validator

from drift.scoring.diversity import diversity_by_group

FORMAT = "drift-sample-scores/1"


class SampleScores(BaseModel):
    """Per-sample and per-prompt figures of one model under one evaluation protocol."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: str = FORMAT
    protocol_id: str
    prompts: list[str]
    """The evaluation prompts, in order."""
    samples_per_prompt: int
    per_sample: dict[str, list[float]]
    """'alignment' (the total reward) and 'reward/<term>': one value per sample, prompt by prompt."""
    per_prompt: dict[str, list[float]]
    """'diversity' and 'vendi': one value per prompt."""

    @model_validator(mode="after")
    def _shapes(self) -> SampleScores:
        if self.format != FORMAT:
            raise ValueError(f"unknown scores format {self.format!r} (expected {FORMAT})")
        n = len(self.prompts) * self.samples_per_prompt
        for name, values in self.per_sample.items():
            if len(values) != n:
                raise ValueError(f"{name}: {len(values)} values for {n} samples")
        for name, values in self.per_prompt.items():
            if len(values) != len(self.prompts):
                raise ValueError(f"{name}: {len(values)} values for {len(self.prompts)} prompts")
        return self

    def figures(self) -> dict[str, float]:
        """Each figure's mean: the evaluation's alignment, reward terms and diversity."""
        return {name: math.fsum(values) / len(values) for name, values in {**self.per_sample, **self.per_prompt}.items()
                if values}

    def terms(self) -> list[str]:
        """The reward terms measured ('digit_margin', ...)."""
        return [name.removeprefix("reward/") for name in self.per_sample if name.startswith("reward/")]


def scores_of(evaluation, protocol_id: str, samples_per_prompt: int) -> SampleScores:
    """The scores of a drift.evaluation.protocol.Evaluation."""
    n = len(evaluation.prompts)
    prompts = evaluation.prompts[::samples_per_prompt]
    group_ids = torch.arange(n) // samples_per_prompt
    per_prompt = diversity_by_group(evaluation.features, group_ids)
    return SampleScores(
        protocol_id=protocol_id, prompts=prompts, samples_per_prompt=samples_per_prompt,
        per_sample={"alignment": evaluation.rewards.tolist(),
                    **{f"reward/{k}": v.tolist() for k, v in evaluation.reward_terms.items()}},
        per_prompt={k: v.tolist() for k, v in per_prompt.items()})

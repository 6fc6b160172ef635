"""Paired comparison of two models measured on the same units (prompts and seeds, or held-out
preference pairs): each figure's difference with a bootstrap interval, so that a gate can tell a
real change from evaluation noise.

Pairing removes what both models share: the two models' images of one prompt and seed start from the
same noise, a preference pair is judged by both reward heads. The bootstrap resamples the units,
prompts first and then the seeds within each drawn prompt (a prompt's samples are not independent of
each other), with the same draws for both models. The interval is the percentile interval at the
given confidence; a gate reads its lower end.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from drift.evaluation.scores import SampleScores


@dataclass(frozen=True)
class Difference:
    """candidate - champion for one figure, with its bootstrap interval."""

    figure: str
    candidate: float
    champion: float
    low: float
    high: float
    confidence: float

    @property
    def change(self) -> float:
        return self.candidate - self.champion

    def describe(self) -> str:
        """'alignment 12.1 vs 11.6 (+0.5, 90% interval [+0.21, +0.8])'."""
        return (f"{self.figure} {self.candidate:.4g} vs {self.champion:.4g} ({self.change:+.3g}, "
                f"{self.confidence:.0%} interval [{self.low:+.3g}, {self.high:+.3g}])")


def _interval(replicates: np.ndarray, confidence: float) -> tuple[float, float]:
    low, high = np.quantile(replicates, [(1 - confidence) / 2, (1 + confidence) / 2])
    return float(low), float(high)


def paired_differences(candidate: SampleScores, champion: SampleScores, figures: list[str], confidence: float,
                       resamples: int, seed: int = 0) -> dict[str, Difference]:
    """Each figure of ``figures`` (per-sample ones: 'alignment', 'reward/<term>'; per-prompt ones:
    'diversity', 'vendi') of both models, with the interval of the difference. Both must have been
    measured under one protocol."""
    if (candidate.protocol_id, candidate.prompts, candidate.samples_per_prompt) != (
            champion.protocol_id, champion.prompts, champion.samples_per_prompt):
        raise ValueError(f"scores measured under protocols {candidate.protocol_id} and {champion.protocol_id} "
                         "do not pair up")
    prompts, n = len(candidate.prompts), candidate.samples_per_prompt
    rng = np.random.default_rng(seed)
    drawn_prompts = rng.integers(0, prompts, (resamples, prompts))
    drawn_seeds = rng.integers(0, n, (resamples, prompts, n))
    out = {}
    for figure in figures:
        if figure in candidate.per_sample:
            a, b = (np.asarray(s.per_sample[figure], dtype=np.float64).reshape(prompts, n)
                    for s in (candidate, champion))
            replicates = (a - b)[drawn_prompts[..., None], drawn_seeds].mean(axis=(1, 2))
        else:
            a, b = (np.asarray(s.per_prompt[figure], dtype=np.float64) for s in (candidate, champion))
            replicates = (a - b)[drawn_prompts].mean(axis=1)
        out[figure] = Difference(figure, float(a.mean()), float(b.mean()), *_interval(replicates, confidence),
                                 confidence)
    return out


def paired_rate_difference(candidate: np.ndarray, champion: np.ndarray, clusters: np.ndarray, confidence: float,
                           resamples: int, seed: int = 0, figure: str = "accuracy") -> Difference:
    """Two rates over the same rows (1 = right, 0 = wrong), rows grouped in ``clusters`` (several
    raters of one preference pair): the difference with a bootstrap over the clusters."""
    candidate, champion = np.asarray(candidate, dtype=np.float64), np.asarray(champion, dtype=np.float64)
    _, cluster = np.unique(np.asarray(clusters), return_inverse=True)
    sums = np.bincount(cluster, weights=candidate - champion)
    counts = np.bincount(cluster).astype(np.float64)
    drawn = np.random.default_rng(seed).integers(0, len(counts), (resamples, len(counts)))
    replicates = sums[drawn].sum(axis=1) / counts[drawn].sum(axis=1)
    return Difference(figure, float(candidate.mean()), float(champion.mean()), *_interval(replicates, confidence),
                      confidence)

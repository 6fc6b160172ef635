"""Promotion gates: does a newly trained model (or reward head) replace the current champion?

Both gates know evaluation noise. The generator's compares the candidate and the champion measured
under one evaluation protocol (drift.evaluation.protocol), sample by sample on the same prompts and
seeds, and reads each figure's paired bootstrap interval (drift.evaluation.comparison): it promotes
only a candidate that is worse on no gated figure and better on alignment or diversity, each at the
configured confidence (a figure is worse when its whole interval lies below the allowed drop, better
when its whole interval lies above the required gain). A tie, or a difference within the noise,
keeps the champion. The reward head's gate reads the same kind of interval of the held-out accuracy.
"""

from __future__ import annotations

import math

import numpy as np

from drift.evaluation.comparison import Difference, paired_differences, paired_rate_difference
from drift.evaluation.scores import SampleScores


def _non_finite(figures: dict | None) -> list[str]:
    return sorted(k for k, v in (figures or {}).items() if not math.isfinite(float(v)))


def _listed(figures: dict[str, float]) -> str:
    keys = [k for k in figures if k == "alignment" or k.startswith("reward/") or k == "diversity"]
    return ", ".join(f"{k} {figures[k]:.4g}" for k in keys)


def allowed_drop(figure: str, rule) -> float:
    """How far below the champion's a gated figure may lie (rule: a drift.config.RegistrySection)."""
    if figure == "alignment":
        return rule.max_alignment_drop
    if figure == "diversity":
        return rule.max_diversity_drop
    return rule.max_term_drop


def promotion_decision(candidate: SampleScores, champion: SampleScores | None, reference: dict, rule,
                       champion_terms: list[str] | None = None) -> tuple[bool, str]:
    """Promote iff every figure is finite, the candidate's diversity is at least
    rule.min_diversity_fraction x the reference (base) model's, and, against a champion measured under
    the candidate's protocol, at confidence rule.confidence:

    - no gated figure is worse: for alignment, diversity and each protected reward term
      (rule.protected_terms, else ``champion_terms``: the champion's own), the upper end of the
      interval of candidate - champion reaches minus the figure's allowed drop (``allowed_drop``);
    - alignment or diversity is better: the lower end of its interval is above rule.min_alignment_gain
      or rule.min_diversity_gain.

    Returns (promote, reason); the reason lists each compared figure with its interval."""
    figures = candidate.figures()
    bad = {name: _non_finite(f) for name, f in (("candidate", figures), ("reference", reference),
                                                ("champion", champion and champion.figures())) if _non_finite(f)}
    if bad:
        listed = "; ".join(f"{n}: {', '.join(k)}" for n, k in bad.items())
        return False, f"not promoted: non-finite figures ({listed})"
    floor = rule.min_diversity_fraction * reference["diversity"]
    if figures["diversity"] < floor:
        return False, (f"not promoted: diversity {figures['diversity']:.4f} is below "
                       f"{rule.min_diversity_fraction:g} x the reference's {reference['diversity']:.4f} "
                       f"(= {floor:.4f})")
    if champion is None:
        return True, f"promoted: no champion yet; {_listed(figures)}"
    protected = rule.protected_terms if rule.protected_terms is not None else (champion_terms or [])
    missing = [t for t in protected if f"reward/{t}" not in candidate.per_sample or
               f"reward/{t}" not in champion.per_sample]
    if missing:
        return False, (f"not promoted: protected term(s) {', '.join(missing)} not measured for both models; "
                       f"{_listed(figures)}")
    gated = ["alignment", "diversity", *(f"reward/{t}" for t in protected)]
    shown = gated + [k for k in candidate.per_sample if k.startswith("reward/") and k in champion.per_sample
                     and k not in gated]
    diffs = paired_differences(candidate, champion, shown, rule.confidence, rule.bootstrap_resamples)
    table = "; ".join(d.describe() for d in diffs.values())
    worse = [diffs[k] for k in gated if diffs[k].high < -allowed_drop(k, rule)]
    if worse:
        return False, (f"not promoted: {', '.join(_worse(d, rule) for d in worse)} at "
                       f"{rule.confidence:.0%} confidence; {table}")
    better = [name for name, gain in (("alignment", rule.min_alignment_gain), ("diversity", rule.min_diversity_gain))
              if diffs[name].low > gain]
    if not better:
        return False, (f"not promoted: neither alignment nor diversity is better than the champion's beyond the "
                       f"noise (lower ends {diffs['alignment'].low:+.3g} and {diffs['diversity'].low:+.3g}, needed "
                       f"above {rule.min_alignment_gain:g} and {rule.min_diversity_gain:g}): the champion stays; "
                       f"{table}")
    return True, f"promoted over the champion: better {' and '.join(better)}; {table}"


def _worse(d: Difference, rule) -> str:
    drop = allowed_drop(d.figure, rule)
    return f"{d.figure.removeprefix('reward/')} regressed against the champion's (by at least {-d.high:.3g}" + (
        f", allowed {drop:g})" if drop else ")")


def reward_head_decision(correct: np.ndarray, champion_correct: np.ndarray | None, pairs: np.ndarray,
                         confidence: float, resamples: int, min_gain: float = 0.0) -> tuple[bool, str]:
    """Register a new preference head iff it has decided held-out rows (``correct``: 1 where the
    head picks the rater's choice, ties excluded) and, against the champion head judged on the same
    rows (``champion_correct``; None when there is none), the lower end of the interval of the
    accuracy difference (a bootstrap over the held-out ``pairs``, whose raters are not independent)
    is above ``min_gain``: equal accuracy keeps the champion."""
    if len(correct) == 0:
        return False, "not registered: no decided held-out pair (held-out accuracy undefined)"
    accuracy = float(np.mean(correct))
    if champion_correct is None:
        return True, f"registered: held-out accuracy {accuracy:.3f} (no champion)"
    d = paired_rate_difference(correct, champion_correct, pairs, confidence, resamples, figure="held-out accuracy")
    if d.low > min_gain:
        return True, f"registered: better than the champion; {d.describe()}"
    return False, (f"not registered: not more accurate than the champion beyond the noise (lower end {d.low:+.3g}, "
                   f"needed above {min_gain:g}); {d.describe()}")

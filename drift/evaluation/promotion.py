"""Promotion gates: does a newly trained model (or reward head) replace the current champion?

The generator's gate compares like with like: the candidate and the champion measured under one
evaluation protocol (drift.evaluation.protocol), figure by figure.
"""

from __future__ import annotations

import math


def _non_finite(figures: dict | None) -> list[str]:
    return sorted(k for k, v in (figures or {}).items() if not math.isfinite(float(v)))


def term_table(candidate: dict, champion: dict | None) -> str:
    """Each figure of both models and its change: 'reward/digit_margin 7.10 vs 6.80 (+0.30)'."""
    keys = [k for k in candidate if k == "alignment" or k.startswith("reward/") or k == "diversity"]
    if champion is None:
        return ", ".join(f"{k} {candidate[k]:.4g}" for k in keys)
    return ", ".join(f"{k} {candidate[k]:.4g} vs {champion[k]:.4g} ({candidate[k] - champion[k]:+.3g})"
                     for k in keys if k in champion)


def promotion_decision(candidate: dict, champion: dict | None, reference: dict, rule,
                       champion_terms: list[str] | None = None) -> tuple[bool, str]:
    """Promote iff every compared figure is finite, diversity >= rule.min_diversity_fraction x the
    reference's, and, against a champion measured under the same protocol as the candidate:
    alignment >= champion's - rule.max_alignment_drop and every protected reward term
    (rule.protected_terms, else ``champion_terms``: the champion's own) >= champion's -
    rule.max_term_drop. Figures map 'alignment', 'diversity' and 'reward/<term>' to floats."""
    bad = {name: _non_finite(figures) for name, figures in
           (("candidate", candidate), ("reference", reference), ("champion", champion)) if _non_finite(figures)}
    if bad:
        listed = "; ".join(f"{n}: {', '.join(k)}" for n, k in bad.items())
        return False, f"not promoted: non-finite figures ({listed})"
    floor = rule.min_diversity_fraction * reference["diversity"]
    if candidate["diversity"] < floor:
        return False, (f"not promoted: diversity {candidate['diversity']:.4f} is below "
                       f"{rule.min_diversity_fraction:g} x the reference's {reference['diversity']:.4f} "
                       f"(= {floor:.4f})")
    if champion is None:
        return True, f"promoted: no champion yet; {term_table(candidate, None)}"
    figures = term_table(candidate, champion)
    if candidate["alignment"] < champion["alignment"] - rule.max_alignment_drop:
        return False, f"not promoted: alignment below the champion's; {figures}"
    protected = rule.protected_terms if rule.protected_terms is not None else (champion_terms or [])
    missing = [t for t in protected if f"reward/{t}" not in candidate or f"reward/{t}" not in champion]
    if missing:
        return False, f"not promoted: protected term(s) {', '.join(missing)} not measured for both models; {figures}"
    regressed = [t for t in protected if candidate[f"reward/{t}"] < champion[f"reward/{t}"] - rule.max_term_drop]
    if regressed:
        return False, f"not promoted: {', '.join(regressed)} regressed against the champion; {figures}"
    return True, f"promoted over the champion; {figures}"


def reward_head_decision(accuracy: float, champion_accuracy: float | None) -> tuple[bool, str]:
    """Register a new preference head iff its held-out pairwise accuracy is finite and at least the
    champion head's on the same held-out pairs (any finite accuracy when there is no champion, or
    when the champion's cannot be measured, e.g. no decided held-out pair)."""
    if not math.isfinite(accuracy):
        return False, f"not registered: held-out accuracy is {accuracy} (no decided held-out pair?)"
    if champion_accuracy is None or not math.isfinite(champion_accuracy):
        return True, f"registered: held-out accuracy {accuracy:.3f} (no comparable champion)"
    if accuracy < champion_accuracy:
        return False, f"not registered: held-out accuracy {accuracy:.3f} below the champion's {champion_accuracy:.3f}"
    return True, f"registered: held-out accuracy {accuracy:.3f} (champion {champion_accuracy:.3f})"

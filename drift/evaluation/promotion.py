"""Promotion gates: does a newly trained model (or reward head) replace the current champion?"""

from __future__ import annotations

import math


def promotion_decision(candidate: dict, champion: dict | None, reference: dict,
                       min_diversity_fraction: float) -> tuple[bool, str]:
    """Promote iff every metric is finite, alignment >= the champion's (any alignment when there is
    no champion yet), and diversity >= min_diversity_fraction * the reference model's diversity.
    ``candidate``, ``champion`` and ``reference`` map 'alignment' and 'diversity' to floats."""
    bad = sorted(k for k, v in candidate.items() if not math.isfinite(float(v)))
    if bad:
        return False, f"not promoted: non-finite metric(s) {', '.join(bad)}"
    floor = min_diversity_fraction * reference["diversity"]
    if candidate["diversity"] < floor:
        return False, (f"not promoted: diversity {candidate['diversity']:.4f} is below {min_diversity_fraction:g} x "
                       f"the reference's {reference['diversity']:.4f} (= {floor:.4f})")
    if champion is not None and candidate["alignment"] < champion["alignment"]:
        return False, (f"not promoted: alignment {candidate['alignment']:.4f} is below the champion's "
                       f"{champion['alignment']:.4f}")
    against = "no champion yet" if champion is None else f"champion alignment {champion['alignment']:.4f}"
    return True, (f"promoted: alignment {candidate['alignment']:.4f} ({against}), diversity "
                  f"{candidate['diversity']:.4f} >= {floor:.4f}")


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

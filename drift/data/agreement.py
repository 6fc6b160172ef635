"""How consistent a team of raters is, and how the learned reward head agrees with each of them.

Raters are compared pair by pair of raters, on the pairs both labelled (a pair is its content:
``drift.data.preferences.pair_identity``; choices are said in the pair's own order, so a pair shown
the other way round still compares): percent agreement and Cohen's kappa over the three
categories first, second and tie. A rater's figure is the mean over their partners weighted by
the pairs shared with each (kappa over the partners where it is defined: it is not when both
raters gave one and the same category throughout). The reward head's agreement with a rater is
the share of the rater's decided (non-tie) held-out rows where the head prefers the same image.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import asdict, dataclass, field
from itertools import combinations

import numpy as np
import pandas as pd

from drift.data.preferences import CHOICES, oriented_choices, parse_time

METHOD = ("agreement: percent and Cohen's kappa over first/second/tie with each other rater on the pairs both "
          "labelled;\n  a rater's figure is the mean over partners weighted by shared pairs (kappa: over the "
          "partners where it is defined)")


@dataclass
class PartnerFigures:
    """Two raters on the pairs both labelled."""

    raters: tuple[str, str]
    shared: int
    agreement: float  # share of the shared pairs with the same choice
    kappa: float  # NaN where undefined


@dataclass
class RaterFigures:
    rater: str
    pairs: int
    partners: int = 0
    shared: int = 0  # shared pairs, summed over partners
    agreement: float = float("nan")
    kappa: float = float("nan")
    tie_rate: float = float("nan")
    median_seconds: float = float("nan")  # NaN where no row records when its pair was shown
    head_agreement: float = float("nan")
    head_pairs: int = 0  # the rater's decided held-out rows the head was compared on


@dataclass
class RaterReport:
    source: str
    rows: int
    pairs: int
    multi_rater_pairs: int
    disagreeing_pairs: int
    raters: list[RaterFigures] = field(default_factory=list)
    partners: list[PartnerFigures] = field(default_factory=list)
    head: str = ""  # which reward head was compared, or why none was

    def to_text(self) -> str:
        lines = [f"preference data {self.source}: {self.rows} rows, {self.pairs} pairs, {len(self.raters)} "
                 f"rater(s); {self.multi_rater_pairs} pair(s) with more than one rater, {self.disagreeing_pairs} "
                 "of them disagree"]
        width = max([5, *(len(r.rater) for r in self.raters)])
        lines.append(f"{'rater':<{width}}  {'pairs':>6}  {'agreement':>9}  {'kappa':>6}  {'partners (shared)':>17}  "
                     f"{'ties':>6}  {'s/answer':>8}  {'head agrees (pairs)':>19}")
        for r in self.raters:
            head = f"{_pct(r.head_agreement)} ({r.head_pairs})" if r.head_pairs else "n/a"
            lines.append(f"{r.rater:<{width}}  {r.pairs:>6}  {_pct(r.agreement):>9}  {_num(r.kappa, '.2f'):>6}  "
                         f"{f'{r.partners} ({r.shared})':>17}  {_pct(r.tie_rate):>6}  "
                         f"{_num(r.median_seconds, '.1f'):>8}  {head:>19}")
        lines.append(METHOD)
        lines.append("s/answer: median seconds from showing a pair to the answer (rows that record when it was shown)")
        lines.append(f"head agrees: {self.head}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"source": self.source, "rows": self.rows, "pairs": self.pairs,
                "multi_rater_pairs": self.multi_rater_pairs, "disagreeing_pairs": self.disagreeing_pairs,
                "head": self.head, "method": METHOD, "raters": [_finite(asdict(r)) for r in self.raters],
                "partners": [_finite(asdict(p)) for p in self.partners]}

    def metrics(self, prefix: str = "raters") -> dict[str, float]:
        """The figures as flat metrics (``prefix/NAME/figure``; undefined ones left out), rater names
        reduced to the characters tracking servers accept in metric names."""
        out = {f"{prefix}/count": len(self.raters), f"{prefix}/multi_rater_pairs": self.multi_rater_pairs,
               f"{prefix}/disagreeing_pairs": self.disagreeing_pairs}
        for r in self.raters:
            name = re.sub(r"[^\w\-. :/]", "_", r.rater)
            figures = {"pairs": r.pairs, "shared_pairs": r.shared, "agreement": r.agreement, "kappa": r.kappa,
                       "tie_rate": r.tie_rate, "median_seconds": r.median_seconds,
                       "head_agreement": r.head_agreement}
            out.update({f"{prefix}/{name}/{k}": float(v) for k, v in figures.items() if np.isfinite(v)})
        return out


def _pct(value: float) -> str:
    return f"{100 * value:.1f}%" if np.isfinite(value) else "n/a"


def _num(value: float, spec: str) -> str:
    return format(value, spec) if np.isfinite(value) else "n/a"


def _finite(figures: dict) -> dict:
    return {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in figures.items()}


def cohen_kappa(first: pd.Series, second: pd.Series) -> float:
    """Cohen's kappa of two raters' choices over first/second/tie; NaN where it is undefined."""
    from sklearn.exceptions import UndefinedMetricWarning
    from sklearn.metrics import cohen_kappa_score

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        return float(cohen_kappa_score(first, second, labels=list(CHOICES), replace_undefined_by=np.nan))


def _weighted(values: list[float], weights: list[int]) -> float:
    kept = [(v, w) for v, w in zip(values, weights) if np.isfinite(v)]
    return float(np.average([v for v, _ in kept], weights=[w for _, w in kept])) if kept else float("nan")


def overlap(identity: pd.DataFrame, annotators: pd.Series, choices: pd.Series) -> tuple[int, int]:
    """(pairs with more than one rater, how many of them the raters disagree on)."""
    t = pd.DataFrame({"key": identity["key"], "annotator": annotators.astype(str),
                      "choice": oriented_choices(choices, identity["flipped"])})
    per_pair = t.groupby("key").agg(raters=("annotator", "nunique"), choices=("choice", "nunique"))
    multi = per_pair[per_pair["raters"] > 1]
    return len(multi), int((multi["choices"] > 1).sum())


def rater_report(pairs: pd.DataFrame, identity: pd.DataFrame, head_choices: pd.Series | None = None,
                 head: str = "", source: str = "<pairs>") -> RaterReport:
    """The figures of each rater of ``pairs`` (``identity`` from ``pair_identity``). ``head_choices``
    holds the reward head's choice (first or second) for the held-out rows, indexed like ``pairs``;
    ``head`` says which head it is, or why there is none."""
    t = pd.DataFrame({"key": identity["key"], "annotator": pairs["annotator"].astype(str),
                      "choice": pairs["choice"].astype(str),
                      "oriented": oriented_choices(pairs["choice"].astype(str), identity["flipped"])})
    if "shown_at" in pairs.columns:
        shown = [parse_time(v) for v in pairs["shown_at"]]
        answered = [parse_time(v) for v in pairs["timestamp"]]
        t["seconds"] = [(a - s).total_seconds() if a and s and a >= s else np.nan for s, a in zip(shown, answered)]
    else:
        t["seconds"] = np.nan
    t["head"] = head_choices.reindex(t.index) if head_choices is not None else np.nan
    multi, disagreeing = overlap(identity, pairs["annotator"], pairs["choice"].astype(str))
    wide = t.drop_duplicates(["key", "annotator"], keep="last").pivot(index="key", columns="annotator",
                                                                     values="oriented")
    partners = []
    for a, b in combinations(sorted(wide.columns), 2):
        both = wide[[a, b]].dropna()
        if len(both):
            partners.append(PartnerFigures((a, b), len(both), float((both[a] == both[b]).mean()),
                                           cohen_kappa(both[a], both[b])))
    raters = []
    for name, rows in t.groupby("annotator", sort=True):
        mine = [p for p in partners if name in p.raters]
        shared = [p.shared for p in mine]
        compared = rows[rows["head"].isin(["first", "second"]) & rows["choice"].isin(["first", "second"])]
        raters.append(RaterFigures(
            name, int(rows["key"].nunique()), len(mine), sum(shared),
            _weighted([p.agreement for p in mine], shared), _weighted([p.kappa for p in mine], shared),
            float((rows["choice"] == "tie").mean()), float(rows["seconds"].median()),
            float((compared["head"] == compared["choice"]).mean()) if len(compared) else float("nan"),
            len(compared)))
    return RaterReport(source, len(pairs), int(t["key"].nunique()), multi, disagreeing, raters, partners, head)

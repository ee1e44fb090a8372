"""The statistics of a study: confidence intervals over seeds and paired tests over pages.

Seeds are few (3 by default), so a system's interval is Student's t interval of its per-seed
scores, not a normal approximation. Two systems are compared on the same pages: each page's
score is first averaged over seeds, then the per-page differences are tested with the Wilcoxon
signed-rank test (no normality assumed; edit distances are bounded and skewed), and the
p-values of all comparisons against one baseline are Holm-adjusted so that "significant" holds
for the family at the chosen level.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from scipy import stats


@dataclass(frozen=True)
class Interval:
    """Mean of ``n`` values and its two-sided ``level`` confidence interval (Student's t)."""

    mean: float
    low: float
    high: float
    n: int

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2


def mean_interval(values: Sequence[float], level: float = 0.95) -> Interval:
    """Student's t interval of the mean of ``values`` (one value: a zero-width interval)."""
    values = [float(v) for v in values]
    if not values:
        raise ValueError("mean_interval needs at least one value")
    n, mean = len(values), sum(values) / len(values)
    if n == 1:
        return Interval(mean, mean, mean, 1)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = stats.t.ppf(0.5 + level / 2, n - 1) * sd / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n)


@dataclass(frozen=True)
class PairedTest:
    """A system against the baseline over the same ``n_pages`` pages: the mean per-page
    difference (system - baseline), Wilcoxon's two-sided p-value and its Holm-adjusted value."""

    mean_difference: float
    p_value: float
    p_holm: float
    n_pages: int


def paired_difference_p(system: Sequence[float], baseline: Sequence[float]) -> float:
    """Two-sided Wilcoxon signed-rank p-value of ``system - baseline`` page by page; 1.0 when
    every difference is zero (nothing to test)."""
    if len(system) != len(baseline):
        raise ValueError(f"paired scores differ in length: {len(system)} vs {len(baseline)}")
    differences = [a - b for a, b in zip(system, baseline, strict=True)]
    if not any(differences):
        return 1.0
    return float(stats.wilcoxon(differences, zero_method="zsplit").pvalue)


def holm_adjust(p_values: Mapping[str, float]) -> dict[str, float]:
    """Holm's step-down adjustment: family-wise error control over all the comparisons."""
    ordered = sorted(p_values.items(), key=lambda item: item[1])
    adjusted, running = {}, 0.0
    for rank, (name, p) in enumerate(ordered):
        running = max(running, min(1.0, (len(ordered) - rank) * p))
        adjusted[name] = running
    return adjusted


def paired_tests(
    per_page: Mapping[str, Mapping[str, float]], baseline: str
) -> dict[str, PairedTest]:
    """Each system of ``per_page`` (system -> page -> seed-averaged score) against ``baseline``
    over the pages both have."""
    if baseline not in per_page:
        raise KeyError(f"baseline {baseline!r} has no per-page scores")
    base = per_page[baseline]
    raw: dict[str, tuple[float, float, int]] = {}
    for system, pages in per_page.items():
        if system == baseline:
            continue
        common = sorted(set(pages) & set(base))
        if not common:
            continue
        ours, theirs = [pages[p] for p in common], [base[p] for p in common]
        difference = sum(ours) / len(ours) - sum(theirs) / len(theirs)
        raw[system] = (difference, paired_difference_p(ours, theirs), len(common))
    holm = holm_adjust({system: p for system, (_, p, _) in raw.items()})
    return {
        system: PairedTest(difference, p, holm[system], n)
        for system, (difference, p, n) in raw.items()
    }

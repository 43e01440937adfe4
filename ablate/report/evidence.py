"""The statistics behind every claim the report makes, computed by scipy and statsmodels.

Pure functions of numbers: no DataFrames, no files. Errors are fractions; a *difference* is
always side A minus side B, so a negative difference means A has the lower error.

Choices, stated once (the README quotes them):

- A cell's uncertainty is the 95 % Student-t interval of the mean over seeds,
  ``mean ± t(0.975, n-1) · s / sqrt(n)`` with the sample std ``s``. One seed gives no interval.
- Two sides are paired by seed. The verdict rests on the paired t-test of the per-seed errors
  (seed-to-seed variation is the noise a rerun would see), Holm-adjusted within its table.
  The Wilcoxon signed-rank test is shown from n = 6 on: below that its smallest two-sided p
  (2/2^n) cannot reach 0.05, so it could only ever say "no difference".
- The seed is the unit: McNemar's exact test (b = examples only A got right, c = only B)
  runs within each seed pair, never pooled, as the seeds' networks share one test set. The
  report shows the range of its p over seeds and in how many seeds it favours each side at
  0.05 ("0.003–0.410 over 3 seeds; A better in 2 of 3"): descriptive, not the verdict.
- Outliers are flagged, never dropped: |0.6745 (x − median) / MAD| > 3.5 over a cell's seeds,
  from 3 seeds on (Iglewicz & Hoaglin, How to Detect and Handle Outliers, ASQC 1993). MAD = 0
  (more than half the seeds equal): (x − median) / (1.253314 MeanAD), IBM's documented form
  (Cognos Analytics, "Modified z score"), so one value off the rest is flagged from 5 seeds
  on (5 / 1.253314 > 3.5), never at 3 or 4 seeds, where nothing says which value is off.
- One seed: no interval, no test, no p-value at all, verdict "one seed: no claim".
- The same non-zero difference on every seed: no t-test (zero spread), verdict says so.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
from scipy import stats as scipy_stats
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.multitest import multipletests

from ablate.decide import OUTLIER_MIN_SEEDS, OUTLIER_Z, modified_z

CONFIDENCE = 0.95
ALPHA = 0.05
WILCOXON_MIN_N = 6
ONE_SEED = "one seed: no claim"
A_BETTER, B_BETTER = "A better", "B better"
# The words where higher is better and "better" would not say what was measured: consistency.
MORE_INVARIANT, LESS_INVARIANT = "A more invariant", "A less invariant"
# Every seed differs by exactly the same amount (errors on a small test set are multiples of
# 1/N): the t statistic is undefined, and "no detectable difference" would misstate it.
NO_TEST = "no test: the same difference on every seed"
Key = TypeVar("Key")


@dataclass(frozen=True)
class Summary:
    """One cell over its seeds."""

    n: int
    mean: float
    std: float  # sample std (ddof 1); nan for n < 2
    ci_low: float  # nan for n < 2
    ci_high: float

    @property
    def half_width(self) -> float:
        return (self.ci_high - self.ci_low) / 2


def summarize(values: Sequence[float], confidence: float = CONFIDENCE) -> Summary:
    """n, mean, sample std and Student-t interval of a cell's per-seed values: no interval
    below two values, (mean, mean) for zero spread."""
    array = np.asarray(values, dtype=float)
    n = len(array)
    if n < 2:
        return Summary(n, float(array.mean()) if n else math.nan, math.nan, math.nan, math.nan)
    mean, std = float(array.mean()), float(array.std(ddof=1))
    low, high = (mean, mean) if std == 0 else scipy_stats.t.interval(
        confidence, n - 1, loc=mean, scale=std / math.sqrt(n))
    return Summary(n, mean, std, float(low), float(high))


@dataclass(frozen=True)
class Paired:
    """A minus B over seeds present on both sides."""

    n: int
    mean_diff: float
    ci_low: float
    ci_high: float
    t_p: float | None  # None for n < 2 (no test), or when the differences cannot be tested
    wilcoxon_p: float | None  # None for n < WILCOXON_MIN_N


def _pvalue(value: float) -> float | None:
    """A test's p-value, or None where the test gave none (NaN): no test, not p = NaN."""
    return float(value) if value is not None and math.isfinite(value) else None


def paired(a: Sequence[float], b: Sequence[float], confidence: float = CONFIDENCE) -> Paired:
    """Mean difference with its t interval, paired t-test and (n >= 6) Wilcoxon signed-rank."""
    a_array, b_array = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a_array.shape != b_array.shape:
        raise ValueError(f"paired samples differ in length ({len(a_array)} vs {len(b_array)}); "
                         "pair the values by seed first")
    diff = a_array - b_array
    n = len(diff)
    summary = summarize(diff, confidence)
    if n < 2:
        return Paired(n, summary.mean, math.nan, math.nan, None, None)
    if summary.std == 0:
        # constant differences: no spread to test against; zero differences are "no
        # difference", a constant non-zero one is left untested rather than given p = 0.
        t_p = 1.0 if summary.mean == 0 else None
    else:
        t_p = _pvalue(scipy_stats.ttest_rel(a_array, b_array).pvalue)
    wilcoxon_p = None
    if n >= WILCOXON_MIN_N:
        wilcoxon_p = 1.0 if not diff.any() else _pvalue(
            scipy_stats.wilcoxon(a_array, b_array).pvalue)
    return Paired(n, summary.mean, summary.ci_low, summary.ci_high, t_p, wilcoxon_p)


@dataclass(frozen=True)
class McNemar:
    """Exact McNemar on discordant counts: b = only A right, c = only B right."""

    b: int
    c: int
    p: float


def discordant(correct_a: np.ndarray, correct_b: np.ndarray) -> tuple[int, int]:
    """(only A right, only B right) for two runs on the same test examples."""
    correct_a, correct_b = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    if correct_a.shape != correct_b.shape:
        raise ValueError(f"correctness arrays differ in shape ({correct_a.shape} vs "
                         f"{correct_b.shape}); only runs on the same test set can be paired")
    return int((correct_a & ~correct_b).sum()), int((~correct_a & correct_b).sum())


def mcnemar_exact(b: int, c: int) -> McNemar:
    """statsmodels' exact McNemar test (two-sided binomial on b of b + c, p = 1/2)."""
    table = [[0, b], [c, 0]]  # the concordant cells do not enter the test
    return McNemar(b, c, float(mcnemar(table, exact=True).pvalue))


def favouring(tests: Sequence[McNemar], alpha: float = ALPHA) -> tuple[int, int]:
    """(seed pairs whose own exact test favours A at ``alpha``, those favouring B)."""
    return (sum(t.p < alpha and t.b > t.c for t in tests),
            sum(t.p < alpha and t.c > t.b for t in tests))


def outliers(values_by_seed: Mapping[Key, float]) -> dict[Key, float]:
    """The flagged seeds of one cell with their modified z: |z| > 3.5, only from 3 seeds."""
    if len(values_by_seed) < OUTLIER_MIN_SEEDS:
        return {}
    scores = zip(values_by_seed, modified_z(list(values_by_seed.values())), strict=True)
    return {seed: float(z) for seed, z in scores if abs(z) > OUTLIER_Z}


def without_flagged(values_by_seed: Mapping[Key, float]) -> dict[Key, float]:
    """The cell without its flagged seeds: does a verdict rest on an outlier? (It keeps them.)"""
    flagged = outliers(values_by_seed)
    return {seed: v for seed, v in values_by_seed.items() if seed not in flagged}


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm-adjusted p-values over the tests that exist; ``None`` (no test) stays ``None``."""
    present = [i for i, p in enumerate(pvalues) if p is not None]
    adjusted: list[float | None] = [None] * len(pvalues)
    if present:
        values = multipletests([pvalues[i] for i in present], method="holm")[1]
        for i, value in zip(present, values, strict=True):
            adjusted[i] = float(value)
    return adjusted


def verdict(n: int, mean_diff: float, p_adjusted: float | None, alpha: float = ALPHA, *,
            higher_is_better: bool = False) -> str:
    """Which side is better, decided on the Holm-adjusted paired-t p: by default the one with
    the lower error; ``higher_is_better`` for consistency, where a positive A − B favours A
    (said as more or less invariant)."""
    words = (MORE_INVARIANT, LESS_INVARIANT) if higher_is_better else (A_BETTER, B_BETTER)
    if n < 2:
        return ONE_SEED
    if p_adjusted is None:
        return NO_TEST
    if p_adjusted < alpha and mean_diff != 0:
        a_wins = mean_diff > 0 if higher_is_better else mean_diff < 0
        return words[0] if a_wins else words[1]
    return f"no detectable difference at n = {n}"

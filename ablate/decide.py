"""Deciding a claim from seeds that arrive a few at a time, with the error rate held.

A claim compares side A with side B on per-seed values (seed is the unit). After every new
seed the sweep may look again, so a plain test repeated at each look would be wrong far more
often than its alpha says. The procedure, one for the report and the sweep alike:

- **Test**: Yuen's trimmed two-sample t (20 % trimmed means, Welch's degrees of freedom;
  ``scipy.stats.ttest_ind(trim=0.2)``; Yuen, Biometrika 61, 1974). One run in a few dozen
  fails to train and lands several times above its cell; a trimmed mean is not dragged by it,
  where the plain mean and t-test lose all power. Every finished run still enters the test.
- **Repeated confidence intervals** (Jennison & Turnbull, "Group Sequential Methods", 2000,
  ch. 9): at a look with n seeds per side the interval for the difference has error
  ``level(n) = alpha / claims * n**4 / sum(m**4 for m in looks)``, the looks being every n from
  ``min_seeds`` to ``max_seeds``. The levels over all claims and all looks sum to alpha, so by
  Bonferroni's inequality the chance that any interval of the study misses its true difference
  (any false verdict, whichever looks were taken, however the sweep chose them) is at most
  alpha. The weight grows with n because the trimmed test cannot decide at 3 or 4 seeds
  anyway; alpha spent there would be lost.
- Of each level, 80 % bounds the side the claim predicts and 20 % the other side: a claim is
  a directional hypothesis (the paper's), and a contradiction still gets a real test.
- **Verdicts**, with x the difference oriented so that the claim says x < bound (bound 0 for
  "lower"/"higher", the margin for "no worse"): supported when the interval lies below the
  bound, contradicted when above it, equivalent within the margin when a claim with a margin
  has its whole interval inside (-margin, margin) and is not otherwise decided, else
  undecided. The first look that decides is the verdict: later seeds do not reopen it.
- **Futility** (it only ever stops looking, so it cannot raise the error rate): a claim stops
  when, even at ``max_seeds``, its interval would still straddle every bound it could be
  decided against, judged from the difference of medians and the spread pooled over the
  whole grid (robust, steady from the first look).

``python -m ablate.bench.decide`` checks the error rate, the power and the seeds saved by
simulation on this very code.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from ablate.status import StrEnum

ALPHA = 0.05
MIN_SEEDS, MAX_SEEDS = 3, 10
TRIM = 0.2
CLAIMED_SHARE = 0.8
SPENDING_EXPONENT = 4
# How optimistic the futility rule is about the difference of medians, in standard errors. With
# the spread estimated from the seeds run so far (as the sweep does), simulated at 1 pp
# (ablate.bench.decide, 2,000 studies): 0.5 stopped 15 % of studies at n = 3-4 (power 0.80,
# 6.06 seeds a cell); 1.0: power 0.83, 6.31 seeds; 1.5: power 0.89, 6.67 seeds. 1.0 is the most
# power for which the seeds stay under 0.8 of a fixed design of the same power (8 seeds).
FUTILITY_Z = 1.0
EXPECTATIONS = ("lower", "higher", "no_worse")


class Verdict(StrEnum):
    SUPPORTED = "supported"
    CONTRADICTED = "contradicted"
    EQUIVALENT = "equivalent within the margin"
    UNDECIDED = "undecided"


# codes of the vectorised tables: 0 undecided, as the verdicts are listed above otherwise
_CODES = (Verdict.UNDECIDED, Verdict.SUPPORTED, Verdict.CONTRADICTED, Verdict.EQUIVALENT)


@dataclass(frozen=True)
class Design:
    """The family (how many claims share alpha) and the seeds each may use."""

    family: int
    alpha: float = ALPHA
    min_seeds: int = MIN_SEEDS
    max_seeds: int = MAX_SEEDS

    def __post_init__(self) -> None:
        if self.min_seeds < 2:
            raise ValueError(f"min_seeds {self.min_seeds} < 2: a spread needs two seeds a side; "
                             "set hydra.sweeper.min_seeds=3 or more")
        if self.min_seeds > self.max_seeds:
            raise ValueError(f"min_seeds {self.min_seeds} > max_seeds {self.max_seeds}: raise "
                             "hydra.sweeper.max_seeds or lower min_seeds")
        if self.family < 1 or not 0 < self.alpha < 1:
            raise ValueError(f"a family of {self.family} claims at alpha {self.alpha}: need at "
                             "least one claim and 0 < alpha < 1")

    @property
    def looks(self) -> range:
        return range(self.min_seeds, self.max_seeds + 1)

    def level(self, n: int) -> float:
        """The error this claim may spend at a look with ``n`` seeds a side (0 off the looks)."""
        if n not in self.looks:
            return 0.0
        total = sum(m ** SPENDING_EXPONENT for m in self.looks)
        return self.alpha / self.family * n ** SPENDING_EXPONENT / total


@dataclass(frozen=True)
class Rule:
    """What a claim predicts about A - B: ``expect`` lower / higher / no_worse; ``margin`` how
    much worse A may be (no_worse), or the equivalence margin of a lower/higher claim (0: none);
    ``higher_is_better`` for metrics such as consistency, where "worse" means lower."""

    expect: str
    margin: float = 0.0
    higher_is_better: bool = False

    def __post_init__(self) -> None:
        if self.expect not in EXPECTATIONS:
            raise ValueError(f"expect {self.expect!r} is not one of {EXPECTATIONS}")
        if self.margin < 0 or (self.expect == "no_worse" and self.margin == 0):
            raise ValueError(f"margin {self.margin}: a positive fraction of the metric, needed "
                             "by no_worse (e.g. 0.005)")

    @property
    def sign(self) -> int:
        """x = sign * (A - B) is below ``bound`` when the claim holds."""
        if self.expect == "no_worse":
            return -1 if self.higher_is_better else 1
        return 1 if self.expect == "lower" else -1

    @property
    def bound(self) -> float:
        return self.margin if self.expect == "no_worse" else 0.0


@dataclass(frozen=True)
class Table:
    """Every look of one claim (or a batch of simulated ones): arrays indexed [..., look]."""

    looks: tuple[int, ...]
    estimate: np.ndarray  # trimmed-mean difference A - B
    low: np.ndarray
    high: np.ndarray
    code: np.ndarray  # index into _CODES


def table(a: np.ndarray, b: np.ndarray, rule: Rule, design: Design) -> Table:
    """The repeated intervals and verdict codes at every look the seeds reach. ``a`` and ``b``
    are per-seed values in seed order, ``[..., seed]`` (leading axes: simulated studies)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    looks = tuple(n for n in design.looks if n <= min(a.shape[-1], b.shape[-1]))
    shape = (*np.broadcast_shapes(a.shape[:-1], b.shape[:-1]), len(looks))
    estimate, low, high = (np.full(shape, math.nan) for _ in range(3))
    with np.errstate(all="ignore"), warnings.catch_warnings():
        # near-identical seeds (errors are multiples of 1/N): scipy warns, the interval stands
        warnings.simplefilter("ignore", RuntimeWarning)
        for i, n in enumerate(looks):
            result = stats.ttest_ind(a[..., :n], b[..., :n], axis=-1, trim=TRIM,
                                     equal_var=False)
            quartiles = result.confidence_interval(0.5)
            middle = (quartiles.high + quartiles.low) / 2
            error = (quartiles.high - quartiles.low) / 2 / stats.t.ppf(0.75, result.df)
            level = design.level(n)
            claimed = stats.t.ppf(1 - CLAIMED_SHARE * level, result.df) * error
            other = stats.t.ppf(1 - (1 - CLAIMED_SHARE) * level, result.df) * error
            x = rule.sign * middle
            x_low, x_high = x - other, x + claimed
            estimate[..., i] = middle
            low[..., i], high[..., i] = ((x_low, x_high) if rule.sign > 0
                                         else (-x_high, -x_low))
    return Table(looks, estimate, low, high, _codes(low, high, rule))


def _codes(low: np.ndarray, high: np.ndarray, rule: Rule) -> np.ndarray:
    x_low, x_high = (-high, -low) if rule.sign < 0 else (low, high)
    code = np.zeros(np.shape(low), dtype=int)
    with np.errstate(invalid="ignore"):
        if rule.expect != "no_worse" and rule.margin > 0:
            code = np.where((x_low > -rule.margin) & (x_high < rule.margin), 3, code)
        code = np.where(x_high < rule.bound, 1, code)
        code = np.where(x_low > rule.bound, 2, code)
    return code


def modified_z(values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Iglewicz & Hoaglin's modified z-scores (How to Detect and Handle Outliers, 1993):
    0.6745 (x - median) / MAD; where MAD = 0, (x - median) / (1.253314 MeanAD). Along the last
    axis, so that a simulation scores every study's cells at once."""
    values = np.asarray(values, dtype=float)
    if values.shape[-1] == 0:
        return np.zeros_like(values)
    deviation = values - np.median(values, axis=-1, keepdims=True)
    mad = stats.median_abs_deviation(values, axis=-1)[..., None]
    mean_ad = np.abs(deviation).mean(axis=-1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):  # 0.6745 / MAD ~ 1 / sigma (normal)
        return np.where(mad > 0, 0.6745 * deviation / mad,
                        np.where(mean_ad > 0, deviation / (1.253314 * mean_ad), 0.0))


OUTLIER_Z, OUTLIER_MIN_SEEDS = 3.5, 3  # Iglewicz & Hoaglin's threshold; no flag below 3 seeds


def within_cell(values: Sequence[float] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A cell's sum of squares about its mean and its degrees of freedom (seeds on the last
    axis), its flagged runs (modified z > 3.5) left out: what ``spread`` pools, here so that
    the simulation computes it for all its studies at once with the report's own rule."""
    values = np.asarray(values, dtype=float)
    kept = np.ones(values.shape, bool)
    if values.shape[-1] >= OUTLIER_MIN_SEEDS:
        kept = np.abs(modified_z(values)) <= OUTLIER_Z
    count = kept.sum(axis=-1)
    mean = np.where(kept, values, 0.0).sum(axis=-1) / np.maximum(count, 1)
    squares = np.where(kept, (values - mean[..., None]) ** 2, 0.0).sum(axis=-1)
    return np.where(count >= 2, squares, 0.0), np.where(count >= 2, count - 1, 0)


def spread(cells: Iterable[Sequence[float]]) -> float:
    """The seed-to-seed std pooled over a grid's cells (within-cell variances, n - 1 degrees of
    freedom each: unbiased where the cells share one spread, from the first look on), each cell
    without its flagged runs, so that one failed run does not set the spread of every claim.
    NaN without two values in any cell."""
    pieces = [within_cell(values) for values in cells]
    return pooled(sum(float(s) for s, _ in pieces), sum(int(f) for _, f in pieces))


def pooled(squares: float, freedom: int) -> float:
    """The std of pooled sums of squares and degrees of freedom; NaN without any freedom."""
    return math.sqrt(squares / freedom) if freedom else math.nan


@functools.lru_cache(maxsize=64)
def _last_look_quantile(design: Design) -> float:
    """The t quantile of the last look on the claimed side (degrees of freedom of two equal
    trimmed samples): one per design, asked once per claim and round."""
    n = design.max_seeds
    kept = n - 2 * math.floor(TRIM * n)
    return float(stats.t.ppf(1 - CLAIMED_SHARE * design.level(n), max(1, 2 * (kept - 1))))


def projected_half_width(design: Design, grid_spread: float) -> float:
    """The half-width the interval would have at ``max_seeds`` on the claimed side, for a cell
    spread of ``grid_spread``."""
    return _last_look_quantile(design) * grid_spread * math.sqrt(2 / design.max_seeds)


def futile(a: Sequence[float], b: Sequence[float], rule: Rule, design: Design,
           grid_spread: float) -> bool:
    """Whether the seeds left up to ``max_seeds`` cannot decide the claim (see the module
    docstring); never with an unknown spread."""
    n = min(len(a), len(b))
    if n >= design.max_seeds or not n or not math.isfinite(grid_spread) or grid_spread <= 0:
        return n >= design.max_seeds
    x = rule.sign * (float(np.median(a[:n])) - float(np.median(b[:n])))
    reach = projected_half_width(design, grid_spread)
    slack = FUTILITY_Z * grid_spread * math.sqrt(2 / n)
    bounds = [rule.bound] + ([-rule.margin, rule.margin]
                             if rule.margin > 0 and rule.expect != "no_worse" else [])
    return all(abs(x - bound) + slack < reach for bound in bounds)


@dataclass(frozen=True)
class Decision:
    """A claim where it stands: its verdict and the look that gave it (or the last look)."""

    verdict: Verdict
    n: int  # seeds a side the verdict rests on (0: not even min_seeds yet)
    estimate: float
    low: float
    high: float
    futile: bool  # undecided, and the seeds left cannot decide it
    available: int  # seeds a side there are

    @property
    def open(self) -> bool:
        """Whether more seeds could still decide it."""
        return self.verdict == Verdict.UNDECIDED and not self.futile


def from_table(found: Table, index: tuple[int, ...], available: int,
               is_futile: bool) -> Decision:
    """The decision of one claim (``index`` into a batched table's leading axes) with
    ``available`` seeds a side: the first deciding look at or below it, else the last look."""
    usable = [i for i, n in enumerate(found.looks) if n <= available]
    if not usable:
        return Decision(Verdict.UNDECIDED, 0, math.nan, math.nan, math.nan, False, available)
    codes = found.code[index]
    chosen = next((i for i in usable if codes[i]), usable[-1])
    verdict = _CODES[int(codes[chosen])]
    return Decision(verdict, found.looks[chosen], float(found.estimate[index][chosen]),
                    float(found.low[index][chosen]), float(found.high[index][chosen]),
                    verdict == Verdict.UNDECIDED and is_futile, available)


def decide(a: Sequence[float], b: Sequence[float], rule: Rule, design: Design,
           grid_spread: float = math.nan) -> Decision:
    """One claim on its seeds (A and B paired by seed, in seed order)."""
    available = min(len(a), len(b))
    a, b = np.asarray(a[:available], float), np.asarray(b[:available], float)
    is_futile = futile(a, b, rule, design, grid_spread) if available >= design.min_seeds else False
    return from_table(table(a, b, rule, design), (), available, is_futile)


def seeds_needed(effect: float, grid_spread: float, design: Design,
                 power: float = 0.8) -> int | None:
    """Seeds a side a fixed design (one look at ``alpha / family``, the claimed side's share)
    would need for ``power`` against ``effect`` at this spread: statsmodels' two-sample t power,
    a planning figure (the trimmed test needs a little more). None when there is no effect or
    spread to plan with."""
    from statsmodels.stats.power import TTestIndPower

    if not (effect and math.isfinite(effect) and math.isfinite(grid_spread) and grid_spread > 0):
        return None
    alpha = CLAIMED_SHARE * design.alpha / design.family
    n = TTestIndPower().solve_power(effect_size=abs(effect) / grid_spread, alpha=alpha,
                                    power=power, alternative="larger")
    n = float(np.ravel(n)[0])
    return max(2, math.ceil(n)) if math.isfinite(n) else None


def targets(open_claims: Iterable[tuple[Iterable[object], int]],
            max_seeds: int) -> dict[object, int]:
    """Seeds each cell should reach next: one more than an open claim has now, for both of its
    cells (a cell in several open claims goes as far as the furthest asks)."""
    wanted: dict[object, int] = {}
    for cells, n in open_claims:
        for cell in cells:
            wanted[cell] = max(wanted.get(cell, 0), min(max_seeds, n + 1))
    return wanted

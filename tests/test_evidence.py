"""Every statistic of ablate.report.evidence against scipy/statsmodels called directly on
generated data, and against examples worked out by hand from first principles."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.multitest import multipletests

from ablate.report import evidence

RNG = np.random.default_rng(1412)


@pytest.mark.parametrize("n", [2, 3, 5, 10])
def test_summary_matches_scipy(n):
    values = RNG.normal(0.1, 0.01, size=n)
    summary = evidence.summarize(values)
    assert summary.n == n
    assert summary.mean == pytest.approx(values.mean())
    assert summary.std == pytest.approx(np.std(values, ddof=1))
    low, high = scipy_stats.t.interval(0.95, n - 1, loc=values.mean(),
                                       scale=scipy_stats.sem(values))
    assert (summary.ci_low, summary.ci_high) == pytest.approx((low, high))


def test_one_value_has_no_spread_and_no_interval():
    summary = evidence.summarize([0.1])
    assert summary.n == 1 and summary.mean == 0.1
    assert math.isnan(summary.std) and math.isnan(summary.ci_low) and math.isnan(summary.ci_high)


@pytest.mark.parametrize("n", [2, 3, 6, 12])
def test_paired_matches_scipy(n):
    a = RNG.normal(0.10, 0.01, size=n)
    b = a + RNG.normal(0.005, 0.004, size=n)
    result = evidence.paired(a, b)
    diff = a - b
    assert result.n == n and result.mean_diff == pytest.approx(diff.mean())
    low, high = scipy_stats.t.interval(0.95, n - 1, loc=diff.mean(), scale=scipy_stats.sem(diff))
    assert (result.ci_low, result.ci_high) == pytest.approx((low, high))
    assert result.t_p == pytest.approx(scipy_stats.ttest_rel(a, b).pvalue)
    if n >= 6:
        assert result.wilcoxon_p == pytest.approx(scipy_stats.wilcoxon(a, b).pvalue)
    else:
        assert result.wilcoxon_p is None  # 2/2^n > 0.05: the test could never reject


def test_paired_t_worked_by_hand():
    # A: 10, 12, 11 %; B: 12, 13, 14 % -> differences -2, -1, -3 (points): mean -2, sample
    # std 1, standard error 1/sqrt(3), t = -2 * sqrt(3) = -3.4641 with 2 degrees of freedom.
    # For 2 df the t distribution has the closed form P(|T| > t) = 1 - t / sqrt(2 + t^2):
    # 1 - 3.4641 / sqrt(14) = 0.074180. The interval's half-width is t(0.975, 2) = 4.302653
    # (from tables) times 1/sqrt(3) = 2.484138.
    result = evidence.paired([0.10, 0.12, 0.11], [0.12, 0.13, 0.14])
    t = 2 * math.sqrt(3)
    assert result.t_p == pytest.approx(1 - t / math.sqrt(2 + t * t), abs=1e-9)
    assert result.t_p == pytest.approx(0.074180, abs=1e-6)
    assert result.mean_diff == pytest.approx(-0.02)
    assert result.ci_low == pytest.approx(-0.02 - 0.02484138, abs=1e-7)
    assert result.ci_high == pytest.approx(-0.02 + 0.02484138, abs=1e-7)


@pytest.mark.parametrize("b,c", [(0, 0), (1, 0), (3, 9), (20, 7), (120, 95)])
def test_mcnemar_matches_statsmodels(b, c):
    correct_a = np.array([True] * b + [False] * c + [True] * 50 + [False] * 30)
    correct_b = np.array([False] * b + [True] * c + [True] * 50 + [False] * 30)
    RNG.shuffle(order := np.arange(len(correct_a)))
    counts = evidence.discordant(correct_a[order], correct_b[order])
    assert counts == (b, c)
    table = [[50, b], [c, 30]]  # rows: A right/wrong; columns: B right/wrong
    assert evidence.mcnemar_exact(*counts).p == pytest.approx(
        mcnemar(table, exact=True).pvalue)


def test_exact_mcnemar_worked_by_hand():
    # b = 2 examples only A got right, c = 8 only B got right: under H0 each of the 10 is a
    # fair coin; two-sided p = 2 * P(X <= 2), X ~ Binomial(10, 1/2)
    # = 2 * (C(10,0) + C(10,1) + C(10,2)) / 2^10 = 2 * 56 / 1024 = 0.109375.
    expected = 2 * sum(math.comb(10, k) for k in range(3)) / 2**10
    assert expected == 0.109375
    assert evidence.mcnemar_exact(2, 8).p == pytest.approx(expected, abs=1e-12)


def test_mcnemar_stays_within_each_seed_pair():
    # the seed is the unit: a seed pair where A wins (b 30, c 10) and one where B wins
    # (b 10, c 30) give two exact tests, one per seed, and no pooled p. Summing the counts
    # (b 40, c 40: p 1.0) would treat the seeds as one network; Fisher's combination of the
    # two-sided p-values would call the pair significant: neither is done.
    assert not hasattr(evidence, "mcnemar_pooled")
    tests = [evidence.mcnemar_exact(30, 10), evidence.mcnemar_exact(10, 30)]
    assert tests[0].p == tests[1].p == pytest.approx(
        mcnemar([[0, 30], [10, 0]], exact=True).pvalue)
    assert tests[0].p < 0.05 and evidence.mcnemar_exact(40, 40).p == pytest.approx(1.0)
    assert scipy_stats.combine_pvalues([t.p for t in tests]).pvalue < 0.05
    assert evidence.favouring(tests) == (1, 1)  # each seed's own test favours its side
    # (1, 3) and (1, 5): p 0.625 and 0.219 per seed, neither below 0.05 (their sum, (2, 8),
    # is the 0.109 worked above: the pooled p this replaces)
    per_seed = [evidence.mcnemar_exact(1, 3), evidence.mcnemar_exact(1, 5)]
    assert [t.p for t in per_seed] == pytest.approx([0.625, 0.21875])
    assert evidence.favouring(per_seed) == (0, 0)
    assert evidence.favouring([evidence.mcnemar_exact(0, 6)]) == (0, 1)  # p = 2 / 2^6
    assert evidence.favouring([evidence.mcnemar_exact(0, 6)], alpha=0.01) == (0, 0)
    assert evidence.favouring([]) == (0, 0)


def test_a_far_seed_is_flagged_by_the_modified_z_score():
    # 5 seeds, one far: median 2.1 %, |deviations| 0.1, 0, 0.2, 0.1, 13.5 points -> MAD 0.1;
    # Iglewicz & Hoaglin's z of 15.6 % = 0.6745 * 13.5 / 0.1 = 91.06 > 3.5; 1.9 %: -1.35
    cell = {0: 0.020, 1: 0.021, 2: 0.019, 3: 0.022, 4: 0.156}
    values = list(cell.values())
    mad = scipy_stats.median_abs_deviation(values)
    assert mad == pytest.approx(0.001)
    assert evidence.modified_z(values) == pytest.approx(
        [0.6745 * (v - np.median(values)) / mad for v in values])
    # the same as |x - median| / (1.4826 MAD), to the constants' rounding
    assert evidence.modified_z(values)[4] == pytest.approx(0.135 / (1.4826 * 0.001), rel=1e-4)
    assert evidence.outliers(cell) == {4: pytest.approx(91.0575)}
    assert evidence.without_flagged(cell) == {0: 0.020, 1: 0.021, 2: 0.019, 3: 0.022}
    # a tight cell: nothing flagged, nothing removed
    tight = {0: 0.020, 1: 0.021, 2: 0.019, 3: 0.022, 4: 0.023}
    assert evidence.outliers(tight) == {} and evidence.without_flagged(tight) == tight
    # the threshold: 0, 1, 2, 3, x has median 2 and MAD 1, so x is flagged from 2 + 3.5/0.6745
    assert evidence.outliers(dict(enumerate([0, 1, 2, 3, 7.2]))) == {4: pytest.approx(0.6745 * 5.2)}
    assert evidence.outliers(dict(enumerate([0, 1, 2, 3, 7.1]))) == {}
    # 3 seeds are enough (0, 1, 9: median 1, MAD 1, z of 9 = 5.4); 2 seeds never are
    assert evidence.outliers({"a": 0.0, "b": 0.01, "c": 0.09}) == {"c": pytest.approx(5.396)}
    assert evidence.outliers({0: 0.02, 1: 0.50}) == {} == evidence.outliers({})
    assert evidence.without_flagged({0: 0.02, 1: 0.50}) == {0: 0.02, 1: 0.50}


def test_mad_zero_falls_back_to_the_mean_absolute_deviation():
    # more than half the seeds equal: MAD = 0, so (x - median) / (1.253314 MeanAD); one value
    # off the rest by d gives z = n / 1.253314: flagged from 5 seeds (3.99), not at 4 (3.19)
    five, four = [0.1] * 4 + [0.3], [0.1] * 3 + [0.3]
    assert scipy_stats.median_abs_deviation(five) == 0
    assert evidence.modified_z(five)[4] == pytest.approx(0.2 / (1.253314 * 0.04))
    assert evidence.outliers(dict(enumerate(five))) == {4: pytest.approx(5 / 1.253314)}
    assert evidence.outliers(dict(enumerate(four))) == {}
    assert evidence.outliers(dict(enumerate([0.1, 0.1, 0.9]))) == {}
    # all equal: every z is 0, nothing flagged
    assert list(evidence.modified_z([0.1] * 4)) == [0.0] * 4
    assert evidence.outliers(dict(enumerate([0.1] * 6))) == {}


def test_discordant_refuses_different_lengths():
    with pytest.raises(ValueError, match="same test set"):
        evidence.discordant(np.ones(3, bool), np.ones(4, bool))


def test_holm_matches_statsmodels_and_keeps_missing_tests():
    pvalues = [0.01, None, 0.04, 0.03, 0.2]
    adjusted = evidence.holm(pvalues)
    expected = multipletests([0.01, 0.04, 0.03, 0.2], method="holm")[1]
    assert adjusted[1] is None
    assert [adjusted[i] for i in (0, 2, 3, 4)] == pytest.approx(list(expected))
    # by hand: sorted 0.01, 0.03, 0.04, 0.2 times 4, 3, 2, 1, made monotone: .04, .09, .09, .2
    assert [adjusted[i] for i in (0, 3, 2, 4)] == pytest.approx([0.04, 0.09, 0.09, 0.2])
    assert evidence.holm([None, None]) == [None, None]


def test_verdicts():
    assert evidence.verdict(1, -0.05, None) == "one seed: no claim"
    assert evidence.verdict(3, -0.01, 0.01) == "A better"
    assert evidence.verdict(3, 0.01, 0.01) == "B better"
    assert evidence.verdict(3, -0.01, 0.2) == "no detectable difference at n = 3"
    assert evidence.verdict(3, 0.01, None) == evidence.NO_TEST


def test_one_seed_gives_no_p_value_at_all():
    result = evidence.paired([0.1], [0.2])
    assert result.n == 1 and result.t_p is None and result.wilcoxon_p is None
    assert math.isnan(result.ci_low) and result.mean_diff == pytest.approx(-0.1)


def test_constant_differences_are_not_tested():
    same = evidence.paired([0.1, 0.2, 0.3], [0.1, 0.2, 0.3])
    assert same.t_p == 1.0 and same.ci_low == same.ci_high == 0
    shifted = evidence.paired([0.25, 0.5, 0.75], [0.125, 0.375, 0.625])  # exact in binary
    assert shifted.t_p is None and shifted.mean_diff == 0.125
    with pytest.raises(ValueError, match="pair the values by seed"):
        evidence.paired([0.1, 0.2], [0.1])

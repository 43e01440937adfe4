"""Proof by simulation that the sequential decisions of :mod:`ablate.decide` keep their error
rate, have power, and save seeds: ``python -m ablate.bench.decide [--studies N] [--out FILE]``.

Each simulated study is the quick grid of ``+sweep=quick_claims`` (models A, B, C x every
downsampling mode a packaged claim names on digits), judged on every packaged claim it can
test, with the sweep's own rule for adding seeds: every cell starts at ``min_seeds``; after
each round, the cells of claims still open get one more seed. Per seed, a cell's value is
normal around its mean; with probability 1/27 a run fails to train and lands 2-5 times its
cell's mean error away (the quick grid's measured failure rate before its preset was fixed).
The decisions come from ``ablate.decide`` itself (its tables, futility rule and targets).
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ablate import decide
from ablate.atomic import write_json_atomic

MODELS = ("A", "B", "C")
MODES = ("pool", "stride", "convpool", "conv", "avgpool", "lppool p=2")
DATASET = "digits"
OUTLIER_RATE = 1 / 27
MEAN = {"test_error": 0.02, "consistency_2": 0.90}  # cell means of the quick grid, roughly
HIGHER_IS_BETTER = {"test_error": False, "consistency_2": True}
# Seed-to-seed std of a cell's test error: 0.42 points on the quick grid (median over its 9
# cells, 27 runs at b664470; pooled MAD 0.41) for the error-rate scenarios; 0.3 points for
# power, the spread the paper-scale question is asked at.
MEASURED_SPREAD = 0.0042
SPREAD = 0.003
TARGET = "all-cnn-beats-pooling-C"  # the claim the alternatives are about: conv vs pool in C


@dataclass(frozen=True)
class SimClaim:
    id: str
    metric: str
    a: int  # cell index
    b: int
    rule: decide.Rule


def grid_claims() -> tuple[list[tuple[str, str]], list[SimClaim]]:
    """The cells and the packaged claims that the quick-claims grid can test."""
    from ablate.report import claims as claims_lib

    cells = [(m, d) for m in MODELS for d in MODES]
    index = {cell: i for i, cell in enumerate(cells)}
    found = []
    for claim in claims_lib.packaged()[1]:
        model = str(claim.where.get("model", ""))
        if claim.axis != "downsample" or set(claim.where) != {"model"}:
            continue
        if (model, claim.a) not in index or (model, claim.b) not in index:
            continue
        margin = claims_lib.margin_value(claim, DATASET, MEAN[claim.metric]) or 0.0
        rule = decide.Rule(claim.expect, margin, HIGHER_IS_BETTER[claim.metric])
        found.append(SimClaim(claim.id, claim.metric, index[model, claim.a],
                              index[model, claim.b], rule))
    return cells, found


def draw(rng: np.random.Generator, studies: int, cells: int, seeds: int, metric: str,
         shift: dict[int, float], spread: float) -> np.ndarray:
    """Per-seed values ``[study, cell, seed]``; outliers move the worse way."""
    values = rng.normal(MEAN[metric], spread, (studies, cells, seeds))
    for cell, delta in shift.items():
        values[:, cell, :] += delta
    worse = -1.0 if HIGHER_IS_BETTER[metric] else 1.0
    failed = rng.random(values.shape) < OUTLIER_RATE
    jump = worse * rng.uniform(2, 5, values.shape) * MEAN["test_error"]
    return values + failed * jump


def truth_false(verdict: decide.Verdict, x_true: float, rule: decide.Rule) -> bool:
    """Whether a verdict is wrong for the true (oriented) difference ``x_true``."""
    if verdict == decide.Verdict.SUPPORTED:
        return x_true >= rule.bound
    if verdict == decide.Verdict.CONTRADICTED:
        return x_true <= rule.bound
    if verdict == decide.Verdict.EQUIVALENT:
        return abs(x_true) >= rule.margin
    return False


Pieces = dict[str, dict[int, tuple[np.ndarray, np.ndarray]]]


def within_cells(values: dict[str, np.ndarray], design: decide.Design) -> Pieces:
    """``decide.within_cell`` of every study's cells at each look: metric -> n -> (sums of
    squares, degrees of freedom), each ``[study, cell]``."""
    return {metric: {n: decide.within_cell(data[:, :, :n]) for n in design.looks}
            for metric, data in values.items()}


def run_study(values: dict[str, np.ndarray], pieces: Pieces, tables: list[decide.Table],
              study: int, found: Sequence[SimClaim], design: decide.Design
              ) -> tuple[list[decide.Decision], np.ndarray]:
    """One study with the sweep's rule: start at min_seeds, add seeds to open claims' cells."""
    cells = next(iter(values.values())).shape[1]
    counts = np.full(cells, design.min_seeds)
    closed: dict[int, decide.Decision] = {}
    while True:
        # the spread as the report estimates it (decide.spread's pooling of decide.within_cell),
        # from the seeds run so far
        spreads = {}
        for metric, by_n in pieces.items():
            squares = sum(float(by_n[int(counts[c])][0][study, c]) for c in range(cells))
            freedom = sum(int(by_n[int(counts[c])][1][study, c]) for c in range(cells))
            spreads[metric] = decide.pooled(squares, freedom)
        open_claims = []
        for k, claim in enumerate(found):
            if k in closed:
                continue
            n = int(min(counts[claim.a], counts[claim.b]))
            data = values[claim.metric][study]
            is_futile = decide.futile(data[claim.a, :n], data[claim.b, :n], claim.rule, design,
                                      spreads[claim.metric])
            decision = decide.from_table(tables[k], (study,), n, is_futile)
            if decision.open and n < design.max_seeds:
                open_claims.append(((claim.a, claim.b), n))
            else:
                closed[k] = decision
        if not open_claims:
            return [closed[k] for k in range(len(found))], counts
        for cell, target in decide.targets(open_claims, design.max_seeds).items():
            counts[cell] = max(counts[cell], target)


def scenario(rng: np.random.Generator, studies: int, shift: dict[int, float], spread: float,
             cells: int, found: Sequence[SimClaim], design: decide.Design,
             fixed_up_to: int) -> dict[str, object]:
    """Error, power on the target claim and seeds of the sequential design; power of fixed-n
    designs on the same draws, for the comparison."""
    metrics = sorted({c.metric for c in found})
    values = {m: draw(rng, studies, cells, fixed_up_to, m, shift if m == "test_error" else {},
                      spread * (1 if m == "test_error" else 2)) for m in metrics}
    tables = [decide.table(values[c.metric][:, c.a, :design.max_seeds],
                           values[c.metric][:, c.b, :design.max_seeds], c.rule, design)
              for c in found]
    truth = []
    for c in found:
        mean_a = MEAN[c.metric] + (shift.get(c.a, 0.0) if c.metric == "test_error" else 0.0)
        mean_b = MEAN[c.metric] + (shift.get(c.b, 0.0) if c.metric == "test_error" else 0.0)
        truth.append(c.rule.sign * (mean_a - mean_b))
    wrong = np.zeros(studies, bool)
    target_right = np.zeros(studies, bool)
    seeds = np.zeros(studies)
    target = next(k for k, c in enumerate(found) if c.id == TARGET)
    pieces = within_cells(values, design)
    for s in range(studies):
        decisions, counts = run_study(values, pieces, tables, s, found, design)
        wrong[s] = any(truth_false(d.verdict, x, c.rule)
                       for d, x, c in zip(decisions, truth, found, strict=True))
        target_right[s] = not truth_false(decisions[target].verdict, truth[target],
                                          found[target].rule) and \
            decisions[target].verdict != decide.Verdict.UNDECIDED
        seeds[s] = counts.mean()
    claim = found[target]
    fixed = {}
    for n in range(design.min_seeds, fixed_up_to + 1):
        one_look = decide.Design(design.family, design.alpha, n, n)
        codes = decide.table(values[claim.metric][:, claim.a, :n],
                             values[claim.metric][:, claim.b, :n], claim.rule, one_look).code
        fixed[n] = float((codes[:, 0] == 1).mean() if truth[target] < 0
                         else (codes[:, 0] == 2).mean())
    return {"fwer": float(wrong.mean()), "power": float(target_right.mean()),
            "seeds": float(seeds.mean()), "fixed_power": fixed}


def fixed_n(fixed_power: dict[int, float], power: float) -> int | None:
    """The fewest seeds a fixed design needs for at least ``power``."""
    return next((n for n, p in sorted(fixed_power.items()) if p >= power), None)


def main(argv: Sequence[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--studies", type=int, default=10_000)
    parser.add_argument("--spread", type=float, default=MEASURED_SPREAD,
                        help="seed-to-seed std of a cell's test error where no cell differs "
                             "(fraction; power is always at 0.3 points)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    began = time.time()
    rng = np.random.default_rng(args.seed)
    cells, found = grid_claims()
    design = decide.Design(family=len(found))
    conv_c = cells.index(("C", "conv"))
    margin = max(c.rule.margin for c in found if c.rule.expect == "no_worse")
    boundary = {cells.index((m, "conv")): margin for m in MODELS}
    runs = {
        "null": scenario(rng, args.studies, {}, args.spread, len(cells), found, design, 20),
        "no_worse boundary": scenario(rng, args.studies, boundary, args.spread, len(cells),
                                      found, design, 20),
        "1 pp": scenario(rng, args.studies, {conv_c: -0.01}, SPREAD, len(cells), found,
                         design, 20),
        "0.5 pp": scenario(rng, args.studies, {conv_c: -0.005}, SPREAD, len(cells), found,
                           design, 20),
    }
    alpha, studies = design.alpha, args.studies
    bound = alpha + 3 * math.sqrt(alpha * (1 - alpha) / studies)
    alternative = runs["1 pp"]
    needed = fixed_n(alternative["fixed_power"], alternative["power"])
    result = {
        "studies": studies, "claims": len(found), "alpha": alpha,
        "min_seeds": design.min_seeds, "max_seeds": design.max_seeds, "spread": args.spread,
        "fwer": max(runs["null"]["fwer"], runs["no_worse boundary"]["fwer"]),
        "fwer_bound": bound,
        "power": alternative["power"], "power_0_5pp": runs["0.5 pp"]["power"],
        "seeds_sequential": alternative["seeds"], "seeds_fixed": needed,
        "seed_ratio": alternative["seeds"] / needed if needed else None,
        "fixed_n_for_80_percent": fixed_n(alternative["fixed_power"], 0.8),
        "scenarios": runs, "seconds": round(time.time() - began, 1),
    }
    print(f"{studies} studies per scenario, {len(found)} claims (one family, alpha {alpha}), "
          f"seeds {design.min_seeds}-{design.max_seeds}")
    print(f"| scenario | any false verdict | power ({TARGET}) | mean seeds per cell |")
    print("|---|---|---|---|")
    for name, run in runs.items():
        print(f"| {name} | {run['fwer']:.4f} | {run['power']:.3f} | {run['seeds']:.2f} |")
    print(f"fwer {result['fwer']:.4f} <= bound {bound:.4f}: {result['fwer'] <= bound}; "
          f"power {result['power']:.3f} (0.5 pp: {result['power_0_5pp']:.3f}); seeds "
          f"{alternative['seeds']:.2f} vs fixed n {needed} at the same power: ratio "
          f"{result['seed_ratio'] if needed else float('nan'):.2f}")
    if args.out:
        write_json_atomic(args.out, result)
    return result


if __name__ == "__main__":
    main()

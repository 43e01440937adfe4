"""``hydra.sweeper.seeds=auto``: seeds added, round after round, until the claims are decided.

Every cell of the grid starts at ``min_seeds``. After each round the claims are judged on the
records under the sweep's root, exactly as ``python -m ablate.report`` judges them (one family,
``ablate.decide``); the cells of claims still open get one more seed, until every claim the grid
tests is decided or stopped for futility, ``max_seeds`` is reached, or the ``max_runs`` budget
is spent. Nothing here is remembered between launches: a relaunch derives where the sweep
stands from the records, trains nothing twice, and so reaches the same decisions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ablate import decide
from ablate import overrides as overrides_lib

SEED = "seed"
Cell = tuple[str, ...]  # a grid point's overrides without the seed


@dataclass(frozen=True)
class Plan:
    """The settings of a sequential sweep, checked before anything trains."""

    min_seeds: int
    max_seeds: int
    max_runs: int | None


def settings(seeds: str | None, min_seeds: int | None, max_seeds: int | None,
             max_runs: int | None) -> Plan | None:
    """The sequential plan of the sweeper's settings (None: seeds as the grid gives them);
    ``ValueError`` naming the setting and its fix."""
    if seeds is None:
        return None
    if seeds != "auto":
        raise ValueError(f"hydra.sweeper.seeds={seeds!r}: the only value is auto (or leave "
                         "it out and sweep seed=0,1,2 as a plain axis)")
    plan = Plan(decide.MIN_SEEDS if min_seeds is None else min_seeds,
                decide.MAX_SEEDS if max_seeds is None else max_seeds, max_runs)
    decide.Design(1, min_seeds=plan.min_seeds, max_seeds=plan.max_seeds)  # checks the range
    if max_runs is not None and max_runs < 1:
        raise ValueError(f"hydra.sweeper.max_runs={max_runs}: a budget of at least one run, "
                         "or leave it out for none")
    return plan


def refusal(plan: Plan, cells: Sequence[Cell], resume: bool) -> str | None:
    """Why this grid cannot run with seeds=auto (None: it can), before anything trains."""
    if problem := untestable(cells):
        return problem
    if not resume:
        return ("hydra.sweeper.seeds=auto builds each round on the records of the last: it "
                "cannot run with hydra.sweeper.resume=false")
    if plan.max_runs is not None and plan.max_runs < len(cells) * plan.min_seeds:
        return (f"hydra.sweeper.max_runs={plan.max_runs} is below the first round "
                f"({len(cells)} cells x min_seeds {plan.min_seeds}); raise it")
    return None


def cells_of(jobs: Sequence[Sequence[str]]) -> list[Cell]:
    """The grid's cells: its jobs without their seed, each once, in the grid's order."""
    found: list[Cell] = []
    for job in jobs:
        cell = tuple(overrides_lib.without(list(job), [SEED]))
        if cell not in found:
            found.append(cell)
    return found


def jobs_of(targets: Mapping[Cell, int]) -> list[list[str]]:
    """Every cell at seeds 0 .. its target - 1."""
    return [[*cell, f"{SEED}={seed}"] for cell, target in targets.items()
            for seed in range(target)]


def untestable(cells: Sequence[Cell]) -> str | None:
    """Why no packaged claim can be tested on these cells (None: some can), naming which
    claims need which cells: checked on the overrides, before anything trains."""
    from ablate.report import claims as claims_lib

    values = [{overrides_lib.key(o): overrides_lib.value(o) for o in cell} for cell in cells]
    needs = []
    for claim in claims_lib.packaged()[1]:
        where = {k: str(v) for k, v in claim.where.items()}
        sides = [{**where, claim.axis: side.split()[0]} for side in (claim.a, claim.b)]
        if all(any(all(cell.get(k) == v for k, v in side.items()) for cell in values)
               for side in sides):
            return None
        needs.append(f"{claim.id} needs " + " and ".join(
            " ".join(f"{k}={v}" for k, v in side.items()) for side in sides))
    return ("hydra.sweeper.seeds=auto: no claim can be tested on this grid's cells; "
            + "; ".join(needs[:6]) + ("; ..." if len(needs) > 6 else ""))


@dataclass
class Round:
    """Where the claims stand after a round, and what the next round runs."""

    outcomes: list[Any] = field(default_factory=list)  # claims.Outcome, tested ones
    targets: dict[Cell, int] = field(default_factory=dict)  # seeds each cell should reach
    reasons: list[str] = field(default_factory=list)  # why seeds are added


def judge(root: Path, ours: Mapping[str, Cell], counts: Mapping[Cell, int], plan: Plan) -> Round:
    """The claims on the records under ``root`` (as the report judges them), and the seeds
    each cell of an open claim should reach next. ``ours``: config id -> cell for every run of
    this grid; a claim with a side outside it (another grid's runs under the same root) is not
    this sweep's to extend."""
    from ablate.report import claims as claims_lib
    from ablate.report import load

    frame, _ = load.load_runs([root], wandb_offline="none")
    config, listed = claims_lib.packaged()
    outcomes = claims_lib.evaluate(frame, listed, config, set(),
                                   seeds=(plan.min_seeds, plan.max_seeds))
    tested = [o for o in outcomes if o.decision is not None]
    result = Round(tested)
    open_claims = []
    for outcome in tested:
        decision = outcome.decision
        # no pair of seeds with the metric at all: more seeds of runs that do not measure it
        # (or never finish) cannot decide it
        if not decision.open or decision.available == 0:
            continue
        sides = [{ours.get(str(run["config_id"])) for run in side.by_seed.values()}
                 for side in (outcome.comparison.a, outcome.comparison.b)]
        if any(len(cells) != 1 or None in cells for cells in sides):
            continue
        sides = [cells.pop() for cells in sides]
        launched = min(counts[cell] for cell in sides)  # a failed seed counts: the next is new
        if launched >= plan.max_seeds:
            continue
        open_claims.append((sides, launched))
        result.reasons.append(f"{outcome.comparison.a.name} vs {outcome.comparison.b.name} "
                              f"({outcome.claim.id}) undecided at n = {decision.available}: "
                              "+1 seed")
    wanted = decide.targets(open_claims, plan.max_seeds)
    result.targets = {cell: max(counts[cell], wanted.get(cell, 0)) for cell in counts}
    if plan.max_runs is not None:
        _within_budget(result, counts, plan.max_runs, [sides for sides, _ in open_claims])
    return result


def _within_budget(result: Round, counts: Mapping[Cell, int], max_runs: int,
                   pairs: Sequence[Sequence[Cell]]) -> None:
    """Keep the next round within ``max_runs`` runs in all, granting a claim's two cells
    together (a seed on one side only cannot narrow its interval), claims in the order judged."""
    left, granted = max_runs - sum(counts.values()), dict(counts)
    for cells in pairs:
        extra = {cell: result.targets[cell] - granted[cell] for cell in cells}
        if sum(extra.values()) <= left:
            granted.update({cell: granted[cell] + more for cell, more in extra.items()})
            left -= sum(extra.values())
    if granted != result.targets:
        result.reasons.append(f"budget of {max_runs} runs reached (hydra.sweeper.max_runs): "
                              "no more seeds for the claims left")
    result.targets = granted


def summary(outcomes: Sequence[Any]) -> list[str]:
    """One line per claim the grid tested: its verdict, at how many seeds."""
    return [f"  {o.claim.id}: {o.result}" for o in outcomes]


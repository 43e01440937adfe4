"""The paper's claims (``claims.yaml``) judged on the runs at hand.

A claim is data: an axis, its two values A and B, the runs it is about (``where``), its metric
(test error unless it says otherwise) and what is expected (``lower``, ``higher``, ``no_worse``:
the rules are beside them in ``claims.yaml``). Each context with both sides gives one line of
evidence, and all of them are one family, decided by the sequential procedure of
``ablate.decide``: the verdict a comparison gets here is the one it shows wherever it appears.
"""

from __future__ import annotations

import difflib
import functools
import importlib.resources
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from ablate import decide, records, rows
from ablate.report import compare, evidence, reference
from ablate.report import issues as kinds
from ablate.report.issues import Issues

CLAIMS_FILE = "claims.yaml"
EXPECTATIONS = decide.EXPECTATIONS
REQUIRED = ("expect", "axis", "id", "statement", "cites", "a", "b")
SUPPORTED, CONTRADICTED = decide.Verdict.SUPPORTED, decide.Verdict.CONTRADICTED
NOT_TESTED = "not tested (no runs)"


class ClaimsError(ValueError):
    """A claims file that does not follow the schema documented in ``claims.yaml``."""


@dataclass(frozen=True)
class Settings:
    source: str
    alpha: float
    stalled_margin: float
    paper_setting: dict[str, Any]


@dataclass(frozen=True)
class Claim:
    id: str
    statement: str
    cites: str
    axis: str
    a: str
    b: str
    expect: str
    where: dict[str, Any] = field(default_factory=dict)
    margin: Any = None  # a fraction, "N%" of side B's mean, or a mapping dataset -> either
    metric: str = compare.TEST_ERROR


def _margin_entry(value: Any, where: str) -> float | str:
    """One margin as written: a fraction of the metric, or a share of side B's mean."""
    if isinstance(value, str) and value.endswith("%"):
        try:
            share = float(value[:-1])
        except ValueError:
            share = math.nan
        if 0 < share < 100:
            return value
    elif isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < 1:
        return float(value)
    raise ClaimsError(f"{where}: margin {value!r} must be a fraction of the metric (e.g. "
                      "0.005), a share of side B's mean (e.g. '25%'), or a mapping of dataset "
                      "to either (e.g. {cifar10: 0.005, digits: 0.01})")


def _margins(value: Any, where: str) -> dict[str, float | str] | None:
    """Margins by dataset (key ``default`` for any other), checked once when parsed."""
    if value is None:
        return None
    entries = value if isinstance(value, Mapping) else {"default": value}
    return {str(k): _margin_entry(v, where) for k, v in entries.items()}


def margin_value(claim: Claim, dataset: str, b_mean: float) -> float | None:
    """The claim's margin on ``dataset`` as a fraction of the metric (None: it has none)."""
    if claim.margin is None:
        return None
    entry = claim.margin.get(dataset, claim.margin.get("default"))
    if entry is None:
        raise ClaimsError(f"claim {claim.id!r} has no margin for dataset {dataset!r}: add "
                          f"{dataset}: <fraction> (or default: ...) to its margin in {CLAIMS_FILE}")
    return b_mean * float(entry[:-1]) / 100 if isinstance(entry, str) else entry


def margin_text(claim: Claim, dataset: str) -> str:
    """How the margin used was stated, for the report: "0.5 points" or "25 % of B\'s mean"."""
    entry = claim.margin.get(dataset, claim.margin.get("default"))
    if isinstance(entry, str):
        return f"{entry[:-1]} % of side B's mean"
    return f"{entry * 100:g} points"


def _options(group: str) -> list[str] | None:
    """The choices of a packaged config group (``conf/<group>/*.yaml``); None: not a group."""
    folder = importlib.resources.files("ablate.conf").joinpath(group)
    if not folder.is_dir():
        return None
    return sorted(p.name.removesuffix(".yaml") for p in folder.iterdir()
                  if p.name.endswith(".yaml"))


def _check_names(axis: str, values: Sequence[Any], where_: Mapping[str, Any], where: str) -> None:
    """Axes and values a claim names must exist: a typo would leave it "not tested" forever."""
    from ablate import identity

    for key, named in [(axis, values), *((k, [v]) for k, v in where_.items())]:
        choices = _options(key)
        if choices is None:
            if key not in identity.KEYS:
                hint = difflib.get_close_matches(key, list(identity.KEYS), 1)
                raise ClaimsError(f"{where}: axis {key!r} is neither a config group nor a "
                                  "known key" + (f"; did you mean {hint[0]!r}?" if hint else ""))
            continue
        for value in named:
            option = str(value).split()[0]  # "lppool p=2": the group's choice, then its setting
            if option not in choices:
                raise ClaimsError(f"{where}: {key} {value!r} is not one of {choices} "
                                  f"(conf/{key}/)")


def _require(entry: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in entry:
        raise ClaimsError(f"{where} lacks {key!r}; every claim needs id, statement, cites, axis, "
                          f"a, b and expect (see the comments in {CLAIMS_FILE})")
    return entry[key]


def _expand(entry: Mapping[str, Any]) -> list[dict[str, Any]]:
    """``for_each: {model: [A, B, C]}`` -> one claim per value, ``{model}`` filled in."""
    loops = entry.get("for_each") or {}
    if not isinstance(loops, Mapping) or len(loops) > 1:
        raise ClaimsError(f"claim {entry.get('id')!r}: for_each {loops!r} must map one key to a "
                          "list of values, e.g. {model: [A, B, C]}")
    base = {k: v for k, v in entry.items() if k != "for_each"}
    if not loops:
        return [base]
    [(key, values)] = loops.items()
    expanded = []
    for value in values:
        claim = {k: v.replace("{" + key + "}", str(value)) if isinstance(v, str) else v
                 for k, v in base.items()}
        claim["id"] = f"{base.get('id')}-{value}"
        claim["where"] = {**dict(base.get("where") or {}), key: value}
        expanded.append(claim)
    return expanded


def parse(data: Any) -> tuple[Settings, list[Claim]]:
    """Settings and claims from the parsed YAML, each problem named with its fix."""
    if not isinstance(data, Mapping):
        raise ClaimsError(f"{CLAIMS_FILE} must hold a mapping with source, alpha, "
                          "stalled_margin, paper_setting and claims")
    for key in ("source", "alpha", "stalled_margin", "paper_setting", "claims"):
        _require(data, key, CLAIMS_FILE)
    settings = Settings(str(data["source"]), float(data["alpha"]),
                        float(data["stalled_margin"]), dict(data["paper_setting"]))
    if not 0 < settings.alpha < 1 or not 0 <= settings.stalled_margin < 1:
        raise ClaimsError(f"alpha {settings.alpha} and stalled_margin {settings.stalled_margin} "
                          "must be fractions (e.g. 0.05 and 0.02)")
    claims = []
    for entry in data["claims"]:
        for item in _expand(entry):
            where = f"claim {item.get('id')!r}"
            given = {key: _require(item, key, where) for key in REQUIRED}
            if given["expect"] not in EXPECTATIONS:
                raise ClaimsError(f"{where}: expect {given['expect']!r} is not one of "
                                  f"{EXPECTATIONS}")
            _check_names(given["axis"], [given["a"], given["b"]], item.get("where") or {},
                         where)
            if given["axis"] in compare.NOT_AXES:
                raise ClaimsError(f"{where}: axis {given['axis']!r} cannot be compared along "
                                  f"(none of {compare.NOT_AXES}); use a swept key such as "
                                  "downsample, augmentation or init")
            metric = str(item.get("metric", compare.TEST_ERROR))
            try:
                compare.metric(metric)
            except KeyError:
                raise ClaimsError(f"{where}: metric {metric!r} is not one of "
                                  f"{compare.METRICS}; leave it out for test error") from None
            margin = item.get("margin")
            if given["expect"] == "no_worse" and margin is None:
                raise ClaimsError(f"{where}: expect no_worse needs a margin (the metric, as a "
                                  "fraction, by which A may be worse), e.g. margin: 0.005")
            claims.append(Claim(
                **{k: compare.text(v) if k in ("a", "b") else str(v) for k, v in given.items()},
                where=dict(item.get("where") or {}),
                margin=_margins(margin, where), metric=metric))
    ids = [c.id for c in claims]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise ClaimsError(f"claim ids {duplicates} appear twice; give each claim its own id")
    return settings, claims


@functools.lru_cache(maxsize=1)
def packaged() -> tuple[Settings, list[Claim]]:
    """The claims and settings shipped with the package."""
    text = importlib.resources.files("ablate.report").joinpath(CLAIMS_FILE).read_text("utf-8")
    return parse(yaml.safe_load(text))


def settings() -> Settings:
    return packaged()[0]


@dataclass
class Outcome:
    claim: Claim
    comparison: compare.Comparison | None
    paired: evidence.Paired | None = None  # on the claim's metric: the descriptive interval
    result: str = NOT_TESTED
    decision: decide.Decision | None = None
    margin: float | None = None  # the margin used, as a fraction of the metric
    needed: int | None = None  # seeds a side a fixed design would need (undecided claims)
    design: decide.Design | None = None  # the family's looks and levels
    differences: list[str] = field(default_factory=list)  # from the paper's setting
    outliers: str | None = None  # how the verdict reads without the flagged runs, if otherwise

    @property
    def effect(self) -> str:
        """Why the claim's effect size is what ``needed`` plans for."""
        if self.claim.expect == "no_worse":
            return "the margin"
        return "the paper's difference" if _paper_difference(self) else "the observed difference"


def _paper_difference(outcome: Outcome) -> float | None:
    """The paper's Table 3 difference between the claim's two sides, where it has both."""
    if outcome.comparison is None or outcome.claim.metric != compare.TEST_ERROR:
        return None
    table = reference.table3()
    published = dict(zip(table["name"], table["error"], strict=True))
    a, b = outcome.comparison.a.name, outcome.comparison.b.name
    if a in published and b in published:
        return abs(float(published[a]) - float(published[b])) / 100
    return None


def rule_of(claim: Claim, margin: float | None) -> decide.Rule:
    return decide.Rule(claim.expect, margin or 0.0, compare.metric(claim.metric).higher_is_better)


def _sides(outcome: Outcome) -> tuple[list[float], list[float]]:
    a, b = outcome.comparison.values(outcome.claim.metric)
    return list(a.values()), list(b.values())


def without_outliers(outcome: Outcome, rule: decide.Rule, design: decide.Design,
                     spread: float) -> str | None:
    """Whether the verdict rests on a flagged run: the verdict without the flagged seeds (of
    either side, so the sides stay paired by seed), where it differs; None where it does not
    or nothing is flagged. The verdict itself keeps every finished run."""
    a, b = outcome.comparison.values(outcome.claim.metric)
    flagged = sorted({*evidence.outliers(a), *evidence.outliers(b)}, key=str)
    if not flagged:
        return None
    kept = [s for s in a if s not in flagged]
    again = decide.decide([a[s] for s in kept], [b[s] for s in kept], rule, design, spread)
    if again.verdict == outcome.decision.verdict:
        return None
    seeds = ", ".join(str(s) for s in flagged)
    return f"without the flagged runs (seed {seeds}): {again.verdict} at n = {again.n}"


def result_text(outcome: Outcome, design: decide.Design) -> str:
    """The verdict in words: never a bare "undecided", always what would decide it."""
    decision, n = outcome.decision, outcome.paired.n
    if n == 0:
        if outcome.claim.metric == compare.TEST_ERROR:
            return f"{decide.Verdict.UNDECIDED} (no seed finished on both sides)"
        label = compare.metric(outcome.claim.metric).label
        return f"{decide.Verdict.UNDECIDED} (n/a: no seed has {label} on both sides)"
    if decision.verdict != decide.Verdict.UNDECIDED:
        return str(decision.verdict)
    if n < 2:
        return f"{decide.Verdict.UNDECIDED} ({evidence.ONE_SEED})"
    needed = f"≈ {outcome.needed} seeds would decide it" if outcome.needed else \
        "no spread to plan with"
    if n >= design.max_seeds:
        return f"{decide.Verdict.UNDECIDED} at n = {n} (max_seeds {design.max_seeds}); {needed}"
    if decision.futile:
        return (f"{decide.Verdict.UNDECIDED} at n = {n}: the remaining seeds (up to "
                f"{design.max_seeds}) cannot decide it")
    return f"{decide.Verdict.UNDECIDED} at n = {n}; {needed}"


def sweep_seeds(frame: pd.DataFrame, issues: Issues) -> tuple[int, int] | None:
    """The seed range the runs' ``seeds=auto`` sweeps decided with (from their ``sweep.json``),
    so that the report judges with the looks the sweep judged with; None (the default range)
    where there is none, or where sweeps of different ranges are mixed (a warning says so)."""
    paths = frame.loc[frame["source"] == "record", "path"]
    folders = {rows.sweep_dir(Path(path)) for path in paths}
    ranges = {found for folder in folders if (found := records.seed_range(folder))}
    if len(ranges) > 1:
        issues.add(kinds.SEED_RANGES, ", ".join(f"{low}-{high}" for low, high in sorted(ranges)))
        return None
    return ranges.pop() if ranges else None


def family_design(tested: int, config: Settings, seeds: tuple[int, int] | None = None
                  ) -> decide.Design:
    """One family for every claim the runs can test: the sweep's seed range, else the default."""
    low, high = seeds or (decide.MIN_SEEDS, decide.MAX_SEEDS)
    return decide.Design(max(1, tested), config.alpha, low, high)


def _same(actual: Any, expected: Any) -> bool:
    try:
        return math.isclose(float(actual), float(expected))
    except (TypeError, ValueError):
        return str(actual) == str(expected)


def setting_differences(claim: Claim, comparison: compare.Comparison,
                        paper: Mapping[str, Any]) -> list[str]:
    """How these runs differ from the paper's setting (the claim's own axis aside)."""
    return [f"{key} {compare.text(comparison.setting[key])} (paper: {expected})"
            for key, expected in paper.items()
            if key != claim.axis and key in comparison.setting
            and not _same(comparison.setting[key], expected)]


def evaluate(frame: pd.DataFrame, claims: Sequence[Claim], config: Settings,
             warnings: set[str], seeds: tuple[int, int] | None = None) -> list[Outcome]:
    """One outcome per claim and context with runs; a claim with none is "not tested". Every
    tested outcome is one claim of one family, decided by ``ablate.decide`` (``seeds``: the
    sweep's min and max seeds, which set its looks)."""
    outcomes = []
    for claim in claims:
        found = [c for c in compare.contexts(frame, claim.axis)
                 if all(c.cell.get(k) == compare.text(v) for k, v in claim.where.items())
                 and claim.a in c.sides and claim.b in c.sides]
        if not found:
            outcomes.append(Outcome(claim, None))
        for context in found:
            comparison = compare.compare(
                claim.axis, context.cell, compare.side(claim.a, context.sides[claim.a]),
                compare.side(claim.b, context.sides[claim.b]), warnings)
            outcomes.append(Outcome(claim, comparison, comparison.on(claim.metric),
                                    differences=setting_differences(claim, comparison,
                                                                    config.paper_setting)))
    tested = [o for o in outcomes if o.paired is not None]
    design = family_design(len(tested), config, seeds)
    sides = {o.claim.metric: [] for o in tested}
    for outcome in tested:
        sides[outcome.claim.metric].extend(_sides(outcome))
    spreads = {metric: decide.spread(values) for metric, values in sides.items()}
    for outcome in tested:
        a, b = _sides(outcome)
        dataset = str(outcome.comparison.setting.get("dataset", ""))
        outcome.margin = margin_value(outcome.claim, dataset, float(np.mean(b)) if b else 0.0)
        rule = rule_of(outcome.claim, outcome.margin)
        spread = spreads[outcome.claim.metric]
        outcome.design = design
        outcome.decision = decide.decide(a, b, rule, design, spread)
        effect = outcome.margin if outcome.claim.expect == "no_worse" else (
            _paper_difference(outcome) or abs(outcome.decision.estimate))
        if outcome.decision.verdict == decide.Verdict.UNDECIDED:
            outcome.needed = decide.seeds_needed(effect, spread, design)
        outcome.result = result_text(outcome, design)
        outcome.outliers = without_outliers(outcome, rule, design, spread)
    return outcomes

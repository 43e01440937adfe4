"""The paper's claims (``claims.yaml``) judged on the runs at hand.

A claim is data: an axis, its two values A and B, the runs it is about (``where``), its metric
(test error unless it says otherwise) and what is expected (``lower``, ``higher``, ``no_worse``:
the rules are beside them in ``claims.yaml``). Each context with both sides gives one line of
evidence; Holm's correction runs over every line of the Claims table, as within every table.
"""

from __future__ import annotations

import functools
import importlib.resources
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import yaml

from ablate.report import compare, evidence

CLAIMS_FILE = "claims.yaml"
EXPECTATIONS = ("lower", "higher", "no_worse")
REQUIRED = ("expect", "axis", "id", "statement", "cites", "a", "b")
SUPPORTED, CONTRADICTED, INCONCLUSIVE = "supported", "contradicted", "inconclusive"
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
    margin: float | None = None
    metric: str = compare.TEST_ERROR


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
                margin=None if margin is None else float(margin), metric=metric))
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
    paired: evidence.Paired | None = None  # on the claim's metric
    result: str = NOT_TESTED
    p_adjusted: float | None = None
    differences: list[str] = field(default_factory=list)  # from the paper's setting


def judge(claim: Claim, result: evidence.Paired, p_adjusted: float | None,
          alpha: float) -> str:
    """supported / contradicted / inconclusive by the claim's rule (see ``claims.yaml``);
    ``result`` is the paired test on the claim's metric."""
    if result.n == 0:
        if claim.metric == compare.TEST_ERROR:
            return f"{INCONCLUSIVE} (no seed finished on both sides)"
        label = compare.metric(claim.metric).label
        return f"{INCONCLUSIVE} (n/a: no seed has {label} on both sides)"
    if result.n < 2:
        return f"{INCONCLUSIVE} ({evidence.ONE_SEED})"
    if claim.expect == "no_worse":
        # how much worse A is than B: A − B for an error, B − A where higher is better
        sign = -1 if compare.metric(claim.metric).higher_is_better else 1
        low, high = sorted((sign * result.ci_low, sign * result.ci_high))
        if high < claim.margin:
            return SUPPORTED
        if low > claim.margin:
            return CONTRADICTED
        return INCONCLUSIVE
    if p_adjusted is None or p_adjusted >= alpha or result.mean_diff == 0:
        return INCONCLUSIVE
    a_lower = result.mean_diff < 0
    return SUPPORTED if a_lower == (claim.expect == "lower") else CONTRADICTED


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
             warnings: set[str]) -> list[Outcome]:
    """One outcome per claim and context with runs; a claim with none is "not tested"."""
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
    adjusted = evidence.holm([o.paired.t_p for o in tested])
    for outcome, p in zip(tested, adjusted, strict=True):
        outcome.p_adjusted = p
        outcome.result = judge(outcome.claim, outcome.paired, p, config.alpha)
    return outcomes

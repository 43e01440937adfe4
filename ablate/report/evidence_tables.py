"""Markdown for the evidence: Claims, paired comparisons, per-seed detail, instability.

Pure functions like ``tables``, in the formats of ``formatting``; differences are in percentage
points, and one seed gives no test at all ("–").
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from ablate.report import claims, compare, evidence, instability, per_example, stats
from ablate.report import formatting as fmt
from ablate.report.formatting import p_text
from ablate.report.load import shift_columns
from ablate.rows import CONSISTENCY_FLIP
from ablate.status import Status

MCNEMAR = (f"exact, within each seed pair, never pooled (the seeds share one test set): the range "
           f"of its p over seeds and in how many it favours a side at p < {evidence.ALPHA:g}; "
           "descriptive of these networks on this test set, not the verdict")


def summary_text(values: Sequence[float]) -> str:
    """``mean ± CI`` of per-seed values."""
    summary = evidence.summarize(values)
    return fmt.mean_ci(summary.mean, summary.half_width, summary.n)


def difference(result: evidence.Paired) -> str:
    """``-1.20 [-2.00, -0.40]`` in percentage points (A − B)."""
    if result.n == 0:
        return "–"
    if result.n < 2 or math.isnan(result.ci_low):
        return fmt.signed(100 * result.mean_diff)
    return (f"{fmt.signed(100 * result.mean_diff)} [{fmt.signed(100 * result.ci_low)}, "
            f"{fmt.signed(100 * result.ci_high)}]")


def mcnemar_text(comparison: compare.Comparison) -> str:
    """Never pooled: the range of the per-seed exact p and in how many seed pairs each side's
    own test favours it (``evidence``'s docstring); "B better in 1 of 3" is descriptive."""
    tests, n = comparison.mcnemar, comparison.n
    if not tests:
        return (comparison.mcnemar_note or "–") if n > 1 else "–"
    low, high = (p_text(f(t.p for t in tests)) for f in (min, max))
    favoured = [f"{side} better in {k} of {len(tests)}"
                for side, k in zip("AB", evidence.favouring(tests), strict=True) if k]
    return (f"{low if low == high else f'{low}–{high}'} over {len(tests)}"
            f"{'' if len(tests) == n else f' of {n}'} seeds; "
            f"{', '.join(favoured) or f'no seed below {evidence.ALPHA:g}'}")


def _shared(lists: Sequence[Sequence[str]]) -> list[str]:
    """The items every list holds, in the order of the first."""
    return [item for item in lists[0] if all(item in other for other in lists)] if lists else []


# ---------------------------------------------------------------- claims

def interval_text(low: float, high: float) -> str:
    """A decision interval in percentage points; "–" before the first look."""
    if math.isnan(low) or math.isnan(high):
        return "–"
    return f"[{fmt.signed(100 * low)}, {fmt.signed(100 * high)}]"


def decision_line(outcome: claims.Outcome) -> str:
    """One claim's decision in a line: verdict, effect with its interval, seeds used/needed."""
    claim, decision = outcome.claim, outcome.decision
    if decision is None:
        return f"- **{claims.NOT_TESTED}**: {claim.statement}"
    verdict = outcome.result.split(" at n = ")[0].split(" (")[0]
    effect = (f"A − B {fmt.signed(100 * decision.estimate)} pp "
              f"{interval_text(decision.low, decision.high)}" if decision.n else "no look yet")
    margin = f"; margin {100 * outcome.margin:.2f} pp" if outcome.margin else ""
    why = "" if outcome.result == verdict else f"; {outcome.result}"
    return (f"- **{verdict}**: {claim.statement} — {effect} at n = {decision.n} "
            f"({decision.available} seeds a side{margin}){why}")


def claims_section(outcomes: Sequence[claims.Outcome], config: claims.Settings) -> str:
    """The Claims: one decision line per claim, then the detailed table; what all its tested
    lines share (their runs' setting, how it differs from the paper's) is said once."""
    tested = [o for o in outcomes if o.comparison is not None]
    runs = _shared([[f"{k} {v}" for k, v in sorted(o.comparison.cell.items()) if k != "model"]
                    for o in tested])
    unlike = _shared([o.differences for o in tested])
    rows = []
    for outcome in outcomes:
        c, result = outcome.comparison, outcome.paired
        metric = compare.metric(outcome.claim.metric)
        if c is None or result is None:
            rows.append([outcome.claim.statement, metric.label, "–", 0, "–", "–", "–", "–",
                         outcome.result, ""])
            continue
        decision = outcome.decision
        # McNemar counts examples one side classifies correctly: evidence on error only
        per_example = mcnemar_text(c) if metric.column == compare.TEST_ERROR else "–"
        own = [f"{k} {v}" for k, v in sorted(c.cell.items()) if k != "model"
               and f"{k} {v}" not in runs]
        extra = [d for d in outcome.differences if d not in unlike]
        dataset = str(c.setting.get("dataset", ""))
        margin = (f"{claims.margin_text(outcome.claim, dataset)} = "
                  f"{100 * outcome.margin:.2f} pp" if outcome.margin else "–")
        rows.append([
            outcome.claim.statement, metric.label, ", ".join(own) or "as above", result.n,
            difference(result), f"{interval_text(decision.low, decision.high)} "
            f"(n = {decision.n})" if decision.n else "–", margin, per_example, outcome.result,
            "; ".join(filter(None, [
                f"{'also ' if unlike else ''}not the paper's setting: {', '.join(extra)}"
                if extra else "", outcome.outliers])),
        ])
    cited = list(dict.fromkeys(o.claim.cites for o in outcomes))
    design = next((o.design for o in tested), claims.family_design(0, config))
    return "\n".join([
        "## Claims",
        "",
        *[decision_line(o) for o in outcomes],
        "",
        f"The paper's claims ({config.source}) as hypotheses, judged on the runs below "
        "(`ablate/report/claims.yaml`). A − B = the claim's metric for its first model minus "
        "its second, in percentage points, paired by seed (n: seeds with the metric on both "
        "sides), each side at its own lr chosen by validation error; [95 % t interval], "
        "descriptive. Consistency at k px = % of test images whose predicted class survives a "
        "k-pixel move (mean over 8 directions): higher = more invariant. The verdicts are one "
        f"family of {len(tested)} claims, decided sequentially (`ablate/decide.py`, README "
        "\"Deciding the claims\"): at every seed count n from "
        f"{design.min_seeds} to {design.max_seeds}, a repeated confidence interval of Yuen's "
        f"trimmed difference whose levels over all claims and looks add up to {config.alpha:g}; "
        "the first look whose interval clears the claim's bound (0, or the margin for *no "
        "worse*) decides it, and seeds added later never reopen it. The decision interval is "
        "that look's. An undecided claim says how many seeds a fixed design would need for "
        "80 % power (statsmodels) at the grid's spread and the claim's effect (the margin, "
        "else the paper's difference, else the observed one). A run flagged as an outlier († in "
        "the per-seed tables) stays in; a claim whose verdict would differ without the "
        "flagged runs says so in its note. McNemar per seed (test error "
        f"claims only): {MCNEMAR}.",
        *(["", "Runs of every tested line: " + ", ".join(runs) + "."] if runs else []),
        *(["", "Not the paper's setting in every tested line: " + ", ".join(unlike) + "."]
          if unlike else []),
        "",
        fmt.table(["claim", "metric", "runs", "n", "A − B (pp) [95 % CI]",
                   "decision interval (pp)", "margin", "McNemar per seed", "result", "note"], rows),
        "",
        "Sources: " + "; ".join(cited) + ".",
    ])


# ---------------------------------------------------------------- comparisons

Decided = Mapping[tuple[str, str, frozenset[str], str], claims.Outcome]


def decided_key(axis: str, comparison: compare.Comparison, column: str
                ) -> tuple[str, str, frozenset[tuple[str, tuple[str, ...]]], str]:
    """What makes a comparison the same one in the Claims and the Comparisons tables: its
    cell, its sides and their protocols (one cell run under two protocols is two contexts)."""
    return (axis, json.dumps(comparison.cell, sort_keys=True),
            frozenset((side.value, side.protocols) for side in (comparison.a, comparison.b)),
            column)


def decided_by_claims(outcomes: Sequence[claims.Outcome]) -> Decided:
    return {decided_key(o.claim.axis, o.comparison, o.claim.metric): o
            for o in outcomes if o.comparison is not None and o.decision is not None}


def comparison_table(cell: Mapping[str, str], rows: Sequence[compare.Comparison],
                     alpha: float, metric: compare.Metric, axis: str = "",
                     decided: Decided | None = None) -> str:
    """The pairs of one table on ``metric``. A pair that is one of the claims shows the
    claim's verdict (one family, one verdict); the others are exploratory, Holm-adjusted
    among themselves. Test error adds the lrs, Wilcoxon and McNemar; a consistency is paired
    over the seeds that measured it on both sides, with its own exploratory family."""
    error = metric.column == compare.TEST_ERROR
    results = [c.on(metric.column) for c in rows]
    claimed = [(decided or {}).get(decided_key(axis, c, metric.column)) for c in rows]
    adjusted = evidence.holm([None if o else r.t_p for r, o in zip(results, claimed, strict=True)])
    body = []
    for c, result, p, outcome in zip(rows, results, adjusted, claimed, strict=True):
        verdict = (evidence.verdict(result.n, result.mean_diff, p, alpha,
                                    higher_is_better=metric.higher_is_better) if result.n
                   else "n/a" if c.n and not error else "no seed finished on both sides")
        if outcome is not None:
            verdict = f"claim `{outcome.claim.id}`: {outcome.result}"
        body.append([
            c.a.name if c.a.name == c.b.name else f"{c.a.name} vs {c.b.name}", c.a.value, c.b.value,
            *([f"{fmt.lr_text(c.a.lr)} / {fmt.lr_text(c.b.lr)}"] if error else []), result.n,
            difference(result), p_text(result.t_p),  # no test (None) below two seeds
            *([p_text(result.wilcoxon_p), mcnemar_text(c)] if error else []),
            "claim" if outcome else p_text(p), verdict,
        ])
    protocols = sorted({p for c in rows for p in (*c.a.protocols, *c.b.protocols)})
    # its model (or all) and the setting its runs share
    title = (f"Model {cell['model']}" if "model" in cell else "All models") + ": " + (
        ", ".join(f"{k} {v}" for k, v in sorted(cell.items()) if k != "model") or "–")
    title += (" (protocol " + ", ".join(f"`{p}`" for p in protocols) + ")" if error
              else f": {metric.label}")
    header = ["models", "A", "B", *(["lr A / B (by val)"] if error else []), "n",
              "A − B (pp) [95 % CI]", "t p",
              *(["Wilcoxon p", "McNemar per seed"] if error else []), "Holm p (t)", "verdict"]
    return "\n".join([f"#### {title}", "", fmt.table(header, body)])


def comparisons_section(frame: pd.DataFrame, warnings: set[str], alpha: float,
                        decided: Decided | None = None) -> str:
    error, metric = compare.metric(compare.TEST_ERROR), compare.metric(compare.COMPARED_CONSISTENCY)
    parts = [
        "## Comparisons",
        "",
        "Along every axis the runs vary (other than seed and lr), among runs that are otherwise "
        "identical: each side at its own lr chosen by validation error, paired by seed. "
        "A − B in percentage points of test error with its 95 % t interval; t p = paired t-test; "
        f"Wilcoxon signed-rank from n = {evidence.WILCOXON_MIN_N}; McNemar per seed (runs on "
        f"the same test set only) = {MCNEMAR}. A pair that is one of the Claims shows that "
        "claim's verdict (Holm p: \"claim\"), decided with the others in one family; the "
        "other pairs are exploratory: Holm p = the t-test's p, Holm-adjusted among the "
        f"table's exploratory pairs, verdict at Holm p < {alpha:g}; one seed gives no test.",
        "",
        f"Where runs measured invariance, each table is followed by the same pairs on "
        f"{metric.label} (% of test images whose predicted class survives the move, mean over "
        "8 directions; higher = more invariant): A − B in percentage points over the seeds "
        "that measured it on both sides (n), paired t-test, Holm within that table; n/a = "
        "runs recorded before invariance was measured.",
    ]
    intro = len(parts)
    for axis in compare.axes(frame):
        parts += ["", f"### Along `{axis}`"]
        for cell, rows in compare.tables(frame, axis, warnings):
            parts += ["", comparison_table(cell, rows, alpha, error, axis, decided)]
            if any(c.measured(metric.column) for c in rows):
                parts += ["", comparison_table(cell, rows, alpha, metric, axis, decided)]
    if len(parts) == intro:
        parts += ["", "No axis has two values among otherwise identical runs."]
    return "\n".join(parts)


# ---------------------------------------------------------------- per group

def seeds_section(runs: pd.DataFrame) -> str:
    """Every seed's test error at each model's chosen lr: the numbers behind each interval."""
    picked = stats.at_chosen_lr(runs)
    seeds = sorted({s for _, mine in picked.values() for s in mine["seed"].dropna()},
                   key=lambda s: (str(type(s)), s))
    rows = []
    for name, (entry, mine) in picked.items():
        by_seed = dict(zip(mine["seed"], mine["test_error"], strict=True))
        flagged = evidence.outliers(by_seed)  # shown, never dropped: the mean keeps them
        usable = sum(isinstance(c, np.ndarray) for c in mine["correct"])
        examples = ("ok" if usable == len(mine) else per_example.NA if usable == 0
                    else f"{usable} of {len(mine)} ({per_example.NA} for the rest)")
        rows.append([name, fmt.lr_text(entry["chosen"]["lr"]),
                     *[fmt.pct(by_seed.get(s)) + (f" † (z {flagged[s]:+.1f})" if s in flagged
                                                  else "") for s in seeds],
                     f"{summary_text(mine['test_error'])} (n = {len(mine)})", examples])
    return "\n".join([
        "#### Test error per seed",
        "",
        "Each finished seed's test error % at the model's chosen lr; mean ± 95 % t interval; "
        "per-example = whether its predictions.npz could be used. † = outlier, shown and kept "
        f"in every number: modified z = 0.6745 (x − median) / MAD over the model's seeds "
        f"beyond ±{evidence.OUTLIER_Z:g} (Iglewicz & Hoaglin), from "
        f"{evidence.OUTLIER_MIN_SEEDS} seeds on.",
        "",
        fmt.table(["model", "lr", *[f"seed {s}" for s in seeds], "mean ± 95 % CI",
                    "per-example"], rows),
    ])


def consistency_section(runs: pd.DataFrame) -> str:
    """Does pooling buy invariance? Consistency per model at every shift, at the chosen lr and
    over the same seeds as its test error, so that invariance is never bought with another
    lr than the one the error is reported at."""
    picked = stats.at_chosen_lr(runs)
    heading = ["#### Invariance: prediction consistency under shifts", ""]
    shifts = shift_columns(runs)
    columns = [*shifts.values(), CONSISTENCY_FLIP]
    if not any(mine[columns].notna().to_numpy().any() for _, mine in picked.values()):
        return "\n".join([*heading, "n/a: no run here measured invariance (records made "
                           "before metrics.invariance existed, or with "
                           "`callbacks.test_predictions.shifts=[]`)."])
    rows = []
    for name, (entry, mine) in picked.items():
        row = [name, entry["downsample"], fmt.lr_text(entry["chosen"]["lr"]), len(mine)]
        for column in columns:  # over the seeds that measured it, and how many did if not all
            measured = mine[column].dropna()
            text = summary_text(measured) if len(measured) else "n/a"
            row.append(text if len(measured) in (0, len(mine))
                       else f"{text} ({len(measured)} of {len(mine)})")
        rows.append(row)
    return "\n".join([
        *heading,
        "% of test images whose predicted class stays the one predicted for the unmoved image, "
        "when the image moves by k px (mean over the 8 directions, zero fill) or is flipped "
        "left-right; mean ± 95 % t interval over the seeds at the model's chosen lr (n). "
        "Higher = more invariant; 0 px would be 100. n/a = runs recorded before invariance "
        "was measured; (k of n) = only k seeds measured it.",
        "",
        fmt.table(["model", "downsampling", "lr", "n", *[f"{step} px" for step in shifts],
                    "flip"], rows),
    ])


def instability_section(runs: pd.DataFrame, margin: float) -> str:
    found = instability.counts(runs, margin)
    show_running = bool(found[Status.RUNNING].any())
    rows = []
    for name in stats.ordered_names(found["name"]):
        for _, row in found[found["name"] == name].iterrows():
            rows.append([name, fmt.lr_text(row["lr"]), row["runs"], row[Status.FINISHED],
                         row["stalled"], row[Status.DIVERGED], row[Status.FAILED],
                         *([row[Status.RUNNING]] if show_running else [])])
    chance = {str(d): instability.chance_error(str(d)) for d in runs["dataset"].dropna()}
    levels = ", ".join(f"{d} {fmt.pct(c)} %" if c is not None else f"{d} unknown"
                       for d, c in sorted(chance.items()))
    return "\n".join([
        "#### Instability per model and lr",
        "",
        "stalled at chance = finished with a final training error within "
        f"{fmt.pct(margin)} points of chance ({levels}; the margin is set in "
        "`ablate/report/claims.yaml`).",
        "",
        fmt.table(["model", "lr", "runs", Status.FINISHED, "stalled at chance", Status.DIVERGED,
                    Status.FAILED, *([Status.RUNNING] if show_running else [])], rows),
    ])


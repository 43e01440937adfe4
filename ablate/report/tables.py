"""DataFrame of runs -> ``reports/tables.md``: pure functions, no I/O, no clock, so the same
runs give the same bytes. ``mean ± CI`` is over the ``n`` finished seeds (the half-width of the
95 % Student-t interval; none for one seed). The evidence sections are ``evidence_tables``'.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from ablate import identity, stages
from ablate.report import claims, compare, evidence_tables, load, per_example, reference, stats
from ablate.report.formatting import lr_text, mean_ci, node_text, pct, protocol_text, signed, table
from ablate.report.issues import INFO, Issues
from ablate.rows import COLUMNS
from ablate.status import ENDED, Status

PAPER_DATASET, PAPER_AUGMENTATION = "cifar10", "none"
MAX_MESSAGES = 20  # per kind of warning; the count is always complete
FigureLinks = Mapping[tuple[str, str, str], Sequence[tuple[str, str]]]


# ---------------------------------------------------------------- sections

def result_text(mine: Mapping[str, Any] | None, counts: bool = False) -> str:
    """A model's test error at its chosen lr (``stats.selected``'s entry), or why there is
    none: missing (no run), running, or no finished run (how many failed, with ``counts``)."""
    if not mine:
        return "missing"
    if mine["chosen"] is not None:
        pick = mine["chosen"]
        return mean_ci(pick["test_mean"], pick["test_ci"], pick["n"])
    bad = mine[Status.FAILED] + mine[Status.DIVERGED]
    if not bad:
        return Status.RUNNING
    return f"no finished run ({bad} failed/diverged)" if counts else "no finished run"


def _counts(values: pd.Series, shown: str = "{} ({})", sep: str = ", ") -> str:
    """Each distinct value with its count, sorted; "–" for none."""
    counts = values.value_counts()
    return sep.join(shown.format(v, counts[v]) for v in sorted(counts.index)) or "–"


def _paper(ref: pd.Series | None) -> str:
    return "–" if ref is None else f"{ref['error']:.2f}"


def _versus(pick: Mapping[str, Any] | None, ref: pd.Series | None, missing: str = "–") -> str:
    """A chosen lr's mean test error minus the paper's, in percentage points."""
    return missing if pick is None or ref is None else signed(
        100 * pick["test_mean"] - ref["error"])


def _beside_paper(mine: Mapping[str, Any], ref: pd.Series | None, *also: str) -> list:
    """The augmentation and CIFAR-100 tables' columns: a model's test error, its n, failed and
    diverged runs, the paper's number (after ``also``) and the difference."""
    pick = mine["chosen"] if mine else None
    return [result_text(mine), pick["n"] if pick else 0, mine.get(Status.FAILED, 0),
            mine.get(Status.DIVERGED, 0), *also, _paper(ref), _versus(pick, ref)]


def inputs_section(frame: pd.DataFrame, issues: Issues, sources: Sequence[str]) -> str:
    runs = stats.current(frame)
    status = runs["status"].value_counts()
    rows = [["sources", ", ".join(f"`{s}`" for s in sources) or "–"],
            ["runs loaded", f"{len(frame)} ({_counts(frame['source'], '{}: {}')})"
             if len(frame) else "0"],
            *([f"{name} (counted)", int(status.get(name, 0))] for name in ENDED),
            *([kind, issues.counts[kind]] for kind in sorted(issues.counts)),
            ["datasets", _counts(runs["dataset"])],
            ["protocols", _counts(runs["protocol"], "`{}` ({})")],
            ["sweeps", _counts(runs["sweep"])]]
    # where the runs came from: a table mixing commits or library versions says so here
    rows += [[label, _counts(runs[column].fillna("unknown"), sep="; ")]
             for label, column in (("commits", "code"), ("package versions", "versions"))]
    return "## Inputs\n\n" + table(["", "count"], rows)


def warnings_section(issues: Issues) -> str:
    messages = [(k, m) for k, m in issues.sorted_messages() if k not in INFO]
    if not messages:
        return "## Warnings\n\nNone."
    lines = ["## Warnings", ""]
    for kind in sorted({k for k, _ in messages}):
        mine = [m for k, m in messages if k == kind]
        lines.append(f"- **{kind}**: {issues.counts[kind]}")
        lines += [f"  - {m}" for m in mine[:MAX_MESSAGES]]
        if len(mine) > MAX_MESSAGES:
            lines.append(f"  - ... and {len(mine) - MAX_MESSAGES} more")
    return "\n".join(lines)


def table3_section(runs: pd.DataFrame, dataset: str, augmentation: str,
                   show_running: bool, final: bool = False) -> str:
    """Table 3's layout: the 12 models in the paper's order, missing ones shown as missing.

    ``final``: the runs are a final stage's, each model at the lr its selection chose (and no
    validation error of its own), which is what the paper's table reports."""
    chosen = stats.selected(runs)
    paper = reference.table3().set_index("name")
    comparable = (dataset, augmentation) == (PAPER_DATASET, PAPER_AUGMENTATION)
    header = ["model", "lr (selected)" if final else "lr (by val)", "val error %",
              "test error % (mean ± 95 % CI)", "n", Status.FAILED,
              Status.DIVERGED, *([Status.RUNNING] if show_running else []), "paper % (CIFAR-10)",
              "difference", "params", "paper params (exact)", "paper params (printed)"]
    rows = []
    for name in stats.ordered_names([*paper.index, *chosen]):
        mine = chosen.get(name) or {}
        ref = paper.loc[name] if name in paper.index else None
        pick = mine.get("chosen")
        rows.append([
            name, lr_text(pick and pick["lr"]), pct(pick and pick["val_mean"]),
            result_text(mine), pick["n"] if pick else 0,
            *(mine.get(s, 0) for s in (Status.FAILED, Status.DIVERGED, Status.RUNNING)
              if show_running or s != Status.RUNNING),
            _paper(ref), _versus(pick, ref if comparable else None, "n/a") if pick else "–",
            ", ".join(f"{p:,}" for p in mine["params"]) if mine.get("params") else "–",
            "–" if ref is None else f"{int(ref['params_exact']):,}",
            "–" if ref is None else ref["params_printed"]])
    missing = sum(1 for name in paper.index if not (chosen.get(name) or {}).get("chosen"))
    note = (f"Missing: {missing} of the paper's 12 models have no finished run here. "
            if missing else "")
    if not comparable:
        note += (f"The paper's numbers are CIFAR-10 without augmentation; these runs are "
                 f"{dataset} / augmentation {augmentation}, so no difference is computed.")
    else:
        note += "difference = this table's mean test error − the paper's (percentage points)."
    stage = ", final stage" if final else ""
    return "\n".join([f"#### Table 3 layout: {dataset}, augmentation {augmentation}{stage}", "",
                      note.strip(), "", table(header, rows)])


def lr_section(runs: pd.DataFrame) -> str:
    """Validation error per model and lr: the evidence for each model's lr."""
    lr_stats = stats.lr_stats(runs)
    chosen = stats.selected(runs)
    lrs = sorted(lr_stats["lr"].unique())
    rows = []
    cells = {(c["name"], c["lr"]): c for c in lr_stats.to_dict("records")}
    for name in stats.ordered_names(chosen):
        pick = chosen[name]["chosen"]
        row = [name]
        for lr in lrs:
            c = cells.get((name, lr))
            if c is None:
                row.append("–")
                continue
            text = f"{pct(c['val_mean'])} ({c['n']})" if c["n"] else "no finished run"
            if pick is not None and pick["lr"] == lr:
                text = f"**{text}**"
            extra = [f"{c[k]} {k}" for k in stages.COUNTED if c[k]]
            row.append(text + (" +" + ", ".join(extra) if extra else ""))
        rows.append(row)
    return "\n".join([
        "#### Learning rate chosen by validation error",
        "",
        "Mean validation error % over finished seeds (n); **bold** = the lr each model's test "
        "error is reported at. An lr with failed or diverged runs is chosen only when every lr "
        "has some.",
        "",
        table(["model", *[f"lr {lr_text(lr)}" for lr in lrs]], rows)])


def pivot_section(runs: pd.DataFrame) -> str:
    """Base model x downsampling mode, at each model's chosen lr."""
    chosen = stats.selected(runs)
    models = stats.in_order({*reference.MODELS, *(str(v["model"]) for v in chosen.values())},
                            reference.MODELS)
    modes = compare.value_order("downsample", {*reference.DOWNSAMPLES,
                                               *(str(v["downsample"]) for v in chosen.values())})
    by_cell = {(str(v["model"]), str(v["downsample"])): v for v in chosen.values()}
    rows = []
    for model in models:
        row = [model]
        for mode in modes:
            mine = by_cell.get((model, mode))
            pick = mine and mine["chosen"]
            row.append(f"{result_text(mine)} (n = {pick['n']})" if pick
                       else result_text(mine, counts=True))
        rows.append(row)
    return "\n".join([
        "#### Model x downsampling",
        "",
        "Test error % (mean ± 95 % t interval over seeds, n) at each model's chosen lr; "
        "pool = Model X, stride = Strided-CNN-X, convpool = ConvPool-CNN-X, conv = All-CNN-X; "
        "avgpool = average pooling, lppool p=k = LP-pooling, the p-norm of max-pooling's windows "
        "at p = k (max-pooling is p = ∞).",
        "",
        table(["model", *modes], rows)])


def augmentation_section(frame: pd.DataFrame, protocol: str, dataset: str,
                         augmentations: Sequence[str]) -> str:
    """Each model under each augmentation it was run with, beside the paper's numbers."""
    rows = []
    per_aug = {aug: stats.selected(stats.runs_of(frame, protocol, dataset, aug))
               for aug in augmentations}
    names = stats.ordered_names({n for aug in augmentations if aug != "none"
                                 for n in per_aug[aug]})
    for name in names:
        for aug in augmentations:
            mine = per_aug[aug].get(name) or {}
            rows.append([name, aug, lr_text(mine.get("chosen") and mine["chosen"]["lr"]),
                         *_beside_paper(mine, reference.lookup(name, dataset, aug))])
    parts = [f"#### Augmentation comparison: {dataset}", "",
             "flip_translate = the paper's small augmentation; large = our approximation of its "
             "large one (the paper also used a larger network).", "",
             table(["model", "augmentation", "lr (by val)", "test error %", "n", Status.FAILED,
                    Status.DIVERGED, "paper %", "difference"], rows)]
    if dataset == PAPER_DATASET:
        context = reference.comparisons()
        errors = context.set_index(["name", "augmentation"])["error"]
        ctx_rows = [[method, *(f"{errors[method, a]:.2f}" if (method, a) in errors.index else "–"
                               for a in ("none", "augmented"))]
                    for method in dict.fromkeys(context["name"])]
        parts += ["", "For context, the comparison rows the paper quotes (CIFAR-10, each "
                  "method's own augmentation):", "",
                  table(["method", "no augmentation %", "augmented %"], ctx_rows)]
    return "\n".join(parts)


def cifar100_section(frame: pd.DataFrame, protocol: str) -> str:
    """Models run on CIFAR-100, beside their CIFAR-10 runs and the paper's All-CNN-C."""
    c100 = stats.selected(stats.runs_of(frame, protocol, "cifar100", "none"))
    c10 = stats.selected(stats.runs_of(frame, protocol, "cifar10", "none"))
    rows = [[name, result_text(c10.get(name)),
             *_beside_paper(c100[name], reference.lookup(name, "cifar100", "none"),
                            _paper(reference.lookup(name, "cifar10", "none")))]
            for name in stats.ordered_names(c100)]
    return "\n".join(["#### CIFAR-100 (no augmentation)", "",
                      table(["model", "CIFAR-10 test %", "CIFAR-100 test %", "n", Status.FAILED,
                             Status.DIVERGED, "paper CIFAR-10 %", "paper CIFAR-100 %",
                             "difference (CIFAR-100)"], rows)])


def stage_note(runs: pd.DataFrame, final: bool, partner: str | None) -> str:
    """Which stage of the protocol these runs are, and where the other one is."""
    if final:
        images = sorted({int(n) for n in runs["train_images"].dropna()})
        counted = f"all {' / '.join(f'{n:,}' for n in images)} " if images else "all "
        chose = f" (protocol `{partner}`)" if partner else ""
        return (f"**Final stage**: each model retrained on {counted}training images (no "
                f"validation split) at the lr its validation error chose in the selection "
                f"stage{chose}, and tested at its last epoch. The Table 3 layout is built from "
                "these runs.")
    if partner:
        return (f"**Selection stage**: trained with a held-out validation split, which chose "
                f"each model's lr; the final stage (protocol `{partner}`) retrained at those lrs "
                "on all training images, and its runs make the Table 3 layout.")
    return ("**Selection stage**: trained with a held-out validation split, which chooses each "
            "model's lr; no final stage yet (`+sweep=<name>_final selection=<this sweep>` "
            "retrains at those lrs on all training images, as the paper's recipe does).")


def protocol_section(frame: pd.DataFrame, protocol: str, index: int, total: int,
                     figure_links: FigureLinks, show_running: bool, stalled_margin: float) -> str:
    runs = stats.current(frame)
    mine = runs[runs["protocol"] == protocol]
    spec = load.parsed(mine["protocol_spec"].dropna().iloc[0])
    status = mine["status"].value_counts()
    counts = ", ".join(f"{int(status.get(s, 0))} {s}"
                       for s in (*ENDED, Status.RUNNING) if status.get(s, 0))
    final = stages.stage_of(spec) == stages.FINAL
    # the protocol of its other stage (selection <-> final), where both have runs: the two
    # differ only in ``stages.STAGE_KEYS``
    study = mine["study"].dropna()
    partners = runs.loc[(runs["study"] == (study.iloc[0] if len(study) else None))
                        & (runs["stage"] != stages.stage_of(spec)), "protocol"].dropna()
    partner = str(partners.iloc[0]) if len(partners) else None
    parts = [f"## Protocol `{protocol}`" + (f" ({index} of {total})" if total > 1 else "")
             + (": final stage" if final else ""), "",
             f"{len(mine)} run{'' if len(mine) == 1 else 's'}: {counts}.", "",
             f"Protocol: {protocol_text(spec)}.", "", stage_note(mine, final, partner)]
    if total > 1:
        others = runs[(runs["protocol"] != protocol) & runs["protocol_spec"].notna()]
        other_specs = [load.parsed(s) for s in sorted(others["protocol_spec"].unique())]
        differing = [k for k in identity.PROTOCOL_KEYS
                     if any(o.get(k) != spec.get(k) for o in other_specs)]
        parts += ["", "Differs from the other protocols in: "
                  + ", ".join(f"`{k}` ({node_text(spec.get(k))})" for k in differing) + "."]
    keys = [g for g in stats.groups(frame) if g[0] == protocol]
    for _, dataset, augmentation in keys:
        group = stats.runs_of(frame, protocol, dataset, augmentation)
        if not final and partner and not stats.runs_of(frame, partner, dataset,
                                                       augmentation).empty:
            layout = (f"#### Table 3 layout: {dataset}, augmentation {augmentation}\n\nFrom "
                      f"the final stage, protocol `{partner}`: these runs chose its lrs.")
        else:
            layout = table3_section(group, dataset, augmentation, show_running, final)
        parts += ["", f"### {dataset}, augmentation {augmentation}", "", layout, "",
                  *([] if final else [lr_section(group), ""]), pivot_section(group), "",
                  evidence_tables.seeds_section(group), "",
                  evidence_tables.instability_section(group, stalled_margin), "",
                  evidence_tables.consistency_section(group)]
        for title, link in figure_links.get((protocol, dataset, augmentation), ()):
            parts += ["", f"![{title}]({link})"]
    datasets = sorted({d for _, d, _ in keys})
    for dataset in datasets:
        augmentations = sorted({a for _, d, a in keys if d == dataset},
                               key=lambda a: (a != "none", a))
        if any(a != "none" for a in augmentations):
            parts += ["", augmentation_section(frame, protocol, dataset, augmentations)]
    if "cifar100" in datasets and any(k[1:] == ("cifar100", "none") for k in keys):
        parts += ["", cifar100_section(frame, protocol)]
    return "\n".join(parts)


def render(frame: pd.DataFrame, issues: Issues, sources: Sequence[str] = (),
           figure_links: FigureLinks | None = None) -> str:
    """The whole of ``reports/tables.md`` for these runs."""
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"not a runs DataFrame: columns {missing} missing")
    command = "python -m ablate.report " + " ".join(sources)
    # The comparisons add their own warnings (test sets that differ): to a copy, so that
    # rendering twice never counts a warning twice.
    issues = copy.deepcopy(issues)
    settings, claim_list = claims.packaged()
    refused: set[str] = set()  # seed pairs on different test sets, found while comparing
    outcomes = claims.evaluate(frame, claim_list, settings, refused,
                               seeds=claims.sweep_seeds(frame, issues))
    comparisons = evidence_tables.comparisons_section(
        frame, refused, settings.alpha, evidence_tables.decided_by_claims(outcomes))
    for message in sorted(refused):
        issues.add(per_example.TEST_SETS_DIFFER, message)
    parts = [
        "# All-CNN pooling ablation: results beside the paper",
        "",
        f"Generated by `{command.strip()}`; do not edit, regenerate. Errors are test errors "
        "in %, mean ± the half-width of the 95 % Student-t interval over seeds (n), at the "
        "learning rate chosen per model by validation error. Paper: " + reference.source(),
        "",
        evidence_tables.claims_section(outcomes, settings),
        "",
        inputs_section(frame, issues, sources),
        "",
        warnings_section(issues)]
    runs = stats.current(frame)
    finals = set(runs.loc[runs["stage"] == stages.FINAL, "protocol"].astype(str))
    protocols = sorted(runs["protocol"].dropna().unique(),  # final stages first: Table 3's runs
                       key=lambda p: (p not in finals, -int((runs["protocol"] == p).sum()), p))
    show_running = bool((runs["status"] == Status.RUNNING).any())
    for index, protocol in enumerate(protocols, start=1):
        parts += ["", protocol_section(frame, protocol, index, len(protocols),
                                       figure_links or {}, show_running,
                                       settings.stalled_margin)]
    if not protocols:
        parts += ["", "No runs with a readable config were found."]
    parts += ["", comparisons]
    return "\n".join(parts) + "\n"

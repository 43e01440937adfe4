"""The report's evidence on hand-made records: Claims first, t intervals, paired comparisons
along any axis, per-example McNemar from predictions.npz, and every kind of bad input.

Records come from test_report.write_record (the real config, the real record writer);
each finished run here also gets a predictions.npz whose wrong examples are the first
``round(error * N)`` of a permutation fixed by the seed, so that two runs of one seed have
nested mistakes and McNemar's discordant counts are differences of error counts.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from test_report import _rows, write_record

from ablate import atomic, decide, identity, predictions
from ablate.report import (
    claims,
    evidence,
    figures,
    formatting,
    load,
    per_example,
    reference,
    tables,
)
from ablate.report.__main__ import main as report_main


def _name(model: str, downsample: str) -> str:
    """The paper's name of a cell, as its published numbers spell it."""
    table = reference.table3()
    row = table[(table["model"] == model) & (table["downsample"] == downsample)]
    return str(row["name"].iloc[0])

N = 200  # test examples: errors are multiples of 0.005
LABELS = np.arange(N) % 10
SHORT = ("trainer.max_epochs=20",)
# test error per seed (0, 1, 2) at lr 0.05, Model C's four variants
ERRORS = {"pool": (0.12, 0.13, 0.14), "stride": (0.30, 0.31, 0.33),
          "convpool": (0.105, 0.125, 0.11), "conv": (0.10, 0.12, 0.11)}


def run(root: Path, job: str, *, model: str, downsample: str, seed: int, lr: float,
        test: float | None, val: float | None = None, status: str = "finished",
        cell: dict | None = None, overrides: tuple[str, ...] = SHORT,
        labels: np.ndarray = LABELS, with_predictions: bool = True,
        train_error: float | None = None) -> Path:
    path = write_record(root, job, name=_name(model, downsample), model=model,
                        downsample=downsample, lr=lr, seed=seed, status=status, test=test,
                        val=test if val is None else val, dataset="digits", overrides=overrides)
    record = json.loads(path.read_text())
    record["cell"].update({"trainer.max_epochs": 20, **(cell or {})})
    record["cell_id"] = identity.cell_id(record["cell"])
    if train_error is not None:
        record["metrics"]["train_error"] = train_error
    if with_predictions and status == "finished":
        correct = np.ones(N, bool)
        correct[np.random.default_rng(seed).permutation(N)[:round(test * N)]] = False
        predicted = np.where(correct, labels, (labels + 1) % 10)
        record["predictions"] = predictions.write_predictions(
            path.parent, predicted, np.eye(10)[predicted], labels)
    atomic.write_json_atomic(path, record)
    return path


def make_study(root: Path) -> Path:
    """Model C's four variants at 3 seeds and 2 lrs, Model A at one seed, some instability."""
    for mode, errors in ERRORS.items():
        for seed, error in enumerate(errors):
            run(root, f"C-{mode}-{seed}", model="C", downsample=mode, seed=seed, lr=0.05,
                test=error)
            # lr 0.1: better test error, worse validation error: never chosen
            run(root, f"C-{mode}-{seed}-fast", model="C", downsample=mode, seed=seed, lr=0.1,
                test=0.05, val=error + 0.05)
    # Model A: one seed each
    run(root, "A-pool", model="A", downsample="pool", seed=0, lr=0.05, test=0.2)
    run(root, "A-conv", model="A", downsample="conv", seed=0, lr=0.05, test=0.15)
    # instability at Model A pool, lr 0.1: one stalled at chance (digits: 90 %), one diverged
    run(root, "A-pool-stalled", model="A", downsample="pool", seed=0, lr=0.1, test=0.9,
        val=0.9, train_error=0.89)
    run(root, "A-pool-diverged", model="A", downsample="pool", seed=1, lr=0.1, test=None,
        status="diverged")
    return root


@pytest.fixture
def study(tmp_path: Path) -> Path:
    return make_study(tmp_path / "sweeps")


def render(root: Path) -> str:
    frame, issues = load.load_runs([root])
    return tables.render(frame, issues, sources=["sweeps"])


def section(text: str, heading: str) -> str:
    return text.split(heading, 1)[1].split("\n## ", 1)[0]


def named(text: str, first_cell: str) -> list[list[str]]:
    """Every table row in ``text`` whose first cell is ``first_cell``."""
    return [row for row in table_rows(text) if row[0] == first_cell]


def table_rows(text: str) -> list[list[str]]:
    """Cells of every row of the markdown tables in ``text`` (header rows included)."""
    return [[c.strip() for c in line.strip().strip("|").split("|")]
            for line in text.splitlines() if line.startswith("| ")]


def test_a_claim_stopped_for_futility_says_so_and_one_at_max_seeds_what_would_decide_it():
    claim = next(c for c in claims.packaged()[1] if c.id == "all-cnn-beats-pooling-C")
    design = decide.Design(family=18)
    a, b = np.array([0.020, 0.022, 0.021]), np.array([0.0201, 0.0221, 0.0211])
    outcome = claims.Outcome(claim, None, evidence.paired(a, b), needed=40,
                             decision=decide.decide(a, b, decide.Rule("lower"), design, 0.003))
    assert claims.result_text(outcome, design) == (
        "undecided at n = 3: the remaining seeds (up to 10) cannot decide it")
    a, b = np.resize(a, 10), np.resize(b, 10)
    outcome = claims.Outcome(claim, None, evidence.paired(a, b), needed=40,
                             decision=decide.decide(a, b, decide.Rule("lower"), design, 0.003))
    assert claims.result_text(outcome, design) == (
        "undecided at n = 10 (max_seeds 10); ≈ 40 seeds would decide it")


def test_claims_open_the_report_with_numbers_and_setting_notes(study):
    text = render(study)
    headings = [line for line in text.splitlines() if line.startswith("## ")]
    assert headings[0] == "## Claims" and headings[1] == "## Inputs"
    header = ["claim", "metric", "runs", "n", "A − B (pp) [95 % CI]", "decision interval (pp)",
              "margin", "McNemar per seed", "result", "note"]
    claims_text = section(text, "## Claims")
    # one decision line per claim opens the section, before the detailed table
    lines = [line for line in claims_text.splitlines() if line.startswith("- **")]
    assert len(lines) == len(claims.packaged()[1])
    assert claims_text.index(lines[-1]) < claims_text.index("| claim |")
    rows = table_rows(claims_text)
    assert rows[0] == header
    claim_rows = {r[0]: dict(zip(header, r, strict=True)) for r in rows[1:]}
    # what every line shares is said once, above the table, not on each row
    note = ("dataset digits (paper: cifar10), dataset.val_size 0.1 (paper: 0), "
            "trainer.max_epochs 20 (paper: 350)")
    assert f"Not the paper's setting in every tested line: {note}." in claims_text
    assert claims_text.count("trainer.max_epochs 20 (paper: 350)") == 1
    assert ("Runs of every tested line: augmentation none, dataset digits, "
            "trainer.max_epochs 20.") in claims_text
    # every line with runs on both sides, measured or not: 3 of Model C, 1 of A on one seed,
    # the two invariance lines whose runs never measured it
    assert "one family of 6 claims" in claims_text
    # conv - pool: -2, -1, -3 points; descriptive paired t interval as worked by hand in
    # test_evidence; McNemar within each seed: 4, 2, 6 examples only conv got right, 0 only
    # pool -> p = 2 / 2^4, 2 / 2^2, 2 / 2^6 = 0.125, 0.5, 0.031: one seed of three favours conv.
    # At n = 3 the first look spends 81 / 25,333 of alpha / 4 (decide.level): Welch's t on
    # 3 + 3 seeds cannot clear 0 there, and the paper's 0.66-point difference at the grid's
    # spread asks for far more seeds than 10
    row = claim_rows["All-CNN-C has lower error than Model C"]
    assert row["n"] == "3" and row["A − B (pp) [95 % CI]"] == "-2.00 [-4.48, +0.48]"
    assert row["McNemar per seed"] == "0.031–0.500 over 3 seeds; A better in 1 of 3"
    assert re.fullmatch(r"undecided at n = 3; ≈ \d+ seeds would decide it", row["result"])
    assert row["decision interval (pp)"].endswith("(n = 3)") and row["margin"] == "–"
    low, high = (float(v) for v in re.findall(r"[-+]\d+\.\d+", row["decision interval (pp)"]))
    assert low < -2.00 < high and high > 0  # wider than the 95 % interval, straddling 0
    assert row["note"] == "" and row["runs"] == "as above"
    # stride - pool: +18, +18, +19 points: the same first look, far from deciding
    row = claim_rows["Strided-CNN-C has higher error than Model C"]
    assert row["result"].startswith("undecided at n = 3; ≈ ")
    # conv - convpool: -0.5, -0.5, 0 points against digits' 1-point margin; at the grid's
    # spread (~1 point here) a fixed design would need far more than 10 seeds
    row = claim_rows["All-CNN-C is no worse than ConvPool-CNN-C (within the margin)"]
    assert row["A − B (pp) [95 % CI]"] == "-0.33 [-1.05, +0.38]"
    assert row["margin"] == "1 points = 1.00 pp"
    needed = re.fullmatch(r"undecided at n = 3; ≈ (\d+) seeds would decide it", row["result"])
    assert needed and int(needed[1]) > 10
    row = claim_rows["All-CNN-A has lower error than Model A"]
    assert row["result"] == "undecided (one seed: no claim)"
    assert row["decision interval (pp)"] == row["McNemar per seed"] == "–"
    for untested in ("All-CNN-B has lower error than Model B",
                     "Augmentation (flip_translate) lowers All-CNN-C's error"):
        assert claim_rows[untested]["result"] == "not tested (no runs)"
        assert f"- **not tested (no runs)**: {untested}" in lines


def test_cells_show_the_t_interval_and_every_seed(study):
    text = render(study)
    # conv 10, 12, 11 %: mean 11, sd 1, half-width t(0.975, 2) / sqrt(3) = 4.3027 / 1.7321
    [pivot_c] = _rows(text, "#### Model x downsampling", "C")
    assert pivot_c[4] == "11.00 ± 2.48 (n = 3)"
    [pivot_a] = _rows(text, "#### Model x downsampling", "A")
    assert pivot_a[1] == "20.00 (n = 1)"  # one seed: no interval
    [seeds] = _rows(text, "#### Test error per seed", "All-CNN-C")
    assert seeds == ["All-CNN-C", "0.05", "10.00", "12.00", "11.00", "11.00 ± 2.48 (n = 3)",
                     "ok"]


def test_each_model_gets_a_table_of_its_downsampling_pairs(study):
    text = section(render(study), "## Comparisons")
    model_c = text.split("#### Model C:", 1)[1].split("\n#", 1)[0]
    pairs = [tuple(r[1:3]) for r in named(model_c, "Model C vs Strided-CNN-C")
             + named(model_c, "Model C vs ConvPool-CNN-C")
             + named(model_c, "Model C vs All-CNN-C")
             + named(model_c, "Strided-CNN-C vs ConvPool-CNN-C")
             + named(model_c, "Strided-CNN-C vs All-CNN-C")
             + named(model_c, "ConvPool-CNN-C vs All-CNN-C")]
    assert pairs == [("pool", "stride"), ("pool", "convpool"), ("pool", "conv"),
                     ("stride", "convpool"), ("stride", "conv"), ("convpool", "conv")]
    [pool_conv] = named(model_c, "Model C vs All-CNN-C")
    header = ["models", "A", "B", "lr A / B (by val)", "n", "A − B (pp) [95 % CI]", "t p",
              "Wilcoxon p", "McNemar per seed", "Holm p (t)", "verdict"]
    row = dict(zip(header, pool_conv, strict=True))
    assert row["lr A / B (by val)"] == "0.05 / 0.05"  # each side's lr by validation error
    assert row["A − B (pp) [95 % CI]"] == "+2.00 [-0.48, +4.48]" and row["t p"] == "0.074"
    assert row["Wilcoxon p"] == "–"  # n < 6
    assert row["McNemar per seed"] == "0.031–0.500 over 3 seeds; B better in 1 of 3"
    # a pair that is a claim shows the claim's verdict, word for word as in the Claims
    claim_row = named(section(render(study), "## Claims"),
                      "All-CNN-C has lower error than Model C")[0]
    assert row["Holm p (t)"] == "claim"
    assert row["verdict"] == f"claim `all-cnn-beats-pooling-C`: {claim_row[-2]}"
    [pool_stride] = named(model_c, "Model C vs Strided-CNN-C")
    assert pool_stride[-1].startswith("claim `strided-worse-than-pooling-C`: undecided")
    # the pairs no claim names are exploratory, Holm-adjusted among themselves:
    # stride - convpool +20 [15.5, 24.5] (t p 0.003) stays "A better" ... the wrong way round:
    # A (stride) has the higher error
    [stride_convpool] = named(model_c, "Strided-CNN-C vs ConvPool-CNN-C")
    assert stride_convpool[-1] == "B better" and float(stride_convpool[9]) < 0.05
    model_a = text.split("#### Model A:", 1)[1].split("\n#", 1)[0]
    [one] = named(model_a, "Model A vs All-CNN-A")
    assert one[4] == "1" and one[6:9] == ["–", "–", "–"] and one[9] == "claim"
    assert one[-1] == "claim `all-cnn-beats-pooling-A`: undecided (one seed: no claim)"


def test_instability_counts_stalled_and_diverged_runs(study):
    text = render(study)
    rows = _rows(text, "#### Instability per model and lr", "Model A")
    assert rows == [["Model A", "0.05", "1", "1", "0", "0", "0"],
                    ["Model A", "0.1", "2", "1", "1", "1", "0"]]
    assert claims.settings().stalled_margin == 0.02


def test_truncated_predictions_give_na_and_a_warning_and_nothing_else_changes(study):
    before = render(study)
    target = study / "table3/2026-01-01_00-00-00/C-conv-2" / predictions.PREDICTIONS_FILE
    target.write_bytes(target.read_bytes()[:100])
    after = render(study)
    warnings = section(after, "## Warnings")
    assert f"**{per_example.UNUSABLE}**: 1" in warnings
    assert "C-conv-2/result.json: predictions.npz has sha256" in warnings
    [seeds] = _rows(after, "#### Test error per seed", "All-CNN-C")
    assert seeds[-1] == "2 of 3 (n/a (no predictions) for the rest)"
    # McNemar on the two usable seeds, each alone: 4 and 2 discordant, p = 2 / 2^4, 2 / 2^2
    [pool_conv] = named(section(after, "## Comparisons"), "Model C vs All-CNN-C")
    assert pool_conv[8] == "0.125–0.500 over 2 of 3 seeds; no seed below 0.05"
    # every seed-level number is untouched
    table3 = "#### Table 3 layout"
    assert before.split(table3)[1].split("####")[0] == after.split(table3)[1].split("####")[0]
    [pool_conv_before] = named(section(before, "## Comparisons"), "Model C vs All-CNN-C")
    assert pool_conv_before[:8] == pool_conv[:8]


def _red_pixels(png: Path) -> int:
    """Pixels of the outlier cross's colour (#d62728) in a figure."""
    from matplotlib.image import imread

    rgb = imread(png)[..., :3]
    return int((np.abs(rgb - np.array([214, 39, 40]) / 255).max(axis=-1) < 0.03).sum())


def test_an_outlier_is_flagged_in_the_per_seed_table_and_figure_and_kept(tmp_path):
    root = tmp_path / "sweeps"
    # pool: median 13 %, MAD 1 point, seed 4 at 40 %: modified z = 0.6745 * 27 = +18.2;
    # conv: every |z| <= 0.67; Model A pool: two seeds, never flagged however far apart
    cells = {("C", "pool"): (0.12, 0.13, 0.14, 0.13, 0.40),
             ("C", "conv"): (0.10, 0.12, 0.11, 0.11, 0.12), ("A", "pool"): (0.10, 0.60)}
    for (model, mode), errors in cells.items():
        for seed, error in enumerate(errors):
            run(root, f"{model}{mode}{seed}", model=model, downsample=mode, seed=seed, lr=0.05,
                test=error)
    text = render(root)
    assert "† = outlier, shown and kept in every number" in text
    [pool] = _rows(text, "#### Test error per seed", "Model C")
    # flagged, and still in the mean: (12 + 13 + 14 + 13 + 40) / 5 = 18.4
    assert pool[2:7] == ["12.00", "13.00", "14.00", "13.00", "40.00 † (z +18.2)"]
    assert pool[7].startswith("18.40 ± ")
    [conv] = _rows(text, "#### Test error per seed", "All-CNN-C")
    [two] = _rows(text, "#### Test error per seed", "Model A")
    assert "†" not in "".join(conv) + "".join(two) and two[2:4] == ["10.00", "60.00"]
    # the verdict keeps the outlier: pool - conv = +2, +1, +3, +2, +28 points
    [pool_conv] = named(section(text, "## Comparisons"), "Model C vs All-CNN-C")
    assert pool_conv[4] == "5" and pool_conv[5].startswith("+7.20 [")
    # the figure marks it with a red cross; a study without outliers has none
    frame, _ = load.load_runs([root])
    flagged = figures.error_by_downsampling(frame, "t", tmp_path / "flagged.png", paper=False)
    tight, _ = load.load_runs([make_study(tmp_path / "tight")])
    clean = figures.error_by_downsampling(tight, "t", tmp_path / "clean.png", paper=False)
    assert _red_pixels(flagged) > 20 and _red_pixels(clean) == 0


def test_records_without_predictions_get_seed_level_tests_only(tmp_path):
    root = tmp_path / "sweeps"
    for seed in range(3):
        for mode in ("pool", "conv"):
            # how a run was logged is in its cell but never splits a comparison
            run(root, f"{mode}{seed}", model="C", downsample=mode, seed=seed, lr=0.05,
                test=ERRORS[mode][seed], with_predictions=False,
                cell={"logger": "none" if mode == "pool" else "wandb"})
    text = render(root)
    assert "### Along `logger`" not in text
    assert "## Warnings\n\nNone." in text
    [pool_conv] = named(section(text, "## Comparisons"), "Model C vs All-CNN-C")
    assert pool_conv[6] == "0.074" and pool_conv[8] == per_example.NA


def test_different_test_sets_are_refused_naming_both_fingerprints(tmp_path):
    root = tmp_path / "sweeps"
    other = LABELS[::-1].copy()
    for seed in range(2):
        run(root, f"pool{seed}", model="C", downsample="pool", seed=seed, lr=0.05,
            test=ERRORS["pool"][seed])
        run(root, f"conv{seed}", model="C", downsample="conv", seed=seed, lr=0.05,
            test=ERRORS["conv"][seed], labels=other)
    text = render(root)
    warnings = section(text, "## Warnings")
    assert f"**{per_example.TEST_SETS_DIFFER}**: 2" in warnings
    for fp in (predictions.fingerprint(LABELS), predictions.fingerprint(other)):
        assert fp in warnings
    [pool_conv] = named(section(text, "## Comparisons"), "Model C vs All-CNN-C")
    assert pool_conv[8] == "n/a (test sets differ)" and pool_conv[6] != "–"
    # rendering does not change the caller's issues, so a second render is the same
    frame, issues = load.load_runs([root])
    assert tables.render(frame, issues) == tables.render(frame, issues)
    assert per_example.TEST_SETS_DIFFER not in issues.counts


def test_an_init_sweep_is_compared_along_init(tmp_path):
    root = tmp_path / "sweeps"
    for seed in range(3):
        for init, shift in (("xavier", 0.0), ("kaiming", (0.02, 0.03, 0.02)[seed])):
            run(root, f"{init}{seed}", model="C", downsample="conv", seed=seed, lr=0.05,
                test=ERRORS["conv"][seed] + shift, cell={"init": init},
                overrides=(*SHORT, f"init={init}"))
    text = render(root)
    assert text.count("## Protocol `") == 2  # init is part of the protocol
    comparisons = section(text, "## Comparisons")
    assert "### Along `init`" in comparisons and "### Along `downsample`" not in comparisons
    [row] = named(comparisons, "All-CNN-C")
    # no paper order for init: alphabetical, so kaiming is A; it is worse by 2, 3, 2 points
    # and wrong on every example xavier gets wrong, plus 4, 6, 4 more: per seed p = 2 / 2^4,
    # 2 / 2^6, 2 / 2^4
    assert row[1:3] == ["kaiming", "xavier"] and row[4] == "3"
    assert row[5].startswith("+2.33 [")
    assert row[8] == "0.031–0.125 over 3 seeds; B better in 1 of 3"


@pytest.mark.slow  # renders and compares every figure twice (the fast suite has one such test)
def test_regeneration_is_byte_identical_with_predictions(study, tmp_path, monkeypatch):
    monkeypatch.chdir(study.parent)
    assert report_main(["sweeps", "--out", "a/tables.md", "--csv", "a/runs.csv"]) == 0
    assert report_main(["sweeps", "--out", "c/tables.md", "--csv", "c/runs.csv"]) == 0
    first = Path("a/tables.md").read_bytes()
    assert Path("c/tables.md").read_bytes() == first and first.startswith(b"# All-CNN")
    assert b"\n## Claims\n" in first and b"\n## Comparisons\n" in first
    header = Path("a/runs.csv").read_text().split("\n", 1)[0].split(",")
    assert "correct" not in header and "test_fingerprint" in header
    figure = next(Path("a/figures").glob("error_by_downsampling_*.png"))
    assert figure.read_bytes() == (Path("c/figures") / figure.name).read_bytes()


def test_claims_file_errors_name_the_value_and_the_fix():
    config = {"source": "s", "alpha": 0.05, "stalled_margin": 0.02, "paper_setting": {},
              "claims": [{"id": "x", "statement": "s", "cites": "c", "axis": "downsample",
                          "a": "conv", "b": "pool", "expect": "better"}]}
    with pytest.raises(claims.ClaimsError, match=r"'better' is not one of \('lower'"):
        claims.parse(config)
    config["claims"][0]["expect"] = "no_worse"
    with pytest.raises(claims.ClaimsError, match="needs a margin"):
        claims.parse(config)
    config["claims"][0]["margin"] = 0.005
    config["claims"][0]["axis"] = "lr"
    with pytest.raises(claims.ClaimsError, match="axis 'lr' cannot be compared along"):
        claims.parse(config)
    del config["claims"][0]["axis"]
    with pytest.raises(claims.ClaimsError, match="lacks 'axis'"):
        claims.parse(config)


def test_p_values_and_differences_are_formatted_stably():
    assert formatting.p_text(None) == "–" and formatting.p_text(0.0004) == "<0.001"
    assert formatting.p_text(0.07418) == "0.074"
    assert math.isclose(float(formatting.p_text(1.0)), 1.0)


def test_a_verdict_that_rests_on_flagged_runs_says_so(tmp_path):
    """Three of ten All-CNN-C runs fail at ~50 %: with them the claim is undecided (the
    trimmed test cannot drop three), without them it is supported: the note says so, the
    verdict keeps every run."""
    root = tmp_path / "sweeps"
    pool = (0.120, 0.122, 0.118, 0.121, 0.119, 0.123, 0.117, 0.120, 0.121, 0.119)
    conv = (0.100, 0.50, 0.098, 0.52, 0.099, 0.102, 0.55, 0.097, 0.101, 0.101)
    for seed in range(10):
        for mode, errors in (("pool", pool), ("conv", conv)):
            run(root, f"{mode}{seed}", model="C", downsample=mode, seed=seed, lr=0.05,
                test=errors[seed], with_predictions=False)
    [row] = named(section(render(root), "## Claims"), "All-CNN-C has lower error than Model C")
    assert row[-2].startswith("undecided at n = 10")
    assert row[-1] == "without the flagged runs (seed 1, 3, 6): supported at n = 3"


@pytest.mark.parametrize(("change", "message"), [
    ({"axis": "downsampel"}, "axis 'downsampel' is neither a config group nor a known key; did "
                             "you mean 'downsample'?"),
    ({"a": "strid"}, "downsample 'strid' is not one of ['avgpool', 'conv', 'convpool', "
                     "'lppool', 'pool', 'stride'] (conf/downsample/)"),
    ({"where": {"model": "D"}}, "model 'D' is not one of ['A', 'B', 'C', 'imagenet'] "
                                "(conf/model/)"),
    ({"margin": "lots"}, "margin 'lots' must be a fraction of the metric"),
])
def test_a_claim_naming_an_unknown_axis_value_or_margin_is_refused(change, message):
    claim = {"id": "x", "statement": "s", "cites": "c", "axis": "downsample", "a": "conv",
             "b": "pool", "expect": "no_worse", "margin": 0.005, **change}
    with pytest.raises(claims.ClaimsError, match=re.escape(message)):
        claims.parse({"source": "s", "alpha": 0.05, "stalled_margin": 0.02, "paper_setting": {},
                      "claims": [claim]})

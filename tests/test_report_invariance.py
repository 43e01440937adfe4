"""Does pooling buy invariance? The report side, on hand-made records with ``metrics.invariance``.

The study is test_report_evidence's (Model C's four variants at 3 seeds, Model A at one); the
records then get the ``metrics.invariance`` summary a run writes (``ablate.invariance``'s
layout), with consistencies chosen so that every number below can be worked out on paper:
at 2 px, per seed 0, 1, 2 (lr 0.05, the lr validation error chooses)

    pool 90, 92, 94 %   stride 70, 73, 72 %   convpool 85, 88, 90 %   conv 80, 83, 83 %

and at k px the 2 px value + 5 (2 - k) points, under a flip the 2 px value - 30 points.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from test_report_evidence import make_study, named, run, section, table_rows

from ablate import atomic, records
from ablate.report import claims, evidence, figures, load, tables
from ablate.report.__main__ import main as report_main

AT_2PX = {"pool": (0.90, 0.92, 0.94), "stride": (0.70, 0.73, 0.72),
          "convpool": (0.85, 0.88, 0.90), "conv": (0.80, 0.83, 0.83)}
INVARIANCE = "#### Invariance: prediction consistency under shifts"
HEADER = ["model", "downsampling", "lr", "n", "1 px", "2 px", "3 px", "4 px", "flip"]
CLAIM_HEADER = ["claim", "metric", "runs", "n", "A − B (pp) [95 % CI]",
                "decision interval (pp)", "margin", "McNemar per seed", "result", "note"]


CONSISTENCY = ["consistency_1", "consistency_2", "consistency_3", "consistency_4",
               "consistency_flip"]


def summary(at_2px: float, error: float = 0.1, shifts: tuple[int, ...] = (1, 2, 3, 4)) -> dict:
    """``metrics.invariance`` as ``ablate.invariance.summarise`` lays it out."""
    moved = {f"shift_{k}": {"error": error, "consistency": at_2px + 0.05 * (2 - k)}
             for k in shifts}
    return {"images": 200, "identity": {"error": error, "consistency": 1.0},
            "flip": {"error": error, "consistency": at_2px - 0.30}, **moved,
            "directions": {"dy=-1,dx=0": {"error": error, "consistency": at_2px + 0.05}}}


def measure(path: Path, at_2px: float, shifts: tuple[int, ...] = (1, 2, 3, 4)) -> None:
    """Give a record the invariance summary that its run would have written."""
    record = json.loads(path.read_text())
    record["metrics"]["invariance"] = summary(at_2px, record["metrics"]["test_error"], shifts)
    atomic.write_json_atomic(path, record)


def jobs(root: Path) -> dict[str, Path]:
    return {path.parent.name: path for path in root.rglob(records.RESULT_FILE)}


def make_invariance_study(root: Path) -> Path:
    make_study(root)
    found = jobs(root)
    for mode, values in AT_2PX.items():
        for seed, value in enumerate(values):
            measure(found[f"C-{mode}-{seed}"], value)
            # lr 0.1 is never chosen: its consistency must appear nowhere
            measure(found[f"C-{mode}-{seed}-fast"], 0.40)
    # Model A: pool measured, conv recorded before invariance existed
    measure(found["A-pool"], 0.95)
    # Model B: one seed each, both measured
    for mode, value in (("pool", 0.91), ("conv", 0.81)):
        measure(run(root, f"B-{mode}", model="B", downsample=mode, seed=0, lr=0.05,
                    test=0.15), value)
    return root


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_invariance_study(tmp_path_factory.mktemp("invariance") / "sweeps")


@pytest.fixture(scope="module")
def report(study: Path) -> str:
    frame, issues = load.load_runs([study])
    return tables.render(frame, issues, sources=["sweeps"])


def invariance_rows(text: str) -> dict[str, dict[str, str]]:
    rows = table_rows(text.split(INVARIANCE, 1)[1].split("\n#", 1)[0])
    assert rows[0] == HEADER
    return {row[0]: dict(zip(HEADER, row, strict=True)) for row in rows[1:]}


def test_records_carry_consistency_and_older_ones_load_as_nan(study):
    frame, _ = load.load_runs([study])
    assert set(CONSISTENCY) <= set(frame.columns)
    [pool] = frame[frame["path"].str.endswith("C-pool-1/result.json")].itertuples()
    assert math.isclose(pool.consistency_2, 0.92) and math.isclose(pool.consistency_1, 0.97)
    assert math.isclose(pool.consistency_4, 0.82) and math.isclose(pool.consistency_flip, 0.62)
    [older] = frame[frame["path"].str.endswith("A-conv/result.json")].itertuples()
    assert older.test_error == 0.15  # the rest of an older record loads as before
    assert all(math.isnan(getattr(older, column)) for column in CONSISTENCY)


def test_shifts_come_from_the_records_an_8_px_shift_keeps_its_column(tmp_path):
    """A run with ``callbacks.test_predictions.shifts=[1,2,8]``: its 8 px consistency is a
    column of the frame, of the invariance table and a point of the figure; 3 and 4 px, which
    no run measured, are no columns at all."""
    root = tmp_path / "sweeps"
    for seed, value in enumerate((0.90, 0.92)):
        measure(run(root, f"C-pool-{seed}", model="C", downsample="pool", seed=seed, lr=0.05,
                    test=0.1), value, shifts=(1, 2, 8))
    frame, issues = load.load_runs([root])
    assert load.shift_columns(frame) == {1: "consistency_1", 2: "consistency_2",
                                         8: "consistency_8"}
    assert sorted(frame["consistency_8"]) == pytest.approx([0.60, 0.62])  # 2 px - 5 x 6 points
    rows = table_rows(tables.render(frame, issues).split(INVARIANCE, 1)[1].split("\n#", 1)[0])
    assert rows[0] == ["model", "downsampling", "lr", "n", "1 px", "2 px", "8 px", "flip"]
    assert rows[1][6] == "61.00 ± 12.71"  # 60, 62: half-width t(0.975, 1) * 1 = 12.71
    figure = figures.consistency_by_shift(frame, "shifts 1, 2, 8", tmp_path / "shift.png")
    assert figure is not None and figure.is_file()


def test_invariance_table_gives_mean_and_t_interval_at_the_chosen_lr(report):
    rows = invariance_rows(report)
    # pool at 2 px: 90, 92, 94: mean 92, sd 2, half-width t(0.975, 2) * 2 / sqrt(3)
    # = 4.3027 * 1.1547 = 4.97; 1 px and 3 px: the same values +5 / -5 points, flip -30.
    # lr 0.1's runs (40 % everywhere) are not in it: validation error chose lr 0.05.
    assert rows["Model C"] == {
        "model": "Model C", "downsampling": "pool", "lr": "0.05", "n": "3",
        "1 px": "97.00 ± 4.97", "2 px": "92.00 ± 4.97", "3 px": "87.00 ± 4.97",
        "4 px": "82.00 ± 4.97", "flip": "62.00 ± 4.97"}
    # conv at 2 px: 80, 83, 83: mean 82, sd sqrt(3) = 1.732, half-width 4.3027 * 1 = 4.30
    assert rows["All-CNN-C"]["2 px"] == "82.00 ± 4.30"
    # one seed: the mean alone; recorded before invariance existed: n/a everywhere
    assert rows["Model A"]["2 px"] == "95.00" and rows["Model A"]["n"] == "1"
    assert [rows["All-CNN-A"][c] for c in HEADER[4:]] == ["n/a"] * 5
    assert list(rows) == ["Model A", "All-CNN-A", "Model B", "All-CNN-B", "Model C",
                          "Strided-CNN-C", "ConvPool-CNN-C", "All-CNN-C"]


def test_comparisons_test_consistency_at_2px_with_claims_verdicts_and_holm(report):
    text = section(report, "## Comparisons")
    model_c = text.split("#### Model C: augmentation none, dataset digits, trainer.max_epochs "
                         "20: consistency at 2 px", 1)[1].split("\n#", 1)[0]
    header = ["models", "A", "B", "n", "A − B (pp) [95 % CI]", "t p", "Holm p (t)", "verdict"]
    assert table_rows(model_c)[0] == header
    row = dict(zip(header, named(model_c, "Model C vs All-CNN-C")[0], strict=True))
    # pool - conv: 10, 9, 11 points: mean 10, sd 1, t = 10 / (1 / sqrt 3) = 17.32 with 2 df,
    # p = 1 - t / sqrt(t^2 + 2) = 0.0033; half-width 4.3027 / sqrt 3 = 2.48. This pair is the
    # invariance claim for Model C: it shows the claim's verdict, not a Holm p of its own
    assert row["n"] == "3" and row["A − B (pp) [95 % CI]"] == "+10.00 [+7.52, +12.48]"
    assert row["t p"] == "0.003" and row["Holm p (t)"] == "claim"
    assert row["verdict"].startswith("claim `pooling-more-invariant-C`: undecided at n = 3")
    # the exploratory pairs, Holm over the 5 of them: p-values smallest first 0.0010
    # (stride-conv, x 5 = 0.005), 0.0019 (pool-stride), 0.0039, 0.0059, 0.0136
    [pool_stride] = named(model_c, "Model C vs Strided-CNN-C")
    assert pool_stride[-1] == evidence.MORE_INVARIANT == "A more invariant"
    [stride_conv] = named(model_c, "Strided-CNN-C vs All-CNN-C")
    assert stride_conv[-1] == "A less invariant"  # 70, 73, 72 vs 80, 83, 83
    # the error table above is untouched: one row per pair there too
    error_table = text.split("#### Model C:", 1)[1].split("\n#", 1)[0]
    [error_row] = named(error_table, "Model C vs All-CNN-C")
    assert error_row[5] == "+2.00 [-0.48, +4.48]"
    model_a = text.split("#### Model A:", 1)[1].split("\n#### Model B", 1)[0]
    [a_row] = named(model_a.split("consistency at 2 px", 1)[1], "Model A vs All-CNN-A")
    # All-CNN-A never measured it; the pair is Model A's invariance claim
    assert a_row[3:] == ["0", "–", "–", "claim", "claim `pooling-more-invariant-A`: undecided "
                         "(n/a: no seed has consistency at 2 px on both sides)"]
    model_b = text.split("#### Model B:", 1)[1].split("\n#### Model C", 1)[0]
    [b_row] = named(model_b.split("consistency at 2 px", 1)[1], "Model B vs All-CNN-B")
    assert b_row[3:] == ["1", "+10.00", "–", "claim",
                         f"claim `pooling-more-invariant-B`: undecided ({evidence.ONE_SEED})"]


def test_the_invariance_claim_is_judged_on_consistency(report):
    rows = table_rows(section(report, "## Claims"))
    assert rows[0] == CLAIM_HEADER
    found = {r[0]: dict(zip(CLAIM_HEADER, r, strict=True)) for r in rows[1:]}
    row = found["Model C is more translation-invariant than All-CNN-C"]
    assert row["metric"] == "consistency at 2 px" and row["n"] == "3"
    assert row["A − B (pp) [95 % CI]"] == "+10.00 [+7.52, +12.48]"
    assert row["McNemar per seed"] == "–"  # per-example correctness speaks to error only
    # three seeds a side: the first look cannot clear 0; consistency's own spread plans it
    assert row["result"].startswith("undecided at n = 3; ≈ ")
    assert found["Model A is more translation-invariant than All-CNN-A"]["result"] == (
        "undecided (n/a: no seed has consistency at 2 px on both sides)")
    assert found["Model B is more translation-invariant than All-CNN-B"]["result"] == (
        "undecided (one seed: no claim)")
    # the error claims are judged on error, and say so
    error = found["All-CNN-C has lower error than Model C"]
    assert error["metric"] == "test error" and (
        error["McNemar per seed"] == "0.031–0.500 over 3 seeds; A better in 1 of 3")
    assert error["result"].startswith("undecided at n = 3")


def ten_seeds(root: Path, conv_minus_pool: float) -> Path:
    """Model C pool and conv over seeds 0-9 with consistency at 2 px 0.90 + noise (pool) and
    that + ``conv_minus_pool`` (conv): enough seeds for the sequential looks to decide."""
    noise = (0.004, -0.006, 0.002, 0.0, -0.003, 0.005, -0.001, 0.003, -0.004, 0.001)
    for seed, wiggle in enumerate(noise):
        for mode, value in (("pool", 0.90 + wiggle), ("conv", 0.90 + conv_minus_pool - wiggle)):
            measure(run(root, f"{mode}{seed}", model="C", downsample=mode, seed=seed, lr=0.05,
                        test=0.10, with_predictions=False), value)
    return root


def test_consistency_claims_follow_the_direction_rule(tmp_path):
    """"More invariant" = higher consistency: the same numbers, claimed the other way round,
    are contradicted; a no-worse claim on consistency reads its interval the other way."""
    config, _ = claims.packaged()
    frame, _ = load.load_runs([ten_seeds(tmp_path / "sweeps", -0.10)])
    base = {"id": "x", "statement": "s", "cites": "c", "axis": "downsample",
            "where": {"model": "C"}, "metric": "consistency_2"}
    _, parsed = claims.parse({"source": "s", "alpha": 0.05, "stalled_margin": 0.02,
                              "paper_setting": {}, "claims": [
                                  {**base, "id": "reverse", "a": "conv", "b": "pool",
                                   "expect": "higher"},
                                  # conv - pool = -10 points: 10 worse, within 13, beyond 5
                                  {**base, "id": "close", "a": "conv", "b": "pool",
                                   "expect": "no_worse", "margin": 0.13},
                                  {**base, "id": "far", "a": "conv", "b": "pool",
                                   "expect": "no_worse", "margin": 0.05},
                                  {**base, "id": "right", "a": "pool", "b": "conv",
                                   "expect": "higher"}]})
    outcomes = claims.evaluate(frame, parsed, config, set())
    assert [o.result for o in outcomes] == [claims.CONTRADICTED, claims.SUPPORTED,
                                            claims.CONTRADICTED, claims.SUPPORTED]
    # decided at the first look that could, never after: the decision says which
    assert all(o.decision.n < 10 and o.decision.available == 10 for o in outcomes)


def test_older_records_show_na_and_no_figure(tmp_path):
    root = tmp_path / "sweeps"
    for seed in range(2):
        for mode in ("pool", "conv"):
            path = run(root, f"{mode}{seed}", model="C", downsample=mode, seed=seed, lr=0.05,
                       test=AT_2PX[mode][seed] - 0.7, with_predictions=False)
            if (mode, seed) != ("conv", 1):  # the one run made before invariance existed
                measure(path, AT_2PX[mode][seed])
    frame, issues = load.load_runs([root])
    rows = invariance_rows(tables.render(frame, issues))
    assert rows["All-CNN-C"]["2 px"] == "80.00 (1 of 2)" and rows["Model C"]["2 px"] == (
        "91.00 ± 12.71")  # 90, 92: sd 1.414, half-width 12.706 * 1.414 / sqrt 2
    # nothing measured at all: one line instead of the table, no consistency comparisons,
    # no figure, the claim undecided
    older = tmp_path / "older"
    for seed in range(2):
        for mode in ("pool", "conv"):
            run(older, f"{mode}{seed}", model="C", downsample=mode, seed=seed, lr=0.05,
                test=AT_2PX[mode][seed] - 0.7, with_predictions=False)
    frame, issues = load.load_runs([older])
    text = tables.render(frame, issues)
    assert text.split(INVARIANCE, 1)[1].split("\n#", 1)[0].strip().startswith(
        "n/a: no run here measured invariance")
    assert ": consistency at 2 px" not in section(text, "## Comparisons")
    claim = named(section(text, "## Claims"),
                  "Model C is more translation-invariant than All-CNN-C")[0]
    assert claim[-2] == "undecided (n/a: no seed has consistency at 2 px on both sides)"
    assert figures.consistency_by_shift(frame, "t", tmp_path / "f.png") is None


@pytest.mark.slow  # renders and compares every figure twice (the fast suite has one such test)
def test_regeneration_is_byte_identical_with_invariance(study, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for out in ("a", "b"):
        assert report_main([str(study), "--out", f"{out}/tables.md"]) == 0
    first = Path("a/tables.md").read_bytes()
    assert Path("b/tables.md").read_bytes() == first and INVARIANCE.encode() in first
    [figure] = Path("a/figures").glob("consistency_by_shift_*.png")
    assert figure.read_bytes() == (Path("b/figures") / figure.name).read_bytes()
    assert f"![consistency under shifts](figures/{figure.name})".encode() in first

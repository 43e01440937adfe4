"""The GPU benchmark: its CPU smoke run, its report, and the line the sweep's estimate reads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from helpers import cli_env

from ablate.bench import gpu, gpu_report, gpu_steps
from ablate.bench.steps import VARIANTS
from ablate.sweep import estimate, measured

MACS_C = 270_798_336  # All-CNN-C, 3x32x32: the estimate's forward_macs, checked in test_sweep


def _gpu_record(total_rates: dict[int, float],
                packed_rates: dict[int, float] | None = None) -> dict:
    """A record as a CUDA run would leave it (numbers made up, shapes real); ``packed_rates``:
    packed images/s per K of section 3b."""
    scale = asdict(gpu_steps.SCALES["cuda"])
    steps = []
    for variant, rate in zip(VARIANTS, (10_000.0, 30_000.0, 50_000.0), strict=True):
        for batch in (128, 512):
            steps.append({"variant": variant.name, "batch": batch, "skipped": None,
                          "first_step_seconds": 40.0 if variant.compile else 0.5,
                          "steps": 100, "seconds": 100 * batch / rate,
                          "images_per_second": rate})
    return {
        "date": "2026-01-02T03:04:05+00:00", "arguments": ["--device", "cuda"],
        "device": {"kind": "cuda", "name": "NVIDIA H200", "peak_bf16_tflops": 989.0,
                   "peak_source": "NVIDIA datasheet value, assumed"},
        "torch": "2.11.0", "cuda": "12.8", "python": "3.12.0", "cpus": 16, "threads": 8,
        "cudnn_allow_tf32": True, "scale": scale, "forward_macs": MACS_C,
        "steps": steps,
        "framework": {"variant": VARIANTS[2].name, "batch": 128, "steps": 100,
                      "warmup": 11, "plain_ms": 2.56, "lightning_ms": 3.2, "ratio": 0.8},
        "packing": [{"processes": n, "total_images_per_second": rate,
                     "per_process_images_per_second": rate / n,
                     "slowest_process_images_per_second": rate / n, "window_overlap": 1.0}
                    for n, rate in total_rates.items()],
        "packed_seeds": [{"setting": "bench", "k": k, "variant": VARIANTS[1].name, "batch": 128,
                          "steps_per_seed": 200, "repeats": 2,
                          "separate_images_per_second": 30_000.0,
                          "packed_images_per_second": rate, "speedup": rate / 30_000.0,
                          "separate_peak_mib": 300.0, "packed_peak_mib": 300.0 * k}
                         for k, rate in (packed_rates or {}).items()],
        "end_to_end": {
            "command": "python -m ablate.run ...", "compiles": True,
            "runs": {label: {"launched": 0.0, "ended": wall, "first_step_at": 20.0, "epochs": e}
                     for label, wall, e in (("cold", 80.0, 1), ("short", 30.0, 1),
                                            ("long", 35.0, 6))},
            "startup_seconds": 20.0, "cold_extra_seconds": 50.0, "epoch_seconds": 1.0,
            "train_images_per_epoch": 1293, "val_images_per_epoch": 144, "batch": 128,
            "variant": VARIANTS[2].name, "network_macs": MACS_C,
            "predicted_epoch_seconds": 0.25,
        },
        "macs_per_second_best": 50_000.0 * 3 * MACS_C * 0.8,
        "macs_per_second_basis": "one process, ...",
        "elapsed_seconds": 300.0, "sections_seconds": {},
    }


def test_projection_prices_the_table3_grid_at_the_best_packing() -> None:
    record = _gpu_record({1: 40_000.0, 2: 70_000.0, 4: 90_000.0, 8: 85_000.0})
    projection = gpu_report.projection(record)
    networks = gpu_report.table3_grid()
    assert len(networks) == 12 and projection["runs"] == 48  # 3 models x 4 modes x 4 lrs
    assert gpu_report.grid_forward_macs("C", "conv") == MACS_C
    passes = 350 * (3 * 45_000 + 5_000)
    work = sum(gpu_report.grid_forward_macs(m, d) * 4 * passes for m, d, _ in networks)
    assert projection["how"] == "4 process(es)"  # 90,000 images/s: the best, not the most processes
    assert projection["arithmetic_seconds"] == pytest.approx(work / (90_000 * 3 * MACS_C) / 0.8)
    # start-up 20 s per run, 350 x (1.0 - 0.25) s per run, 50 s cold compile per network; / 4
    overhead = (48 * (20.0 + 350 * 0.75) + 12 * 50.0) / 4
    assert projection["overhead_seconds"] == pytest.approx(overhead)
    assert projection["total_seconds"] == pytest.approx(projection["arithmetic_seconds"] + overhead)


def test_projection_with_seeds_packs_them_where_that_is_fastest() -> None:
    # Packed seeds beat the processes at K = 3 and 4, but a cell of the grid has one seed, and
    # seeds=auto's first round three: K = 4 and 8 cannot be packed from three seeds.
    record = _gpu_record({1: 40_000.0, 2: 70_000.0}, {1: 38_000.0, 2: 72_000.0,
                                                     3: 100_000.0, 4: 120_000.0, 8: 150_000.0})
    projection = gpu_report.projection(record)
    assert projection["how"] == "2 process(es)" and projection["seeds"] == 1
    seeded = projection["with_seeds"]
    assert seeded["seeds"] == 3 and seeded["runs"] == 144
    assert seeded["how"] == "3 packed seeds per job" and seeded["shared_by"] == 3
    assert seeded["arithmetic_seconds"] == pytest.approx(
        3 * projection["arithmetic_seconds"] * 70_000.0 / 100_000.0)
    overhead = (144 * (20.0 + 350 * 0.75) + 12 * 50.0) / 3  # one job's fixed costs serve 3 seeds
    assert seeded["overhead_seconds"] == pytest.approx(overhead)
    text = gpu_report.render({**record, "projection": projection})
    # 3b: K = 3 packed, 100,000 images/s x 6 x 0.2708 GMAC = 162.48 TFLOP/s, 16.4% of 989
    assert "162.48" in text and "16.4%" in text
    assert "with 3 packed seeds per job" in text and "144 runs" in text


def test_gpu_report_states_mfu_compile_time_and_the_estimate_line(tmp_path: Path) -> None:
    record = _gpu_record({1: 40_000.0, 2: 70_000.0})
    record["projection"] = gpu_report.projection(record)
    text = gpu_report.render(record)
    # 50,000 images/s x 6 x 0.2708 GMAC = 81.24 TFLOP/s, 8.2% of 989
    assert "81.24" in text and "8.2%" in text
    assert "~40.0 s" in text  # compile: first step 40 s minus one steady step (2.6 ms)
    assert "busy 25% of each epoch" in text and "Verdict: the device idled" in text  # 0.25 / 1
    assert "goal: 2 h" in text
    report = tmp_path / measured.GPU_REPORT
    report.parent.mkdir(parents=True)
    report.write_text(text)
    assert measured.measured_gpu_macs_per_second(report) == pytest.approx(
        record["macs_per_second_best"], rel=1e-4)


@pytest.mark.parametrize(("name", "peak"), [
    ("NVIDIA H200", 989.0), ("NVIDIA H200 NVL", 835.0), ("NVIDIA H100 PCIe", 756.0),
    ("NVIDIA A100-SXM4-80GB", 312.0), ("NVIDIA A10", 125.0), ("NVIDIA L4", 121.0),
    ("NVIDIA L40S", 362.0), ("NVIDIA GeForce GTX 1080", None),
])
def test_peak_is_found_by_the_most_specific_device_name(name: str, peak: float | None) -> None:
    assert gpu.peak_tflops(name) == peak


def test_epoch_images_apply_the_validation_split_and_batch_limits() -> None:
    config = {"dataset": {"name": "digits", "val_size": 0.1, "images": {"train": 1438}},
              "batch_size": 32, "eval_batch_size": 1000,
              "trainer": {"limit_train_batches": 2, "limit_val_batches": 1}}
    assert estimate.epoch_images(config)[:2] == (64, 144)  # 1438 images, 144 held out
    config["trainer"] = {"limit_train_batches": None, "limit_val_batches": 1.0}
    assert estimate.epoch_images(config)[:2] == (1294, 144)


def test_measured_rate_is_read_only_from_a_cuda_report(tmp_path: Path) -> None:
    path = tmp_path / "gpu.txt"
    block = measured.format_fields({"device_kind": "cuda", "macs_per_second_best": 1.2345e13})
    # A `key: value` line above the block is prose, not data.
    path.write_text("macs_per_second_best: 9\nnotes: plain 3 ms\n" + block)
    assert measured.measured_gpu_macs_per_second(path) == 1.2345e13
    path.write_text(block.replace("cuda", "cpu"))
    assert measured.measured_gpu_macs_per_second(path) is None
    for bad in ("None", "nan", "-1e12", "fast"):
        path.write_text(block.replace("1.2345e+13", bad))
        assert measured.measured_gpu_macs_per_second(path) is None, bad
    assert measured.measured_gpu_macs_per_second(tmp_path / "missing.txt") is None


def test_latest_report_is_the_most_recently_written(tmp_path: Path) -> None:
    older, newer = tmp_path / "a", tmp_path / "b"
    for root, when in ((older, 1_000_000), (newer, 2_000_000)):
        report = root / measured.GPU_REPORT
        report.parent.mkdir(parents=True)
        report.write_text("x")
        os.utime(report, (when, when))
    assert measured.latest_gpu_report([older, newer]) == newer / measured.GPU_REPORT
    assert measured.latest_gpu_report([tmp_path]) is None


def test_sweep_estimate_takes_the_gpu_rate_from_the_report(tmp_path: Path) -> None:
    report = tmp_path / measured.GPU_REPORT
    report.parent.mkdir(parents=True)
    report.write_text("GPU benchmark\n" + measured.format_fields(
        {"device_kind": "cuda", "macs_per_second_best": 3.5e13}))
    code = ("from ablate.sweep import estimate; import sys; "
            "print(estimate.DEVICES['gpu'].macs_per_second, 'torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=cli_env(),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["35000000000000.0", "False"]


@pytest.mark.slow
def test_cpu_smoke_run_measures_every_section(tmp_path: Path) -> None:
    out = tmp_path / "bench" / "gpu.txt"
    done = subprocess.run(
        # One torch thread: two spin-waiting threads crawl when the CPUs are shared.
        [sys.executable, "-m", "ablate.bench.gpu", "--device", "cpu", "--threads", "1",
         "--out", str(out)],
        cwd=tmp_path, env=cli_env(), capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    text, record = out.read_text(), json.loads(out.with_suffix(".json").read_text())
    assert text == gpu_report.render(record) and done.stdout.endswith(text)  # after progress bars
    rates = {(r["variant"], r["batch"]): r.get("images_per_second") for r in record["steps"]}
    assert all(rates[(v.name, b)] > 0 for v in VARIANTS[:2] for b in (32, 64)), rates
    compiled = [r for r in record["steps"] if "compile" in r["variant"]]
    assert all("--compile" in r["skipped"] for r in compiled) and "skipped" in text
    assert record["framework"]["ratio"] > 0
    assert [r["processes"] for r in record["packing"]] == [1, 2]
    assert all(r["total_images_per_second"] > 0 for r in record["packing"]), record["packing"]
    assert [r["k"] for r in record["packed_seeds"]] == [1, 2], record["packed_seeds"]
    assert all(r["packed_images_per_second"] > 0 and r["separate_images_per_second"] > 0
               for r in record["packed_seeds"])
    assert "3b. Packed seeds" in text and record["projection"]["with_seeds"]["runs"] == 144
    e2e = record["end_to_end"]
    assert e2e["train_images_per_epoch"] == 64 and e2e["val_images_per_epoch"] == 144, e2e
    assert {k: r["epochs"] for k, r in e2e["runs"].items()} == {"short": 1, "long": 2}
    assert e2e["startup_seconds"] > 0 and e2e["predicted_epoch_seconds"] > 0
    assert record["projection"]["runs"] == 48
    for stated in (record["date"], torch.__version__, "cpu", "first step", "goal: 2 h"):
        assert stated in text
    # A CPU report carries its rate, but the GPU estimate must never take it.
    assert float(measured.read_fields(text)[measured.BEST_MACS]) > 0
    assert measured.measured_gpu_macs_per_second(out) is None

"""Training speed of All-CNN-C on one GPU, and what it means for the Table 3 grid.

``python -m ablate.bench.gpu [--device cuda|cpu] [--out reports/benchmarks/gpu.txt]`` measures,
in one process tree (sized to finish within six minutes on one H200): 1. step throughput of the
plain loop (``ablate.bench.steps``) per variant and batch size, with model FLOP utilisation;
2. the framework ratio (``ablate.bench.overhead``) at the fastest variant; 3. packing: 1 to 8
worker processes on the one device, released together, timed over one wall-clock window; 3b.
packed seeds (``ablate.bench.pack``): K seeds trained one after another vs as one network;
4. real runs of ``python -m ablate.run`` on digits (``hardware=gpu``): start-up, compilation and
per-epoch time, against what 1 predicts; 5. the Table 3 grid's projected wall time.

Timing rules: every clock read on the device waits for it (``synchronize``); compilation, cuDNN
autotuning and first allocations happen in untimed warm-up steps and are reported apart; data
sits on the device before timing starts (synthetic images in 1-3; 4 is the real data path).
The numbers are kept as a JSON record (``gpu.json`` beside the text) and the text is rendered
from it; the text ends with the ``key: value`` lines ``ablate.sweep.estimate`` reads.
``--device cpu`` runs the same code at toy sizes in well under a minute: the suite's smoke test.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from ablate import atomic, provenance, records
from ablate.bench import gpu_report, gpu_steps, overhead
from ablate.bench.steps import VARIANT_BY_NAME, VARIANTS, all_cnn_c
from ablate.sweep import measured
from ablate.sweep.estimate import epoch_images, forward_macs

# Dense (no 2:4 sparsity) bf16 tensor-core peaks in TFLOP/s from NVIDIA's datasheets: an
# assumption (clocks, power and SKU vary). Matched as substrings of torch.cuda.get_device_name in
# this order, so the more specific names come first ("H200 NVL" before "H200", "A100" before
# "A10", "L40S" before "L4").
PEAK_BF16_TFLOPS = (
    ("H200 NVL", 835.0),
    ("H200", 989.0),
    ("GH200", 989.0),
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.0),
    ("B200", 2250.0),
    ("A100", 312.0),
    ("L40S", 362.0),
    ("L4", 121.0),
    ("A10", 125.0))


def peak_tflops(device_name: str) -> float | None:
    return next((peak for key, peak in PEAK_BF16_TFLOPS if key.lower() in device_name.lower()),
                None)


# ------------------------------------------------------------------------- 4. a real run


def end_to_end(scale: gpu_steps.Scale, compile_on_cpu: bool, device: torch.device,
               timeout: float) -> dict:
    """Short and long real runs; when the run compiles, a cold one first (its graphs not yet in
    the compile caches), so that compilation and a warm start-up can be told apart."""
    overrides = list(scale.run_overrides)
    if device.type == "cpu" and compile_on_cpu:
        overrides.append("compile=true")
    compiles = device.type == "cuda" or compile_on_cpu  # hardware=gpu compiles
    short, long = scale.run_epochs
    plan = [("cold", short)] * compiles + [("short", short), ("long", long)]
    runs: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="ablate-e2e-") as scratch:
        for label, epochs in plan:
            gpu_steps.log(f"real run: {label}, {epochs} epochs")
            cwd = Path(scratch) / label
            cwd.mkdir()
            command = [*overrides, f"trainer.max_epochs={epochs}"]
            launched = time.time()
            done = subprocess.run([sys.executable, "-m", "ablate.run", *command], cwd=cwd,
                                  env=provenance.subprocess_env(), capture_output=True, text=True,
                                  timeout=timeout)
            ended = time.time()
            found = sorted(cwd.glob("sweeps/**/result.json"))
            if done.returncode != 0 or len(found) != 1:
                raise RuntimeError(f"python -m ablate.run {' '.join(command)} exited "
                                   f"{done.returncode}:\n{(done.stdout + done.stderr)[-2000:]}")
            record = records.load(found[0])
            if not record.finished:
                raise RuntimeError(f"the run {record.status}: {record.error}")
            runs[label] = {"launched": launched, "ended": ended,
                           "first_step_at": record.first_step_at,
                           "record_wall_seconds": record.wall_seconds, "epochs": record.epochs,
                           "device": record.device}
            config = record.config  # the long run's, the last
    wall = {label: run["ended"] - run["launched"] for label, run in runs.items()}
    after_first_step = {label: run["ended"] - run["first_step_at"] for label, run in runs.items()}
    train_images, val_images, _ = epoch_images(config)
    bf16 = str(config["trainer"].get("precision", "")).startswith("bf16")
    return {
        "command": "python -m ablate.run " + " ".join(overrides) + " trainer.max_epochs=N",
        "compiles": bool(config.get("compile")),
        "runs": runs,
        "startup_seconds": runs["short"]["first_step_at"] - runs["short"]["launched"],
        "cold_extra_seconds": wall["cold"] - wall["short"] if "cold" in runs else None,
        "epoch_seconds": (after_first_step["long"] - after_first_step["short"]) / (long - short),
        "train_images_per_epoch": train_images,
        "val_images_per_epoch": val_images,
        "batch": config["batch_size"],
        # the variant of 1 that does the run's arithmetic (None: none does, no prediction)
        "variant": next((v.name for v in VARIANTS if (v.autocast is not None) == bf16
                         and v.compile == bool(config["compile"])
                         and v.channels_last == bool(config["channels_last"])), None),
        "network_macs": forward_macs(all_cnn_c(config["width"], config["dataset"]["image_size"],
                                               config["dataset"]["channels"]).spec,
                                     config["dataset"]["channels"], config["dataset"]["image_size"],
                                     config["dataset"]["num_classes"])}


# ------------------------------------------------------------------------------- main


def benchmark(args: argparse.Namespace) -> dict:
    device = torch.device(args.device)
    scale = gpu_steps.SCALES[device.type]
    gpu_steps.set_up(device, args.threads)
    started = time.perf_counter()
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        peak, source = peak_tflops(name), "NVIDIA datasheet value, assumed"
    else:
        name, peak, source = provenance.cpu_name(), None, "no peak for CPUs"
    if args.peak_tflops:
        peak, source = args.peak_tflops, "given with --peak-tflops"
    elif peak is None and device.type == "cuda":
        source = f"unknown for {name!r}; give --peak-tflops"
    record: dict[str, Any] = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "arguments": args.argv, "device": {
            "kind": device.type, "name": name, "peak_bf16_tflops": peak, "peak_source": source},
        "torch": torch.__version__, "cuda": torch.version.cuda,
        "python": platform.python_version(), "cpus": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32, "scale": asdict(scale),
        "forward_macs": forward_macs(all_cnn_c(scale.width, scale.size, scale.channels).spec,
                                     scale.channels, scale.size, 10),
        "sections_seconds": {}}

    def section(name: str, work, table_row: dict | None = None) -> Any:
        """The section's result, or ``{"error": ...}``: as the one row of a table for tables."""
        if name not in args.sections:
            result: Any = {"error": "not run (--sections)"}
        else:
            clock = time.perf_counter()
            try:
                result = work()
            except Exception as error:
                gpu_steps.log(f"{name} failed: {gpu_steps.short_error(error)}")
                result = {"error": gpu_steps.short_error(error)}
            record["sections_seconds"][name] = round(time.perf_counter() - clock, 1)
        return [{**table_row, **result}] if table_row and isinstance(result, dict) else result

    record["steps"] = section("steps", lambda: gpu_steps.step_throughput(
        device, scale, args.compile), {"variant": "all variants", "batch": 0})
    batch = scale.batches[0]
    top = gpu_steps.fastest(record["steps"], batch)
    # Without 1, what the runs use: hardware=gpu compiles, hardware=cpu does not.
    variant = (VARIANT_BY_NAME[top["variant"]] if top
               else VARIANTS[2] if device.type == "cuda" else VARIANTS[0])
    # Warm-up covers the first step too: compilation happens in Lightning's first step as well.
    record["framework"] = section("framework", lambda: overhead.framework_ratio(
        device, variant, scale.width, scale.size, scale.channels, batch, scale.warmup + 1,
        scale.steps(batch), scale.framework_repeats))
    if device.type == "cuda":  # the workers get the memory this process no longer needs
        torch.cuda.empty_cache()
    record["packing"] = section("packing", lambda: gpu_steps.packing(
        device, scale, variant, batch, args.timeout), {"processes": "-"})
    record["packed_seeds"] = section("packed_seeds", lambda: gpu_steps.packed_seeds(
        device, scale, record["steps"], batch), {"k": "-"})
    record["end_to_end"] = section("end_to_end", lambda: end_to_end(scale, args.compile, device,
                                                                    args.timeout))
    e2e = record["end_to_end"]
    if "epoch_seconds" in e2e:
        match = [r for r in record["steps"] if r["variant"] == e2e["variant"]
                 and r["batch"] == e2e["batch"] and r.get("images_per_second")]
        if match:  # the run's network is the one of 1 up to its input channels: price its MACs
            macs_per_second = match[0]["images_per_second"] * 3 * record["forward_macs"]
            per_epoch = 3 * e2e["train_images_per_epoch"] + e2e["val_images_per_epoch"]
            e2e["predicted_epoch_seconds"] = per_epoch * e2e["network_macs"] / macs_per_second
    record["projection"] = section("projection", lambda: gpu_report.projection(record))

    # What one run sustains: the fastest variant at the runs' batch size, slowed by Lightning.
    best, basis = None, "nothing measured; the estimate keeps its assumption"
    if top:
        ratio = record["framework"].get("ratio")
        best = top["images_per_second"] * 3 * record["forward_macs"] * (ratio or 1.0)
        basis = (f"one process, {top['variant']}, batch {batch}, "
                 + (f"x framework ratio {ratio:.3f}" if ratio else "plain loop (no ratio)")
                 + "; forward MACs/s, a training image counted as 3 forward passes")
    record["macs_per_second_best"] = best
    record["macs_per_second_basis"] = basis
    record["elapsed_seconds"] = time.perf_counter() - started
    return record


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_device = "cuda" if torch.cuda.is_available() else "cpu"
    parser.add_argument("--device", choices=("cuda", "cpu"), default=default_device)
    parser.add_argument("--out", default=None,
                        help="default reports/benchmarks/gpu.txt (gpu_cpu.txt with --device cpu, "
                             "so a smoke run never replaces a GPU measurement)")
    parser.add_argument("--compile", action="store_true",
                        help="include torch.compile on a CPU (always measured on CUDA)")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="dense bf16 peak of the device, instead of the built-in table")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads of this process (default: torch's choice); one "
                             "is steadier on a busy machine")
    parser.add_argument("--sections", nargs="+", choices=gpu_report.SECTIONS,
                        default=list(gpu_report.SECTIONS),
                        help="run only these (a second try within a device budget)")
    parser.add_argument("--timeout", type=float, default=300.0,
                        help="seconds allowed to one packing round or one real run")
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device here; use --device cpu")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    out = Path(args.out or measured.GPU_REPORT.with_name(  # where the sweep's estimate reads it
        "gpu.txt" if args.device == "cuda" else "gpu_cpu.txt"))
    record = benchmark(args)
    text = gpu_report.render(record)
    atomic.write_json_atomic(out.with_suffix(".json"), record)
    atomic.write_atomic(out, text)
    print(text, end="")


if __name__ == "__main__":
    main()

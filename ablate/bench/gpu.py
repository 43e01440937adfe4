"""Training speed of All-CNN-C on one GPU, and what it means for the Table 3 grid.

``python -m ablate.bench.gpu [--device cuda|cpu] [--out reports/benchmarks/gpu.txt]`` measures,
in one process tree (sized to finish within six minutes on one H200):

1. Step throughput of All-CNN-C (full width, 32 px) at two batch sizes, for fp32 eager, bf16 +
   channels_last, and bf16 + channels_last + ``torch.compile``, with the plain loop of
   ``ablate.bench.steps``; model FLOP utilisation against the device's dense bf16 peak.
2. The framework ratio: Lightning with this project's ``Classifier`` against the plain loop
   (``ablate.bench.overhead``), at the fastest variant of 1 and the runs' batch size.
3. Packing: 1, 2, 4, 8 worker processes (this module with ``--worker``) training at once on the
   one device, released together and timed over the same wall-clock window.
4. A real run through ``python -m ablate.run`` on digits (the GPU preset, ``hardware=gpu``):
   start-up, compilation and per-epoch time, against the time 1 predicts for the same images.
5. The projected wall time of the Table 3 grid (``conf/sweep/table3.yaml``) at the best packing.

Timing rules: every clock read on the device waits for it (``synchronize``); compilation, cuDNN
autotuning and first allocations happen in untimed warm-up steps and are reported apart; data
sits on the device before timing starts (synthetic images in 1-3; 4 is the real data path).
The numbers are kept as a JSON record (``gpu.json`` beside the text) and the text is rendered
from it; the text ends with the ``key: value`` lines ``ablate.sweep.estimate`` reads.
``--device cpu`` runs the same code at toy sizes in well under a minute: the suite's smoke test.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.resources
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
import yaml

from ablate import records, spec
from ablate.bench.steps import all_cnn_c, plain_seconds, synthetic_batches
from ablate.status import Status
from ablate.sweep import measured
from ablate.sweep.estimate import forward_macs

CHECKOUT = Path(__file__).resolve().parent.parent.parent
CONF = importlib.resources.files("ablate.conf")
WORKER_TAG = "ablate-bench-worker"  # prefixes the lines a worker prints for its parent
SECTIONS = ("steps", "framework", "packing", "end_to_end", "projection")  # in the order run
GOAL_HOURS = 2.0  # the Table 3 grid on one GPU in at most this long

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
    ("A10", 125.0),
)

# The Table 3 protocol (the paper; conf/dataset/cifar10.yaml holds out 5,000 for validation).
GRID_EPOCHS = 350
GRID_TRAIN_IMAGES = 45_000
GRID_VAL_IMAGES = 5_000  # forward only, once per epoch


@dataclass(frozen=True)
class Variant:
    """One way of running the same training step."""

    name: str
    autocast: torch.dtype | None
    channels_last: bool
    compile: bool

    @property
    def precision(self) -> str:
        """Lightning's name for the same arithmetic."""
        return "bf16-mixed" if self.autocast is torch.bfloat16 else "32-true"


VARIANTS = (
    Variant("fp32 eager", None, False, False),
    Variant("bf16 + channels_last", torch.bfloat16, True, False),
    Variant("bf16 + channels_last + compile", torch.bfloat16, True, True),
)
VARIANT_BY_NAME = {variant.name: variant for variant in VARIANTS}


@dataclass(frozen=True)
class Scale:
    """What one device kind measures; the CPU scale only proves the code runs."""

    width: float
    size: int
    channels: int
    batches: tuple[int, ...]  # the first is the runs' batch size: used for 2, 3 and 4
    warmup: int  # untimed steps after the first (compiled, autotuned) one
    timed_images: int  # per timed repeat: enough for a few hundred milliseconds on the device
    min_steps: int
    repeats: int  # best of, in 1
    framework_repeats: int  # best of, in 2: each repeat compiles twice (from the cache)
    packing: tuple[int, ...]
    window_seconds: float  # how long packed workers train together
    run_overrides: tuple[str, ...]
    run_epochs: tuple[int, int]  # a short and a long real run; the difference is per-epoch time

    def steps(self, batch: int) -> int:
        return max(self.min_steps, self.timed_images // batch)


SCALES = {
    "cuda": Scale(
        width=1.0, size=32, channels=3, batches=(128, 512), warmup=10, timed_images=25_600,
        min_steps=20, repeats=2, framework_repeats=1, packing=(1, 2, 4, 8), window_seconds=5.0,
        run_overrides=("dataset=digits", "dataset.image_size=32", "width=1", "hardware=gpu",
                       "logger=none"),
        run_epochs=(1, 6),
    ),
    "cpu": Scale(
        width=0.125, size=16, channels=3, batches=(32, 64), warmup=1, timed_images=192,
        min_steps=3, repeats=1, framework_repeats=1, packing=(1, 2), window_seconds=1.0,
        run_overrides=("dataset=digits", "dataset.image_size=16", "width=0.125", "hardware=cpu",
                       "logger=none", "batch_size=32", "trainer.limit_train_batches=2",
                       "trainer.limit_val_batches=1", "trainer.limit_test_batches=1"),
        run_epochs=(1, 2),
    ),
}


def _log(message: str) -> None:
    print(f"[gpu bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _error(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}".strip()[:500]


def _subprocess_env() -> dict[str, str]:
    """This checkout first on the path, so workers and runs use the code being measured."""
    path = os.pathsep.join(p for p in [str(CHECKOUT), os.environ.get("PYTHONPATH", "")] if p)
    return {**os.environ, "PYTHONPATH": path, "PYTHONWARNINGS": "ignore"}


def peak_tflops(device_name: str) -> float | None:
    for key, value in PEAK_BF16_TFLOPS:
        if key.lower() in device_name.lower():
            return value
    return None


def _network(variant: Variant, device: torch.device, scale: Scale) -> torch.nn.Module:
    network = all_cnn_c(scale.width, scale.size, scale.channels).to(device)
    if variant.channels_last:
        network = network.to(memory_format=torch.channels_last)
    if not variant.compile:
        return network
    # A fresh compilation per measurement: reusing one across batch sizes would make dynamo
    # recompile with a dynamic batch dimension (slower kernels) inside the timed steps.
    torch._dynamo.reset()
    return torch.compile(network)


def _batches(scale: Scale, batch: int, device: torch.device):
    return synthetic_batches(batch * 8, scale.size, scale.channels, batch, device)


def _skip_reason(variant: Variant, device: torch.device, compile_on_cpu: bool) -> str | None:
    if variant.compile and device.type == "cpu" and not compile_on_cpu:
        return "torch.compile on a CPU takes minutes; add --compile to measure it"
    return None


# ------------------------------------------------------------------------------ 1. steps


def step_throughput(device: torch.device, scale: Scale, compile_on_cpu: bool) -> list[dict]:
    """Images/s of the plain loop per variant and batch size; first step timed apart."""
    rows = []
    for variant in VARIANTS:
        for batch in scale.batches:
            row: dict[str, Any] = {"variant": variant.name, "batch": batch}
            rows.append(row)
            row["skipped"] = _skip_reason(variant, device, compile_on_cpu)
            if row["skipped"]:
                continue
            _log(f"steps: {variant.name}, batch {batch}")
            try:
                network = _network(variant, device, scale)
                batches = _batches(scale, batch, device)
                run = {"autocast": variant.autocast, "channels_last": variant.channels_last}
                # The first step compiles (forward and backward), autotunes cuDNN, allocates.
                row["first_step_seconds"] = plain_seconds(network, batches, 0, 1, **run)
                steps = scale.steps(batch)
                best = min(plain_seconds(network, batches, scale.warmup, steps, **run)
                           for _ in range(scale.repeats))
            except Exception as error:  # one broken variant must not cost the others
                row["error"] = _error(error)
                continue
            row.update(steps=steps, seconds=best, images_per_second=steps * batch / best)
    return rows


def _fastest(rows: list[dict], batch: int) -> dict | None:
    measured_rows = [r for r in rows if r["batch"] == batch and r.get("images_per_second")]
    return max(measured_rows, key=lambda r: r["images_per_second"], default=None)


# -------------------------------------------------------------------------- 2. framework


def framework_ratio(device: torch.device, scale: Scale, variant: Variant, batch: int) -> dict:
    """Plain loop vs Lightning + ``Classifier``, alternating, best of ``framework_repeats``."""
    # Imported here, not at the top: packing workers import this module and need no Lightning.
    from ablate.bench.overhead import lightning_seconds

    batches = _batches(scale, batch, device)
    steps = scale.steps(batch)
    # Warm-up covers the first step too: compilation happens in Lightning's first step as well.
    warmup = scale.warmup + 1
    run = {"autocast": variant.autocast, "channels_last": variant.channels_last}
    plain, lightning = [], []
    for _ in range(scale.framework_repeats):
        plain.append(plain_seconds(_network(variant, device, scale), batches, warmup, steps,
                                   **run))
        torch._dynamo.reset()
        lightning.append(lightning_seconds(
            all_cnn_c(scale.width, scale.size, scale.channels), batches, warmup, steps,
            accelerator="gpu" if device.type == "cuda" else "cpu", precision=variant.precision,
            channels_last=variant.channels_last, compile=variant.compile,
        ))
    return {
        "variant": variant.name, "batch": batch, "steps": steps, "warmup": warmup,
        "plain_ms": min(plain) / steps * 1000, "lightning_ms": min(lightning) / steps * 1000,
        "ratio": min(plain) / min(lightning),
    }


# ---------------------------------------------------------------------------- 3. packing


def _expect(process: subprocess.Popen, word: str, stderr_path: Path) -> str:
    """The payload of the next ``WORKER_TAG word`` line; a dead worker's stderr if none comes."""
    assert process.stdout is not None
    for line in process.stdout:
        if line.startswith(f"{WORKER_TAG} {word}"):
            return line[len(WORKER_TAG) + len(word) + 1:].strip()
    tail = stderr_path.read_text(errors="replace")[-2000:]
    raise RuntimeError(f"worker exited ({process.wait()}) before '{word}':\n{tail}")


def pack(device: torch.device, scale: Scale, variant: Variant, batch: int, count: int,
         timeout: float) -> dict:
    """``count`` workers warm up (compiling from the cache the main process filled), then are
    released together and each trains for ``window_seconds``; totals are summed rates."""
    command = [sys.executable, "-m", "ablate.bench.gpu", "--worker", "--device", device.type,
               "--variant", variant.name, "--batch", str(batch), "--width", str(scale.width),
               "--size", str(scale.size), "--channels", str(scale.channels),
               "--warmup", str(scale.warmup), "--seconds", str(scale.window_seconds)]
    if device.type == "cpu":  # share the cores instead of oversubscribing them
        command += ["--threads", str(max(1, (os.cpu_count() or 1) // count))]
    processes: list[subprocess.Popen] = []
    with tempfile.TemporaryDirectory(prefix="ablate-pack-") as logs:
        errs = [Path(logs) / f"worker{i}.err" for i in range(count)]
        watchdog = threading.Timer(timeout, lambda: [p.kill() for p in processes])
        try:
            for err in errs:
                with open(err, "w") as stream:
                    processes.append(subprocess.Popen(
                        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stream,
                        text=True, env=_subprocess_env()))
            watchdog.start()
            for process, err in zip(processes, errs, strict=True):
                _expect(process, "ready", err)
            for process in processes:
                assert process.stdin is not None
                process.stdin.write("go\n")
                process.stdin.flush()
            results = [json.loads(_expect(p, "result", e))
                       for p, e in zip(processes, errs, strict=True)]
            for process in processes:
                process.wait()
        finally:
            watchdog.cancel()
            for process in processes:
                if process.poll() is None:
                    process.kill()
                    process.wait()
                for stream in (process.stdin, process.stdout):
                    if stream is not None:
                        stream.close()
    rates = [r["images"] / r["seconds"] for r in results]
    overlap = min(r["ended"] for r in results) - max(r["started"] for r in results)
    return {
        "processes": count,
        "total_images_per_second": sum(rates),
        "per_process_images_per_second": sum(rates) / count,
        "slowest_process_images_per_second": min(rates),
        "window_overlap": max(0.0, overlap) / max(r["seconds"] for r in results),
    }


def packing(device: torch.device, scale: Scale, variant: Variant, batch: int,
            timeout: float) -> list[dict]:
    rows = []
    for count in scale.packing:
        _log(f"packing: {count} processes")
        try:
            rows.append(pack(device, scale, variant, batch, count, timeout))
        except Exception as error:
            rows.append({"processes": count, "error": _error(error)})
    return rows


def worker(args: argparse.Namespace) -> None:
    """One packed process: warm up, say ready, wait for the go line, train for the window."""
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    if args.threads:
        torch.set_num_threads(args.threads)
    variant = VARIANT_BY_NAME[args.variant]
    scale = Scale(width=args.width, size=args.size, channels=args.channels, batches=(args.batch,),
                  warmup=args.warmup, timed_images=0, min_steps=0, repeats=1, framework_repeats=1,
                  packing=(), window_seconds=args.seconds, run_overrides=(), run_epochs=(1, 1))
    network = _network(variant, device, scale)
    batches = _batches(scale, args.batch, device)
    run = {"autocast": variant.autocast, "channels_last": variant.channels_last}
    plain_seconds(network, batches, 0, args.warmup + 1, **run)
    print(f"{WORKER_TAG} ready", flush=True)
    sys.stdin.readline()
    # Steps in chunks, one device sync each, until the window is over: a sync per step would
    # leave the device idle between steps, a fixed step count would end the workers apart.
    chunk = 25 if device.type == "cuda" else 1
    images, started, clock = 0, time.time(), time.perf_counter()
    while time.perf_counter() - clock < args.seconds:
        plain_seconds(network, batches, 0, chunk, **run)
        images += chunk * args.batch
    seconds, ended = time.perf_counter() - clock, time.time()
    result = {"images": images, "seconds": seconds, "started": started, "ended": ended}
    print(f"{WORKER_TAG} result {json.dumps(result)}", flush=True)


# ------------------------------------------------------------------------- 4. a real run


def _epoch_images(config: dict) -> tuple[int, int]:
    """Training and validation images one epoch of this run sees (limits applied)."""
    pool = int(config["dataset"]["images"]["train"])
    val_size = config["dataset"]["val_size"]
    val = round(pool * val_size) if isinstance(val_size, float) and val_size < 1 else val_size
    trainer = config["trainer"]

    def limited(images: int, batch: int, limit: Any) -> int:
        if isinstance(limit, int) and not isinstance(limit, bool):
            return min(images, limit * batch)
        if isinstance(limit, float) and limit < 1.0:
            return min(images, int(-(-images // batch) * limit) * batch)
        return images

    return (limited(pool - val, config["batch_size"], trainer.get("limit_train_batches")),
            limited(val, config["eval_batch_size"], trainer.get("limit_val_batches")))


def _run_cli(overrides: list[str], cwd: Path, timeout: float) -> dict:
    launched = time.time()
    done = subprocess.run([sys.executable, "-m", "ablate.run", *overrides], cwd=cwd,
                          env=_subprocess_env(), capture_output=True, text=True, timeout=timeout)
    ended = time.time()
    found = sorted(cwd.glob("sweeps/**/result.json"))
    if done.returncode != 0 or len(found) != 1:
        raise RuntimeError(f"python -m ablate.run {' '.join(overrides)} exited "
                           f"{done.returncode}:\n{(done.stdout + done.stderr)[-2000:]}")
    record = records.read_record(found[0])
    if record["status"] != Status.FINISHED:
        raise RuntimeError(f"the run {record['status']}: {record.get('error')}")
    return {"launched": launched, "ended": ended, "first_step_at": record["first_step_at"],
            "record_wall_seconds": record["wall_seconds"], "epochs": record["epochs"],
            "device": record["device"], "config": record["config"]}


def end_to_end(scale: Scale, compile_on_cpu: bool, device: torch.device,
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
            _log(f"real run: {label}, {epochs} epochs")
            cwd = Path(scratch) / label
            cwd.mkdir()
            runs[label] = _run_cli([*overrides, f"trainer.max_epochs={epochs}"], cwd, timeout)
    config = runs["long"].pop("config")
    for run in runs.values():
        run.pop("config", None)
    warm_short, warm_long = runs["short"], runs["long"]

    def wall(run: dict) -> float:
        return run["ended"] - run["launched"]

    def after_first_step(run: dict) -> float:
        return run["ended"] - run["first_step_at"]

    train_images, val_images = _epoch_images(config)
    return {
        "command": "python -m ablate.run " + " ".join(overrides) + " trainer.max_epochs=N",
        "compiles": bool(config.get("compile")),
        "runs": runs,
        "startup_seconds": warm_short["first_step_at"] - warm_short["launched"],
        "cold_extra_seconds": wall(runs["cold"]) - wall(warm_short) if "cold" in runs else None,
        "epoch_seconds": (after_first_step(warm_long) - after_first_step(warm_short))
        / (long - short),
        "train_images_per_epoch": train_images,
        "val_images_per_epoch": val_images,
        "batch": config["batch_size"],
        "variant": _variant_of(config),
        "network_macs": forward_macs(
            all_cnn_c(config["width"], config["dataset"]["image_size"],
                      config["dataset"]["channels"]).spec,
            config["dataset"]["channels"], config["dataset"]["image_size"],
            config["dataset"]["num_classes"]),
    }


def _variant_of(config: dict) -> str | None:
    """The variant of 1 that does the run's arithmetic (None: none does, no prediction)."""
    bf16 = str(config["trainer"].get("precision", "")).startswith("bf16")
    for variant in VARIANTS:
        if ((variant.autocast is not None) == bf16 and variant.compile == bool(config["compile"])
                and variant.channels_last == bool(config["channels_last"])):
            return variant.name
    return None


# ------------------------------------------------------------------------- 5. projection


def table3_grid() -> list[tuple[str, str, int]]:
    """(model, downsampling, runs) per network of ``conf/sweep/table3.yaml``."""
    params = yaml.safe_load((CONF / "sweep" / "table3.yaml").read_text())
    params = params["hydra"]["sweeper"]["params"]
    axes = {key: [v.strip() for v in str(value).split(",")] for key, value in params.items()}
    runs_per_network = 1
    for key, values in axes.items():
        if key not in ("model", "downsample"):
            runs_per_network *= len(values)
    return [(model, mode, runs_per_network) for model in axes["model"]
            for mode in axes["downsample"]]


def grid_forward_macs(model: str, downsample: str) -> int:
    layers = yaml.safe_load((CONF / "model" / f"{model}.yaml").read_text())["layers"]
    target = yaml.safe_load((CONF / "downsample" / f"{downsample}.yaml").read_text())
    module, name = target["transform"]["_target_"].rsplit(".", 1)
    transform = getattr(importlib.import_module(module), name)
    return forward_macs(transform(spec.normalise(layers)), 3, 32, 10)


def projection(record: dict) -> dict:
    """Wall time of the Table 3 grid at the best measured packing, from the numbers above."""
    networks = table3_grid()
    runs = sum(count for _, _, count in networks)
    passes = GRID_EPOCHS * (3 * GRID_TRAIN_IMAGES + GRID_VAL_IMAGES)  # forward-pass units
    work = sum(grid_forward_macs(m, d) * count * passes for m, d, count in networks)
    packed = [r for r in record["packing"] if r.get("total_images_per_second")]
    best = max(packed, key=lambda r: r["total_images_per_second"], default=None)
    if best is None:
        single = _fastest(record["steps"], record["scale"]["batches"][0])
        if single is None:
            return {"error": "no throughput was measured"}
        best = {"processes": 1, "total_images_per_second": single["images_per_second"]}
    rate = best["total_images_per_second"] * 3 * record["forward_macs"]  # forward MACs/s
    ratio = record["framework"].get("ratio") or 1.0
    arithmetic = work / rate / ratio
    e2e = record["end_to_end"]
    overhead = None
    if "epoch_seconds" in e2e and e2e.get("predicted_epoch_seconds"):
        per_epoch = max(0.0, e2e["epoch_seconds"] - e2e["predicted_epoch_seconds"])
        compiles = e2e["cold_extra_seconds"] or 0.0
        overhead = (runs * (e2e["startup_seconds"] + GRID_EPOCHS * per_epoch)
                    + len(networks) * max(0.0, compiles))
    shared = None if overhead is None else overhead / best["processes"]
    total = arithmetic + (shared or 0.0)
    return {
        "runs": runs, "networks": len(networks), "forward_macs": work,
        "processes": best["processes"], "images_per_second": best["total_images_per_second"],
        "framework_ratio": ratio, "framework_measured": "ratio" in record["framework"],
        "arithmetic_seconds": arithmetic, "overhead_seconds": shared, "total_seconds": total,
        "goal_seconds": GOAL_HOURS * 3600,
    }


# ----------------------------------------------------------------------------- report


def _fmt(value: float | None, spec_: str = ",.0f", missing: str = "n/a") -> str:
    return missing if value is None else format(value, spec_)


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.2f} h" if seconds >= 360 else f"{seconds:.0f} s"


def render(record: dict) -> str:
    """The text report: a pure function of the JSON record."""
    dev, scale = record["device"], record["scale"]
    macs = record["forward_macs"]
    peak = dev.get("peak_bf16_tflops")
    lines = [
        "GPU benchmark: python -m ablate.bench.gpu " + " ".join(record["arguments"]),
        f"date {record['date']}; device {dev['name']} ({dev['kind']}); torch {record['torch']}"
        f" (CUDA {record['cuda'] or 'none'}); python {record['python']}; {record['cpus']} CPUs"
        f" ({record['threads']} torch threads);"
        f" {record['elapsed_seconds']:.0f} s in all"
        + "".join(f", {name} {record['sections_seconds'][name]:.0f} s" for name in SECTIONS
                  if name in record["sections_seconds"]),
        f"All-CNN-C at width {scale['width']}, {scale['size']} px, {scale['channels']} channels: "
        f"{macs / 1e9:.4f} GMAC per forward pass; a training image costs 3 forward passes "
        f"({6 * macs / 1e9:.3f} GFLOP).",
        f"Peak for utilisation (MFU): {_fmt(peak, ',.0f')} TFLOP/s dense bf16 "
        f"({dev['peak_source']}).",
        "",
        "1. Training-step throughput (plain loop: forward, loss, backward, SGD step; synthetic",
        "   data already on the device; best of "
        f"{scale['repeats']} timed repeats after {scale['warmup']} warm-up steps; the first",
        "   step, which compiles, autotunes cuDNN and allocates, is timed apart and excluded).",
        *(["   fp32 keeps torch's default: cuDNN may use TF32 for its convolutions "
           f"(torch.backends.cudnn.allow_tf32 = {record['cudnn_allow_tf32']})."]
          * (dev["kind"] == "cuda")),
        f"   {'variant':<31} {'batch':>5} {'images/s':>10} {'TFLOP/s':>8} {'MFU':>6} "
        f"{'first step':>11}  compile",
    ]
    for row in record["steps"]:
        label = f"   {row['variant']:<31} {row['batch']:>5} "
        if row.get("skipped") or row.get("error"):
            lines.append(label + f"skipped: {row['skipped']}" if row.get("skipped")
                         else label + f"not measured: {row['error']}")
            continue
        ips = row["images_per_second"]
        tflops = ips * 6 * macs / 1e12
        mfu = f"{tflops / peak:.1%}" if peak else "n/a"
        compile_note = ""
        if VARIANT_BY_NAME[row["variant"]].compile:
            steady = row["seconds"] / row["steps"]
            compile_note = f"~{row['first_step_seconds'] - steady:.1f} s"
        lines.append(label + f"{ips:>10,.0f} {tflops:>8.2f} {mfu:>6} "
                     f"{row['first_step_seconds']:>9.2f} s  {compile_note}")

    lines += ["", "2. Framework ratio at the fastest variant of 1, the runs' batch size "
              "(alternating, best of each; same warm-up, compile excluded):"]
    fw = record["framework"]
    if "ratio" in fw:
        lines.append(f"   {fw['variant']}, batch {fw['batch']}: plain {fw['plain_ms']:.2f} "
                     "ms/step, "
                     f"Lightning + Classifier {fw['lightning_ms']:.2f} ms/step, ratio "
                     f"{fw['ratio']:.3f} (plain / Lightning time; 1.0 = no overhead)")
    else:
        lines.append(f"   not measured: {fw.get('error')}")

    lines += ["", "3. Packing: N worker processes on the one device, released together, each "
              f"training for {scale['window_seconds']:.0f} s",
              "   (the fastest variant of 1 at the runs' batch size; compile and warm-up before "
              "the window; Ray not used).",
              f"   {'processes':>9} {'total images/s':>15} {'per process':>12} {'slowest':>9} "
              f"{'overlap':>8}"]
    for row in record["packing"]:
        if "error" in row:
            lines.append(f"   {row['processes']:>9} not measured: {row['error']}")
            continue
        lines.append(f"   {row['processes']:>9} {row['total_images_per_second']:>15,.0f} "
                     f"{row['per_process_images_per_second']:>12,.0f} "
                     f"{row['slowest_process_images_per_second']:>9,.0f} "
                     f"{row['window_overlap']:>8.0%}")

    e2e = record["end_to_end"]
    lines += ["", "4. A real run end to end:"]
    if "epoch_seconds" in e2e:
        runs = e2e["runs"]
        lines += [
            f"   {e2e['command']}",
            "   runs (epochs, wall from launch to exit): " + ", ".join(
                f"{label} {runs[label]['epochs']}, "
                f"{runs[label]['ended'] - runs[label]['launched']:.1f} s"
                for label in ("cold", "short", "long") if label in runs),
            f"   start-up, launch to the end of the first step (process, imports, Hydra, data to "
            f"the device, Lightning set-up, {'compilation from warm caches, ' * e2e['compiles']}"
            f"first step): {e2e['startup_seconds']:.1f} s",
            "   compilation with cold caches (the cold run's wall minus the same warm run's): "
            + (f"{e2e['cold_extra_seconds']:.1f} s" if e2e["cold_extra_seconds"] is not None
               else "none (the run does not compile)"),
            f"   per epoch ({e2e['train_images_per_epoch']:,} training + "
            f"{e2e['val_images_per_epoch']:,} validation images; the long run's time after its "
            f"first step minus the short run's, per extra epoch): {e2e['epoch_seconds']:.3f} s",
        ]
        predicted = e2e.get("predicted_epoch_seconds")
        if e2e["epoch_seconds"] <= 0:
            lines.append("   the extra epochs took less time than the runs' noise: no verdict")
        elif predicted:
            busy = predicted / e2e["epoch_seconds"]
            lines.append(f"   predicted from 1 ({e2e['variant']}, batch {e2e['batch']}) for the "
                         f"same images: {predicted:.3f} s per epoch, so the device was busy "
                         f"{busy:.0%} of each epoch.")
            # 1 draws its batches through the same on-device TensorBatches (shuffle, one
            # index_select per batch), so the batching is inside the prediction already.
            if busy >= 0.8:
                lines.append("   Verdict: the on-device data path kept the device busy.")
            else:
                longer = GRID_TRAIN_IMAGES / max(1, e2e["train_images_per_epoch"])
                lines.append(
                    "   Verdict: the device idled, but not for the data: 1 batches the same way. "
                    "The gap is per-epoch work\n   around the arithmetic (validation set-up, "
                    "checkpoint, the short last batch, Lightning's epoch hooks),\n   which a "
                    f"{GRID_TRAIN_IMAGES:,}-image epoch spreads over {longer:.0f}x more steps."
                )
        else:
            lines.append("   no prediction: 1 has no measurement of the run's variant and batch")
    else:
        lines.append(f"   not measured: {e2e.get('error')}")

    proj = record["projection"]
    lines += ["", f"5. Projection: Table 3 grid ({proj.get('runs', '?')} runs; {GRID_EPOCHS} "
              "epochs "
              f"x {GRID_TRAIN_IMAGES:,} training images + {GRID_VAL_IMAGES:,} validation images "
              "forward-only each)"]
    if "total_seconds" in proj:
        lines += [
            f"   each network priced by its forward MACs (conf/model, conf/downsample), at the "
            f"MAC rate of All-CNN-C at {proj['processes']} process(es)",
            f"   ({proj['images_per_second']:,.0f} images/s in all), slowed by the framework "
            f"ratio {proj['framework_ratio']:.3f}"
            + ("" if proj["framework_measured"] else " (not measured: assumed)")
            + f": {_hours(proj['arithmetic_seconds'])}",
            "   plus start-up, cold compilation per network and per-epoch work beyond the "
            "arithmetic (from 4), shared by the packed processes: "
            + (_hours(proj["overhead_seconds"]) if proj["overhead_seconds"] is not None
               else "not included (4 has no numbers)"),
            f"   projected wall time on this device: {_hours(proj['total_seconds'])}   goal: "
            f"{GOAL_HOURS:.0f} h   "
            + ("(within the goal)" if proj["total_seconds"] <= proj["goal_seconds"]
               else f"({proj['total_seconds'] / proj['goal_seconds']:.1f}x the goal)"),
        ]
        if dev["kind"] != "cuda":
            lines.append("   (a CPU smoke run at toy size: this projection means nothing)")
    else:
        lines.append(f"   not possible: {proj.get('error')}")

    lines += ["", f"Estimate input: {record['macs_per_second_basis']}",
              measured.format_fields({measured.DEVICE_KIND: dev["kind"],
                                      measured.BEST_MACS: record["macs_per_second_best"]})]
    return "\n".join(lines)


# ------------------------------------------------------------------------------- main


def _device_info(device: torch.device, peak_override: float | None) -> dict:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        peak, source = peak_tflops(name), "NVIDIA datasheet value, assumed"
    else:
        name, peak, source = platform.processor() or platform.machine(), None, "no peak for CPUs"
    if peak_override:
        peak, source = peak_override, "given with --peak-tflops"
    elif peak is None and device.type == "cuda":
        source = f"unknown for {name!r}; give --peak-tflops"
    return {"kind": device.type, "name": name, "peak_bf16_tflops": peak, "peak_source": source}


def benchmark(args: argparse.Namespace) -> dict:
    device = torch.device(args.device)
    scale = SCALES[device.type]
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as hardware=gpu does (trainer.benchmark)
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    record: dict[str, Any] = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "arguments": args.argv, "device": _device_info(device, args.peak_tflops),
        "torch": torch.__version__, "cuda": torch.version.cuda,
        "python": platform.python_version(), "cpus": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32, "scale": asdict(scale),
        "forward_macs": forward_macs(all_cnn_c(scale.width, scale.size, scale.channels).spec,
                                     scale.channels, scale.size, 10),
        "sections_seconds": {},
    }

    def section(name: str, work) -> Any:
        if name not in args.sections:
            return {"error": "not run (--sections)"}
        clock = time.perf_counter()
        try:
            return work()
        except Exception as error:
            _log(f"{name} failed: {_error(error)}")
            return {"error": _error(error)}
        finally:
            record["sections_seconds"][name] = round(time.perf_counter() - clock, 1)

    record["steps"] = section("steps", lambda: step_throughput(device, scale, args.compile))
    if isinstance(record["steps"], dict):  # the section failed as a whole
        record["steps"] = [{"variant": "all variants", "batch": 0, **record["steps"]}]
    batch = scale.batches[0]
    fastest = _fastest(record["steps"], batch) if isinstance(record["steps"], list) else None
    # Without 1, what the runs use: hardware=gpu compiles, hardware=cpu does not.
    variant = (VARIANT_BY_NAME[fastest["variant"]] if fastest
               else VARIANTS[2] if device.type == "cuda" else VARIANTS[0])
    record["framework"] = section("framework",
                                  lambda: framework_ratio(device, scale, variant, batch))
    if device.type == "cuda":  # the workers get the memory this process no longer needs
        torch.cuda.empty_cache()
    record["packing"] = section("packing", lambda: packing(device, scale, variant, batch,
                                                           args.timeout))
    if isinstance(record["packing"], dict):
        record["packing"] = [{"processes": "-", **record["packing"]}]
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
    record["projection"] = section("projection", lambda: projection(record))

    # What one run sustains: the fastest variant at the runs' batch size, slowed by Lightning.
    best, basis = None, "nothing measured; the estimate keeps its assumption"
    if fastest:
        ratio = record["framework"].get("ratio")
        best = fastest["images_per_second"] * 3 * record["forward_macs"] * (ratio or 1.0)
        basis = (f"one process, {fastest['variant']}, batch {batch}, "
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
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS),
                        help="run only these (a second try within a device budget)")
    parser.add_argument("--timeout", type=float, default=300.0,
                        help="seconds allowed to one packing round or one real run")
    worker_args = parser.add_argument_group("worker (internal: one packed process)")
    worker_args.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    worker_args.add_argument("--variant", choices=list(VARIANT_BY_NAME), help=argparse.SUPPRESS)
    for name, kind in (("batch", int), ("width", float), ("size", int), ("channels", int),
                       ("warmup", int), ("seconds", float)):
        worker_args.add_argument(f"--{name}", type=kind, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device here; use --device cpu")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.worker:
        worker(args)
        return
    out = Path(args.out or ("reports/benchmarks/gpu.txt" if args.device == "cuda"
                            else "reports/benchmarks/gpu_cpu.txt"))
    record = benchmark(args)
    text = render(record)
    records.write_json_atomic(out.with_suffix(".json"), record)
    records.write_atomic(out, text)
    print(text, end="")


if __name__ == "__main__":
    main()

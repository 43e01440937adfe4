"""Sections 1 and 3 of ``ablate.bench.gpu``, on synthetic data: step throughput per variant,
and packing (each worker runs this module: ``python -m
ablate.bench.gpu_steps '{"device": ..., "variant": ..., "batch": ..., "threads": ...}'``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ablate import provenance
from ablate.bench.steps import VARIANT_BY_NAME, VARIANTS, Variant, synthetic_batches

WORKER_TAG = "ablate-bench-worker"  # prefixes the lines a worker prints for its parent


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
    packing: tuple[int, ...]  # worker processes sharing the device, in 3
    seed_packs: tuple[int, ...]  # seeds packed into one network (``hydra.sweeper.pack``), in 3b
    window_seconds: float  # how long packed workers train together
    run_overrides: tuple[str, ...]
    run_epochs: tuple[int, int]  # a short and a long real run; the difference is per-epoch time

    def steps(self, batch: int) -> int:
        return max(self.min_steps, self.timed_images // batch)


SCALES = {
    "cuda": Scale(
        width=1.0, size=32, channels=3, batches=(128, 512), warmup=10, timed_images=25_600,
        min_steps=20, repeats=2, framework_repeats=1, packing=(1, 2, 4, 8),
        seed_packs=(1, 2, 3, 4, 8), window_seconds=5.0,
        run_overrides=("dataset=digits", "dataset.image_size=32", "width=1", "hardware=gpu",
                       "logger=none"),
        run_epochs=(1, 6)),
    "cpu": Scale(
        width=0.125, size=16, channels=3, batches=(32, 64), warmup=1, timed_images=192,
        min_steps=3, repeats=1, framework_repeats=1, packing=(1, 2), seed_packs=(1, 2),
        window_seconds=1.0,
        run_overrides=("dataset=digits", "dataset.image_size=16", "width=0.125", "hardware=cpu",
                       "logger=none", "batch_size=32", "trainer.limit_train_batches=2",
                       "trainer.limit_val_batches=1", "trainer.limit_test_batches=1"),
        run_epochs=(1, 2))}


def log(message: str) -> None:
    print(f"[gpu bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def short_error(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}".strip()[:500]


def _batches(scale: Scale, batch: int, device: torch.device):
    return synthetic_batches(batch * 8, scale.size, scale.channels, batch, device)


# ------------------------------------------------------------------------------ 1. steps


def step_throughput(device: torch.device, scale: Scale, compile_on_cpu: bool) -> list[dict]:
    """Images/s of the plain loop per variant and batch size; first step timed apart."""
    rows = []
    for variant in VARIANTS:
        for batch in scale.batches:
            row: dict[str, Any] = {"variant": variant.name, "batch": batch}
            rows.append(row)
            row["skipped"] = ("torch.compile on a CPU takes minutes; add --compile to measure it"
                              if variant.compile and device.type == "cpu" and not compile_on_cpu
                              else None)
            if row["skipped"]:
                continue
            log(f"steps: {variant.name}, batch {batch}")
            try:
                network = variant.network(device, scale.width, scale.size, scale.channels)
                batches = _batches(scale, batch, device)
                # The first step compiles (forward and backward), autotunes cuDNN, allocates.
                row["first_step_seconds"] = variant.seconds(network, batches, 0, 1)
                steps = scale.steps(batch)
                best = min(variant.seconds(network, batches, scale.warmup, steps)
                           for _ in range(scale.repeats))
            except Exception as error:  # one broken variant must not cost the others
                row["error"] = short_error(error)
                continue
            row.update(steps=steps, seconds=best, images_per_second=steps * batch / best)
    return rows


def fastest(rows: list[dict], batch: int) -> dict | None:
    measured_rows = [r for r in rows if r["batch"] == batch and r.get("images_per_second")]
    return max(measured_rows, key=lambda r: r["images_per_second"], default=None)


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
    # On a CPU the workers share the cores instead of oversubscribing them.
    threads = max(1, (os.cpu_count() or 1) // count) if device.type == "cpu" else None
    command = [sys.executable, "-m", "ablate.bench.gpu_steps", json.dumps(
        {"device": device.type, "variant": variant.name, "batch": batch, "threads": threads})]
    processes: list[subprocess.Popen] = []
    with tempfile.TemporaryDirectory(prefix="ablate-pack-") as logs, ExitStack() as cleanup:
        errs = [Path(logs) / f"worker{i}.err" for i in range(count)]
        watchdog = threading.Timer(timeout, lambda: [p.kill() for p in processes])
        cleanup.callback(watchdog.cancel)
        for err in errs:
            with open(err, "w") as stream:
                processes.append(cleanup.enter_context(subprocess.Popen(  # exit: close, wait
                    command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stream,
                    text=True, env=provenance.subprocess_env())))
            cleanup.callback(processes[-1].kill)  # first, should it still run
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
    rates = [r["images"] / r["seconds"] for r in results]
    overlap = min(r["ended"] for r in results) - max(r["started"] for r in results)
    return {"processes": count,
            "total_images_per_second": sum(rates),
            "per_process_images_per_second": sum(rates) / count,
            "slowest_process_images_per_second": min(rates),
            "window_overlap": max(0.0, overlap) / max(r["seconds"] for r in results)}


def packing(device: torch.device, scale: Scale, variant: Variant, batch: int,
            timeout: float) -> list[dict]:
    rows = []
    for count in scale.packing:
        log(f"packing: {count} processes")
        try:
            rows.append(pack(device, scale, variant, batch, count, timeout))
        except Exception as error:
            rows.append({"processes": count, "error": short_error(error)})
    return rows


# ------------------------------------------------------------------------ 3b. packed seeds


def packed_seeds(device: torch.device, scale: Scale, steps_rows: list[dict],
                 batch: int) -> list[dict]:
    """``ablate.bench.pack``'s table at this scale: K seeds one after another vs packed into one
    network, in the fastest variant of 1 that does not compile (K separate networks would
    compile K times); bf16 + channels_last on CUDA, fp32 on a CPU, when 1 has no numbers."""
    from ablate.bench import pack as pack_bench  # imports the packed network: only when run

    plain = [r for r in steps_rows
             if r.get("images_per_second") and not VARIANT_BY_NAME[r["variant"]].compile]
    top = fastest(plain, batch)
    variant = (VARIANT_BY_NAME[top["variant"]] if top
               else VARIANTS[1] if device.type == "cuda" else VARIANTS[0])
    setting = pack_bench.Setting("bench", scale.width, scale.size, scale.channels, batch)
    pack_bench.measure(setting, 1, 1, 1, device, variant)  # untimed: first allocations, autotune
    rows = []
    for k in scale.seed_packs:
        log(f"packed seeds: K = {k}, {variant.name}")
        try:
            rows.append(pack_bench.measure(setting, k, scale.steps(batch), scale.repeats, device,
                                           variant))
        except Exception as error:  # out of memory at a large K must not cost the smaller ones
            rows.append({"k": k, "variant": variant.name, "error": short_error(error)})
    return rows


def set_up(device: torch.device, threads: int | None) -> None:
    """What the runs' hardware presets set: cuDNN autotuning on CUDA (``trainer.benchmark``)."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    if threads:
        torch.set_num_threads(threads)


def worker(device: str, variant: str, batch: int, threads: int | None) -> None:
    """One packed process of ``SCALES[device]``: warm up, say ready, wait for the go line, train
    for the window."""
    device_, scale, variant_ = torch.device(device), SCALES[device], VARIANT_BY_NAME[variant]
    set_up(device_, threads)
    network = variant_.network(device_, scale.width, scale.size, scale.channels)
    batches = _batches(scale, batch, device_)
    variant_.seconds(network, batches, 0, scale.warmup + 1)
    print(f"{WORKER_TAG} ready", flush=True)
    sys.stdin.readline()
    # Steps in chunks, one device sync each, until the window is over: a sync per step would
    # leave the device idle between steps, a fixed step count would end the workers apart.
    chunk = 25 if device_.type == "cuda" else 1
    images, started, clock = 0, time.time(), time.perf_counter()
    while time.perf_counter() - clock < scale.window_seconds:
        variant_.seconds(network, batches, 0, chunk)
        images += chunk * batch
    seconds, ended = time.perf_counter() - clock, time.time()
    result = {"images": images, "seconds": seconds, "started": started, "ended": ended}
    print(f"{WORKER_TAG} result {json.dumps(result)}", flush=True)


if __name__ == "__main__":
    worker(**json.loads(sys.argv[1]))

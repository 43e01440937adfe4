"""``python -m ablate.bench.pack``: K seeds trained one after another vs packed into one network.

Both sides run the same plain training step (forward, per-seed cross-entropy, backward, SGD with
momentum and weight decay) on All-CNN-C, in this process, one after the other, so the ratio
``packed / separate`` is measured under the same load. Packed seeds use
:func:`ablate.pack.pack` (grouped convolutions) and stack their K batches every step, as a packed
run must. Peak memory is the device's peak allocation above the start on CUDA, and on a CPU the
peak resident size above the start (Linux's ``VmHWM``, reset before each measurement, after
glibc's ``malloc_trim`` has handed back what the last one freed): approximate. Lightning's
per-step overhead, which packing also shares between the K seeds, is not in either figure.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import gc
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ablate import atomic, pack
from ablate.bench.steps import (
    VARIANT_BY_NAME,
    VARIANTS,
    Variant,
    all_cnn_c,
    sgd,
    synthetic_batches,
    timed_steps,
)
from ablate.data.batches import TensorBatches


@dataclass(frozen=True)
class Setting:
    """One size of run: the quick preset's or the paper's."""

    name: str
    width: float
    size: int
    channels: int
    batch: int


SETTINGS = (Setting("quick", 0.25, 16, 1, 32), Setting("paper", 1.0, 32, 3, 128))
PACKS = (1, 2, 4, 8)
_LIBC = ctypes.CDLL(ctypes.util.find_library("c"))


def _memory_probe(device: torch.device) -> Callable[[], float]:
    """Start a peak-memory measurement; the returned function gives its MiB so far."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        return lambda: (torch.cuda.max_memory_allocated(device) - base) / 2**20
    status = Path("/proc/self/status")
    if not status.exists():  # not Linux: no per-measurement peak
        return lambda: float("nan")
    gc.collect()
    if hasattr(_LIBC, "malloc_trim"):  # memory freed by the last measurement back to the system
        _LIBC.malloc_trim(0)
    Path("/proc/self/clear_refs").write_text("5")  # resets the peak resident size (VmHWM)

    def field(name: str) -> float:
        line = next(x for x in status.read_text().splitlines() if x.startswith(name))
        return float(line.split()[1]) / 1024  # kB -> MiB

    base = field("VmRSS:")
    return lambda: field("VmHWM:") - base


def packed_seconds(network: pack.PackedNetwork, batches: TensorBatches, warmup: int,
                   steps: int, autocast: torch.dtype | None = None) -> float:
    """Seconds of ``steps`` packed steps after ``warmup`` untimed ones; every seed trains on its
    own copy of each batch (the values do not change the speed). ``autocast`` as in
    :func:`~ablate.bench.steps.plain_seconds`; channels_last is the network's own setting."""
    optimizer = sgd(network.parameters())
    network.train()
    device = next(network.parameters()).device

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        images = torch.stack([x] * network.seeds)
        labels = torch.stack([y] * network.seeds)
        with torch.autocast(device.type, dtype=autocast, enabled=autocast is not None):
            loss = pack.seed_losses(network(images), labels).sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return timed_steps(step, batches, warmup, steps, device)


def measure(setting: Setting, k: int, steps: int, repeats: int, device: torch.device,
            variant: Variant = VARIANTS[0]) -> dict:
    """Images/s (best of ``repeats``, the two sides alternating) and peak memory (in the first
    repeat) of K seeds one after another, and of the same K packed, both in ``variant``'s
    arithmetic and memory format. Compiling variants are refused: K separate networks would
    compile K times, which is not what is measured here."""
    if variant.compile:
        raise ValueError(f"{variant.name!r}: the packed-seed benchmark does not compile")
    batches = synthetic_batches(setting.batch * 4, setting.size, setting.channels,
                                setting.batch, device)
    memory_format = torch.channels_last if variant.channels_last else torch.contiguous_format
    networks = [all_cnn_c(setting.width, setting.size, setting.channels).to(device)
                for _ in range(k)]
    generators = [torch.Generator(device=device).manual_seed(seed) for seed in range(k)]
    packed = pack.pack(networks, generators).to(memory_format=memory_format)
    packed.channels_last = variant.channels_last
    networks = [network.to(memory_format=memory_format) for network in networks]
    separate, together, memory = [], [], {}
    for _ in range(repeats):
        probe = _memory_probe(device)
        separate.append(sum(variant.seconds(network, batches, 1, steps) for network in networks))
        memory.setdefault("separate", probe())
        probe = _memory_probe(device)
        together.append(packed_seconds(packed, batches, 1, steps, variant.autocast))
        memory.setdefault("packed", probe())
    images = k * steps * setting.batch
    return {"setting": setting.name, "k": k, "variant": variant.name, "batch": setting.batch,
            "steps_per_seed": steps, "repeats": repeats,
            "separate_images_per_second": images / min(separate),
            "packed_images_per_second": images / min(together),
            "speedup": min(separate) / min(together),
            "separate_peak_mib": round(memory["separate"], 1),
            "packed_peak_mib": round(memory["packed"], 1)}


def render(record: dict) -> str:
    lines = [f"# packed seeds: {record['machine']}, torch {record['torch']}, "
             f"{record['threads']} threads, {record['variant']}, {record['date']}", "",
             "| setting | K | separate img/s | packed img/s | packed / separate | "
             "peak MiB separate | peak MiB packed |", "|---|---|---|---|---|---|---|"]
    for row in record["rows"]:
        lines.append(f"| {row['setting']} | {row['k']} | {row['separate_images_per_second']:.0f}"
                     f" | {row['packed_images_per_second']:.0f} | {row['speedup']:.2f} | "
                     f"{row['separate_peak_mib']:.0f} | {row['packed_peak_mib']:.0f} |")
    speedups = ", ".join(f"{key} {value:.2f}" for key, value in record.items()
                         if key.endswith("_speedup_k4") and value is not None)
    return "\n".join([*lines, "", f"K = 4: {speedups or 'not measured'}", ""])


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m ablate.bench.pack", description=__doc__)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--settings", nargs="+", default=[s.name for s in SETTINGS],
                        choices=[s.name for s in SETTINGS])
    parser.add_argument("--packs", nargs="+", type=int, default=list(PACKS))
    parser.add_argument("--steps", type=int, default=None,
                        help="timed steps per seed (default: 100 quick, 3 paper on a CPU; "
                             "50 on a GPU)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="best of (default: 3 quick, 1 paper on a CPU; 3 on a GPU)")
    parser.add_argument("--variant", default=VARIANTS[0].name,
                        choices=[v.name for v in VARIANTS if not v.compile],
                        help="arithmetic and memory format of both sides (default: fp32 eager)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (CPU)")
    parser.add_argument("--out", type=Path, default=None, help="JSON of every figure")
    args = parser.parse_args(argv)
    if any(k < 1 for k in args.packs):
        parser.error("--packs: each K must be at least 1")
    device, variant = torch.device(args.device), VARIANT_BY_NAME[args.variant]
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    for setting in (s for s in SETTINGS if s.name in args.settings):
        small = device.type == "cuda" or setting.name == "quick"
        steps = args.steps or (50 if device.type == "cuda" else 100 if small else 3)
        repeats = args.repeats or (3 if small else 1)
        measure(setting, 1, 1, 1, device, variant)  # untimed: first allocations, kernel choices
        for k in args.packs:
            print(f"[pack bench] {setting.name}, K = {k} ...", file=sys.stderr, flush=True)
            rows.append(measure(setting, k, steps, repeats, device, variant))
    record = {"date": time.strftime("%Y-%m-%d %H:%M"), "torch": torch.__version__,
              "machine": f"{platform.machine()} {os.cpu_count()} CPUs, device {device}",
              "threads": torch.get_num_threads(), "variant": variant.name,
              "settings": [asdict(s) for s in SETTINGS if s.name in args.settings], "rows": rows}
    for setting in SETTINGS:
        found = [r["speedup"] for r in rows if r["setting"] == setting.name and r["k"] == 4]
        record[f"{setting.name}_speedup_k4"] = found[0] if found else None
    print(render(record), end="")
    if args.out is not None:
        atomic.write_json_atomic(args.out, record)
    return record


if __name__ == "__main__":
    main()

"""How fast is the data path, next to a conventional one and next to what training consumes?

``python -m ablate.bench.data_pipeline`` measures, in one process and on one device:

1. the project's pipeline: ``TensorBatches`` over one CIFAR-shaped tensor with the paper's
   flip + 5 px translation (``FlipTranslate``), one full shuffled epoch of batches;
2. a conventional pipeline doing the same augmentation: a ``torch.utils.data.Dataset`` whose
   ``__getitem__`` flips, pads and crops one image, batched by a ``DataLoader`` (shuffle,
   ``--workers`` worker processes, default 0), for ``--per-sample-batches`` batches;
3. the training throughput of All-CNN-C (full width, ``conf/model/C.yaml`` + ``all_conv``,
   Xavier init): forward, backward and an SGD step (momentum 0.9, weight decay 1e-3) on a
   batch of ``--batch-size`` 3x32x32 images, for ``--model-steps`` steps after one warm-up
   step (timed once: a step takes seconds on a CPU).

Timing rules: each data-pipeline measurement follows one untimed warm-up (first-call
allocation, lazy initialisation) and is then repeated ``--repeats`` times; the best repeat
counts (the least disturbed by other processes). On a GPU the device is synchronised before
the clock stops. On a CPU both data pipelines run on ``--pipeline-threads`` threads (default 1:
a data path must not take the cores that train the model, and the tensors of one batch are too
small for thread fan-out to pay; the per-sample pipeline is single-threaded anyway), the model
on all of them.
Data sits in memory already (50,000 synthetic uint8 images, converted to float32 once,
untimed): loading, preprocessing and ``FlipTranslate.prepare`` (padding and mirroring the
training set once per run) are one-off costs, reported on their own line but not part of a
throughput. Images/s counts images delivered (or trained on) per second of wall time.
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from ablate import atomic
from ablate.bench.steps import all_cnn_c, plain_seconds, synchronize, synthetic_batches
from ablate.data.augment import FlipTranslate
from ablate.data.batches import TensorBatches

DEFAULT_OUTPUT = Path("reports/benchmarks/data_pipeline.txt")


def _timed(run: Callable[[], int], device: torch.device, repeats: int) -> tuple[int, float]:
    """Run once untimed, then ``repeats`` times timed; return (images, seconds) of the best."""
    run()
    synchronize(device)
    best = (0, float("inf"))
    for _ in range(repeats):
        start = time.perf_counter()
        images = run()
        synchronize(device)
        seconds = time.perf_counter() - start
        if seconds < best[1]:
            best = (images, seconds)
    return best


def synthetic_cifar(count: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """CIFAR-shaped data: uint8 pixels, as the archives store them, converted to float32."""
    generator = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (count, 3, 32, 32), dtype=torch.uint8, generator=generator)
    labels = torch.randint(0, 10, (count,), generator=generator)
    return pixels.float().div_(255.0), labels


class PerSampleFlipTranslate(Dataset):
    """The conventional way: one image at a time, random flip, zero-pad by 5, random crop."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, max_shift: int = 5) -> None:
        self.images, self.labels, self.max_shift = images, labels, max_shift

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = self.images[index]
        if torch.rand(()) < 0.5:
            image = image.flip(-1)
        s = self.max_shift
        padded = F.pad(image, (s, s, s, s))
        top, left = torch.randint(0, 2 * s + 1, (2,)).tolist()
        return padded[:, top : top + 32, left : left + 32], self.labels[index]


def prepare_seconds(images: torch.Tensor, device: torch.device) -> float:
    """The one-off cost of padding and mirroring the training set (once per run)."""
    x = images.to(device)
    synchronize(device)
    start = time.perf_counter()
    FlipTranslate().prepare(x)
    synchronize(device)
    return time.perf_counter() - start


def tensor_pipeline_rate(images: torch.Tensor, labels: torch.Tensor, batch_size: int,
                         device: torch.device, repeats: int) -> tuple[int, float]:
    x, y = images.to(device), labels.to(device)
    batches = TensorBatches(x, y, batch_size, shuffle=True, seed=0, augment=FlipTranslate())

    def epoch() -> int:
        count = 0
        for xb, _ in batches:
            count += len(xb)
        return count

    return _timed(epoch, device, repeats)


def per_sample_rate(images: torch.Tensor, labels: torch.Tensor, batch_size: int, batches: int,
                    workers: int, device: torch.device, repeats: int) -> tuple[int, float]:
    loader = DataLoader(PerSampleFlipTranslate(images, labels), batch_size=batch_size,
                        shuffle=True, num_workers=workers, persistent_workers=workers > 0)

    def some_batches() -> int:
        count = 0
        for step, (xb, _) in enumerate(loader):
            xb = xb.to(device, non_blocking=True)
            count += len(xb)
            if step + 1 == batches:
                break
        return count

    return _timed(some_batches, device, repeats)


def model_rate(batch_size: int, steps: int, device: torch.device) -> tuple[int, float]:
    """All-CNN-C as a run builds it, trained with the plain loop of ``ablate.bench.steps``: one
    warm-up step, then one timed run (a step takes seconds on a CPU, far above the noise)."""
    network = all_cnn_c(1.0, 32, 3).to(device)
    batches = synthetic_batches(batch_size, 32, 3, batch_size, device)
    return steps * batch_size, plain_seconds(network, batches, 1, steps)


def run(args: argparse.Namespace) -> str:
    device = torch.device(args.device)
    images, labels = synthetic_cifar(args.images)
    threads = torch.get_num_threads()
    torch.set_num_threads(args.pipeline_threads if device.type == "cpu" else threads)
    rows = {
        "tensor pipeline (TensorBatches + FlipTranslate, 1 epoch)": tensor_pipeline_rate(
            images, labels, args.batch_size, device, args.repeats),
        f"per-sample Dataset + DataLoader ({args.workers} workers)": per_sample_rate(
            images, labels, args.batch_size, args.per_sample_batches, args.workers, device,
            args.repeats),
    }
    prepare = prepare_seconds(images, device)
    torch.set_num_threads(threads)
    rows["All-CNN-C training step (fwd + bwd + SGD)"] = model_rate(
        args.batch_size, args.model_steps, device)
    rates = {name: count / seconds for name, (count, seconds) in rows.items()}
    ours, per_sample, model = rates.values()
    lines = [
        "Data pipeline benchmark (python -m ablate.bench.data_pipeline)",
        f"device {device}, torch {torch.__version__}, {platform.processor() or platform.machine()}"
        f"; data pipelines on {args.pipeline_threads if device.type == 'cpu' else threads} "
        f"thread(s), model on {threads}",
        f"{args.images} synthetic 3x32x32 images, batch {args.batch_size}; one warm-up, then "
        f"best of {args.repeats}; data already in memory",
        "",
        f"{'measurement':<62}{'images':>9}{'seconds':>10}{'images/s':>12}",
    ]
    for name, (count, seconds) in rows.items():
        lines.append(f"{name:<62}{count:>9}{seconds:>10.3f}{rates[name]:>12,.0f}")
    lines.append(f"one-off, not in the rates: FlipTranslate.prepare (pad + mirror "
                 f"{args.images} images) {prepare:.3f} s")
    checks = [
        ("tensor pipeline / per-sample pipeline", ours / per_sample, 10.0),
        ("tensor pipeline / All-CNN-C training", ours / model, 20.0),
    ]
    lines.append("")
    for name, ratio, target in checks:
        verdict = "meets" if ratio >= target else "MISSES"
        lines.append(f"{name:<40}{ratio:>10.1f}x  ({verdict} the {target:.0f}x target)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu (the targets' setting) or cuda")
    parser.add_argument("--images", type=int, default=50_000)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--per-sample-batches", type=int, default=100)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--model-steps", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--pipeline-threads", type=int, default=1,
                        help="intra-op threads for the data pipelines on a CPU")
    parser.add_argument("--output", default=str(DEFAULT_OUTPUT),
                        help="where the table is also written ('' for nowhere)")
    args = parser.parse_args(argv)
    report = run(args)
    print(report)
    if args.output:  # '' writes nowhere (Path('') would be the working directory)
        atomic.write_atomic(args.output, report + "\n")


if __name__ == "__main__":
    main()

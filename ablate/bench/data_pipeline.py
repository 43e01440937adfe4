"""How fast is the data path, next to a conventional one and next to what training consumes?

``python -m ablate.bench.data_pipeline`` measures, in one process and on one device:

1. the project's pipeline: ``TensorBatches`` with the paper's flip + 5 px translation
   (``FlipTranslate``) over one CIFAR-shaped tensor, one full shuffled epoch;
2. the conventional way, same augmentation: a ``Dataset`` that flips, pads and crops one image
   per ``__getitem__``, batched by a ``DataLoader`` (``--workers``), ``--per-sample-batches``;
3. All-CNN-C's training step (full width, 3x32x32, the plain loop of ``ablate.bench.steps``),
   ``--model-steps`` steps after one warm-up, timed once (a step takes seconds on a CPU).

Timing rules: a data pipeline gets one untimed warm-up (allocation, lazy initialisation), then
the best of ``--repeats`` (the least disturbed); a GPU is synchronised before the clock stops.
On a CPU the data pipelines run on ``--pipeline-threads`` threads (default 1: a data path must
not take the cores that train the model, and one batch is too small for thread fan-out to pay),
the model on all of them. The data is in memory already (synthetic uint8 images, converted to
float32 once, untimed); ``FlipTranslate.prepare`` (padding and mirroring the training set once
per run) is a one-off cost, reported on its own line, not in a rate.
"""

from __future__ import annotations

import argparse
import itertools
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from ablate import atomic, provenance
from ablate.bench.steps import all_cnn_c, plain_seconds, synchronize, synthetic_batches
from ablate.data.augment import FlipTranslate
from ablate.data.batches import TensorBatches

DEFAULT_OUTPUT = Path("reports/benchmarks/data_pipeline.txt")


def _timed(run: Callable[[], int], device: torch.device, repeats: int) -> tuple[int, float]:
    """Run once untimed, then ``repeats`` times timed; return (images, seconds) of the best."""
    def once() -> tuple[int, float]:
        start = time.perf_counter()
        images = run()
        synchronize(device)
        return images, time.perf_counter() - start

    once()
    return min((once() for _ in range(repeats)), key=lambda result: result[1])


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


def run(args: argparse.Namespace) -> str:
    device = torch.device(args.device)
    # CIFAR-shaped data: uint8 pixels, as the archives store them, converted to float32
    generator = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (args.images, 3, 32, 32), dtype=torch.uint8,
                           generator=generator)
    labels = torch.randint(0, 10, (args.images,), generator=generator)
    images = pixels.float().div_(255.0)
    threads = torch.get_num_threads()
    torch.set_num_threads(args.pipeline_threads if device.type == "cpu" else threads)
    x, y = images.to(device), labels.to(device)
    ours = TensorBatches(x, y, args.batch_size, shuffle=True, seed=0, augment=FlipTranslate())
    loader = DataLoader(PerSampleFlipTranslate(images, labels), batch_size=args.batch_size,
                        shuffle=True, num_workers=args.workers,
                        persistent_workers=args.workers > 0)
    rows = {"tensor pipeline (TensorBatches + FlipTranslate, 1 epoch)": _timed(
                lambda: sum(len(xb) for xb, _ in ours), device, args.repeats),
            f"per-sample Dataset + DataLoader ({args.workers} workers)": _timed(
                lambda: sum(len(xb.to(device, non_blocking=True))
                            for xb, _ in itertools.islice(loader, args.per_sample_batches)),
                device, args.repeats)}
    synchronize(device)
    start = time.perf_counter()
    FlipTranslate().prepare(x)  # the one-off cost of padding and mirroring the training set
    synchronize(device)
    prepare = time.perf_counter() - start
    torch.set_num_threads(threads)
    network = all_cnn_c(1.0, 32, 3).to(device)
    batches = synthetic_batches(args.batch_size, 32, 3, args.batch_size, device)
    rows["All-CNN-C training step (fwd + bwd + SGD)"] = (  # one warm-up step, one timed run
        args.model_steps * args.batch_size, plain_seconds(network, batches, 1, args.model_steps))
    rates = {name: count / seconds for name, (count, seconds) in rows.items()}
    ours, per_sample, model = rates.values()
    lines = [
        "Data pipeline benchmark (python -m ablate.bench.data_pipeline)",
        f"device {device}, torch {torch.__version__}, {provenance.cpu_name()}"
        f"; data pipelines on {args.pipeline_threads if device.type == 'cpu' else threads} "
        f"thread(s), model on {threads}",
        f"{args.images} synthetic 3x32x32 images, batch {args.batch_size}; one warm-up, then "
        f"best of {args.repeats}; data already in memory",
        "",
        f"{'measurement':<62}{'images':>9}{'seconds':>10}{'images/s':>12}"]
    for name, (count, seconds) in rows.items():
        lines.append(f"{name:<62}{count:>9}{seconds:>10.3f}{rates[name]:>12,.0f}")
    lines.append(f"one-off, not in the rates: FlipTranslate.prepare (pad + mirror "
                 f"{args.images} images) {prepare:.3f} s")
    checks = [("tensor pipeline / per-sample pipeline", ours / per_sample, 10.0),
              ("tensor pipeline / All-CNN-C training", ours / model, 20.0)]
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

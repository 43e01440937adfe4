"""What the Lightning stack costs per training step, against a hand-written PyTorch loop.

``python -m ablate.bench.overhead`` trains the same network (same initial weights), on the same
on-device batches and batch size, once through ``Trainer.fit`` with this project's
``Classifier`` (metrics and the progress bar as in a real run) and once through a minimal
loop (forward, loss, backward, step). Both are timed over the same number of steps after the same
warm-up, alternating, in one process; the best of the repeats is kept. The ratio printed is
plain-loop time / Lightning time: 1.0 means no overhead. Data loading is excluded (the data is
already in memory); validation and checkpointing are off in both.
"""

from __future__ import annotations

import argparse
import time

import pytorch_lightning as pl
import torch

from ablate import atomic
from ablate.bench.steps import VARIANTS, Variant, all_cnn_c, sgd, synchronize, synthetic_batches
from ablate.callbacks import progress_bar
from ablate.data.batches import TensorBatches
from ablate.module import Classifier

# name: the overrides that make the setting, read from the composed config (not restated here)
SETTINGS = {
    "paper": ["dataset=cifar10"],  # the default network on CIFAR-sized input
    "half": ["dataset=cifar10", "width=0.5", "batch_size=64"],
    "quick": ["experiment=quick"],  # ~15 ms steps, where per-step cost shows
}


class _StepClock(pl.Callback):
    """Starts the clock when the first timed batch begins, stops it when training ends."""

    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.start = self.stop = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.warmup:
            synchronize(pl_module.device)
            self.start = time.perf_counter()

    def on_train_end(self, trainer, pl_module) -> None:
        synchronize(pl_module.device)
        self.stop = time.perf_counter()


def lightning_seconds(network: torch.nn.Module, batches: TensorBatches, warmup: int,
                      steps: int, device: torch.device, variant: Variant) -> float:
    """Seconds of ``steps`` steps of ``Trainer.fit`` with ``Classifier``, after ``warmup``."""
    module = Classifier(network, optimizer=sgd, scheduler=None, num_classes=10,
                        channels_last=variant.channels_last, compile_network=variant.compile)
    clock = _StepClock(warmup)
    trainer = pl.Trainer(
        accelerator="gpu" if device.type == "cuda" else "cpu", devices=1,
        # Lightning's name for the variant's arithmetic
        precision="bf16-mixed" if variant.autocast is torch.bfloat16 else "32-true",
        max_steps=warmup + steps, max_epochs=-1, logger=False,
        enable_checkpointing=False, enable_model_summary=False, limit_val_batches=0,
        num_sanity_val_steps=0, callbacks=[clock, progress_bar(10)], enable_progress_bar=True)
    trainer.fit(module, train_dataloaders=batches)
    return clock.stop - clock.start


def framework_ratio(device: torch.device, variant: Variant, width: float, size: int,
                    channels: int, batch: int, warmup: int, steps: int, repeats: int) -> dict:
    """The module's measurement at one setting: plain and Lightning ms per step, their ratio."""
    batches = synthetic_batches(batch * 8, size, channels, batch, device)
    plain, lightning = [], []
    for _ in range(repeats):
        plain.append(variant.seconds(variant.network(device, width, size, channels), batches,
                                     warmup, steps))
        torch._dynamo.reset()
        lightning.append(lightning_seconds(all_cnn_c(width, size, channels), batches, warmup,
                                           steps, device, variant))
    return {"variant": variant.name, "batch": batch, "steps": steps, "warmup": warmup,
            "plain_ms": min(plain) / steps * 1000, "lightning_ms": min(lightning) / steps * 1000,
            "ratio": min(plain) / min(lightning)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="reports/benchmarks/overhead.txt")
    args = parser.parse_args(argv)
    from hydra import compose, initialize_config_module

    from ablate import config

    config.register()
    lines = [
        f"Lightning stack vs plain PyTorch loop, All-CNN-C, {torch.get_num_threads()} CPU threads, "
        f"{args.steps} timed steps after {args.warmup} warm-up, best of {args.repeats}",
        f"{'setting':<8} {'width':>5} {'px':>3} {'batch':>5} {'plain ms/step':>14} "
        f"{'Lightning ms/step':>18} {'ratio':>6}"]
    for name in args.settings:
        with initialize_config_module(config.CONFIG_MODULE, version_base="1.3"):
            cfg = compose(config.CONFIG_NAME,  # All-CNN-C with the setting's overrides
                          overrides=["model=C", "downsample=conv", *SETTINGS[name]])
        width, size, batch = cfg.width, cfg.dataset.image_size, cfg.batch_size
        result = framework_ratio(torch.device("cpu"), VARIANTS[0], width, size,
                                 cfg.dataset.channels, batch, args.warmup, args.steps, args.repeats)
        lines.append(f"{name:<8} {width:>5} {size:>3} {batch:>5} {result['plain_ms']:>14.1f} "
                     f"{result['lightning_ms']:>18.1f} {result['ratio']:>6.3f}")
    text = "\n".join(lines) + "\n"
    print(text, end="")
    atomic.write_atomic(args.out, text)


if __name__ == "__main__":
    main()

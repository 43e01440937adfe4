"""Lightning callbacks the runner adds to every run: a time estimate and a learning curve."""

from __future__ import annotations

import math
import time
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.utilities import rank_zero_info


def _planned_batches(limit: int | float | None, available: int) -> int:
    if limit is None:
        return available
    if isinstance(limit, float) and limit <= 1.0:
        return int(math.floor(available * limit)) if limit < 1.0 else available
    return min(int(limit), available)


class TimeEstimate(pl.Callback):
    """Times a few real training steps before fitting and prints the run's expected wall time.

    The measurement runs under ``torch.random.fork_rng`` and restores the weights' gradients, so
    it changes neither the run's random stream nor its result. It excludes ``torch.compile``'s
    first compilation, which only happens inside the real loop.
    """

    def __init__(self, steps: int = 2) -> None:
        self.steps = steps
        self.seconds: float | None = None

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        datamodule = trainer.datamodule
        if datamodule is None or trainer.fast_dev_run:
            return
        loader = datamodule.train_dataloader()
        if len(loader) == 0:
            return
        x, y = next(iter(loader))
        devices = [x.device] if x.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            step_seconds = []
            for _ in range(self.steps + 1):
                start = time.perf_counter()
                loss = F.cross_entropy(pl_module.network(x), y)
                loss.backward()
                if x.device.type == "cuda":
                    torch.cuda.synchronize(x.device)
                step_seconds.append(time.perf_counter() - start)
        pl_module.zero_grad(set_to_none=True)
        step = min(step_seconds[1:])  # the first step pays for allocation and kernel selection
        train_batches = _planned_batches(trainer.limit_train_batches, len(loader))
        val_batches = _planned_batches(trainer.limit_val_batches, len(datamodule.val_dataloader()))
        epochs = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else 1
        if trainer.max_steps and trainer.max_steps > 0:
            epochs = min(epochs, math.ceil(trainer.max_steps / max(train_batches, 1)))
        eval_ratio = len(x) and (datamodule.eval_batch_size / len(x)) / 3.0  # forward only
        per_epoch = step * (train_batches + val_batches * eval_ratio)
        self.seconds = per_epoch * epochs
        rank_zero_info(
            f"[ablate] estimated training time: {_duration(self.seconds)} "
            f"({epochs} epochs x {train_batches} steps at {step * 1000:.0f} ms/step, measured)"
        )


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


class EpochHistory(pl.Callback):
    """Keeps the logged metrics of each epoch, for the learning curves in the result record.

    Lightning calls callbacks' ``on_train_epoch_end`` before the module's, where the epoch's
    training metrics are logged; so an epoch's row is taken when the next epoch starts, and the
    last one when training ends.
    """

    def __init__(self) -> None:
        self.epochs: list[dict[str, Any]] = []
        self._pending: dict[str, Any] | None = None

    def _take(self, trainer: pl.Trainer) -> None:
        if self._pending is None:
            return
        row = self._pending
        for key, value in sorted(trainer.callback_metrics.items()):
            if key.startswith(("train_", "val_")):
                row[key] = float(value)
        self.epochs.append(row)
        self._pending = None

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._take(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        optimizers = trainer.optimizers
        lr = float(optimizers[0].param_groups[0]["lr"]) if optimizers else None
        self._pending = {"epoch": trainer.current_epoch, "lr": lr}

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._take(trainer)

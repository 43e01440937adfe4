"""The Lightning callbacks of every run (``conf/callbacks/default.yaml``).

The factories return None where the Trainer turns the feature off, so one config serves both.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.callbacks import ModelCheckpoint, TQDMProgressBar

from ablate import console, invariance
from ablate.budget import duration, planned_batches, planned_epochs
from ablate.data.module import TensorDataModule
from ablate.predictions import write_predictions
from ablate.resume import IDENTITY_KEY

log = logging.getLogger("ablate")


def progress_bar(refresh_rate: int, enabled: bool = True) -> pl.Callback | None:
    """Lightning's bar on a terminal, redrawn every ``refresh_rate`` steps (at ~15 ms steps,
    collecting its metrics every step costs as much as the rest of Lightning's per-step work:
    ``ablate.bench.overhead``); elsewhere, where each redraw would be a line, one line per epoch
    (:class:`EpochLines`); None with the bar turned off."""
    if not enabled:
        return None
    return TQDMProgressBar(refresh_rate=refresh_rate) if console.interactive() else EpochLines()


def epoch_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """The per-epoch training and validation values among Lightning's logged metrics."""
    return {key: float(value) for key, value in sorted(metrics.items())
            if key.startswith(("train_", "val_"))}


class EpochEnd(pl.Callback):
    """Acts on each epoch once its metrics are complete: Lightning calls callbacks'
    ``on_train_epoch_end`` before the module's, which logs them, so an epoch is noted at its end
    and acted on when the next one starts (the last one when training ends)."""

    def __init__(self) -> None:
        self._pending: dict[str, Any] | None = None

    def noted(self, trainer: pl.Trainer) -> dict[str, Any]:
        """What to keep of an epoch at its end, before the module logs its metrics."""
        return {"epoch": trainer.current_epoch}

    def completed(self, trainer: pl.Trainer, row: dict[str, Any]) -> None:
        """The epoch's noted values and its training and validation metrics."""
        raise NotImplementedError

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._pending = self.noted(trainer)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._complete(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._complete(trainer)

    def _complete(self, trainer: pl.Trainer) -> None:
        if self._pending is None:
            return
        row, self._pending = self._row(trainer), None
        self.completed(trainer, row)

    def _row(self, trainer: pl.Trainer) -> dict[str, Any]:
        return {**(self._pending or {}), **epoch_metrics(trainer.callback_metrics)}


class EpochLines(EpochEnd):
    """One log line per epoch (``epoch 3/30: train_loss 0.41, val_error 0.052``): what a bar
    shows, for logs that are files (in a quiet multirun, the job's log file only)."""

    def completed(self, trainer: pl.Trainer, row: dict[str, Any]) -> None:
        shown = ", ".join(f"{key} {value:.4g}" for key, value in row.items() if key != "epoch")
        total = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else "?"
        log.info("epoch %d/%s: %s", row["epoch"] + 1, total, shown or "no metrics yet")


def last_checkpoint(dirpath: str, enabled: bool = True) -> ModelCheckpoint | None:
    """``<dirpath>/last.ckpt``, overwritten after every epoch, for a resumed run: a top-1
    checkpoint named ``last``, since ``save_last`` with ``save_top_k=0`` writes only at the end.
    None where the Trainer's checkpointing is turned off."""
    if not enabled:
        return None
    return ModelCheckpoint(dirpath=dirpath, filename="last", save_top_k=1,
                           enable_version_counter=False)


class TimeEstimate(pl.Callback):
    """Times a few real training steps before fitting and prints the run's expected wall time,
    under ``torch.random.fork_rng`` and with the gradients cleared after: it changes neither the
    run's random stream nor its result. ``torch.compile``'s first compilation is not in it."""

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
        train_batches = planned_batches(len(loader), trainer.limit_train_batches)
        val_batches = planned_batches(len(datamodule.val_dataloader()), trainer.limit_val_batches)
        epochs = planned_epochs(trainer.max_epochs, trainer.max_steps, train_batches)
        eval_ratio = len(x) and (datamodule.eval_batch_size / len(x)) / 3.0  # forward only
        per_epoch = step * (train_batches + val_batches * eval_ratio)
        self.seconds = per_epoch * epochs
        log.info("estimated training time: %s (%d epochs x %d steps at %.0f ms/step, measured)",
                 duration(self.seconds), epochs, train_batches, step * 1000)


class EpochHistory(EpochEnd):
    """Each epoch's logged metrics and learning rate, for the record's learning curve; kept in
    checkpoints, so that a resumed run's record has the whole curve."""

    def __init__(self) -> None:
        super().__init__()
        self.epochs: list[dict[str, Any]] = []

    def noted(self, trainer: pl.Trainer) -> dict[str, Any]:
        optimizers = trainer.optimizers
        lr = float(optimizers[0].param_groups[0]["lr"]) if optimizers else None
        return {**super().noted(trainer), "lr": lr}

    def completed(self, trainer: pl.Trainer, row: dict[str, Any]) -> None:
        self.epochs.append(row)

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        # Written after the module's epoch-end logging: the pending row is complete.
        rows = [dict(row) for row in self.epochs]
        if self._pending is not None:
            rows.append(self._row(trainer))
        checkpoint["ablate_history"] = rows

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        self.epochs = [dict(row) for row in checkpoint.get("ablate_history", [])]
        self._pending = None


class RandomState(pl.Callback):
    """Keeps torch's random streams in the checkpoint, so a resumed run continues bit for bit:
    batches and augmentation are seeded by (seed, epoch) already, dropout draws from the global
    CPU and CUDA generators."""

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        state = {"cpu": torch.get_rng_state()}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        checkpoint["ablate_rng"] = state

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("ablate_rng")
        if not state:
            return
        torch.set_rng_state(state["cpu"])
        cuda = state.get("cuda")
        if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)


class TestPredictions(pl.Callback):
    """Every test example's predicted class and logits, and how the predictions change when
    the (preprocessed) test images move (``ablate.invariance``; ``shifts=[]`` skips it): written
    to ``dirpath`` when testing ends, ``entry`` and ``invariance`` then go into the record."""

    def __init__(self, dirpath: str, shifts: Sequence[int] = invariance.DEFAULT_SHIFTS) -> None:
        self.dirpath = dirpath
        self.shifts = tuple(shifts)
        self.entry: dict[str, str] | None = None
        self.invariance: dict[str, Any] | None = None
        self.seconds: float | None = None  # what the invariance measurement cost
        self._logits: list[torch.Tensor] = []
        self._labels: list[torch.Tensor] = []

    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._logits, self._labels = [], []

    def on_test_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                          outputs: Any, batch: Any, batch_idx: int,
                          dataloader_idx: int = 0) -> None:
        self._logits.append(outputs.detach().float().cpu())
        self._labels.append(batch[1].detach().cpu())

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        logits, labels = _gathered(trainer, self._logits, self._labels)
        if not trainer.is_global_zero or logits is None:
            return
        perturbed = {}
        datamodule = trainer.datamodule
        if self.shifts and isinstance(datamodule, TensorDataModule) and datamodule.tensors:
            images, test_labels = datamodule.tensors["test"]
            if len(test_labels) == len(labels):  # the whole test set was tested
                was_training = pl_module.training
                pl_module.eval()
                started = time.perf_counter()
                perturbed = invariance.predictions(pl_module, images, self.shifts,
                                                   datamodule.eval_batch_size)
                pl_module.train(was_training)
                self.invariance = invariance.summarise(perturbed, labels)
                self.seconds = round(time.perf_counter() - started, 3)
        self.entry = write_predictions(
            self.dirpath, logits.argmax(1).numpy(), logits.half().numpy(), labels.numpy(),
            {key: value.numpy() for key, value in perturbed.items()
             if key != invariance.IDENTITY})


def _gathered(trainer: pl.Trainer, logits: list[torch.Tensor],
              labels: list[torch.Tensor]) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Every process's share of the test set, in rank order (the set's order, as
    ``TensorBatches`` shares it out), on the first process; None where nothing was tested."""
    mine = (torch.cat(logits), torch.cat(labels)) if logits else None
    if trainer.world_size > 1:
        import torch.distributed as dist

        shares: list[Any] | None = [None] * trainer.world_size if trainer.is_global_zero \
            else None
        dist.gather_object(mine, shares, dst=0)  # shares differ in length: not a tensor gather
        found = [share for share in shares or [] if share is not None]
        mine = (torch.cat([s[0] for s in found]), torch.cat([s[1] for s in found])) \
            if found else None
    return mine if mine is not None else (None, None)


class FirstStep(pl.Callback):
    """Wall-clock time (epoch seconds) of the first optimiser step: launch overhead ends there."""

    def __init__(self) -> None:
        self.at: float | None = None

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.at is None:
            self.at = time.time()


class ConfigStamp(pl.Callback):
    """Writes the run's ``config_id`` and config into every checkpoint it saves."""

    def __init__(self, config_id: str, config: Mapping[str, Any]) -> None:
        self.identity = {"config_id": config_id, "config": dict(config)}

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        checkpoint[IDENTITY_KEY] = self.identity

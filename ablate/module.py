"""The LightningModule: a built network, optimiser factories, error metrics, divergence check.

Everything comes from config; nothing of datasets, layer specs or records. Errors are logged as
fractions (``1 - accuracy``) because the paper's tables report error rates.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from ablate.errors import Diverged

OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]
SchedulerFactory = Callable[[torch.optim.Optimizer], Any]


def configure_network(module: pl.LightningModule) -> None:
    """Memory format and compilation of ``module.network``, applied once the module sits on its
    device (``configure_model``); ``Classifier`` and the packed seeds' module share it."""
    if module.channels_last:
        module.network.to(memory_format=torch.channels_last)
    if module.compile_network and module._compiled is None:
        # Kept out of the module tree so checkpoints hold each weight once, uncompiled.
        object.__setattr__(module, "_compiled", torch.compile(module.network))


class Classifier(pl.LightningModule):
    """Cross-entropy training of ``network``; softmax lives in the loss, as usual in torch."""

    def __init__(self, network: nn.Module, optimizer: OptimizerFactory,
                 scheduler: SchedulerFactory | None = None, num_classes: int = 10,
                 channels_last: bool = False, compile_network: bool = False) -> None:
        super().__init__()
        self.network = network
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.channels_last = channels_last
        self.compile_network = compile_network
        # Training loss is summed in a plain device tensor: it is updated every step, where a
        # metric object's checks cost more than the sum; a NaN stays NaN for the divergence check.
        self.register_buffer("_loss_sum", torch.zeros(()), persistent=False)
        self._loss_count = 0
        self.val_loss = MeanMetric()
        self.test_loss = MeanMetric()
        self.train_accuracy = MulticlassAccuracy(num_classes, average="micro", validate_args=False)
        self.val_accuracy = MulticlassAccuracy(num_classes, average="micro", validate_args=False)
        self.test_accuracy = MulticlassAccuracy(num_classes, average="micro", validate_args=False)
        self._compiled: nn.Module | None = None
        self._seed = 0

    def configure_model(self) -> None:
        configure_network(self)

    def on_fit_start(self) -> None:
        self._seed = torch.initial_seed()  # the run's seed: seed_everything set it

    def on_train_epoch_start(self) -> None:
        # Every process starts from the same seed, so each would draw the same dropout masks
        # for its rows; the others (not the first: a one-process run stays as it is) draw from
        # a stream of their own, a function of seed, rank and epoch, so a resume draws the same.
        rank = self.trainer.global_rank
        if rank > 0:
            torch.manual_seed(self._seed + 1_000_003 * rank + 7_919 * self.current_epoch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return (self._compiled or self.network)(x)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int):
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        # Metrics accumulate on the device; nothing here forces a host sync per step.
        self._loss_sum += loss.detach()
        self._loss_count += 1
        self.train_accuracy.update(logits.detach(), y)
        return loss

    def on_train_epoch_end(self) -> None:
        if self._loss_count == 0:
            return
        # every process's mean (equal shares of equal batches: the mean of one process), so
        # that all processes agree on divergence, as they must to stop together
        loss = self.trainer.strategy.reduce(self._loss_sum / self._loss_count, reduce_op="mean")
        if not torch.isfinite(loss):
            raise Diverged(f"training loss became {loss.item()} in epoch {self.current_epoch}")
        # values every process already holds (reduced above, or by the metric's own sync);
        # sync_dist tells Lightning they are the whole run's (one all-reduce each per epoch)
        self.log("train_loss", loss, prog_bar=True, sync_dist=True)
        self.log("train_error", 1.0 - self.train_accuracy.compute(), sync_dist=True)
        self._loss_sum.zero_()
        self._loss_count = 0
        self.train_accuracy.reset()

    def _evaluate(self, batch, loss_metric: MeanMetric,
                  accuracy: MulticlassAccuracy) -> torch.Tensor:
        x, y = batch
        logits = self(x)
        loss_metric.update(F.cross_entropy(logits, y), weight=len(y))
        accuracy.update(logits, y)
        return logits

    def validation_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, self.val_loss, self.val_accuracy)

    def _log_epoch(self, stage: str, loss: MeanMetric, accuracy: MulticlassAccuracy) -> None:
        if accuracy.update_count == 0:
            return
        self.log(f"{stage}_loss", loss.compute(), sync_dist=True)
        self.log(f"{stage}_error", 1.0 - accuracy.compute(), prog_bar=stage == "val",
                 sync_dist=True)
        loss.reset()
        accuracy.reset()

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val", self.val_loss, self.val_accuracy)

    def test_step(self, batch, batch_idx: int) -> torch.Tensor:
        """The logits, for callbacks that keep per-example predictions."""
        return self._evaluate(batch, self.test_loss, self.test_accuracy)

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test", self.test_loss, self.test_accuracy)

    def configure_optimizers(self):
        return self.optimization(self.network.parameters())

    def optimization(self, parameters: Iterable[nn.Parameter]) -> Any:
        """This module's optimiser (and epoch-wise schedule) over ``parameters``, in the form
        ``configure_optimizers`` returns: the packed seeds' module asks it for theirs."""
        optimizer = self.optimizer_factory(parameters)
        if self.scheduler_factory is None:
            return optimizer
        schedule = {"scheduler": self.scheduler_factory(optimizer), "interval": "epoch"}
        return {"optimizer": optimizer, "lr_scheduler": schedule}

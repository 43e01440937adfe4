"""The LightningDataModule: a dataset source, a held-out validation split, on-device batches."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytorch_lightning as pl
import torch

from ablate.budget import held_out
from ablate.data.batches import Augment, EvalGeometry, TensorBatches
from ablate.data.cache import Prepared, load_or_prepare
from ablate.data.preprocess import Preprocessor, Standardize, apply_preprocess
from ablate.data.splits import ImageSplits
from ablate.errors import DatasetError


def split_validation(x: torch.Tensor, y: torch.Tensor, size: int | float,
                     seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Hold out ``size`` training images (a count, or a fraction when below 1) for validation."""
    count = held_out(len(x), size)
    if not 0 <= count < len(x):
        raise DatasetError(f"dataset.val_size={size} leaves no training images out of {len(x)}; "
                           "use a fraction below 1 or a smaller count")
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    val, train = order[:count], order[count:]
    return x[train], y[train], x[val], y[val]


class TensorDataModule(pl.LightningDataModule):
    """Loads a source once, preprocesses it (cached in ``cache_dir`` unless None: the runs of a
    grid fit GCN + ZCA once), and keeps all splits on the training device. An ``EvalGeometry``
    augmentation (``large``'s canvas) places the evaluation images once, as training sees them.
    """

    def __init__(self, source: Callable[[], ImageSplits], channels: int, image_size: int,
                 num_classes: int, batch_size: int = 128, eval_batch_size: int = 500,
                 val_size: int | float = 0.1, split_seed: int = 0, seed: int = 0,
                 preprocess: Preprocessor | None = None, augment: Augment | None = None,
                 cache_dir: str | os.PathLike[str] | None = None) -> None:
        super().__init__()
        # A source that can tell cheaply whether its data is there (``load_cifar.check``): no
        # data is then a rejected config (one line, no record), not a run failing inside fit.
        check = getattr(getattr(source, "func", source), "check", None)
        if callable(check):
            check(*getattr(source, "args", ()), **getattr(source, "keywords", {}))
        self.source = source
        self.channels, self.image_size, self.num_classes = channels, image_size, num_classes
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.val_size, self.split_seed, self.seed = val_size, split_seed, seed
        self.preprocess = preprocess if preprocess is not None else Standardize()
        self.augment, self.cache_dir = augment, cache_dir
        self.tensors: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._train_batches: TensorBatches | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.tensors:
            return
        splits = self.source()
        splits.check(self.channels, self.num_classes)
        splits = splits.resized(self.image_size)
        if self.cache_dir is None:
            prepared = self._prepare(splits)
        else:
            split = {"val_size": self.val_size, "split_seed": self.split_seed}
            prepared = load_or_prepare(self.cache_dir, splits, split, self.preprocess,
                                       lambda: self._prepare(splits))
        trainer = self.trainer
        device = trainer.strategy.root_device if trainer is not None else torch.device("cpu")
        geometry = self.augment if isinstance(self.augment, EvalGeometry) else None
        for name, (x, y) in prepared.items():
            x = x.to(device)
            if geometry is not None and name != "train":
                x = torch.cat([geometry.eval_transform(part)
                               for part in x.split(self.eval_batch_size)])
            self.tensors[name] = (x.contiguous(), y.to(device))

    def _prepare(self, splits: ImageSplits) -> Prepared:
        """Hold out validation images, then fit the preprocessing on what remains for training."""
        train_x, train_y, val_x, val_y = split_validation(splits.train_x, splits.train_y,
                                                          self.val_size, self.split_seed)
        train_x, val_x, test_x = apply_preprocess(self.preprocess, train_x, val_x, splits.test_x)
        return {"train": (train_x, train_y), "val": (val_x, val_y), "test": (test_x, splits.test_y)}

    def image_counts(self) -> dict[str, int]:
        """Images per split as the run used them: the record says what was trained on."""
        return {name: int(len(y)) for name, (_, y) in self.tensors.items()}

    def _epoch(self) -> int:
        return self.trainer.current_epoch if self.trainer is not None else 0

    def _process(self) -> dict[str, int]:
        """This process's place under data parallelism (``batch_size`` is the global batch)."""
        if self.trainer is None:
            return {"rank": 0, "world": 1}
        return {"rank": self.trainer.global_rank, "world": self.trainer.world_size}

    def train_dataloader(self) -> TensorBatches:
        # One instance per fit: an augmentation's prepared copy of the set is made only once.
        if self._train_batches is None:
            x, y = self.tensors["train"]
            self._train_batches = TensorBatches(x, y, self.batch_size, shuffle=True,
                                                seed=self.seed, epoch=self._epoch,
                                                augment=self.augment, **self._process())
        return self._train_batches

    def val_dataloader(self) -> TensorBatches:
        return TensorBatches(*self.tensors["val"], self.eval_batch_size, **self._process())

    def test_dataloader(self) -> TensorBatches:
        return TensorBatches(*self.tensors["test"], self.eval_batch_size, **self._process())

"""Batches cut from tensors that already sit on the training device.

No Dataset, DataLoader or worker processes: shuffling is one ``randperm`` per epoch, a batch is
one index operation, and augmentation is applied to the whole batch on the device (a
``FusedAugment`` cuts augmented batches straight out of a form of the set it prepared once). The
order of epoch ``e`` depends only on ``(seed, e)``, so a resumed run sees the same batches as one
that never stopped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Protocol, runtime_checkable

import torch

from ablate.budget import batches_of


class Augment(Protocol):
    """A batch in, the augmented batch out; every random draw from ``generator``."""

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor: ...


@runtime_checkable
class FusedAugment(Protocol):
    """An augmentation that cuts augmented batches out of a form of the whole set made once
    (``FlipTranslate``): batching and augmenting in one copy."""

    def prepare(self, images: torch.Tensor) -> torch.Tensor: ...

    def select(self, prepared: torch.Tensor, index: torch.Tensor,
               generator: torch.Generator) -> torch.Tensor: ...


@runtime_checkable
class EvalGeometry(Protocol):
    """An augmentation that changes the image geometry (a larger canvas): evaluation images
    must be placed the same way once, or the network would see two kinds of input."""

    def eval_transform(self, x: torch.Tensor) -> torch.Tensor: ...


class TensorBatches:
    """An iterable of ``(images, labels)`` batches over in-memory tensors.

    Under data parallelism (``world`` processes), shuffled (training) batches: ``batch_size``
    is the global batch; every process cuts the same global batch, augmented with the same
    draws, and keeps its own rows (``rank``'s equal part), so the processes together train on
    the batches of one process (cutting the whole batch on every process costs an index copy,
    next to nothing beside the network); an epoch's short last batch loses the rows that would
    make the shares unequal (fewer than ``world``). Unshuffled (evaluation)
    batches: each process takes its contiguous share of the set, so every example is evaluated
    once, and the shares in rank order are the set in its order.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int,
                 shuffle: bool = False, seed: int = 0, epoch: Callable[[], int] | None = None,
                 augment: Augment | None = None, rank: int = 0, world: int = 1) -> None:
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} of {world} processes")
        if world > 1 and not shuffle:
            images, labels = images.tensor_split(world)[rank], labels.tensor_split(world)[rank]
            rank, world = 0, 1
        self.images, self.labels, self.batch_size = images, labels, batch_size
        self.shuffle, self.seed, self.augment = shuffle, seed, augment
        self.rank, self.world = rank, world
        self._epoch = epoch
        self._iterations = 0
        self._prepared = augment.prepare(images) if isinstance(augment, FusedAugment) else None

    def __len__(self) -> int:
        # the last one may be short; under data parallelism it is cut to a multiple of the
        # processes (equal shares: the mean of the shares' losses is the batch's), and dropped
        # when that leaves nothing
        count = batches_of(len(self.images), self.batch_size)
        last = len(self.images) - (count - 1) * self.batch_size
        return count - (self.world > 1 and count > 0 and last < self.world)

    def _part(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.world == 1:
            return x, y
        return x.tensor_split(self.world)[self.rank], y.tensor_split(self.world)[self.rank]

    def _generator(self, device: torch.device, epoch: int) -> torch.Generator:
        return torch.Generator(device=device).manual_seed(self.seed * 1_000_003 + epoch)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        epoch = self._epoch() if self._epoch is not None else self._iterations
        self._iterations += 1
        device = self.images.device
        count = len(self.images)
        order = None
        if self.shuffle:
            order = torch.randperm(count, generator=self._generator(torch.device("cpu"), epoch))
            order = order.to(device, non_blocking=True)
        augment_generator = self._generator(device, epoch) if self.augment is not None else None
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            stop = min(start + self.batch_size, count)
            stop -= (stop - start) % self.world  # equal shares (at most world - 1 rows left)
            if order is None and self._prepared is None:
                x, y = self.images[start:stop], self.labels[start:stop]
            else:
                index = order[start:stop] if order is not None else torch.arange(
                    start, stop, device=device)
                # index_select, not images[index]: same result, ~6x faster on CPU (row copies).
                y = self.labels.index_select(0, index)
                if self._prepared is not None:
                    yield self._part(self.augment.select(self._prepared, index,
                                                         augment_generator), y)
                    continue
                x = self.images.index_select(0, index)
            if self.augment is not None:
                x = self.augment(x, augment_generator)
            yield self._part(x, y)

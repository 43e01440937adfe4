"""A LightningDataModule that streams images from webdataset shards (``ablate.data.prepare``).

ImageNet does not fit the project's usual data path (every split one tensor on the device):
it is 140 GB of JPEGs. Here DataLoader workers read tar shards front to back with webdataset,
decode with PIL and crop (``ablate.data.image_transforms``), and hand over float batches.

Splits: ``train`` shards for training; the ``holdout`` shards (training images ``prepare`` set
aside, ``--holdout``) for validation, the lr selection; ILSVRC's ``val`` shards as the test set,
as the paper reports on it. ``val_size`` must equal the holdout's image count, or be 0 (the
final stage): the holdout shards then train too, and there is no validation set.

Distributed: ``batch_size`` is the global batch; each of ``world_size`` ranks takes
``batch_size // world_size`` and reads its own shards (every ``world_size``-th, then every
``num_workers``-th within the rank, as webdataset's ``split_by_node``/``split_by_worker`` do).
Training runs exactly ``train images // batch_size`` steps per epoch on every rank (DDP needs
equal step counts): each worker reads its shards in a new seeded order every pass and cycles
them until its share of the steps is done, so an epoch sees about every image once. Evaluation
reads each shard once on one rank: every image is scored exactly once, ranks may differ by a
shard's batches.

Checks, before any training step: the index exists, is complete and of this format, pins the
fingerprint the config names (if it names one), the split seed and holdout the config expects,
and every shard file has its recorded size. While reading, a shard that cannot be read, or
whose bytes do not hash to its recorded SHA-256 (``verify_shards``), stops the run with an error
naming the file.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import random
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import pytorch_lightning as pl
import torch
from PIL import Image
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from webdataset.filters import shuffle as buffer_shuffle
from webdataset.tariterators import group_by_keys, tar_file_expander

from ablate.budget import held_out
from ablate.data import shard_format as fmt
from ablate.data.image_transforms import CenterCrop, Normalise, RandomResizedCrop
from ablate.data.preprocess import Identity, Standardize
from ablate.errors import DatasetError

ImageTransform = Callable[[Image.Image, random.Random], Image.Image]
Sample = tuple[torch.Tensor, int]


class _HashingReader:
    """A read-only stream that hashes what the tar reader takes, and the rest on ``finish``."""

    def __init__(self, stream: BinaryIO) -> None:
        self.stream, self.digest = stream, hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self.stream.read(size)
        self.digest.update(data)
        return data

    def finish(self) -> str:
        for chunk in iter(lambda: self.stream.read(fmt.CHUNK), b""):
            self.digest.update(chunk)
        return self.digest.hexdigest()


class ShardStream(IterableDataset):
    """The batches one rank reads from ``shards``: decoded, cropped and normalised in whichever
    DataLoader worker runs it. ``steps`` set: training (shuffled, cycling, exactly ``steps``
    batches over all workers); None: evaluation (each shard once, in index order)."""

    def __init__(self, folder: Path, shards: Sequence[fmt.Shard], batch_size: int,
                 transform: ImageTransform, normalise: Normalise, num_classes: int,
                 rank: int = 0, world_size: int = 1, num_workers: int = 0, seed: int = 0,
                 steps: int | None = None, shuffle_buffer: int = 0, verify: bool = True,
                 fix: str = "") -> None:
        self.folder, self.shards, self.batch_size = folder, list(shards), batch_size
        self.transform, self.normalise, self.num_classes = transform, normalise, num_classes
        self.rank, self.world_size, self.workers = rank, world_size, max(1, num_workers)
        self.seed, self.steps, self.shuffle_buffer = seed, steps, shuffle_buffer
        self.verify, self.fix = verify, fix
        self.epoch = 0  # set by ``EpochLoader`` before each epoch's workers start
        if steps is not None and len(self.shards) < world_size * self.workers:
            raise DatasetError(
                f"{len(self.shards)} training shards cannot feed {world_size} rank(s) x "
                f"{self.workers} worker(s) each; lower dataset.num_workers, or prepare smaller "
                "shards (--shard-bytes) so that there are more of them")

    def shards_for(self, worker: int, workers: int, cycle: int = 0) -> list[fmt.Shard]:
        """The shards this rank's ``worker`` reads: in training a new order per epoch and pass
        (the same on every rank, so the ranks' shares stay disjoint), then the node's and the
        worker's share of it."""
        order = list(self.shards)
        if self.steps is not None:
            random.Random(f"{self.seed}:{self.epoch}:{cycle}").shuffle(order)
        return order[self.rank::self.world_size][worker::workers]

    def _worker_steps(self, worker: int, workers: int) -> int | None:
        if self.steps is None:
            return None
        return self.steps // workers + (1 if worker < self.steps % workers else 0)

    def __len__(self) -> int:
        if self.steps is not None:
            return self.steps
        return sum(math.ceil(sum(s.images for s in self.shards_for(w, self.workers))
                             / self.batch_size) for w in range(self.workers))

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        rng = random.Random(f"{self.seed}:{self.epoch}:{self.rank}:{worker}")
        samples = self._samples(self._urls(worker, workers))
        if self.steps is not None and self.shuffle_buffer > 1:
            samples = buffer_shuffle(self.shuffle_buffer, initial=self.shuffle_buffer, rng=rng)(
                samples)
        images = (self._decode(sample, rng) for sample in samples)
        yield from _batches(images, self.batch_size, self._worker_steps(worker, workers))

    def _urls(self, worker: int, workers: int) -> Iterator[fmt.Shard]:
        cycle = 0
        while True:
            yield from self.shards_for(worker, workers, cycle)
            if self.steps is None:
                return
            cycle += 1

    def _samples(self, shards: Iterator[fmt.Shard]) -> Iterator[dict[str, Any]]:
        for shard in shards:
            path = self.folder / shard.file
            try:
                yield from self._read(path, shard)
            except DatasetError:
                raise
            except Exception as error:  # tarfile, OS and webdataset errors alike
                raise DatasetError(f"shard {path} is truncated or corrupt ({error}); "
                                   f"{self.fix}") from error

    def _read(self, path: Path, shard: fmt.Shard) -> Iterator[dict[str, Any]]:
        with open(path, "rb") as handle:
            reader = _HashingReader(handle)
            files = tar_file_expander([{"url": str(path), "stream": reader}])
            yield from group_by_keys(files)
            if self.verify and (found := reader.finish()) != shard.sha256:
                raise DatasetError(f"shard {path} has SHA-256 {found[:16]}..., its index "
                                   f"entry {shard.sha256[:16]}...: the file changed or is "
                                   f"corrupt; {self.fix}")

    def _decode(self, sample: dict[str, Any], rng: random.Random) -> Sample:
        where = f"{sample.get('__url__')} ({sample.get(fmt.PATH_EXT, b'?').decode()})"
        data = next((sample[ext] for ext in fmt.IMAGE_TYPES.values() if ext in sample), None)
        try:
            label = int(sample[fmt.LABEL_EXT])
            if data is None:
                raise ValueError("no image member")
            with Image.open(io.BytesIO(data)) as image:
                rgb = image.convert("RGB")  # ILSVRC holds some CMYK and grey JPEGs
        except (KeyError, ValueError, OSError) as error:
            raise DatasetError(f"sample {sample.get('__key__')} of shard {where} cannot be "
                               f"read ({error}); {self.fix}") from error
        if not 0 <= label < self.num_classes:
            raise DatasetError(f"shard {where} has label {label}, outside 0..{self.num_classes - 1}"
                               f"; dataset.num_classes does not match the shards")
        return self.normalise(self.transform(rgb, rng)), label


def _batches(items: Iterator[Sample], size: int,
             limit: int | None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Stacked batches of ``size`` (the last one short), at most ``limit`` of them."""
    if limit == 0:
        return
    count, images, labels = 0, [], []
    for image, label in items:
        images.append(image)
        labels.append(label)
        if len(images) == size:
            yield torch.stack(images), torch.tensor(labels)
            images, labels, count = [], [], count + 1
            if count == limit:
                return
    if images and limit is None:
        yield torch.stack(images), torch.tensor(labels)


class EpochLoader(DataLoader):
    """A DataLoader that tells its ``ShardStream`` the epoch before the workers start (they
    copy the stream when an epoch begins, so a later change would not reach them)."""

    def __init__(self, stream: ShardStream, epoch: Callable[[], int], **kwargs: Any) -> None:
        super().__init__(stream, batch_size=None, **kwargs)
        self.epoch = epoch

    def __iter__(self) -> Any:
        self.dataset.epoch = self.epoch()
        return super().__iter__()


class ShardDataModule(pl.LightningDataModule):
    """Shards under ``root/dataset`` as train, val (the holdout) and test (ILSVRC's val)."""

    def __init__(self, root: str | os.PathLike[str], dataset: str, channels: int,
                 image_size: int, num_classes: int, batch_size: int = 256,
                 eval_batch_size: int = 500, val_size: int | float = 10_000,
                 split_seed: int = 0, seed: int = 0, fingerprint: str | None = None,
                 num_workers: int = 8, shuffle_buffer: int = 1000, resize: int = 256,
                 verify_shards: bool = True, preprocess: Any = None, augment: Any = None,
                 rank: int | None = None, world_size: int | None = None) -> None:
        super().__init__()
        self.folder = Path(root).expanduser() / dataset
        self.fix = (f"rerun {fmt.prepare_command(dataset, Path(root).expanduser())}: it rewrites "
                    "the shards that no longer match the index")
        if channels != 3:
            raise DatasetError(f"dataset.channels={channels}: shards hold RGB images; set 3")
        if augment is not None:
            raise DatasetError("dataset=" + dataset + " crops and flips in its loader workers "
                               "(random-resized crop + flip); set augmentation=none")
        self.normalise = _normalise(preprocess)
        self.index = fmt.Index.load(self.folder / fmt.INDEX_NAME, dataset)
        if fingerprint is not None and fingerprint != self.index.fingerprint:
            raise DatasetError(
                f"{self.folder} holds shards of another source (fingerprint "
                f"{self.index.fingerprint}), not the one dataset.fingerprint pins ({fingerprint}); "
                "point dataset.root at the right shards, or set dataset.fingerprint=null to "
                "accept these")
        if len(self.index.classes) != num_classes:
            raise DatasetError(f"{self.folder} has {len(self.index.classes)} classes, "
                               f"dataset.num_classes is {num_classes}; make them agree")
        self._check_split(val_size, split_seed)
        self._check_files()
        self.image_size, self.num_classes, self.resize = image_size, num_classes, resize
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.val_size, self.seed, self.num_workers = val_size, seed, num_workers
        self.shuffle_buffer, self.verify_shards = shuffle_buffer, verify_shards
        self._rank, self._world_size = rank, world_size
        if world_size is not None:
            self._per_rank(world_size)

    def _check_split(self, val_size: int | float, split_seed: int) -> None:
        holdout = self.index.counts.get("holdout", 0)
        pool = self.index.counts.get("train", 0) + holdout
        wanted = held_out(pool, val_size)
        settings = self.index.settings
        if wanted not in (0, holdout):
            raise DatasetError(
                f"dataset.val_size={val_size} asks for {wanted} validation images, but the shards "
                f"in {self.folder} set aside {holdout} (prepared with --holdout {holdout}); set "
                f"dataset.val_size={holdout} (or 0 to train on all), or prepare again with "
                f"--holdout {wanted}")
        if settings.get("seed") != split_seed:
            raise DatasetError(
                f"dataset.split_seed={split_seed}, but the shards in {self.folder} were prepared "
                f"with --seed {settings.get('seed')}, which fixed their holdout; set "
                f"dataset.split_seed={settings.get('seed')} or prepare again with --seed "
                f"{split_seed}")

    def _check_files(self) -> None:
        for shard in self.index.shards:
            path = self.folder / shard.file
            size = path.stat().st_size if path.is_file() else None
            if size != shard.bytes:
                found = "is missing" if size is None else f"has {size} bytes, not {shard.bytes}"
                raise DatasetError(f"shard {path} {found} (truncated or replaced); {self.fix}")

    def _split_shards(self) -> dict[str, list[fmt.Shard]]:
        holdout = self.index.split("holdout")
        final = held_out(self.index.counts.get("train", 0) + len(holdout), self.val_size) == 0
        return {"train": self.index.split("train") + (holdout if final else []),
                "val": [] if final else holdout, "test": self.index.split("val")}

    @property
    def source_fingerprint(self) -> str:
        """The hash of the source the shards were written from: the run's record keeps it, so
        that runs on other shards of the same dataset are never averaged as reruns."""
        return self.index.fingerprint

    def image_counts(self) -> dict[str, int]:
        """Images per split as the run used them (all ranks together)."""
        return {name: sum(s.images for s in shards)
                for name, shards in self._split_shards().items()}

    def _distributed(self) -> tuple[int, int]:
        """This process's rank and the number of ranks: given, the trainer's, or torch's."""
        if self._rank is not None and self._world_size is not None:
            return self._rank, self._world_size
        trainer = self.trainer
        if trainer is not None:
            return trainer.global_rank, trainer.world_size
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_rank(), torch.distributed.get_world_size()
        return 0, 1

    def _per_rank(self, world_size: int) -> int:
        if self.batch_size % world_size:
            raise DatasetError(f"batch_size={self.batch_size} is the global batch and must split "
                               f"evenly over {world_size} ranks; use a multiple of {world_size}")
        return self.batch_size // world_size

    def _epoch(self) -> int:
        return self.trainer.current_epoch if self.trainer is not None else 0

    def _loader(self, split: str) -> EpochLoader:
        rank, world = self._distributed()
        training = split == "train"
        shards = self._split_shards()[split]
        if training:
            batch = self._per_rank(world)
            steps = sum(s.images for s in shards) // self.batch_size
            transform: ImageTransform = RandomResizedCrop(self.image_size)
        else:
            batch, steps = -(-self.eval_batch_size // world), None  # eval batches: any split
            transform = CenterCrop(self.image_size, self.resize)
            if 0 < len(shards) < world:  # a rank without shards would skip the evaluation
                raise DatasetError(   # that the others wait in for its metrics: a hang
                    f"the {split} split has {len(shards)} shard(s) for {world} ranks, and every "
                    "rank evaluates shards of its own; prepare smaller shards "
                    "(python -m ablate.data.prepare ... --shard-images N) so that there are at "
                    f"least {world}")
        stream = ShardStream(self.folder, shards, batch, transform, self.normalise,
                             self.num_classes, rank, world, self.num_workers, self.seed, steps,
                             self.shuffle_buffer if training else 0, self.verify_shards, self.fix)
        return EpochLoader(stream, self._epoch, num_workers=self.num_workers,
                           pin_memory=torch.cuda.is_available(),
                           persistent_workers=False)

    def train_dataloader(self) -> EpochLoader:
        return self._loader("train")

    def val_dataloader(self) -> EpochLoader:
        return self._loader("val")

    def test_dataloader(self) -> EpochLoader:
        return self._loader("test")


def _normalise(preprocess: Any) -> Normalise:
    """The ``preprocess`` axis, read for streamed images: ``standardize`` is per-channel
    normalisation with ImageNet's published statistics (too many images to fit them per run),
    ``none`` plain pixels in [0, 1]; anything fitted on whole tensors (GCN + ZCA) cannot stream."""
    if preprocess is None or isinstance(preprocess, Standardize):
        return Normalise()
    if isinstance(preprocess, Identity):
        return Normalise((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    raise DatasetError(f"preprocess {type(preprocess).__name__} needs the whole dataset as one "
                       "tensor; streamed shards take preprocess=standardize (ImageNet's "
                       "per-channel statistics) or preprocess=none")

"""A tiny ImageNet-style folder tree (``train/<wnid>/*.JPEG``, ``val/<wnid>/*.JPEG``) of random
JPEGs written with PIL, and its shards, for the tests of ``ablate.data.prepare`` and
``ablate.data.shards``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ablate.data.prepare import prepare

CLASSES = ("n01440764", "n01443537", "n01484850")
TRAIN_PER_CLASS, VAL_PER_CLASS = 10, 4
HOLDOUT = 6
SHARD_IMAGES = 4
# dataset=imagenet shrunk to the tree: its 3 classes, its holdout, no workers
OVERRIDES = ["dataset=imagenet", "dataset.num_classes=3", f"dataset.val_size={HOLDOUT}",
             "dataset.num_workers=0"]


def write_tree(root: Path, size: tuple[int, int] = (80, 64), seed: int = 0) -> Path:
    """``root/train/<wnid>/<wnid>_<i>.JPEG`` and ``root/val/<wnid>/...``: width x height noise."""
    rng = np.random.default_rng(seed)
    for split, count in (("train", TRAIN_PER_CLASS), ("val", VAL_PER_CLASS)):
        for wnid in CLASSES:
            folder = root / split / wnid
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{wnid}_{i}.JPEG", quality=80)
    return root


def write_shards(tmp_path: Path) -> Path:
    """The tree's shards under ``tmp_path/data/imagenet``; returns the data root."""
    source = write_tree(tmp_path / "src")
    prepare("imagenet", source, tmp_path / "data", holdout=HOLDOUT, shard_images=SHARD_IMAGES,
            progress=False)
    return tmp_path / "data"

"""How many images per second one DataLoader worker turns from shard bytes into 224 px tensors.

``python -m ablate.bench.shard_decode`` writes ``--images`` ImageNet-like JPEGs (random
``--width`` x ``--height`` regions of the two photographs scikit-learn ships, re-encoded at
quality ``--quality``: real image statistics, unlike noise, which decodes far slower), prepares
them into shards with ``ablate.data.prepare`` (untimed), then times ``ShardStream`` in this
process, which is what one worker runs: reading the tar, hashing it (``verify_shards``), JPEG
decoding, the crop (training: random-resized crop + flip; evaluation: resize to 256 + centre
crop), normalisation and stacking into batches. One untimed warm-up pass, then the best of
``--repeats``; torch on one thread, as in a worker. Images per second per worker times the
workers a rank runs (``dataset.num_workers``, at most its free cores) is that rank's supply.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image
from sklearn.datasets import load_sample_images

from ablate.data.image_transforms import CenterCrop, Normalise, RandomResizedCrop
from ablate.data.prepare import prepare
from ablate.data.shards import ShardStream


def write_tree(root: Path, images: int, size: tuple[int, int], quality: int) -> int:
    """``images`` JPEGs in two class folders of train/ (val/ gets one each); their bytes."""
    photos = [Image.fromarray(p) for p in load_sample_images().images]  # 640 x 427 each
    rng = random.Random(0)
    total = 0
    for split, count in (("train", images), ("val", 2)):
        for i in range(count):
            photo = photos[i % 2]
            w, h = min(size[0], photo.width), min(size[1], photo.height)
            left, top = rng.randint(0, photo.width - w), rng.randint(0, photo.height - h)
            folder = root / split / f"n{i % 2:08d}"
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"{i}.JPEG"
            photo.crop((left, top, left + w, top + h)).save(path, quality=quality)
            total += path.stat().st_size
    return total


def rate(stream: ShardStream, repeats: int) -> float:
    """Images per second through ``stream``: the best of ``repeats`` passes after a warm-up."""
    best = float("inf")
    for attempt in range(repeats + 1):
        start, count = time.perf_counter(), 0
        for _, labels in stream:
            count += len(labels)
        if attempt:
            best = min(best, time.perf_counter() - start)
    return count / best


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--width", type=int, default=500)  # ILSVRC's typical 500 x 375
    parser.add_argument("--height", type=int, default=375)
    parser.add_argument("--quality", type=int, default=90)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as scratch:
        source, root = Path(scratch) / "src", Path(scratch) / "data"
        size = write_tree(source, args.images, (args.width, args.height), args.quality)
        index = prepare("imagenet", source, root, holdout=0, progress=False)
        shards = index.split("train")
        print(f"{args.images} JPEGs of {args.width}x{args.height} at quality {args.quality}, "
              f"{size / args.images / 1000:.0f} kB each; torch {torch.__version__}, 1 thread")
        for name, transform in (("train", RandomResizedCrop()), ("eval", CenterCrop())):
            for verify in (True, False):
                stream = ShardStream(root / "imagenet", shards, args.batch_size, transform,
                                     Normalise(), len(index.classes), verify=verify)
                print(f"{name:<5} (verify_shards={str(verify).lower():<5}): "
                      f"{rate(stream, args.repeats):7.0f} images/s per worker")


if __name__ == "__main__":
    main()

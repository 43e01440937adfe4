"""Turn an ImageNet-style folder tree into webdataset tar shards a run can stream.

``python -m ablate.data.prepare imagenet SRC DST`` reads ``SRC/train/<class>/*`` and
``SRC/val/<class>/*`` (ILSVRC-2012's val sorted into class folders) and writes
``DST/imagenet/{train,holdout,val}-NNNNNN.tar`` and ``DST/imagenet/index.json``
(``ablate.data.shard_format`` describes both).

Why shards: 1.28 million small files read in a random order each epoch are slow on every
filesystem; a few hundred large tars read front to back are fast on all of them, and a
DataLoader worker can decode one while the GPU trains. The order inside the shards is one fixed
shuffle (``--seed``), so every shard mixes the classes and reading a few shards in turn already
gives mixed batches. Label = the class folder's position in the sorted list of training folders
(ILSVRC's wnids sort into the usual 0..999).

Restartable: each shard is written under a temporary name and renamed when complete, and the
index is rewritten (atomically) after every shard. A rerun with the same source and options
keeps each shard whose bytes still hash to what the index recorded for the same plan, and
writes the others. At the end every shard written in this run is read back and hashed against
the index before the index is marked complete: a run never starts on unchecked shards.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import random
import sys
import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from tqdm import tqdm

from ablate import atomic
from ablate.data import shard_format as fmt
from ablate.errors import DatasetError

log = logging.getLogger("ablate.data.prepare")  # also under python -m

DATASETS = ("imagenet",)
SOURCE_SPLITS = ("train", "val")
TAR_BLOCK = 512
DEFAULT_SHARD_BYTES = 1_000_000_000  # ~9,000 ImageNet JPEGs: few files, each worth a worker
DEFAULT_HOLDOUT = 10_000  # ILSVRC-2012 training images set aside for the lr selection


@dataclass(frozen=True)
class SourceFile:
    """One image of the source tree: where it is, its size, its class, how it is stored."""

    path: str  # relative to SRC, with forward slashes
    size: int
    label: int
    ext: str  # "jpg" or "png" (``shard_format.IMAGE_TYPES``)


@dataclass(frozen=True)
class Source:
    root: Path
    classes: tuple[str, ...]
    files: dict[str, list[SourceFile]]  # "train", "val"

    def fingerprint(self) -> str:
        """Hash of the format version and every file's relative path and size, sorted: a
        different copy or subset of the source gives another fingerprint."""
        digest = hashlib.sha256(f"{fmt.FORMAT} {fmt.FORMAT_VERSION}\n".encode())
        for item in sorted((f for files in self.files.values() for f in files),
                           key=lambda f: f.path):
            digest.update(f"{item.path}\t{item.size}\n".encode())
        return digest.hexdigest()


@dataclass(frozen=True)
class PlannedShard:
    """A shard before it is written: its name and the images it will hold, in order."""

    file: str
    split: str
    members: tuple[tuple[str, SourceFile], ...]  # (sample key, image)

    @property
    def plan(self) -> str:
        """Hash of everything that decides the shard's bytes; equal plans give equal shards."""
        rows = [[key, f.path, f.size, f.label, f.ext] for key, f in self.members]
        text = json.dumps([fmt.FORMAT_VERSION, self.file, rows], separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()


def scan(src: Path) -> Source:
    """Every image of ``src``, checked: one line naming the first thing that is wrong."""
    layout = f"expected {src}/train/<class>/*.JPEG and {src}/val/<class>/*.JPEG"
    if not src.is_dir():
        raise DatasetError(f"source folder {src} does not exist; {layout}")
    for split in SOURCE_SPLITS:
        if not (src / split).is_dir():
            raise DatasetError(f"{src} has no {split}/ folder; {layout} (ILSVRC's val images "
                               "sorted into class folders)")
    classes = tuple(sorted(_class_folders(src / "train")))
    if not classes:
        raise DatasetError(f"{src / 'train'} has no class folders; {layout}")
    labels = {name: label for label, name in enumerate(classes)}
    files: dict[str, list[SourceFile]] = {}
    for split in SOURCE_SPLITS:
        files[split] = []
        for name in sorted(_class_folders(src / split)):
            if name not in labels:
                raise DatasetError(f"{src / split / name} is a class folder that "
                                   f"{src / 'train'} does not have; remove it or add the class "
                                   "to train/")
            files[split].extend(_images(src, f"{split}/{name}", labels[name]))
    return Source(src, classes, files)


def _class_folders(folder: Path) -> Iterator[str]:
    for entry in os.scandir(folder):
        if entry.name.startswith("."):
            continue
        if not entry.is_dir():
            raise DatasetError(f"{entry.path} is a file where only class folders belong; move "
                               "it out of the source tree")
        yield entry.name


def _images(src: Path, relative: str, label: int) -> list[SourceFile]:
    found = []
    for entry in sorted(os.scandir(src / relative), key=lambda e: e.name):
        if entry.name.startswith("."):
            continue
        if not entry.is_file():
            raise DatasetError(f"{entry.path} is not a file; a class folder holds only images")
        with open(entry.path, "rb") as handle:
            ext = fmt.image_type(handle.read(fmt.HEAD_BYTES))
        if ext is None:
            raise DatasetError(f"{entry.path} is not a JPEG (nor PNG) image; remove it or "
                               "replace it with the original file")
        found.append(SourceFile(f"{relative}/{entry.name}", entry.stat().st_size, label, ext))
    if not found:
        raise DatasetError(f"{src / relative} is an empty class folder; remove it or restore "
                           "its images")
    return found


def plan(source: Source, holdout: int, seed: int, shard_bytes: int,
         shard_images: int | None) -> list[PlannedShard]:
    """The shards, in order: ``holdout`` training images (the first of one seeded shuffle) set
    aside, the rest of training, then val, each shuffled so that every shard mixes classes."""
    train = list(source.files["train"])
    if not 0 <= holdout < len(train):
        raise DatasetError(f"--holdout {holdout} must leave training images: the source has "
                           f"{len(train)}; give a smaller count")
    random.Random(f"{seed}:train").shuffle(train)
    val = list(source.files["val"])
    random.Random(f"{seed}:val").shuffle(val)
    splits = {"holdout": train[:holdout], "train": train[holdout:], "val": val}
    shards: list[PlannedShard] = []
    for split in fmt.SPLITS:
        for number, members in enumerate(_group(splits[split], shard_bytes, shard_images)):
            keyed = tuple((f"{split}{position:08d}", f) for position, f in members)
            shards.append(PlannedShard(fmt.shard_name(split, number), split, keyed))
    return shards


def _group(files: Sequence[SourceFile], shard_bytes: int,
           shard_images: int | None) -> Iterator[list[tuple[int, SourceFile]]]:
    """Consecutive runs of ``files`` (with their positions) under both limits; never empty."""
    current: list[tuple[int, SourceFile]] = []
    size = 0
    for position, item in enumerate(files):
        cost = _tar_bytes(item.size) + 2 * 2 * TAR_BLOCK  # + the label and path members
        full = shard_images is not None and len(current) >= shard_images
        if current and (full or size + cost > shard_bytes):
            yield current
            current, size = [], 0
        current.append((position, item))
        size += cost
    if current:
        yield current


def _tar_bytes(size: int) -> int:
    return TAR_BLOCK + -(-size // TAR_BLOCK) * TAR_BLOCK


class _HashingWriter:
    """A write-only stream that hashes what passes through it on the way to ``target``."""

    def __init__(self, target: IO[bytes]) -> None:
        self.target, self.digest, self.size = target, hashlib.sha256(), 0

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        self.size += len(data)
        return self.target.write(data)


def write_shard(source: Source, shard: PlannedShard, path: Path) -> fmt.Shard:
    """Write ``shard`` to ``path`` whole or not at all (``atomic_file``); its index entry."""
    with atomic.atomic_file(path) as out:
        stream = _HashingWriter(out)
        with tarfile.open(fileobj=stream, mode="w|", format=tarfile.USTAR_FORMAT) as tar:
            for key, item in shard.members:
                data = (source.root / item.path).read_bytes()
                if len(data) != item.size or fmt.image_type(data[:fmt.HEAD_BYTES]) != item.ext:
                    raise DatasetError(f"{source.root / item.path} changed while the shards were "
                                       "being written; rerun when the source is stable")
                _add(tar, f"{key}.{item.ext}", data)
                _add(tar, f"{key}.{fmt.LABEL_EXT}", str(item.label).encode())
                _add(tar, f"{key}.{fmt.PATH_EXT}", item.path.encode())
    return fmt.Shard(shard.file, shard.split, len(shard.members), stream.size,
                     stream.digest.hexdigest(), shard.plan)


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o444, 0
    tar.addfile(info, _Bytes(data))


class _Bytes:
    """The minimal file object ``TarFile.addfile`` reads a member's data from."""

    def __init__(self, data: bytes) -> None:
        self.data, self.offset = data, 0

    def read(self, size: int = -1) -> bytes:
        end = len(self.data) if size < 0 else self.offset + size
        chunk, self.offset = self.data[self.offset:end], min(end, len(self.data))
        return chunk


def _kept(path: Path, shard: PlannedShard, previous: dict | None) -> fmt.Shard | None:
    """The earlier run's entry for ``shard`` if its file is there and still hashes to it."""
    if (previous is None or previous.get("plan") != shard.plan or not path.is_file()
            or path.stat().st_size != previous.get("bytes")):
        return None
    if fmt.file_sha256(path) != previous.get("sha256"):
        log.warning("%s does not match its index entry: writing it again", path)
        return None
    return fmt.Shard(**{k: previous[k] for k in fmt.Shard.__dataclass_fields__})


def prepare(dataset: str, src: str | os.PathLike[str], dst: str | os.PathLike[str],
            holdout: int = DEFAULT_HOLDOUT, seed: int = 0, shard_bytes: int = DEFAULT_SHARD_BYTES,
            shard_images: int | None = None, progress: bool = True) -> fmt.Index:
    """Write (or complete) the shards of ``src`` under ``dst/dataset``; the verified index."""
    if dataset not in DATASETS:
        raise DatasetError(f"unknown dataset {dataset!r}; valid values are {', '.join(DATASETS)}")
    if shard_bytes <= 0 or (shard_images is not None and shard_images <= 0):
        raise DatasetError("--shard-bytes and --shard-images must be positive")
    source = scan(Path(src).expanduser())
    shards = plan(source, holdout, seed, shard_bytes, shard_images)
    out = Path(dst).expanduser() / dataset
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob(".*.tar.*.tmp"):  # left by a run that was killed mid-shard
        stale.unlink(missing_ok=True)
    index_path = out / fmt.INDEX_NAME
    old = atomic.read_json(index_path) or {}
    same_format = (old.get("format"), old.get("format_version")) == (fmt.FORMAT,
                                                                    fmt.FORMAT_VERSION)
    recorded = {e["file"]: e for e in old.get("shards", [])} if same_format else {}
    counts = {split: sum(len(s.members) for s in shards if s.split == split)
              for split in fmt.SPLITS}
    settings = {"seed": seed, "holdout": holdout, "shard_bytes": shard_bytes,
                "shard_images": shard_images, "source": str(source.root)}
    fingerprint = source.fingerprint()  # ~0.8 s over ImageNet's 1.3 M files: once, not per shard

    def index(entries: Sequence[fmt.Shard], complete: bool) -> fmt.Index:
        return fmt.Index(dataset, fingerprint, source.classes, counts, tuple(entries), complete,
                         settings)

    done: dict[str, fmt.Shard] = {}
    written: list[fmt.Shard] = []
    bar = tqdm(total=sum(counts.values()), unit="img", desc=f"{dataset} shards",
               disable=not progress, dynamic_ncols=True)
    with bar:
        for shard in shards:
            path = out / shard.file
            entry = _kept(path, shard, recorded.get(shard.file))
            if entry is None:
                entry = write_shard(source, shard, path)
                written.append(entry)
            done[shard.file] = entry
            # the earlier run's entries stay for the shards not reached yet: a run killed now
            # still keeps them
            progress_entries = {**recorded, **{k: v.as_dict() for k, v in done.items()}}
            atomic.write_json_atomic(index_path, {
                **index((), False).as_dict(), "shards": list(progress_entries.values())})
            bar.update(len(shard.members))
    for entry in tqdm(written, unit="shard", desc="verifying", disable=not progress):
        path = out / entry.file
        if path.stat().st_size != entry.bytes or fmt.file_sha256(path) != entry.sha256:
            raise DatasetError(f"{path} reads back with another size or SHA-256 than was written: "
                               "the disk or filesystem corrupts data; rerun to write it again")
    final = index([done[s.file] for s in shards], True)
    atomic.write_json_atomic(index_path, final.as_dict())
    log.info("%s: %d shards (%d written, %d kept), %s images", out, len(shards), len(written),
             len(shards) - len(written), ", ".join(f"{k} {v}" for k, v in counts.items()))
    return final


def parse_size(text: str) -> int:
    """``1G``, ``500M``, ``64K`` or plain bytes (powers of 1000, as disks count)."""
    units = {"K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
    text = text.strip().upper().removesuffix("B")
    try:
        if text and text[-1] in units:
            return int(float(text[:-1]) * units[text[-1]])
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size (e.g. 1G, 500M)") from None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ablate.data.prepare", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", choices=DATASETS, help="which dataset the tree holds")
    parser.add_argument("src", type=Path, metavar="SRC",
                        help="folder holding train/<class>/* and val/<class>/*")
    parser.add_argument("dst", type=Path, metavar="DST",
                        help="data root (dataset.root, $ABLATE_DATA): shards go to DST/<dataset>/")
    parser.add_argument("--holdout", type=int, default=DEFAULT_HOLDOUT,
                        help="training images set aside for lr selection (dataset.val_size must "
                             "match; default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="fixes the order (default: 0)")
    parser.add_argument("--shard-bytes", type=parse_size, default=DEFAULT_SHARD_BYTES,
                        help="largest shard, e.g. 1G or 500M (default: 1G)")
    parser.add_argument("--shard-images", type=int, default=None,
                        help="most images per shard (default: no limit but --shard-bytes)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    try:
        prepare(args.dataset, args.src, args.dst, holdout=args.holdout, seed=args.seed,
                shard_bytes=args.shard_bytes, shard_images=args.shard_images,
                progress=not args.no_progress)
    except DatasetError as error:
        print(f"ablate.data.prepare: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

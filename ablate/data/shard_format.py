"""The on-disk format of image shards: what ``ablate.data.prepare`` writes and
``ablate.data.shards`` reads, written down once so the two cannot drift apart.

A prepared dataset is a folder ``<root>/<dataset>/`` holding tar shards in webdataset's layout
(one sample = the files sharing a key) and ``index.json``. Each sample is three members:
``<key>.jpg`` (or ``.png``: the image file's bytes exactly as in the source, never re-encoded),
``<key>.cls`` (the label as ASCII digits) and ``<key>.path`` (the source file, relative to the
source folder, for tracing a bad image back). Every tar header is fixed (mtime 0, uid 0, mode
0444), so one plan always gives the same bytes. Free of torch: the preparing side needs none.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ablate.atomic import read_json
from ablate.errors import DatasetError

FORMAT = "ablate-image-shards"
# Raise when the bytes of a shard or the meaning of an index field change: an index of another
# version is then refused by the reader and every shard redone by ``prepare``.
FORMAT_VERSION = 1
INDEX_NAME = "index.json"
# Source splits as stored: ``holdout`` is training images set aside for learning-rate selection
# (a fixed set, chosen by ``prepare``); ILSVRC's ``val`` is what the paper reports on.
SPLITS = ("train", "holdout", "val")
LABEL_EXT, PATH_EXT = "cls", "path"
# Magic bytes -> the extension a sample's image is stored under. ILSVRC-2012's training set
# holds one PNG named .JPEG (n02105855_2933), so PNG is kept as it is rather than refused.
IMAGE_TYPES = {b"\xff\xd8\xff": "jpg", b"\x89PNG\r\n\x1a\n": "png"}
HEAD_BYTES = max(len(magic) for magic in IMAGE_TYPES)
CHUNK = 1 << 20


def prepare_command(dataset: str, root: str | os.PathLike[str]) -> str:
    """The command that writes the shards a run under ``root`` reads (the fix in every error)."""
    return f"python -m ablate.data.prepare {dataset} SRC {root}"


def shard_name(split: str, number: int) -> str:
    return f"{split}-{number:06d}.tar"


def image_type(head: bytes) -> str | None:
    """The stored extension for a file starting with ``head``; None for anything else."""
    for magic, ext in IMAGE_TYPES.items():
        if head.startswith(magic):
            return ext
    return None


def file_sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file, streamed: shards are about a gigabyte."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class Shard:
    """One tar file as the index records it; ``plan`` hashes the members it was meant to hold."""

    file: str
    split: str
    images: int
    bytes: int
    sha256: str
    plan: str

    def as_dict(self) -> dict[str, Any]:
        return {"file": self.file, "split": self.split, "images": self.images,
                "bytes": self.bytes, "sha256": self.sha256, "plan": self.plan}


@dataclass(frozen=True)
class Index:
    """``index.json``: the shards, the class list, counts per split, the source's fingerprint."""

    dataset: str
    fingerprint: str
    classes: tuple[str, ...]
    counts: dict[str, int]
    shards: tuple[Shard, ...]
    complete: bool
    settings: dict[str, Any]

    def split(self, name: str) -> list[Shard]:
        return [shard for shard in self.shards if shard.split == name]

    def as_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "format_version": FORMAT_VERSION, "dataset": self.dataset,
                "fingerprint": self.fingerprint, "classes": list(self.classes),
                "counts": dict(self.counts), "complete": self.complete,
                "settings": dict(self.settings),
                "shards": [shard.as_dict() for shard in self.shards]}

    @classmethod
    def load(cls, path: Path, dataset: str) -> Index:
        """Read and check ``path``; every way it can be wrong is one line with the fix."""
        command = prepare_command(dataset, path.parent.parent)
        fix = f"prepare the shards again: {command}"
        data = read_json(path)
        if data is None:
            reason = "does not exist" if not path.exists() else "is not a readable JSON object"
            raise DatasetError(f"no {dataset} shards: {path} {reason}; write them with {command} "
                               "(SRC holds train/<class>/*.JPEG and val/<class>/*.JPEG), or set "
                               "dataset.root (ABLATE_DATA) to the folder above "
                               f"{dataset}/{INDEX_NAME}")
        version = data.get("format_version")
        if data.get("format") != FORMAT or version != FORMAT_VERSION:
            raise DatasetError(f"{path} is format {data.get('format')!r} version {version!r}; "
                               f"this code reads {FORMAT!r} version {FORMAT_VERSION}; {fix}")
        if not data.get("complete"):
            raise DatasetError(f"{path} is from a prepare that did not finish; run the same "
                               f"command again to complete it ({command})")
        try:
            shards = tuple(Shard(**{k: entry[k] for k in Shard.__dataclass_fields__})
                           for entry in data["shards"])
            index = cls(dataset=data["dataset"], fingerprint=data["fingerprint"],
                        classes=tuple(data["classes"]), counts=dict(data["counts"]),
                        shards=shards, complete=True, settings=dict(data.get("settings", {})))
        except (KeyError, TypeError, ValueError) as error:
            raise DatasetError(f"{path} lacks or mangles the field {error}; {fix}") from error
        if index.dataset != dataset:
            raise DatasetError(f"{path} indexes {index.dataset!r} shards, not {dataset!r}; "
                               "point dataset.root at the right folder")
        outside = [s.file for s in shards if Path(str(s.file)).name != s.file]
        if outside:  # a shard is a file beside the index, never a path elsewhere
            raise DatasetError(f"{path} names shard {outside[0]!r}, not a file beside it; {fix}")
        return index

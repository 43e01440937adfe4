"""Tiny CIFAR archives in the official Python format, written independently of the loader.

The official batches were pickled by Python 2 (cPickle, protocol 2) with numpy 1.x: dict keys
and byte strings are Python 2 ``str`` (opcodes SHORT_BINSTRING / BINSTRING, which Python 3 reads
back as bytes or, with ``encoding="latin1"``, as str), ``data`` is a uint8 array of shape
(N, 3072) holding the red plane row by row, then green, then blue, and numpy's array
constructor is referenced as ``numpy.core.multiarray._reconstruct``. ``py2_pickle`` writes
exactly that, so a loader that only reads what Python 3 writes fails these tests.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np

CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR100_FOLDER = "cifar-100-python"
CIFAR10_ARCHIVE = "cifar-10-python.tar.gz"
CIFAR100_ARCHIVE = "cifar-100-python.tar.gz"


class _Python2Pickler(pickle._Pickler):  # the pure-Python pickler lets us swap one writer
    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2_str(self, obj: bytes | str) -> None:
        if isinstance(obj, str):  # Python 2 wrote its (ASCII) str with the same opcodes
            obj = obj.encode("latin1")
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str
    dispatch[str] = save_py2_str


def py2_pickle(obj: object) -> bytes:
    """Pickle ``obj`` as Python 2's cPickle did (protocol 2, bytes as Python 2 ``str``)."""
    buffer = io.BytesIO()
    _Python2Pickler(buffer, protocol=2).dump(obj)
    raw = buffer.getvalue()
    return raw.replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")


def random_images(count: int, seed: int) -> np.ndarray:
    """uint8 images in the official row layout: (count, 3072), R plane, G plane, B plane."""
    return np.random.default_rng(seed).integers(0, 256, size=(count, 3072), dtype=np.uint8)


def write_cifar10(root: Path, per_batch: int = 6, test: int = 8, seed: int = 0) -> dict:
    """Write ``root/cifar-10-batches-py``; return the arrays written (``train_*``, ``test_*``)."""
    folder = root / CIFAR10_FOLDER
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    train_data, train_labels = [], []
    for index in range(1, 6):
        data = random_images(per_batch, seed * 100 + index)
        labels = [int(v) for v in rng.integers(0, 10, per_batch)]
        batch = {
            b"batch_label": f"training batch {index} of 5".encode(),
            b"labels": labels,
            b"data": data,
            b"filenames": [f"image_{index}_{i}.png".encode() for i in range(per_batch)],
        }
        (folder / f"data_batch_{index}").write_bytes(py2_pickle(batch))
        train_data.append(data)
        train_labels += labels
    test_data = random_images(test, seed * 100 + 99)
    test_labels = [int(v) for v in rng.integers(0, 10, test)]
    (folder / "test_batch").write_bytes(py2_pickle({
        b"batch_label": b"testing batch 1 of 1",
        b"labels": test_labels,
        b"data": test_data,
        b"filenames": [f"test_{i}.png".encode() for i in range(test)],
    }))
    (folder / "batches.meta").write_bytes(py2_pickle({
        b"num_cases_per_batch": per_batch,
        b"label_names": [name.encode() for name in ("airplane", "automobile", "bird", "cat",
                                                     "deer", "dog", "frog", "horse", "ship",
                                                     "truck")],
        b"num_vis": 3072,
    }))
    (folder / "readme.html").write_text("<html>tiny test copy</html>")
    return {
        "train_data": np.concatenate(train_data),
        "train_labels": np.array(train_labels),
        "test_data": test_data,
        "test_labels": np.array(test_labels),
    }


def write_cifar100(root: Path, train: int = 12, test: int = 6, seed: int = 0) -> dict:
    """Write ``root/cifar-100-python``; labels are the fine ones (coarse ones differ on purpose)."""
    folder = root / CIFAR100_FOLDER
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    arrays = {}
    for name, count in (("train", train), ("test", test)):
        data = random_images(count, seed * 100 + len(name))
        fine = [int(v) for v in rng.integers(0, 100, count)]
        coarse = [(v + 7) % 20 for v in fine]
        (folder / name).write_bytes(py2_pickle({
            b"filenames": [f"{name}_{i}.png".encode() for i in range(count)],
            b"batch_label": f"{name}ing batch 1 of 1".encode(),
            b"fine_labels": fine,
            b"coarse_labels": coarse,
            b"data": data,
        }))
        arrays[f"{name}_data"], arrays[f"{name}_labels"] = data, np.array(fine)
    (folder / "meta").write_bytes(py2_pickle({
        b"fine_label_names": [f"class_{i}".encode() for i in range(100)],
        b"coarse_label_names": [f"super_{i}".encode() for i in range(20)],
    }))
    return arrays


def make_archive(root: Path, folder: str, archive: str) -> Path:
    """Pack ``root/folder`` into ``root/archive`` (tar.gz with the folder on top, as published)."""
    path = root / archive
    with tarfile.open(path, "w:gz") as tar:
        tar.add(root / folder, arcname=folder)
    return path


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()

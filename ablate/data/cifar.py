"""CIFAR-10 and CIFAR-100 from the official Python-format archives (Krizhevsky, 2009).

Each batch file is a dict pickled by Python 2 (keys as bytes or str): ``data`` (uint8, one row
of 3,072 values per image, the red, green and blue planes in turn, so a row reshapes straight to
CHW) and ``labels`` (CIFAR-10) or ``fine_labels`` (CIFAR-100's 100 classes, as in the paper).

Sources under ``dataset.root`` (``$ABLATE_DATA``, else ``./data``), first match wins: the
extracted folder; the archive, MD5-checked unless ``verify_checksum`` is false (a private copy);
a download, kept once its MD5 matches. Extraction is renamed into place when complete (into the
user's cache folder if ``root`` is read-only), so a corrupt archive never leaves a folder a
later run would trust. The unpickler resolves only what a numpy array needs: a private copy
cannot run code on load.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ablate import atomic
from ablate.data.cache import user_cache_dir, writable
from ablate.data.splits import ImageSplits
from ablate.errors import DatasetError

log = logging.getLogger(__name__)

ENV_VAR = "ABLATE_DATA"
IMAGE_SHAPE = (3, 32, 32)
ROW_LENGTH = 3 * 32 * 32
CHUNK = 1 << 20


@dataclass(frozen=True)
class CifarFormat:
    """Published facts about one of the two archives."""

    name: str
    title: str
    url: str
    md5: str
    folder: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    label_key: str
    num_classes: int

    @property
    def archive(self) -> str:
        """The archive's file name, the official URL's last part."""
        return self.url.rpartition("/")[2]


FORMATS = {
    "cifar10": CifarFormat(
        name="cifar10", title="CIFAR-10",
        url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        md5="c58f30108f718f92721af3b95e74349a", folder="cifar-10-batches-py",
        train_files=tuple(f"data_batch_{i}" for i in range(1, 6)), test_files=("test_batch",),
        label_key="labels", num_classes=10),
    "cifar100": CifarFormat(
        name="cifar100", title="CIFAR-100",
        url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        md5="eb9058c3a382ffc7106e4002c42a8d85", folder="cifar-100-python",
        train_files=("train",), test_files=("test",), label_key="fine_labels", num_classes=100)}


def load_cifar(dataset: str = "cifar10", root: str | os.PathLike[str] = "data",
               download: bool = True, verify_checksum: bool = True, url: str | None = None,
               md5: str | None = None, timeout: float = 60.0) -> ImageSplits:
    """The official train/test splits; ``url`` and ``md5`` (together) name a mirror."""
    if dataset not in FORMATS:
        raise DatasetError(f"unknown CIFAR variant {dataset!r}; valid values are "
                           f"{', '.join(FORMATS)}")
    spec = FORMATS[dataset]
    folder = ensure_folder(spec, Path(root).expanduser(), download, verify_checksum,
                           url or spec.url, (md5 or spec.md5).lower(), timeout)
    train_x, train_y = read_batches(spec, folder, spec.train_files)
    test_x, test_y = read_batches(spec, folder, spec.test_files)
    return ImageSplits(spec.name, train_x, train_y, test_x, test_y, spec.num_classes)


def check_available(dataset: str = "cifar10", root: str | os.PathLike[str] = "data",
                    download: bool = True, **_: Any) -> None:
    """Fail now if loading cannot even start (no data and no download allowed, or an archive
    that cannot be extracted anywhere): ``TensorDataModule`` calls it as ``load_cifar.check``,
    so such a run is a rejected config (one line, no record), not a failure inside ``fit``."""
    spec = FORMATS.get(dataset)
    if spec is not None:  # else named by load_cifar, with the valid variants
        _data_folder(spec, Path(root).expanduser(), download, spec.url)


def _data_folder(spec: CifarFormat, root: Path, download: bool, url: str) -> Path:
    """Where the extracted data is or goes: ``root``, or, for an archive in a read-only ``root``
    (a shared data disk), the user's cache folder, keyed by the archive's path, size and date
    so that another copy is never taken for this one. Raises where it can come from nowhere."""
    folder, archive = root / spec.folder, root / spec.archive
    if not folder.is_dir() and not archive.is_file() and not download:
        raise DatasetError(_missing(spec, root, url, "and dataset.download=false"))
    if folder.is_dir() or not archive.is_file() or writable(root):
        return folder
    stat = archive.stat()
    identity = f"{archive.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
    key = hashlib.sha256(identity.encode()).hexdigest()[:16]
    folder = user_cache_dir() / "extracted" / f"{spec.name}-{key}" / spec.folder
    if folder.is_dir() or writable(folder.parent):
        return folder
    raise DatasetError(
        f"{root} holds the {spec.title} archive but is read-only, so it cannot be extracted "
        f"there, nor into {folder.parent} (not writable either). Extract {archive} into a "
        f"writable folder and set dataset.root to it, or set XDG_CACHE_HOME to a writable folder")


def ensure_folder(spec: CifarFormat, root: Path, download: bool, verify_checksum: bool,
                  url: str, md5: str, timeout: float) -> Path:
    """Return the extracted folder, extracting the archive or downloading it first if needed."""
    folder, archive = _data_folder(spec, root, download, url), root / spec.archive
    if folder.is_dir():  # extracted (into the user's cache, for a read-only root) before
        return folder
    if archive.is_file():
        if folder.parent != root:
            log.warning("%s is read-only: extracting %s into %s", root, archive.name, folder)
        if verify_checksum:
            found = file_md5(archive)
            if found != md5:
                raise DatasetError(
                    f"{archive} has MD5 {found}, but the official {spec.title} archive has {md5}: "
                    f"the file is truncated or not the original. Delete it to download it again "
                    f"from {url}, or, for a private copy you trust, set "
                    f"dataset.verify_checksum=false")
    else:
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise DatasetError(f"cannot create the data folder {root} for {spec.title} ({error}); "
                               f"set dataset.root (or {ENV_VAR}) to a writable folder") from error
        download_file(url, archive, md5, timeout,
                      on_error=lambda why: _missing(spec, root, url, why))
    extract(spec, archive, folder, url)
    return folder


def _missing(spec: CifarFormat, root: Path, url: str, why: str) -> str:
    return (
        f"{spec.title} not found: there is neither the folder {root / spec.folder} nor the "
        f"archive {root / spec.archive}, {why}. Download {url} (or its extracted folder "
        f"{spec.folder}) into {root} by hand, or point at an existing copy with "
        f"dataset.root=/path/to/dir (its default comes from the environment variable {ENV_VAR})")


def file_md5(path: Path) -> str:
    """MD5 of a file, streamed: the archives are 160 MB and need not sit in memory (by hand:
    ``hashlib.file_digest`` is Python 3.11+, the project supports 3.10)."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download_file(url: str, target: Path, md5: str, timeout: float,
                  on_error: Callable[[str], str]) -> None:
    """Fetch ``url`` into a temporary file beside ``target``, renamed only once MD5 matches: a
    killed or truncated download leaves nothing a later run could take for the archive.
    ``on_error`` turns a network failure into the message the user sees."""
    digest = hashlib.md5(usedforsecurity=False)
    log.info("downloading %s to %s", url, target)
    try:
        with (
            atomic.atomic_file(target) as out,
            urllib.request.urlopen(url, timeout=timeout) as response):
            for block in iter(lambda: response.read(CHUNK), b""):
                digest.update(block)
                out.write(block)
            found = digest.hexdigest()
            if found != md5:  # raised inside: the partial file is removed, never kept
                raise DatasetError(
                    f"checksum mismatch for the download from {url}: MD5 {found}, expected "
                    f"{md5}. The transfer was truncated or the file is not the official archive; "
                    f"nothing was kept. Try again, or download it by hand into {target.parent}")
    except (urllib.error.URLError, OSError, ValueError) as error:
        # HTTPError's text has the status code; URLError's reason is the socket error.
        http = isinstance(error, urllib.error.HTTPError)
        reason = error if http else getattr(error, "reason", error)
        raise DatasetError(on_error(f"and the download from {url} failed ({reason})")) from error


def extract(spec: CifarFormat, archive: Path, folder: Path, url: str) -> None:
    """Extract the archive's top folder into a temporary folder, then rename it into place;
    only its regular files are written, by name, so nothing lands outside ``folder``."""
    with tempfile.TemporaryDirectory(prefix=f".{spec.folder}.", suffix=".part", dir=folder.parent,
                                     ignore_cleanup_errors=True) as name:  # gone once renamed
        staging = Path(name)
        try:
            with tarfile.open(archive, "r:gz") as tar:
                for member in tar:
                    parent, _, name = member.name.rstrip("/").rpartition("/")
                    if not member.isfile() or parent != spec.folder or name in ("", ".", ".."):
                        continue
                    with tar.extractfile(member) as source, open(staging / name, "wb") as out:
                        shutil.copyfileobj(source, out, CHUNK)
        except (tarfile.TarError, EOFError, zlib.error, OSError) as error:
            raise DatasetError(
                f"{archive} is truncated or corrupt, or could not be extracted ({error}); "
                f"nothing was kept. Delete it to download it again from {url}, or replace it "
                f"with a good copy"
            ) from error
        missing = [n for n in spec.train_files + spec.test_files if not (staging / n).is_file()]
        if missing:
            raise DatasetError(
                f"{archive} has no {spec.folder}/{missing[0]}: it is not a {spec.title} "
                f"Python-format archive (wanted {', '.join(spec.train_files + spec.test_files)})")
        try:
            os.chmod(staging, atomic.umask_mode(0o777))  # mkdtemp makes it private
            os.replace(staging, folder)
        except OSError:
            if not folder.is_dir():  # another process extracting at the same time wins the race
                raise


def read_batches(spec: CifarFormat, folder: Path,
                 names: tuple[str, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Read and concatenate batch files into float32 NCHW images in [0, 1] and int64 labels."""
    images, labels = [], []
    for name in names:
        path = folder / name
        if not path.is_file():
            raise DatasetError(
                f"{spec.title} folder {folder} has no batch file {name!r}. The folder is "
                f"incomplete: delete it so that it is extracted again from {spec.archive}, or "
                f"point dataset.root at a complete copy")
        data, batch_labels = _read_batch(spec, path)
        images.append(data)
        labels.append(batch_labels)
    pixels = torch.from_numpy(np.concatenate(images)).view(-1, *IMAGE_SHAPE)
    x = pixels.to(torch.float32).div_(255.0)
    return x, torch.from_numpy(np.concatenate(labels))


def _read_batch(spec: CifarFormat, path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as handle:
            raw = _BatchUnpickler(handle, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as error:
        raise DatasetError(
            f"{path} is not a readable {spec.title} batch ({error}); delete {path.parent} so "
            f"that it is extracted again from {spec.archive}"
        ) from error
    if not isinstance(raw, dict):
        raise DatasetError(f"{path} holds a {type(raw).__name__}, not a {spec.title} batch dict")
    batch = {key.decode("latin1") if isinstance(key, bytes) else key: v for key, v in raw.items()}
    for key in ("data", spec.label_key):
        if key not in batch:
            raise DatasetError(
                f"{path} has no {key!r} entry (found {', '.join(map(str, batch))}); it is not a "
                f"{spec.title} batch")
    data = batch["data"]
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2
            and data.shape[1] == ROW_LENGTH):
        found = (
            f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__)
        raise DatasetError(f"{path}: 'data' must be uint8 of shape (N, {ROW_LENGTH}), got {found}")
    labels = _labels(path, spec.label_key, batch[spec.label_key])
    if labels.shape != (len(data),):
        raise DatasetError(
            f"{path}: {len(data)} images but {labels.size} entries in {spec.label_key!r}")
    if labels.size and not (0 <= labels.min() and labels.max() < spec.num_classes):
        raise DatasetError(
            f"{path}: labels span {labels.min()}..{labels.max()}, outside 0..{spec.num_classes - 1}"
        )
    return np.ascontiguousarray(data), labels


def _labels(path: Path, key: str, raw: Any) -> np.ndarray:
    """Integer labels, or a ``DatasetError`` naming the file: a float label is never truncated
    to an int, and bytes, None or text never reach numpy's conversions."""
    if isinstance(raw, np.ndarray):
        if raw.dtype.kind in "iu" and raw.ndim == 1:
            return raw.astype(np.int64)
        found = f"an array of {raw.dtype} {raw.shape}"
    elif isinstance(raw, list | tuple):
        kinds = {type(v) for v in raw if isinstance(v, bool) or not isinstance(v, int | np.integer)}
        if not kinds:
            return np.asarray(raw, dtype=np.int64)
        found = f"a {type(raw).__name__} of {', '.join(sorted(k.__name__ for k in kinds))}"
    else:
        found = type(raw).__name__
    raise DatasetError(f"{path}: {key!r} must hold integer labels, got {found}; the file is not "
                       "a CIFAR batch")


class _BatchUnpickler(pickle.Unpickler):
    """Resolves only what a pickled numpy array needs, whichever numpy wrote it."""

    def find_class(self, module: str, name: str) -> Any:
        if name == "_reconstruct" and module in ("numpy.core.multiarray", "numpy._core.multiarray"):
            return np.empty(0).__reduce__()[0]  # numpy's array rebuilder, wherever it lives now
        if (module, name) in (("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR batch")


load_cifar.check = check_available  # type: ignore[attr-defined]  # see TensorDataModule

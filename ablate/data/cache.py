"""On-disk cache of prepared splits, so that the runs of a grid fit GCN + ZCA once, not per run.

One file per key (about 810 MB for CIFAR): the train/validation/test tensors after the split and
the preprocessing, plus the fitted transform's ``state_dict``, so the preprocessor is usable
after a hit. The key is a SHA-256 over the source's tensors themselves (their bytes, not a path
or a date: a replaced archive is never served stale results; hashing takes half a second where
fitting ZCA takes minutes), the split parameters, the preprocessor's type and settings, and
``FORMAT``, bumped whenever the preprocessing changes what it computes.

Files are written atomically and hold their full key, checked on load, so a killed run leaves no
half-written entry and a file renamed by hand is never taken for another config's. Parallel runs
take a lock (``filelock``) so only the first one computes. A read-only cache folder is still
read; a miss then goes to :func:`user_cache_dir`, or is not cached.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import logging
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock

from ablate import atomic
from ablate.data.splits import ImageSplits

log = logging.getLogger(__name__)

FORMAT = 1
SPLITS = ("train", "val", "test")

Prepared = dict[str, tuple[torch.Tensor, torch.Tensor]]


def tensor_digest(*tensors: torch.Tensor) -> str:
    """SHA-256 of the tensors' dtypes, shapes and bytes."""
    digest = hashlib.sha256()
    for tensor in tensors:
        flat = tensor.detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"{flat.dtype}{tuple(tensor.shape)};".encode())
        digest.update(flat.view(torch.uint8).numpy())
    return digest.hexdigest()


def settings_of(value: Any) -> Any:
    """A JSON-able identity of a configured object: its type and its public attributes.
    Tensors (fitted state) read as ``None``; anything unrecognised as its ``repr``, which at
    worst causes a cache miss, never a wrong hit."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [settings_of(item) for item in value]
    if isinstance(value, dict):
        return {str(key): settings_of(item) for key, item in value.items()}
    if isinstance(value, torch.Tensor):
        return None
    if inspect.isroutine(value) or inspect.isclass(value):
        return f"{value.__module__}.{value.__qualname__}"
    if isinstance(value, functools.partial):
        return {"partial": settings_of(value.func), "args": settings_of(value.args),
                "keywords": settings_of(value.keywords)}
    kind = type(value)
    if hasattr(value, "__dict__"):
        attributes = {name: settings_of(item) for name, item in vars(value).items()
                      if not name.startswith("_")}
        return {"type": f"{kind.__module__}.{kind.__qualname__}", **attributes}
    return repr(value)


def cache_key(splits: ImageSplits, split: dict[str, Any], preprocess: Any) -> tuple[str, str]:
    """Return ``(key, identity)``: the hex key and the JSON it hashes (stored for inspection)."""
    identity = json.dumps({
        "format": FORMAT, "dataset": splits.name, "num_classes": splits.num_classes,
        "data": tensor_digest(splits.train_x, splits.train_y, splits.test_x, splits.test_y),
        "split": settings_of(split), "preprocess": settings_of(preprocess),
    }, sort_keys=True)
    return hashlib.sha256(identity.encode()).hexdigest(), identity


def user_cache_dir() -> Path:
    """This user's writable folder for ablate's derived files: ``$XDG_CACHE_HOME/ablate``, else
    ``~/.cache/ablate``; where a read-only data disk sends what cannot be written beside it."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "ablate"


def writable(directory: str | os.PathLike[str]) -> bool:
    """Whether a file can be created in ``directory`` (created if missing), found by creating
    one: permission bits say nothing on a read-only mount, and root ignores them."""
    try:
        Path(directory).mkdir(parents=True, exist_ok=True)
        tempfile.NamedTemporaryFile(prefix=".ablate-probe.", dir=directory).close()  # and gone
    except OSError:
        return False
    return True


def _writable_or_fallback(directory: Path) -> Path | None:
    if writable(directory):
        return directory
    fallback = user_cache_dir() / "prepared"
    if writable(fallback):
        log.warning("the cache folder %s is not writable (a read-only data disk?): prepared "
                    "splits are cached in %s instead (set dataset.cache_dir to choose)",
                    directory, fallback)
        return fallback
    log.warning("neither the cache folder %s nor %s is writable: preprocessing without a cache "
                "(set dataset.cache_dir to a writable folder)", directory, fallback)
    return None


def cache_path(directory: str | os.PathLike[str], name: str, key: str) -> Path:
    """Where the entry for ``key`` lives; the dataset name is only there for humans."""
    label = re.sub(r"[^A-Za-z0-9_.-]", "_", name) or "data"
    return Path(directory) / f"{label}-{key[:32]}.pt"


def load_or_prepare(directory: str | os.PathLike[str], splits: ImageSplits, split: dict[str, Any],
                    preprocess: Any, prepare: Callable[[], Prepared]) -> Prepared:
    """The cached prepared splits for these inputs, computed and stored if absent; a hit restores
    the preprocessor's fitted state (``load_state_dict``) instead of refitting it."""
    key, identity = cache_key(splits, split, preprocess)
    path = cache_path(directory, splits.name, key)
    hit = _read(path, key)
    if hit is None:
        usable = _writable_or_fallback(Path(directory))
        if usable is None:
            return prepare()
        path = cache_path(usable, splits.name, key)
        with FileLock(path.with_suffix(".lock")):
            hit = _read(path, key)  # written by an earlier run that fell back, or a parallel one
            if hit is None:
                log.info("preprocessing %s (cache miss, will write %s)", splits.name, path)
                prepared = prepare()
                _write(path, key, identity, prepared, preprocess.state_dict())
                return prepared
    log.info("loaded prepared %s from cache %s", splits.name, path)
    prepared, state = hit
    if state:
        preprocess.load_state_dict(state)
    return prepared


def _read(path: Path, key: str) -> tuple[Prepared, dict[str, torch.Tensor]] | None:
    if not path.is_file():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        if payload.get("format") != FORMAT or payload.get("key") != key:
            log.warning("ignoring cache file %s: it was written for other inputs", path)
            return None
        tensors = payload["tensors"]
        prepared = {name: (tensors[f"{name}_x"], tensors[f"{name}_y"]) for name in SPLITS}
        return prepared, dict(payload.get("preprocess_state", {}))
    except Exception as error:  # any unreadable entry is just recomputed
        log.warning("ignoring unreadable cache file %s (%s); recomputing", path, error)
        return None


def _write(path: Path, key: str, identity: str, prepared: Prepared,
           state: dict[str, torch.Tensor]) -> None:
    tensors = {f"{name}_{axis}": tensor.contiguous()
               for name in SPLITS for axis, tensor in zip("xy", prepared[name], strict=True)}
    payload = {"format": FORMAT, "key": key, "identity": identity, "tensors": tensors,
               "preprocess_state": dict(state)}
    with atomic.atomic_file(path) as out:
        torch.save(payload, out)

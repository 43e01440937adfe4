"""CIFAR loading from folders, archives and a loopback download, and the bad inputs."""

from __future__ import annotations

import functools
import pickle
import socket
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch
from cifar_archives import (
    CIFAR10_ARCHIVE,
    CIFAR10_FOLDER,
    CIFAR100_ARCHIVE,
    CIFAR100_FOLDER,
    make_archive,
    md5,
    write_cifar10,
    write_cifar100,
)
from hydra.utils import instantiate
from omegaconf import OmegaConf

from ablate.data.augment import FlipTranslate
from ablate.data.cifar import load_cifar
from ablate.data.module import TensorDataModule
from ablate.data.preprocess import Identity
from ablate.errors import DatasetError

CONF = Path(__file__).resolve().parents[1] / "conf"


def expected_images(data: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(data.reshape(-1, 3, 32, 32).astype(np.float32) / 255.0)


def archived(tmp_path: Path, writer, folder: str, archive: str) -> tuple[Path, dict, Path]:
    """Write a dataset in ``tmp_path/src``; put only its archive into ``tmp_path/root``."""
    source, root = tmp_path / "src", tmp_path / "root"
    arrays = writer(source)
    root.mkdir()
    path = make_archive(source, folder, archive)
    return root, arrays, path.rename(root / archive)


def leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.name.startswith(".") or p.suffix == ".part")


def test_cifar10_folder_keeps_the_official_pixel_layout(tmp_path):
    arrays = write_cifar10(tmp_path)
    splits = load_cifar("cifar10", root=tmp_path, download=False)
    assert splits.name == "cifar10" and splits.num_classes == 10
    assert splits.train_x.shape == (30, 3, 32, 32) and splits.train_x.dtype == torch.float32
    assert splits.test_x.shape == (8, 3, 32, 32) and splits.train_y.dtype == torch.int64
    row = arrays["train_data"][0]
    # A row is R plane, then G plane, then B plane, each 32 rows of 32 pixels.
    assert splits.train_x[0, 0, 0, 1] == pytest.approx(row[1] / 255)
    assert splits.train_x[0, 0, 1, 0] == pytest.approx(row[32] / 255)
    assert splits.train_x[0, 1, 0, 0] == pytest.approx(row[1024] / 255)
    assert splits.train_x[0, 2, 31, 31] == pytest.approx(row[3071] / 255)
    assert torch.equal(splits.train_x, expected_images(arrays["train_data"]))
    assert splits.train_y.tolist() == arrays["train_labels"].tolist()
    assert torch.equal(splits.test_x, expected_images(arrays["test_data"]))
    assert splits.test_y.tolist() == arrays["test_labels"].tolist()


def test_cifar100_folder_uses_the_fine_labels(tmp_path):
    arrays = write_cifar100(tmp_path)
    splits = load_cifar("cifar100", root=tmp_path, download=False)
    assert splits.num_classes == 100
    assert torch.equal(splits.train_x, expected_images(arrays["train_data"]))
    assert splits.train_y.tolist() == arrays["train_labels"].tolist()
    assert splits.test_y.tolist() == arrays["test_labels"].tolist()


@pytest.mark.parametrize(
    "dataset, writer, folder, archive",
    [
        ("cifar10", write_cifar10, CIFAR10_FOLDER, CIFAR10_ARCHIVE),
        ("cifar100", write_cifar100, CIFAR100_FOLDER, CIFAR100_ARCHIVE),
    ],
)
def test_archive_is_verified_and_extracted(tmp_path, dataset, writer, folder, archive):
    root, arrays, path = archived(tmp_path, writer, folder, archive)
    splits = load_cifar(dataset, root=root, download=False, md5=md5(path))
    assert torch.equal(splits.train_x, expected_images(arrays["train_data"]))
    assert splits.test_y.tolist() == arrays["test_labels"].tolist()
    assert sorted(p.name for p in root.iterdir()) == sorted([archive, folder])
    assert leftovers(root) == []
    assert (root / folder).stat().st_mode & 0o777 == 0o755  # readable on a shared data disk


def test_local_archive_is_checked_against_the_official_md5(tmp_path):
    root, _, _ = archived(tmp_path, write_cifar10, CIFAR10_FOLDER, CIFAR10_ARCHIVE)
    with pytest.raises(DatasetError, match="c58f30108f718f92721af3b95e74349a") as error:
        load_cifar("cifar10", root=root, download=False)
    assert "dataset.verify_checksum=false" in str(error.value)
    assert not (root / CIFAR10_FOLDER).exists()
    splits = load_cifar("cifar10", root=root, download=False, verify_checksum=False)
    assert len(splits.train_x) == 30


def test_truncated_or_tampered_archive_fails_its_checksum_and_leaves_nothing(tmp_path):
    root, _, path = archived(tmp_path, write_cifar10, CIFAR10_FOLDER, CIFAR10_ARCHIVE)
    official, good = md5(path), path.read_bytes()
    path.write_bytes(good[: len(good) // 2])
    with pytest.raises(DatasetError, match="truncated"):
        load_cifar("cifar10", root=root, download=False, md5=official)
    tampered = bytearray(good)
    tampered[len(good) // 2] ^= 0xFF
    path.write_bytes(bytes(tampered))
    with pytest.raises(DatasetError, match="MD5"):
        load_cifar("cifar10", root=root, download=False, md5=official)
    assert sorted(p.name for p in root.iterdir()) == [CIFAR10_ARCHIVE]


def test_truncated_archive_without_checksum_leaves_no_half_extracted_folder(tmp_path):
    root, _, path = archived(tmp_path, write_cifar10, CIFAR10_FOLDER, CIFAR10_ARCHIVE)
    good = path.read_bytes()
    path.write_bytes(good[: len(good) * 2 // 3])
    with pytest.raises(DatasetError, match="truncated or corrupt"):
        load_cifar("cifar10", root=root, download=False, verify_checksum=False)
    assert sorted(p.name for p in root.iterdir()) == [CIFAR10_ARCHIVE]


def test_archive_without_a_batch_names_it(tmp_path):
    source, root = tmp_path / "src", tmp_path / "root"
    write_cifar10(source)
    (source / CIFAR10_FOLDER / "test_batch").unlink()
    root.mkdir()
    path = make_archive(source, CIFAR10_FOLDER, CIFAR10_ARCHIVE).rename(root / CIFAR10_ARCHIVE)
    with pytest.raises(DatasetError, match="test_batch"):
        load_cifar("cifar10", root=root, download=False, verify_checksum=False)
    assert sorted(p.name for p in root.iterdir()) == [path.name]


def test_folder_with_a_missing_batch_names_it(tmp_path):
    write_cifar10(tmp_path)
    (tmp_path / CIFAR10_FOLDER / "data_batch_3").unlink()
    with pytest.raises(DatasetError, match="data_batch_3"):
        load_cifar("cifar10", root=tmp_path, download=False)


def test_batch_that_is_not_a_cifar_batch_is_refused(tmp_path):
    write_cifar10(tmp_path)
    hostile = pickle.dumps(functools.partial(print, "pwned"), protocol=2)
    (tmp_path / CIFAR10_FOLDER / "data_batch_1").write_bytes(hostile)
    with pytest.raises(DatasetError, match="data_batch_1"):
        load_cifar("cifar10", root=tmp_path, download=False)
    (tmp_path / CIFAR10_FOLDER / "data_batch_1").write_bytes(
        pickle.dumps({b"data": np.zeros((2, 3072), np.uint8)}, protocol=2)
    )
    with pytest.raises(DatasetError, match="'labels'"):
        load_cifar("cifar10", root=tmp_path, download=False)


def test_unknown_variant_lists_the_valid_ones(tmp_path):
    with pytest.raises(DatasetError, match="cifar10, cifar100"):
        load_cifar("cifar1000", root=tmp_path)


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format, *args):
        return None


@pytest.fixture
def server(tmp_path, monkeypatch):
    """An HTTP server on 127.0.0.1 (port 0: any free one) serving ``tmp_path/served``."""
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.setenv(name, "127.0.0.1,localhost")
    served = tmp_path / "served"
    served.mkdir()
    httpd = ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(served))
    )
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def test_download_from_loopback_server(tmp_path, server):
    served, base = server
    arrays = write_cifar10(tmp_path / "src")
    archive = make_archive(tmp_path / "src", CIFAR10_FOLDER, CIFAR10_ARCHIVE)
    archive.rename(served / CIFAR10_ARCHIVE)
    root = tmp_path / "root" / "nested"  # created on demand
    url = f"{base}/{CIFAR10_ARCHIVE}"
    splits = load_cifar("cifar10", root=root, url=url, md5=md5(served / CIFAR10_ARCHIVE))
    assert torch.equal(splits.test_x, expected_images(arrays["test_data"]))
    assert (root / CIFAR10_ARCHIVE).read_bytes() == (served / CIFAR10_ARCHIVE).read_bytes()
    assert (root / CIFAR10_FOLDER).is_dir() and leftovers(root) == []
    assert (root / CIFAR10_ARCHIVE).stat().st_mode & 0o777 == 0o644


def test_download_with_wrong_checksum_keeps_nothing(tmp_path, server):
    served, base = server
    write_cifar100(tmp_path / "src")
    make_archive(tmp_path / "src", CIFAR100_FOLDER, CIFAR100_ARCHIVE).rename(
        served / CIFAR100_ARCHIVE
    )
    root = tmp_path / "root"
    with pytest.raises(DatasetError, match="checksum mismatch"):
        load_cifar("cifar100", root=root, url=f"{base}/{CIFAR100_ARCHIVE}")  # official MD5
    assert list(root.iterdir()) == []


def test_download_of_a_missing_file_names_the_url(tmp_path, server):
    _, base = server
    url = f"{base}/{CIFAR10_ARCHIVE}"
    with pytest.raises(DatasetError, match="404") as error:
        load_cifar("cifar10", root=tmp_path, url=url)
    assert url in str(error.value)
    assert list(tmp_path.iterdir()) == [tmp_path / "served"]


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_missing_data_without_network_says_where_and_how(tmp_path, monkeypatch):
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.setenv(name, "127.0.0.1,localhost")
    url = f"http://127.0.0.1:{_closed_port()}/{CIFAR10_ARCHIVE}"
    with pytest.raises(DatasetError) as error:
        load_cifar("cifar10", root=tmp_path, url=url, timeout=5)
    message = str(error.value)
    for needle in (str(tmp_path / CIFAR10_FOLDER), str(tmp_path / CIFAR10_ARCHIVE), url,
                   "dataset.root=", "ABLATE_DATA"):
        assert needle in message
    assert list(tmp_path.iterdir()) == []


def test_missing_data_with_download_off_names_the_official_url(tmp_path):
    with pytest.raises(DatasetError) as error:
        load_cifar("cifar100", root=tmp_path, download=False)
    message = str(error.value)
    for needle in (CIFAR100_FOLDER, CIFAR100_ARCHIVE, "dataset.download=false", "dataset.root=",
                   "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"):
        assert needle in message


@pytest.mark.parametrize("name, classes", [("cifar10", 10), ("cifar100", 100)])
def test_dataset_yaml_reads_root_from_the_environment(tmp_path, monkeypatch, name, classes):
    (write_cifar10 if name == "cifar10" else write_cifar100)(tmp_path)
    monkeypatch.setenv("ABLATE_DATA", str(tmp_path))
    cfg = OmegaConf.load(CONF / "dataset" / f"{name}.yaml")
    assert cfg.name == name and cfg.num_classes == classes and cfg.val_size == 5000
    assert cfg.verify_checksum is True and cfg.root == str(tmp_path)
    assert cfg.source.url is None and cfg.source.md5 is None  # the official archive's
    splits = instantiate(cfg.source)()
    assert splits.num_classes == classes and splits.channels == 3 and splits.image_size == 32


def test_data_module_batches_cifar_on_the_device(tmp_path):
    write_cifar10(tmp_path)
    module = TensorDataModule(
        source=functools.partial(load_cifar, "cifar10", root=tmp_path, download=False),
        channels=3, image_size=32, num_classes=10, batch_size=8, val_size=6,
        preprocess=Identity(), augment=FlipTranslate(),
    )
    module.setup()
    batches = list(module.train_dataloader())
    assert [len(x) for x, _ in batches] == [8, 8, 8]
    assert batches[0][0].shape == (8, 3, 32, 32)
    assert len(module.tensors["val"][0]) == 6 and len(module.tensors["test"][0]) == 8


# ------------------------------------------------------------------ labels of the wrong type


@pytest.mark.parametrize(("labels", "found"), [
    ([b"\x01"] * 6, "str"),  # Python 2 byte strings come back as text (latin1)
    (None, "NoneType"),
    ([1.0, 2.7, 3.0, 4.0, 5.0, 6.0], "float"),  # never truncated to 2
    (np.arange(6, dtype=np.float64), "float64"),
])
def test_labels_of_the_wrong_type_are_refused_naming_the_file(tmp_path, labels, found):
    from cifar_archives import py2_pickle, random_images

    write_cifar10(tmp_path / "src")
    batch = tmp_path / "src" / CIFAR10_FOLDER / "data_batch_2"
    batch.write_bytes(py2_pickle({b"data": random_images(6, 1), b"labels": labels}))
    root = tmp_path / "root"
    root.mkdir()
    make_archive(tmp_path / "src", CIFAR10_FOLDER, CIFAR10_ARCHIVE).rename(root / CIFAR10_ARCHIVE)
    with pytest.raises(DatasetError) as error:
        load_cifar("cifar10", root=root, download=False, verify_checksum=False)
    assert "data_batch_2" in str(error.value) and found in str(error.value)


# ------------------------------------------------------------------ a read-only data root


def test_an_archive_on_a_read_only_root_is_extracted_into_the_user_cache(tmp_path, monkeypatch,
                                                                         caplog):
    from helpers import mounted

    source, arrays, _ = archived(tmp_path, write_cifar10, CIFAR10_FOLDER, CIFAR10_ARCHIVE)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    with mounted("ro", tmp_path / "ro", source) as root:
        with caplog.at_level("WARNING"):
            splits = load_cifar("cifar10", root=root, download=False, verify_checksum=False)
        assert f"{root} is read-only: extracting {CIFAR10_ARCHIVE} into" in caplog.text
        assert torch.equal(splits.train_x, expected_images(arrays["train_data"]))
        [extracted] = (tmp_path / "xdg" / "ablate" / "extracted").glob(f"*/{CIFAR10_FOLDER}")
        caplog.clear()
        load_cifar("cifar10", root=root, download=False, verify_checksum=False)
        assert "extracting" not in caplog.text  # once per archive
        monkeypatch.setenv("XDG_CACHE_HOME", str(root / "xdg"))  # read-only as well
        with pytest.raises(DatasetError, match="set XDG_CACHE_HOME to a writable folder"):
            load_cifar("cifar10", root=root, download=False, verify_checksum=False)
    assert list(source.iterdir()) == [source / CIFAR10_ARCHIVE]


def test_a_missing_archive_with_download_off_is_refused_when_the_data_module_is_built(tmp_path):
    with pytest.raises(DatasetError, match="dataset.download=false"):
        TensorDataModule(source=functools.partial(load_cifar, "cifar10", root=tmp_path,
                                                  download=False),
                         channels=3, image_size=32, num_classes=10)

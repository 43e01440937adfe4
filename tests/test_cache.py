"""The on-disk cache of prepared splits: reused when nothing changed, never when anything did."""

from __future__ import annotations

import shutil

import pytest
import torch

from ablate.data import cache as cache_module
from ablate.data.module import TensorDataModule
from ablate.data.preprocess import Identity, Standardize
from ablate.data.splits import ImageSplits
from ablate.data.whiten import GCNWhiten


class CountingStandardize(Standardize):
    """Standardize that counts its fits (in a private attribute, which is not configuration)."""

    fits = 0

    def fit(self, train_x: torch.Tensor) -> None:
        CountingStandardize.fits += 1
        super().fit(train_x)


@pytest.fixture(autouse=True)
def reset_count():
    CountingStandardize.fits = 0


def tiny_source(seed: int = 0, poke: bool = False):
    def load() -> ImageSplits:
        generator = torch.Generator().manual_seed(seed)
        train_x = torch.rand(40, 3, 8, 8, generator=generator)
        if poke:
            train_x[17, 1, 2, 3] += 1e-6  # one value, barely: still different data
        return ImageSplits(
            name="tiny",
            train_x=train_x,
            train_y=torch.randint(0, 10, (40,), generator=generator),
            test_x=torch.rand(10, 3, 8, 8, generator=generator),
            test_y=torch.randint(0, 10, (10,), generator=generator),
            num_classes=10,
        )

    return load


def module(cache_dir, source=None, preprocess=None, **overrides) -> TensorDataModule:
    settings = dict(channels=3, image_size=8, num_classes=10, val_size=8, split_seed=0)
    settings.update(overrides)
    data = TensorDataModule(
        source=source or tiny_source(),
        preprocess=preprocess or CountingStandardize(),
        cache_dir=cache_dir,
        **settings,
    )
    data.setup()
    return data


def entries(directory) -> list[str]:
    return sorted(p.name for p in directory.glob("*.pt"))


def assert_same_tensors(a: TensorDataModule, b: TensorDataModule) -> None:
    for name in ("train", "val", "test"):
        assert torch.equal(a.tensors[name][0], b.tensors[name][0])
        assert torch.equal(a.tensors[name][1], b.tensors[name][1])


def test_second_run_reuses_the_cache_and_restores_the_fitted_transform(tmp_path):
    first = module(tmp_path)
    assert CountingStandardize.fits == 1 and len(entries(tmp_path)) == 1
    assert (tmp_path / entries(tmp_path)[0]).stat().st_mode & 0o777 == 0o644
    second = module(tmp_path)
    assert CountingStandardize.fits == 1
    assert_same_tensors(first, second)
    assert torch.equal(second.preprocess.mean, first.preprocess.mean)
    uncached = module(None)
    assert_same_tensors(first, uncached)
    leftovers = [p.name for p in tmp_path.iterdir() if p.suffix not in (".pt", ".lock")]
    assert leftovers == []


@pytest.mark.parametrize(
    "change",
    [
        {"val_size": 9},
        {"split_seed": 1},
        {"preprocess": CountingStandardize(eps=1e-3)},
        {"preprocess": Identity()},
        {"source": tiny_source(poke=True)},
        {"source": tiny_source(seed=1)},
    ],
    ids=["val_size", "split_seed", "preprocess-param", "preprocess-type", "one-value", "data"],
)
def test_any_change_of_inputs_or_parameters_is_a_new_entry(tmp_path, change):
    module(tmp_path)
    assert CountingStandardize.fits == 1
    changed = module(tmp_path, **change)
    expected_fits = 1 if isinstance(change.get("preprocess"), Identity) else 2
    assert CountingStandardize.fits == expected_fits
    assert len(entries(tmp_path)) == 2
    assert_same_tensors(changed, module(None, **change))


def test_an_entry_written_for_other_parameters_is_never_served(tmp_path):
    module(tmp_path, split_seed=0)
    (written,) = entries(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    module(other, split_seed=1)
    (wanted,) = entries(other)
    shutil.copy(tmp_path / written, other / wanted)  # a stale file under the right name
    fits = CountingStandardize.fits
    served = module(other, split_seed=1)
    assert CountingStandardize.fits == fits + 1
    assert_same_tensors(served, module(None, split_seed=1))


def test_unreadable_entry_is_recomputed_and_replaced(tmp_path):
    first = module(tmp_path)
    (name,) = entries(tmp_path)
    path = tmp_path / name
    path.write_bytes(path.read_bytes()[:100])
    again = module(tmp_path)
    assert CountingStandardize.fits == 2
    assert_same_tensors(first, again)
    module(tmp_path)
    assert CountingStandardize.fits == 2  # the rewritten entry is good again


def test_interrupted_write_leaves_no_entry_and_no_temporary_file(tmp_path, monkeypatch):
    def dying_save(payload, handle):
        handle.write(b"half a cache file")
        raise KeyboardInterrupt

    monkeypatch.setattr(cache_module.torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        module(tmp_path)
    assert [p.name for p in tmp_path.iterdir() if p.suffix != ".lock"] == []


def test_paper_whitening_state_comes_back_from_the_cache(tmp_path):
    first = module(tmp_path, preprocess=GCNWhiten())
    second = module(tmp_path, preprocess=GCNWhiten())
    assert_same_tensors(first, second)
    assert torch.equal(second.preprocess.zca.matrix, first.preprocess.zca.matrix)
    assert len(entries(tmp_path)) == 1
    module(tmp_path, preprocess=GCNWhiten(filter_bias=0.01))
    assert len(entries(tmp_path)) == 2


def test_key_covers_constructor_values_but_not_fitted_state():
    splits = tiny_source()()
    split = {"val_size": 8, "split_seed": 0}
    fitted = GCNWhiten()
    fitted.fit(splits.train_x)
    key, identity = cache_module.cache_key(splits, split, GCNWhiten())
    assert cache_module.cache_key(splits, split, fitted)[0] == key
    assert cache_module.cache_key(splits, split, GCNWhiten(scale=50.0))[0] != key
    assert '"filter_bias": 0.1' in identity and "GCNWhiten" in identity


def test_a_read_only_cache_folder_is_read_and_misses_go_to_the_user_cache(tmp_path, monkeypatch,
                                                                          caplog):
    from helpers import mounted

    shared = tmp_path / "shared"
    module(shared)  # prepared once while the disk was writable
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    fallback = tmp_path / "xdg" / "ablate" / "prepared"
    with mounted("ro", tmp_path / "ro", shared) as read_only:
        module(read_only)
        assert CountingStandardize.fits == 1 and not fallback.exists()  # a hit: just read
        with caplog.at_level("WARNING"):
            module(read_only, val_size=9)  # a miss: written to the user's cache, named
        assert f"the cache folder {read_only} is not writable" in caplog.text
        assert str(fallback) in caplog.text and len(entries(fallback)) == 1
        module(read_only, val_size=9)
        assert CountingStandardize.fits == 2  # the fallback's entry is found again

"""The paper's ImageNet network (model=imagenet) and its data: shards written by
``ablate.data.prepare`` from a tiny generated tree, streamed by ``ShardDataModule``."""

from __future__ import annotations

import json
import random
import tarfile
from pathlib import Path

import pytest
import torch
import yaml
from helpers import compose_config
from hydra.utils import instantiate
from imagenet_tree import CLASSES, HOLDOUT, OVERRIDES, SHARD_IMAGES, write_shards, write_tree
from PIL import Image

from ablate import spec
from ablate.data import prepare as prep
from ablate.data import shard_format as fmt
from ablate.data.image_transforms import CenterCrop, RandomResizedCrop
from ablate.data.shards import ShardDataModule
from ablate.errors import DatasetError
from ablate.network import build_network, count_parameters

CONF = Path(__file__).resolve().parent.parent / "conf"
TRANSFORMS = {"pool": spec.pool, "stride": spec.strided, "convpool": spec.conv_pool,
              "conv": spec.all_conv, "lppool": spec.lp_pool, "avgpool": spec.avg_pool}
# Counted by hand for 1000 classes (README: "The ImageNet network"): the three stride-2 3x3
# convs (96, 256, 384 channels) hold 83,040 + 590,080 + 1,327,488 = 2,000,608 of All-CNN's.
PARAMS = {"conv": 9_372_840, "convpool": 9_372_840, "pool": 7_372_232, "stride": 7_372_232,
          "lppool": 7_372_232, "avgpool": 7_372_232}
FINAL_MAP = {"conv": 6, "convpool": 6, "pool": 6, "lppool": 6, "avgpool": 6, "stride": 7}


def imagenet_layers() -> list[dict]:
    return yaml.safe_load((CONF / "model" / "imagenet.yaml").read_text())["layers"]


# --- the network --------------------------------------------------------------------------


def test_all_cnn_imagenet_is_the_papers_network():
    layers = spec.all_conv(spec.normalise(imagenet_layers()))
    convs = [(c["k"], c["out"], c.get("stride", 1)) for c in layers if c["type"] == "conv"]
    assert convs == [(11, 96, 4), (1, 96, 1), (3, 96, 2), (5, 256, 1), (1, 256, 1),
                     (3, 256, 2), (3, 384, 1), (1, 384, 1), (3, 384, 2), (3, 1024, 1),
                     (1, 1024, 1)]
    assert [layer["type"] for layer in layers][-5:] == ["dropout", "conv", "conv", "classifier",
                                               "global_avg"]
    assert layers[0]["type"] == "conv"  # no input dropout
    # AlexNet's maps: 224 -> 55 -> 27 -> 13 -> 6, and 6x6 before the global average
    sizes = spec.spatial_sizes(layers, 224)
    assert [s for s, c in zip(sizes, layers, strict=True) if c.get("stride", 1) > 1] == [
        55, 27, 13, 6]
    assert sizes[-2] == 6
    print("\n" + spec.format_spec(layers, 224))


@pytest.mark.parametrize("mode", list(TRANSFORMS))
def test_every_downsampling_mode_builds_runs_and_has_its_count(mode):
    network = build_network(imagenet_layers(), TRANSFORMS[mode], 3, 224, 1000,
                            name=f"{mode}-ImageNet")
    final = spec.spatial_sizes(network.spec, 224)[-2]
    print(f"\n{mode}: {count_parameters(network):,} parameters, {final}x{final} final map")
    assert count_parameters(network) == PARAMS[mode]
    assert final == FINAL_MAP[mode]
    network.eval()
    with torch.no_grad():
        assert network(torch.rand(1, 3, 224, 224)).shape == (1, 1000)


def test_the_conv_replacing_a_floor_pool_keeps_its_size_and_a_ceil_pool_gets_same():
    floor = [{"type": "conv", "out": 8, "k": 3}, {"type": "maxpool", "k": 3, "stride": 2,
                                                  "ceil_mode": False}]
    ceil = [{"type": "conv", "out": 8, "k": 3}, {"type": "maxpool", "k": 3, "stride": 2}]
    assert spec.all_conv(floor)[1]["pad"] == 0 and spec.all_conv(ceil)[1]["pad"] == "same"
    for layers, size in ((floor, 55), (ceil, 32)):
        assert (spec.spatial_sizes(spec.all_conv(layers), size)
                == spec.spatial_sizes(layers, size))


def test_model_imagenet_composes_with_the_paper_labels():
    cfg = compose_config(["model=imagenet", "dataset.image_size=224", "width=0.125"])
    assert instantiate(cfg.network).name == "All-CNN-ImageNet"
    cfg = compose_config(["model=imagenet", "downsample=stride", "dataset.image_size=224"])
    assert cfg.downsample.label == "Strided-CNN-ImageNet"


# --- prepare --------------------------------------------------------------------------------


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return write_shards(tmp_path)


def index_of(root: Path) -> dict:
    return json.loads((root / "imagenet" / fmt.INDEX_NAME).read_text())


def test_prepare_writes_verified_class_mixed_shards_of_the_original_bytes(root, tmp_path):
    index = index_of(root)
    assert index["complete"] and index["classes"] == sorted(CLASSES)
    assert index["counts"] == {"train": 24, "holdout": HOLDOUT, "val": 12}
    assert [s["file"] for s in index["shards"]] == (
        [f"train-{i:06d}.tar" for i in range(6)] + ["holdout-000000.tar", "holdout-000001.tar"]
        + [f"val-{i:06d}.tar" for i in range(3)])
    seen, mixed = [], []
    for entry in index["shards"]:
        path = root / "imagenet" / entry["file"]
        assert fmt.file_sha256(path) == entry["sha256"]
        assert path.stat().st_size == entry["bytes"]
        with tarfile.open(path) as tar:
            members = {m.name: tar.extractfile(m).read() for m in tar}
        keys = sorted({name.split(".")[0] for name in members})
        assert len(keys) == entry["images"] <= SHARD_IMAGES
        labels = set()
        for key in keys:
            source = members[f"{key}.path"].decode()
            label = int(members[f"{key}.cls"])
            assert source.split("/")[1] == index["classes"][label]  # wnid -> sorted position
            assert members[f"{key}.jpg"] == (tmp_path / "src" / source).read_bytes()
            labels.add(label)
            seen.append(source)
        mixed.append(len(labels) > 1)
    assert len(seen) == len(set(seen)) == 42  # every source image exactly once
    # shuffled, not in folder order: most 4-image shards hold 2-3 of the 3 classes
    assert sum(mixed) >= 8, mixed


def test_a_rerun_keeps_good_shards_and_redoes_a_deleted_and_a_corrupted_one(root, tmp_path):
    folder = root / "imagenet"
    before = {p.name: p.stat().st_mtime_ns for p in folder.glob("*.tar")}
    prep.prepare("imagenet", tmp_path / "src", root, holdout=HOLDOUT, shard_images=SHARD_IMAGES,
                 progress=False)
    assert {p.name: p.stat().st_mtime_ns for p in folder.glob("*.tar")} == before
    (folder / "train-000001.tar").unlink()
    data = bytearray((folder / "val-000002.tar").read_bytes())
    data[2000] ^= 0xFF  # same size, other bytes
    (folder / "val-000002.tar").write_bytes(bytes(data))
    (folder / ".train-000003.tar.x1y2.tmp").write_bytes(b"left by a killed run")
    redone = dict(before, **{"val-000002.tar": (folder / "val-000002.tar").stat().st_mtime_ns})
    prep.prepare("imagenet", tmp_path / "src", root, holdout=HOLDOUT, shard_images=SHARD_IMAGES,
                 progress=False)
    after = {p.name: p.stat().st_mtime_ns for p in folder.glob("*.tar")}
    assert {name for name in after if after[name] != redone.get(name)} == {
        "train-000001.tar", "val-000002.tar"}
    assert not list(folder.glob(".*.tmp"))
    for entry in index_of(root)["shards"]:
        assert fmt.file_sha256(folder / entry["file"]) == entry["sha256"]


def test_the_fingerprint_follows_the_source_files(tmp_path):
    source = write_tree(tmp_path / "src")
    first = prep.scan(source).fingerprint()
    assert prep.scan(source).fingerprint() == first
    image = source / "val" / CLASSES[0] / f"{CLASSES[0]}_0.JPEG"
    image.write_bytes(image.read_bytes() + b"\0")
    assert prep.scan(source).fingerprint() != first


@pytest.mark.parametrize("damage", ["no source", "no val", "empty class", "not a jpeg"])
def test_bad_source_trees_are_one_line_naming_the_problem(tmp_path, damage, capsys):
    source = write_tree(tmp_path / "src", size=(16, 16)) if damage != "no source" else (
        tmp_path / "nowhere")
    named = {"no source": source, "no val": source / "val",
             "empty class": source / "train" / "n99999999",
             "not a jpeg": source / "train" / CLASSES[1] / "notes.JPEG"}[damage]
    if damage == "no val":
        for image in (source / "val").rglob("*.JPEG"):
            image.unlink()
        for folder in (source / "val").iterdir():
            folder.rmdir()
        (source / "val").rmdir()
    elif damage == "empty class":
        named.mkdir()
    elif damage == "not a jpeg":
        named.write_text("not an image")
    code = prep.main(["imagenet", str(source), str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and str(named) in err
    assert not (tmp_path / "out" / "imagenet" / fmt.INDEX_NAME).exists()


def test_prepare_has_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        prep.main(["--help"])
    assert exit_info.value.code == 0 and "--shard-bytes" in capsys.readouterr().out


# --- the data module ------------------------------------------------------------------------


def module(root: Path, **kwargs) -> ShardDataModule:
    args = {"root": root, "dataset": "imagenet", "channels": 3, "image_size": 224,
            "num_classes": 3, "batch_size": 4, "eval_batch_size": 5, "val_size": HOLDOUT,
            "num_workers": 0, "shuffle_buffer": 8, **kwargs}
    return ShardDataModule(**args)


def batches(loader) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return list(loader)


def test_batches_are_normalised_224px_images_with_their_labels(root):
    data = module(root)
    assert data.image_counts() == {"train": 24, "val": HOLDOUT, "test": 12}
    for name, size, count in (("train", 4, 24), ("val", 5, HOLDOUT), ("test", 5, 12)):
        loader = getattr(data, f"{name}_dataloader")()
        got = batches(loader)
        assert len(got) == len(loader)
        assert sum(len(y) for _, y in got) == count
        x, y = got[0]
        assert x.shape == (size, 3, 224, 224) and x.dtype == torch.float32
        assert y.dtype == torch.int64 and 0 <= y.min() and y.max() < 3
        assert -2.2 < x.min() and x.max() < 2.7  # (0..1 - ImageNet mean) / std
    assert all(len(y) == 4 for _, y in batches(data.train_dataloader()))  # whole steps


def test_training_crops_are_random_per_epoch_and_evaluation_is_fixed(root):
    data = module(root)
    train, test = data.train_dataloader(), data.test_dataloader()
    first, again = batches(train), batches(train)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(first, again, strict=True))  # seeded
    train.epoch = lambda: 1
    later = batches(train)
    assert not torch.equal(first[0][0], later[0][0])
    one, two = batches(test), batches(test)
    for a, b in zip(one, two, strict=True):
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    image = Image.new("RGB", (80, 64))
    crops = {RandomResizedCrop().box(80, 64, random.Random(s)) for s in range(5)}
    assert len(crops) == 5
    assert CenterCrop().box(80, 64) == CenterCrop().box(80, 64) == (12.0, 4.0, 68.0, 60.0)
    assert CenterCrop()(image).size == RandomResizedCrop()(image, random.Random(0)).size == (
        224, 224)


def test_two_ranks_read_disjoint_shards_covering_every_image(root):
    ranks = [module(root, rank=r, world_size=2) for r in (0, 1)]
    for split in ("test", "val"):
        streams = [getattr(r, f"{split}_dataloader")().dataset for r in ranks]
        parts = [{s.file for s in stream.shards_for(0, 1)} for stream in streams]
        assert not parts[0] & parts[1]
        assert parts[0] | parts[1] == {s.file for s in streams[0].shards}
        read = [sum(len(y) for _, y in batches(getattr(r, f"{split}_dataloader")()))
                for r in ranks]
        assert sum(read) == ranks[0].image_counts()[split]
    loaders = [r.train_dataloader() for r in ranks]
    assert [len(loader) for loader in loaders] == [6, 6]  # 24 images // global batch 4
    for loader in loaders:
        assert [len(y) for _, y in batches(loader)] == [2] * 6  # each rank: 4 / 2
    parts = [{s.file for s in loader.dataset.shards_for(0, 1)} for loader in loaders]
    assert not parts[0] & parts[1] and len(parts[0] | parts[1]) == 6
    with pytest.raises(DatasetError, match="batch_size=4 is the global batch"):
        module(root, rank=0, world_size=3)


def test_workers_share_a_rank_s_shards(root):
    data = module(root, num_workers=2)
    loader = data.test_dataloader()
    got = batches(loader)
    assert len(got) == len(loader) and sum(len(y) for _, y in got) == 12
    assert len(batches(data.train_dataloader())) == 6


def test_the_final_stage_trains_on_the_holdout_too(root):
    data = module(root, val_size=0)
    assert data.image_counts() == {"train": 30, "val": 0, "test": 12}
    assert len(data.train_dataloader()) == 30 // 4 and len(data.val_dataloader()) == 0


def test_a_missing_index_names_the_prepare_command(tmp_path):
    with pytest.raises(DatasetError) as error:
        module(tmp_path / "empty")
    message = str(error.value)
    assert str(tmp_path / "empty" / "imagenet" / fmt.INDEX_NAME) in message
    assert f"python -m ablate.data.prepare imagenet SRC {tmp_path / 'empty'}" in message


def test_an_unfinished_prepare_or_another_source_is_refused(root):
    index = index_of(root)
    with pytest.raises(DatasetError, match="pins"):
        module(root, fingerprint="0" * 64)
    module(root, fingerprint=index["fingerprint"])  # the right one is accepted
    with pytest.raises(DatasetError, match="--holdout 6"):
        module(root, val_size=5)
    with pytest.raises(DatasetError, match="--seed 0"):
        module(root, split_seed=1)
    (root / "imagenet" / fmt.INDEX_NAME).write_text(json.dumps({**index, "format_version": 0}))
    with pytest.raises(DatasetError, match="version 0"):
        module(root)
    (root / "imagenet" / fmt.INDEX_NAME).write_text(json.dumps({**index, "complete": False}))
    with pytest.raises(DatasetError, match="did not finish"):
        module(root)
    outside = [{**index["shards"][0], "file": "../../elsewhere.tar"}, *index["shards"][1:]]
    (root / "imagenet" / fmt.INDEX_NAME).write_text(json.dumps({**index, "shards": outside}))
    with pytest.raises(DatasetError, match="not a file beside it"):
        module(root)


def test_a_truncated_shard_is_named_before_training(root):
    shard = root / "imagenet" / "train-000002.tar"
    shard.write_bytes(shard.read_bytes()[:3000])
    with pytest.raises(DatasetError, match=str(shard)):
        module(root)


def test_a_shard_that_breaks_while_read_is_named(root):
    data = module(root)
    shard = root / "imagenet" / "val-000001.tar"
    original = shard.read_bytes()
    corrupted = bytearray(original)
    corrupted[1500] ^= 0xFF  # inside the first JPEG: same size, another hash
    shard.write_bytes(bytes(corrupted))
    with pytest.raises(DatasetError, match=f"shard {shard}"):
        batches(data.test_dataloader())
    shard.write_bytes(original[:2048])  # truncated after the size check
    with pytest.raises(DatasetError, match=f"shard {shard}.*truncated or corrupt"):
        batches(data.test_dataloader())


def test_the_config_switches_the_data_path_and_refuses_what_cannot_stream(root):
    cfg = compose_config([*OVERRIDES, f"dataset.root={root}", "batch_size=4"])
    data = instantiate(cfg.datamodule)
    assert isinstance(data, ShardDataModule) and data.batch_size == 4
    assert compose_config().datamodule._target_ == "ablate.data.module.TensorDataModule"
    for override, message in (("augmentation=flip_translate", "set augmentation=none"),
                              ("preprocess=paper", "preprocess=standardize")):
        cfg = compose_config([*OVERRIDES, f"dataset.root={root}", override])
        with pytest.raises(Exception) as error:  # noqa: B017 - Hydra wraps what the target raises
            instantiate(cfg.datamodule)
        assert isinstance(error.value.__cause__, DatasetError)
        assert message in str(error.value.__cause__)


@pytest.mark.slow
def test_a_shard_that_breaks_in_another_ddp_process_is_named_in_the_record(root, tmp_path):
    """2 processes on gloo: the second reads a corrupt shard and fails; the first, which
    fails of the lost connection, quotes the second's error, naming the file, in the record."""
    from helpers import result_files, run_cli

    rank1 = module(root, rank=1, world_size=2).train_dataloader().dataset
    shard = root / "imagenet" / rank1.shards_for(0, 1)[0].file  # the first the 2nd reads
    corrupted = bytearray(shard.read_bytes())
    corrupted[1500] ^= 0xFF  # same size, another hash: found while reading
    shard.write_bytes(bytes(corrupted))
    done = run_cli([*OVERRIDES, f"dataset.root={root}", "model=imagenet", "width=0.125",
                    "batch_size=4", "eval_batch_size=4", "trainer.max_epochs=1", "logger=none",
                    "trainer.strategy=ddp", "trainer.devices=2", "trainer.accelerator=cpu",
                    "callbacks.test_predictions.shifts=[]",
                    # no read-ahead: the first process then never reaches the second's shards
                    "dataset.shuffle_buffer=0"], tmp_path)
    assert done.returncode != 0
    [path] = result_files(tmp_path)
    record = json.loads(path.read_text())
    assert record["status"] == "failed" and str(shard) in record["error"], record["error"]
    assert "on process 1: ablate.errors.DatasetError: shard" in record["error"]  # quoted
    # the source the shards came from (the report tables runs of other sources apart)
    assert record["data_fingerprint"] == index_of(root)["fingerprint"]

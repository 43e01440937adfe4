"""Composition of every group combination, and the bad inputs a user can type."""

from __future__ import annotations

import inspect
import itertools
from pathlib import Path

import imagenet_tree
import pytest
import torch
from helpers import compose_config
from hydra import compose, initialize_config_module
from hydra.errors import ConfigCompositionException
from hydra.utils import instantiate
from omegaconf import OmegaConf

from ablate import config as config_lib
from ablate import identity
from ablate.network import count_parameters

CONF = Path(__file__).resolve().parent.parent / "conf"
STUDY_AXES = ("model", "downsample", "dataset", "augmentation", "preprocess")


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def groups() -> list[str]:
    return sorted(p.name for p in CONF.iterdir() if p.is_dir() and not p.name.startswith("_"))


def test_every_axis_has_its_paper_values():
    assert options("model") == ["A", "B", "C", "imagenet"]
    assert options("downsample") == ["avgpool", "conv", "convpool", "lppool", "pool", "stride"]
    assert "digits" in options("dataset")
    assert "none" in options("augmentation")


def _builds(cfg) -> None:
    config_lib.validate(cfg)
    datamodule = instantiate(cfg.datamodule)
    assert datamodule.batch_size == cfg.batch_size
    network = instantiate(cfg.network)
    size = cfg.dataset.image_size
    x = torch.zeros(1, cfg.dataset.channels, size, size)
    assert network(x).shape == (1, cfg.dataset.num_classes)


def test_every_value_of_every_study_axis_composes_and_builds(tmp_path):
    # Each value once, beside the defaults of the other axes: the groups are independent
    # (no value of one axis is interpolated into another's file), so the 324 combinations
    # add nothing but time. The 12 networks of the paper are built just below. Two values
    # need more than a default: model=imagenet takes 224x224 inputs, dataset=imagenet its
    # shards (a tiny prepared set here).
    needs = {"model=imagenet": ["dataset.image_size=224"],
             "dataset=imagenet": [*imagenet_tree.OVERRIDES[1:],
                                  f"dataset.root={imagenet_tree.write_shards(tmp_path)}"]}
    with initialize_config_module(config_lib.CONFIG_MODULE, version_base="1.3"):
        for axis in STUDY_AXES:
            for value in options(axis):
                choice = f"{axis}={value}"
                _builds(compose(config_lib.CONFIG_NAME,
                                overrides=[choice, "width=0.125", *needs.get(choice, [])]))


def test_every_network_of_the_paper_composes_and_builds():
    with initialize_config_module(config_lib.CONFIG_MODULE, version_base="1.3"):
        for model, downsample in itertools.product(options("model"), options("downsample")):
            size = 224 if model == "imagenet" else 32  # the ImageNet network's 55/27/13/6 maps
            cfg = compose(config_lib.CONFIG_NAME, overrides=[
                f"model={model}", f"downsample={downsample}", "width=0.125",
                f"dataset.image_size={size}"])
            network = instantiate(cfg.network)
            assert network(torch.zeros(1, 1, size, size)).shape == (1, 10)
            assert network.name.endswith(cfg.model.name)


def test_every_option_of_every_other_group_composes():
    others = [g for g in groups() if g not in STUDY_AXES]
    assert {"init", "optimizer", "scheduler", "trainer", "hardware", "logger", "experiment"} <= set(
        others
    )
    with initialize_config_module(config_lib.CONFIG_MODULE, version_base="1.3"):
        for group in others:
            for option in options(group):
                # sweep presets are not in the defaults list: they are added with +
                add = "+" if group == "sweep" else ""
                cfg = compose(config_lib.CONFIG_NAME, overrides=[f"{add}{group}={option}"])
                config_lib.validate(cfg)
                OmegaConf.to_container(cfg.trainer, resolve=True)
                instantiate(cfg.init)
                optimizer = instantiate(cfg.optimizer)([torch.nn.Parameter(torch.zeros(1))])
                instantiate(cfg.scheduler)(optimizer)


def test_paper_protocol_is_the_default():
    cfg = compose_config()
    assert cfg.optimizer.momentum == 0.9 and cfg.optimizer.weight_decay == 0.001
    assert cfg.lr in (0.25, 0.1, 0.05, 0.01)
    assert list(cfg.scheduler.milestones) == [200, 250, 300] and cfg.scheduler.gamma == 0.1
    assert cfg.trainer.max_epochs == 350
    assert OmegaConf.to_container(cfg.hydra.sweep)["dir"].startswith("sweeps/${sweep_name}/")


def test_every_trainer_argument_is_overridable():
    cfg = compose_config(["trainer.fast_dev_run=true", "trainer.limit_train_batches=3",
                          "trainer.gradient_clip_val=1.0", "trainer.max_epochs=2"])
    assert cfg.trainer.fast_dev_run is True and cfg.trainer.limit_train_batches == 3
    config_lib.validate(cfg)
    trainer = instantiate(cfg.trainer, logger=False, enable_progress_bar=False)
    assert trainer.gradient_clip_val == 1.0 and trainer.fast_dev_run is True


def test_trainer_config_holds_only_what_the_project_sets():
    cfg = compose_config()
    assert set(cfg.trainer) == {"_target_", "max_epochs", "accelerator", "devices", "precision",
                                "deterministic", "num_sanity_val_steps", "log_every_n_steps",
                                "enable_model_summary", "plugins"}
    assert set(cfg.trainer) - {"_target_"} <= set(config_lib.trainer_arguments())


def test_misspelt_trainer_argument_is_rejected_with_a_suggestion():
    cfg = compose_config(["trainer.max_epoch=2"])
    with pytest.raises(config_lib.ConfigError, match="Did you mean 'trainer.max_epochs'"):
        config_lib.validate(cfg)


def test_config_id_ignores_lightning_defaults_the_config_does_not_set(monkeypatch):
    import pytorch_lightning as pl

    before = identity.config_id(compose_config(["experiment=quick"]))
    init = inspect.unwrap(pl.Trainer.__init__)  # what inspect.signature reads
    changed = dict(init.__kwdefaults__)
    assert changed["gradient_clip_val"] is None and changed["log_every_n_steps"] is None
    changed.update(gradient_clip_val=5.0, check_val_every_n_epoch=3, benchmark=True)
    monkeypatch.setattr(init, "__kwdefaults__", changed)
    assert inspect.signature(pl.Trainer).parameters["gradient_clip_val"].default == 5.0
    config_lib.trainer_arguments.cache_clear()
    after = compose_config(["experiment=quick"])
    config_lib.validate(after)
    assert identity.config_id(after) == before
    # ... while a value the config does set is part of the identity
    assert identity.config_id(compose_config(["experiment=quick", "trainer.benchmark=true"])) \
        != before


def test_gpu_preset_turns_on_the_fast_paths():
    cfg = compose_config(["hardware=gpu"])
    assert cfg.trainer.accelerator == "gpu" and cfg.trainer.precision == "bf16-mixed"
    assert cfg.channels_last is True and cfg.compile is True


def test_paper_params_through_config():
    with initialize_config_module(config_lib.CONFIG_MODULE, version_base="1.3"):
        cfg = compose(config_lib.CONFIG_NAME, overrides=["model=C", "downsample=conv",
                                                          "dataset.channels=3"])
        assert count_parameters(instantiate(cfg.network)) == 1_369_738


@pytest.mark.parametrize(
    ("override", "expected"),
    [("model=D", "Available options in 'model'"), ("downsample=avg", "Available options in")],
)
def test_unknown_choices_list_the_valid_ones(override, expected):
    with pytest.raises(ConfigCompositionException) as caught:
        compose_config([override])
    assert expected in str(caught.value)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("lr=-0.1", "lr=-0.1 is not a positive number"),
        ("lr=0", "lr=0 is not a positive number"),
        ("seed=-1", "seed=-1 must be a non-negative integer"),
        ("batch_size=0", "batch_size=0 must be a positive integer"),
        ("width=0", "width=0 must be a positive number"),
        ("downsample=lppool downsample.p=0", "downsample.p=0 must be a positive, finite number"),
        ("downsample=lppool downsample.p=-2", "downsample.p=-2 must be a positive, finite"),
        ("downsample=lppool downsample.p=inf", "downsample.p=inf must be a positive, finite"),
        ("dataset.val_size=0", "dataset.val_size=0 holds out no validation images"),
    ],
)
def test_bad_values_are_named(override, message):
    with pytest.raises(config_lib.ConfigError, match=message.replace(".", r"\.")):
        config_lib.validate(compose_config(override.split()))


def test_no_validation_split_is_fine_without_a_validation_loop():
    config_lib.validate(compose_config(["dataset.val_size=0", "trainer.limit_val_batches=0"]))


def test_misspelt_key_gets_a_suggestion():
    cfg = compose_config()
    hints = config_lib.unknown_key_hints(
        cfg, ["trainer.max_epoch=2", "model=A", "batchsize=3", "lr=0.1"], groups()
    )
    assert len(hints) == 2
    assert "Did you mean 'trainer.max_epochs'" in hints[0]
    assert "Did you mean 'batch_size'" in hints[1]
    # a Trainer argument the YAML does not set is no misspelling (it used to be named as one
    # after every failed run that set trainer.strategy=ddp)
    hints = config_lib.unknown_key_hints(cfg, ["trainer.strategy=ddp", "trainer.strateg=ddp"])
    assert len(hints) == 1 and "'trainer.strateg'" in hints[0]


def test_cell_holds_the_values_as_typed():
    cfg = compose_config(["model=A", "downsample=stride", "lr=0.1", "seed=3",
                          "trainer.max_epochs=2"])
    choices = cfg.hydra.runtime.choices
    cell = identity.cell_of(cfg, choices, ["model=A", "lr=0.1", "trainer.max_epochs=2"])
    assert cell == {"model": "A", "downsample": "stride", "dataset": "digits",
                    "augmentation": "none", "seed": 3, "lr": 0.1, "trainer.max_epochs": 2,
                    # every axis of the study, defaults included (no gaps in W&B tables)
                    "preprocess": "standardize", "init": "xavier", "width": 1.0,
                    "batch_size": 128}


def test_a_downsampling_modes_settings_are_in_its_cell_with_their_defaults():
    cfg = compose_config(["downsample=lppool"])
    cell = identity.cell_of(cfg, cfg.hydra.runtime.choices, ["downsample=lppool"])
    assert cell["downsample"] == "lppool" and cell["downsample.p"] == 2

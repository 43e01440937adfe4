"""How long a run will take, before it runs: multiply-accumulates over a throughput.

A run costs a fixed start-up (process, imports, data, Lightning), a fixed cost per epoch, and
its arithmetic: three forward passes of MACs per training image (a backward pass is about two),
one per validation and test image. MACs come from the layer spec (``ablate.spec``), exactly;
the throughput is a per-device constant (``DEVICES``). A sweep's finished runs calibrate the
whole model for their machine (one factor). No torch here: the plan comes before anything heavy.
"""

from __future__ import annotations

import json
import shutil
import socket
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ablate import budget, spec
from ablate.records import Record
from ablate.sweep import measured


@dataclass(frozen=True)
class Device:
    macs_per_second: float  # sustained, forward MACs counted once
    run_seconds: float  # process start to first step, and the test at the end
    epoch_seconds: float  # Lightning's per-epoch work besides the arithmetic


# cpu: measured on a 2-core x86 box with torch 2.13 fp32 (All-CNN-C, batch 128: about 160 GMAC/s
# training, i.e. 200 images/s; see the README). gpu: an assumption for a recent datacenter GPU
# with bf16, channels_last and torch.compile (hardware=gpu); not measured here. Both are
# replaced by the calibration as soon as a sweep has finished runs.
DEVICES = {"cpu": Device(macs_per_second=160e9, run_seconds=6.0, epoch_seconds=0.05),
           "gpu": Device(macs_per_second=20e12, run_seconds=60.0, epoch_seconds=0.5)}

# Measured beats assumed: the GPU throughput of the latest `python -m ablate.bench.gpu` report
# (reports/benchmarks/gpu.txt), when there is one, replaces the assumed 20e12 above.
if (_gpu_report := measured.latest_gpu_report()) and (
        _gpu_macs := measured.measured_gpu_macs_per_second(_gpu_report)):
    DEVICES["gpu"] = replace(DEVICES["gpu"], macs_per_second=_gpu_macs)


def forward_macs(layers: Sequence[Mapping[str, Any]], channels: int, image_size: int,
                 num_classes: int) -> int:
    """Multiply-accumulates of one forward pass of one image (convolutions; the rest is noise)."""
    sizes = spec.spatial_sizes(layers, image_size)
    macs, width = 0, channels
    for layer, size in zip(layers, sizes, strict=True):
        if layer["type"] == "conv":
            macs += size * size * layer["k"] ** 2 * width * layer["out"]
            width = layer["out"]
        elif layer["type"] == "classifier":
            k = layer.get("k", 1)
            macs += size * size * k * k * width * num_classes
            width = num_classes
    return macs


def _seen(images: int, batch: int, limit: Any) -> int:
    """Images a pass over ``images`` sees under ``limit_*_batches`` (as Lightning counts)."""
    return min(images, budget.planned_batches(budget.batches_of(images, batch), limit) * batch)


@dataclass(frozen=True)
class Work:
    """The arithmetic and the epochs of one run, and the processes it trains in (DDP)."""

    macs: float
    epochs: int
    device: str
    processes: int = 1

    def seconds(self) -> float:
        """Wall time; data parallelism is taken to divide the arithmetic exactly (an upper
        bound on its speed: gradient exchange and stragglers are not modelled)."""
        device = DEVICES[self.device]
        return device.run_seconds + self.epochs * device.epoch_seconds \
            + self.macs / device.macs_per_second / self.processes

    def device_seconds(self) -> float:
        """Device time: what a cluster bills, every process's device for the whole run."""
        return self.seconds() * self.processes


def _get(cfg: Any, key: str, default: Any = None) -> Any:
    return OmegaConf.select(cfg, key, default=default)


def epoch_images(cfg: DictConfig | Mapping[str, Any]) -> tuple[int, int, int]:
    """Training, validation and test images a run of ``cfg`` sees per epoch."""
    cfg = cfg if isinstance(cfg, DictConfig) else OmegaConf.create(dict(cfg))
    # dataset.images: the source's training (before the validation split) and test counts
    train_pool = int(_get(cfg, "dataset.images.train", 0) or 0)
    val_images = min(budget.held_out(train_pool, _get(cfg, "dataset.val_size")), train_pool)
    batch, eval_batch = int(cfg.batch_size), int(_get(cfg, "eval_batch_size", 1000))
    return (_seen(train_pool - val_images, batch, _get(cfg, "trainer.limit_train_batches")),
            _seen(val_images, eval_batch, _get(cfg, "trainer.limit_val_batches")),
            _seen(int(_get(cfg, "dataset.images.test", 0) or 0), eval_batch,
                  _get(cfg, "trainer.limit_test_batches")))


def work_of(cfg: DictConfig | Mapping[str, Any]) -> Work:
    """The work of the run ``cfg`` describes (a composed config, or a record's ``config``);
    ``SpecError`` when the network cannot take the input, as the run itself would."""
    cfg = cfg if isinstance(cfg, DictConfig) else OmegaConf.create(dict(cfg))
    from hydra.utils import get_method

    network = cfg.network
    layers = spec.normalise(OmegaConf.to_container(network.layers, resolve=True))
    if transform := _get(cfg, "network.transform._target_"):
        layers = get_method(transform)(layers)
    layers = spec.scale_width(layers, float(network.width))
    image_size = int(_get(cfg, "augmentation.transform.size", network.image_size))
    per_image = forward_macs(layers, int(network.in_channels), image_size, int(network.num_classes))
    train, val, test = epoch_images(cfg)
    epochs = budget.planned_epochs(_get(cfg, "trainer.max_epochs"), _get(cfg, "trainer.max_steps"),
                                   budget.batches_of(train, int(cfg.batch_size)))
    images = epochs * (3 * train + val) + test
    accelerator = str(_get(cfg, "trainer.accelerator", "auto"))
    return Work(macs=float(per_image) * images, epochs=epochs, device=device_kind(accelerator),
                processes=budget.processes(cfg))


def device_kind(accelerator: str) -> str:
    """``cpu`` or ``gpu`` for a Trainer accelerator; ``auto`` asks whether CUDA is there."""
    if accelerator in ("gpu", "cuda", "mps", "tpu"):
        return "gpu"
    if accelerator == "cpu":
        return "cpu"
    return "gpu" if shutil.which("nvidia-smi") else "cpu"


@dataclass(frozen=True)
class Measured:
    """One finished run as a calibration point: its wall time beside the work its config
    describes. Small enough to keep in the run index, so a relaunch calibrates without reading
    a single record."""

    wall_seconds: float
    work: Work  # its device: where the run ran, not where its config asked to
    host: str | None = None  # the machine it ran on (None: a record from before hosts)

    def as_dict(self) -> dict[str, Any]:
        return {"wall_seconds": self.wall_seconds, "macs": self.work.macs,
                "epochs": self.work.epochs, "device": self.work.device, "host": self.host,
                "processes": self.work.processes}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Measured:
        work = Work(float(data["macs"]), int(data["epochs"]), str(data["device"]),
                    int(data.get("processes", 1)))
        return cls(float(data["wall_seconds"]), work, data.get("host"))


# What work_of reads of a config: records that agree on these (a grid's seeds and learning
# rates) share one computation, which matters when a scan reads thousands of them.
WORK_KEYS = ("network", "augmentation", "dataset", "batch_size", "eval_batch_size", "trainer")
_work_of_records: dict[str, Work | None] = {}


def calibration_point(record: Record) -> Measured | None:
    """The calibration point of a finished record; None when it cannot be priced."""
    seconds, config = record.wall_seconds, record.config
    if not seconds or not config:
        return None
    inputs = {key: config.get(key) for key in WORK_KEYS}
    key = json.dumps(inputs, sort_keys=True, default=str)
    if key not in _work_of_records:
        try:
            _work_of_records[key] = work_of(inputs)
        except Exception:  # a record from another version of the config: not comparable
            _work_of_records[key] = None
    if (work := _work_of_records[key]) is None:
        return None
    kind = "gpu" if "cuda" in str(record.device) else "cpu"
    return Measured(float(seconds), replace(work, device=kind), record.host)


def this_machine(finished: Iterable[Measured],
                 host: str | None = None) -> tuple[list[Measured], int]:
    """The finished runs made on this host, and how many others were left out: another
    machine's wall times (or a record's without a host) say nothing of this one's speed (the
    same grid ran 4x slower on a loaded copy of the same 2-core VM)."""
    host = host or socket.gethostname()
    finished = list(finished)
    mine = [point for point in finished if point.host == host]
    return mine, len(finished) - len(mine)


def calibration(finished: Iterable[Measured]) -> dict[str, float]:
    """Measured / modelled wall time of finished runs, per device kind (one factor each)."""
    wall: Counter[str] = Counter()
    modelled: Counter[str] = Counter()
    for point in finished:
        wall[point.work.device] += point.wall_seconds
        modelled[point.work.device] += point.work.seconds()
    return {kind: wall[kind] / modelled[kind] for kind in wall if modelled[kind] > 0}

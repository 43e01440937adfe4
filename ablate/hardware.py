"""What this machine can run of ``hardware=gpu``'s options, checked before anything trains.

Lightning and inductor find out late (a Trainer that cannot be built, a C++ build failing on the
first step) and say so in a long traceback; a user who moved a GPU config to a laptop should read
one line naming the option and what to set instead. Options that do work on a CPU (``compile``
through inductor's C++ backend, ``channels_last``, bf16 autocast) are left to run.
"""

from __future__ import annotations

import os
import shutil
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from ablate.budget import count, devices_and_nodes
from ablate.errors import ConfigError

GPU_ACCELERATORS = ("gpu", "cuda")
# Precisions whose autocast or weights are float16: CUDA only here (CPU autocast is bf16).
FLOAT16 = ("16", "16-mixed", "16-true", "fp16")
# Lightning's strategies that start their processes with multiprocessing from inside fit: what
# those processes learn (history, predictions) stays in them, and the record would lack it.
IN_PROCESS_STARTS = ("spawn", "fork", "notebook")


def _device_type(accelerator: Any) -> str:
    """``cuda`` or ``cpu``: what Lightning's ``auto`` picks on this machine (MPS, TPU aside)."""
    if accelerator in GPU_ACCELERATORS:
        return "cuda"
    if accelerator in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    return str(accelerator)


def check_processes(cfg: DictConfig) -> None:
    """A data-parallel run this machine (or this launch) cannot start, refused before it does."""
    from ablate.distributed import launched_by_cluster

    accelerator = OmegaConf.select(cfg, "trainer.accelerator", default="auto")
    device = _device_type(accelerator)
    given = OmegaConf.select(cfg, "trainer.devices", default=1)
    if count(given) is None:
        raise ConfigError(
            f"trainer.devices={given}: give the number of devices (trainer.devices=8) or their "
            "ids (trainer.devices=[0,1]); a run's processes must be known before it starts "
            "(the plan prices them, a launcher reserves them)")
    devices, nodes = devices_and_nodes(cfg)
    strategy = OmegaConf.select(cfg, "trainer.strategy", default="auto")
    if isinstance(strategy, str) and any(word in strategy for word in IN_PROCESS_STARTS):
        raise ConfigError(
            f"trainer.strategy={strategy} starts its processes from inside fit, and what they "
            "learn (history, predictions) would not reach the record; use trainer.strategy=ddp")
    have = torch.cuda.device_count() if device == "cuda" else os.cpu_count() or 1
    if devices > have:
        what = "CUDA GPUs" if device == "cuda" else "CPU cores (one process per device)"
        raise ConfigError(
            f"trainer.devices={devices} but this machine has {have} {what}; set "
            f"trainer.devices={have} or fewer, or spread the run over nodes with "
            "trainer.num_nodes under a cluster launcher")
    if nodes > 1 and not launched_by_cluster():
        raise ConfigError(
            f"trainer.num_nodes={nodes} needs a cluster launcher that starts the processes on "
            "every node: hydra/launcher=slurm with hydra.launcher.nodes="
            f"{nodes} hydra.launcher.tasks_per_node={devices} (or srun/torchrun); Lightning's "
            "own launcher starts processes on this machine only")
    world = devices * nodes
    if world > 1:
        if cfg.batch_size % world:
            raise ConfigError(
                f"batch_size={cfg.batch_size} is the global batch and does not split into "
                f"{world} equal shares (trainer.devices x trainer.num_nodes); use a multiple "
                f"of {world}")
        if cfg.get("packed_with"):
            raise ConfigError("packed seeds (hydra.sweeper.pack) train in one process; run "
                              "them without trainer.devices > 1, or pack=1 with DDP")


def check(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` for an option this machine cannot run."""
    accelerator = OmegaConf.select(cfg, "trainer.accelerator", default="auto")
    precision = str(OmegaConf.select(cfg, "trainer.precision", default="32-true"))
    device = _device_type(accelerator)
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"trainer.accelerator={accelerator} but this machine has no CUDA GPU (torch "
            f"{torch.__version__}); train here with hardware=cpu (or hardware=default), or launch "
            "on a GPU machine (hydra/launcher=slurm, ray_local on a GPU node)")
    if device == "cpu" and precision in FLOAT16:
        raise ConfigError(
            f"trainer.precision={precision} needs a CUDA GPU (float16 autocast); on a CPU use "
            "trainer.precision=bf16-mixed or 32-true")
    if device == "cpu" and cfg.get("compile") and not (shutil.which("g++") or shutil.which("c++")):
        raise ConfigError(
            "compile=true on a CPU needs a C++ compiler for inductor (g++ or c++ on PATH), and "
            "none was found; install one (apt install g++) or set compile=false")
    check_processes(cfg)

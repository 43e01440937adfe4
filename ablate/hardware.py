"""What this machine can run of ``hardware=gpu``'s options, checked before anything trains.

Lightning and inductor find out late (a Trainer that cannot be built, a C++ build failing on the
first step) and say so in a long traceback; a user who moved a GPU config to a laptop should read
one line naming the option and what to set instead. Options that do work on a CPU (``compile``
through inductor's C++ backend, ``channels_last``, bf16 autocast) are left to run.
"""

from __future__ import annotations

import shutil
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from ablate.errors import ConfigError

GPU_ACCELERATORS = ("gpu", "cuda")
# Precisions whose autocast or weights are float16: CUDA only here (CPU autocast is bf16).
FLOAT16 = ("16", "16-mixed", "16-true", "fp16")


def _device_type(accelerator: Any) -> str:
    """``cuda`` or ``cpu``: what Lightning's ``auto`` picks on this machine (MPS, TPU aside)."""
    if accelerator in GPU_ACCELERATORS:
        return "cuda"
    if accelerator in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    return str(accelerator)


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

"""One run over several processes (Lightning's DDP): which process writes, and how the processes
of a job of a multirun are started as that one job.

Lightning's own launcher starts the other processes of a local DDP run by running the command
line again, with ``hydra.run.dir`` set to the run's folder (its Hydra support). That is right for
a single run. In a multirun the command line is the whole sweep, and each process would start the
sweep again; so while a job of a multirun fits, the command line is the job's own overrides and
Hydra's run folder is the job's folder: the other processes start as this job, in its folder.
Under SLURM (submitit, ``tasks_per_node``) or torchrun the engine starts every process itself
and Lightning joins them: nothing to do.
"""

from __future__ import annotations

import copy
import importlib.util
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict, read_write
from pytorch_lightning.utilities.rank_zero import rank_zero_only

from ablate import budget
from ablate.hardware import CLUSTER_VARIABLES

# What Lightning's launcher sets in the launching process's own environment.
LAUNCHER_VARIABLES = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")


def writes() -> bool:
    """Whether this process writes the run's record, predictions and W&B run: under data
    parallelism only the first process does (Lightning knows the rank from the environment its
    launcher, SLURM or torchrun set, before the Trainer exists, and from the Trainer after)."""
    return rank_zero_only.rank == 0


def processes(cfg: DictConfig) -> int:
    """How many processes the run trains in (devices x nodes)."""
    return budget.processes(OmegaConf.select(cfg, "trainer.devices", default=1),
                            OmegaConf.select(cfg, "trainer.num_nodes", default=1))


@contextmanager
def started_as_this_job(cfg: DictConfig, hydra_cfg: DictConfig) -> Iterator[None]:
    """While it lasts, Lightning's launcher starts the other processes of a multirun's job as
    that job (its overrides, its folder); anything else passes through untouched. After it, the
    process is as before the job (Lightning's launcher leaves its variables in the environment
    and the process group open, and the next job would take itself for a started process)."""
    launches = (hydra_cfg.mode == RunMode.MULTIRUN and processes(cfg) > 1
                and "LOCAL_RANK" not in os.environ
                and not any(name in os.environ for name in CLUSTER_VARIABLES))
    if not launches:
        yield
        return
    state = HydraConfig.instance()
    original, argv = state.cfg, sys.argv[:]
    mine = copy.deepcopy(original)
    with read_write(mine.hydra), open_dict(mine.hydra):
        mine.hydra.run.dir = str(hydra_cfg.runtime.output_dir)
    state.set_config(mine)
    sys.argv = [argv[0], *hydra_cfg.overrides.task]
    # Lightning runs `python -m <__main__'s module>` again, or the __main__ file: in a Ray worker
    # that is Ray's own worker script, so the command names this runner's module instead.
    import __main__

    main_spec = getattr(__main__, "__spec__", None)
    __main__.__spec__ = importlib.util.find_spec("ablate.run")
    environment = {name: os.environ.get(name) for name in LAUNCHER_VARIABLES}
    try:
        yield
    finally:
        sys.argv = argv
        __main__.__spec__ = main_spec
        state.cfg = original  # the very object: set_config would re-parent it
        for name, value in environment.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()

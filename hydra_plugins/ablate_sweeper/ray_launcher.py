"""``hydra/launcher=ablate_ray`` (under ``conf/hydra/launcher/ray_local.yaml`` and
``ray_cluster.yaml``): each job runs Hydra's public ``run_job`` in a Ray task, as
hydra-ray-launcher's do, in a fresh worker process (``max_calls: 1``: no CUDA context, W&B run or
global state carried over), with a GPU of its own, ``1/jobs_per_gpu`` of one, or none where the
runtime has no GPU (then ``num_cpus`` each, instead of waiting forever for a GPU). A data-parallel
job (``trainer.devices`` = N > 1) gets N whole GPUs and N times the cores, in one task, so on one
node: Lightning's launcher starts its N processes there (``ablate.distributed``). A job whose
worker dies is returned as failed; ``job_ended`` (set by the sweeper) hears of each as it ends.
"""

# No `from __future__ import annotations`: see sweeper.py.
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
from hydra.core.utils import (
    JobReturn,
    JobStatus,
    configure_log,
    filter_overrides,
    run_job,
    setup_globals,
)
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

log = logging.getLogger(__name__)


@dataclass
class RayConf:
    init: dict[str, Any] = field(default_factory=lambda: {"address": None})  # ray.init(...)
    remote: dict[str, Any] = field(default_factory=dict)  # ray.remote(...) of every job


@dataclass
class AblateRayLauncherConf:
    _target_: str = "hydra_plugins.ablate_sweeper.ray_launcher.AblateRayLauncher"
    jobs_per_gpu: int = 1  # k > 1: k jobs share each GPU (num_gpus = 1/k per job)
    ray: RayConf = field(default_factory=RayConf)


ConfigStore.instance().store(
    group="hydra/launcher", name="ablate_ray", node=AblateRayLauncherConf, provider="ablate")


def _run_in_worker(hydra_context: HydraContext, config: DictConfig, task_function: TaskFunction,
                   singleton_state: dict[Any, Any]) -> JobReturn:
    """One job in its Ray worker: Hydra's state of the launching process (config store,
    plugins) restored, then Hydra's own ``run_job`` in the job's sweep subdirectory."""
    setup_globals()
    Singleton.set_state(singleton_state)
    HydraConfig.instance().set_config(config)
    return run_job(hydra_context=hydra_context, task_function=task_function, config=config,
                   job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")


class AblateRayLauncher(Launcher):
    def __init__(self, ray: DictConfig, jobs_per_gpu: int = 1) -> None:
        if jobs_per_gpu < 1:
            raise ValueError(f"hydra.launcher.jobs_per_gpu={jobs_per_gpu} must be 1 or more")
        self.ray_cfg, self.jobs_per_gpu = ray, jobs_per_gpu
        self.config: Any = None
        self.hydra_context: Any = None
        self.task_function: Any = None
        # called with (offset in the batch, result) as each job ends: the sweeper's progress
        self.job_ended: Callable[[int, JobReturn], None] | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction,
              config: DictConfig) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def _start(self) -> dict[str, Any]:
        """Start or join the Ray runtime; the ``ray.remote`` options of every job."""
        import ray

        init = OmegaConf.to_container(self.ray_cfg.init, resolve=True)
        init = {key: value for key, value in init.items() if value is not None}
        if init.get("address") in (None, "local"):
            # As hydra-ray-launcher does: a small object store, enough for job results.
            init.setdefault("object_store_memory", 78643200)
        if not ray.is_initialized():
            log.info("Starting Ray with %s", init)
            ray.init(**init)
        remote = OmegaConf.to_container(self.ray_cfg.remote, resolve=True)
        resources = ray.cluster_resources()
        cpus, gpus = resources.get("CPU", 0), resources.get("GPU", 0)
        if remote.get("num_gpus") is None:
            remote["num_gpus"] = 1 / self.jobs_per_gpu if gpus else 0
        remote.setdefault("max_calls", 1)
        each = remote.get("num_cpus") or 1
        slots = min(cpus // each, gpus // remote["num_gpus"] if remote["num_gpus"] else cpus)
        where = (f"{remote['num_gpus']:g} GPU and {each:g} CPU each" if remote["num_gpus"]
                 else f"no GPU in the Ray runtime, {each:g} CPU each")
        log.info("Ray: %s; %d jobs at once on %g CPUs, %g GPUs", where, slots, cpus, gpus)
        return remote

    @staticmethod
    def _data_parallel(config: DictConfig, remote: dict[str, Any]) -> dict[str, Any]:
        """The resources of a job training in N > 1 processes: N GPUs (where the runtime has
        GPUs) and N times the cores; none to change for any other job."""
        from ablate.budget import devices_and_nodes

        count, nodes = devices_and_nodes(config)
        if nodes > 1:  # one task is one node: it would wait for ever
            raise ValueError(f"trainer.num_nodes={nodes}: the Ray launcher runs a job on one "
                             "node; spread a run over nodes with hydra/launcher=slurm")
        if count <= 1:
            return {}
        return {"num_gpus": count if remote["num_gpus"] else 0,
                "num_cpus": (remote.get("num_cpus") or 1) * count}

    def launch(self, job_overrides: Sequence[Sequence[str]],
               initial_job_idx: int) -> Sequence[JobReturn]:
        """Every job in a Ray task of its own; their results in order, each passed to
        ``job_ended`` as it ends, whatever the order."""
        import ray

        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        remote = self._start()
        run_remotely = ray.remote(**remote)(_run_in_worker)
        log.info("Ray launcher: %d jobs -> %s", len(job_overrides), self.config.hydra.sweep.dir)
        pending = {}
        results: list[Any] = [None] * len(job_overrides)
        for offset, overrides in enumerate(job_overrides):
            idx = initial_job_idx + offset
            log.info("\t#%d : %s", idx, " ".join(filter_overrides(overrides)))
            config = self.hydra_context.config_loader.load_sweep_config(self.config,
                                                                        list(overrides))
            with open_dict(config):
                config.hydra.job.id, config.hydra.job.num = f"job_id_for_{idx}", idx
            try:
                options = self._data_parallel(config, remote)
            except ValueError as error:  # a job no Ray task can hold: failed, the rest go on
                self._ended(offset, job_overrides[offset], results, error)
                continue
            task = run_remotely.options(**options) if options else run_remotely
            pending[task.remote(self.hydra_context, config, self.task_function,
                                Singleton.get_state())] = offset
        waiting = list(pending)
        while waiting:
            [reference], waiting = ray.wait(waiting, num_returns=1)
            offset = pending[reference]
            try:
                results[offset] = ray.get(reference)
            except Exception as error:  # the worker died, or its result could not come back
                self._ended(offset, job_overrides[offset], results, error)
                continue
            if self.job_ended is not None:
                self.job_ended(offset, results[offset])
        return results

    def _ended(self, offset: int, overrides: Sequence[str], results: list[Any],
               error: BaseException) -> None:
        """A job that failed outside its own code (not placed, its worker died)."""
        log.error("job %s failed in Ray: %s", " ".join(overrides), error)
        results[offset] = JobReturn(list(overrides), status=JobStatus.FAILED)
        results[offset].return_value = error
        if self.job_ended is not None:
            self.job_ended(offset, results[offset])

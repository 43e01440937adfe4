"""``hydra/sweeper=ablate`` (the default of ``conf/config.yaml``; its settings are
``AblateSweeperConf``), on Hydra's public plugin API only, as its Optuna and Ax sweepers are:
``Sweeper.setup`` / ``sweep``, the launcher's ``launch``, each outcome from ``JobReturn``. The
decisions and the text are in ``ablate.sweep``; this class wires them to Hydra.
"""

# No `from __future__ import annotations`: Hydra loads plugin modules outside sys.modules, where
# dataclasses cannot resolve string annotations. Only Hydra is imported here at first: Hydra's
# plugin scan runs this module for every command, a single run included.
import gc
import logging
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra import initialize_config_module
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, RunMode, TaskFunction
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

if TYPE_CHECKING:  # annotations only: ablate.sweep is imported when a sweep runs
    from hydra.core.config_loader import ConfigLoader
    from hydra.plugins.launcher import Launcher

    from ablate.sweep.grid import Axes
    from ablate.sweep.plan import PlannedRun
    from hydra_plugins.ablate_sweeper._composer import JobComposer

log = logging.getLogger(__name__)

# Hydra 1.3's basic launcher (jobs one after another in this process) has no public name: it is
# recognised by its class path, never imported. The sweeper hands it one job at a time, to
# report each as it ends, and quiets its per-job log lines (its logger has its module's name).
BASIC_LAUNCHER = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"


@dataclass
class AblateSweeperConf:
    _target_: str = "hydra_plugins.ablate_sweeper.sweeper.AblateSweeper"
    max_batch_size: int | None = None  # jobs handed to the launcher at once (None: all)
    params: dict[str, str] | None = None  # the grid, as in Hydra's basic sweeper
    # more grids in the same sweep, each `params` with these axes replaced (a union of grids:
    # e.g. downsample=pool,conv beside downsample=lppool x downsample.p=1,2,4,16)
    variants: list[dict[str, str]] | None = None
    dry_run: bool = False  # print the plan (what would run, resume, be skipped) and stop
    resume: bool = True  # false: ignore earlier runs and run every job again
    # where earlier runs are looked for; None: the parent of hydra.sweep.dir (sweeps/<name>)
    records_root: str | None = None
    rerun_stale: bool = False  # true: rerun finished runs made by other code (another commit)
    rerun_diverged: bool = False  # true: run diverged cells again (they are skipped: a result)
    # a lease (ablate.sweep.lease) older than this has expired even if its process cannot be
    # seen (another machine): set it above the longest batch of jobs one launch runs
    lease_timeout_hours: float = 72.0  # = ablate.sweep.lease.DEFAULT_TIMEOUT_HOURS (tested)
    # seeds=auto: seeds added round after round until the paper's claims the grid tests are
    # decided (ablate.sweep.sequential); min/max seeds None: ablate.decide's (3 and 10);
    # max_runs: a budget of runs for the whole sweep (None: none)
    seeds: str | None = None
    min_seeds: int | None = None
    max_seeds: int | None = None
    max_runs: int | None = None
    # K > 1: up to K seeds of a cell train in one job, as one network (ablate/packed_run.py)
    pack: int = 1


ConfigStore.instance().store(
    group="hydra/sweeper", name="ablate", node=AblateSweeperConf, provider="ablate"
)


def _refuse(problem: str) -> None:
    """Stop the sweep before anything is launched: exit 2, the problem on stderr."""
    from ablate.errors import SweepInvalid

    print(f"ablate: {problem}", file=sys.stderr)
    raise SweepInvalid()


class AblateSweeper(Sweeper):
    def __init__(self, **settings: Any) -> None:
        self.settings = AblateSweeperConf(**settings)
        self.hydra_context: HydraContext | None = None
        self.task_function: TaskFunction | None = None
        self.config: Any = None  # the sweep's DictConfig, once set up
        self.config_loader: ConfigLoader | None = None
        self.launcher: Launcher | None = None  # made once the sweep has its folder
        self.composer: JobComposer | None = None  # made on first use
        self.unsaved: str | None = None  # sweep.json could not be written (a full disk)
        self.sweep_dir: Path | None = None  # taken by the first round, kept by the next
        self.next_num = 0  # job numbers go on from round to round (each its own folder)
        self.planned: list[PlannedRun] = []  # the last round's runs
        self.seeds: tuple[int, int] | None = None  # seeds=auto: min and max, for sweep.json

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction,
              config: DictConfig) -> None:
        from ablate.config import sweep_name_problem

        if "sweep_name" in config and (problem := sweep_name_problem(config.sweep_name)):
            _refuse(f"invalid config: {problem}")  # before anything runs or is written
        self.hydra_context, self.task_function, self.config = hydra_context, task_function, config
        self.config_loader = hydra_context.config_loader

    @property
    def requested_dir(self) -> Path:
        return Path(str(self.config.hydra.sweep.dir)).absolute()

    @property
    def root(self) -> Path:
        """Where earlier runs of this sweep are looked for (and its cells leased)."""
        records_root = self.settings.records_root
        return Path(records_root).absolute() if records_root else self.requested_dir.parent

    def _composer(self) -> "JobComposer":
        from hydra_plugins.ablate_sweeper._composer import JobComposer

        if self.composer is None:
            self.composer = JobComposer(self.config_loader, self.config)
        return self.composer

    def _grid(self, arguments: Sequence[str]) -> tuple[list[list[str]], "Axes"]:
        """Every job of the grid (the union of ``params`` and its ``variants``) and its axes."""
        from ablate.sweep import grid

        parse = OverridesParser.create(config_loader=self.config_loader).parse_overrides
        return grid.union(parse, self.settings.params or {}, self.settings.variants or [],
                          arguments)

    def plan(self, arguments: Sequence[str], jobs: Sequence[Sequence[str]] | None = None
             ) -> tuple["Axes", list["PlannedRun"], str, Path]:
        """``(axes, planned runs, estimate note, records root)`` of ``arguments``' grid (or of
        ``jobs``, a round of seeds=auto); in a final stage (``selection``), each job at the lr its
        selection sweep chose, and nothing starts while that sweep is incomplete."""
        from ablate import overrides, selection
        from ablate.errors import SelectionError
        from ablate.sweep import planner

        grid, axes = self._grid(arguments)
        if jobs is not None:  # a round of seeds=auto: the seeds it runs, not the grid's
            grid = [list(job) for job in jobs]
            seeds = sorted({str(overrides.find(job, "seed")) for job in grid}, key=int)
            axes = [(k, seeds if k == "seed" else v) for k, v in axes]
        if "selection" in self.config:
            try:
                grid = selection.final_grid(grid, self._composer().compose)
            except SelectionError as error:
                _refuse(f"the final stage cannot start: {error}")
            axes = [(k, [selection.SELECTED] if k == "lr" else v) for k, v in axes]
        # Composing thousands of jobs allocates millions of objects, and each full collection
        # would walk the imported stack (torch, Lightning) too: frozen, planning takes half.
        gc.freeze()
        try:
            runs, note = planner.plan_runs(
                grid, axes, self.root, self._composer().compose, self.settings.resume,
                self.settings.rerun_diverged, self.settings.lease_timeout_hours)
        finally:
            gc.unfreeze()
        return axes, runs, note, self.root

    def _take_sweep_dir(self) -> Path:
        """This sweep's own folder, written where the launcher and every job read it."""
        from ablate import overrides
        from ablate.sweep.launch import quoted
        from ablate.sweep.plan import unique_dir

        taken = unique_dir(self.requested_dir)
        with read_write(self.config.hydra), open_dict(self.config.hydra):
            self.config.hydra.sweep.dir = str(taken)
            # Jobs are composed again from hydra.overrides.hydra (by the launcher, possibly in
            # another process or on another machine): the folder taken goes there too. Read
            # as written: hydra.sweep.subdir=x_${hydra.job.num} resolves only in a job.
            written = OmegaConf.to_container(self.config.hydra.overrides.hydra, resolve=False)
            kept = overrides.without(written, ["hydra.sweep.dir"])
            self.config.hydra.overrides.hydra = [*kept, f"hydra.sweep.dir={quoted(str(taken))}"]
        return taken

    def sweep(self, arguments: list[str]) -> Any:
        from ablate.sweep import sequential

        settings = self.settings
        try:
            plan = sequential.settings(settings.seeds, settings.min_seeds, settings.max_seeds,
                                       settings.max_runs)
        except ValueError as error:
            _refuse(str(error))
        if problem := self._pack_problem(arguments, plan):
            _refuse(problem)
        if plan is None:
            return self._round(arguments)
        return self._sweep_until_decided(arguments, plan)

    def _pack_problem(self, arguments: list[str], plan: Any) -> str | None:
        """What is wrong with ``pack``, before anything runs."""
        from ablate.sweep import launch

        if self.settings.pack == 1:
            return None
        # seeds=auto: a cell reaches max_seeds at most
        most = plan.max_seeds if plan is not None else launch.most_seeds(self._grid(arguments)[0])
        return launch.pack_problem(self.settings.pack, most)

    def _sweep_until_decided(self, arguments: list[str], plan: Any) -> Any:
        """Rounds of seeds (``ablate.sweep.sequential``) until the claims are decided. A failed
        job is one seed less, not the end of the study: the rounds go on without it; the sweep
        still exits non-zero, and a relaunch reruns it."""
        from ablate.errors import SweepFailed
        from ablate.sweep import sequential

        cells = sequential.cells_of(self._grid(arguments)[0])
        if problem := sequential.refusal(plan, cells, self.settings.resume):
            _refuse(problem)
        counts = {cell: plan.min_seeds for cell in cells}
        self.seeds = plan.min_seeds, plan.max_seeds
        returns, round_number, failed = [], 1, None
        while True:
            print(f"[seeds=auto] round {round_number}: {len(cells)} cells, "
                  f"{sum(counts.values())} runs in all", flush=True)
            jobs = sequential.jobs_of(counts)
            try:
                returns += self._round(arguments, jobs)
            except SweepFailed as error:
                failed = error
            if self.settings.dry_run:
                return returns
            # each run's cell by config id: other grids' runs under the root are not ours to
            # extend, and a final stage's lr=selected is a real lr
            ours = {run.config_id: sequential.cells_of([jobs[run.index]])[0]
                    for run in self.planned}
            found = sequential.judge(self.root, ours, counts, plan)
            for line in found.reasons:
                print(f"[seeds=auto] {line}", flush=True)
            if found.targets == counts:
                break
            counts, round_number = found.targets, round_number + 1
        print("\n".join(["[seeds=auto] where the claims stand:",
                         *sequential.summary(found.outcomes)]), flush=True)
        if failed is not None:
            raise failed
        return returns

    def _round(self, arguments: list[str], jobs: list[list[str]] | None = None) -> Any:
        """One launch of the grid (or of ``jobs``): plan, print, launch, summarise."""
        from ablate.errors import Interrupted, SweepFailed, SweepIncomplete
        from ablate.signals import interruptible
        from ablate.status import Action, Outcome
        from ablate.sweep import launch, plan, planner, progress
        from hydra_plugins.ablate_sweeper.extras import missing

        began, dry_run = time.time(), self.settings.dry_run
        # verbose: the sweep's debugging lines (the run index's checks) too; else not even the
        # basic launcher's `#4 : ...` lines (the `[k/N]` line after each job says more)
        if self.config.get("verbose"):
            logging.getLogger("ablate.sweep").setLevel(logging.DEBUG)
        else:
            logging.getLogger(BASIC_LAUNCHER.rsplit(".", 1)[0]).setLevel(logging.WARNING)
        if problem := missing(str(self.config.hydra.launcher.get("_target_", ""))):
            _refuse(problem)  # a launcher whose package is missing: the pip command, first
        axes, runs, note, root = self.plan(arguments, jobs)
        self.planned = runs
        other_code = planner.mark_other_code(runs, rerun=self.settings.rerun_stale)
        invalid = sum(bool(run.problem) for run in runs)
        if not (dry_run or invalid) and self.sweep_dir is None:
            self.sweep_dir = self._take_sweep_dir()
        sweep_dir = self.requested_dir if dry_run or invalid else self.sweep_dir
        name = str(self.config.get("sweep_name", root.name))
        print(plan.format_plan(name, sweep_dir, root, axes, runs, note, dry_run), flush=True)
        if other_code:
            print(other_code, flush=True)
        if invalid:
            _refuse(f"{invalid} jobs have an invalid config; nothing was launched")
        if dry_run:
            return []

        if self.launcher is None:  # once per sweep: rounds of seeds=auto share it
            self.launcher = Plugins.instance().instantiate_launcher(
                hydra_context=self.hydra_context, task_function=self.task_function,
                config=self.config)
        try:
            OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        except OSError as error:  # a full disk: the jobs will say so; the summary still comes
            log.warning("could not write %s: %s", sweep_dir / "multirun.yaml", error)
        self._save(sweep_dir, name, root, axes, runs, began, None)
        for run in runs:
            if run.decision.action == Action.SKIP:
                launch.skip(run)
        todo = [run for run in runs if run.decision.action != Action.SKIP]
        self.progress = progress.Progress(todo)
        stopped, first_num = None, self.next_num
        try:
            with interruptible():  # between jobs too: a signal never loses the summary
                returns = self._launch_all(todo, sweep_dir)
        except Interrupted as stop:  # stop launching, say what happened, exit 128 + signal
            stopped = stop
            for num, run in enumerate(todo, start=first_num):  # numbered in launch order
                if run.state is None and run.output_dir is None and self.settings.pack > 1:
                    run.state, run.error = Outcome.FAILED, "no record"  # never launched
                elif run.state is None:  # launched (its folder known), or numbered in order
                    folder = run.output_dir or self._output_dir(run, num, None)
                    launch.collect(run, folder, None, None)
                if run.error and run.error.startswith("no record"):
                    run.error = f"not launched: the sweep was {stop}"
        self._save(sweep_dir, name, root, axes, runs, began, time.time())
        print(plan.format_summary(name, sweep_dir, runs, time.time() - began), flush=True)
        if stopped is not None:
            raise stopped
        failed = [run for run in runs if run.state not in plan.COMPLETED]
        if self.unsaved:
            print(f"ablate: the sweep's own file could not be written ({self.unsaved}); the "
                  "runs' records are what counts", file=sys.stderr)
        if failed or self.unsaved:
            raise SweepFailed()
        if any(run.state == Outcome.ELSEWHERE for run in runs):
            raise SweepIncomplete()
        return returns

    def _launch_all(self, todo: list["PlannedRun"], sweep_dir: Path) -> list[list[JobReturn]]:
        """The jobs to the launcher in batches of ``max_batch_size``, else all at once (one at a
        time to the basic launcher, which runs them one after another anyway); with ``pack``,
        a job is up to ``pack`` seeds of one cell (``launch.packs``)."""
        from ablate.sweep import launch, lease

        settings, root = self.settings, self.root
        basic = self.config.hydra.launcher.get("_target_") == BASIC_LAUNCHER
        units = launch.packs(todo, settings.pack)
        if len(units) < len(todo):
            print(f"[pack] {len(todo)} runs in {len(units)} jobs of up to {settings.pack} seeds",
                  flush=True)
        size = settings.max_batch_size or (1 if basic else len(units) or 1)
        returns = []
        for start in range(0, len(units), size):
            batch = [run for unit in units[start:start + size] for run in unit]
            if settings.resume:  # resume=false: no leases either (every job runs again)
                batch = launch.lease_batch(batch, root, sweep_dir, settings.lease_timeout_hours,
                                           settings.rerun_diverged)
            leased = [[run for run in unit if run in batch] for unit in units[start:start + size]]
            if not batch:
                continue
            try:
                returns.append(self._launch_batch([u for u in leased if u], self.next_num))
            finally:  # the records are there (or the jobs are lost): the cells are free again
                for run in batch if settings.resume else []:
                    lease.release(root, run.config_id)
            self.next_num += len(batch)
        return returns

    def _launch_batch(self, units: list[list["PlannedRun"]], first: int) -> list[JobReturn]:
        """One batch through the launcher, a job per unit (its first run's number; the other
        runs of a pack get the numbers after the jobs'); each run's outcome and ``[k/N]`` line
        once known (as each job ends, where the launcher has a ``job_ended``, as Ray's does)."""
        from ablate.sweep import launch

        launched, reported = time.time(), set()
        runs = [run for unit in units for run in unit]
        extra = first + len(units)
        for offset, unit in enumerate(units):
            for k, run in enumerate(unit):
                run.launched_at = launched
                num = first + offset if k == 0 else extra
                extra += k > 0
                run.output_dir = self._output_dir(run, num, None)

        def ended(offset: int, result: JobReturn | None, error: Exception | None = None) -> None:
            for k, run in enumerate(units[offset]):
                if k == 0:
                    launch.collect(run, self._output_dir(run, first + offset, result), result,
                                   error)
                else:  # the job's return speaks for its own seed; the others by their records
                    failed = result if result is not None and result.status == JobStatus.FAILED \
                        else None
                    launch.collect(run, run.output_dir, failed, error)
                # one job at a time: its own launch-to-record time; side by side: its record's
                seconds = time.time() - launched if len(runs) == 1 else None
                print(self.progress.finished(run, seconds), flush=True)
            reported.add(offset)

        if hasattr(self.launcher, "job_ended"):
            self.launcher.job_ended = ended
        jobs = [launch.launch_overrides(unit[0])
                + launch.packed_with([(run, run.output_dir) for run in unit[1:]])
                for unit in units]
        try:
            results: Sequence[JobReturn | None] = self.launcher.launch(jobs,
                                                                       initial_job_idx=first)
            launch_error = None
        except Exception as error:  # an engine that lost one job may raise for all
            log.error("the launcher raised: %s", error)
            results, launch_error = [None] * len(units), error
        for offset, result in enumerate(results):
            if offset not in reported:
                ended(offset, result, launch_error)
        return [result for result in results if result is not None]

    def _output_dir(self, run: "PlannedRun", num: int, result: JobReturn | None) -> Path:
        """Where job ``num`` ran: as its ``JobReturn`` says, else as Hydra composes it."""
        if result is not None and result.hydra_cfg is not None:
            return Path(str(result.hydra_cfg.hydra.runtime.output_dir))
        cfg = self.config_loader.load_sweep_config(self.config, list(run.overrides))
        with open_dict(cfg.hydra.job):
            cfg.hydra.job.num = num
        return Path(str(cfg.hydra.sweep.dir)).absolute() / str(cfg.hydra.sweep.subdir)

    def _save(self, sweep_dir: Path, name: str, root: Path, axes: "Axes",
              runs: Sequence["PlannedRun"], began: float, ended: float | None) -> None:
        from ablate.sweep import plan

        try:
            plan.save(sweep_dir, name, root, axes, runs, began, ended, self.seeds)
        except OSError as error:  # a full disk must not cost the summary: warn, exit non-zero
            self.unsaved = f"{sweep_dir}: {error}"
            log.warning("could not write the sweep's state under %s: %s", sweep_dir, error)


@contextmanager
def planner(overrides: Sequence[str]) -> Iterator[tuple[AblateSweeper, list[str]]]:
    """The sweeper of ``python -m ablate.run -m OVERRIDES`` set up to plan as its dry run would,
    and the task overrides ``plan`` takes: for benchmarks and tests. It launches nothing."""
    from ablate import config as config_lib

    config_lib.register()
    with initialize_config_module(config_lib.CONFIG_MODULE, version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        master = loader.load_configuration(config_lib.CONFIG_NAME, list(overrides),
                                           run_mode=RunMode.MULTIRUN)
        sweeper = instantiate(master.hydra.sweeper, _convert_="all")  # as Hydra's Plugins do
        # Planning reads only the config and its loader; Hydra's callbacks belong to launching.
        sweeper.config, sweeper.config_loader = master, loader
        yield sweeper, [str(o) for o in master.hydra.overrides.task]

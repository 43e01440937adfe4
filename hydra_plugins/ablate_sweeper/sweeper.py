"""``hydra/sweeper=ablate`` (the default of ``conf/config.yaml``): Hydra's basic grid, plus

- a plan printed before launching: the grid's cells and runs, what is skipped or resumed, an
  estimated time (``hydra.sweeper.dry_run=true`` prints it and stops);
- resume: earlier runs of the same sweep name are looked up by config id; finished ones are
  skipped, interrupted ones continue from their checkpoint (``resume_from=...``), failed ones
  run again (``hydra.sweeper.resume=false`` runs everything again);
- failure isolation: a job that fails is recorded and the others go on, whatever the launcher;
  the summary lists every job with its directory, and the command exits 1 if any failed;
- a sweep directory of its own, even for two sweeps started in the same second.

The decisions and the text are in ``ablate.sweep`` (no Hydra there); this class wires them to
Hydra's composition and to whichever launcher is configured. The plan composes each job once,
at the cost of one Hydra composition per choice of config groups (``_composer.py``), and finds
earlier runs through the run index (``ablate.sweep.index``): thousands of jobs plan in seconds.
The launcher still composes each job it starts from its overrides, as Hydra's launchers do.
"""

# No `from __future__ import annotations`: Hydra loads plugin modules outside sys.modules, where
# dataclasses cannot resolve string annotations.
import gc
import logging
import sys
import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn, JobStatus
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from hydra_plugins.ablate_sweeper._hydra_internals import BasicLauncher, BasicSweeper

log = logging.getLogger(__name__)


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
    # a lease (ablate.sweep.lease) older than this has expired even if its process cannot be seen
    # (another machine): set it above the longest batch of jobs one launch runs
    lease_timeout_hours: float = 72.0


ConfigStore.instance().store(
    group="hydra/sweeper", name="ablate", node=AblateSweeperConf, provider="ablate"
)


def _quoted(value: str) -> str:
    """An override value that Hydra's grammar reads back as exactly this string."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


class AblateSweeper(BasicSweeper):
    def __init__(
        self,
        max_batch_size: int | None = None,
        params: dict[str, str] | None = None,
        dry_run: bool = False,
        resume: bool = True,
        records_root: str | None = None,
        variants: list[dict[str, str]] | None = None,
        rerun_stale: bool = False,
        rerun_diverged: bool = False,
        lease_timeout_hours: float = 72.0,
    ) -> None:
        super().__init__(max_batch_size=max_batch_size, params=params)
        self.rerun_stale = rerun_stale
        self.rerun_diverged = rerun_diverged
        self.variants = [dict(v) for v in variants or []]
        self.dry_run = dry_run
        self.resume = resume
        self.records_root = records_root
        self.lease_timeout_hours = lease_timeout_hours
        self.requested_dir: Path | None = None
        self.lease_root: Path | None = None  # None: no leases (resume=false runs everything)
        self.unsaved: str | None = None  # sweep.json could not be written (a full disk)
        self.composer: Any = None  # _composer.JobComposer, made on first use

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        # The sweep directory is taken before the launcher is built: launchers read it (the
        # submitit folder lives in it) when they are instantiated.
        self.requested_dir = Path(str(config.hydra.sweep.dir)).absolute()
        if not self.dry_run:
            self._take_sweep_dir(config)
        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)

    @staticmethod
    def _take_sweep_dir(config: DictConfig) -> None:
        from ablate.sweep import unique_dir

        taken = unique_dir(Path(str(config.hydra.sweep.dir)).absolute())
        with read_write(config.hydra), open_dict(config.hydra):
            config.hydra.sweep.dir = str(taken)
            # Jobs are composed again from hydra.overrides.hydra (by the launcher, possibly in
            # another process or on another machine): the directory taken goes there too.
            kept = [o for o in config.hydra.overrides.hydra
                    if not str(o).startswith("hydra.sweep.dir=")]
            config.hydra.overrides.hydra = [*kept, f"hydra.sweep.dir={_quoted(str(taken))}"]

    # ---------------------------------------------------------------------------------- plan

    def _grid(self, arguments: list[str]) -> tuple[list[list[str]], list[tuple[str, list[str]]]]:
        """Every job of the grid (of the union of ``params`` and its ``variants``), and the
        values each key takes somewhere in it."""
        assert self.hydra_context is not None
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        base = self._parse_config()
        grid: list[list[str]] = []
        axes: OrderedDict[str, list[str]] = OrderedDict()
        for variant in [{}, *self.variants]:
            params = [*base, *(f"{key}={value}" for key, value in variant.items())]
            overrides = parser.parse_overrides([*params, *arguments])
            [part] = self.split_arguments(overrides, None)
            grid += [job for job in part if job not in grid]
            mine: OrderedDict[str, list[str]] = OrderedDict()
            for override in overrides:  # later ones replace earlier ones, as in split_arguments
                key = override.get_key_element()
                if override.is_sweep_override():
                    mine[key] = [str(v) for v in override.sweep_string_iterator()]
                else:
                    mine[key] = [override.get_value_element_as_str()]
            for key, values in mine.items():
                known = axes.setdefault(key, [])
                known += [value for value in values if value not in known]
        return grid, list(axes.items())

    def _composer(self) -> Any:
        """The composer of this sweep's jobs: one Hydra composition per distinct choice of
        config groups, shared by the plan and the collection of results."""
        from hydra_plugins.ablate_sweeper._composer import JobComposer

        assert self.hydra_context is not None and self.config is not None
        if self.composer is None:
            self.composer = JobComposer(self.hydra_context.config_loader, self.config)
        return self.composer

    def _plan(self, grid: list[list[str]], axes: list[tuple[str, list[str]]], root: Path):
        from ablate import config as config_lib
        from ablate import records
        from ablate.errors import ConfigError, SpecError
        from ablate.sweep import estimate, index, plan, state

        assert self.hydra_context is not None and self.config is not None
        past = index.past_runs(root) if self.resume else {}
        finished = [run.measured for runs in past.values() for run in runs
                    if run.state == state.FINISHED and run.measured]
        finished, elsewhere = estimate.this_machine(finished)
        factors = estimate.calibration(finished)
        swept = {key for key, values in axes if len(values) > 1}
        jobs, kinds = [], set()
        composer = self._composer()
        # Jobs that differ only in their replicate values (seed, lr) do the same work: the
        # estimate reads the network, data sizes and trainer budget, none derived from those.
        works: dict[tuple[str, ...], Any] = {}
        for index_, overrides in enumerate(grid):
            cfg = composer.compose(overrides, with_hydra=False)
            label = " ".join(o for o in overrides if o.split("=", 1)[0] in swept) or "(no axes)"
            config_id = records.config_id(cfg)
            decision = state.decide(past.get(config_id, []), self.rerun_diverged)
            job = plan.PlannedRun(index_, list(overrides), label, config_id, decision)
            try:
                config_lib.validate(cfg)
                same_work = tuple(o for o in overrides if o.lstrip("+~").split("=", 1)[0]
                                  not in records.REPLICATE_KEYS)
                if same_work not in works:
                    works[same_work] = estimate.work_of(cfg)
                work = works[same_work]
            except (ConfigError, SpecError) as error:
                job.problem = str(error)
            except Exception as error:  # an estimate is best effort, never a reason to stop
                log.warning("no time estimate for job #%d: %s", index_, error)
            else:
                kinds.add(work.device)
                factor = factors.get(work.device)
                job.seconds = work.seconds() * (factor or 1.0)
            jobs.append(job)
        calibrated = [k for k in sorted(kinds) if k in factors]
        if calibrated:
            note = (f"{'/'.join(sorted(kinds))}; calibrated on {len(finished)} finished runs of "
                    "this machine")
        else:
            note = f"{'/'.join(sorted(kinds)) or 'cpu'}; built-in throughput, not yet calibrated"
        if elsewhere:
            note += f"; {elsewhere} finished runs of other machines not used"
        return jobs, note

    def _final_stage(self, grid: list[list[str]], axes: list[tuple[str, list[str]]]):
        """A final stage (its config has ``selection``): each job at the lr its selection sweep
        chose (``ablate.selection``); nothing starts while that sweep is incomplete."""
        from ablate import selection
        from ablate.errors import SelectionError, SweepInvalid

        assert self.hydra_context is not None and self.config is not None
        if "selection" not in self.config:
            return grid, axes
        try:
            grid = selection.final_grid(grid, self._composer().compose)
        except SelectionError as error:
            print(f"ablate: the final stage cannot start: {error}", file=sys.stderr)
            raise SweepInvalid() from None
        return grid, [(k, [selection.SELECTED] if k == "lr" else v) for k, v in axes]

    def _stale(self, jobs: list) -> str | None:
        """Finished runs of other code: a line for the plan; rerun with ``rerun_stale``."""
        from ablate import records
        from ablate.sweep import stale

        return stale.mark(jobs, records.git_state(), self.rerun_stale)

    def _check_launcher(self) -> None:
        """A launcher whose package is missing stops the sweep here, with the pip command,
        not each job later (a dry run included)."""
        from ablate.errors import SweepInvalid
        from hydra_plugins.ablate_sweeper.extras import missing

        assert self.config is not None
        problem = missing(str(self.config.hydra.launcher.get("_target_", "")))
        if problem:
            print(f"ablate: {problem}", file=sys.stderr)
            raise SweepInvalid()

    def plan(self, arguments: list[str]) -> tuple[list[tuple[str, list[str]]], list, str, Path]:
        """The grid of ``arguments`` as jobs, each looked up among earlier runs and priced:
        ``(axes, jobs, estimate note, records root)``. Nothing is launched or written."""
        assert self.config is not None and self.requested_dir is not None
        grid, axes = self._final_stage(*self._grid(arguments))
        root = self.requested_dir.parent
        if self.records_root:
            root = Path(self.records_root).absolute()
        # Composing thousands of jobs allocates millions of small objects, and every collection
        # of the oldest generation would walk the whole imported stack (torch, Lightning) too:
        # left out of collections while planning, the plan takes half the time.
        gc.freeze()
        try:
            jobs, note = self._plan(grid, axes, root)
        finally:
            gc.unfreeze()
        if self.resume:  # cells another launch holds right now: the plan names the holder
            from ablate.sweep import lease, state

            held = lease.held_elsewhere(root, [job.config_id for job in jobs
                                                if job.decision.action != state.SKIP],
                                         self.lease_timeout_hours)
            for job in jobs:
                holder = held.get(job.config_id)
                job.held_by = holder.describe() if holder else None
        return axes, jobs, note, root

    # ------------------------------------------------------------------------------- launch

    def sweep(self, arguments: list[str]) -> Any:
        from ablate import records
        from ablate.errors import Interrupted, SweepFailed, SweepIncomplete, SweepInvalid
        from ablate.signals import interruptible
        from ablate.sweep import index, plan, progress, state

        assert self.config is not None and self.launcher is not None
        began = time.time()
        self._check_launcher()
        axes, jobs, note, root = self.plan(arguments)
        sweep_dir = Path(str(self.config.hydra.sweep.dir)).absolute()
        name = str(self.config.get("sweep_name", root.name))
        stale_note = self._stale(jobs)
        print(plan.format_plan(name, sweep_dir, root, axes, jobs, note, self.dry_run), flush=True)
        if stale_note:
            print(stale_note, flush=True)
        if any(job.problem for job in jobs):
            print(f"ablate: {sum(bool(j.problem) for j in jobs)} jobs have an invalid config; "
                  "nothing was launched", file=sys.stderr)
            raise SweepInvalid()
        if self.dry_run:
            return []

        try:
            OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        except OSError as error:  # a full disk: the jobs will say so; the summary still comes
            log.warning("could not write %s: %s", sweep_dir / "multirun.yaml", error)
        self._save(sweep_dir, name, root, axes, jobs, began, None)
        todo = [job for job in jobs if job.decision.action != state.SKIP]
        for job in jobs:
            if job.decision.action == state.SKIP:
                self._skipped(job)
        self.lease_root = root if self.resume else None
        returns: list[Sequence[JobReturn]] = []
        self._quiet_launcher_lines()
        self.progress = progress.Progress(todo)
        try:
            with interruptible():  # between jobs too: a signal never loses the summary
                self._launch_all(todo, returns, records)
        except Interrupted as stop:  # stop launching, say what happened, exit 128 + signal
            for num, job in enumerate(todo):  # job numbers follow the order of launch
                if job.state is None:
                    self._collect(job, num, None, None, records)
                if job.error and job.error.startswith("no record"):
                    job.error = f"not launched: the sweep was {stop}"
            self._save(sweep_dir, name, root, axes, jobs, began, time.time())
            print(plan.format_summary(name, sweep_dir, jobs, time.time() - began), flush=True)
            raise
        # The next launch finds these runs in the index instead of reading them again.
        index.note_runs(root, [job.output_dir for job in todo if job.output_dir])
        self._save(sweep_dir, name, root, axes, jobs, began, time.time())
        print(plan.format_summary(name, sweep_dir, jobs, time.time() - began), flush=True)
        failed = [job for job in jobs if job.state not in plan.COMPLETED]
        if self.unsaved:
            print(f"ablate: the sweep's own file could not be written ({self.unsaved}); the "
                  "runs' records are what counts", file=sys.stderr)
        if failed or self.unsaved:
            raise SweepFailed(len(failed))
        elsewhere = [job for job in jobs if job.state == plan.ELSEWHERE]
        if elsewhere:
            raise SweepIncomplete(len(elsewhere))
        return returns

    @staticmethod
    def _skipped(job: Any) -> None:
        """A job this launch does not run: finished before, or running in another launch (its
        start marker is alive), which the summary must not count as done."""
        from ablate.sweep import plan, state

        previous = job.decision.previous
        if previous is not None and previous.state == state.RUNNING:
            job.state = plan.ELSEWHERE
            job.error = f"running elsewhere: {previous.directory}"
        else:
            job.state = "skipped"

    def _lease_batch(self, batch: list) -> list:
        """The jobs of ``batch`` this launch may run: each leased (``ablate.sweep.lease``), and
        none finished or started by another launch since this one made its plan. The others
        are marked as running elsewhere (or finished before) and are not launched."""
        from ablate.sweep import index, lease, plan, state

        if self.lease_root is None or self.config is None:
            return batch
        root, sweep_dir = self.lease_root, Path(str(self.config.hydra.sweep.dir)).absolute()
        mine = []
        for job in batch:
            holder = lease.take(root, job.config_id, sweep_dir,
                                  timeout_hours=self.lease_timeout_hours)
            if holder is None:
                mine.append(job)
            else:
                job.state, job.error = plan.ELSEWHERE, holder.describe()
        past = index.past_runs(root) if mine else {}
        for job in list(mine):  # a launch that planned at the same time may have finished it
            others = [run for run in past.get(job.config_id, [])
                      if sweep_dir not in run.directory.parents]
            decision = state.decide(others, self.rerun_diverged)
            if decision.action == state.SKIP:
                mine.remove(job)
                lease.release(root, job.config_id)
                job.decision = decision
                self._skipped(job)
        return mine

    def _release(self, batch: list) -> None:
        from ablate.sweep import lease

        if self.lease_root is not None:
            for job in batch:
                lease.release(self.lease_root, job.config_id)


    def _quiet_launcher_lines(self) -> None:
        """Unless ``verbose``, Hydra's basic launcher keeps its per-job lines (``Launching 1 jobs
        locally``, ``#4 : ...``) to itself: the ``[k/N]`` line after each job says more."""
        assert self.config is not None
        if not self.config.get("verbose"):
            logging.getLogger(BasicLauncher.__module__).setLevel(logging.WARNING)

    def _report_as_they_end(self, batch: list, first_num: int, records: Any) -> set[int]:
        """Where the launcher says when each job ends (``job_ended``: the Ray launcher), its
        ``[k/N]`` line is printed then, not when the whole batch is back; the offsets of the
        jobs so reported are filled into the returned set."""
        reported: set[int] = set()
        if not hasattr(self.launcher, "job_ended"):
            return reported

        def ended(offset: int, result: JobReturn) -> None:
            job = batch[offset]
            self._collect(job, first_num + offset, result, None, records)
            print(self.progress.finished(job), flush=True)
            reported.add(offset)

        self.launcher.job_ended = ended  # type: ignore[union-attr]
        return reported

    def _batch_size(self, todo: list) -> int:
        """``max_batch_size``, else all jobs at once; one at a time for Hydra's basic launcher,
        which runs them one after another anyway: its jobs then end, and are reported, one by
        one instead of all at the end."""
        if self.max_batch_size:
            return self.max_batch_size
        return 1 if isinstance(self.launcher, BasicLauncher) else len(todo) or 1

    def _launch_all(self, todo: list, returns: list, records: Any) -> None:
        """Hand the jobs to the launcher in batches; each job's outcome read from its record."""
        assert self.launcher is not None
        size = self._batch_size(todo)
        next_num = 0
        for start in range(0, len(todo), size):
            batch = self._lease_batch(todo[start:start + size])
            if not batch:
                continue
            overrides = [self._launch_overrides(job) for job in batch]
            launched = time.time()
            for job in batch:
                job.launched_at = launched
            reported = self._report_as_they_end(batch, next_num, records)
            try:
                try:
                    results: Sequence[JobReturn | None] = self.launcher.launch(
                        overrides, initial_job_idx=next_num)
                    launch_error = None
                except Exception as error:  # an engine that lost one job may raise for all
                    log.error("the launcher raised: %s", error)
                    results, launch_error = [None] * len(batch), error
                took = time.time() - launched
                for offset, (job, result) in enumerate(zip(batch, results, strict=True)):
                    if offset in reported:
                        continue
                    self._collect(job, next_num + offset, result, launch_error, records)
                    # one job at a time: its own launch-to-record time; side by side: its
                    # record's
                    seconds = took if len(batch) == 1 else None
                    print(self.progress.finished(job, seconds), flush=True)
            finally:  # the records are there (or the jobs are lost): the cells are free again
                self._release(batch)
            next_num += len(batch)
            returns.append([r for r in results if r is not None])

    @staticmethod
    def _launch_overrides(job: Any) -> list[str]:
        from ablate import records

        overrides = records.without_resume(job.overrides)
        if job.decision.checkpoint is not None:  # found by config id; unreadable: start afresh
            overrides += [f"resume_from={_quoted(str(job.decision.checkpoint))}",
                          "resume_fallback=true"]
        return overrides

    def _output_dir(self, job: Any, num: int, result: JobReturn | None) -> Path:
        if result is not None and result.hydra_cfg is not None:
            return Path(str(result.hydra_cfg.hydra.runtime.output_dir))
        cfg = self._composer().compose(job.overrides)
        with open_dict(cfg.hydra.job):
            cfg.hydra.job.num = num
        return Path(str(cfg.hydra.sweep.dir)).absolute() / str(cfg.hydra.sweep.subdir)

    def _collect(self, job: Any, num: int, result: JobReturn | None,
                 launch_error: BaseException | None, records: Any) -> None:
        """The job's outcome, from its record on disk first: it is there whatever the engine."""
        job.output_dir = self._output_dir(job, num, result)
        path = job.output_dir / records.RESULT_FILE
        if path.is_file():
            try:
                job.record = records.read_record(path)
            except records.RecordError as error:
                job.state, job.error = "failed", str(error)
                return
            job.state = job.record["status"]
            job.error = job.record.get("error")
            return
        job.state = "failed"
        if result is not None and result.status == JobStatus.FAILED:
            error = result._return_value
            job.error = f"{type(error).__name__}: {error}"
        elif launch_error is not None:
            job.error = f"no record; the launcher failed: {launch_error}"
        else:
            job.error = "no record: the job was killed or crashed before writing result.json"

    def _save(self, sweep_dir: Path, name: str, root: Path, axes: Any, jobs: list, began: float,
              ended: float | None) -> None:
        try:
            self._write_sweep_file(sweep_dir, name, root, axes, jobs, began, ended)
        except OSError as error:  # a full disk must not cost the summary: warn, exit non-zero
            self.unsaved = f"{sweep_dir}: {error}"
            log.warning("could not write the sweep's state under %s: %s", sweep_dir, error)

    @staticmethod
    def _write_sweep_file(sweep_dir: Path, name: str, root: Path, axes: Any, jobs: list,
                          began: float, ended: float | None) -> None:
        from ablate import records
        from ablate.sweep import plan

        records.write_json_atomic(sweep_dir / plan.SWEEP_FILE, {
            "sweep_name": name,
            "sweep_dir": str(sweep_dir),
            "records_root": str(root),
            "command": sys.argv,
            "axes": [[key, values] for key, values in axes],
            "started_time": began,
            "ended_time": ended,
            "jobs": [job.as_dict() for job in jobs],
        })


@contextmanager
def planner(overrides: Sequence[str]) -> Iterator[tuple[AblateSweeper, list[str]]]:
    """The sweeper of ``python -m ablate.run -m OVERRIDES``, set up in this process to plan as
    that command's dry run would (same composition, grid, lookup of earlier runs), and the task
    overrides its ``plan`` takes. For benchmarks and tests, which time or check the plan
    without a process per try; it launches nothing and takes no directory."""
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from hydra.types import RunMode

    from ablate import config as config_lib

    config_lib.register()
    with initialize_config_module(config_lib.CONFIG_MODULE, version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        master = loader.load_configuration(config_lib.CONFIG_NAME, list(overrides),
                                           run_mode=RunMode.MULTIRUN)
        settings = OmegaConf.to_container(master.hydra.sweeper, resolve=True)
        assert isinstance(settings, dict)
        settings.pop("_target_", None)
        sweeper = AblateSweeper(**settings)
        sweeper.config = master
        # Planning reads only the config loader; Hydra's callbacks belong to launching.
        sweeper.hydra_context = HydraContext(config_loader=loader, callbacks=None)  # type: ignore[arg-type]
        sweeper.requested_dir = Path(str(master.hydra.sweep.dir)).absolute()
        yield sweeper, [str(o) for o in master.hydra.overrides.task]

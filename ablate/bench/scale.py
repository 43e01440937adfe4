"""What a sweep of thousands of runs costs before and after training: plan, relaunch, report.

``python -m ablate.bench.scale [--sizes 240 2400 24000]`` takes, for each N, the grid of
``+sweep=table3 seed=range(N/48)`` in a scratch directory and times the real commands, each in
a process of its own (wall time from start to exit, imports included; peak resident memory):
1. ``dry run`` (``hydra.sweeper.dry_run=true``) on an empty folder, until the plan is printed;
2. (untimed) a start marker and a finished ``result.json`` for every job, with the job's own
   config and config id from the sweeper's composition and a 350-epoch history, no predictions;
   dated an hour back and synced to disk (they stay in the page cache; a cluster reads colder);
3. ``relaunch, no index``: the same command without the dry run, which must skip every job; the
   first one scans the tree and writes the run index; 4. ``relaunch``: again, with the index;
5. ``report``: ``python -m ablate.report`` over the records, figures included.
The load average printed before each command tells a quiet measurement from a busy one.
Writes ``reports/benchmarks/scale.txt``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ablate import atomic, identity, provenance, records
from ablate.status import Status

OUTPUT = Path("reports/benchmarks/scale.txt")
CELLS_AND_LRS = 48  # table3: 3 models x 4 downsampling modes x 4 learning rates
EPOCHS = 350  # the paper's protocol: a record's history has one row per epoch
SWEEP_DIR = "2026-01-01_00-00-00"


def grid_args(runs: int) -> list[str]:
    if runs % CELLS_AND_LRS:
        raise SystemExit(f"--sizes: {runs} is not a multiple of {CELLS_AND_LRS} (the runs of "
                         f"table3 per seed); try {runs - runs % CELLS_AND_LRS or CELLS_AND_LRS}")
    return ["+sweep=table3", f"seed=range({runs // CELLS_AND_LRS})"]


def _record(cfg, config_id: str, job: int, directory: Path, rng_state: int,
            versions: dict) -> records.Record:
    """A finished run's record, as ``ablate.job`` writes it (no predictions)."""
    from omegaconf import OmegaConf, open_dict

    with open_dict(cfg):  # the only nodes that need the job's Hydra runtime to resolve
        del cfg["callbacks"], cfg["logger"]
    config = OmegaConf.to_container(cfg, resolve=True)
    error = 0.08 + (rng_state % 1000) / 10000
    history = [{"epoch": e, "lr": cfg.lr, "train_loss": round(2.3 / (e + 1), 6),
                "train_error": round(0.9 / (e + 1), 6), "val_loss": round(0.5 + 1 / (e + 1), 6),
                "val_error": round(error + 0.5 / (e + 1), 6)} for e in range(EPOCHS)]
    cell = {"model": cfg.model.name, "downsample": cfg.downsample.name,
            "dataset": cfg.dataset.name, "augmentation": cfg.augmentation.name,
            "seed": cfg.seed, "lr": cfg.lr}
    return records.Record(
        schema=records.SCHEMA_VERSION, name=config["network"]["name"], cell=cell,
        cell_id=identity.cell_id(cell), params=1_369_738, config=config, config_id=config_id,
        versions=versions, started_at="2026-01-01T00:00:00+00:00", output_dir=str(directory),
        status=Status.FINISHED,
        ended_at=f"2026-01-02T00:{job // 60 % 60:02d}:{job % 60:02d}+00:00",
        metrics={"test_error": error, "val_error": error + 0.01, "train_error": 0.002,
                 "train_loss": 0.01, "val_loss": 0.4, "test_loss": 0.41},
        epochs=EPOCHS, history=history, device="cpu", wall_seconds=36000.0 + job,
        first_step_at=0.0)


def write_records(scratch: Path, runs: int) -> Path:
    """Records for every job of the grid; returns the records root (``sweeps/table3``)."""
    from hydra_plugins.ablate_sweeper import register_plugins

    register_plugins()
    from hydra_plugins.ablate_sweeper.sweeper import planner

    root = scratch / "sweeps" / "table3"
    an_hour_ago = time.time() - 3600
    versions = provenance.package_versions()
    with planner(grid_args(runs)) as (sweeper, task):
        grid, _ = sweeper._grid(task)
        composer = sweeper._composer()
        for job, overrides in enumerate(grid):
            cfg = composer.compose(overrides)
            config_id = identity.config_id(cfg)
            directory = root / SWEEP_DIR / str(job)
            directory.mkdir(parents=True)
            record = _record(cfg, config_id, job, directory, int(config_id[:8], 16), versions)
            # Scratch data: plain writes, since an fsync per file would dominate this step.
            (directory / records.START_FILE).write_text(json.dumps(
                {"config_id": config_id, "host": "elsewhere", "pid": 1}))
            (directory / records.RESULT_FILE).write_text(json.dumps(record.to_json()))
            for path in (directory / records.START_FILE, directory / records.RESULT_FILE):
                os.utime(path, (an_hour_ago, an_hour_ago + (path.name == records.RESULT_FILE)))
    for directory, _, _ in os.walk(root):
        os.utime(directory, (an_hour_ago + 2, an_hour_ago + 2))
    # On disk before anything is timed: else the first fsync of a timed command (sweep.json,
    # the index, the report) waits for the gigabyte of records to be written out.
    os.sync()
    return root


def machine() -> str:
    return f"{os.cpu_count()} CPUs ({provenance.cpu_name()}), Python {platform.python_version()}"


def measure(runs: int, say) -> None:
    with tempfile.TemporaryDirectory(prefix="ablate-scale-") as name:
        scratch = Path(name)
        env = {**provenance.subprocess_env(), "WANDB_MODE": "disabled"}

        def step(label: str, args: list[str], expected: str) -> None:
            before = "load " + " ".join(f"{value:.1f}" for value in os.getloadavg())
            # wall seconds, peak resident memory and output, in a process of its own
            started = time.perf_counter()
            with tempfile.TemporaryFile("w+") as stream:
                process = subprocess.Popen([sys.executable, *args], cwd=scratch, env=env,
                                           stdout=stream, stderr=subprocess.STDOUT, text=True)
                _, status, usage = os.wait4(process.pid, 0)
                wall = time.perf_counter() - started
                process.returncode = os.waitstatus_to_exitcode(status)
                stream.seek(0)
                out = stream.read()
            if process.returncode != 0:
                raise RuntimeError(f"{' '.join(args)} failed ({process.returncode}):\n"
                                   f"{out[-3000:]}")
            assert expected in out, out[-2000:]
            memory = usage.ru_maxrss / 2**20  # ru_maxrss is in KiB on Linux
            say(f"  {runs:>6}  {label:<20} {wall:7.1f} s  {memory:5.2f} GiB  ({before})")

        command = ["-m", "ablate.run", "-m", *grid_args(runs)]
        step("dry run", [*command, "hydra.sweeper.dry_run=true"],
             f"{runs} to run, 0 to resume, 0 skipped")
        started = time.perf_counter()
        root = write_records(scratch, runs)
        say(f"  {runs:>6}  (records written in {time.perf_counter() - started:.0f} s, "
            f"{sum(p.stat().st_size for p in root.rglob('result.json')) / 2**20:.0f} MiB)")
        for label in ("relaunch, no index", "relaunch"):
            step(label, command, f"0 to run, 0 to resume, {runs} skipped")
        step("report", ["-m", "ablate.report", "sweeps", "--out", str(scratch / "tables.md")],
             f"{runs} runs -> ")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[240, 2400, 24000],
                        help="numbers of runs, multiples of 48 (default: 240 2400 24000)")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    options = parser.parse_args()
    lines = [f"Sweep scale on this machine: {machine()}",
             f"python -m ablate.bench.scale --sizes {' '.join(map(str, options.sizes))}",
             "grid: +sweep=table3 seed=range(N/48); each command in its own process, imports "
             "included; memory: peak resident set; load: 1/5/15-min load average before it",
             "", f"  {'N':>6}  {'command':<20} {'wall':>9}  {'memory':>9}"]
    print("\n".join(lines), flush=True)

    def say(line: str) -> None:
        lines.append(line)
        print(line, flush=True)

    for runs in options.sizes:
        measure(runs, say)
    atomic.write_atomic(options.output, "\n".join(lines) + "\n")
    print(f"written to {options.output}")


if __name__ == "__main__":
    main()

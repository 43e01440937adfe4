"""What a launcher costs: per-job overhead, and a small grid's wall time, basic vs Ray.

``python -m ablate.bench.launchers [--slurm]`` runs real sweeps of the CLI in a scratch
directory and reads the times back from what they leave (``sweep.json``: when the sweeper
handed each batch to the launcher; ``result.json``: ``first_step_at``, the wall-clock time of a
job's first optimiser step, and the file's own time, when the job ended):

1. Overhead per job, on each launcher: three one-batch jobs run one after another (Ray with
   one CPU, SLURM as an array with at most one task at a time).
   ``launch -> first step`` is the first job's: for Ray it includes starting the Ray runtime,
   for SLURM the scheduler's pass. ``previous end -> first step`` is the median of the later
   jobs': what each further job of a long grid pays (a new process, imports, Hydra, data,
   Lightning's setup; nothing for the basic launcher's process, which is reused).
2. Wall time of the same small CPU grid (the README's quick grid, ``+sweep=quick``: 9 cells,
   20 epochs on digits) with the basic launcher (one job at a time, torch on all cores) and
   with Ray running two jobs at once (one core each), from the command's start to its end.

``--slurm`` adds SLURM (a cluster must answer ``sinfo``; tests/slurm_cluster.py starts one on
localhost). Writes ``reports/benchmarks/launchers.txt``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ablate import atomic, provenance, records

OUTPUT = Path("reports/benchmarks/launchers.txt")
QUIET = ["logger=none", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]
# Three tiny jobs: the training itself takes well under a second.
TINY = ["experiment=quick", *QUIET, "trainer.max_epochs=1", "trainer.limit_train_batches=2",
        "trainer.limit_val_batches=1", "trainer.limit_test_batches=1"]
SEQUENTIAL = {
    "basic": [],
    "ray": ["hydra/launcher=ray_local", "hydra.launcher.ray.init.num_cpus=1"],
    "slurm": ["hydra/launcher=slurm", "hydra.launcher.gres=null", "hydra.launcher.cpus_per_task=1",
              "hydra.launcher.mem_gb=1", "hydra.launcher.array_parallelism=1"]}
GRID = ["+sweep=quick", *QUIET]  # the README's quick grid: 9 cells, 20 epochs each
PARALLEL = {
    "basic": [],
    "ray, 2 jobs at once": ["hydra/launcher=ray_local", "hydra.launcher.ray.init.num_cpus=2"]}


def _sweep(args: list[str], directory: Path) -> tuple[float, list[dict]]:
    """Run one sweep in ``directory``; its wall time and its jobs (sweep.json's entries, by job
    index, each with its record and the time its record was written: when the job ended)."""
    env = provenance.subprocess_env()  # this checkout's code, wherever the scratch folder is
    started = time.time()
    done = subprocess.run([sys.executable, "-m", "ablate.run", "-m", *args], cwd=directory,
                          env=env, capture_output=True, text=True, timeout=1800)
    wall = time.time() - started
    if done.returncode != 0:
        raise RuntimeError(f"sweep failed ({done.returncode}):\n{done.stdout[-3000:]}\n"
                           f"{done.stderr[-3000:]}")
    [sweep_file] = directory.glob("sweeps/*/*/sweep.json")
    sweep = json.loads(sweep_file.read_text())
    results = []
    for job in sorted(sweep["jobs"], key=lambda j: j["index"]):
        path = Path(job["output_dir"]) / records.RESULT_FILE
        results.append({**job, "record": records.load(path), "ended": path.stat().st_mtime})
    return wall, results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slurm", action="store_true", help="also SLURM (sinfo must answer)")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    options = parser.parse_args()
    launchers = {k: v for k, v in SEQUENTIAL.items() if k != "slurm" or options.slurm}
    lines = [f"Launcher overhead on this machine ({os.cpu_count()} CPUs), "
             "python -m ablate.bench.launchers" + (" --slurm" if options.slurm else ""),
             "", "Per job (three tiny jobs, one after another):"]
    for name, args in launchers.items():
        with tempfile.TemporaryDirectory() as scratch:
            _, jobs = _sweep(["seed=0,1,2", *TINY, *args], Path(scratch))
        first = jobs[0]["record"].first_step_at - jobs[0]["launched_at"]
        later = [b["record"].first_step_at - a["ended"]
                 for a, b in zip(jobs, jobs[1:], strict=False)]
        lines.append(f"  {name:<6} launch -> first step {first:6.1f} s   previous end -> first "
                     f"step {statistics.median(later):6.1f} s (median of {len(later)})")
        print(lines[-1], flush=True)
    lines += ["", "The same CPU grid (+sweep=quick: 9 cells of 20 epochs on digits):"]
    for name, args in PARALLEL.items():
        with tempfile.TemporaryDirectory() as scratch:
            wall, jobs = _sweep([*GRID, *args], Path(scratch))
        training = sum(job["record"].wall_seconds for job in jobs)
        lines.append(f"  {name:<20} {wall:6.1f} s wall for {len(jobs)} jobs "
                     f"(sum of the jobs' own run times {training:.1f} s)")
        print(lines[-1], flush=True)
    atomic.write_atomic(options.output, "\n".join(lines) + "\n")
    print(f"written to {options.output}")


if __name__ == "__main__":
    main()

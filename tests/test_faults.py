"""Faults from outside, with real processes: signals on a single run and on a multirun.

Each checks the exit code (128 + the signal, never 0), the record, and that a relaunch of the
sweep ends with exactly one finished record per cell.
"""

from __future__ import annotations

import errno
import signal
import subprocess
import sys

import pytest
import torch
from cifar_archives import CIFAR10_ARCHIVE, CIFAR10_FOLDER, make_archive, write_cifar10
from helpers import TINY, cli_env, held, load, mounted, result_files, run_cli
from test_sweep import _wait_for

from ablate import records
from ablate.signals import SIGNALS

pytestmark = pytest.mark.slow
BUDGET = [*TINY, "trainer.max_epochs=3", "trainer.limit_train_batches=10"]


# Sets the signals a run handles to their defaults (those named in argv[1] to ignored), then
# becomes ``python ARGV[2:]`` in the same process: a child inherits ignored signals, so this is
# how a test starts the CLI as a terminal would, whatever the test runner was started with.
_AS_TERMINAL = (
    "import os, signal, sys\n"
    f"for signum in {[int(s) for s in SIGNALS]}:\n"
    "    ignored = str(signum) in sys.argv[1].split(',')\n"
    "    signal.signal(signum, signal.SIG_IGN if ignored else signal.SIG_DFL)\n"
    "os.execv(sys.executable, [sys.executable, *sys.argv[2:]])\n")


def _start(args: list[str], workdir, env: dict[str, str] | None = None,
           ignoring: tuple[signal.Signals, ...] = ()) -> subprocess.Popen:
    """The CLI as a terminal starts it: SIGTERM, SIGINT and SIGHUP at their defaults whatever
    the test runner inherited (a shell's background job ignores SIGINT, and the child would
    too), but for ``ignoring`` (``nohup`` ignores SIGHUP)."""
    ignored = ",".join(str(int(s)) for s in ignoring)
    return subprocess.Popen([sys.executable, "-c", _AS_TERMINAL, ignored, "-m", "ablate.run",
                             *args], cwd=workdir, env=cli_env(env), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130),
                                              (signal.SIGHUP, 129)])
def test_a_signal_ends_a_run_with_its_exit_code_and_an_interrupted_record(workdir, signum, code):
    run = _start(["model=A", "downsample=stride", *BUDGET, *held(workdir / "hold")], workdir)
    _wait_for("sweeps/quick/*/checkpoints/last.ckpt", workdir, run)
    run.send_signal(signum)
    out, err = run.communicate(timeout=120)
    assert run.returncode == code, err[-3000:]
    [path] = result_files(workdir)
    record = load(path)
    assert record["status"] == "failed" and record["interrupted"] is True
    assert f"interrupted by {signal.Signals(signum).name}" in record["error"]


def test_a_signal_ignored_where_the_run_was_started_stays_ignored(workdir):
    # nohup ignores SIGHUP so that a run outlives its terminal: ablate leaves that as it is
    flag = workdir / "hold"
    run = _start(["model=A", "downsample=stride", *BUDGET, *held(flag)], workdir,
                 ignoring=(signal.SIGHUP,))
    _wait_for("sweeps/quick/*/checkpoints/last.ckpt", workdir, run)
    run.send_signal(signal.SIGHUP)  # pending before the run goes on: a handler would see it
    flag.unlink()
    out, err = run.communicate(timeout=120)
    assert run.returncode == 0, err[-3000:]
    [path] = result_files(workdir)
    assert load(path)["status"] == "finished"


def test_sigterm_stops_a_multirun_prints_the_summary_and_a_relaunch_finishes_it(workdir):
    flag = workdir / "hold"
    grid = ["-m", "model=A,B", "downsample=stride", *BUDGET, *held(flag)]
    sweep = _start(grid, workdir)
    _wait_for("sweeps/quick/*/0/checkpoints/last.ckpt", workdir, sweep)
    sweep.send_signal(signal.SIGTERM)
    out, err = sweep.communicate(timeout=120)
    assert sweep.returncode == 143, err[-3000:]
    assert "0 finished, 0 skipped (finished before), 2 failed" in out
    assert "interrupted by SIGTERM" in out  # the job that ran, from its record
    assert "not launched: the sweep was interrupted by SIGTERM" in out
    [first] = [load(p) for p in result_files(workdir)]
    assert first["interrupted"] is True

    flag.unlink()  # the relaunch trains straight through
    again = run_cli(grid, workdir)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "1 to run, 1 to resume, 0 skipped" in again.stdout
    finished = [load(p) for p in result_files(workdir) if load(p)["status"] == "finished"]
    assert sorted(r["cell"]["model"] for r in finished) == ["A", "B"]
    assert all((p.parent / records.START_FILE).exists() for p in result_files(workdir))


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """One short finished run whose checkpoint the resume tests try to continue."""
    workdir = tmp_path_factory.mktemp("resume")
    done = run_cli(["model=A", "downsample=stride", *TINY], workdir)
    assert done.returncode == 0, done.stderr[-3000:]
    [path] = result_files(workdir)
    return path.parent / records.CHECKPOINT_FILE


def test_resume_from_a_checkpoint_of_another_config_is_refused_naming_the_keys(
        finished_run, workdir):
    other = run_cli(["model=A", "downsample=stride", *TINY, "lr=0.02",
                     f"resume_from={finished_run}"], workdir)
    assert other.returncode == 2, other.stderr
    assert ("is a checkpoint of another config: its run differs in lr, module.optimizer.lr, "
            "optimizer.lr.") in other.stderr
    assert "resume_any=true" in other.stderr and "Traceback" not in other.stderr
    assert result_files(workdir) == []  # refused before anything ran
    anyway = run_cli(["model=A", "downsample=stride", *TINY, "lr=0.02", "resume_any=true",
                      f"resume_from={finished_run}"], workdir)
    assert anyway.returncode == 0, anyway.stderr[-3000:]
    [record] = [load(p) for p in result_files(workdir)]
    assert record["status"] == "finished" and record["resumed_from"] == str(finished_run)


@pytest.mark.parametrize("content", [b"not a checkpoint", None], ids=["truncated", "missing"])
def test_an_unreadable_resume_from_is_an_error_not_a_fresh_start(finished_run, workdir,
                                                                  content):
    broken = workdir / "broken.ckpt"
    if content is not None:
        broken.write_bytes(finished_run.read_bytes()[:len(finished_run.read_bytes()) // 2])
    done = run_cli(["model=A", "downsample=stride", *TINY, f"resume_from={broken}"], workdir)
    assert done.returncode == 2
    assert f"resume_from={broken}:" in done.stderr and "Traceback" not in done.stderr
    assert "101" not in done.stderr.split(f"resume_from={broken}:")[1].split(".")[0]
    assert result_files(workdir) == []


def test_two_launches_at_once_run_every_cell_exactly_once(workdir):
    grid = ["-m", "model=A,B", "downsample=stride", *TINY]
    launches = [_start(grid, workdir) for _ in range(2)]
    outputs = [launch.communicate(timeout=600) for launch in launches]
    codes = [launch.returncode for launch in launches]
    # The launch that leased a cell runs it; the other reports it as running elsewhere and
    # exits 3 (both exit 3 if the leases interleave, each having run one cell).
    assert set(codes) <= {0, 3} and 3 in codes, [err[-3000:] for _, err in outputs]
    for (out, _), code in zip(outputs, codes, strict=True):
        if code == 3:
            assert "running elsewhere: leased by" in out or "running elsewhere:" in out, out
            assert "running elsewhere (another launch of this sweep holds them)" in out
    records_ = [load(p) for p in result_files(workdir)]
    assert sorted(r["cell"]["model"] for r in records_) == ["A", "B"]  # each trained once
    assert all(r["status"] == "finished" for r in records_)
    assert len(list(workdir.glob("sweeps/quick/*/*/started.json"))) == 2
    assert list(workdir.glob("sweeps/quick/.leases/*.json")) == []  # released at the end

    again = run_cli(grid, workdir)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "0 to run, 0 to resume, 2 skipped" in again.stdout
    assert len(result_files(workdir)) == 2


def _fill(disk, room: int) -> None:
    """Fill the filesystem of ``disk`` up to ``room`` free bytes (a file of zeros)."""
    filler = disk / "filler"
    with open(filler, "wb") as stream:
        try:
            while True:
                stream.write(b"\0" * 65536)
                stream.flush()
        except OSError as error:
            assert error.errno == errno.ENOSPC
    with open(filler, "r+b") as stream:
        stream.truncate(max(filler.stat().st_size - room, 0))


@pytest.mark.parametrize("room", [256 * 1024, 0], ids=["room-for-the-record", "nothing-fits"])
def test_a_full_disk_fails_the_run_clearly_and_keeps_the_good_checkpoint(workdir, room):
    with mounted("tmpfs", workdir / "disk", size="4m") as disk:
        # short: the disk fills right after the first checkpoint, and the relaunch trains the rest
        flag = workdir / "hold"  # off the small disk; the run waits at epoch 2 while it exists
        grid = ["-m", "model=A", "downsample=stride", *TINY, "trainer.max_epochs=6",
                "trainer.limit_train_batches=5", *held(flag)]
        sweep = _start(grid, disk)
        checkpoint = _wait_for("sweeps/quick/*/0/checkpoints/last.ckpt", disk, sweep)
        _fill(disk, room)  # the next checkpoint (716 kB) cannot be written
        epochs = torch.load(checkpoint, weights_only=True)["epoch"]
        flag.unlink()  # training goes on, and its next checkpoint meets the full disk
        out, err = sweep.communicate(timeout=300)
        assert sweep.returncode == 1, err[-3000:]
        assert "No space left on device" in out  # the summary says why
        assert "1 failed" in out
        # the good checkpoint was never replaced by a partial one, and no temporary is left
        assert torch.load(checkpoint, weights_only=True)["epoch"] >= epochs
        assert [p.name for p in checkpoint.parent.iterdir()] == ["last.ckpt"]
        if room:  # the record says why; a disk full counts as stopped from outside
            [record] = [load(p) for p in result_files(disk)]
            assert record["status"] == "failed" and record["interrupted"] is True
            assert "CheckpointError: could not write the checkpoint" in record["error"]
            assert "No space left on device" in record["error"]
        else:  # not even the record fits: the summary says why, from the job's exception
            assert result_files(disk) == []

        (disk / "filler").unlink()  # room again: the relaunch resumes from the checkpoint
        again = run_cli(grid, disk)
        assert again.returncode == 0, again.stderr[-3000:]
        assert "0 to run, 1 to resume" in again.stdout
        finished = [load(p) for p in result_files(disk) if load(p)["status"] == "finished"]
        assert len(finished) == 1 and finished[0]["resumed_from"] == str(checkpoint.resolve())


def test_a_read_only_data_root_is_read_and_written_around(workdir):
    source = workdir / "src"
    write_cifar10(source)
    make_archive(source, CIFAR10_FOLDER, CIFAR10_ARCHIVE)
    (source / CIFAR10_ARCHIVE).rename(workdir / CIFAR10_ARCHIVE)
    for path in sorted((source / CIFAR10_FOLDER).iterdir()):
        path.unlink()
    (source / CIFAR10_FOLDER).rmdir()
    (workdir / CIFAR10_ARCHIVE).rename(source / CIFAR10_ARCHIVE)  # the archive only
    env = {"XDG_CACHE_HOME": str(workdir / "xdg")}
    with mounted("ro", workdir / "data", source) as root:
        data = ["dataset=cifar10", f"dataset.root={root}", "dataset.download=false",
                "dataset.verify_checksum=false", "dataset.val_size=6"]
        grid = ["-m", "model=A", "downsample=stride,pool", *TINY, *data]
        done = run_cli(grid, workdir, env=env)
        assert done.returncode == 0, done.stderr[-3000:]
        said = done.stdout + done.stderr
        assert f"{root} is read-only: extracting {CIFAR10_ARCHIVE} into {workdir / 'xdg'}" in said
        assert f"the cache folder {root / 'cache'} is not writable" in said
        records_ = [load(p) for p in result_files(workdir)]
        assert sorted(r["cell"]["downsample"] for r in records_) == ["pool", "stride"]
        assert all(r["status"] == "finished" for r in records_)

        again = run_cli(grid, workdir, env=env)
        assert again.returncode == 0 and "0 to run, 0 to resume, 2 skipped" in again.stdout

        # nowhere to extract to: refused before training, one line, no record, exit 2
        stuck = run_cli(["model=A", "downsample=stride", *TINY, *data], workdir,
                        env={"XDG_CACHE_HOME": str(root / "xdg")})
        assert stuck.returncode == 2, stuck.stderr[-3000:]
        assert "set XDG_CACHE_HOME to a writable folder" in stuck.stderr
        assert "Traceback" not in stuck.stderr and len(result_files(workdir)) == 2
    assert sorted(p.name for p in source.iterdir()) == [CIFAR10_ARCHIVE]

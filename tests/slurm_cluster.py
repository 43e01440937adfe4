"""A real single-node SLURM cluster on localhost: munged, slurmctld and slurmd, started and
stopped by pid, with a private slurm.conf, state directory and ports.

Used by tests/test_slurm.py (a session fixture) and by ``python -m ablate.bench.launchers``'s
measurement instructions. Nothing here installs anything: Debian's ``slurm-wlm`` and ``munge``
are installed by ``.ci/run`` (a user's test run never changes their system); where they are
missing the tests that need them skip, saying why and how to install them.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

PACKAGES = ("slurm-wlm", "munge")
FAKE_GPUS = ("/dev/null", "/dev/zero", "/dev/full", "/dev/urandom")
COMMANDS = ("sbatch", "slurmctld", "slurmd", "munged")


class SlurmUnavailable(RuntimeError):
    """No SLURM here: the tests that need it skip."""


def ensure_installed() -> None:
    """Raise ``SlurmUnavailable`` naming what is missing and the command that installs it."""
    missing = [command for command in COMMANDS if shutil.which(command) is None]
    if missing:
        raise SlurmUnavailable(
            f"{', '.join(missing)} not found: SLURM is not installed here; install it with "
            f"`sudo apt-get install -y {' '.join(PACKAGES)}` (what .ci/run does as root)")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _munge_works() -> bool:
    try:
        encoded = subprocess.run(["munge", "-n"], capture_output=True, timeout=10)
        if encoded.returncode != 0:
            return False
        decoded = subprocess.run(["unmunge"], input=encoded.stdout, capture_output=True,
                                 timeout=10)
    except (OSError, subprocess.SubprocessError):
        return False
    return decoded.returncode == 0


class LocalSlurm:
    """``with LocalSlurm(directory) as cluster:`` runs jobs with ``cluster.env`` in their env."""

    def __init__(self, root: Path, cpus: int | None = None, gpus: int = 2) -> None:
        self.root = Path(root)
        self.host = socket.gethostname()
        self.cpus = cpus or os.cpu_count() or 1
        self.gpus = gpus
        self.conf = self.root / "slurm.conf"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}
        self._processes: list[subprocess.Popen] = []

    def _write_conf(self) -> None:
        for folder in ("state", "spool", "log"):
            (self.root / folder).mkdir(parents=True, exist_ok=True)
        memory_mb = int(Path("/proc/meminfo").read_text().split()[1]) // 1024 * 9 // 10
        self.conf.write_text("\n".join([
            "ClusterName=ablatetest",
            f"SlurmctldHost={self.host}",
            "SlurmUser=root",
            "SlurmdUser=root",
            "AuthType=auth/munge",
            f"SlurmctldPort={_free_port()}",
            f"SlurmdPort={_free_port()}",
            f"StateSaveLocation={self.root / 'state'}",
            f"SlurmdSpoolDir={self.root / 'spool'}",
            f"SlurmctldPidFile={self.root / 'slurmctld.pid'}",
            f"SlurmdPidFile={self.root / 'slurmd.pid'}",
            f"SlurmctldLogFile={self.root / 'log' / 'slurmctld.log'}",
            f"SlurmdLogFile={self.root / 'log' / 'slurmd.log'}",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "MpiDefault=none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core_Memory",
            "ReturnToService=2",
            "KillWait=5",  # seconds between SIGTERM and SIGKILL (default 30)
            "SchedulerParameters=sched_interval=2",
            "GresTypes=gpu",
            f"NodeName={self.host} CPUs={self.cpus} RealMemory={memory_mb} "
            f"Gres=gpu:{self.gpus} State=UNKNOWN",
            f"PartitionName=debug Nodes={self.host} Default=YES MaxTime=INFINITE State=UP",
            "",
        ]))

    def _write_gres(self) -> None:
        """Fake GPUs: SLURM's GPU plugin wants a character device per GPU and only does its
        bookkeeping with them (which job holds which, ``CUDA_VISIBLE_DEVICES``); devices every
        Linux has stand in, so a job's GPU request is granted as on a GPU node."""
        devices = FAKE_GPUS[:self.gpus]
        if len(devices) < self.gpus:
            raise ValueError(f"at most {len(FAKE_GPUS)} fake GPUs")
        (self.conf.parent / "gres.conf").write_text(
            "".join(f"Name=gpu File={device}\n" for device in devices))

    def _spawn(self, command: list[str], log_name: str, user: str | None = None) -> None:
        log = open(self.root / "log" / log_name, "wb")  # noqa: SIM115 (kept for the daemon)
        as_user = {"user": user, "group": user, "extra_groups": []} if user else {}
        self._processes.append(subprocess.Popen(
            command, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            **as_user))

    def start(self, timeout: float = 90) -> LocalSlurm:
        ensure_installed()
        self._write_conf()
        self._write_gres()
        if not _munge_works():
            Path("/run/munge").mkdir(parents=True, exist_ok=True)
            shutil.chown("/run/munge", "munge", "munge")
            self._spawn(["munged", "--foreground", "--force"], "munged.log", user="munge")
            self._wait(_munge_works, timeout, "munged")
        self._spawn(["slurmctld", "-D", "-f", str(self.conf)], "slurmctld.out")
        self._spawn(["slurmd", "-D", "-f", str(self.conf)], "slurmd.out")
        self._wait(self._idle, timeout, "the node to become idle (sinfo)")
        return self

    def _idle(self) -> bool:
        for process in self._processes:
            if process.poll() is not None:
                raise RuntimeError(f"{process.args[0]} exited with {process.returncode}; see "
                                   f"{self.root / 'log'}")
        done = subprocess.run(["sinfo", "-h", "-o", "%T"], env=self.env, capture_output=True,
                              text=True, timeout=10)
        return done.returncode == 0 and "idle" in done.stdout

    @staticmethod
    def _wait(condition, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out waiting for {what}")
            time.sleep(0.5)

    def squeue(self) -> list[tuple[str, str]]:
        """(job id, state) of every job in the queue."""
        done = subprocess.run(["squeue", "-h", "-o", "%i %T"], env=self.env, capture_output=True,
                              text=True, timeout=10)
        return [tuple(line.split()[:2]) for line in done.stdout.splitlines() if line.strip()]

    def _step_daemons(self) -> list[int]:
        """Pids of the slurmstepd processes of this cluster's jobs (found by their SLURM_CONF)."""
        mine = f"SLURM_CONF={self.conf}".encode()
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if (entry / "cmdline").read_bytes().startswith(b"slurmstepd") and mine in (
                        entry / "environ").read_bytes().split(b"\0"):
                    pids.append(int(entry.name))
            except OSError:
                continue
        return pids

    def stop(self) -> None:
        """Stop the daemons this object started (by pid, newest first), nothing else.

        A job's slurmstepd outlives the job by a moment; it is given that moment, then stopped,
        so that no process of this cluster is left behind.
        """
        deadline = time.monotonic() + 15
        while self._step_daemons() and time.monotonic() < deadline:
            time.sleep(0.5)
        for pid in self._step_daemons():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for process in reversed(self._processes):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in reversed(self._processes):
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        self._processes.clear()

    def __enter__(self) -> LocalSlurm:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

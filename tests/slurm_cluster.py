"""A one-node SLURM cluster on this machine, in a folder of its own, for the test of `make sweep launcher=slurm`.

Debian's slurm-wlm and munge, started by hand: munged as the munge user with a fresh key, then slurmctld and
slurmd as root, with one node named after this host at 127.0.0.1 (2 CPUs), one default partition, state,
spool, logs and sockets in the folder, and ports of their own. `stop` ends exactly the processes `start`
began. By hand:

    python tests/slurm_cluster.py /tmp/cluster     # up until Ctrl-C; prints the SLURM_CONF to export
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BINARIES = ("munged", "slurmctld", "slurmd", "sinfo", "sbatch", "squeue", "scancel")
PARTITION = "debug"


def missing() -> list[str]:
    """What this machine lacks to run the cluster (binaries, root)."""
    absent = [b for b in BINARIES if shutil.which(b) is None and not Path("/usr/sbin", b).exists()]
    return absent + ([] if os.geteuid() == 0 else ["root (slurmd runs jobs as their user)"])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def config(folder: Path, node: str, memory_mb: int) -> str:
    ctld, slurmd = free_port(), free_port()
    return f"""\
ClusterName=ablations
SlurmctldHost={node}(127.0.0.1)
SlurmctldPort={ctld}
SlurmdPort={slurmd}
SlurmUser=root
AuthType=auth/munge
AuthInfo=socket={folder}/munge/munge.socket
CredType=cred/munge
StateSaveLocation={folder}/state
SlurmdSpoolDir={folder}/spool
SlurmctldPidFile={folder}/slurmctld.pid
SlurmdPidFile={folder}/slurmd.pid
SlurmctldLogFile={folder}/slurmctld.log
SlurmdLogFile={folder}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
NodeName={node} NodeAddr=127.0.0.1 CPUs=2 RealMemory={memory_mb} State=UNKNOWN
PartitionName={PARTITION} Nodes={node} Default=YES MaxTime=INFINITE State=UP
"""


class SlurmCluster:
    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.conf = self.folder / "slurm.conf"
        self.processes: list[subprocess.Popen] = []
        self.remove_on_stop = False

    @classmethod
    def in_temporary_folder(cls) -> SlurmCluster:
        """A cluster in a new folder under the system's temporary directory, which the munge user can reach
        (pytest's own temporary folders are private to their user); `stop` removes it."""
        folder = Path(tempfile.mkdtemp(prefix="ablations-slurm-"))
        folder.chmod(0o755)
        cluster = cls(folder)
        cluster.remove_on_stop = True
        return cluster

    @property
    def env(self) -> dict[str, str]:
        return os.environ | {"SLURM_CONF": str(self.conf)}

    def start(self, timeout: float = 60.0) -> SlurmCluster:
        munge = self.folder / "munge"
        for sub in (munge, self.folder / "state", self.folder / "spool"):
            sub.mkdir(parents=True, exist_ok=True)
        user = pwd.getpwnam("munge")
        key = munge / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        for path in (munge, key):
            os.chown(path, user.pw_uid, user.pw_gid)
        self.folder.chmod(0o755)
        node = socket.gethostname().split(".")[0]
        memory_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20 // 2
        self.conf.write_text(config(self.folder, node, memory_mb))
        self._spawn(["runuser", "-u", "munge", "--", "munged", "--foreground", f"--key-file={key}",
                     f"--socket={munge}/munge.socket", f"--pid-file={munge}/munged.pid",
                     f"--log-file={munge}/munged.log", f"--seed-file={munge}/munged.seed"])  # fmt: skip
        self._wait(lambda: (munge / "munge.socket").exists(), timeout, "munged did not open its socket")
        self._spawn(["slurmctld", "-D", "-i", "-f", str(self.conf)])
        self._spawn(["slurmd", "-D", "-N", node, "-f", str(self.conf)])
        self._wait(lambda: self.node_state() == "idle", timeout, "the node did not become idle")
        return self

    def node_state(self) -> str:
        out = subprocess.run(["sinfo", "-h", "-o", "%T"], env=self.env, capture_output=True, text=True)
        return out.stdout.strip()

    def stop(self) -> None:
        for process in reversed(self.processes):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in reversed(self.processes):
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self.remove_on_stop:
            shutil.rmtree(self.folder, ignore_errors=True)

    def _spawn(self, command: list[str]) -> None:
        log = open(self.folder / f"{command[0] if command[0] != 'runuser' else 'munged'}.out", "ab")  # noqa: SIM115
        self.processes.append(subprocess.Popen(command, env=self.env, stdout=log, stderr=subprocess.STDOUT))

    def _wait(self, ready, timeout: float, message: str) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            if time.monotonic() > deadline or any(p.poll() is not None for p in self.processes):
                logs = "".join(p.read_text()[-1500:] for p in sorted(self.folder.rglob("*.log")))
                self.stop()
                raise RuntimeError(f"{message}; logs in {self.folder}:\n{logs}")
            time.sleep(0.5)


if __name__ == "__main__":
    # Ctrl-C or SIGTERM stops the cluster; SIGINT explicitly, since a shell starts background jobs with it ignored
    for stop_signal in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop_signal, signal.default_int_handler)
    cluster = SlurmCluster(Path(sys.argv[1])).start()
    print(f"export SLURM_CONF={cluster.conf}   # node {cluster.node_state()}; Ctrl-C or kill stops it", flush=True)
    try:
        signal.pause()
    except KeyboardInterrupt:
        cluster.stop()

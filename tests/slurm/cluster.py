"""A real single-node Slurm cluster for the tests: munged, slurmctld and slurmd started by hand.

Debian's slurm-wlm and munge run without systemd from a generated slurm.conf in a temporary folder, on free
ports, so two clusters (two test sessions) on one machine never meet. `SLURM_CONF` points the client tools
(sbatch, squeue, scontrol) at it.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

DAEMONS = ("munged", "slurmctld", "slurmd")
TOOLS = ("sbatch", "squeue", "scontrol", "sinfo")


def missing_programs() -> List[str]:
    paths = os.environ.get("PATH", "") + os.pathsep + "/usr/sbin" + os.pathsep + "/sbin"
    return [p for p in DAEMONS + TOOLS if shutil.which(p, path=paths) is None]


def _which(name: str) -> str:
    found = shutil.which(name, path=os.environ.get("PATH", "") + os.pathsep + "/usr/sbin" + os.pathsep + "/sbin")
    if not found:
        raise RuntimeError(f"{name} is not installed (apt-get install slurm-wlm munge)")
    return found


def _free_ports(n: int) -> List[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _node_line() -> str:
    """This machine's real hardware as slurmd sees it, so the node is never drained for a mismatch."""
    out = subprocess.run([_which("slurmd"), "-C"], capture_output=True, text=True, timeout=30).stdout
    line = next((ln for ln in out.splitlines() if ln.startswith("NodeName=")), "")
    fields = [f for f in line.split()[1:] if not f.startswith("UpTime")]
    if not fields:
        fields = [f"CPUs={os.cpu_count() or 1}"]
    return "NodeName=localhost NodeAddr=127.0.0.1 NodeHostname=localhost " + " ".join(fields) + " State=UNKNOWN"


class Cluster:
    def __init__(self, base: Optional[str] = None) -> None:
        self.dir = Path(base or tempfile.mkdtemp(prefix="exprag-slurm-"))
        self.conf = self.dir / "slurm.conf"
        self.procs: Dict[str, subprocess.Popen] = {}
        self.started_in_s: Optional[float] = None

    @property
    def env(self) -> Dict[str, str]:
        return {"SLURM_CONF": str(self.conf)}

    def log(self, name: str) -> str:
        p = self.dir / f"{name}.log"
        return p.read_text(errors="replace")[-3000:] if p.exists() else ""

    def write_config(self) -> None:
        d = self.dir
        for sub in ("state", "spool", "munge"):
            (d / sub).mkdir(mode=0o700, exist_ok=True)
        key = d / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        ctld_port, d_port = _free_ports(2)
        self.conf.write_text(f"""\
ClusterName=exprag
SlurmctldHost=localhost
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={d}/munge/munge.socket
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool
SlurmctldPidFile={d}/slurmctld.pid
SlurmdPidFile={d}/slurmd.pid
SlurmctldLogFile={d}/slurmctld.log
SlurmdLogFile={d}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/builtin
SchedulerParameters=batch_sched_delay=0
JobRequeue=1
ReturnToService=2
MpiDefault=none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MinJobAge=600
KillWait=2
InactiveLimit=0
SlurmctldTimeout=30
SlurmdTimeout=30
{_node_line()}
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
""")

    def _spawn(self, name: str, args: List[str]) -> None:
        out = open(self.dir / f"{name}.stdout", "wb")
        env = dict(os.environ, SLURM_CONF=str(self.conf))
        self.procs[name] = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env,
                                            start_new_session=True)
        out.close()

    def run(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
        env = dict(os.environ, SLURM_CONF=str(self.conf))
        # in the cluster's folder: a job's default slurm-<id>.out lands there, not in the checkout
        return subprocess.run(list(args), capture_output=True, text=True, env=env, timeout=timeout, cwd=self.dir)

    def start(self, timeout: float = 60) -> None:
        t0 = time.monotonic()
        self.write_config()
        d = self.dir
        sock = str(d / "munge" / "munge.socket")
        self._spawn("munged", [_which("munged"), "--foreground", "--force", f"--socket={sock}",
                               f"--key-file={d}/munge/munge.key", f"--log-file={d}/munged.log",
                               f"--pid-file={d}/munge/munged.pid", f"--seed-file={d}/munge/munged.seed"])
        self._wait(lambda: os.path.exists(sock), timeout, "munged did not create its socket")
        self._spawn("slurmctld", [_which("slurmctld"), "-D", "-i", "-f", str(self.conf)])
        self._spawn("slurmd", [_which("slurmd"), "-D", "-N", "localhost", "-f", str(self.conf)])
        self._wait(self._node_idle, timeout, "the node never became idle in sinfo")
        self.started_in_s = time.monotonic() - t0

    def _node_idle(self) -> bool:
        for name, p in self.procs.items():
            if p.poll() is not None:
                raise RuntimeError(f"{name} exited with {p.returncode}:\n{self.log(name)}\n"
                                   f"{(self.dir / (name + '.stdout')).read_text(errors='replace')[-2000:]}")
        r = self.run("sinfo", "-h", "-N", "-o", "%T")
        return r.returncode == 0 and r.stdout.strip() == "idle"

    def _wait(self, ok, timeout: float, what: str) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if ok():
                return
            time.sleep(0.2)
        raise RuntimeError(f"{what} within {timeout:.0f}s; slurmctld log:\n{self.log('slurmctld')}\n"
                           f"slurmd log:\n{self.log('slurmd')}")

    def job_state(self, job_id: str) -> str:
        r = self.run("scontrol", "-o", "show", "job", job_id)
        for field in r.stdout.split():
            if field.startswith("JobState="):
                return field.split("=", 1)[1]
        return ""

    def wait_job(self, job_id: str, timeout: float = 60) -> str:
        """Wait until every task of the job has ended; returns the last state seen."""
        end = time.monotonic() + timeout
        state = ""
        while time.monotonic() < end:
            r = self.run("squeue", "-h", "-j", job_id, "-o", "%T")
            if r.returncode == 0 and not r.stdout.strip():
                return self.job_state(job_id)
            state = r.stdout.strip()
            time.sleep(0.2)
        raise TimeoutError(f"job {job_id} still {state!r} after {timeout:.0f}s")

    def requeue(self, job: str, timeout: float = 60) -> None:
        """`scontrol requeue JOB`, then let it start again at once (Slurm holds a requeued job back a while)."""
        r = self.run("scontrol", "requeue", job)
        if r.returncode != 0:
            raise RuntimeError(f"scontrol requeue {job}: {r.stderr.strip()}")
        requeued = time.monotonic()
        seen_pending = False
        end = requeued + timeout
        while time.monotonic() < end:
            state = self.run("squeue", "-h", "-j", job, "-o", "%T").stdout.strip()
            if state == "PENDING":
                seen_pending = True
                # slurmd refuses a credential issued in the same second as the old one's revocation
                if time.monotonic() - requeued > 2.5:
                    self.run("scontrol", "update", f"JobId={job}", "StartTime=now")
            elif seen_pending and state != "COMPLETING":
                return
            time.sleep(0.2)
        raise TimeoutError(f"requeued job {job} did not start again within {timeout:.0f}s")

    def stop(self) -> None:
        for name in reversed(DAEMONS):
            p = self.procs.get(name)
            if p is None or p.poll() is not None:
                continue
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=5)
        # job steps slurmd started live in their own sessions: end whatever is left of ours
        self._kill_strays()
        if not os.environ.get("EXPRAG_PLUS_KEEP_SLURM"):  # set it to read the daemons' logs afterwards
            shutil.rmtree(self.dir, ignore_errors=True)

    def _kill_strays(self) -> None:
        """slurmstepd processes of this cluster (found by our spool folder in their command line)."""
        marker = str(self.dir).encode()
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if b"slurmstepd" in cmd and marker in cmd:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except ProcessLookupError:
                    pass

"""A real one-node Slurm cluster on localhost for the tests: munged, slurmctld and slurmd
from Debian's ``slurm-wlm``/``munge`` packages, every file (munge key and socket,
slurm.conf, state, spool, logs) in one temporary directory, on free ports.

    cluster = LocalSlurm(tmp_dir).start()   # raises SlurmUnavailable with the reason
    env = cluster.env                        # {"SLURM_CONF": ...} for sbatch/scontrol/...
    cluster.stop()

Known to work with slurm-wlm 22.05 (Debian 12) as root: ``SlurmUser=root``,
``ProctrackType=proctrack/linuxproc``, ``TaskPlugin=task/none``, no accounting daemon
(job states come from scontrol, not sacct). The daemons run under ``nice -n 19`` and so
do the jobs they start (slurmd's priority is inherited).
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "squeue", "scontrol", "scancel", "sinfo", "srun")


class SlurmUnavailable(RuntimeError):
    """The cluster cannot start here; the message says why."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _which(name: str) -> str | None:
    return shutil.which(name) or next((str(p) for d in ("/usr/sbin", "/sbin", "/usr/bin")
                                       if (p := Path(d) / name).is_file()), None)


class LocalSlurm:
    def __init__(self, base: str | os.PathLike, cpus: int | None = None):
        self.base = Path(base)
        self.cpus = cpus or max(1, os.cpu_count() or 1)
        self.node = socket.gethostname().split(".")[0]
        self.procs: list[subprocess.Popen] = []
        self.conf = self.base / "slurm.conf"
        self.env = {"SLURM_CONF": str(self.conf)}

    # ------------------------------------------------------------- start
    def check(self) -> None:
        missing = [n for n in (*DAEMONS, *CLIENTS) if _which(n) is None]
        if missing:
            raise SlurmUnavailable(f"not installed: {', '.join(missing)} (apt-get install slurm-wlm munge)")
        if os.geteuid() != 0:
            raise SlurmUnavailable("slurmd must run as root (SlurmUser=root) and this is not root")
        try:
            socket.gethostbyname(self.node)
        except OSError:
            raise SlurmUnavailable(f"the host name {self.node!r} does not resolve") from None

    def start(self, timeout_s: float = 60.0) -> "LocalSlurm":
        self.check()
        b = self.base
        for d in ("munge", "state", "spool", "log"):
            (b / d).mkdir(parents=True, exist_ok=True)
        (b / "munge").chmod(0o700)
        key = b / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o600)
        sock = b / "munge" / "munge.sock"
        if len(str(sock)) > 100:
            raise SlurmUnavailable(f"temporary path too long for a unix socket: {sock}")
        self._spawn("munged", [_which("munged"), "-F", "--force", f"--socket={sock}", f"--key-file={key}",
                               f"--pid-file={b / 'munge' / 'munged.pid'}", f"--log-file={b / 'log' / 'munged.log'}",
                               f"--seed-file={b / 'munge' / 'seed'}"])
        self._wait(lambda: sock.exists(), 15, "munged did not create its socket")
        ctld_port, d_port = _free_port(), _free_port()
        (b / "plugstack.conf").write_text("")
        self.conf.write_text("\n".join([
            "ClusterName=minbert-test",
            f"SlurmctldHost={self.node}(127.0.0.1)",
            "SlurmUser=root", "SlurmdUser=root",
            f"SlurmctldPort={ctld_port}", f"SlurmdPort={d_port}",
            "AuthType=auth/munge", f"AuthInfo=socket={sock}", "CredType=cred/munge",
            f"StateSaveLocation={b / 'state'}", f"SlurmdSpoolDir={b / 'spool'}",
            f"SlurmctldPidFile={b / 'slurmctld.pid'}", f"SlurmdPidFile={b / 'slurmd.pid'}",
            f"SlurmctldLogFile={b / 'log' / 'slurmctld.log'}", f"SlurmdLogFile={b / 'log' / 'slurmd.log'}",
            f"PlugStackConfig={b / 'plugstack.conf'}",
            "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none",
            "SchedulerType=sched/builtin", "SelectType=select/cons_tres", "SelectTypeParameters=CR_CPU",
            "JobAcctGatherType=jobacct_gather/none", "AccountingStorageType=accounting_storage/none",
            "MpiDefault=none", "ReturnToService=2", "SlurmdParameters=config_overrides",
            "JobRequeue=1", "KillWait=5", "MinJobAge=600", "InactiveLimit=0",
            f"NodeName={self.node} NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory=2000 State=UNKNOWN",
            "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
            ""]))
        self._spawn("slurmctld", [_which("slurmctld"), "-D", "-i", "-f", str(self.conf)])
        self._spawn("slurmd", [_which("slurmd"), "-D", "-N", self.node, "-f", str(self.conf)])

        def idle() -> bool:
            out = self.run(["sinfo", "-h", "-o", "%T"], check=False)
            return out.returncode == 0 and out.stdout.strip() in ("idle", "mixed", "allocated")
        self._wait(idle, timeout_s, "the node did not become idle")
        return self

    def _spawn(self, name: str, argv: list[str]) -> None:
        log = (self.base / "log" / f"{name}.out").open("ab")
        proc = subprocess.Popen(["nice", "-n", "19", *argv], stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env={**os.environ, **self.env}, start_new_session=True)
        log.close()
        self.procs.append(proc)
        time.sleep(0.3)
        if proc.poll() is not None:
            self.stop()
            raise SlurmUnavailable(f"{name} exited at once:\n{self.logs()}")

    def _wait(self, predicate, timeout_s: float, what: str) -> None:
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            if predicate():
                return
            if any(p.poll() is not None for p in self.procs):
                break
            time.sleep(0.5)
        logs = self.logs()
        self.stop()
        raise SlurmUnavailable(f"{what}:\n{logs}")

    def logs(self, n: int = 30) -> str:
        out = []
        for f in sorted((self.base / "log").glob("*")):
            lines = f.read_text(errors="replace").splitlines()[-n:]
            out.append(f"--- {f.name}\n" + "\n".join(lines))
        return "\n".join(out)

    # -------------------------------------------------------------- use
    def run(self, argv: list[str], check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                             env={**os.environ, **self.env})
        if check and out.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)}: {out.stderr.strip()}")
        return out

    def stop(self) -> None:
        """Cancel every job, then stop the daemons this object started (by their pids)."""
        if self.procs and all(p.poll() is None for p in self.procs):
            try:
                self.run(["scancel", "--user=root"], check=False, timeout=10)
                time.sleep(1)
            except (OSError, subprocess.TimeoutExpired):
                pass
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self.procs = []

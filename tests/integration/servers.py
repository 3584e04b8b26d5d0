"""Throwaway servers for outage tests: a redis-server and a PostgreSQL cluster per test module.

The outage tests stop, SIGKILL and restart these servers, so they never touch the shared Redis
(127.0.0.1:6379) or PostgreSQL (127.0.0.1:5432) that other tests use. Each server gets a free
port and its own directory under a temp dir, and is stopped (SIGKILL, then removed) at the end.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def free_port() -> int:
    """A TCP port nobody listens on right now (bound to 127.0.0.1 then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_port(port: int, timeout: float, *, up: bool = True) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_open(port) == up:
            return
        time.sleep(0.05)
    raise AssertionError(f"port {port} not {'open' if up else 'closed'} after {timeout}s")


class RedisServer:
    """One ``redis-server`` on a free port with its data in ``dir``.

    ``aof=True``: ``--appendonly yes --appendfsync everysec`` (what production uses);
    ``aof=False``: no persistence at all, so a restart starts empty. RDB snapshots are off in
    both cases (``--save ""``) so only the AOF setting decides what survives.
    """

    def __init__(self, directory: Path, *, aof: bool, port: int | None = None) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.aof = aof
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @staticmethod
    def available() -> str | None:
        return None if shutil.which("redis-server") else "redis-server is not installed"

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self, timeout: float = 15) -> None:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        log = open(self.dir / f"redis-{self.starts}.log", "wb")
        cmd = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
               "--dir", str(self.dir), "--save", "",
               "--appendonly", "yes" if self.aof else "no",
               "--appendfsync", "everysec", "--maxmemory-policy", "noeviction"]
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self.starts += 1
        deadline = time.monotonic() + timeout
        import redis

        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("redis-server exited: "
                                     + (self.dir / f"redis-{self.starts - 1}.log").read_text())
            try:
                # LOADING replies (an AOF replay in progress) raise BusyLoadingError
                redis.Redis(port=self.port, socket_connect_timeout=0.5).ping()
                return
            except redis.exceptions.RedisError:
                time.sleep(0.05)
        raise AssertionError(f"redis-server on {self.port} not ready after {timeout}s")

    def kill(self) -> None:
        """SIGKILL: no shutdown save, no AOF rewrite; what reached the AOF file survives."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        wait_port(self.port, 10, up=False)

    def close(self) -> None:
        self.kill()


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    which = shutil.which("initdb")
    return Path(which).parent if which else None


class PgCluster:
    """A throwaway PostgreSQL cluster (``initdb -A trust``) on a free port.

    initdb refuses to run as root, so as root every server command runs as the ``postgres``
    user through ``runuser``; the cluster directory is a fresh temp dir owned by that user.
    """

    def __init__(self) -> None:
        self.bin = _pg_bin()
        self.port = free_port()
        self.base = Path(tempfile.mkdtemp(prefix="tryon-pg-"))
        self.data = self.base / "data"
        self.sock = self.base / "sock"
        self.log = self.base / "server.log"
        self._as_root = os.geteuid() == 0

    @staticmethod
    def available() -> str | None:
        b = _pg_bin()
        if b is None:
            return "PostgreSQL server binaries (initdb) are not installed"
        if os.geteuid() == 0 and not shutil.which("runuser"):
            return "running as root without runuser: initdb cannot run"
        if os.geteuid() == 0:
            try:
                import pwd

                pwd.getpwnam("postgres")
            except KeyError:
                return "running as root and there is no postgres user for initdb"
        return None

    def _run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        cmd = list(args)
        if self._as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)

    def init(self) -> None:
        self.sock.mkdir()
        if self._as_root:
            import pwd

            pw = pwd.getpwnam("postgres")
            for p in (self.base, self.sock):
                os.chown(p, pw.pw_uid, pw.pw_gid)
        assert self.bin is not None
        r = self._run(str(self.bin / "initdb"), "-A", "trust", "-U", "postgres", "-D",
                      str(self.data), "--no-sync", timeout=120)
        if r.returncode != 0:
            raise AssertionError(f"initdb failed: {r.stdout}\n{r.stderr}")
        with open(self.data / "postgresql.conf", "a") as f:
            # small and fast: a test cluster, fsync off (durability is not under test here)
            f.write("\nfsync = off\nfull_page_writes = off\nshared_buffers = 16MB\n"
                    "max_connections = 60\n")

    def _ctl(self, *args: str, timeout: float = 60) -> None:
        assert self.bin is not None
        opts = f"-p {self.port} -k {self.sock} -c listen_addresses=127.0.0.1"
        r = self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.log),
                      "-o", opts, "-w", "-t", str(int(timeout)), *args, timeout=timeout + 10)
        if r.returncode != 0:
            raise AssertionError(f"pg_ctl {args} failed: {r.stdout}\n{r.stderr}\n"
                                 + (self.log.read_text()[-2000:] if self.log.exists() else ""))

    def start(self) -> None:
        self._ctl("start")

    def stop(self, mode: str = "fast") -> None:
        self._ctl("stop", "-m", mode)

    def restart(self, mode: str = "immediate") -> None:
        self._ctl("restart", "-m", mode)

    def dsn(self, dbname: str = "postgres") -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname={dbname}"

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{dbname}"

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.dsn(), autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def close(self) -> None:
        try:
            if (self.data / "postmaster.pid").exists():
                self._ctl("stop", "-m", "immediate", timeout=30)
        except AssertionError:
            pass
        shutil.rmtree(self.base, ignore_errors=True)

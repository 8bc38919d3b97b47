"""A throwaway PostgreSQL cluster for tests: `initdb` into a temporary folder, `pg_ctl` on a free port.

Nothing is started by hand and nothing outlives the block: the cluster is stopped (fast shutdown)
and its folder removed on exit. As root, the server runs as the `postgres` user (PostgreSQL refuses
to run as root); Debian's `postgresql` package provides both the binaries and that user.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Generator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

__all__ = ["PostgresCluster", "find_pg_bin", "postgres_cluster"]


@dataclass(frozen=True, slots=True)
class PostgresCluster:
    """A running throwaway cluster: where it listens and how to make databases in it."""

    host: str
    port: int
    user: str
    bin_dir: Path
    data_dir: Path | None = None
    """The cluster's data folder: with it, `stop` and `start` can take the server down and back."""
    options: str = ""
    log_file: Path | None = None
    run_as: tuple[str, ...] = ()

    def stop(self) -> None:
        """Stop the server (fast shutdown: clients are disconnected), keeping its data for `start`."""
        _run([*self.run_as, str(self.bin_dir / "pg_ctl"), "-D", str(self._data()), "-m", "fast", "-w", "stop"])

    def start(self) -> None:
        """Start the server again on the same port, with the same data."""
        log = str(self.log_file or self._data().parent / "server.log")
        pg_ctl = [*self.run_as, str(self.bin_dir / "pg_ctl"), "-D", str(self._data())]
        _run([*pg_ctl, "-o", self.options, "-w", "-t", "60", "-l", log, "start"])

    def running(self) -> bool:
        """True while the server runs (`pg_ctl status`)."""
        status = [*self.run_as, str(self.bin_dir / "pg_ctl"), "-D", str(self._data()), "status"]
        return subprocess.run(status, capture_output=True, check=False).returncode == 0

    def _data(self) -> Path:
        if self.data_dir is None:
            raise RuntimeError("this cluster was not started by postgres_cluster(): it cannot be stopped or started")
        return self.data_dir

    def dsn(self, database: str = "postgres") -> str:
        """A `postgresql://` URL for `database` on this cluster (trust auth on loopback)."""
        return f"postgresql://{self.user}@{self.host}:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """Create database `name` and return its URL."""
        subprocess.run(
            [str(self.bin_dir / "createdb"), "-h", self.host, "-p", str(self.port), "-U", self.user, name],
            check=True,
            capture_output=True,
        )
        return self.dsn(name)


def find_pg_bin() -> Path | None:
    """The folder holding `initdb` and `pg_ctl`: on PATH, else Debian's /usr/lib/postgresql/N/bin."""
    found = shutil.which("initdb")
    if found:
        return Path(os.path.realpath(found)).parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return Path(versions[-1]).parent if versions else None


@contextmanager
def postgres_cluster() -> Generator[PostgresCluster]:
    """Start a private cluster on 127.0.0.1 and a free port; stop it and remove its folder on exit."""
    bin_dir = find_pg_bin()
    if bin_dir is None:
        raise RuntimeError("PostgreSQL is not installed: initdb not found (Debian: apt-get install postgresql)")
    as_root = os.geteuid() == 0
    run_as: list[str] = ["runuser", "-u", "postgres", "--"] if as_root else []
    user = "postgres" if as_root else pwd.getpwuid(os.geteuid()).pw_name
    folder = Path(tempfile.mkdtemp(prefix="agentplex-pg-"))
    data, sockets = folder / "data", folder / "sock"
    sockets.mkdir()
    if as_root:
        postgres = pwd.getpwnam("postgres")
        for path in (folder, sockets):
            os.chown(path, postgres.pw_uid, postgres.pw_gid)
    port = _free_port()
    options = f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={sockets} -c fsync=off"
    try:
        _run([*run_as, str(bin_dir / "initdb"), "-D", str(data), "-U", user, "-A", "trust", "-E", "UTF8", "--no-sync"])
        log = str(folder / "server.log")
        _run([*run_as, str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options, "-w", "-t", "60", "-l", log, "start"])
        cluster = PostgresCluster(
            host="127.0.0.1",
            port=port,
            user=user,
            bin_dir=bin_dir,
            data_dir=data,
            options=options,
            log_file=Path(log),
            run_as=tuple(run_as),
        )
        try:
            yield cluster
        finally:
            if cluster.running():
                cluster.stop()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _run(argv: list[str]) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        program = next(Path(a).name for a in argv if a.startswith("/"))
        last = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["(no output)"]
        raise RuntimeError(f"{program} failed: {last[0]}")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])

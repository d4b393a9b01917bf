"""A throwaway PostgreSQL server for tests and benchmarks (the server binaries of the
``postgresql`` package: ``initdb``, ``pg_ctl``).

::

    server = PostgresServer(tmp_dir)
    server.start()                 # initdb on first start, then listens on 127.0.0.1
    store = phx.PostgresStore(server.url)
    ...
    server.stop()                  # pg_ctl stop -m fast; start() again brings it back

The cluster lives in a temporary directory, listens only on 127.0.0.1 (a free port,
and its socket in the same directory), trusts local connections, and runs as the
``postgres`` system user when this process is root (PostgreSQL refuses to run as
root; the Debian package creates that user). ``durable=False`` turns off fsync: much
faster, and fine for tests, but never for a benchmark's figures.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
from pathlib import Path

__all__ = ["PostgresServer", "find_postgres_bin"]


def find_postgres_bin() -> Path | None:
    """The directory of the PostgreSQL server binaries (``None``: not installed)."""
    found = shutil.which("initdb")
    if found is not None:
        return Path(found).resolve().parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                      key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    return Path(versions[-1]).parent if versions else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresServer:
    """One PostgreSQL cluster in ``base_dir`` (see the module).

    Raises (from :meth:`start`):
        RuntimeError: the binaries are missing, the ``postgres`` user is missing while
            running as root, or the server did not start (the message ends with its log).
    """

    def __init__(self, base_dir: str | os.PathLike[str], *, durable: bool = False,
                 user: str = "phx") -> None:
        self.base_dir = Path(base_dir)
        self.data_dir = self.base_dir / "data"
        self.log_path = self.base_dir / "postgres.log"
        self.durable = durable
        self.user = user
        self.port = 0
        self._bin = find_postgres_bin()

    @property
    def url(self) -> str:
        """``postgresql://USER@127.0.0.1:PORT/postgres`` (trust authentication)."""
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/postgres"

    def _as_owner(self, argv: list[str]) -> list[str]:
        if os.geteuid() != 0:
            return argv
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            raise RuntimeError("PostgreSQL refuses to run as root and there is no postgres "
                               "user to run it as (apt-get install postgresql creates it)"
                               ) from None
        return ["runuser", "-u", "postgres", "--", *argv]

    def _run(self, argv: list[str]) -> None:
        done = subprocess.run(self._as_owner(argv), capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, timeout=120)
        if done.returncode != 0:
            log = self.log_path.read_text()[-2000:] if self.log_path.exists() else ""
            raise RuntimeError(f"{Path(argv[0]).name} failed ({done.returncode}): "
                               f"{done.stderr.strip()[-2000:]} {log}")

    def start(self) -> None:
        """Create the cluster on first use, then start the server and wait until it
        accepts connections (on the same port after a :meth:`stop`)."""
        if self._bin is None:
            raise RuntimeError("PostgreSQL server binaries (initdb) not found: apt-get "
                               "install postgresql (scripts/ensure-system-deps.sh)")
        self.base_dir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.base_dir, "postgres")
        if not self.data_dir.exists():
            self._run([str(self._bin / "initdb"), "-D", str(self.data_dir), "-A", "trust",
                       "-U", self.user, "-E", "UTF8", "--no-sync", "--no-instructions"])
        if not self.port:
            self.port = _free_port()
        options = (f"-p {self.port} -k {self.base_dir} -c listen_addresses=127.0.0.1"
                   f" -c max_connections=50{'' if self.durable else ' -c fsync=off'}")
        self._run([str(self._bin / "pg_ctl"), "start", "-w", "-t", "60", "-D",
                   str(self.data_dir), "-l", str(self.log_path), "-o", options])

    def stop(self) -> None:
        """Stop the server now (``pg_ctl stop -m fast``: connections are cut)."""
        if self._bin is not None and (self.data_dir / "postmaster.pid").exists():
            self._run([str(self._bin / "pg_ctl"), "stop", "-w", "-m", "fast", "-D",
                       str(self.data_dir)])

    def __repr__(self) -> str:
        return f"<PostgresServer {self.url} in {self.base_dir}>"

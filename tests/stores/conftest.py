"""A real PostgreSQL server for the store tests, started once per pytest session (per
xdist worker) in a temporary directory on 127.0.0.1 (``phoenix_cluster.testing.postgres``).

Skipped, with the reason, only when the server binaries are missing
(``scripts/ensure-system-deps.sh`` installs them; under CI a skip fails, ``ci_gate``).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator

import pytest

from phoenix_cluster.testing.postgres import PostgresServer, find_postgres_bin


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    if find_postgres_bin() is None:
        pytest.skip("PostgreSQL server binaries (initdb) not found: apt-get install "
                    "postgresql (scripts/ensure-system-deps.sh)")
    # Not under pytest's base temp dir: its 0700 parents would keep out the postgres
    # user the server runs as when the suite runs as root.
    base = tempfile.mkdtemp(prefix="phx-postgres-")
    server = PostgresServer(base)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)

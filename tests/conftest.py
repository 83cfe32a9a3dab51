"""Shared fixtures: the LM Studio simulator on a real loopback port, free ports, and PostgreSQL clusters."""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from proxy.simulator import Simulator

# Fast defaults: tokens as fast as possible, near-instant loads and prompt processing.
FAST = {"tokens_per_second": 0.0, "load_seconds": 0.05, "prompt_seconds": 0.0}


class _ErrorCollector(logging.Handler):
    """Collects ERROR records from the simulator's server (exceptions inside it never reach pytest)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def simulator_factory() -> Iterator[Callable[..., Simulator]]:
    """Start simulators with custom options (fast by default); all are stopped at teardown, and any
    error logged inside them fails the test."""
    started: list[Simulator] = []
    collector = _ErrorCollector()
    loggers = [logging.getLogger(name) for name in ("uvicorn.error", "proxy.simulator")]
    for logger in loggers:
        logger.addHandler(collector)

    def start(**options: Any) -> Simulator:
        sim = Simulator(**{**FAST, **options}).start()
        started.append(sim)
        return sim

    try:
        yield start
    finally:
        for sim in started:
            sim.stop()
        for logger in loggers:
            logger.removeHandler(collector)
    errors = [collector.format(r) for r in collector.records]
    assert not errors, f"the simulator logged errors: {errors}"


@pytest.fixture
def simulator(simulator_factory: Callable[..., Simulator]) -> Simulator:
    """A started simulator with the default models, generating as fast as possible."""
    return simulator_factory()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def free_port() -> Callable[[], int]:
    """Returns a function giving a currently free loopback port (for subprocesses that need --port)."""
    return _free_port


# -- PostgreSQL: throwaway clusters for the tests that run the store on both engines ------------
#
# A cluster is `initdb` in a temp folder, started by `pg_ctl` on a free loopback port (its unix
# socket in the same folder), with fsync off; it is stopped and deleted at the end. initdb and
# the server refuse to run as root, so as root they run as the `postgres` user (which Debian's
# package creates), else `nobody`. Without PostgreSQL's binaries those tests skip, saying so;
# scripts/test.sh installs them.


def _postgres_bindir() -> Path | None:
    """Where initdb and pg_ctl are: on PATH, else Debian's versioned folder (newest first)."""
    on_path = shutil.which("initdb")
    candidates = [Path(on_path).resolve().parent] if on_path else []
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: p.parent.name, reverse=True)
    return next((d for d in candidates if (d / "initdb").exists() and (d / "pg_ctl").exists()), None)


def _unprivileged_user() -> str | None:
    """The user to run PostgreSQL as when we are root (None when we are not)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        return name
    raise RuntimeError("running as root, and there is no 'postgres' or 'nobody' user to run PostgreSQL as")


class PostgresCluster:
    """One PostgreSQL server of our own; `url()` makes a fresh database on it."""

    USER = "proxy_test"

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="lmstudio-proxy-pg-"))
        self.data = self.root / "data"
        self.port = _free_port()
        self.run_as = _unprivileged_user()
        self.databases = 0
        if self.run_as is not None:
            entry = pwd.getpwnam(self.run_as)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        self._run("initdb", "-D", str(self.data), "-U", self.USER, "--auth=trust", "--locale=C", "--encoding=UTF8",
                  "--no-sync", "--no-instructions")  # fmt: skip
        self.start()

    def _run(self, tool: str, *args: str) -> None:
        command = [str(self.bindir / tool), *args]
        if self.run_as is not None:
            command = ["runuser", "-u", self.run_as, "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, cwd=self.root, timeout=120)
        if done.returncode != 0:
            log = self.root / "server.log"
            server = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"{tool} failed ({done.returncode}): {done.stdout}{done.stderr}{server}")

    def start(self) -> None:
        options = f"-F -k {self.root} -p {self.port} -c listen_addresses=127.0.0.1"
        self._run("pg_ctl", "start", "-D", str(self.data), "-l", str(self.root / "server.log"), "-w", "-o", options)

    def stop(self) -> None:
        self._run("pg_ctl", "stop", "-D", str(self.data), "-m", "fast", "-w")

    def admin_url(self, database: str = "postgres") -> str:
        return f"postgresql://{self.USER}@127.0.0.1:{self.port}/{database}"

    def url(self) -> str:
        """A new, empty database."""
        import psycopg

        self.databases += 1
        name = f"test_{self.databases}"
        with psycopg.connect(self.admin_url(), autocommit=True) as admin:
            # FILE_COPY: a few times faster than WAL_LOG's block-by-block copy, with fsync off.
            admin.execute(f'CREATE DATABASE "{name}" TEMPLATE template0 STRATEGY FILE_COPY')
        return self.admin_url(name)

    def drop(self, url: str) -> None:
        import psycopg

        name = url.rsplit("/", 1)[1]
        with psycopg.connect(self.admin_url(), autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def close(self) -> None:
        with contextlib.suppress(RuntimeError):  # not running
            self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_factory() -> Iterator[Callable[[], PostgresCluster]]:
    """Start PostgreSQL clusters of our own (skips without PostgreSQL's binaries); all stop at the end."""
    bindir = _postgres_bindir()
    missing = None
    if bindir is None:
        missing = "PostgreSQL's initdb and pg_ctl were not found (scripts/test.sh installs Debian's postgresql)"
    else:
        try:
            import psycopg  # noqa: F401
        except ImportError:
            missing = "psycopg is not installed (pip install -e '.[dev]' installs it)"
    if missing is not None:
        if os.environ.get("CI"):  # CI installs both: there, a skip would hide a broken install
            pytest.fail(missing)
        pytest.skip(missing)
    assert bindir is not None
    clusters: list[PostgresCluster] = []

    def make() -> PostgresCluster:
        clusters.append(PostgresCluster(bindir))
        return clusters[-1]

    try:
        yield make
    finally:
        for cluster in clusters:
            cluster.close()


@pytest.fixture(scope="session")
def postgres(postgres_factory: Callable[[], PostgresCluster]) -> PostgresCluster:
    """The session's PostgreSQL cluster (a test that stops its server makes its own: `postgres_factory`)."""
    return postgres_factory()


@pytest.fixture
def postgres_url(postgres: PostgresCluster) -> Iterator[str]:
    """A fresh PostgreSQL database for one test, dropped after it."""
    url = postgres.url()
    yield url
    postgres.drop(url)


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database, on each engine: a SQLite file, or a PostgreSQL URL."""
    if request.param == "sqlite":
        return str(tmp_path / "store.sqlite3")
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture(scope="session")
def postgres_migrated(postgres: PostgresCluster) -> str:
    """A database the store's tests share, migrated once and emptied after each test (`store_database`)."""
    from proxy.store import Store

    url = postgres.url()
    Store(url).close()
    return url


@pytest.fixture(params=["sqlite", "postgresql"])
def store_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A migrated database with no rows, on each engine. On PostgreSQL it is one database emptied
    after each test (about 15 ms, where a new database and its migrations take about 200)."""
    if request.param == "sqlite":
        yield str(tmp_path / "store.sqlite3")
        return
    url: str = request.getfixturevalue("postgres_migrated")  # skips without PostgreSQL or psycopg
    import psycopg

    yield url
    with psycopg.connect(url, autocommit=True) as db:
        kept = ("migrations", "settings")  # the schema's record, and the files' signing key
        listed = "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() ORDER BY tablename"
        tables = [name for (name,) in db.execute(listed).fetchall() if name not in kept]
        db.execute(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY")

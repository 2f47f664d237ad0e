"""Throw-away database servers for the store tests, started on loopback by the tests.

PostgreSQL
    Debian's server binaries (``/usr/lib/postgresql/<version>/bin``, installed by
    ``scripts/install-test-servers.sh``). :class:`PostgresServer` runs ``initdb`` into a
    private temporary folder (``-A trust -U postgres``), starts it on ``127.0.0.1`` on a
    free port with its socket in the same folder and ``fsync=off``, and creates one
    database. ``initdb`` and ``postgres`` refuse to run as root, so when the tests run as
    root (as in CI) the server runs as the unprivileged ``postgres`` account (created by
    the Debian package, or by the install script) or else ``nobody``: the temporary folder
    is made in a place that account can reach and is handed to it; the server needs
    nothing else of ours (not the checkout, not ``.venv``).

MongoDB
    No ``mongod`` can be installed here: Debian ships none, and the PyPI/npm helpers that
    provide one download a binary at run time. Candidates evaluated:

    * **nx-27017** (PyPI, MIT; chosen): a MongoDB wire-protocol server written in Python
      on SQLite (NeoSQLite). Installs from PyPI with nothing fetched at run time and talks
      to pymongo over TCP. :class:`MongoServer` starts it with ``--data-dir`` (one SQLite
      file per logical database, so per-test databases are isolated).
    * pymongo-inmemory, mongodb-memory-server (npm): both download ``mongod`` at run time.
    * mongomock / montydb: in-process fakes, not servers; they cannot test connection
      handling, restarts, or several processes sharing one database.

    Gaps met in nx-27017 0.8.1 (what ``taskroll.store.mongo`` does about each):

    * No update pipelines (``[{"$set": ...}]``), so ``$$NOW`` is unavailable; aggregation
      ``$$NOW`` fails too. ``$currentDate`` works but yields BSON dates, and a
      ``datetime`` written by the client comes back as a *string*. The store keeps times
      as float seconds on the server's clock: local time plus an offset measured with
      one ``hello`` (``localTime``) per process and refreshed every 60 s
      (``taskroll.store.mongo_connection.CLOCK_REFRESH_SECONDS``), not a ``hello`` per write.
    * ``$not`` is not implemented; ``$nor``/``$or``/``$and``/``$type``/``$size`` are.
      The store writes "not an array" as ``{"$nor": [{path: {"$type": "array"}}]}``.
    * Equality with a whole embedded document or array fails ("not a valid query
      operation" / "type 'list' is not supported"). Such operands are checked in Python
      on candidates selected by ``$type`` (the store's "residual" conditions).
    * A present ``null`` reads as missing: ``{"$exists": true}`` skips it and
      ``{"$type": "null"}`` matches missing fields. ``$exists`` and ``null`` operands on
      ``filter`` paths are therefore residual (checked in Python) too.
    * Cross-type comparisons follow SQLite, not MongoDB: ``{"$gt": 0}`` matches strings,
      objects and ``true``, and ``{x: 1}`` matches ``true``. The store always adds
      ``$type`` guards (harmless on a real server).
    * A dotted path through a scalar (``filter.x.y`` where ``x`` is ``1``) can raise
      "malformed JSON" or match wrongly; the store guards every prefix with
      ``{"$type": "object"}``. Keys containing quotes break its SQL generation; such paths
      are residual.
    * Collection names must be identifiers (letters, digits, ``_``; no leading digit):
      a pool named ``my-pool`` fails there (a real MongoDB accepts it). Tests use ``_``.
    * Reading a missing collection creates it (empty), so ``list_pools`` lists only
      collections with a taskroll sequence counter or with documents.
    * In ``aggregate``, a ``$match`` with ``$nor`` drops documents whose field is null
      (``find`` gets it right); the store writes ``$ne``/``$nin`` for task fields, which
      are exact on both.
    * No authentication: a URL with credentials makes pymongo fail with a bare
      ``KeyError('payload')`` during SCRAM, so credential tests use unreachable servers.
    * ``localTime`` in ``hello`` has millisecond resolution (as on MongoDB).
    * Throughput is modest (an SQLite file behind asyncio): fine for tests, not a benchmark.

    Set ``TASKROLL_TEST_MONGO_URL`` (or ``TASKROLL_TEST_POSTGRES_URL``) to run the same
    tests against a real server instead; restart tests are skipped then.

Missing servers
    Locally, tests whose server (or driver) is not installed are skipped with an install
    hint. With ``CI=true`` (``1``/``yes``) in the environment they *fail* instead
    (:func:`unavailable`): CI never passes while silently skipping a real component.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import NoReturn, Self

INSTALL_HINT = "run scripts/install-test-servers.sh (and pip install -e '.[dev]')"


class ServerUnavailable(RuntimeError):
    """The binaries a test server needs are not installed."""


def running_in_ci() -> bool:
    """Whether the environment says this is a CI run (``CI=true``, ``1`` or ``yes``)."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def unavailable(message: str) -> NoReturn:
    """Skip the tests that need a missing component, or fail the run when in CI.

    Works in fixtures, tests and at module level (collection).
    """
    import pytest

    if running_in_ci():
        pytest.fail(f"{message} (CI=true: a test server or driver that is not available "
                    "fails the run instead of skipping its tests)", pytrace=False)
    pytest.skip(message, allow_module_level=True)


def require_module(name: str, extra: str) -> None:
    """Make sure a driver module is importable, else :func:`unavailable`."""
    import importlib.util

    if importlib.util.find_spec(name) is None:
        unavailable(f"{name} is not installed; pip install -e '.[dev]' (or taskroll[{extra}])")


def session_server(module: str, extra: str, variable: str,
                   factory: Callable[[], Server]) -> Iterator[Server]:
    """Yield the external server named by ``variable``, else start one from ``factory``.

    Fixture body for session-scoped server fixtures; a server that cannot be had skips
    its tests, or fails them with ``CI=true`` (:func:`unavailable`).
    """
    require_module(module, extra)
    external = os.environ.get(variable)
    if external:
        yield ExternalServer(external)
        return
    try:
        server = factory()
    except ServerUnavailable as error:
        unavailable(str(error))
    try:
        server.start()
        yield server
    finally:
        server.cleanup()


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_for_port(port: int, deadline: float, process: subprocess.Popen[bytes] | None,
                   log: Path) -> None:
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}: {_tail(log)}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.05)
    raise RuntimeError(f"server did not open port {port}: {_tail(log)}")


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _traversable(folder: Path, account: pwd.struct_passwd) -> bool:
    """Whether ``account`` may search (``x``) ``folder`` and every folder above it."""
    groups = {account.pw_gid}
    for path in [folder.resolve(), *folder.resolve().parents]:
        try:
            status = path.stat()
        except OSError:
            return False
        if status.st_uid == account.pw_uid:
            allowed = status.st_mode & 0o100
        elif status.st_gid in groups:
            allowed = status.st_mode & 0o010
        else:
            allowed = status.st_mode & 0o001
        if not allowed:
            return False
    return True


def postgres_bin_dir() -> Path | None:
    """Return the newest ``/usr/lib/postgresql/<version>/bin`` holding ``initdb``, if any."""
    candidates = glob.glob("/usr/lib/postgresql/*/bin/initdb")
    if not candidates:
        found = shutil.which("initdb")
        return Path(found).resolve().parent if found else None
    def version(path: str) -> float:
        try:
            return float(Path(path).parent.parent.name)
        except ValueError:
            return 0.0
    return Path(max(candidates, key=version)).parent


def nx_27017_command() -> list[str] | None:
    """Return the command that runs the nx-27017 server, or ``None`` if not installed."""
    beside = Path(sys.executable).parent / "nx-27017"
    if beside.exists():
        return [str(beside)]
    found = shutil.which("nx-27017")
    return [found] if found else None


class PostgresServer:
    """A private PostgreSQL cluster on 127.0.0.1, created in a temporary folder.

    Attributes:
        port: The TCP port the server listens on (kept across :meth:`restart`).
        database: The database created for the tests.
        url: ``postgresql://postgres@127.0.0.1:<port>/<database>``.
    """

    def __init__(self, database: str = "taskroll_test") -> None:
        """Prepare (not start) a cluster; :meth:`start` runs it.

        Raises:
            ServerUnavailable: When no PostgreSQL server binaries are installed.
        """
        bin_dir = postgres_bin_dir()
        if bin_dir is None:
            raise ServerUnavailable(f"PostgreSQL server binaries not found; {INSTALL_HINT}")
        self.bin_dir = bin_dir
        self.database = database
        self.port = free_port()
        self._account = self._server_account()
        self.folder = Path(tempfile.mkdtemp(prefix="taskroll-pg-", dir=self._base_dir()))
        self.data_dir = self.folder / "data"
        self.log = self.folder / "postgres.log"
        self._initialised = False
        if self._account is not None:
            os.chown(self.folder, self._account.pw_uid, self._account.pw_gid)
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    @staticmethod
    def _server_account() -> pwd.struct_passwd | None:
        """The unprivileged account the server runs as when we are root, else ``None``."""
        if os.geteuid() != 0:
            return None
        for name in ("postgres", "nobody"):
            with contextlib.suppress(KeyError):
                return pwd.getpwnam(name)
        raise ServerUnavailable("running as root and no 'postgres' or 'nobody' account exists; "
                                f"{INSTALL_HINT}")

    def _base_dir(self) -> str | None:
        """Where to make the cluster folder: the temp dir, if the server account can reach it."""
        if self._account is None:
            return None
        for candidate in (tempfile.gettempdir(), "/tmp", "/var/tmp"):
            if _traversable(Path(candidate), self._account):
                return candidate
        raise ServerUnavailable(f"no temporary folder that user {self._account.pw_name!r} can "
                                "reach; set TMPDIR to a world-searchable folder")

    def _run(self, *arguments: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        switch: dict[str, object] = {}
        if self._account is not None:  # drop root for initdb / pg_ctl / postgres
            switch = {"user": self._account.pw_uid, "group": self._account.pw_gid,
                      "extra_groups": [],
                      "env": {**os.environ, "HOME": str(self.folder),
                              "USER": self._account.pw_name, "LOGNAME": self._account.pw_name}}
        result = subprocess.run(list(arguments), capture_output=True, text=True, check=False,
                                cwd=self.folder, timeout=120, **switch)  # type: ignore[call-overload]
        if check and result.returncode != 0:
            raise RuntimeError(
                f"{' '.join(arguments[:2])} failed ({result.returncode}): "
                f"{result.stdout}{result.stderr}{_tail(self.log)}"
            )
        return result

    def start(self) -> None:
        """Initialise the cluster on first use, start it and wait until it accepts connections."""
        if not self._initialised:
            self._run(str(self.bin_dir / "initdb"), "-D", str(self.data_dir), "-A", "trust",
                      "-U", "postgres", "-E", "UTF8", "--locale=C", "--no-sync")
        options = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.folder} -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=300 "
            "-c shared_buffers=32MB"
        )
        self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-l", str(self.log),
                  "-o", options, "-w", "-t", "60", "start")
        if not self._initialised:
            self._create_database()
            self._initialised = True

    def _create_database(self) -> None:
        import psycopg

        admin = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{self.database}"')

    def stop(self) -> None:
        """Stop the server (fast shutdown: open connections are cut)."""
        if self.data_dir.exists():
            self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-m", "fast",
                      "-w", "stop", check=False)

    def restart(self, down_seconds: float = 0.0) -> None:
        """Stop and start again on the same port and data, after ``down_seconds``."""
        self.stop()
        time.sleep(down_seconds)
        self.start()

    def cleanup(self) -> None:
        """Stop the server and delete its folder."""
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.cleanup()


class MongoServer:
    """An nx-27017 MongoDB wire-protocol server on 127.0.0.1, data in a temporary folder.

    Attributes:
        port: The TCP port (kept across :meth:`restart`).
        url: ``mongodb://127.0.0.1:<port>``.
    """

    def __init__(self) -> None:
        """Prepare (not start) the server.

        Raises:
            ServerUnavailable: When nx-27017 is not installed.
        """
        command = nx_27017_command()
        if command is None:
            raise ServerUnavailable(f"the nx-27017 test server is not installed; {INSTALL_HINT}")
        self.command = command
        self.port = free_port()
        self.folder = Path(tempfile.mkdtemp(prefix="taskroll-mongo-"))
        self.log = self.folder / "nx.log"
        self.url = f"mongodb://127.0.0.1:{self.port}"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the server and wait until it answers a ping."""
        arguments = [
            *self.command, "--data-dir", str(self.folder / "data"), "--host", "127.0.0.1",
            "--port", str(self.port), "--log-file", str(self.log),
            "--pid-file", str(self.folder / "nx.pid"),
        ]
        with open(self.folder / "stdout.log", "ab") as output:
            self._process = subprocess.Popen(arguments, stdout=output, stderr=subprocess.STDOUT,
                                             stdin=subprocess.DEVNULL, start_new_session=True)
        _wait_for_port(self.port, time.monotonic() + 60, self._process, self.folder / "stdout.log")
        import pymongo

        client: pymongo.MongoClient[dict[str, object]] = pymongo.MongoClient(
            self.url, serverSelectionTimeoutMS=10_000)
        try:
            client.admin.command("ping")
        finally:
            client.close()

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 10 s)."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)

    def restart(self, down_seconds: float = 0.0) -> None:
        """Stop and start again on the same port and data, after ``down_seconds``."""
        self.stop()
        time.sleep(down_seconds)
        self.start()

    def cleanup(self) -> None:
        """Stop the server and delete its folder."""
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.cleanup()


class ExternalServer:
    """A server given by URL (``TASKROLL_TEST_*_URL``); it cannot be restarted by the tests."""

    def __init__(self, url: str) -> None:
        """Wrap ``url``."""
        self.url = url

    def restart(self, down_seconds: float = 0.0) -> None:
        """Refuse: an external server is not ours to restart.

        Raises:
            ServerUnavailable: Always.
        """
        raise ServerUnavailable("cannot restart an external test server")

    def cleanup(self) -> None:
        """Nothing to clean up."""


Server = PostgresServer | MongoServer | ExternalServer

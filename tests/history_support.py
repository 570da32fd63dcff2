"""Helpers for the scan history tests: a real PostgreSQL, and scan events as gates publish them.

PostgreSQL, in order of preference:
1. ``QRGATE_TEST_PG_URL`` if set (it must work, or the tests fail);
2. the local server at ``postgresql://postgres@127.0.0.1:5432/test``;
3. a private cluster started from the ``postgresql`` package (``initdb`` + ``pg_ctl`` under
   ``/usr/lib/postgresql/*/bin``) in a temporary directory on a free port, run as the
   ``postgres`` (or ``nobody``) user when the tests run as root.
If none works, the test fails saying to ``apt-get install -y postgresql``. Each test gets its
own schema, dropped afterwards, so tests never touch other data.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
import urllib.parse
from collections.abc import Iterator
from datetime import datetime, timezone

import pytest

from firmware.core.model import ScanEvent
from tests.conftest import free_port

LOCAL_PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
INSTALL_HINT = "install PostgreSQL with `sudo apt-get install -y postgresql` (or set QRGATE_TEST_PG_URL)"


def _reachable(url: str) -> str | None:
    import psycopg

    try:
        with psycopg.connect(url, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
        return None
    except psycopg.Error as err:
        return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__


class PrivateCluster:
    """A throwaway PostgreSQL cluster in a temporary directory, on a free loopback port."""

    def __init__(self) -> None:
        bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        if not bins:
            pytest.fail("no PostgreSQL server reachable and no initdb found; " + INSTALL_HINT)
        self.bin_dir = os.path.dirname(bins[-1])
        self.dir = tempfile.mkdtemp(prefix="qrgate-pg-")
        self.data = os.path.join(self.dir, "data")
        self.port = free_port()
        self.user: str | None = None
        if os.geteuid() == 0:  # initdb refuses to run as root
            for name in ("postgres", "nobody"):
                try:
                    pwd.getpwnam(name)
                except KeyError:
                    continue
                self.user = name
                break
            if self.user is None:
                pytest.fail("running as root and no 'postgres' or 'nobody' user to run initdb as; "
                            + INSTALL_HINT)
            entry = pwd.getpwnam(self.user)
            os.chown(self.dir, entry.pw_uid, entry.pw_gid)

    def _run(self, *args: str) -> None:
        cmd = list(args)
        if self.user:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            pytest.fail(f"{' '.join(args[:1])} failed ({done.returncode}): {done.stderr[-800:]}; "
                        + INSTALL_HINT)

    def start(self) -> str:
        self._run(f"{self.bin_dir}/initdb", "-D", self.data, "-A", "trust", "-U", "postgres",
                  "--no-sync", "-E", "UTF8")
        self._run(f"{self.bin_dir}/pg_ctl", "-D", self.data, "-l", os.path.join(self.dir, "log"), "-w",
                  "-t", "60", "-o", f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -F",
                  "start")
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def stop(self) -> None:
        try:
            self._run(f"{self.bin_dir}/pg_ctl", "-D", self.data, "-m", "fast", "-w", "stop")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server_url() -> Iterator[str]:
    """URL of a reachable PostgreSQL server for this test session (see module docstring)."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.fail("psycopg is not installed; run `.venv/bin/pip install -e '.[test]'`")
    wanted = os.environ.get("QRGATE_TEST_PG_URL")
    if wanted:
        problem = _reachable(wanted)
        if problem:
            pytest.fail(f"QRGATE_TEST_PG_URL is set but unreachable ({problem}); fix it or unset it")
        yield wanted
        return
    if _reachable(LOCAL_PG_URL) is None:
        yield LOCAL_PG_URL
        return
    cluster = PrivateCluster()
    try:
        url = cluster.start()
        problem = _reachable(url)
        if problem:
            pytest.fail(f"private PostgreSQL cluster did not answer ({problem}); " + INSTALL_HINT)
        yield url
    finally:
        cluster.stop()


def with_search_path(url: str, schema: str) -> str:
    """Return ``url`` with ``search_path`` set to ``schema`` through libpq ``options``."""
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qsl(parts.query)
    query.append(("options", f"-csearch_path={schema}"))
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


@pytest.fixture
def pg_url(pg_server_url: str) -> Iterator[str]:
    """A PostgreSQL URL whose tables live in a schema private to this test (dropped after)."""
    import psycopg

    schema = f"qrgate_history_test_{os.getpid()}_{secrets.token_hex(4)}"
    with psycopg.connect(pg_server_url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield with_search_path(pg_server_url, schema)
    finally:
        with psycopg.connect(pg_server_url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


# --------------------------------------------------------------------------- events

BASE_MS = 1_782_990_000_000  # 2026-07-02 11:00 UTC


def rfc3339(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def scan_dict(device: str = "gate-1", seq: int = 1, ts_ms: int = BASE_MS, *, venue: str = "v-1",
              decision: str = "granted", display: str = "NGUYỄN ĐÌNH *** 0966 323 ***",
              subject: str | None = "hmac-aa11", direction: str = "in", event_id: str | None = None,
              reason: str | None = None, code: str | None = None) -> dict:
    """A scan event exactly as a gate publishes it (``ScanEvent.to_json_dict``)."""
    event = ScanEvent(
        device_id=device, venue_id=venue, direction=direction, ts=rfc3339(ts_ms), time_synced=True,
        boot_id="boot-1", decision=decision, reason=reason or ("ok" if decision == "granted" else "expired"),
        credential="qg1", subject=subject, display=display, latency_ms=12.5,
        code_sha256=f"{seq:064x}", code=code,
        event_id=event_id or f"{ts_ms:013d}-{device}-{seq:08d}", seq=seq,
    )
    return event.to_json_dict()

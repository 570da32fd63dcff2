"""Shared test doubles and fixtures: FakeClock, pin histories, a real Mosquitto on loopback."""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

# Shipped inside the repository (Apache-2.0, from zxing-cpp; see its LICENSE and NOTICE).
SAMPLES_DIR = Path(os.environ.get("QRGATE_SAMPLES", Path(__file__).resolve().parent / "data" / "qr-samples")).resolve()


class FakeClock:
    """A clock the test moves by hand. Implements the Clock port."""

    def __init__(self, mono_s: float = 1000.0, wall_s: float = 1.7e9, trusted: bool = True) -> None:
        self.mono_s, self.wall_s, self.trusted = mono_s, wall_s, trusted

    def monotonic(self) -> float:
        return self.mono_s

    def wall(self) -> float:
        return self.wall_s

    def wall_trusted(self) -> bool:
        return self.trusted

    def advance(self, seconds: float) -> None:
        self.mono_s += seconds
        self.wall_s += seconds


def pin_levels(pin) -> list[bool]:
    """The whole recorded history of a MockPin, as booleans (compare it whole, never a prefix)."""
    return [bool(change.state) for change in pin.states]


@pytest.fixture
def fake_clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def samples_dir() -> Path:
    if not SAMPLES_DIR.is_dir():
        pytest.fail(f"QR sample folder {SAMPLES_DIR} is missing; it ships in the repository as "
                    "tests/data/qr-samples (or set QRGATE_SAMPLES to another copy)")
    return SAMPLES_DIR


# --------------------------------------------------------------------------- Mosquitto

def _find_mosquitto() -> str:
    path = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else None)
    if not path:
        pytest.fail("mosquitto is not installed; install it with `sudo apt-get install -y mosquitto` "
                    "(make test does this by itself when run as root)")
    return path


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    """A real Mosquitto on a free loopback port, owned by the test suite.

    ``stop()`` terminates it, ``kill()`` sends SIGKILL, ``start()`` starts it again on the
    same port. ``acl`` (text of a mosquitto ACL file) may be set before ``start()``.
    """

    def __init__(self, workdir: Path) -> None:
        self.binary = _find_mosquitto()
        self.workdir = workdir
        self.port = free_port()
        self.host = "127.0.0.1"
        self.proc: subprocess.Popen | None = None
        self.acl: str | None = None
        # A mosquitto_passwd file: anonymous clients are then refused (tests of the ACL template).
        self.password_file: Path | None = None
        self.log_path = workdir / "mosquitto.log"
        self.extra_conf = ""

    def _write_conf(self) -> Path:
        conf = self.workdir / "mosquitto.conf"
        lines = [
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous false" if self.password_file is not None else "allow_anonymous true",
            "persistence false",
            f"log_dest file {self.log_path}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "max_queued_messages 100000",
        ]
        if os.geteuid() == 0:
            # As root, mosquitto drops to user "mosquitto", which cannot read files under a 0700 tmp dir.
            lines.append("user root")
        if self.password_file is not None:
            lines.append(f"password_file {self.password_file}")
        if self.acl is not None:
            acl_file = self.workdir / "acl"
            acl_file.write_text(self.acl)
            lines.append(f"acl_file {acl_file}")
        conf.write_text("\n".join(lines) + "\n" + self.extra_conf)
        return conf

    def start(self, timeout_s: float = 10.0) -> None:
        """Start mosquitto and wait (with a deadline) until its port accepts connections."""
        conf = self._write_conf()
        self.proc = subprocess.Popen([self.binary, "-c", str(conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                log = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
                raise RuntimeError(f"mosquitto exited at start ({self.proc.returncode}): {err}{log}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return
            except OSError:
                # readiness probe with a deadline: the only polling the house style allows
                time.sleep(0.02)
        raise RuntimeError(f"mosquitto did not open port {self.port} within {timeout_s} s")

    def stop(self) -> None:
        """Terminate mosquitto and wait for it to exit."""
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self.proc and self.proc.stderr:
            self.proc.stderr.close()  # else -W error turns the unclosed pipe into a test error
        self.proc = None

    def kill(self) -> None:
        """SIGKILL mosquitto (no clean shutdown) and reap it."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        if self.proc and self.proc.stderr:
            self.proc.stderr.close()
        self.proc = None

    def reload_acl(self, acl: str | None) -> None:
        """Change the ACL and restart the broker on the same port."""
        self.acl = acl
        self.stop()
        self.start()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


@pytest.fixture
def broker(tmp_path_factory) -> Iterator[Broker]:
    """A private Mosquitto for one test (it may stop, kill and restart it)."""
    b = Broker(tmp_path_factory.mktemp("mosquitto"))
    b.start()
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture(scope="session")
def shared_broker(tmp_path_factory) -> Iterator[Broker]:
    """One Mosquitto for the session; tests must not stop it. Use one topic prefix per test."""
    b = Broker(tmp_path_factory.mktemp("mosquitto-shared"))
    b.start()
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture
def topic_prefix(request) -> str:
    """A topic prefix unique to this test."""
    name = "".join(c if c.isalnum() else "_" for c in request.node.name)[:40]
    # the name is cut short, so a digest of the whole test id keeps parametrized cases apart
    digest = hashlib.sha256(request.node.nodeid.encode("utf-8")).hexdigest()[:8]
    return f"t{os.getpid()}_{name}_{digest}"


def pytest_collection_modifyitems(config, items):
    """Tests marked `hardware` need a Pi's camera and GPIO: run them with QRGATE_HARDWARE=1 on a
    Pi; elsewhere they are deselected (not reported as skips). Tests marked `x86_64_only` need
    atheris, which has wheels for x86_64 only; on other machines they are deselected."""
    import platform

    if platform.machine() != "x86_64":
        fuzz = [item for item in items if item.get_closest_marker("x86_64_only")]
        if fuzz:
            config.hook.pytest_deselected(items=fuzz)
            items[:] = [item for item in items if not item.get_closest_marker("x86_64_only")]
    if os.environ.get("QRGATE_HARDWARE") == "1":
        return
    hardware = [item for item in items if item.get_closest_marker("hardware")]
    if hardware:
        config.hook.pytest_deselected(items=hardware)
        items[:] = [item for item in items if not item.get_closest_marker("hardware")]


@pytest.fixture(scope="module")
def browser():
    """One headless Chromium (Debian's /usr/bin/chromium, driven by Playwright) per test module."""
    from tests.backoffice_support import CHROMIUM, CHROMIUM_ARGS, chromium_or_fail

    chromium_or_fail()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        launched = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()

"""Test helpers for the back office: a real site (init + gunicorn) in a child process, and its SMS file.

``BackofficeSite`` writes a config under a temporary folder (SQLite there, or the
PostgreSQL URL given), runs ``qrgate backoffice init`` and then ``qrgate backoffice serve``
on a free loopback port, and waits for ``/healthz`` with a deadline. The console SMS
adapter writes each message as a JSON line; ``last_code`` reads the newest code sent to a
phone from it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.conftest import free_port
from tests.daemon_support import _toml_value

REPO = Path(__file__).resolve().parent.parent
START_TIMEOUT_S = 60.0
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
PHONE_VIEWPORT = {"width": 390, "height": 844}


def qrgate(*args: str, timeout_s: float = 120.0) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "firmware.cli", *args], capture_output=True, text=True,
                          timeout=timeout_s, cwd=REPO)


def write_toml(path: Path, sections: dict[str, dict[str, Any]]) -> Path:
    lines = []
    for name, values in sections.items():
        lines.append(f"[{name}]")
        for key, value in values.items():
            if isinstance(value, list):
                lines.append(f"{key} = [" + ", ".join(_toml_value(v) for v in value) + "]")
            else:
                lines.append(f"{key} = {_toml_value(value)}")
        lines.append("")
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


class BackofficeSite:
    """One back office, served by gunicorn in a child process.

    Args:
        folder: where the config, secret, keys, SMS file and (SQLite) database go.
        database_url: a PostgreSQL URL, or None for SQLite in folder.
        extra: sections merged over the defaults (e.g. ``{"mqtt": {...}}``, ``{"otp": {...}}``).
    """

    def __init__(self, folder: Path, database_url: str | None = None, **extra: dict[str, Any]) -> None:
        self.folder = folder
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.sms_file = folder / "sms.jsonl"
        sections: dict[str, dict[str, Any]] = {
            "site": {"base_url": self.base, "listen": f"127.0.0.1:{self.port}", "workers": 1,
                     "allowed_hosts": ["127.0.0.1"]},
            "database": {"url": database_url or str(folder / "backoffice.sqlite3")},
            "sms": {"backend": "console", "console_file": str(self.sms_file)},
        }
        for name, values in extra.items():
            sections[name] = {**sections.get(name, {}), **values}
        self.config = write_toml(folder / "backoffice.toml", sections)
        self.database_url_for_tests = sections["database"]["url"]
        self.kind = "postgresql" if database_url else "sqlite"
        self.proc: subprocess.Popen | None = None
        self.log_path = folder / "serve.log"

    def init(self) -> subprocess.CompletedProcess:
        done = qrgate("backoffice", "init", "--config", str(self.config))
        assert done.returncode == 0, done.stderr
        return done

    def start(self, env: dict[str, str] | None = None) -> None:
        """Start gunicorn and wait (with a deadline) until /healthz answers; fail fast if it exits.

        Args:
            env: variables added to the server's environment (``TMPDIR`` to watch its temporary files).
        """
        log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "firmware.cli", "backoffice", "serve", "--config",
                                      str(self.config)], stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
                                     env={**os.environ, **env} if env else None)
        log.close()
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"backoffice serve exited {self.proc.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(self.base + "/healthz", timeout=2) as answer:
                    if answer.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)  # readiness probe with a deadline
        raise AssertionError(f"backoffice serve did not answer within {START_TIMEOUT_S} s:\n{self.log()}")

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        self.proc.terminate()
        try:
            return self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace") if self.log_path.exists() else ""

    def messages(self) -> list[dict[str, str]]:
        if not self.sms_file.exists():
            return []
        return [json.loads(line) for line in self.sms_file.read_text(encoding="utf-8").splitlines() if line]

    def last_code(self, phone_e164: str) -> str:
        """The newest 6-digit code the console SMS file holds for this phone."""
        for message in reversed(self.messages()):
            if message["to"] == phone_e164:
                found = re.search(r"\b(\d{6})\b", message["text"])
                assert found, message
                return found.group(1)
        raise AssertionError(f"no SMS to {phone_e164} in {self.sms_file}")

    def django(self, code: str) -> subprocess.CompletedProcess:
        """Run Python code in a child process with this site's Django configured (for setting up data)."""
        prelude = ("from backoffice.config import load_config\nfrom backoffice.site import configure\n"
                   f"configure(load_config({str(self.config)!r}))\n")
        done = subprocess.run([sys.executable, "-c", prelude + code], capture_output=True, text=True, timeout=120,
                              cwd=REPO)
        assert done.returncode == 0, done.stderr
        return done


def chromium_or_fail() -> None:
    import pytest

    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing; install it with `sudo apt-get install -y chromium` "
                    "(make test does this by itself when run as root)")


class WebClient:
    """A cookie-keeping HTTP client for form posts (with the page's CSRF token) against a site.

    Args:
        client_address: sent as X-Forwarded-For (the site must have ``behind_proxy``), so a
            test can act as several clients.
    """

    def __init__(self, base: str, client_address: str = "") -> None:
        import http.cookiejar

        self.base = base
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar),
                                                  _NoRedirect())
        self.headers = {"X-Forwarded-For": client_address} if client_address else {}

    def request(self, method: str, path: str, data: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, str, dict[str, str]]:
        """Send one request; redirects are returned, not followed. Returns (status, body, headers)."""
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={**self.headers, **(headers or {})})
        try:
            with self.opener.open(req, timeout=30) as answer:
                return answer.status, answer.read().decode("utf-8", "replace"), dict(answer.headers)
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode("utf-8", "replace"), dict(err.headers)

    def get(self, path: str) -> tuple[int, str, dict[str, str]]:
        return self.request("GET", path)

    def csrf(self, path: str) -> str:
        status, body, _ = self.get(path)
        found = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', body)
        assert found, f"no CSRF token on {path} ({status})"
        return found.group(1)

    def post(self, path: str, fields: dict[str, str], *, token_from: str | None = None,
             csrf: bool = True) -> tuple[int, str, dict[str, str]]:
        """POST a form; the CSRF token is read from token_from (default: path) unless csrf is False."""
        import urllib.parse

        body = dict(fields)
        if csrf:
            body["csrfmiddlewaretoken"] = self.csrf(token_from or path)
        return self.request("POST", path, urllib.parse.urlencode(body).encode(),
                            {"Content-Type": "application/x-www-form-urlencoded"})


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: ANN001 - library signature
        return None


def register_by_http(site: BackofficeSite, client: WebClient, venue: dict[str, str]) -> str:
    """Register a venue through the three steps over plain HTTP; returns its id (the client is logged in)."""
    status, _, headers = client.post("/register/", venue)
    assert status == 302 and headers["Location"].endswith("/register/otp/"), status
    status, _, headers = client.post("/register/otp/", {"code": site.last_code("+84" + venue["phone"][1:])})
    assert status == 302 and "/register/done/" in headers["Location"], status
    return headers["Location"].rstrip("/").rsplit("/", 1)[1]


def e164(phone: str) -> str:
    """A Vietnamese mobile number (``0912...``) as the back office stores it (``+84912...``)."""
    return "+84" + phone[1:]


def login(browser, site: BackofficeSite, phone: str):
    """A new Chromium page (downloads accepted) logged in as ``phone`` through the login and OTP pages."""
    page = browser.new_page(accept_downloads=True)
    page.goto(site.base + "/login/")
    page.fill("#id_phone", phone)
    page.click("#send-code")
    page.wait_for_url("**/login/otp/")
    page.fill("#id_code", site.last_code(e164(phone)))
    page.click("#verify")
    page.wait_for_load_state()
    return page


def rows(page, table: str) -> list[list[str]]:
    """The cell texts of each body row of the table with id ``table``."""
    return [[cell.inner_text().strip() for cell in row.locator("td").all()]
            for row in page.locator(f"#{table} tbody tr").all()]


def http_login(site: BackofficeSite, phone: str) -> WebClient:
    """A plain HTTP client logged in as ``phone`` (for requests a browser would not send)."""
    client = WebClient(site.base)
    assert client.post("/login/", {"phone": phone})[0] == 302
    assert client.post("/login/otp/", {"code": site.last_code(e164(phone))})[0] == 302
    return client

"""The back office's parts without a browser: config checks (exit 78), the OTP rules, the SMS
adapters (http against a local fake gateway), the translations, and the gate never loading Django."""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from backoffice.config import OtpSettings, parse_config
from backoffice.people import otp
from backoffice.sms import ConsoleSms, HttpSms, SmsError
from firmware.core.errors import ConfigError
from tests.backoffice_support import REPO, BackofficeSite, qrgate, write_toml

RULES = OtpSettings()
SECRET = "s" * 40


# --------------------------------------------------------------------------- config

def test_a_good_config_resolves_paths_against_its_folder(tmp_path):
    cfg = parse_config({"site": {"base_url": "https://qr.example.vn"}, "database": {"url": "db/bo.sqlite3"},
                        "keys": {"issuer_key": "/etc/qrgate/issuer.pem"}}, tmp_path, tmp_path / "bo.toml")
    assert cfg.site.allowed_hosts == ("qr.example.vn",)
    assert cfg.site.secure and cfg.database_url == str(tmp_path / "db" / "bo.sqlite3")
    assert cfg.keys.issuer_key == Path("/etc/qrgate/issuer.pem")
    assert cfg.keys.authority_key == tmp_path / "keys" / "authority.pem"
    assert cfg.site.secret_key_file == tmp_path / "secret_key"
    assert parse_config({"database": {"url": "postgresql://qrgate@db/qrgate"}}, tmp_path, tmp_path).is_postgres


def test_every_config_problem_is_reported_at_once(tmp_path):
    with pytest.raises(ConfigError) as err:
        parse_config({"site": {"base_url": "ftp://x/y", "listen": "nowhere", "allowed_hosts": "x",
                               "session_age_s": 5, "time_zone": "Mars/Base", "workerz": 2},
                      "database": {"url": "mysql://x"}, "sms": {"backend": "pigeon"},
                      "otp": {"max_tries": 0}, "mqtt": {"port": 70000, "ca_file": "missing.pem"},
                      "smss": {}}, tmp_path, tmp_path / "bo.toml")
    text = "\n".join(err.value.problems)
    for needle in ("site.base_url", "site.listen", "site.allowed_hosts", "site.session_age_s", "site.time_zone",
                   "site.workerz is not a known key; did you mean site.workers?", "database.url",
                   "sms.backend", "otp.max_tries", "mqtt.port", "mqtt.ca_file", "[smss] is not a back office "
                   "section; did you mean [sms]?"):
        assert needle in text, needle
    assert len(err.value.problems) == 12


def test_the_http_sms_backend_needs_a_url_and_a_template_with_to_and_text(tmp_path):
    with pytest.raises(ConfigError) as err:
        parse_config({"sms": {"backend": "http", "body_template": "{}"}}, tmp_path, tmp_path)
    assert len(err.value.problems) == 2 and "sms.url" in err.value.problems[0]


def test_the_cli_exits_78_listing_every_problem_and_serve_refuses_before_init(tmp_path):
    bad = write_toml(tmp_path / "bad.toml", {"site": {"listen": "x"}, "sms": {"backend": "carrier-pigeon"}})
    done = qrgate("backoffice", "serve", "--config", str(bad))
    assert done.returncode == 78
    assert "site.listen" in done.stderr and "sms.backend" in done.stderr
    site = BackofficeSite(tmp_path)
    done = qrgate("backoffice", "serve", "--config", str(site.config))
    assert done.returncode == 78 and "run `qrgate backoffice init" in done.stderr


def test_init_makes_the_secret_and_keys_0600_and_createstaff_makes_an_admin(tmp_path):
    site = BackofficeSite(tmp_path)
    out = site.init()
    assert (tmp_path / "secret_key").stat().st_mode & 0o777 == 0o600
    for name in ("issuer", "authority", "command"):
        assert (tmp_path / "keys" / f"{name}.pem").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "backoffice.sqlite3").stat().st_mode & 0o777 == 0o600
    assert "made keys.authority_key" in out.stdout
    secret = (tmp_path / "secret_key").read_text()
    assert "made" not in site.init().stdout  # idempotent: nothing is made twice
    assert (tmp_path / "secret_key").read_text() == secret
    done = qrgate("backoffice", "createstaff", "--config", str(site.config), "--phone", "0912 000 111",
                  "--name", "Cán bộ Y tế")
    assert done.returncode == 0, done.stderr
    found = site.django("from django.contrib.auth import get_user_model\n"
                        "u = get_user_model().objects.get(username='+84912000111')\n"
                        "print(u.is_staff, u.is_superuser, u.has_usable_password())")
    assert found.stdout.split() == ["True", "True", "False"]
    assert qrgate("backoffice", "createstaff", "--config", str(site.config), "--phone", "12").returncode == 78


def test_serve_runs_under_gunicorn_serves_static_files_and_stops_on_sigterm(tmp_path):
    import urllib.request

    site = BackofficeSite(tmp_path)
    site.init()
    site.start()
    try:
        with urllib.request.urlopen(site.base + "/static/backoffice/site.css", timeout=10) as answer:
            assert answer.status == 200 and b"box-sizing" in answer.read()
        with urllib.request.urlopen(site.base + "/register/", timeout=10) as answer:
            assert answer.headers["Server"] == "gunicorn"
    finally:
        assert site.stop() == 0
    assert "Starting gunicorn" in site.log() and '"GET /register/" 200' in site.log()


# --------------------------------------------------------------------------- OTP rules

def history(**kw) -> otp.IssueHistory:
    values = {"last_issued_s": None, "last_used": False, "phone_last_hour": 0, "client_last_hour": 0, **kw}
    return otp.IssueHistory(**values)


@pytest.mark.parametrize(("past", "now_s", "refusal"), [
    (history(), 1000.0, None),
    (history(last_issued_s=950.0), 1000.0, otp.Refusal.TOO_SOON),
    (history(last_issued_s=940.0), 1000.0, None),
    (history(last_issued_s=990.0, last_used=True), 1000.0, None),
    (history(phone_last_hour=5), 1000.0, otp.Refusal.PHONE_HOURLY_CAP),
    (history(client_last_hour=20), 1000.0, otp.Refusal.CLIENT_HOURLY_CAP),
])
def test_a_new_code_is_sent_once_a_minute_and_within_the_hourly_caps(past, now_s, refusal):
    assert otp.may_issue(past, now_s, RULES) is refusal


def test_codes_are_six_digits_hashed_and_checked_until_expiry_and_five_tries():
    codes = {otp.new_code() for _ in range(200)}
    assert all(len(c) == 6 and c.isdigit() for c in codes) and len(codes) > 150
    stored = otp.code_hash(SECRET, "login", "+84912345678", "123456")
    assert "123456" not in stored and len(stored) == 64
    assert stored != otp.code_hash(SECRET, "register", "+84912345678", "123456")
    assert stored != otp.code_hash(SECRET, "login", "+84912345679", "123456")
    live = otp.LiveCode(stored, expires_s=1300.0, tries=0, used=False)
    assert otp.check(live, stored, 1000.0, RULES) is otp.Outcome.OK
    assert otp.check(live, otp.code_hash(SECRET, "login", "+84912345678", "654321"), 1000.0,
                     RULES) is otp.Outcome.WRONG
    assert otp.check(live, stored, 1300.0, RULES) is otp.Outcome.EXPIRED
    assert otp.check(otp.LiveCode(stored, 1300.0, 5, False), stored, 1000.0, RULES) is otp.Outcome.EXHAUSTED
    assert otp.check(otp.LiveCode(stored, 1300.0, 0, True), stored, 1000.0, RULES) is otp.Outcome.USED
    assert otp.check(None, stored, 1000.0, RULES) is otp.Outcome.EXHAUSTED
    assert otp.seconds_left(1300.0, 1003.5) == 296


# --------------------------------------------------------------------------- SMS

class FakeGateway(BaseHTTPRequestHandler):
    """A local SMS gateway: records each request; answers 202, or 503 when told to."""

    received: queue.Queue
    status = 202

    def do_POST(self) -> None:  # noqa: N802 - http.server naming
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.received.put((self.path, dict(self.headers), body))  # type: ignore[attr-defined]
        self.send_response(self.server.status)  # type: ignore[attr-defined]
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def gateway():
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeGateway)
    server.received = queue.Queue()  # type: ignore[attr-defined]
    server.status = 202  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, name="fake-sms-gateway")
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_the_http_adapter_posts_the_template_with_escaped_values_and_the_auth_header(gateway):
    url = f"http://127.0.0.1:{gateway.server_address[1]}/api/send"
    sms = HttpSms(url, body_template='{"phone": "$to", "message": "$text", "brandname": "QRGATE"}',
                  auth_header="Authorization", auth_value="Bearer t0ken", timeout_s=5)
    sms.send("+84912345678", 'Mã "OTP": 123456\nhết hạn')
    path, headers, body = gateway.received.get(timeout=10)
    assert path == "/api/send" and headers["Authorization"] == "Bearer t0ken"
    assert json.loads(body) == {"phone": "+84912345678", "message": 'Mã "OTP": 123456\nhết hạn',
                                "brandname": "QRGATE"}
    form = HttpSms(url, body_template="To=$to&Body=$text", content_type="application/x-www-form-urlencoded")
    form.send("+84912345678", "a&b=c")
    _, _, body = gateway.received.get(timeout=10)
    assert body == b"To=%2B84912345678&Body=a%26b%3Dc"
    gateway.status = 503
    with pytest.raises(SmsError, match="HTTP 503"):
        sms.send("+84912345678", "x")
    with pytest.raises(SmsError, match="cannot be reached"):
        HttpSms("http://127.0.0.1:9/none", body_template="$to $text", timeout_s=2).send("+84912345678", "x")


def test_the_detached_adapter_returns_at_once_and_logs_a_gateway_failure(gateway, caplog):
    from backoffice.sms import DetachedSms

    url = f"http://127.0.0.1:{gateway.server_address[1]}/api/send"
    DetachedSms(HttpSms(url, body_template='{"to": "$to", "text": "$text"}', timeout_s=5)).send("+84912345678", "a")
    path, _, body = gateway.received.get(timeout=10)
    assert json.loads(body) == {"to": "+84912345678", "text": "a"}
    gateway.status = 500
    with caplog.at_level("ERROR", logger="backoffice.sms"):
        DetachedSms(HttpSms(url, body_template="$to $text", timeout_s=5)).send("+84912345678", "b")
        gateway.received.get(timeout=10)
        threads = [t for t in threading.enumerate() if t.name == "qrgate-sms"]
        for t in threads:
            t.join(timeout=10)
    assert any("HTTP 500" in r.getMessage() and "+84912***" in r.getMessage() for r in caplog.records)
    assert not any("345678" in r.getMessage() for r in caplog.records)


def test_the_console_adapter_writes_one_json_line_per_message_0600(tmp_path):
    path = tmp_path / "sms.jsonl"
    ConsoleSms(str(path)).send("+84912345678", "Mã OTP 123456")
    ConsoleSms(str(path)).send("+84987654321", "second")
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert lines == [{"to": "+84912345678", "text": "Mã OTP 123456"}, {"to": "+84987654321", "text": "second"}]
    assert path.stat().st_mode & 0o777 == 0o600


# --------------------------------------------------------------------------- translations, layering

def test_the_committed_mo_files_match_their_po_files_and_every_message_is_translated():
    from backoffice.locale_compile import LOCALE_DIR, mo_bytes, parse_po

    catalogues = sorted(LOCALE_DIR.glob("*/LC_MESSAGES/django.po"))
    assert catalogues
    for po in catalogues:
        text = po.read_text(encoding="utf-8")
        entries = parse_po(text, str(po))
        assert po.with_suffix(".mo").read_bytes() == mo_bytes(entries), "run python -m backoffice.locale_compile"
        assert text.count("\nmsgid ") == len(entries), "an entry has no translation (or is fuzzy)"
    import gettext

    with open(LOCALE_DIR / "en" / "LC_MESSAGES" / "django.mo", "rb") as fh:
        english = gettext.GNUTranslations(fh)
    assert english.gettext("Quản lý địa điểm") == "Manage venues"


def test_the_gate_cli_does_not_import_django():
    code = ("import sys\nfrom firmware.cli import build_parser\nbuild_parser()\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('django', 'backoffice', 'gunicorn')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


# --------------------------------------------------------------------------- the history commands on its database

def test_history_collect_and_query_work_on_the_back_office_database_with_config(tmp_path, shared_broker,
                                                                                 topic_prefix):
    import signal

    from tests.history_support import BASE_MS, scan_dict
    from tests.mqtt_support import publish_raw

    site = BackofficeSite(tmp_path, mqtt={"host": shared_broker.host, "port": shared_broker.port,
                                          "prefix": topic_prefix})
    site.init()
    from tests.signing_support import signed, write_public_pem

    added = qrgate("history", "device", "add", "--config", str(site.config), "--device", "gate-9", "--key",
                   str(write_public_pem("gate-9", tmp_path / "gate-9.pub.pem")))
    assert added.returncode == 0, added.stderr  # only events signed by a registered key are stored
    proc = subprocess.Popen([sys.executable, "-m", "firmware.cli", "-v", "history", "collect", "--config",
                             str(site.config), "--client-id", f"bo-{topic_prefix}"[:60]],
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, cwd=REPO)
    lines: queue.Queue = queue.Queue()

    def read() -> None:
        for line in iter(proc.stderr.readline, ""):
            lines.put(line)
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    seen: list[str] = []

    def wait_for(needle: str) -> None:
        while True:
            line = lines.get(timeout=60)
            assert line is not None, "".join(seen)
            seen.append(line)
            if needle in line:
                return

    try:
        wait_for("subscribed to")
        for seq in (1, 2, 3):
            publish_raw(shared_broker, f"{topic_prefix}/gate-9/scan",
                        signed("gate-9", scan_dict(device="gate-9", seq=seq, ts_ms=BASE_MS + seq,
                                                   venue="v-aaaaaaaaaaaa")))
        stored = 0
        while stored < 3:
            wait_for("stored ")
            stored += int(seen[-1].split("stored ")[1].split()[0])
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
    done = qrgate("history", "query", "--config", str(site.config), "--format", "json")
    assert done.returncode == 0, done.stderr
    assert [e["seq"] for e in json.loads(done.stdout)["events"]] == [3, 2, 1]


# --------------------------------------------------------------------------- systemd units

@pytest.mark.parametrize("unit", ["qrgate-backoffice.service", "qrgate-collector.service"])
def test_the_back_office_units_verify_and_carry_the_gates_hardening(unit, tmp_path):
    import shutil

    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.fail("systemd-analyze is missing; install it with `sudo apt-get install -y systemd`")
    text = (REPO / "systemd" / unit).read_text()
    exe = Path(sys.executable).with_name("qrgate")
    copy = tmp_path / unit
    copy.write_text(text.replace("/opt/qrgate/venv/bin/qrgate", str(exe)))
    result = subprocess.run([tool, "verify", str(copy)], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert result.returncode == 0 and result.stderr.strip() == "", result.stderr
    gate = (REPO / "systemd" / "qrgate.service").read_text()
    for setting in ("NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes",
                    "ProtectKernelTunables=yes", "RestrictNamespaces=yes", "CapabilityBoundingSet=",
                    "RestartPreventExitStatus=78", "UMask=0027", "SystemCallArchitectures=native"):
        assert setting in gate and setting in text, setting
    assert "--config /etc/qrgate/backoffice.toml" in text


def test_sessions_expire_and_cookies_are_secure_behind_https(tmp_path):
    from backoffice.site import database_settings, django_settings

    plain = django_settings(parse_config({"site": {"session_age_s": 3600}}, tmp_path, tmp_path), "k" * 50)
    assert plain["SESSION_COOKIE_AGE"] == 3600 and plain["SESSION_EXPIRE_AT_BROWSER_CLOSE"]
    assert not plain["SESSION_COOKIE_SECURE"] and plain["SESSION_COOKIE_HTTPONLY"] and not plain["DEBUG"]
    tls = django_settings(parse_config({"site": {"base_url": "https://qr.example.vn", "behind_proxy": True}},
                                       tmp_path, tmp_path), "k" * 50)
    assert tls["SESSION_COOKIE_SECURE"] and tls["CSRF_COOKIE_SECURE"] and tls["SECURE_HSTS_SECONDS"] > 0
    assert tls["SECURE_PROXY_SSL_HEADER"] == ("HTTP_X_FORWARDED_PROTO", "https")
    assert tls["ALLOWED_HOSTS"] == ["qr.example.vn"] and tls["CSRF_TRUSTED_ORIGINS"] == ["https://qr.example.vn"]
    pg = database_settings("postgresql://qrgate:p%40ss@db.lan:5433/qrgate?options=-csearch_path%3Dbo")
    assert (pg["NAME"], pg["USER"], pg["PASSWORD"], pg["HOST"], pg["PORT"]) == ("qrgate", "qrgate", "p@ss",
                                                                                "db.lan", "5433")
    assert pg["OPTIONS"] == {"options": "-csearch_path=bo"}

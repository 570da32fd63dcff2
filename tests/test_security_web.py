"""Issue 10, attacks 3 and 4 and the web-server limits, against the history page of
`qrgate history serve --db` (http.server) and the back office's history.

Real parts: a served page on a loopback port, raw sockets for hostile requests, real SQLite
and PostgreSQL stores, openpyxl reading the XLSX back.
"""

from __future__ import annotations

import dataclasses
import io
import json
import socket
import threading
import urllib.request
from zoneinfo import ZoneInfo

import pytest

from provisioning.history.events import parse_ts_ms, person_key
from provisioning.history.export import local_time, write_export
from provisioning.history.query import Filter, make_filter
from provisioning.history.store import open_store
from provisioning.history.web import MAX_FORM_BYTES, make_server
from tests.history_support import BASE_MS, pg_server_url, pg_url  # noqa: F401
from tests.test_history_store import event as clean_event


def event(**kwargs):
    """A stored event as an older collector (before issue 10's field checks) or a direct write
    could have left it: the collector refuses such events now, the page and exports must still
    survive rows that are already in a database."""
    hostile = {k: kwargs.pop(k) for k in ("display", "ts_ms") if k in kwargs}
    ev = clean_event(**kwargs)
    if "ts_ms" in hostile and hostile["ts_ms"] > BASE_MS + 10 * 365 * 86_400_000:
        ev = dataclasses.replace(ev, ts_ms=hostile.pop("ts_ms"), ts=FORGED_TS)
    elif "ts_ms" in hostile:
        ev = clean_event(**kwargs, ts_ms=hostile.pop("ts_ms"))
    if "display" in hostile:
        ev = dataclasses.replace(ev, display=hostile["display"], person_key=person_key(hostile["display"]))
    return ev

HANOI = ZoneInfo("Asia/Ho_Chi_Minh")
TOKEN = "test-token-0123456789abcdef"
FORGED_TS = "9999-12-31T23:00:00+00:00"
FORGED_MS = parse_ts_ms(FORGED_TS)


@pytest.fixture
def page(tmp_path):
    """A served history page with one real and two forged events; yields (host, port, store)."""
    db = tmp_path / "history.sqlite"
    writer = open_store(str(db))
    writer.add(hostile_events())
    writer.close()
    store = open_store(str(db), readonly=True)
    server = make_server(store, TOKEN, HANOI, ("127.0.0.1", 0), allow_localhost=True, idle_timeout_s=1.0,
                         hosts=("history.example.org",), now_ms=lambda: BASE_MS + 3_600_000)
    thread = threading.Thread(target=server.serve_forever, name="qrgate-history-web-test")
    thread.start()
    try:
        yield "127.0.0.1", server.server_address[1], store
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
        store.close()


def hostile_events():
    return [event(seq=1, ts_ms=BASE_MS, display="NGUYỄN VĂN *** 0912 345 ***"),
            event(seq=2, ts_ms=BASE_MS + 60_000, display="BAD\x01NAME \u202eevil"),
            event(seq=3, ts_ms=FORGED_MS, display="FROM THE FUTURE")]


def raw(host: str, port: int, data: bytes, *, more: bytes = b"", timeout_s: float = 5.0) -> bytes:
    """Send data (and then more, without closing) and return what the server answers first."""
    with socket.create_connection((host, port), timeout=timeout_s) as conn:
        conn.sendall(data)
        if more:
            try:
                conn.sendall(more)
            except OSError:
                pass  # the server already answered and closed: that is the point
        chunks = []
        while True:
            try:
                chunk = conn.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)


def status_of(answer: bytes) -> int:
    assert answer.startswith(b"HTTP/1."), answer[:80]
    return int(answer.split(b" ", 2)[1])


def post_login(host: str, port: int, headers: str) -> bytes:
    return f"POST /login HTTP/1.1\r\nHost: {host}:{port}\r\n{headers}\r\n".encode()


def test_attack3_negative_content_length_is_refused_before_any_body_is_read(page):
    host, port, _ = page
    # before: rfile.read(-1) read until the client closed (300 MiB grew the server by 437 MB)
    answer = raw(host, port, post_login(host, port, "Content-Length: -1\r\n"), more=b"x" * (4 * 1024 * 1024))
    assert status_of(answer) == 400


@pytest.mark.parametrize("headers,status", [
    ("", 411),                                            # no Content-Length
    ("Transfer-Encoding: chunked\r\n", 501),              # chunked
    ("Content-Length: 1e9\r\n", 400),
    ("Content-Length: 5\r\nContent-Length: 7\r\n", 400),
    (f"Content-Length: {MAX_FORM_BYTES + 1}\r\n", 413),
    ("Content-Length: 99999999999999999999999\r\n", 400),
])
def test_attack3_bodies_are_bounded_whatever_content_length_says(page, headers, status):
    host, port, _ = page
    assert status_of(raw(host, port, post_login(host, port, headers), more=b"token=x" * 1000)) == status


def test_attack3_a_body_that_never_comes_is_cut_off(page):
    host, port, _ = page
    answer = raw(host, port, post_login(host, port, "Content-Length: 100\r\n") + b"token=")
    assert status_of(answer) in (400, 408)


def test_attack3_idle_connection_is_closed(page):
    host, port, _ = page
    with socket.create_connection((host, port), timeout=5) as conn:
        conn.sendall(b"GET / HT")  # and then nothing
        assert conn.recv(100) == b"", "the server closes an idle connection"


def test_attack3_request_line_and_headers_are_bounded(page):
    host, port, _ = page
    long_line = f"GET /{'a' * 10_000} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    assert status_of(raw(host, port, long_line)) == 414
    many = "".join(f"X-Pad-{n}: {'b' * 1000}\r\n" for n in range(30))
    assert status_of(raw(host, port, f"GET / HTTP/1.1\r\nHost: {host}\r\n{many}\r\n".encode())) == 431


@pytest.mark.parametrize("request_bytes", [b"\x16\x03\x01\x02\x00\x01\x00\r\n\r\n", b"GET\r\n\r\n",
                                           b"GET / HTTP/9.9\r\n\r\n", b"BREW / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"])
def test_malformed_requests_get_a_4xx_or_501(page, request_bytes):
    host, port, _ = page
    assert 400 <= status_of(raw(host, port, request_bytes)) <= 505


@pytest.mark.parametrize("host_header,status", [
    ("evil.example", 421), ("evil.example:8080", 421), ("127.0.0.1.evil.example", 421), ("", 421),
    ("history.example.org", 200), ("HISTORY.example.org.:80", 200), ("localhost:1", 200), ("[::1]:80", 200),
    ("127.0.0.1", 200),
])
def test_attack3_host_is_checked_also_with_allow_localhost(page, host_header, status):
    """DNS rebinding: a page on evil.example rebound to 127.0.0.1 must not read the history."""
    host, port, _ = page
    header = f"Host: {host_header}\r\n" if host_header else ""
    assert status_of(raw(host, port, f"GET / HTTP/1.1\r\n{header}\r\n".encode())) == status


def test_two_host_headers_are_refused(page):
    host, port, _ = page
    answer = raw(host, port, f"GET / HTTP/1.1\r\nHost: {host}\r\nHost: evil.example\r\n\r\n".encode())
    assert status_of(answer) == 421


def fetch(host, port, path="/?lang=en", form: bytes | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(f"http://{host}:{port}{path}", data=form,
                                     headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        return answer.status, answer.read()


def test_attack4_forged_far_future_event_and_control_characters_do_not_break_page_or_exports(page):
    host, port, _ = page
    status, body = fetch(host, port)
    text = body.decode()
    assert status == 200 and "Scans: <span>3</span>" in text
    assert "9999-12-31 23:00:00 UTC" in text and "FROM THE FUTURE" in text
    assert "\x01" not in text and "\u202e" not in text and "BADNAME evil" in text
    for fmt in ("csv", "json", "xlsx"):
        status, data = fetch(host, port, "/", f"export={fmt}".encode())
        assert status == 200 and data, fmt
    from openpyxl import load_workbook

    sheet = load_workbook(io.BytesIO(fetch(host, port, "/", b"export=xlsx")[1])).active
    values = [cell.value for row in sheet.iter_rows() for cell in row]
    assert "BADNAME evil" in values and "9999-12-31 23:00:00 UTC" in values
    exported = json.loads(fetch(host, port, "/", b"export=json")[1])
    assert {e["display"] for e in exported["events"]} >= {"BADNAME evil", "FROM THE FUTURE"}


def test_attack4_hostile_filter_dates_are_a_message_not_a_crash(page):
    host, port, _ = page
    for form in (b"until=9999-12-31", b"since=0001-01-01", b"since=99999999999999999999d", b"until=9999-12-31T23:59:59"):
        status, body = fetch(host, port, "/?lang=en", form)
        assert status == 200, form


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path):
    s = open_store(f"sqlite:///{tmp_path}/history.sqlite") if request.param == "sqlite" else open_store(
        request.getfixturevalue("pg_url"))
    try:
        yield s
    finally:
        s.close()


def test_attack4_retention_deletes_a_far_future_event_by_its_arrival_and_exports_work(store):
    store.add(hostile_events())
    assert store.page(Filter(), 1, 50).total == 3
    for fmt in ("csv", "json", "xlsx"):
        assert write_export(fmt, store.rows(Filter()), io.BytesIO(), HANOI, {}) == 3
    # 30 days later: every event arrived at BASE_MS, so all three are past retention
    deleted = store.prune(BASE_MS + 30 * 86_400_000)
    assert deleted == 3 and store.page(Filter(), 1, 50).total == 0


def test_local_time_never_raises():
    assert local_time(FORGED_MS, HANOI) == "9999-12-31 23:00:00 UTC"
    assert local_time(2**62, HANOI) == "invalid time"
    assert local_time(BASE_MS, HANOI)[:2] == "20"
    with pytest.raises(Exception) as err:
        make_filter(until="9999-12-31", now_ms=BASE_MS, tz=HANOI)
    assert type(err.value).__name__ == "ConfigError"


def test_attack4_the_back_office_history_survives_a_forged_event_and_control_characters(tmp_path):
    """The back office renders the same history: the page and every export still work."""
    from tests.backoffice_support import BackofficeSite, WebClient, register_by_http

    (tmp_path / "bo").mkdir()
    site = BackofficeSite(tmp_path / "bo")
    site.init()
    site.start()
    try:
        client = WebClient(site.base, "10.0.0.9")
        venue = register_by_http(site, client, {
            "name": "Bến xe Triệu Sơn", "province": "Thanh Hóa", "district": "Huyện Triệu Sơn",
            "ward": "Thị trấn Triệu Sơn", "address": "Số 1 Đường Lê Lợi", "registrant": "Lê Văn An",
            "phone": "0977000333"})
        writer = open_store(site.database_url_for_tests)
        try:
            writer.add([event(seq=n + 1, venue=venue, ts_ms=ts, display=display) for n, (ts, display) in enumerate(
                [(BASE_MS, "NGUYỄN VĂN *** 0912 345 ***"), (BASE_MS + 60_000, "BAD\x01NAME \u202eevil"),
                 (FORGED_MS, "FROM THE FUTURE")])])
        finally:
            writer.close()
        status, body, _ = client.post("/history/", {"venue": venue})
        assert status == 200 and "<span>3</span>" in body, body[-2000:]
        assert "9999-12-31 23:00:00 UTC" in body and "BADNAME evil" in body and "\x01" not in body
        for fmt in ("csv", "json", "xlsx"):
            status, _, headers = client.post("/history/", {"venue": venue, "export": fmt})
            assert status == 200, fmt
        assert "Traceback" not in site.log()
    finally:
        site.stop()

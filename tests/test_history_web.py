"""The history web page in a real headless Chromium (apt package) driven by Playwright:
refused without the token, filters, pages, exports, language, phone layout."""

from __future__ import annotations

import csv
import io
import stat
import threading
import urllib.error
import urllib.request
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from provisioning.history.export import EXPORT_COLUMNS, local_time
from provisioning.history.query import Filter
from provisioning.history.store import open_store
from provisioning.history.web import Access, load_or_create_tokens, make_server
from tests.history_support import BASE_MS
from tests.test_history_store import event

HANOI = ZoneInfo("Asia/Ho_Chi_Minh")
TOKEN = "test-token-0123456789abcdef"
PEOPLE = [("NGUYỄN ĐÌNH *** 0966 323 ***", "hmac-aa11"), ("TRẦN THỊ *** 0912 555 ***", "hmac-bb22"),
          ("LÊ VĂN *** 0988 111 ***", "hmac-cc33")]


def ids(rows) -> list[str]:
    return [r.event_id for r in rows]


@pytest.fixture
def site(tmp_path):
    db = tmp_path / "history.sqlite"
    writer = open_store(str(db))
    events = []
    for n in range(120):
        display, subject = PEOPLE[n % 3]
        events.append(event(device=f"gate-{n % 4}", venue="v-1" if n % 4 < 3 else "v-2", seq=n + 1,
                            ts_ms=BASE_MS + n * 60_000, decision="denied" if n % 5 == 0 else "granted",
                            display=display, subject=subject, direction="in" if n % 2 else "out"))
    writer.add(events)
    writer.close()
    store = open_store(str(db), readonly=True)
    server = make_server(store, TOKEN, HANOI, ("127.0.0.1", 0), page_size=50,
                         now_ms=lambda: BASE_MS + 200 * 60_000)
    thread = threading.Thread(target=server.serve_forever, name="qrgate-history-web-test")
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", store
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
        store.close()


def login(page, base: str) -> None:
    page.goto(base + "/")
    page.fill("input[name=token]", TOKEN)
    page.click("button[type=submit]")
    page.wait_for_selector("#count")


def count_on(page) -> int:
    return int(page.inner_text("#count span"))


def test_history_page_refuses_without_token_then_filters_pages_and_exports(browser, site, tmp_path, caplog):
    caplog.set_level("INFO")
    base, store = site
    context = browser.new_context(locale="vi-VN", accept_downloads=True)
    page = context.new_page()
    try:
        # refused: page, export and a wrong token
        response = page.goto(base + "/")
        assert response.status == 401
        assert page.locator("#history").count() == 0 and "NGUYỄN" not in page.content()
        assert "Cần đăng nhập" in page.inner_text("main")
        refused = context.request.post(base + "/", form={"export": "csv"})
        assert refused.status == 401 and "hmac-aa11" not in refused.text()
        page.fill("input[name=token]", "wrong-token-wrong-token")
        page.click("button[type=submit]")
        assert page.inner_text("p.error") == "Mã truy cập không đúng."

        login(page, base)
        assert page.inner_text("h1") == "Lịch sử quét mã QR"
        assert count_on(page) == 120
        assert page.inner_text("#pageinfo") == "Trang 1/3"
        newest = list(store.rows(Filter()))
        first_row = page.locator("#history tbody tr").first.locator("td")
        assert (newest[0].venue_id, newest[0].device_id, newest[0].direction) == ("v-2", "gate-3", "in")
        assert first_row.all_inner_texts() == [local_time(newest[0].ts_ms, HANOI), newest[0].display, "v-2",
                                               "gate-3", "Vào", "Cho vào", "Hợp lệ"]

        # paging keeps the newest-first order
        page.click("#next")
        assert page.inner_text("#pageinfo") == "Trang 2/3"
        times = page.locator("#history tbody tr td:first-child").all_inner_texts()
        assert times == [local_time(e.ts_ms, HANOI) for e in newest[50:100]]
        page.click("#next")
        assert page.inner_text("#pageinfo") == "Trang 3/3"
        assert page.locator("#history tbody tr").count() == 20 and page.locator("#next").count() == 0
        page.click("#prev")
        assert page.inner_text("#pageinfo") == "Trang 2/3"

        # venue + decision
        page.select_option("select[name=venue]", "v-2")
        page.select_option("select[name=decision]", "denied")
        page.click("button.primary")
        want = list(store.rows(Filter(venue="v-2", decision="denied")))
        assert count_on(page) == len(want) == 6
        assert page.locator("#history tbody tr td:nth-child(3)").all_inner_texts() == ["v-2"] * 6
        assert page.locator("#history tbody tr td:nth-child(6)").all_inner_texts() == ["Từ chối vào"] * 6

        # time window and device
        page.click("a.clear")
        page.fill("input[name=since]", local_time(BASE_MS + 10 * 60_000, HANOI).replace(" ", "T"))
        page.fill("input[name=until]", local_time(BASE_MS + 30 * 60_000, HANOI).replace(" ", "T"))
        page.select_option("select[name=device]", "gate-1")
        page.click("button.primary")
        want = list(store.rows(Filter(since_ms=BASE_MS + 10 * 60_000, until_ms=BASE_MS + 30 * 60_000,
                                      device="gate-1")))
        assert count_on(page) == len(want) == 5
        assert page.locator("#history tbody tr td:first-child").all_inner_texts() == [
            local_time(e.ts_ms, HANOI) for e in want]

        # person (masked name, any accents and case): POSTed, never in the URL
        page.click("a.clear")
        page.fill("input[name=person]", "trần thị")
        page.click("button.primary")
        assert count_on(page) == 40
        assert set(page.locator("#history tbody tr td:nth-child(2)").all_inner_texts()) == {PEOPLE[1][0]}
        assert page.url == base + "/"
        assert page.input_value("input[name=person]") == "trần thị"

        # export what the filter shows: CSV and XLSX read back
        with page.expect_download() as info:
            page.click("button[name=export][value=csv]")
        path = Path(info.value.path())
        assert info.value.suggested_filename.endswith(".csv")
        records = list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8-sig"))))
        assert [r["event_id"] for r in records] == ids(store.rows(Filter(person="trần thị")))
        assert {r["subject"] for r in records} == {"hmac-bb22"}
        with page.expect_download() as info:
            page.click("button[name=export][value=xlsx]")
        from openpyxl import load_workbook

        sheet = load_workbook(io.BytesIO(Path(info.value.path()).read_bytes())).active
        table = [[c.value for c in row] for row in sheet.iter_rows()]
        assert tuple(table[0]) == EXPORT_COLUMNS and len(table) == 41
        assert [r[EXPORT_COLUMNS.index("event_id")] for r in table[1:]] == [r["event_id"] for r in records]

        # English, and the language sticks
        page.goto(base + "/?lang=en")
        assert page.inner_text("h1") == "QR scan history"
        assert page.inner_text("#count") == "Scans: 120"
        page.click("#next")
        assert page.inner_text("#pageinfo") == "Page 2/3"

        # a phone screen: rows become cards, nothing wider than the screen
        page.set_viewport_size({"width": 390, "height": 844})
        page.goto(base + "/")
        assert page.evaluate("getComputedStyle(document.querySelector('#history tbody tr')).display") == "block"
        assert page.evaluate("document.documentElement.scrollWidth") <= 390

        page.click("header button")  # log out
        assert page.goto(base + "/").status == 401
    finally:
        context.close()
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "POST / 200" in logged and "GET / 401" in logged
    for secret in ("trần", "tran", "0912", TOKEN, "hmac-bb22"):
        assert secret not in logged.lower()


def test_bearer_token_and_optional_localhost_access(tmp_path, site):
    import urllib.error
    import urllib.request

    base, store = site
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(base + "/", timeout=10)
    assert refused.value.code == 401
    refused.value.close()
    request = urllib.request.Request(base + "/?lang=en", headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(request, timeout=10) as ok:
        assert ok.status == 200 and "Scans: <span>120</span>" in ok.read().decode()

    bad = urllib.request.Request(base + "/?lang=en", data=b"since=someday&person=x", method="POST",
                                 headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(bad, timeout=10) as shown:
        text = shown.read().decode()
        assert shown.status == 200 and "Please check the filter: time &#x27;someday&#x27; is not understood" in text

    server = make_server(store, TOKEN, HANOI, ("127.0.0.1", 0), allow_localhost=True)
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.server_address[1]}/", timeout=10) as ok:
            assert ok.status == 200
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_token_file_is_created_0600_and_announced_once(tmp_path):
    path = tmp_path / "conf" / "history-token"
    said: list[str] = []
    [access] = load_or_create_tokens(path, said.append)
    token = access.token
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and len(token) >= 32
    assert said == [f"added an access token for every venue to {path} (0600); the token, shown only now: {token}"]
    assert load_or_create_tokens(path, said.append) == [Access(token)] and len(said) == 1


def test_a_venue_token_sees_filters_and_exports_only_its_venues(tmp_path, site):
    import json
    import subprocess
    import sys

    base, store = site
    token_file = tmp_path / "tokens"
    made = subprocess.run([sys.executable, "-m", "firmware.cli", "history", "token", "add", "--token-file",
                           str(token_file), "--venue", "v-2"], capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    venue_token = made.stdout.split("shown only now: ")[1].split()[0]
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600 and token_file.read_text() == f"{venue_token} v-2\n"
    listed = subprocess.run([sys.executable, "-m", "firmware.cli", "history", "token", "list", "--token-file",
                             str(token_file)], capture_output=True, text=True, timeout=60)
    assert listed.stdout == f"{venue_token[:4]}…  v-2\n" and venue_token not in listed.stdout
    accesses = [Access(TOKEN), *load_or_create_tokens(token_file)]
    assert accesses[1] == Access(venue_token, ("v-2",))
    server = make_server(store, accesses, HANOI, ("127.0.0.1", 0))
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    scoped = f"http://127.0.0.1:{server.server_address[1]}"

    def post(form: str, token: str) -> str:
        request = urllib.request.Request(scoped + "/?lang=en", data=form.encode(), method="POST",
                                         headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.read().decode()

    try:
        assert "Scans: <span>120</span>" in post("", TOKEN)
        page = post("", venue_token)
        assert "Scans: <span>30</span>" in page and ">v-1<" not in page and '<option value="v-2">' in page
        assert '<option value="gate-0">' not in page and '<option value="gate-3">' in page
        assert "Scans: <span>0</span>" in post("venue=v-1", venue_token)  # asking for another venue gives nothing
        exported = json.loads(post("export=json", venue_token))
        assert {e["venue_id"] for e in exported["events"]} == {"v-2"} and exported["count"] == 30
        # the login form gives the session the same scope
        login = urllib.request.Request(scoped + "/login", data=f"token={venue_token}".encode(), method="POST")
        opener = urllib.request.build_opener(NoRedirect())
        with pytest.raises(urllib.error.HTTPError) as moved:
            opener.open(login, timeout=10)
        cookie = moved.value.headers["Set-Cookie"].split(";")[0]
        moved.value.close()
        with urllib.request.urlopen(urllib.request.Request(scoped + "/?lang=en", headers={"Cookie": cookie}),
                                    timeout=10) as shown:
            assert "Scans: <span>30</span>" in shown.read().decode()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


class NoRedirect(urllib.request.HTTPRedirectHandler):
    """Stop at the login's 303, so its Set-Cookie can be read."""

    def redirect_request(self, *args, **kwargs):
        return None

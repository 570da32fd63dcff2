"""The back office in a real headless Chromium (Playwright) against gunicorn, on SQLite and PostgreSQL.

One flow per database: register a venue in three steps with the code read from the
console SMS file, log out, log in again with a new code, see the venue in "Quản lý địa
điểm", add a co-manager, see real scans (a real gate run through a real Mosquitto and the
collector) in "Lịch sử quét Mã QR" with the right count, export XLSX; then English
(remembered) and a phone-sized screen. The SQLite run saves the README's screenshots in
docs/backoffice/ when QRGATE_SCREENSHOTS=1 is set.
"""

from __future__ import annotations

import io
import os
import threading
from pathlib import Path

import pytest

from tests.backoffice_support import PHONE_VIEWPORT, REPO, BackofficeSite
from tests.history_support import pg_server_url, pg_url  # noqa: F401 - fixtures

SCREENSHOTS = REPO / "docs" / "backoffice"
PHONE = "0386632627"
PHONE_E164 = "+84386632627"
CO_MANAGER = "0912345678"
VENUE = {"name": "Sở Lao động - Thương binh và Xã hội tỉnh Thanh Hóa", "province": "Thanh Hóa",
         "district": "Thành phố Thanh Hóa", "ward": "Phường Đông Thọ", "address": "Số 74 Tô Vĩnh Diện",
         "registrant": "Vũ Thị Hương", "phone": PHONE}
SCANS = 4
WAIT_S = 60.0


@pytest.fixture(params=["sqlite", "postgresql"])
def site(request, tmp_path, shared_broker, topic_prefix):
    database_url = request.getfixturevalue("pg_url") if request.param == "postgresql" else None
    s = BackofficeSite(tmp_path, database_url,
                       mqtt={"host": shared_broker.host, "port": shared_broker.port, "prefix": topic_prefix})
    s.init()
    s.start()
    s.kind = request.param
    try:
        yield s
    finally:
        s.stop()


def shot(page, name: str, site) -> None:
    """Take the page's screenshot (the page must render); into docs/backoffice/ only when
    QRGATE_SCREENSHOTS=1, so a test run leaves the tree as it found it."""
    if site.kind != "sqlite":
        return
    folder = SCREENSHOTS if os.environ.get("QRGATE_SCREENSHOTS") == "1" else site.folder / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / f"{name}.png"), full_page=True)


def error_beside(page, field: str) -> str:
    return page.locator(f"#error-{field}").first.inner_text()


def register_venue(page, site, values: dict[str, str], back_once: bool = False) -> str:
    """Steps 1 to 3 of "Đăng ký địa điểm"; returns the new venue's id.

    With back_once, "Quay lại" from step 2 first: step 1 keeps what was typed, and going on
    again within the minute sends no second SMS (the first code stays good).
    """
    page.goto(site.base + "/register/")
    for field, value in values.items():
        page.fill(f"#id_{field}", value)
    page.click("#next")
    page.wait_for_url("**/register/otp/")
    if back_once:
        sent = len(site.messages())
        page.click("#back")
        page.wait_for_url("**/register/")
        assert page.input_value("#id_name") == values["name"]
        page.click("#next")
        page.wait_for_url("**/register/otp/")
        assert len(site.messages()) == sent
    page.fill("#id_code", site.last_code("+84" + values["phone"][1:]))
    page.click("#next")
    page.wait_for_url("**/register/done/**")
    return page.inner_text("#venue-id")


def run_gate_scans(site, tmp_path: Path, venue_id: str, broker, prefix: str) -> int:
    """A real gate scans SCANS passes (signed by the back office's issuer key) with the collector
    storing into the back office's database; returns how many events were stored."""
    from provisioning.history.collector import CollectorSettings, ScanCollector
    from provisioning.history.store import open_store
    from provisioning.keys import load_private_key
    from tests.daemon_support import run_gate, write_config, write_pass_images

    gate_dir = tmp_path / "gate"
    gate_dir.mkdir()
    issuers = gate_dir / "issuers"
    issuers.mkdir()
    (issuers / "issuer.pem").write_bytes((site.folder / "keys" / "issuer.pub.pem").read_bytes())
    write_pass_images(gate_dir / "images", load_private_key(site.folder / "keys" / "issuer.pem"), SCANS)
    config = write_config(gate_dir, device={"id": "gate-1", "venue_id": venue_id},
                          mqtt={"host": broker.host, "port": broker.port, "prefix": prefix})
    db_url = site.database_url_for_tests
    store = open_store(db_url)
    # the gate's device key, made before its first start as it would make it, and registered
    # as `qrgate history device add` does: the collector stores only events it signed
    from firmware.adapters.device_key import DEVICE_KEY_FILE, load_or_create_device_key
    from firmware.core.event_signature import public_key_text

    device_key = load_or_create_device_key(gate_dir / "state" / DEVICE_KEY_FILE)
    store.register_device("gate-1", public_key_text(device_key.public_key()), "test", 0)
    collector = ScanCollector(store, CollectorSettings(host=broker.host, port=broker.port, prefix=prefix,
                                                       client_id=f"bo-{prefix}"[:60]))
    stop = threading.Event()
    thread = threading.Thread(target=collector.run, args=(stop,), name="qrgate-history-test")
    thread.start()
    try:
        with collector.changed:
            assert collector.changed.wait_for(lambda: collector.stats.subscribed, timeout=WAIT_S)
        result, events = run_gate(config)
        assert result.returncode == 0, result.stderr
        assert len(events) == SCANS
        with collector.changed:
            assert collector.changed.wait_for(lambda: collector.stats.stored >= SCANS, timeout=WAIT_S), \
                collector.stats
        return collector.stats.stored
    finally:
        stop.set()
        thread.join(timeout=WAIT_S)
        store.close()


def test_register_login_manage_history_in_vietnamese_english_and_on_a_phone(browser, site, tmp_path,
                                                                           shared_broker, topic_prefix):
    context = browser.new_context(accept_downloads=True, locale="en-US")
    page = context.new_page()
    # Step 1 refuses an empty form with every error beside its field, in the 2021 page's words.
    page.goto(site.base + "/register/")
    assert page.locator("html").get_attribute("lang") == "vi"  # Vietnamese whatever the browser asks
    assert "Đăng ký mã QR địa điểm qua 3 bước sau:" in page.inner_text("main")
    page.click("#next")
    for field, label in (("name", "Tên địa điểm"), ("province", "Tỉnh/TP của địa điểm"),
                         ("ward", "Phường/Xã của địa điểm"), ("address", "Số nhà, phố, tổ dân phố/thôn/đội"),
                         ("registrant", "Họ và tên người đăng ký"), ("phone", "Số điện thoại người đăng ký")):
        assert error_beside(page, field) == f"Bạn vui lòng nhập thông tin {label}"
    # ... and a bad phone and an unknown ward with the CLI's messages, all at once.
    page.fill("#id_phone", "123")
    page.fill("#id_province", "Thanh Hóa")
    page.fill("#id_ward", "Phường Không Có")
    page.click("#next")
    assert "is not a Vietnamese mobile number" in error_beside(page, "phone")
    assert "is not a known unit" in error_beside(page, "ward")
    assert page.locator("#error-name").count() == 1
    shot(page, "register-step1-errors", site)

    # With the script, the ward suggestions follow the province and district as they are typed.
    page.goto(site.base + "/register/")
    assert page.locator("#wards option").count() == 0
    page.fill("#id_province", "Thanh Hóa")
    page.fill("#id_district", "Thành phố Thanh Hóa")
    page.press("#id_district", "Tab")
    page.wait_for_selector('#wards option[value="Phường Đông Thọ"]', state="attached")
    assert page.locator('#districts option[value="Huyện Triệu Sơn"]').count() == 1

    venue_id = register_venue(page, site, VENUE, back_once=True)
    assert venue_id.startswith("v-")
    assert "Hoàn thành" in page.inner_text("main")
    assert "Đông Thọ" in page.inner_text("#done")
    shot(page, "register-step3-done", site)
    with page.expect_download() as png:
        page.click("#poster-png")
    assert Path(png.value.path()).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # Thoát, then log in again with a new code.
    page.click("#logout")
    page.wait_for_url("**/login/")
    page.fill("#id_phone", PHONE)
    codes_before = len(site.messages())
    page.click("#send-code")
    page.wait_for_url("**/login/otp/")
    assert len(site.messages()) == codes_before + 1
    assert "Mã OTP sẽ hết hạn trong 4 phút" in page.inner_text("#countdown") or \
        "Mã OTP sẽ hết hạn trong 5 phút" in page.inner_text("#countdown")
    page.fill("#id_code", site.last_code(PHONE_E164))
    page.click("#verify")
    page.wait_for_url("**/venues/")
    assert page.inner_text("#venue-count") == "Danh sách các địa điểm của Bạn: 1 địa điểm"
    row = page.inner_text("#venues tbody tr")
    assert VENUE["name"] in row and "Vũ Thị Hương" in row and "0386 632 ***" in row and PHONE not in row
    shot(page, "manage-venues", site)

    # A co-manager, invited by phone; a label.
    page.click(f"text={VENUE['name']}")
    page.fill("#id_label", "Cổng chính")
    page.click("#save-label")
    page.fill("#id_phone", CO_MANAGER)
    page.click("#invite")
    managers = page.inner_text("#managers")
    assert "0912 345 ***" in managers and "Đồng quản lý" in managers
    page.goto(site.base + "/venues/")
    assert "Cổng chính" in page.inner_text("#venues")

    # Real scans from a real gate through Mosquitto and the collector.
    stored = run_gate_scans(site, tmp_path, venue_id, shared_broker, topic_prefix)
    assert stored == SCANS
    page.goto(site.base + "/history/")
    assert page.inner_text("#count") == f"Lịch sử quét Mã QR tại các địa điểm mà tôi quản lý: {SCANS}"
    assert VENUE["name"] in page.inner_text("#history")  # venues by name
    assert "NGUYEN VAN *** 0900 000 ***" in page.inner_text("#history")
    reasons = page.locator("#history tbody tr td:last-child").all_inner_texts()
    assert reasons and set(reasons) == {"Hợp lệ"}, "reasons in words, not codes"
    shot(page, "history", site)
    with page.expect_download() as xlsx:
        page.click("#export-xlsx")
    import openpyxl

    sheet = openpyxl.load_workbook(io.BytesIO(Path(xlsx.value.path()).read_bytes())).active
    assert sheet.max_row == SCANS + 1
    header = [c.value for c in sheet[1]]
    assert {sheet.cell(2, header.index("venue_id") + 1).value, sheet.cell(2, header.index("venue_name") + 1).value} \
        == {venue_id, VENUE["name"]}
    assert sheet.freeze_panes == "A2" and sheet.auto_filter.ref
    # A filter that matches nothing.
    page.select_option("#decision", "denied")
    page.click("#filter")
    assert page.inner_text("#count").endswith(": 0")

    # English, then remembered on the next page.
    page.goto(site.base + "/venues/?lang=en")
    assert page.inner_text("#venue-count") == "Your venues: 1"
    page.goto(site.base + "/history/")
    assert page.inner_text("#count") == f"QR scans at the venues I manage: {SCANS}"
    assert page.locator("html").get_attribute("lang") == "en"
    assert set(page.locator("#history tbody tr td:last-child").all_inner_texts()) == {"Valid"}
    shot(page, "history-en", site)
    page.goto(site.base + "/venues/?lang=vi")
    context.close()

    # A phone-sized screen: nothing wider than the screen, the table as stacked cards.
    phone = browser.new_context(viewport=PHONE_VIEWPORT, is_mobile=True, has_touch=True)
    mobile = phone.new_page()
    mobile.goto(site.base + "/register/")
    assert mobile.evaluate("document.documentElement.scrollWidth") <= PHONE_VIEWPORT["width"]
    shot(mobile, "register-phone", site)
    mobile.goto(site.base + "/login/")
    mobile.fill("#id_phone", CO_MANAGER)
    mobile.click("#send-code")
    mobile.fill("#id_code", site.last_code("+84912345678"))
    mobile.click("#verify")
    mobile.wait_for_url("**/venues/")
    assert mobile.inner_text("#venue-count") == "Danh sách các địa điểm của Bạn: 1 địa điểm"
    mobile.goto(site.base + "/history/")
    assert mobile.inner_text("#count").endswith(f": {SCANS}")
    assert mobile.evaluate("document.documentElement.scrollWidth") <= PHONE_VIEWPORT["width"]
    shot(mobile, "history-phone", site)
    phone.close()

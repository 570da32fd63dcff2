"""The "Truy vết" page (issue 14, items 2 and 6) in a real headless Chromium against gunicorn.

Two venues registered in the back office with their own HMAC secrets; a case (a CCCD number)
visited both, with a contact at each. The health office's staff (granted by `qrgate
backoffice healthoffice`) trace by the CCCD number and see both venues by name, both contacts
masked, and a CSV; a manager of one venue sees only that venue (the other venue's events are
not even read), cannot reach the other venue by editing the form or the URL, and takes away
no subjects; anonymous people and people without the role are refused; every trace leaves an
audit row naming the logged-in person before anything is shown; hostile input gets a clear
refusal and no trace. SQLite for everything, PostgreSQL for the main flow too.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from playwright.sync_api import expect

from firmware.core.events import protect_subject
from provisioning.history.events import HistoryEvent, parse_scan
from provisioning.history.store import open_store
from provisioning.history.trace_store import audit_records, ensure_audit_table, run_trace
from provisioning.history.tracing import MINUTE_MS, TraceRules
from tests.backoffice_support import BackofficeSite, WebClient, e164, http_login, login, qrgate, rows
from tests.history_support import BASE_MS, pg_server_url, pg_url, scan_dict  # noqa: F401 - fixtures
from tests.test_backoffice_web import shot

T0 = BASE_MS  # 2026-07-02 11:00 UTC, 18:00 in Asia/Ho_Chi_Minh
VENUE_A, VENUE_B = "v-a1a1a1a1a1a1", "v-b2b2b2b2b2b2"
NAME_A, NAME_B = "Bến xe Triệu Sơn", "Trường Tiểu học Dân Lực"
SECRET = {VENUE_A: bytes([0x11]) * 32, VENUE_B: bytes([0x22]) * 32}
CASE_ID = "038199001234"  # the case's CCCD number
LE, PHAM, TRAN = "001190000001", "001190000002", "001190000003"
HEALTH, MANAGER_A, MANAGER_B, NOBODY = "0977555666", "0977000111", "0977000222", "0977333444"
CASE_SHOWN, LE_SHOWN = "NGUYỄN VĂN *** 0966 323 ***", "LÊ THỊ *** 0901 111 ***"
PHAM_SHOWN, TRAN_SHOWN = "PHẠM VĂN *** 0987 654 ***", "TRẦN MINH *** 0912 000 ***"
DAY = {"since": "2026-07-02T00:00", "until": "2026-07-03T00:00"}
REASON = "F0 2026-117"


def at(person: str, venue: str) -> str:
    """The person's subject as the venue's gates store it."""
    return protect_subject(person, "hmac", SECRET[venue]) or ""


def event(person: str, venue: str, device: str, direction: str, minute: int, display: str,
          decision: str = "granted") -> HistoryEvent:
    ts_ms = T0 + minute * MINUTE_MS
    data = scan_dict(device, minute + 1000, ts_ms, venue=venue, decision=decision, subject=at(person, venue),
                     direction=direction, display=display, event_id=f"{person}-{venue}-{direction}-{minute}")
    parsed = parse_scan(device, json.dumps(data).encode(), ts_ms)
    assert isinstance(parsed, HistoryEvent)
    return parsed


SCENARIO = [
    # Venue A: the case 18:00-20:00 (in at one gate, out at the other); Lê Thị 19:00-21:00 (60 min
    # together); Trần Minh in at 19:50 with no out (10 min: not a contact); someone turned away.
    event(CASE_ID, VENUE_A, "gate-a1", "in", 0, CASE_SHOWN), event(CASE_ID, VENUE_A, "gate-a2", "out", 120, CASE_SHOWN),
    event(LE, VENUE_A, "gate-a2", "in", 60, LE_SHOWN), event(LE, VENUE_A, "gate-a1", "out", 180, LE_SHOWN),
    event(TRAN, VENUE_A, "gate-a1", "in", 110, TRAN_SHOWN),
    event("001190000009", VENUE_A, "gate-a1", "in", 30, "ĐỖ VĂN *** 0911 222 ***", decision="denied"),
    # Venue B: the case 22:00-23:00; Phạm Văn in at 22:10, no out (a 60 min visit: 50 min together).
    event(CASE_ID, VENUE_B, "gate-b1", "in", 240, CASE_SHOWN), event(CASE_ID, VENUE_B, "gate-b1", "out", 300, CASE_SHOWN),
    event(PHAM, VENUE_B, "gate-b1", "in", 250, PHAM_SHOWN),
]

SETUP = f"""
from backoffice.personal.models import VenueSecret
from backoffice.venues.models import Management, Venue
from backoffice.venues.services import user_for_phone
for venue_id, name, phone, secret in (({VENUE_A!r}, {NAME_A!r}, {e164(MANAGER_A)!r}, {SECRET[VENUE_A].hex()!r}),
                                      ({VENUE_B!r}, {NAME_B!r}, {e164(MANAGER_B)!r}, {SECRET[VENUE_B].hex()!r})):
    user = user_for_phone(phone, "Quản lý")
    venue = Venue.objects.create(venue_id=venue_id, name=name, full_address="Thanh Hóa", registrant=user,
                                 registrant_name="Quản lý", record={{}})
    Management.objects.create(venue=venue, user=user, role=Management.REGISTRANT)
    VenueSecret.objects.create(venue=venue, secret_hex=secret)
user_for_phone({e164(NOBODY)!r}, "Người dân")
import json
print(json.dumps({{u.username: u.pk for u in (user_for_phone(p) for p in {[e164(p) for p in (HEALTH, MANAGER_A)]!r})}}))
"""


def make_world(folder: Path, database_url: str | None) -> BackofficeSite:
    site = BackofficeSite(folder, database_url, otp={"per_client_per_hour": 500, "per_phone_per_hour": 50})
    site.init()
    site.pks = json.loads(site.django(SETUP).stdout)  # type: ignore[attr-defined]
    done = qrgate("backoffice", "healthoffice", "--config", str(site.config), "--phone", HEALTH, "--name", "Bác sĩ Lan")
    assert done.returncode == 0, done.stderr
    store = open_store(site.database_url_for_tests)
    try:
        store.add(SCENARIO)
    finally:
        store.close()
    site.start()
    return site


def user_pk(site: BackofficeSite, phone: str) -> int:
    return int(site.pks[e164(phone)])  # type: ignore[attr-defined]


def audits(site: BackofficeSite):
    store = open_store(site.database_url_for_tests)
    try:
        return audit_records(store)
    finally:
        store.close()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    site = make_world(tmp_path_factory.mktemp("trace-sqlite"), None)
    try:
        yield site
    finally:
        site.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def any_world(request, tmp_path):
    if request.param == "sqlite":
        yield request.getfixturevalue("world")
        return
    site = make_world(tmp_path, request.getfixturevalue("pg_url"))
    try:
        yield site
    finally:
        site.stop()


def fill_trace(page, site: BackofficeSite, case: str = CASE_ID, by: str = "person_id", venue: str = "",
               reason: str = REASON) -> None:
    page.goto(site.base + "/trace/")
    page.select_option("#by", by)
    page.fill("#case", case)
    page.fill("#since", DAY["since"])
    page.fill("#until", DAY["until"])
    if venue:
        page.select_option("#venue", venue)
    page.fill("#reason", reason)


def trace_fields(**over: str) -> dict[str, str]:
    return {"by": "person_id", "case": CASE_ID, **DAY, "min_overlap_min": "15", "default_dwell_min": "60",
            "max_dwell_h": "12", "reason": REASON, **over}


# --------------------------------------------------------------------------- the health office and a manager

def test_health_office_traces_across_venues_and_a_manager_only_within_their_own(browser, any_world):
    site = any_world
    before = len(audits(site))
    staff = login(browser, site, HEALTH)
    assert staff.inner_text("#nav-trace") == "Truy vết"
    fill_trace(staff, site)
    staff.click("#trace")
    staff.wait_for_selector("#result")
    assert staff.inner_text("#case-display") == CASE_SHOWN
    assert rows(staff, "visits") == [[NAME_A, "2026-07-02 18:00", "2026-07-02 20:00", "Quét ra"],
                                     [NAME_B, "2026-07-02 22:00", "2026-07-02 23:00", "Quét ra"]]
    assert rows(staff, "contacts") == [[LE_SHOWN, NAME_A, "2026-07-02 19:00", "2026-07-02 20:00", "60", "1"],
                                       [PHAM_SHOWN, NAME_B, "2026-07-02 22:10", "2026-07-02 23:00", "50", "1"]]
    assert staff.inner_text("#contact-count") == "Người tiếp xúc: 2 người (2 lượt)"
    assert TRAN_SHOWN not in staff.content()  # 10 min together is not a contact
    # The typed id is nowhere in the answer: the form holds it sealed, and shows its last digits.
    assert CASE_ID not in staff.content() and staff.input_value("#case") == ""
    assert "***234" in staff.get_attribute("#case", "placeholder")
    token = staff.get_attribute("#case_token", "value")
    assert staff.locator("#trace-actions").count() == 1  # the place of "Cách ly" and the reveal
    shot(staff, "trace", site)
    # The audit row was written, naming the logged-in person (masked phone, never the full one).
    records = audits(site)
    assert len(records) == before + 1
    record = records[-1]
    assert (record.action, record.reason) == ("trace", REASON)
    assert record.operator == f"backoffice:{user_pk(site, HEALTH)} 0977 555 ***"
    assert record.searched["venues"] == "all" and record.searched["role"] == "health_office"
    assert sorted(record.searched["subjects"]) == sorted([at(CASE_ID, VENUE_A), at(CASE_ID, VENUE_B)])
    assert sorted(record.result["contact_subjects"]) == sorted([at(LE, VENUE_A), at(PHAM, VENUE_B)])
    assert CASE_ID not in json.dumps([r.searched for r in records])
    # CSV from the same report code, audited too; hashed subjects kept for the health office.
    with staff.expect_download() as download:
        staff.click("#export-csv")
    text = Path(download.value.path()).read_text(encoding="utf-8-sig")
    table = list(csv.DictReader(io.StringIO(text)))
    assert [(r["kind"], r["venue_id"], r["display"]) for r in table] == [
        ("visit", VENUE_A, CASE_SHOWN), ("visit", VENUE_B, CASE_SHOWN),
        ("contact", VENUE_A, LE_SHOWN), ("contact", VENUE_B, PHAM_SHOWN)]
    assert table[2]["subject"] == at(LE, VENUE_A) and CASE_ID not in text
    assert len(audits(site)) == before + 2 and audits(site)[-1].searched["format"] == "csv"
    staff.close()

    # The manager of venue A: the health office's sealed id does not open for them.
    manager = login(browser, site, MANAGER_A)
    fill_trace(manager, site, case="")
    manager.evaluate(f"document.querySelector('form').insertAdjacentHTML('beforeend', "
                     f"'<input type=hidden name=case_token value={token}>')")
    with manager.expect_response(lambda r: r.url.endswith("/trace/") and r.request.method == "POST") as answer:
        manager.click("#trace")
    assert answer.value.status == 400
    # The response can arrive before the browser swaps the document: expect() retries until it has.
    expect(manager.locator("main")).to_contain_text("Bạn vui lòng nhập thông tin Mã định danh")
    # The same case typed by the manager: only venue A's visit and contact.
    fill_trace(manager, site)
    assert [o.get_attribute("value") for o in manager.locator("#venue option").all()] == ["", VENUE_A]
    manager.click("#trace")
    manager.wait_for_selector("#result")
    assert rows(manager, "visits") == [[NAME_A, "2026-07-02 18:00", "2026-07-02 20:00", "Quét ra"]]
    assert rows(manager, "contacts") == [[LE_SHOWN, NAME_A, "2026-07-02 19:00", "2026-07-02 20:00", "60", "1"]]
    body = manager.content()
    assert NAME_B not in body and PHAM_SHOWN not in body and manager.locator("#trace-actions").count() == 0
    record = audits(site)[-1]
    assert record.operator == f"backoffice:{user_pk(site, MANAGER_A)} 0977 000 ***"
    assert record.searched["venues"] == [VENUE_A] and record.searched["subjects"] == [at(CASE_ID, VENUE_A)]
    assert record.result["contact_subjects"] == [at(LE, VENUE_A)]
    # Their XLSX has no subjects at all.
    from openpyxl import load_workbook

    with manager.expect_download() as download:
        manager.click("#export-xlsx")
    assert download.value.suggested_filename.endswith(".xlsx")
    book = load_workbook(io.BytesIO(Path(download.value.path()).read_bytes()))
    contacts = list(book["contacts"].values)
    assert contacts[0][1] == "subject" and [r[1] for r in contacts[1:]] == [None] and contacts[1][2] == LE_SHOWN
    # In English (the locale file), the same page.
    manager.goto(site.base + "/trace/?lang=en")
    assert manager.inner_text("h1") == "Contact tracing" and manager.inner_text("#nav-trace") == "Contact tracing"
    assert manager.inner_text("label[for=reason]") == "Reason for the trace *"
    manager.close()


def test_a_manager_cannot_reach_another_venue_by_editing_the_form_or_the_url(browser, world):
    site = world
    manager = login(browser, site, MANAGER_A)
    # The form edited in the browser to ask for venue B: refused, and the refusal is audited.
    fill_trace(manager, site)
    manager.evaluate(f"document.querySelector('#venue').add(new Option('B', '{VENUE_B}', true, true))")
    before = len(audits(site))
    with manager.expect_response(lambda r: r.url.endswith("/trace/") and r.request.method == "POST") as answer:
        manager.click("#trace")
    assert answer.value.status == 403
    expect(manager.locator("main")).to_contain_text("Bạn chỉ được truy vết tại các địa điểm mà Bạn quản lý.")
    assert PHAM_SHOWN not in manager.content() and NAME_B not in manager.content()
    refused = audits(site)[before:]
    assert [(r.action, r.searched["venue"]) for r in refused] == [("trace_refused", VENUE_B)]
    # The case's subject at venue B, typed as a stored subject: nothing, since B is not read.
    fill_trace(manager, site, case=at(CASE_ID, VENUE_B), by="subject")
    manager.click("#trace")
    manager.wait_for_selector("#result")
    assert manager.locator("#no-visits").count() == 1 and manager.locator("#no-contacts").count() == 1
    assert PHAM_SHOWN not in manager.content() and CASE_SHOWN not in manager.content()
    # A URL with the fields: GET only shows the empty form, it never traces.
    before = len(audits(site))
    answer = manager.goto(site.base + f"/trace/?venue={VENUE_B}&by=person_id&case={CASE_ID}&since=2026-07-02"
                                      "&until=2026-07-03&reason=x")
    assert answer.status == 200 and manager.locator("#result").count() == 0
    assert len(audits(site)) == before
    manager.close()


def test_anonymous_people_and_people_without_the_role_are_refused(browser, world):
    site = world
    before = len(audits(site))
    anonymous = browser.new_page()
    anonymous.goto(site.base + "/trace/")
    assert anonymous.url.endswith("/login/?next=/trace/")
    assert anonymous.locator("#nav-trace").count() == 0
    anonymous.close()
    # A plain person (no venue, not the health office): no menu entry, 403 on the page and the form.
    person = login(browser, site, NOBODY)
    assert person.locator("#nav-trace").count() == 0
    answer = person.goto(site.base + "/trace/")
    assert answer.status == 403 and "Bạn không có quyền làm việc này." in person.inner_text("main")
    person.close()
    client = http_login(site, NOBODY)
    token = client.csrf("/me/")
    status, body, _ = client.request("POST", "/trace/", "&".join(
        f"{k}={v}" for k, v in {**trace_fields(), "csrfmiddlewaretoken": token}.items()).encode(),
        {"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 403 and LE_SHOWN not in body
    # Not logged in, over HTTP: sent to the login page, nothing traced.
    status, _, headers = WebClient(site.base).post("/trace/", trace_fields(), csrf=False)
    assert status in (302, 403) and (status == 403 or "/login/" in headers["Location"])
    assert len(audits(site)) == before


def test_the_role_is_granted_and_revoked_by_command_and_checked_on_every_request(world):
    site = world
    phone = "0966111222"
    done = qrgate("backoffice", "healthoffice", "--config", str(site.config), "--phone", phone)
    assert done.returncode == 0 and "has the health office role" in done.stdout, done.stderr
    client = http_login(site, phone)
    status, body, _ = client.post("/trace/", trace_fields())
    assert status == 200 and PHAM_SHOWN in body and LE_SHOWN in body
    done = qrgate("backoffice", "healthoffice", "--config", str(site.config), "--phone", phone, "--revoke")
    assert done.returncode == 0 and "no longer has" in done.stdout
    assert client.get("/trace/")[0] == 403  # the same session, now refused
    assert qrgate("backoffice", "healthoffice", "--config", str(site.config), "--phone", "12").returncode == 78
    logged = site.django("from backoffice.people.models import AuditEntry\n"
                         "print(sorted(AuditEntry.objects.filter(action__startswith='health_office')"
                         ".values_list('action', flat=True)))\n")
    assert "health_office_granted" in logged.stdout and "health_office_revoked" in logged.stdout


# --------------------------------------------------------------------------- hostile input

HOSTILE = [
    ({"since": "not a time"}, "không phải là thời gian"),
    ({"since": "2026-02-30T10:00"}, "không phải là thời gian"),
    ({"until": "99999-01-01"}, "không phải là thời gian"),
    ({"since": "2026-07-03T00:00", "until": "2026-07-02T00:00"}, "phải sau thời điểm bắt đầu"),
    ({"since": "2020-01-01", "until": "2026-07-03"}, "dài quá 62 ngày"),
    ({"since": "100000000d"}, "không phải là thời gian"),
    ({"min_overlap_min": "nan"}, "Thời gian tiếp xúc tối thiểu (phút) phải từ 0 đến 10080"),
    ({"min_overlap_min": "1e309"}, "Thời gian tiếp xúc tối thiểu (phút) phải từ 0 đến 10080"),
    ({"max_dwell_h": "-1"}, "Thời gian ở lại tối đa (giờ) phải lớn hơn 0"),
    ({"default_dwell_min": "0.0000001"}, "ít nhất 1 giây"),
    ({"default_dwell_min": "mười"}, "không phải là một số"),
    ({"case": "' OR '1'='1"}, "Mã định danh của người nhiễm chỉ gồm"),
    ({"case": "x'; DROP TABLE trace_audit; --"}, "Mã định danh của người nhiễm chỉ gồm"),
    ({"case": "<script>alert(1)</script>"}, "Mã định danh của người nhiễm chỉ gồm"),
    ({"case": "a" * 129}, "Mã định danh của người nhiễm chỉ gồm"),
    ({"case": "abc\x00def"}, "Mã định danh của người nhiễm chỉ gồm"),
    ({"case": ""}, "Bạn vui lòng nhập thông tin Mã định danh"),
    ({"by": "1 OR 1"}, "Cách tìm người nhiễm không đúng"),
    ({"reason": ""}, "Bạn vui lòng nhập thông tin Lý do truy vết"),
    ({"reason": "ok\x00\x1b[2J"}, "ký tự điều khiển"),
    ({"reason": "x" * 301}, "dài quá 300 ký tự"),
    ({"venue": "../../etc/passwd"}, "Địa điểm không đúng"),
    ({"export": "pdf"}, "Định dạng tệp không đúng"),
]


@pytest.mark.parametrize("changed,refusal", HOSTILE, ids=[str(i) for i in range(len(HOSTILE))])
def test_hostile_input_gets_a_clear_refusal_and_no_trace(world, changed, refusal):
    site = world
    client = _staff_client(site)
    before = len(audits(site))
    status, body, _ = client.post("/trace/", trace_fields(**changed))
    assert status == 400 and 'role="alert"' in body and refusal in body, body[body.find("<main>"):][:1500]
    assert 'id="result"' not in body and LE_SHOWN not in body and "<script>alert" not in body
    assert len(audits(site)) == before
    assert "Traceback" not in site.log()


_CLIENTS: dict[str, WebClient] = {}


def _staff_client(site: BackofficeSite) -> WebClient:
    """One logged-in health office session for the hostile inputs (a login each would hit the SMS limits)."""
    if site.base not in _CLIENTS:
        _CLIENTS[site.base] = http_login(site, HEALTH)
    return _CLIENTS[site.base]


def test_an_injection_in_the_reason_is_kept_as_text_and_shown_escaped(browser, world):
    site = world
    staff = login(browser, site, HEALTH)
    dialogs: list[str] = []
    staff.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    fill_trace(staff, site, reason="<img src=x onerror=alert(1)> '); DELETE FROM trace_audit; --")
    staff.click("#trace")
    staff.wait_for_selector("#result")
    assert staff.input_value("#reason") == "<img src=x onerror=alert(1)> '); DELETE FROM trace_audit; --"
    assert staff.locator("main img").count() == 0 and dialogs == []
    assert audits(site)[-1].reason == "<img src=x onerror=alert(1)> '); DELETE FROM trace_audit; --"
    # And in the browser, the injection in the id field is refused beside the form.
    fill_trace(staff, site, case="1' UNION SELECT secret_hex FROM personal_venuesecret --")
    staff.click("#trace")
    staff.wait_for_selector("p.error[role=alert]")
    assert "Mã định danh của người nhiễm chỉ gồm" in staff.inner_text("p.error[role=alert]")
    assert SECRET[VENUE_A].hex() not in staff.content()
    staff.close()


def test_no_audit_row_no_answer(world):
    """If the audit row cannot be written (here a trigger refuses it), the page shows no contact."""
    site = world
    store = open_store(site.database_url_for_tests)
    try:
        ensure_audit_table(store)
        store._write("CREATE TRIGGER refuse_audit BEFORE INSERT ON trace_audit"
                     " BEGIN SELECT RAISE(ABORT, 'disk full'); END", [])
        try:
            status, body, _ = _staff_client(site).post("/trace/", trace_fields())
            csv_status, csv_body, headers = _staff_client(site).post("/trace/", trace_fields(export="csv"))
        finally:
            store._write("DROP TRIGGER refuse_audit", [])
    finally:
        store.close()
    assert status == 503 and "không có kết quả nào được hiển thị" in body
    assert LE_SHOWN not in body and PHAM_SHOWN not in body and 'id="result"' not in body
    assert csv_status == 503 and "attachment" not in headers.get("Content-Disposition", "") and LE_SHOWN not in csv_body
    status, body, _ = _staff_client(site).post("/trace/", trace_fields())
    assert status == 200 and LE_SHOWN in body  # the same trace, once the audit takes rows again


# --------------------------------------------------------------------------- what a manager's trace reads

def test_a_trace_limited_to_some_venues_reads_no_event_of_the_others(tmp_path):
    url = str(tmp_path / "history.sqlite")
    store = open_store(url)
    try:
        store.add(SCENARIO)
        subjects = frozenset({at(CASE_ID, VENUE_A), at(CASE_ID, VENUE_B)})
        since, until, rules = T0 - 3600_000, T0 + 12 * 3600_000, TraceRules()
        everywhere = run_trace(store, subjects, since, until, rules)
        mine = run_trace(store, subjects, since, until, rules, frozenset({VENUE_A}))
        nothing = run_trace(store, subjects, since, until, rules, frozenset())
    finally:
        store.close()
    assert {v.venue_id for v in everywhere.result.visits} == {VENUE_A, VENUE_B}
    assert [(v.venue_id, v.from_ms) for v in mine.result.visits] == [(VENUE_A, T0)]
    assert [c.subject for c in mine.result.contacts] == [at(LE, VENUE_A)]
    # Every scan the limited trace read is venue A's: its displays come from the rows read.
    assert {venue for _, venue in mine.displays} == {VENUE_A}
    granted_at_a = [e for e in SCENARIO if e.venue_id == VENUE_A and e.decision == "granted"]
    assert mine.rows_read == 2 + len(granted_at_a) < everywhere.rows_read  # the case's 2, then the visit's
    assert nothing.result.visits == [] and nothing.rows_read == 0


def test_the_sealed_case_opens_only_for_its_person_with_its_key_and_in_time():
    from backoffice.tracing.case_token import TOKEN_TTL_S, open_case, seal_case

    key, now = "k" * 50, 1_782_990_000.0
    token = seal_case(key, "person_id", CASE_ID, 7, now)
    assert CASE_ID not in token and open_case(key, token, 7, now + 60) == ("person_id", CASE_ID)
    assert open_case(key, token, 8, now) is None  # another person
    assert open_case("x" * 50, token, 7, now) is None  # another site
    assert open_case(key, token, 7, now + TOKEN_TTL_S + 1) is None and open_case(key, token, 7, now - 5) is None
    flipped = token[:20] + ("A" if token[20] != "A" else "B") + token[21:]
    for forged in (flipped, "", "!!!", "QUJD", "A" * 600, token[:10]):
        assert open_case(key, forged, 7, now) is None, forged

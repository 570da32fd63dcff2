"""The health office's actions on "Truy vết" (issue 14, items 3 and 4 on the page): "Cách ly" and
the reveal, in a real headless Chromium against gunicorn, with a real Mosquitto and real gates.

The world is test_quarantine's (two venues with their own HMAC secrets, a back office that issued
one contact's pass, gates built on mock pins with fake clocks), with every scan's contact sealed
to the health office's X25519 key as a gate with ``privacy.escrow_key`` stores it. The health
office traces the case by id, presses "Cách ly", confirms, and sees each venue's publication and
each gate's answer (one gate took it, one known gate never answered); the real gates then refuse
the contacts and the case with ``denied``. It uploads its private key to open the contacts: the
page shows exactly the case's and the contacts' names, full phones and ids (an unrelated person at
the same venue, and one at the same time at another venue, stay closed), with ``no-store``, and a
CSV for the callers; a wrong key, a public key, an encrypted key, garbage and a key of an unknown
algorithm are refused with their reason and no crash; the key is on no disk and in no log after
the requests. A venue manager and a plain person get 403 for both actions, and each attempt is in
``trace_audit``. Hostile quarantine inputs and forged or stale trace tokens are refused, nothing
stored or sent.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import secrets as random
import time
import uuid
import zlib
from pathlib import Path

import cbor2
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from firmware.core.escrow import Contact, seal_contact
from firmware.core.list_message import venue_list_topic
from provisioning import keys
from provisioning.history.events import HistoryEvent, parse_scan
from provisioning.history.store import open_store
from provisioning.history.trace_store import audit_records
from provisioning.history.tracing import MINUTE_MS
from tests.backoffice_support import BackofficeSite, WebClient, e164, http_login, login, qrgate, rows
from tests.daemon_support import trust_new_key, valid_pass
from tests.history_support import BASE_MS, pg_server_url, pg_url, scan_dict  # noqa: F401 - fixtures
from tests.mqtt_support import Collector, publish_raw
from tests.test_backoffice_web import shot
from tests.test_quarantine import (CASE_ID, CONTACT_A, CONTACT_C, NAMED_B, SECRETS, Gate, backoffice_data,
                                   subject)

DAY_S = 86400
WAIT_S = 30.0
UNRELATED = "079444444444"  # at venue 2 at the same time as the case: never met them
HEALTH, MANAGER, PERSON = "0977555666", "0900000001", "0900000002"
REASON = "F0 2026-117"
WINDOW = {"since": "2026-07-02T00:00", "until": "2026-07-03T00:00"}  # Asia/Ho_Chi_Minh; BASE_MS is 18:00
PEOPLE = {
    CASE_ID: Contact("NGUYỄN VĂN HÙNG", "+84966323123", CASE_ID),
    CONTACT_A: Contact("LÊ THỊ MAI", "+84901111222", CONTACT_A),
    NAMED_B: Contact("LÊ THỊ HOA", "+84900000002", NAMED_B),
    CONTACT_C: Contact("TRẦN VĂN CƯỜNG", "+84933444555", CONTACT_C),
    UNRELATED: Contact("PHẠM THỊ DUNG", "+84944555666", UNRELATED),
}
SHOWN = {CASE_ID: "NGUYỄN VĂN *** 0966 323 ***", CONTACT_A: "LÊ THỊ *** 0901 111 ***",
         NAMED_B: "LÊ THỊ *** 0900 000 ***", CONTACT_C: "TRẦN VĂN *** 0933 444 ***",
         UNRELATED: "PHẠM THỊ *** 0944 555 ***"}


def sealed_event(person: str, venue: str, direction: str, minute: int, public) -> HistoryEvent:
    """A granted scan at the venue's gate, its contact sealed to the health office for this event."""
    device = f"gate-{venue[2:]}"
    ts_ms = BASE_MS + minute * MINUTE_MS
    event_id = uuid.uuid4().hex
    data = scan_dict(device, minute + 1000, ts_ms, venue=venue, subject=subject(person, venue), direction=direction,
                     display=SHOWN[person], event_id=event_id)
    data["contact_sealed"] = seal_contact(PEOPLE[person], public, device, event_id, os.urandom(32))
    parsed = parse_scan(device, json.dumps(data).encode(), ts_ms)
    assert isinstance(parsed, HistoryEvent), parsed
    return parsed


def scenario(public) -> dict[str, HistoryEvent]:
    """Venue v-q1, 2026-07-02: the case 18:00-20:00; Lê Thị Mai 19:00-21:00 (a contact) and again
    at 04:00 the next day (not with the case); Lê Thị Hoa in at 18:30 with no out (a contact);
    Trần Văn Cường in at 20:30, after the case left. Venue v-q2: Phạm Thị Dung at the same time."""
    return {
        "case_in": sealed_event(CASE_ID, "v-q1", "in", 0, public),
        "case_out": sealed_event(CASE_ID, "v-q1", "out", 120, public),
        "a_in": sealed_event(CONTACT_A, "v-q1", "in", 60, public),
        "a_out": sealed_event(CONTACT_A, "v-q1", "out", 180, public),
        "a_later": sealed_event(CONTACT_A, "v-q1", "in", 600, public),
        "b_in": sealed_event(NAMED_B, "v-q1", "in", 30, public),
        "c_in": sealed_event(CONTACT_C, "v-q1", "in", 150, public),
        "u_in": sealed_event(UNRELATED, "v-q2", "in", 0, public),
        "u_out": sealed_event(UNRELATED, "v-q2", "out", 120, public),
    }


class World:
    """The back office (SQLite, or the PostgreSQL URL given) on the shared broker (or none), its
    data, the health office's key pair."""

    def __init__(self, folder: Path, broker, database_url: str | None = None) -> None:
        self.folder = folder
        self.prefix = f"t{os.getpid()}_pageactions_{random.token_hex(3)}"
        (folder / "bo").mkdir()
        self.tmpdir = folder / "server-tmp"
        self.tmpdir.mkdir()
        mqtt = {"host": broker.host, "port": broker.port, "prefix": self.prefix} if broker else {"host": ""}
        self.site = BackofficeSite(folder / "bo", database_url, mqtt=mqtt,
                                   otp={"per_client_per_hour": 500, "per_phone_per_hour": 50})
        self.site.init()
        backoffice_data(self.site)
        self.office = keys.new_escrow_keypair(folder / "health-office.pem")
        from firmware.adapters.escrow_key import load_escrow_public_key

        self.events = scenario(load_escrow_public_key(self.office.public_path))
        store = open_store(self.site.database_url_for_tests)
        try:
            store.add(list(self.events.values()))
        finally:
            store.close()
        granted = qrgate("backoffice", "healthoffice", "--config", str(self.site.config), "--phone", HEALTH,
                         "--name", "Bác sĩ Lan")
        assert granted.returncode == 0, granted.stderr
        done = self.site.django(
            "import json\n"
            "from django.contrib.auth import get_user_model\n"
            "from backoffice.gates.models import Gate\n"
            "from backoffice.venues.models import Management, Venue\n"
            "users = get_user_model().objects\n"
            f"manager = users.get(username={e164(MANAGER)!r})\n"
            "venue = Venue.objects.get(venue_id='v-q1')\n"
            "Management.objects.create(venue=venue, user=manager, role=Management.REGISTRANT)\n"
            "Gate.objects.create(venue=venue, device_id='gate-q1-spare', direction='in')  # never answers\n"
            "print(json.dumps({u.username: u.pk for u in users.all()}))\n")
        self.pks = json.loads(done.stdout.strip().splitlines()[-1])
        self.site.start(env={"TMPDIR": str(self.tmpdir)})

    def operator(self, phone: str) -> str:
        masked = f"{phone[:4]} {phone[4:7]} ***"
        return f"backoffice:{self.pks[e164(phone)]} {masked}"

    def audits(self):
        store = open_store(self.site.database_url_for_tests)
        try:
            return audit_records(store)
        finally:
            store.close()

    def quarantine_rows(self) -> int:
        return int(self.site.django("from backoffice.gates.models import QuarantineEntry\n"
                                    "print(QuarantineEntry.objects.count())\n").stdout.strip())


@pytest.fixture(scope="module")
def world(tmp_path_factory, shared_broker):
    made = World(tmp_path_factory.mktemp("trace-actions"), shared_broker)
    try:
        yield made
    finally:
        made.site.stop()
        for venue_id in SECRETS:
            publish_raw(shared_broker, venue_list_topic(made.prefix, venue_id, "deny"), b"", retain=True)


def trace_in_browser(page, site: BackofficeSite) -> None:
    page.goto(site.base + "/trace/")
    page.select_option("#by", "person_id")
    page.fill("#case", CASE_ID)
    page.fill("#since", WINDOW["since"])
    page.fill("#until", WINDOW["until"])
    page.fill("#reason", REASON)
    page.click("#trace")
    page.wait_for_selector("#result")


def trace_token(client: WebClient) -> str:
    """A trace by the client's person, as the page answers it; returns the answer's trace token."""
    status, body, _ = client.post("/trace/", {"by": "person_id", "case": CASE_ID, **WINDOW, "reason": REASON})
    assert status == 200, body[:500]
    found = re.search(r'name="trace_token" value="([^"]+)"', body)
    assert found, "no trace token on the answer"
    return found.group(1)


def multipart(fields: dict[str, str], files: dict[str, tuple[str, bytes]]) -> tuple[bytes, str]:
    boundary = "----qrgate" + random.token_hex(8)
    parts = []
    for name, value in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    for name, (filename, data) in files.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                     f"Content-Type: application/x-pem-file\r\n\r\n".encode() + data + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def post_reveal(client: WebClient, token: str, key: bytes, **fields: str) -> tuple[int, str, dict[str, str]]:
    csrf = client.csrf("/trace/")
    body, content_type = multipart({"csrfmiddlewaretoken": csrf, "trace_token": token, "reason": REASON, **fields},
                                   {"escrow_key": ("health-office.pem", key)})
    return client.request("POST", "/trace/reveal/", body, {"Content-Type": content_type})


# --------------------------------------------------------------------------- Cách ly

@pytest.mark.broker
def test_the_health_office_quarantines_from_the_page_and_real_gates_keep_the_contacts_out(browser, world, tmp_path,
                                                                                         shared_broker):
    site = world.site
    issuer = keys.load_private_key(trust_new_key(tmp_path, "issuer", "issuers").private_path)
    passes = {who: valid_pass(issuer, who, days=30) for who in (CASE_ID, CONTACT_A, NAMED_B, CONTACT_C)}
    command_pub = (site.folder / "keys" / "command.pub.pem").read_bytes()
    retained = Collector(shared_broker.host, shared_broker.port, f"{world.prefix}/venues/+/lists/deny")
    now_s = time.time()
    gates = {v: Gate(tmp_path, shared_broker, world.prefix, f"gate-{v[2:]}", v, command_pub, tmp_path / "issuers",
                     now_s) for v in SECRETS}
    q1, q2 = gates["v-q1"], gates["v-q2"]
    try:
        assert q1.show("A-before", passes[CONTACT_A]) == ("granted", "ok")
        staff = login(browser, site, HEALTH)
        trace_in_browser(staff, site)
        assert [r[0] for r in rows(staff, "contacts")] == [SHOWN[NAMED_B], SHOWN[CONTACT_A]]
        assert staff.input_value("#days") == "14" and staff.input_value("#quarantine-reason") == REASON
        before = (len(world.audits()), world.quarantine_rows())
        # The first press only asks for confirmation: nothing is stored, sent or audited yet.
        staff.fill("#days", "14")
        staff.click("#quarantine")
        staff.wait_for_selector("#quarantine-confirm")
        text = staff.inner_text("#quarantine-confirm")
        assert f"Người nhiễm {SHOWN[CASE_ID]} (1 lần đến địa điểm) và 2 người tiếp xúc" in text
        assert "Trong 14 ngày" in text and staff.inner_text("#confirm-reason") == REASON
        assert (len(world.audits()), world.quarantine_rows()) == before
        with staff.expect_response(lambda r: r.url.endswith("/trace/quarantine/")) as answer:
            staff.click("#confirm-quarantine")
        assert answer.value.status == 200
        staff.wait_for_selector("#quarantine-done")
        assert "Đã cách ly người nhiễm và 2 người tiếp xúc (2 người có tài khoản" in staff.inner_text("#quarantine-done")
        venues = {row.get_attribute("data-venue"): row for row in staff.locator("#quarantine-venues tbody tr").all()}
        assert sorted(venues) == ["v-q1", "v-q2"]
        cells = [c.inner_text().strip() for c in venues["v-q1"].locator("td").all()]
        assert cells[:3] == ["Chợ v-q1", "4", "4"] and cells[3].startswith("Đã gửi")
        states = {li.get_attribute("data-gate"): li.get_attribute("data-state")
                  for li in venues["v-q1"].locator("li[data-gate]").all()}
        assert states == {"gate-q1": "took", "gate-q1-spare": "silent"}
        assert "Không trả lời" in venues["v-q1"].locator("li[data-gate=gate-q1-spare]").inner_text()
        assert "deny list version" in venues["v-q1"].locator("li[data-gate=gate-q1]").inner_text()
        assert [li.get_attribute("data-state") for li in venues["v-q2"].locator("li[data-gate]").all()] == ["took"]
        assert CASE_ID not in staff.content() and CONTACT_A not in staff.content()
        shot(staff, "trace-quarantine", site)
        staff.close()

        # The published list holds the case and the contacts, each with its end 14 days on.
        topic = venue_list_topic(world.prefix, "v-q1", "deny")
        assert retained.wait_until(lambda ms: any(m.topic == topic and m.payload for m in ms), WAIT_S)
        _manifest, body = cbor2.loads([m.payload for m in retained.messages if m.topic == topic][-1])
        listed = dict(line.split("\t") for line in zlib.decompress(body).decode().split("\n") if "\t" in line)
        assert sorted(listed) == sorted([subject(CASE_ID, "v-q1"), CASE_ID.lower(), subject(CONTACT_A, "v-q1"),
                                         subject(NAMED_B, "v-q1")])  # ids as the gates compare them
        assert all(abs(int(end) - (now_s + 14 * DAY_S)) < 600 for end in listed.values())

        # The real gates keep them out, and let the others in.
        assert q1.show("A", passes[CONTACT_A]) == ("denied", "denied")
        assert q1.show("B", passes[NAMED_B]) == ("denied", "denied")
        assert q1.show("case", passes[CASE_ID]) == ("denied", "denied")
        assert q1.show("C", passes[CONTACT_C]) == ("granted", "ok")
        assert q2.show("B", passes[NAMED_B]) == ("denied", "denied")
        assert q2.show("A", passes[CONTACT_A]) == ("granted", "ok")
        for gate in gates.values():
            gate.clock.advance(14 * DAY_S)
        assert q1.show("A-after", passes[CONTACT_A]) == ("granted", "ok")

        # Audited as the logged-in person: the trace, then the quarantine (before anything was
        # stored or sent), and each venue's publication under their account.
        trail = world.audits()[before[0]:]
        assert [r.action for r in trail] == ["quarantine"]
        record = trail[0]
        assert (record.operator, record.reason) == (world.operator(HEALTH), REASON)
        assert record.result["entries"] == {"v-q1": 4, "v-q2": 3} and record.searched["days"] == 14
        assert CASE_ID not in json.dumps([record.searched, record.result])
        logged = site.django(
            "from backoffice.people.models import AuditEntry\n"
            "for e in AuditEntry.objects.filter(action='quarantine').order_by('venue_id'):\n"
            "    print(e.venue_id, e.actor_id, '|', e.answer)\n").stdout.splitlines()
        assert [line.split(" | ")[0] for line in logged] == [f"v-q1 {world.pks[e164(HEALTH)]}",
                                                             f"v-q2 {world.pks[e164(HEALTH)]}"]
        stored = site.django(
            "from backoffice.gates.models import QuarantineEntry\n"
            "print(sorted({(q.created_by_id, q.operator, q.reason) for q in QuarantineEntry.objects.all()}))\n")
        assert stored.stdout.strip() == str([(world.pks[e164(HEALTH)], world.operator(HEALTH), REASON)])
    finally:
        for gate in gates.values():
            gate.close()
        retained.close()


QUARANTINE_HOSTILE = [
    ({"days": "0"}, "Số ngày cách ly phải là một số nguyên từ 1 đến 60"),
    ({"days": "61"}, "Số ngày cách ly phải là một số nguyên từ 1 đến 60"),
    ({"days": "1e3"}, "Số ngày cách ly phải là một số nguyên từ 1 đến 60"),
    ({"days": "-5"}, "Số ngày cách ly phải là một số nguyên từ 1 đến 60"),
    ({"days": "14; DROP TABLE gates_quarantineentry"}, "Số ngày cách ly phải là một số nguyên"),
    ({"reason": ""}, "Bạn vui lòng nhập thông tin Lý do"),
    ({"reason": "F0\x00\x1b[2J"}, "Lý do chứa ký tự điều khiển"),
    ({"reason": "x" * 201}, "Lý do dài quá 200 ký tự"),
]


def test_hostile_quarantine_inputs_and_forged_tokens_are_refused_and_nothing_is_stored(world):
    site = world.site
    client = http_login(site, HEALTH)
    token = trace_token(client)
    before = (len(world.audits()), world.quarantine_rows())
    for changed, refusal in QUARANTINE_HOSTILE:
        status, body, _ = client.post("/trace/quarantine/", {"trace_token": token, "days": "14", "reason": REASON,
                                                             "confirm": "yes", **changed}, token_from="/trace/")
        assert status == 400 and refusal in body and 'role="alert"' in body, (changed, body[:800])
        assert 'id="quarantine-done"' not in body
    # A token changed by one character, another person's, a case token, none: "trace again".
    manager = http_login(site, MANAGER)
    status, body, _ = manager.post("/trace/", {"by": "person_id", "case": CASE_ID, **WINDOW, "reason": REASON})
    assert status == 200 and 'name="trace_token"' not in body, body[:1000]  # a manager's answer has none
    manager_case = re.search(r'name="case_token"[^>]*value="([^"]+)"', body).group(1)
    flipped = token[:30] + ("A" if token[30] != "A" else "B") + token[31:]
    for forged in (flipped, manager_case, "", "x" * 5000):
        status, body, _ = client.post("/trace/quarantine/", {"trace_token": forged, "days": "14", "reason": REASON,
                                                             "confirm": "yes"}, token_from="/trace/")
        assert status == 400 and "bạn vui lòng truy vết lại" in body, forged[:40]
    # GET never acts.
    assert client.get("/trace/quarantine/")[0] == 405
    assert [r.action for r in world.audits()[before[0]:]] == ["trace"]  # the manager's own trace only
    assert world.quarantine_rows() == before[1]
    assert "Traceback" not in site.log()


# --------------------------------------------------------------------------- the reveal

def opened_table(page) -> list[tuple[str, str, str, str, str]]:
    return [(r[0], r[1], r[2], r[3], r[4]) for r in rows(page, "opened")]


def test_the_health_office_opens_exactly_the_traced_peoples_contacts_with_its_uploaded_key(browser, world):
    site = world.site
    events = world.events
    key_pem = world.office.private_path.read_bytes()
    before = len(world.audits())
    staff = login(browser, site, HEALTH)
    trace_in_browser(staff, site)
    staff.set_input_files("#escrow_key", str(world.office.private_path))
    assert staff.input_value("#reveal-reason") == REASON
    with staff.expect_response(lambda r: r.url.endswith("/trace/reveal/")) as answer:
        staff.click("#reveal")
    assert answer.value.status == 200
    assert "no-store" in answer.value.headers["cache-control"]
    # The response can arrive before the browser has swapped the document: wait for the new one.
    staff.wait_for_selector("#opened tbody tr")
    case, a, b = PEOPLE[CASE_ID], PEOPLE[CONTACT_A], PEOPLE[NAMED_B]
    assert opened_table(staff) == [
        ("Người nhiễm", case.name, case.phone, case.id, "Chợ v-q1"),
        ("Người tiếp xúc", b.name, b.phone, b.id, "Chợ v-q1"),
        ("Người tiếp xúc", a.name, a.phone, a.id, "Chợ v-q1"),
    ]
    assert [r[7] for r in rows(staff, "opened")] == ["2", "1", "2"]  # scans opened per person
    shot(staff, "trace-reveal", site)
    body = staff.content()
    for closed in (CONTACT_C, UNRELATED):  # same venue after the case left; same time elsewhere
        assert PEOPLE[closed].name not in body and PEOPLE[closed].phone not in body and closed not in body
    assert key_pem.decode() not in body and "BEGIN PRIVATE KEY" not in body
    # Audited first, as the logged-in person, with exactly the events opened.
    record = world.audits()[-1]
    assert len(world.audits()) == before + 2  # the page's trace, then the reveal
    assert (record.action, record.operator, record.reason) == ("reveal", world.operator(HEALTH), REASON)
    assert sorted(record.result["opened"]) == sorted(events[k].event_id
                                                     for k in ("case_in", "case_out", "a_in", "a_out", "b_in"))
    assert record.searched["via"] == "backoffice" and record.searched["format"] == "page"
    assert CASE_ID not in json.dumps(record.searched)

    # A CSV for the callers, from the same form (the key again), audited too, never cached.
    staff.set_input_files("#escrow_key", str(world.office.private_path))
    with staff.expect_download() as download, staff.expect_response(
            lambda r: r.url.endswith("/trace/reveal/")) as answer:
        staff.click("#reveal-csv")
    assert "no-store" in answer.value.headers["cache-control"]
    table = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text(encoding="utf-8-sig"))))
    assert [(r["Vai trò"], r["Họ và tên"], r["Số điện thoại"], r["Số định danh"], r["Số lượt quét"])
            for r in table] == [("Người nhiễm", case.name, "'" + case.phone, case.id, "2"),
                                ("Người tiếp xúc", b.name, "'" + b.phone, b.id, "1"),
                                ("Người tiếp xúc", a.name, "'" + a.phone, a.id, "2")]
    record = world.audits()[-1]
    assert (record.action, record.searched["format"]) == ("reveal", "csv")

    # Another X25519 key: audited (it was an attempt), nothing opens, said clearly.
    stranger = X25519PrivateKey.generate().private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                        serialization.NoEncryption())
    wrong = world.folder / "wrong.pem"
    wrong.write_bytes(stranger)
    staff.set_input_files("#escrow_key", str(wrong))
    with staff.expect_response(lambda r: r.url.endswith("/trace/reveal/")) as answer:
        staff.click("#reveal")
    assert answer.value.status == 400
    assert "Khóa này không mở được thông tin liên lạc nào" in staff.inner_text("p.error[role=alert]")
    assert case.phone not in staff.content() and a.name not in staff.content()
    assert world.audits()[-1].action == "reveal"
    staff.close()

    # Nothing of the key on disk (the server's temporary folder, the site's folder with its
    # database) or in the server's log.
    raw = serialization.load_pem_private_key(key_pem, None).private_bytes_raw()
    body_b64 = "".join(key_pem.decode().splitlines()[1:-1])
    assert list(world.tmpdir.iterdir()) == []
    for path in site.folder.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert raw not in data and body_b64.encode() not in data, path
    assert body_b64 not in site.log() and "BEGIN PRIVATE KEY" not in site.log()


def _encrypted_key() -> bytes:
    return X25519PrivateKey.generate().private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                     serialization.BestAvailableEncryption(b"mat-khau"))


def _unknown_algorithm_key() -> bytes:
    import base64

    der = bytes.fromhex("302e020100300506032a0304" + "04220420" + "11" * 32)  # PKCS#8, OID 1.2.3.4
    return b"-----BEGIN PRIVATE KEY-----\n" + base64.encodebytes(der) + b"-----END PRIVATE KEY-----\n"


BAD_KEYS = [
    ("public key", lambda w: w.office.public_path.read_bytes(), "Đây là khóa công khai"),
    ("encrypted", lambda w: _encrypted_key(), "đã được mã hóa bằng mật khẩu"),
    ("garbage", lambda w: b"\x00\xff not a key at all", "không phải là khóa bí mật dạng PEM"),
    ("truncated", lambda w: w.office.private_path.read_bytes()[:60], "không phải là khóa bí mật dạng PEM"),
    ("ed25519", lambda w: ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
     "không phải là khóa X25519"),
    ("unknown algorithm", lambda w: _unknown_algorithm_key(), "không phải là khóa X25519"),
    ("too large", lambda w: b"#" * 5000 + w.office.private_path.read_bytes(), "Tệp khóa quá lớn"),
    ("empty", lambda w: b"", "không phải là khóa bí mật dạng PEM"),
]


def test_keys_that_are_not_the_health_offices_private_key_are_refused_with_their_reason(world):
    site = world.site
    client = http_login(site, HEALTH)
    token = trace_token(client)
    before = len(world.audits())
    for name, make, refusal in BAD_KEYS:
        status, body, headers = post_reveal(client, token, make(world))
        assert status == 400 and refusal in body and 'role="alert"' in body, (name, body[body.find("<main"):][:600])
        assert PEOPLE[CASE_ID].phone not in body and "no-store" in headers["Cache-Control"]
    # No reason, a bad format, no file: refused too. None of these opened or audited anything.
    status, body, _ = post_reveal(client, token, world.office.private_path.read_bytes(), reason="  ")
    assert status == 400 and "Bạn vui lòng nhập thông tin Lý do" in body
    status, body, _ = post_reveal(client, token, world.office.private_path.read_bytes(), export="xlsx")
    assert status == 400 and "Định dạng tệp không đúng" in body
    body_bytes, content_type = multipart({"csrfmiddlewaretoken": client.csrf("/trace/"), "trace_token": token,
                                          "reason": REASON}, {})
    status, body, _ = client.request("POST", "/trace/reveal/", body_bytes, {"Content-Type": content_type})
    assert status == 400 and "Bạn vui lòng chọn tệp khóa bí mật" in body
    assert len(world.audits()) == before
    # A body over the cap is refused before it is read; nothing reaches the temporary folder.
    status, body, _ = post_reveal(client, token, b"A" * (2 * 1024 * 1024))
    assert status == 413 and "Tệp gửi lên quá lớn" in body
    assert list(world.tmpdir.iterdir()) == []
    # Without the CSRF token: refused like every form.
    body_bytes, content_type = multipart({"trace_token": token, "reason": REASON},
                                         {"escrow_key": ("k.pem", world.office.private_path.read_bytes())})
    assert client.request("POST", "/trace/reveal/", body_bytes, {"Content-Type": content_type})[0] == 403
    assert len(world.audits()) == before
    assert "Traceback" not in site.log()


# --------------------------------------------------------------------------- who may

def test_a_manager_and_a_plain_person_get_403_for_both_actions_and_each_attempt_is_audited(world):
    site = world.site
    staff_token = trace_token(http_login(site, HEALTH))
    before = (len(world.audits()), world.quarantine_rows())
    key = world.office.private_path.read_bytes()
    for phone, role in ((MANAGER, "manager"), (PERSON, "none")):
        client = http_login(site, phone)
        status, body, _ = client.post("/trace/quarantine/", {"trace_token": staff_token, "days": "14",
                                                             "reason": "thử", "confirm": "yes"}, token_from="/me/")
        assert status == 403 and "Chỉ cơ quan y tế" in body, body[:500]
        status, body, _ = post_reveal_as(client, staff_token, key)
        assert status == 403 and PEOPLE[CASE_ID].phone not in body and PEOPLE[CONTACT_A].name not in body
        refused = world.audits()[-2:]
        assert [(r.action, r.operator, r.searched["role"]) for r in refused] == [
            ("quarantine_refused", world.operator(phone), role), ("reveal_refused", world.operator(phone), role)]
    assert world.quarantine_rows() == before[1]
    assert len(world.audits()) == before[0] + 4
    # One rule for the page and the function: an admin account outside the health office group
    # may not quarantine either.
    checked = site.django(
        "from django.contrib.auth import get_user_model\n"
        "from backoffice.gates.quarantine import may_quarantine\n"
        "users = get_user_model().objects\n"
        "admin = users.create(username='+84900000009', is_staff=True, is_superuser=True)\n"
        f"print(may_quarantine(admin), may_quarantine(users.get(username={e164(HEALTH)!r})),\n"
        f"      may_quarantine(users.get(username={e164(MANAGER)!r})), may_quarantine(None))\n")
    assert checked.stdout.split() == ["False", "True", "False", "False"]
    # Not logged in: sent to the login page, nothing done or audited.
    anonymous = WebClient(site.base)
    status, _, headers = anonymous.post("/trace/quarantine/", {"trace_token": staff_token, "days": "14",
                                                               "reason": REASON, "confirm": "yes"}, csrf=False)
    assert status in (302, 403) and (status == 403 or "/login/" in headers["Location"])
    assert len(world.audits()) == before[0] + 4


def post_reveal_as(client: WebClient, token: str, key: bytes) -> tuple[int, str, dict[str, str]]:
    """A reveal POST from a person without the trace page (their CSRF token from their own page)."""
    body, content_type = multipart({"csrfmiddlewaretoken": client.csrf("/me/"), "trace_token": token,
                                    "reason": REASON}, {"escrow_key": ("health-office.pem", key)})
    return client.request("POST", "/trace/reveal/", body, {"Content-Type": content_type})


# --------------------------------------------------------------------------- the pure parts

def test_the_trace_token_opens_only_for_its_person_and_kind_and_in_time():
    from backoffice.tracing.case_token import TOKEN_TTL_S, open_case, open_trace, seal_case, seal_trace

    key, now = "k" * 50, 1_782_990_000.0
    fields = {"by": "person_id", "case": CASE_ID, "since_ms": 1, "until_ms": 2, "shown": {"people": 2}}
    token = seal_trace(key, fields, 7, now)
    assert CASE_ID not in token
    assert open_trace(key, token, 7, now + 60) == {**fields, "at": int(now)}
    assert open_trace(key, token, 8, now) is None and open_trace("x" * 50, token, 7, now) is None
    assert open_trace(key, token, 7, now + TOKEN_TTL_S + 1) is None
    assert open_case(key, token, 7, now) is None, "a trace token is not a case token"
    assert open_trace(key, seal_case(key, "person_id", CASE_ID, 7, now), 7, now) is None


def test_the_upload_handler_keeps_a_key_in_memory_and_nothing_of_a_large_file():
    from django.core.files.uploadedfile import InMemoryUploadedFile

    from backoffice.tracing.key_upload import KeyUploadHandler

    handler = KeyUploadHandler(max_bytes=100)
    handler.new_file("escrow_key", "k.pem", "application/x-pem-file", 90)
    handler.receive_data_chunk(b"a" * 60, 0)
    handler.receive_data_chunk(b"b" * 30, 60)
    kept = handler.file_complete(90)
    assert isinstance(kept, InMemoryUploadedFile) and kept.read() == b"a" * 60 + b"b" * 30
    assert not hasattr(kept, "temporary_file_path")
    handler.new_file("escrow_key", "big.pem", "application/x-pem-file", 150)
    handler.receive_data_chunk(b"c" * 80, 0)
    handler.receive_data_chunk(b"d" * 70, 80)
    big = handler.file_complete(150)
    assert big.size == 150 and big.read() == b""


def test_opened_contacts_are_one_row_per_person_and_the_csv_runs_no_formula():
    from datetime import timezone

    from backoffice.tracing.opened import group_opened, write_opened_csv
    from provisioning.history.reveal import NO_SEALED_CONTACT, EventToOpen, OpenedContact

    def item(event_id, role, who, ts, name="", phone="", ident="", problem=None):
        return OpenedContact(EventToOpen(event_id, role, who, "v-1", ts), f"{who} ***", name, phone, ident, problem)

    opened = [item("c1", "case", "s-case", 10, "=CMD()", "+84966", "079"), item("c2", "case", "s-case", 50,
                                                                                   "=CMD()", "+84966", "079"),
              item("a1", "contact", "s-a", 20, "@SUM(A1)", "+84901", "080"),
              item("m1", "contact", "s-m", 5, problem="does not open with this key"),
              item("w1", "contact", "s-w", 30, problem=NO_SEALED_CONTACT)]
    grouped = group_opened(opened)
    assert [(r.role, r.subject, r.scans, r.first_ms, r.last_ms, r.problem) for r in grouped] == [
        ("case", "s-case", 2, 10, 50, None), ("contact", "s-m", 1, 5, 5, "does_not_open"),
        ("contact", "s-a", 1, 20, 20, None), ("contact", "s-w", 1, 30, 30, "not_sealed")]
    out = io.BytesIO()
    headings = {f: f.upper() for f in ("role", "name", "phone", "id", "venue", "first_scan", "last_scan", "scans",
                                       "display", "problem")}
    write_opened_csv(grouped, out, timezone.utc, headings=headings, roles={"case": "F0", "contact": "F1"},
                     problems={"not_sealed": "none", "does_not_open": "other key"}, venue_names={"v-1": "Chợ"})
    table = list(csv.DictReader(io.StringIO(out.getvalue().decode("utf-8-sig"))))
    assert [(r["ROLE"], r["NAME"], r["PHONE"], r["PROBLEM"]) for r in table] == [
        ("F0", "'=CMD()", "'+84966", ""), ("F1", "", "", "other key"), ("F1", "'@SUM(A1)", "'+84901", ""),
        ("F1", "", "", "none")]


def test_with_a_spent_wait_budget_the_lists_are_still_published_without_waiting_for_gates(world):
    """The page's bound on waiting (gunicorn ends a request at 30 s): venues after the budget are
    published unawaited, so a silent gate costs no time and is not reported as silent."""
    done = world.site.django(
        "import json\n"
        "from django.contrib.auth import get_user_model\n"
        "from backoffice.gates.quarantine import quarantine_contacts\n"
        "from provisioning.history.tracing import Contact, TraceResult, Visit\n"
        f"result = TraceResult(visits=[Visit({subject(CASE_ID, 'v-q1')!r}, 'v-q1', 0, 10, 'in', 'out')],\n"
        f"                     contacts=[Contact({subject(CONTACT_C, 'v-q1')!r}, 'v-q1', 2, 9)])\n"
        f"user = get_user_model().objects.get(username={e164(HEALTH)!r})\n"
        "outcome = quarantine_contacts(user, result, 1, 'budget', operator='test', wait_budget_s=0.0)\n"
        "print(json.dumps([(v.venue_id, v.awaited, v.silent, v.published, len(v.gates)) for v in outcome.venues]))\n")
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [["v-q1", False, [], True, 0]]


def test_both_actions_on_postgresql(tmp_path, request):
    """The same actions with the back office and the history on PostgreSQL (no broker: the lists
    are stored and reported as not sent)."""
    made = World(tmp_path, None, request.getfixturevalue("pg_url"))
    try:
        client = http_login(made.site, HEALTH)
        token = trace_token(client)
        status, body, headers = post_reveal(client, token, made.office.private_path.read_bytes())
        assert status == 200 and "no-store" in headers["Cache-Control"], body[:500]
        for person in (CASE_ID, CONTACT_A, NAMED_B):
            assert PEOPLE[person].phone in body and PEOPLE[person].name in body
        for person in (CONTACT_C, UNRELATED):
            assert PEOPLE[person].phone not in body
        status, body, _ = client.post("/trace/quarantine/", {"trace_token": token, "days": "7", "reason": REASON,
                                                             "confirm": "yes"}, token_from="/trace/")
        assert status == 200 and 'id="quarantine-done"' in body and "Đã lưu, chưa gửi được" in body
        assert made.quarantine_rows() == 7
        assert [(r.action, r.operator) for r in made.audits()] == [
            ("trace", made.operator(HEALTH)), ("reveal", made.operator(HEALTH)), ("quarantine", made.operator(HEALTH))]
    finally:
        made.site.stop()

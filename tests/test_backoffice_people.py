"""The people's side of the back office (issue 13), on a phone-sized screen in headless Chromium.

One flow with every real part: a person logs in with a code from the console SMS file, gets
"Mã QR cá nhân của tôi", declares their health; a real gate (``qrgate run`` on a ``dir:``
camera holding screenshots of the page, 24 h declaration policy, the venue's HMAC secret)
refuses the pass without ``hd`` and grants the one with it; "Cấp lại mã QR" revokes it through
the venue-wide deny list (real Mosquitto), so the gate refuses the old screenshot and grants the
new one; the poster's QR (decoded from its PNG) opens the venue page, "Check in" records a scan
event, "Lịch sử tôi đến các địa điểm" lists every scan of the person, and the manager counts
the check-in in "Lịch sử quét Mã QR". A second test, over plain HTTP, tries another person's
URLs, the warnings, a risky declaration and the repeat window; a third checks the core rule.
"""

from __future__ import annotations

import io
import json
import re
import time
from pathlib import Path

import pytest

from tests.backoffice_support import (
    PHONE_VIEWPORT,
    BackofficeSite,
    WebClient,
    register_by_http,
)
from tests.daemon_support import run_gate, start_gate, write_config
from tests.history_support import pg_server_url, pg_url  # noqa: F401 - fixtures
from tests.mqtt_support import Collector
from tests.test_backoffice_web import VENUE, shot

WAIT_S = 60.0
VISIT_ROW = '<td data-label="Thời gian quét">'
PERSON = "0966323123"
PERSON_E164 = "+84966323123"
OTHER = "0977111222"
OTHER_E164 = "+84977111222"
QUESTIONS = ("fever", "cough", "breath", "throat", "taste_smell", "fatigue", "pneumonia", "contact_case",
             "contact_suspect", "contact_abroad", "travel_outbreak")


def decode_png(data: bytes) -> list[str]:
    import zxingcpp
    from PIL import Image

    return [r.text for r in zxingcpp.read_barcodes(Image.open(io.BytesIO(data)).convert("L"))]


def venue_secret_hex(site: BackofficeSite, venue_id: str) -> str:
    done = site.django("from backoffice.personal.services import venue_secret\n"
                       "from backoffice.venues.models import Venue\n"
                       f"print(venue_secret(Venue.objects.get(venue_id={venue_id!r})).hex())\n")
    return done.stdout.strip()


def person_subject(site: BackofficeSite, phone_e164: str) -> str:
    done = site.django("from backoffice.personal.models import PersonProfile\n"
                       f"print(PersonProfile.objects.get(user__username={phone_e164!r}).subject)\n")
    return done.stdout.strip()


def store_events(site: BackofficeSite, events: list[dict]) -> None:
    """What the collector does with the gate's published events (parse, store once)."""
    from provisioning.history.events import HistoryEvent, parse_scan
    from provisioning.history.store import open_store

    store = open_store(site.database_url_for_tests)
    try:
        parsed = [parse_scan(e["device_id"], json.dumps(e).encode(), int(time.time() * 1000)) for e in events]
        assert all(isinstance(p, HistoryEvent) for p in parsed), parsed
        store.add(parsed)
    finally:
        store.close()


def phone_login(page, site: BackofficeSite, phone: str, phone_e164: str) -> None:
    page.fill("#id_phone", phone)
    page.click("#send-code")
    page.wait_for_url("**/me/login/otp/")
    page.fill("#id_code", site.last_code(phone_e164))
    page.click("#verify")


def pass_screenshot(page, path: Path) -> None:
    """The pass page as a phone shows it (the viewport, not the whole page)."""
    page.goto(page.url.split("/me/")[0] + "/me/")
    page.locator("#pass-qr").wait_for()
    page.screenshot(path=str(path))


def test_pass_declaration_gate_revocation_poster_checkin_and_visits_on_a_phone(browser, tmp_path, shared_broker,
                                                                              topic_prefix):
    from firmware.core.events import protect_subject

    (tmp_path / "bo").mkdir()
    site = BackofficeSite(tmp_path / "bo", mqtt={"host": shared_broker.host, "port": shared_broker.port,
                                                 "prefix": topic_prefix})
    site.kind = "sqlite"
    site.init()
    site.start()
    manager = WebClient(site.base)
    venue_id = register_by_http(site, manager, VENUE)
    secret_hex = venue_secret_hex(site, venue_id)

    gate_dir = tmp_path / "gate"
    shots = gate_dir / "shots"
    shots.mkdir(parents=True)
    for role, folder in (("issuer", "issuers"), ("command", "commands")):
        (gate_dir / folder).mkdir()
        (gate_dir / folder / f"{role}.pem").write_bytes((site.folder / "keys" / f"{role}.pub.pem").read_bytes())
    secret_file = gate_dir / "venue-secret"
    secret_file.write_text(secret_hex + "\n")
    secret_file.chmod(0o600)

    def gate_config(images: Path) -> Path:
        return write_config(gate_dir, images=images, device={"id": "gate-p", "venue_id": venue_id},
                            camera={"fps": 20, "frames_per_image": 4},
                            keys={"issuers_dir": gate_dir / "issuers", "command_dir": gate_dir / "commands"},
                            policy={"health_declaration_max_age_h": 24.0},
                            privacy={"hmac_secret_file": secret_file},
                            mqtt={"host": shared_broker.host, "port": shared_broker.port, "prefix": topic_prefix})

    def scan(*names: str) -> list[dict]:
        images = gate_dir / f"run-{len(list(gate_dir.glob('run-*')))}"
        images.mkdir()
        for i, name in enumerate(names):
            (images / f"{i:02d}-{name}").write_bytes((shots / name).read_bytes())
        result, events = run_gate(gate_config(images))
        assert result.returncode == 0, result.stderr
        scans = [e for e in events if e.get("decision") in ("granted", "denied")]
        store_events(site, scans)
        return scans

    context = browser.new_context(viewport=PHONE_VIEWPORT, device_scale_factor=1, is_mobile=True, has_touch=True)
    gate = None
    watcher = Collector(shared_broker.host, shared_broker.port, f"{topic_prefix}/gate-p/response/lists")
    try:
        page = context.new_page()
        # Log in with a code (a phone nobody registered gets one here), give the name, get the pass.
        page.goto(site.base + "/me/")
        page.wait_for_url("**/me/login/?next=/me/")
        phone_login(page, site, PERSON, PERSON_E164)
        page.wait_for_url("**/me/")
        page.fill("#id_full_name", "Nguyễn Đình Hùng")
        page.fill("#id_cccd", "038099000123")
        page.click("#save-profile")
        page.wait_for_url("**/me/")
        assert page.inner_text("#holder") == "Nguyễn Đình Hùng"
        assert "CHƯA KHAI BÁO Y TẾ" in page.inner_text("#no-declaration")
        pass_screenshot(page, shots / "no-hd.png")
        png = context.request.get(site.base + page.get_attribute("#download-png", "href"))
        assert png.ok and png.headers["content-type"] == "image/png"
        pdf = context.request.get(site.base + page.get_attribute("#download-pdf", "href"))
        assert pdf.ok and pdf.body().startswith(b"%PDF")
        first_text = decode_png(png.body())[0]
        assert first_text.startswith("QG1:")
        assert decode_png((shots / "no-hd.png").read_bytes()) == [first_text]  # the screen shows this pass

        # Khai báo y tế: every answer "Không" -> the pass carries hd.
        page.click("#nav-declare")
        page.wait_for_url("**/me/declare/")
        for q in QUESTIONS:
            page.check(f"#id_{q}_0")
        shot(page, "person-declaration", site)
        page.click("#send-declaration")
        page.wait_for_url("**/me/declarations/*/")
        assert page.locator("#declared-ok").is_visible()
        pass_screenshot(page, shots / "hd.png")
        assert page.locator("#no-declaration").count() == 0
        assert "Khai báo y tế lúc" in page.inner_text("#pass-declared")
        shot(page, "person-pass", site)

        # The gate (24 h declaration policy): the pass without hd is refused, the one with hd granted.
        sub = person_subject(site, PERSON_E164)
        hashed = protect_subject(sub, "hmac", bytes.fromhex(secret_hex))
        first = scan("no-hd.png", "hd.png")
        assert [(e["decision"], e["reason"]) for e in first] == [("denied", "no_health_declaration"),
                                                                 ("granted", "ok")]
        assert {e["subject"] for e in first} == {hashed}  # the venue's subject, never the raw sub

        # "Cấp lại mã QR": the old pass goes on the venue-wide deny list, which the gate takes.
        blank = gate_dir / "idle"
        blank.mkdir()
        from PIL import Image

        Image.new("L", (64, 64), 128).save(blank / "blank.png")
        idle = write_config(gate_dir, images=blank, device={"id": "gate-p", "venue_id": venue_id},
                            camera={"fps": 1, "frames_per_image": 600},
                            keys={"issuers_dir": gate_dir / "issuers", "command_dir": gate_dir / "commands"},
                            privacy={"hmac_secret_file": secret_file},
                            mqtt={"host": shared_broker.host, "port": shared_broker.port, "prefix": topic_prefix})
        gate = start_gate(idle)
        page.goto(site.base + "/me/")
        page.click("#reissue")
        page.wait_for_url("**/me/")
        assert watcher.wait_until(lambda ms: any(m.json().get("status") == "ok" and m.json()["data"]["kind"] == "deny"
                                                 for m in ms), WAIT_S), [m.payload for m in watcher.messages]
        gate.terminate()
        assert gate.wait(timeout=WAIT_S) == 0
        gate = None
        pass_screenshot(page, shots / "reissued.png")
        assert decode_png((shots / "reissued.png").read_bytes()) != decode_png((shots / "hd.png").read_bytes())

        # The poster's QR is the venue page's URL; the gate refuses it as before (unknown_format).
        poster_png = _raw(manager, f"/venues/{venue_id}/poster.png")
        (shots / "poster.png").write_bytes(poster_png)
        [url] = decode_png(poster_png)
        assert url == f"{site.base}/v/{venue_id}"
        second = scan("hd.png", "reissued.png", "poster.png")
        assert [(e["decision"], e["reason"]) for e in second] == [("denied", "denied"), ("granted", "ok"),
                                                                  ("denied", "unknown_format")]

        # Scan the poster with the phone: the venue page, "Check in".
        page.goto(url)
        assert page.inner_text("#venue-name") == VENUE["name"]
        assert "Số 74 Tô Vĩnh Diện" in page.inner_text("#venue-address")
        page.click("#checkin")
        page.wait_for_url(f"**/v/{venue_id}")
        assert page.locator("#checkin-ok").is_visible()
        assert page.locator("#no-declaration").count() == 0  # declared an hour ago at most
        shot(page, "person-checkin", site)

        # Lịch sử tôi đến các địa điểm: the gate's four scans of this person and the check-in.
        page.click("#nav-visits")
        page.wait_for_url("**/me/visits/")
        assert page.inner_text("#count span") == "5"
        rows = page.locator("#visits tbody tr").all_inner_texts()
        assert "check in bằng điện thoại" in rows[0] and "Cho vào" in rows[0]
        assert VENUE["name"] in rows[0]
        text = "\n".join(rows)
        assert "Có tên trong danh sách cấm, hoặc mã QR đã bị thu hồi" in text
        assert "Chưa khai báo y tế (hoặc khai báo đã cũ)" in text
        shot(page, "person-visits", site)

        # The manager counts the check-in with the gate's scans (the poster scan has no person).
        status, body, _ = manager.get("/history/")
        assert status == 200
        assert re.search(r'id="count">[^<]*<span>6</span>', body), body[:2000]
        assert ">web<" in body
        status, body, _ = manager.get(f"/gates/{venue_id}/")
        assert 'id="gate-web"' not in body  # the web is not a gate
    finally:
        context.close()
        if gate is not None:
            gate.terminate()
            gate.wait(timeout=30)
        watcher.close()
        site.stop()


def _raw(client: WebClient, path: str) -> bytes:
    import urllib.request

    req = urllib.request.Request(client.base + path, headers=client.headers)
    with client.opener.open(req, timeout=30) as answer:
        return answer.read()


def http_person(site: BackofficeSite, phone: str, phone_e164: str, name: str) -> WebClient:
    client = WebClient(site.base)
    status, _, headers = client.post("/me/login/", {"phone": phone}, token_from="/me/login/")
    assert status == 302, status
    status, _, headers = client.post("/me/login/otp/", {"code": site.last_code(phone_e164)})
    assert status == 302 and headers["Location"] == "/me/", (status, headers)
    status, _, headers = client.post("/me/", {"full_name": name, "cccd": ""})
    assert status == 302, status
    return client


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_a_person_never_sees_another_persons_passes_declarations_or_visits(tmp_path, database, request):
    site = BackofficeSite(tmp_path, request.getfixturevalue("pg_url") if database == "postgresql" else None,
                          people={"health_hotline": "1900 9095", "checkin_repeat_s": 300})
    site.init()
    site.start()
    try:
        manager = WebClient(site.base)
        venue_id = register_by_http(site, manager, VENUE)
        # Not logged in: the venue page asks to log in and comes back; /me/ sends to the person's login.
        anonymous = WebClient(site.base)
        status, body, _ = anonymous.get(f"/v/{venue_id}")
        assert status == 200 and f"/me/login/?next=/v/{venue_id}" in body and 'id="checkin"' not in body
        status, _, headers = anonymous.get("/me/visits/")
        assert status == 302 and headers["Location"] == "/me/login/?next=/me/visits/"
        assert anonymous.get("/v/v-000000000000")[0] == 404

        one = http_person(site, PERSON, PERSON_E164, "Nguyễn Đình Hùng")
        # A declaration older than the retention period is deleted at the next declaration.
        site.django("import time\nfrom backoffice.personal.models import HealthDeclaration, PersonProfile\n"
                    f"HealthDeclaration.objects.create(profile=PersonProfile.objects.get(user__username={PERSON_E164!r}),"
                    " declared_s=time.time() - 31 * 86400, answers={}, risky=False)\n")
        # A risky declaration: no hd in the pass, the hotline on the page.
        answers = {q: "no" for q in QUESTIONS} | {"cough": "yes"}
        status, _, headers = one.post("/me/declare/", answers)
        assert status == 302
        declaration_path = headers["Location"]
        status, body, _ = one.get(declaration_path)
        assert status == 200 and "1900 9095" in body and 'id="hotline"' in body
        status, body, _ = one.get("/me/")
        assert "1900 9095" in body and "CHƯA KHAI BÁO Y TẾ" in body
        kept = site.django("from backoffice.personal.models import HealthDeclaration\n"
                           "print(HealthDeclaration.objects.count())\n")
        assert kept.stdout.strip() == "1"
        [token] = set(re.findall(r"/me/pass/([0-9a-f]{32})\.png", body))
        status, _, _ = one.post(f"/v/{venue_id}/checkin/", {"direction": "in"}, token_from=f"/v/{venue_id}")
        assert status == 302
        assert one.get("/me/visits/")[1].count(VISIT_ROW) == 1

        two = http_person(site, OTHER, OTHER_E164, "Trần Thị Lan")
        for path in (f"/me/pass/{token}.png", f"/me/pass/{token}.pdf", declaration_path):
            assert two.get(path)[0] == 404, path
            assert one.get(path)[0] == 200, path
        assert 'id="visits"' not in two.get("/me/visits/")[1]
        body = two.get("/me/")[1]
        assert token not in body and "Nguyễn" not in body
        status, body, _ = two.post("/me/", {"full_name": "\u0007", "cccd": "123"})
        assert status == 200 and "Số CCCD không hợp lệ" in body
        # Two checks in with no declaration: the warning links to the form; the second is too soon.
        two.post(f"/v/{venue_id}/checkin/", {"direction": "in"}, token_from=f"/v/{venue_id}")
        body = two.get(f"/v/{venue_id}")[1]
        assert 'id="checkin-ok"' in body and "CHƯA KHAI BÁO Y TẾ" in body and 'href="/me/declare/"' in body
        two.post(f"/v/{venue_id}/checkin/", {"direction": "in"}, token_from=f"/v/{venue_id}")
        body = two.get(f"/v/{venue_id}")[1]
        assert 'id="checkin-repeat"' in body
        assert two.get("/me/visits/")[1].count(VISIT_ROW) == 1
        # The manager's count: one check-in of each person (the repeat was not recorded).
        body = manager.get("/history/")[1]
        assert re.search(r'id="count">[^<]*<span>2</span>', body)
        # A check-out is only offered where a gate of the venue records exits.
        assert 'id="checkout"' not in two.get(f"/v/{venue_id}")[1]
        # A gate facing out: the venue records exits, so "Check out" is offered and recorded.
        site.django("from backoffice.gates.models import Gate\nfrom backoffice.venues.models import Venue\n"
                    f"Gate.objects.create(venue=Venue.objects.get(venue_id={venue_id!r}), device_id='gate-out', "
                    "direction='out')\n")
        assert 'id="checkout"' in two.get(f"/v/{venue_id}")[1]
        two.post(f"/v/{venue_id}/checkin/", {"direction": "out"}, token_from=f"/v/{venue_id}")
        assert "Đã check out thành công." in two.get(f"/v/{venue_id}")[1]
        visits = two.get("/me/visits/")[1]
        assert visits.count(VISIT_ROW) == 2 and '<td data-label="Hướng">Ra</td>' in visits
        # The managers' login is unchanged: a phone nobody uses gets no SMS there.
        sent = len(site.messages())
        assert WebClient(site.base).post("/login/", {"phone": "0988000111"})[0] == 302
        assert len(site.messages()) == sent
    finally:
        site.stop()


def test_a_revoked_pass_id_on_the_deny_list_refuses_that_pass_only():
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from firmware.core.credentials import qg1
    from firmware.core.credentials.trust import TrustStore
    from firmware.core.model import DecodedCode, Moment, Reason, Verdict
    from firmware.core.policy import REVOKED_PASS_PREFIX, GateMemory, Rules, decide

    key = Ed25519PrivateKey.generate()
    trust = TrustStore.from_keys([key.public_key()])
    now = 1_800_000_000

    def pass_with(cti: bytes) -> bytes:
        return qg1.issue_text(key, sub="a1b2", name="NGUYEN VAN A", phone="0966323123", iat_s=now - 60,
                              exp_s=now + 86400, cti=cti).encode()

    class Deny:
        def __init__(self, ids: set[str]) -> None:
            self.ids = ids

        def is_denied(self, subject: str, now_s: float | None = None) -> bool:
            return subject in self.ids

        def is_allowed(self, subject: str, now_s: float | None = None) -> bool:
            return False

    old, new = b"\x01" * 16, b"\x02" * 16
    lists = Deny({REVOKED_PASS_PREFIX + old.hex()})
    moment = Moment(mono_s=100.0, wall_s=float(now), wall_trusted=True)

    def verdict(payload: bytes) -> tuple[Verdict, Reason]:
        d = decide(DecodedCode(payload), moment, 100.0, GateMemory(), Rules(),
                   lambda p: qg1.check(p, trust), lists)
        assert d is not None
        return d.verdict, d.reason

    assert verdict(pass_with(old)) == (Verdict.DENIED, Reason.DENIED)
    assert verdict(pass_with(new)) == (Verdict.GRANTED, Reason.OK)

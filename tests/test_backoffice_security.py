"""The back office refuses what it must: OTP guessing, SMS pumping, forged forms, other people's
venues, oversized and malformed requests. Plain HTTP against a real gunicorn on SQLite."""

from __future__ import annotations

import re
import socket

import pytest

from tests.backoffice_support import BackofficeSite, WebClient, register_by_http

OWNER_A = {"name": "Bến xe Triệu Sơn", "province": "Thanh Hóa", "district": "Huyện Triệu Sơn",
           "ward": "Thị trấn Triệu Sơn", "address": "Số 1 Đường Lê Lợi", "registrant": "Lê Văn An",
           "phone": "0977000111"}
OWNER_B = {"name": "Trường Tiểu học Dân Lực", "province": "Thanh Hóa", "district": "Huyện Triệu Sơn",
           "ward": "Xã Dân Lực", "address": "Thôn 3", "registrant": "Trần Thị Bình", "phone": "0977000222"}


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    s = BackofficeSite(tmp_path_factory.mktemp("backoffice-security"), site={"behind_proxy": True},
                       otp={"per_client_per_hour": 6, "per_phone_per_hour": 4})
    s.init()
    s.start()
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="module")
def two_venues(site):
    a, b = WebClient(site.base, "10.0.0.1"), WebClient(site.base, "10.0.0.2")
    return a, register_by_http(site, a, OWNER_A), b, register_by_http(site, b, OWNER_B)


def test_a_manager_gets_404_on_every_url_of_another_managers_venue(site, two_venues):
    a, venue_a, b, venue_b = two_venues
    for path in (f"/venues/{venue_b}/", f"/venues/{venue_b}/poster.png", f"/venues/{venue_b}/poster.pdf",
                 f"/venues/{venue_b}/poster.svg", f"/register/done/{venue_b}/", f"/gates/{venue_b}/",
                 f"/gates/{venue_b}/add/", f"/gates/{venue_b}/lists/"):
        assert a.get(path)[0] == 404, path
        assert b.get(path.replace(venue_b, venue_a))[0] == 404, path
    for path, fields in ((f"/venues/{venue_b}/", {"action": "label", "label": "x"}),
                         (f"/venues/{venue_b}/", {"action": "invite", "phone": "0912345678"}),
                         (f"/venues/{venue_b}/", {"action": "remove", "management": "1"}),
                         (f"/gates/{venue_b}/add/", {"direction": "in", "valid_minutes": "5"}),
                         (f"/gates/{venue_b}/lists/", {"kind": "deny", "action": "add", "ident": "X"}),
                         (f"/gates/{venue_b}/gate-1/command/", {"action": "open"})):
        assert a.post(path, fields, token_from="/venues/")[0] == 404, (path, fields)
    # Their own pages answer, so the 404s above are about ownership.
    assert a.get(f"/venues/{venue_a}/")[0] == 200
    assert a.get(f"/venues/{venue_a}/poster.svg")[0] == 200
    # The history never shows another's venue, even when asked for by id.
    status, body, _ = a.post("/history/", {"venue": venue_b})
    assert status == 200 and 'id="count"' in body and "<span>0</span>" in body
    assert OWNER_B["name"] not in body


def test_a_co_manager_request_is_approved_by_the_registrant_only(site, two_venues):
    a, venue_a, b, venue_b = two_venues
    status, body, _ = b.post("/venues/request/", {"venue_id": venue_a})
    assert status == 200 and 'id="request-sent"' in body
    assert b.get(f"/venues/{venue_a}/")[0] == 404  # not before the approval
    status, body, _ = a.get(f"/venues/{venue_a}/")
    assert "0977 000 ***" in body and 'id="requests"' in body
    request_id = body.split('name="request" value="')[1].split('"')[0]
    assert a.post(f"/venues/{venue_a}/", {"action": "approve", "request": request_id})[0] == 302
    status, body, _ = b.get(f"/venues/{venue_a}/")
    assert status == 200 and "Đồng quản lý" in body
    # A co-manager cannot invite, approve or remove.
    assert b.post(f"/venues/{venue_a}/", {"action": "invite", "phone": "0912000333"})[0] == 404
    status, body, _ = b.get("/venues/")
    assert "Danh sách các địa điểm của Bạn: 2 địa điểm" in body


def test_five_wrong_codes_end_the_code_and_the_right_one_is_then_refused(site):
    client = WebClient(site.base, "10.0.1.1")
    venue = {**OWNER_A, "name": "Chợ Sim", "phone": "0977000333"}
    assert client.post("/register/", venue)[0] == 302
    right = site.last_code("+84977000333")
    wrong = f"{(int(right) + 1) % 1_000_000:06d}"
    answers = [client.post("/register/otp/", {"code": wrong})[1] for _ in range(5)]
    assert all("Mã OTP không đúng." in page for page in answers[:4])
    assert "nhập sai quá 5 lần" in answers[4]
    status, body, _ = client.post("/register/otp/", {"code": right})
    assert status == 200 and "nhập sai quá 5 lần" in body


def test_sms_rate_limits_per_phone_and_per_client_address(site):
    client = WebClient(site.base, "10.0.2.1")
    venue = {**OWNER_A, "name": "Nhà văn hóa thôn 5", "phone": "0977000444"}
    sent = len(site.messages())
    assert client.post("/register/", venue)[0] == 302
    status, body, _ = client.post("/register/otp/", {"resend": "1"})
    assert "Bạn vui lòng đợi" in body  # one code per phone per 60 s
    assert len(site.messages()) == sent + 1
    # Per client address: 6 an hour, whatever the phones.
    pumping = WebClient(site.base, "10.0.3.1")
    for n in range(6):
        assert pumping.post("/login/", {"phone": f"09770010{n:02d}"})[0] == 302
    status, body, _ = pumping.post("/login/", {"phone": "0977001099"})
    assert status == 200 and "Đã gửi quá nhiều mã OTP trong một giờ" in body


def test_login_answers_the_same_for_a_phone_nobody_registered_and_sends_nothing(site, two_venues):
    sent = len(site.messages())
    unknown = WebClient(site.base, "10.0.4.1")
    status, _, headers = unknown.post("/login/", {"phone": "0977999888"})
    assert status == 302 and headers["Location"].endswith("/login/otp/")
    _, unknown_page, _ = unknown.get("/login/otp/")
    assert len(site.messages()) == sent
    known = WebClient(site.base, "10.0.4.2")
    status, _, headers = known.post("/login/", {"phone": OWNER_B["phone"]})
    assert status == 302 and headers["Location"].endswith("/login/otp/")
    _, known_page, _ = known.get("/login/otp/")
    assert len(site.messages()) == sent + 1
    def strip(page: str) -> str:
        page = re.sub(r'name="csrfmiddlewaretoken" value="[^"]+"', "", page)
        return page.replace("0977 999 888", "N").replace("0977 000 222", "N")

    assert strip(unknown_page).split("<main>")[1].split('id="countdown"')[0] == \
        strip(known_page).split("<main>")[1].split('id="countdown"')[0]
    # Any code is refused for the unknown phone.
    status, body, _ = unknown.post("/login/otp/", {"code": "000000"})
    assert status == 200 and "Mã OTP không đúng." in body


def test_forms_without_the_csrf_token_are_refused(site, two_venues):
    a, venue_a, _, _ = two_venues
    status, body, _ = a.post(f"/venues/{venue_a}/", {"action": "label", "label": "forged"}, csrf=False)
    assert status == 403 and "Biểu mẫu đã hết hạn" in body
    status, _, _ = WebClient(site.base).post("/login/", {"phone": "0977000111"}, csrf=False)
    assert status == 403
    # And from another site's page (Origin header), even with a token.
    token = a.csrf("/venues/")
    status, _, _ = a.request("POST", "/venues/request/", f"csrfmiddlewaretoken={token}&venue_id={venue_a}".encode(),
                             {"Content-Type": "application/x-www-form-urlencoded", "Origin": "http://evil.example"})
    assert status == 403


def test_oversized_and_malformed_requests_are_refused(site, two_venues):
    a, _, _, _ = two_venues
    token = a.csrf("/venues/request/")
    big = f"csrfmiddlewaretoken={token}&venue_id=".encode() + b"x" * 70_000
    status, _, _ = a.request("POST", "/venues/request/", big, {"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 400
    many = "&".join(f"f{n}=1" for n in range(300)) + f"&csrfmiddlewaretoken={token}"
    status, _, _ = a.request("POST", "/venues/request/", many.encode(),
                             {"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 400
    status, _, _ = a.request("POST", "/gates/x/lists/", b"--broken\r\n\r\n",
                             {"Content-Type": "multipart/form-data; boundary=zzz"})
    assert status in (400, 403, 404)
    assert WebClient(site.base).request("GET", "/register/", headers={"Host": "evil.example"})[0] == 400
    assert a.get("/venues/%00/")[0] == 404
    status, body, _ = a.post("/history/", {"page": "99999999999999999999", "since": "not a time"})
    assert status == 200 and "Bộ lọc chưa đúng" in body
    # A request line longer than gunicorn's limit, over a raw socket.
    host, port = "127.0.0.1", int(site.base.rsplit(":", 1)[1])
    with socket.create_connection((host, port), timeout=10) as raw:
        raw.sendall(b"GET /" + b"a" * 8000 + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert raw.recv(64).split(b" ")[1] in (b"400", b"414")
    # The site still answers, and a hostile Host header cost one log line, not a traceback.
    assert a.get("/venues/")[0] == 200
    assert "Invalid HTTP_HOST header" in site.log() and "Traceback" not in site.log()


def test_pages_carry_a_strict_csp_and_session_cookies_are_http_only(site, two_venues):
    status, _, headers = WebClient(site.base).get("/register/")
    csp = headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert "frame-ancestors 'none'" in csp and headers["X-Frame-Options"] == "DENY"
    a, _, _, _ = two_venues
    session = [c for c in a.jar if c.name == "qrgate_session"][0]
    assert session.has_nonstandard_attr("HttpOnly")
    assert BackofficeSite.__name__  # the secure flag follows https base_url: see test_backoffice_units


def test_the_admin_is_for_staff_made_by_the_command_who_log_in_by_sms_code(site, two_venues):
    from tests.backoffice_support import qrgate

    a, _, _, _ = two_venues
    status, _, headers = a.get("/admin/")
    assert status == 302 and "/login/" in headers["Location"]  # a manager is not staff
    done = qrgate("backoffice", "createstaff", "--config", str(site.config), "--phone", "0977555666",
                  "--name", "Cán bộ Y tế")
    assert done.returncode == 0, done.stderr
    staff = WebClient(site.base, "10.0.5.1")
    assert staff.post("/login/", {"phone": "0977555666", "next": "/admin/"}, token_from="/login/?next=/admin/")[0] == 302
    status, _, headers = staff.post("/login/otp/", {"code": site.last_code("+84977555666")})
    assert status == 302 and headers["Location"] == "/admin/"
    for path in ("/admin/", "/admin/venues/venue/", "/admin/people/auditentry/", "/admin/gates/gate/"):
        status, body, _ = staff.get(path)
        assert status == 200, path
    status, body, _ = staff.get("/admin/people/auditentry/")
    assert "staff_created" in body and "venue_registered" in body
    # No public page makes staff: registering never sets is_staff.
    assert a.get("/admin/venues/venue/")[0] == 302


def test_a_logged_in_manager_adds_a_venue_inside_their_own_in_two_steps_without_a_code(site, two_venues):
    a, venue_a, _, venue_b = two_venues
    sent = len(site.messages())
    status, body, _ = a.get("/register/")
    assert "qua 2 bước sau" in body and "0977 000 111" in body  # the registrant is the logged-in person
    inner = {**OWNER_A, "name": "Phòng bán vé", "parent": venue_a}
    inner.pop("phone")
    status, _, headers = a.post("/register/", inner)
    assert status == 302 and "/register/done/" in headers["Location"], status
    assert len(site.messages()) == sent  # no SMS: the person is already known
    new_id = headers["Location"].rstrip("/").rsplit("/", 1)[1]
    status, body, _ = a.get(f"/venues/{new_id}/")
    assert status == 200 and "Nằm trong địa điểm" in body and OWNER_A["name"] in body
    # Another's venue cannot be the parent: it is not among the choices, so the form refuses it.
    status, body, _ = a.post("/register/", {**inner, "name": "Kiốt số 2", "parent": venue_b})
    assert status == 200 and 'id="error-parent"' in body

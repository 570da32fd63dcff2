"""The read-only history web page: filters, count, paged table, export; Vietnamese and English.

Standard library only (``http.server.ThreadingHTTPServer``), no JavaScript. Every filter,
the pager and the export buttons are one POST form, so a person's name or phone never
appears in a URL, a browser history or a proxy log; the server logs method, path and
status only. Access needs the token (typed once on the login form, then a session cookie,
or ``Authorization: Bearer``); ``allow_localhost`` optionally lets loopback clients in. A
token may be limited to some venues (``TOKEN VENUE_ID ...`` in the token file): its reader
sees, filters and exports only those venues' events.

Limits (hostile clients): a form body is read only with a valid ``Content-Length`` of at
most ``MAX_FORM_BYTES`` (missing: 411, negative or not a number: 400, chunked or any other
``Transfer-Encoding``: 501, too big: 413) and within ``BODY_DEADLINE_S``; the request line
is at most ``MAX_REQUEST_LINE_BYTES`` (414) and the headers at most ``MAX_HEADER_BYTES``
(431); a connection idle for ``IDLE_TIMEOUT_S`` is closed; at most ``MAX_CONNECTIONS``
are served at once (more are closed at once). The ``Host`` header must be an IP address,
``localhost`` or one of the configured names (``--allowed-host``), else 421: a page on
another site whose name was rebound to this address (DNS rebinding) gets nothing, also
with ``allow_localhost``.

Usage::

    server = make_server(store, token, tz, ("127.0.0.1", 8080))
    threading.Thread(target=server.serve_forever).start()
    ...
    server.shutdown(); server.server_close()
"""

from __future__ import annotations

import dataclasses
import hmac
import html
import io
import ipaddress
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, tzinfo
from http import HTTPStatus
from http.cookies import CookieError, SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from firmware.core.errors import ConfigError, QrGateError
from provisioning.history.export import CONTENT_TYPES, clean_text, local_time, write_export
from provisioning.history.labels import decision_label, reason_label
from provisioning.history.query import DECISIONS, Filter, make_filter
from provisioning.history.store import HistoryStore

log = logging.getLogger(__name__)

SESSION_COOKIE = "qrgate_history_session"
SESSION_TTL_S = 12 * 3600
MAX_FORM_BYTES = 16 * 1024
MAX_REQUEST_LINE_BYTES = 8 * 1024
MAX_HEADER_BYTES = 16 * 1024
IDLE_TIMEOUT_S = 10.0
BODY_DEADLINE_S = 10.0
MAX_CONNECTIONS = 64
DEFAULT_TOKEN_FILE = Path.home() / ".config" / "qrgate" / "history-token"

TEXT: dict[str, dict[str, str]] = {
    "vi": {
        "title": "Lịch sử quét mã QR", "since": "Từ thời điểm", "until": "Đến thời điểm",
        "person": "Người đến địa điểm", "person_hint": "Họ tên hoặc số điện thoại (đã che), hoặc mã đã băm",
        "venue": "Địa điểm quét", "device": "Thiết bị kiểm soát vào ra", "decision": "Kết quả",
        "all": "Tất cả", "granted": "Cho vào", "denied": "Từ chối", "filter": "Lọc", "clear": "Xoá lọc",
        "export": "Xuất file", "count": "Số lượt quét", "time": "Thời gian quét", "direction": "Hướng",
        "in": "Vào", "out": "Ra", "reason": "Lý do", "page": "Trang {page}/{pages}",
        "prev": "‹ Trang trước", "next": "Trang sau ›", "empty": "Không có lượt quét nào phù hợp.",
        "login": "Đăng nhập", "token": "Mã truy cập", "logout": "Đăng xuất",
        "bad_token": "Mã truy cập không đúng.", "need_login": "Cần đăng nhập để xem lịch sử quét.",
        "lang_other": "English", "bad_input": "Bộ lọc chưa đúng",
    },
    "en": {
        "title": "QR scan history", "since": "From", "until": "Until",
        "person": "Person", "person_hint": "Name or phone (masked), or the hashed id",
        "venue": "Venue", "device": "Gate (controller)", "decision": "Decision",
        "all": "All", "granted": "Granted", "denied": "Denied", "filter": "Filter", "clear": "Clear",
        "export": "Export", "count": "Scans", "time": "Time", "direction": "Direction",
        "in": "In", "out": "Out", "reason": "Reason", "page": "Page {page}/{pages}",
        "prev": "‹ Previous", "next": "Next ›", "empty": "No scans match.",
        "login": "Log in", "token": "Access token", "logout": "Log out",
        "bad_token": "Wrong access token.", "need_login": "Log in to see the scan history.",
        "lang_other": "Tiếng Việt", "bad_input": "Please check the filter",
    },
}

CSS = """
*{box-sizing:border-box}body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;
color:#1d2430;background:#f4f6f9}header{background:#0b5cab;color:#fff;padding:.7rem 1rem;display:flex;
gap:1rem;align-items:center;justify-content:space-between;flex-wrap:wrap}header h1{font-size:1.15rem;margin:0}
header a,header button{color:#fff;background:none;border:1px solid #fff6;border-radius:4px;padding:.25rem .6rem;
font:inherit;text-decoration:none;cursor:pointer}main{padding:1rem;max-width:1200px;margin:auto}
form.filters{display:grid;grid-template-columns:repeat(auto-fit,minmax(11rem,1fr));gap:.6rem;background:#fff;
padding:.8rem;border-radius:6px;box-shadow:0 1px 2px #0002}label{display:flex;flex-direction:column;
font-size:.85rem;gap:.2rem}input,select,button{font:inherit;padding:.45rem;border:1px solid #b8c0cc;
border-radius:4px;min-width:0;width:100%}.actions{display:flex;gap:.5rem;flex-wrap:wrap;align-items:end;
grid-column:1/-1}.actions button{width:auto}button.primary{background:#0b5cab;color:#fff;border-color:#0b5cab}
.count{margin:1rem 0 .5rem;font-weight:600}.error{background:#fde8e8;color:#8a1c1c;padding:.6rem;
border-radius:4px;margin:.6rem 0}table{width:100%;border-collapse:collapse;background:#fff;
box-shadow:0 1px 2px #0002}th,td{text-align:left;padding:.45rem .6rem;border-bottom:1px solid #e3e7ed;
vertical-align:top}th{background:#eef2f7;font-size:.85rem}td.granted{color:#176b2c}td.denied{color:#a11d1d}
a.clear{padding:.45rem .6rem;color:#0b5cab}.pager{display:flex;gap:.6rem;align-items:center;justify-content:center;margin:1rem 0}.pager button{width:auto}
@media (max-width:640px){table,thead,tbody,tr,td{display:block}thead{display:none}
tr{border-bottom:2px solid #d5dbe3;padding:.3rem 0}td{border:none;padding:.15rem .6rem}
td::before{content:attr(data-label) ": ";font-weight:600;color:#55606e}}
"""


@dataclass(frozen=True)
class Access:
    """One access token and what it may see.

    Attributes:
        token: the secret (at least 16 characters).
        venues: the venue ids this token shows; None for every venue.
    """

    token: str
    venues: tuple[str, ...] | None = None


def load_or_create_tokens(path: Path, announce: Callable[[str], None] = print) -> list[Access]:
    """Return the tokens in ``path``, creating the file (0600, one all-venues token) if missing.

    The file has one token a line: ``TOKEN`` sees every venue, ``TOKEN VENUE_ID ...`` only
    those venues; blank lines and ``#`` comments are skipped. ``qrgate history token add``
    appends lines. A new token is passed to ``announce`` once; it is never logged.

    Raises:
        ConfigError: the file cannot be read or created, or holds no valid token.
    """
    try:
        return _read_tokens(path)
    except FileNotFoundError:
        pass
    return [add_token(path, None, announce)]


def add_token(path: Path, venues: tuple[str, ...] | None, announce: Callable[[str], None] = print) -> Access:
    """Append a new random token (for venues, or all if None) to the token file (created 0600).

    Raises:
        ConfigError: the file cannot be written, or a venue id has spaces.
    """
    if venues is not None and (not venues or any(not v or v.split() != [v] for v in venues)):
        raise ConfigError("give one or more --venue ids without spaces")
    access = Access(secrets.token_urlsafe(32), venues)
    line = " ".join([access.token, *(venues or ())]) + "\n"
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "a") as fh:
            fh.write(line)
    except OSError as err:
        raise ConfigError(f"cannot write the token file {path} ({err.strerror}); choose another "
                          "--token-file") from err
    scope = "every venue" if venues is None else "venue(s) " + ", ".join(venues)
    announce(f"added an access token for {scope} to {path} (0600); the token, shown only now: {access.token}")
    return access


def _read_tokens(path: Path) -> list[Access]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise
    except OSError as err:
        raise ConfigError(f"cannot read the token file {path} ({err.strerror}); check its permissions") from err
    found: list[Access] = []
    for number, line in enumerate(text.splitlines(), 1):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        if len(words[0]) < 16:
            raise ConfigError(f"{path} line {number}: a token must have at least 16 characters; "
                              "make one with `qrgate history token add`")
        found.append(Access(words[0], tuple(words[1:]) or None))
    if not found:
        raise ConfigError(f"the token file {path} holds no token; delete it to get a new one, or "
                          "`qrgate history token add`")
    if path.stat().st_mode & 0o077:
        log.warning("token file %s is readable by other users; chmod 600 it", path)
    return found


class Sessions:
    """Logged-in browser sessions: random ids with an expiry and their Access, in memory (thread-safe)."""

    def __init__(self, ttl_s: float = SESSION_TTL_S, monotonic_s: Callable[[], float] = time.monotonic) -> None:
        self._ttl_s = ttl_s
        self._monotonic_s = monotonic_s
        self._open: dict[str, tuple[float, Access]] = {}
        self._lock = threading.Lock()

    def open(self, access: Access) -> str:
        sid = secrets.token_urlsafe(32)
        with self._lock:
            now = self._monotonic_s()
            self._open = {k: v for k, v in self._open.items() if v[0] > now}
            self._open[sid] = (now + self._ttl_s, access)
        return sid

    def lookup(self, sid: str) -> Access | None:
        """The session's Access, or None if unknown or expired."""
        with self._lock:
            found = self._open.get(sid)
            return found[1] if found is not None and found[0] > self._monotonic_s() else None

    def close(self, sid: str) -> None:
        with self._lock:
            self._open.pop(sid, None)


class HistoryApp:
    """What the handler needs: the store, the token, the sessions and display settings.

    Args:
        store: a read-only HistoryStore.
        token: the access token (every venue), or the Access list of a token file.
        tz: time zone for the form and the table.
        page_size: rows per page.
        allow_localhost: let loopback clients in without the token.
        now_ms: wall clock, Unix ms (relative times, export file names).
        hosts: host names (besides IP addresses and ``localhost``) the page answers to.
        venue_names: venue id to name (shown on the page; exports keep the id beside it).
    """

    def __init__(self, store: HistoryStore, token: str | Sequence[Access], tz: tzinfo, page_size: int = 50,
                 allow_localhost: bool = False,
                 now_ms: Callable[[], int] = lambda: int(time.time() * 1000),
                 hosts: Sequence[str] = (), venue_names: Mapping[str, str] | None = None) -> None:
        self.hosts = frozenset(h.strip().lower().rstrip(".") for h in (*hosts, "localhost") if h.strip())
        self.store = store
        self.venue_names = dict(venue_names or {})
        self.access = [Access(token)] if isinstance(token, str) else list(token)
        self.tz = tz
        self.page_size = page_size
        self.allow_localhost = allow_localhost
        self.now_ms = now_ms
        self.sessions = Sessions()

    def match(self, given: str) -> Access | None:
        """The Access whose token is given, compared in constant time against every token."""
        found = None
        for access in self.access:
            if hmac.compare_digest(given.encode(), access.token.encode()):
                found = access
        return found

    def host_allowed(self, header: str | None) -> bool:
        """True for a Host header naming an IP address, ``localhost`` or a configured name."""
        if not header or len(header) > 255:
            return False
        host = header.strip().lower()
        if host.startswith("["):  # [v6]:port
            host = host[1:].partition("]")[0]
        elif host.count(":") == 1:
            host = host.partition(":")[0]
        host = host.rstrip(".")
        try:
            ipaddress.ip_address(host)
            return True  # a browser that typed an address: no name to rebind
        except ValueError:
            return host in self.hosts


class HistoryServer(ThreadingHTTPServer):
    """A ThreadingHTTPServer carrying the HistoryApp, serving at most ``MAX_CONNECTIONS`` at once."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], app: HistoryApp, idle_timeout_s: float = IDLE_TIMEOUT_S) -> None:
        self.app = app
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        handler = type("HistoryHandler", (HistoryHandler,), {"timeout": idle_timeout_s})
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            log.warning("history page: more than %d connections at once; closing one", MAX_CONNECTIONS)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


def make_server(store: HistoryStore, token: str | Sequence[Access], tz: tzinfo,
                address: tuple[str, int] = ("127.0.0.1", 8080), idle_timeout_s: float = IDLE_TIMEOUT_S,
                **options: Any) -> HistoryServer:
    """Build the server (bound, not yet serving). ``options`` go to ``HistoryApp``."""
    return HistoryServer(address, HistoryApp(store, token, tz, **options), idle_timeout_s)


class BadRequest(ValueError):
    """A request the page refuses, with the HTTP status to answer."""

    def __init__(self, status: HTTPStatus, text: str) -> None:
        super().__init__(text)
        self.status = status


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


class HistoryHandler(BaseHTTPRequestHandler):
    """One request. Routes: ``GET|POST /``, ``GET|POST /login``, ``POST /logout``, ``GET /healthz``."""

    server: HistoryServer
    server_version = "qrgate-history"
    sys_version = ""
    timeout = IDLE_TIMEOUT_S  # socket timeout: an idle or stalled connection is closed
    default_request_version = "HTTP/1.0"  # answer garbage with a status line, not an HTTP/0.9 bare body

    # -- logging without personal data -------------------------------------------------------
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        log.info("%s %s %s", getattr(self, "command", ""), urlsplit(getattr(self, "path", "")).path, code)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - base class signature
        log.debug("http: %s", (format % args)[:200] if "%" in format else format)

    def log_error(self, format: str, *args: Any) -> None:  # noqa: A002
        log.warning("http error on %s %s", getattr(self, "command", ""), urlsplit(getattr(self, "path", "")).path)

    # -- limits --------------------------------------------------------------------------------------
    def parse_request(self) -> bool:
        """The standard parse, then the request line, header size and Host checks (4xx on failure)."""
        if len(self.raw_requestline) > MAX_REQUEST_LINE_BYTES:
            self.requestline, self.request_version, self.command, self.path = "", "HTTP/1.0", "GET", ""
            self.send_error(HTTPStatus.REQUEST_URI_TOO_LONG, "request line too long")
            return False
        if not super().parse_request():
            return False
        if sum(len(k) + len(v) + 4 for k, v in self.headers.items()) > MAX_HEADER_BYTES:
            self.send_error(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "headers too large")
            return False
        if len(self.headers.get_all("Host") or []) > 1 or not self.app.host_allowed(self.headers.get("Host")):
            self.send_error(HTTPStatus.MISDIRECTED_REQUEST, "unknown Host; add it with --allowed-host")
            return False
        return True

    # -- plumbing ---------------------------------------------------------------------------------
    @property
    def app(self) -> HistoryApp:
        return self.server.app

    def _cookies(self) -> SimpleCookie:
        jar = SimpleCookie()
        try:
            jar.load(self.headers.get("Cookie", ""))
        except CookieError:
            pass
        return jar

    def _lang(self) -> str:
        query = parse_qs(urlsplit(self.path).query)
        wanted = (query.get("lang") or [""])[0]
        if wanted in TEXT:
            return wanted
        cookie = self._cookies().get("lang")
        if cookie and cookie.value in TEXT:
            return cookie.value
        best, best_q = "vi", -1.0
        for part in self.headers.get("Accept-Language", "").split(","):
            tag, _, q = part.strip().partition(";q=")
            code = tag.split("-")[0].lower()
            try:
                weight = float(q) if q else 1.0
            except ValueError:
                weight = 0.0
            if code in TEXT and weight > best_q:
                best, best_q = code, weight
        return best

    def _access(self) -> Access | None:
        """Who is asking: the Access of the bearer token or the session, else None."""
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            found = self.app.match(auth[7:].strip())
            if found is not None:
                return found
        cookie = self._cookies().get(SESSION_COOKIE)
        if cookie:
            found = self.app.sessions.lookup(cookie.value)
            if found is not None:
                return found
        if self.app.allow_localhost and self.client_address[0] in ("127.0.0.1", "::1"):
            return Access("localhost")
        return None

    def _form(self) -> dict[str, str]:
        """Read the bounded form body (see the module docstring for the limits).

        Raises:
            BadRequest: with the status to answer; the connection is then closed.
        """
        self.close_connection = True  # whatever happens below, no second request on this connection
        if self.headers.get("Transfer-Encoding") is not None:
            raise BadRequest(HTTPStatus.NOT_IMPLEMENTED, "Transfer-Encoding is not supported; send Content-Length")
        lengths = self.headers.get_all("Content-Length") or []
        if not lengths:
            raise BadRequest(HTTPStatus.LENGTH_REQUIRED, "a form needs Content-Length")
        text = lengths[0].strip()
        if len(lengths) > 1 or not text.isdigit() or not text.isascii() or len(text) > 12:
            raise BadRequest(HTTPStatus.BAD_REQUEST, "Content-Length is not a whole number >= 0")
        length = int(text)
        if length > MAX_FORM_BYTES:
            raise BadRequest(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"a form is at most {MAX_FORM_BYTES} bytes")
        body = self._read_body(length)
        return {k: v[-1] for k, v in parse_qs(body.decode("utf-8", errors="replace"), keep_blank_values=True,
                                              max_num_fields=100).items()}

    def _read_body(self, length: int) -> bytes:
        """Read exactly length bytes within ``BODY_DEADLINE_S`` (a client dribbling bytes is cut off)."""
        deadline = time.monotonic() + BODY_DEADLINE_S
        chunks: list[bytes] = []
        left = length
        while left > 0:
            if time.monotonic() > deadline:
                raise BadRequest(HTTPStatus.REQUEST_TIMEOUT, "the body came too slowly")
            try:
                chunk = self.rfile.read1(min(left, 4096))  # type: ignore[attr-defined]
            except TimeoutError as err:
                raise BadRequest(HTTPStatus.REQUEST_TIMEOUT, "the body came too slowly") from err
            if not chunk:
                raise BadRequest(HTTPStatus.BAD_REQUEST, "the body is shorter than Content-Length")
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)

    def _headers(self, status: int, content_type: str, extra: dict[str, str] | None = None,
                 length: int | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("X-Frame-Options", "DENY")
        self.send_header("Content-Security-Policy",
                         "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
                         "frame-ancestors 'none'; base-uri 'none'")
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        if length is not None:
            self.send_header("Content-Length", str(length))
        self.end_headers()

    def _html(self, status: int, body: str, extra: dict[str, str] | None = None) -> None:
        data = body.encode("utf-8")
        self._headers(status, "text/html; charset=utf-8", extra, len(data))
        self.wfile.write(data)

    def _redirect(self, where: str, extra: dict[str, str] | None = None) -> None:
        self._headers(HTTPStatus.SEE_OTHER, "text/plain; charset=utf-8", {"Location": where, **(extra or {})}, 0)

    # -- routes -------------------------------------------------------------------------------------
    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        path = urlsplit(self.path).path
        if path == "/healthz":
            self._headers(HTTPStatus.OK, "text/plain; charset=utf-8", length=3)
            self.wfile.write(b"ok\n")
        elif path == "/login":
            self._login_page(HTTPStatus.OK, "")
        elif path == "/":
            access = self._access()
            if access is None:
                self._login_page(HTTPStatus.UNAUTHORIZED, "need_login")
                return
            self._history({}, access)
        else:
            self._html(HTTPStatus.NOT_FOUND, "<!doctype html><title>404</title><p>404")

    def do_POST(self) -> None:  # noqa: N802
        path = urlsplit(self.path).path
        try:
            form = self._form()
        except (BadRequest, ValueError) as err:
            status = err.status if isinstance(err, BadRequest) else HTTPStatus.BAD_REQUEST
            log.warning("history page: refused a %s request: %s", self.command, err)
            self._html(status, f"<!doctype html><title>{int(status)}</title><p>{int(status)} {_esc(err)}")
            return
        if path == "/login":
            self._login(form)
        elif path == "/logout":
            cookie = self._cookies().get(SESSION_COOKIE)
            if cookie:
                self.app.sessions.close(cookie.value)
            self._redirect("/login", {"Set-Cookie": f"{SESSION_COOKIE}=; Max-Age=0; Path=/; HttpOnly; SameSite=Strict"})
        elif path == "/":
            access = self._access()
            if access is None:
                self._login_page(HTTPStatus.UNAUTHORIZED, "need_login")
                return
            self._history(form, access)
        else:
            self._html(HTTPStatus.NOT_FOUND, "<!doctype html><title>404</title><p>404")

    def _login(self, form: dict[str, str]) -> None:
        access = self.app.match(form.get("token", "").strip())
        if access is None:
            log.warning("failed login to the history page")
            self._login_page(HTTPStatus.UNAUTHORIZED, "bad_token")
            return
        sid = self.app.sessions.open(access)
        self._redirect("/", {"Set-Cookie": f"{SESSION_COOKIE}={sid}; Path=/; HttpOnly; SameSite=Strict; "
                             f"Max-Age={SESSION_TTL_S}"})

    # -- pages ---------------------------------------------------------------------------------------
    def _frame(self, lang: str, body: str, logged_in: bool) -> str:
        t = TEXT[lang]
        other = "en" if lang == "vi" else "vi"
        logout = (f'<form method="post" action="/logout"><button type="submit">{t["logout"]}</button></form>'
                  if logged_in else "")
        return (f'<!doctype html><html lang="{lang}"><head><meta charset="utf-8">'
                f'<meta name="viewport" content="width=device-width, initial-scale=1">'
                f"<title>{t['title']}</title><style>{CSS}</style></head><body>"
                f'<header><h1>{t["title"]}</h1><nav style="display:flex;gap:.5rem">'
                f'<a href="?lang={other}" hreflang="{other}">{t["lang_other"]}</a>{logout}</nav></header>'
                f"<main>{body}</main></body></html>")

    def _login_page(self, status: int, message: str) -> None:
        lang = self._lang()
        t = TEXT[lang]
        note = f'<p class="error" role="alert">{t[message]}</p>' if message else ""
        body = (f'{note}<form class="filters" method="post" action="/login">'
                f'<label>{t["token"]}<input type="password" name="token" autocomplete="current-password" '
                f'required autofocus></label><div class="actions"><button class="primary" type="submit">'
                f'{t["login"]}</button></div></form>')
        self._html(status, self._frame(lang, body, False), {"Set-Cookie": f"lang={lang}; Path=/; SameSite=Strict"})

    def _history(self, form: dict[str, str], access: Access) -> None:
        lang = self._lang()
        t = TEXT[lang]
        error = ""
        try:
            flt = make_filter(since=form.get("since", ""), until=form.get("until", ""),
                              person=form.get("person", ""), venue=form.get("venue", ""),
                              device=form.get("device", ""), decision=form.get("decision", ""),
                              now_ms=self.app.now_ms(), tz=self.app.tz)
        except ConfigError as err:
            error = f'{t["bad_input"]}: ' + "; ".join(err.problems)
            flt = Filter()
        flt = dataclasses.replace(flt, venues=access.venues)  # a venue token sees its venues only
        export = form.get("export", "")
        if export in ("csv", "json", "xlsx") and not error:
            self._export(export, flt)
            return
        try:
            page_no = int(form.get("page") or 1)
        except ValueError:
            page_no = 1
        try:
            page = self.app.store.page(flt, page_no, self.app.page_size)
            sources = [(v, d) for v, d in self.app.store.sources() if access.venues is None or v in access.venues]
        except QrGateError as err:
            log.error("history page failed: %s", err)
            self._html(HTTPStatus.SERVICE_UNAVAILABLE, self._frame(lang, f'<p class="error">{_esc(err)}</p>', True))
            return
        body = self._filters_html(t, form, sources, error)
        body += f'<p class="count" id="count">{t["count"]}: <span>{page.total}</span></p>'
        body += self._table_html(t, page.rows, lang)
        body += self._pager_html(t, page)
        self._html(HTTPStatus.OK, self._frame(lang, body, True),
                   {"Set-Cookie": f"lang={lang}; Path=/; SameSite=Strict"})

    def _filters_html(self, t: dict[str, str], form: dict[str, str], sources: list[tuple[str, str]],
                      error: str) -> str:
        def field(name: str, kind: str, extra: str = "") -> str:
            return (f'<label>{t[name]}<input type="{kind}" name="{name}" value="{_esc(form.get(name, ""))}"'
                    f"{extra}></label>")

        def select(name: str, options: list[tuple[str, str]]) -> str:
            chosen = form.get(name, "")
            opts = "".join(f'<option value="{_esc(v)}"{" selected" if v == chosen else ""}>{_esc(label)}</option>'
                           for v, label in [("", t["all"]), *options])
            return f'<label>{t[name]}<select name="{name}">{opts}</select></label>'

        venues = sorted({v for v, _ in sources})
        devices = sorted({d for _, d in sources})
        note = f'<p class="error" role="alert">{_esc(error)}</p>' if error else ""
        return (f'{note}<form class="filters" id="filters" method="post" action="/">'
                + field("since", "datetime-local", ' step="1"') + field("until", "datetime-local", ' step="1"')
                + field("person", "search", f' placeholder="{_esc(t["person_hint"])}" autocomplete="off"')
                + select("venue", [(v, self.app.venue_names.get(v, v)) for v in venues]) + select("device", [(d, d) for d in devices])
                + select("decision", [(d, t[d]) for d in DECISIONS])
                + f'<div class="actions"><button class="primary" type="submit" name="page" value="1">'
                f'{t["filter"]}</button><a class="clear" href="/">{t["clear"]}</a>'
                f'<span style="flex:1"></span><span>{t["export"]}:</span>'
                + "".join(f'<button type="submit" name="export" value="{f}">{f.upper()}</button>'
                          for f in ("csv", "xlsx", "json"))
                + "</div></form>")

    def _table_html(self, t: dict[str, str], rows: list, lang: str) -> str:
        if not rows:
            return f'<p id="empty">{t["empty"]}</p>'
        heads = ["time", "person", "venue", "device", "direction", "decision", "reason"]
        out = ['<table id="history"><thead><tr>' + "".join(f"<th>{t[h]}</th>" for h in heads)
               + "</tr></thead><tbody>"]
        for ev in rows:
            cells = [
                ("time", local_time(ev.ts_ms, self.app.tz), ""),
                ("person", ev.display, ""),
                ("venue", self.app.venue_names.get(ev.venue_id, ev.venue_id), ""),
                ("device", ev.device_id, ""),
                ("direction", t.get(ev.direction, ev.direction), ""),
                ("decision", decision_label(ev.decision, ev.direction, lang),
                 ev.decision if ev.decision in DECISIONS else ""),
                ("reason", reason_label(ev.reason, lang), ""),
            ]
            out.append("<tr>" + "".join(f'<td data-label="{_esc(t[k])}" class="{c}">{_esc(clean_text(v))}</td>'
                                        for k, v, c in cells) + "</tr>")
        out.append("</tbody></table>")
        return "".join(out)

    def _pager_html(self, t: dict[str, str], page) -> str:
        prev_btn = (f'<button type="submit" form="filters" name="page" value="{page.page - 1}" id="prev">'
                    f'{t["prev"]}</button>' if page.page > 1 else "")
        next_btn = (f'<button type="submit" form="filters" name="page" value="{page.page + 1}" id="next">'
                    f'{t["next"]}</button>' if page.page < page.pages else "")
        label = t["page"].format(page=page.page, pages=page.pages)
        return f'<nav class="pager">{prev_btn}<span id="pageinfo">{label}</span>{next_btn}</nav>'

    def _export(self, fmt: str, flt: Filter) -> None:
        stamp = datetime.fromtimestamp(self.app.now_ms() / 1000, tz=self.app.tz).strftime("%Y%m%d-%H%M%S")
        extra = {"Content-Disposition": f'attachment; filename="qrgate-history-{stamp}.{fmt}"'}
        buffer = io.BytesIO()
        try:
            count = write_export(fmt, self.app.store.rows(flt), buffer, self.app.tz, flt.describe(),
                                 venue_names=self.app.venue_names)
        except QrGateError as err:
            log.error("history export failed: %s", err)
            self._html(HTTPStatus.SERVICE_UNAVAILABLE, f"<!doctype html><p>{_esc(err)}")
            return
        data = buffer.getvalue()
        self._headers(HTTPStatus.OK, CONTENT_TYPES[fmt], extra, len(data))
        self.wfile.write(data)
        log.info("exported %d events as %s", count, fmt)


def serve(args: Any, tz: tzinfo) -> int:
    """Run ``qrgate history serve`` until SIGTERM or SIGINT. Returns the exit status.

    Raises:
        ConfigError: a bad ``--listen`` or token file.
        StoreError: the database cannot be opened.
    """
    from firmware.adapters.process import install_signal_handlers
    from provisioning.history.store import open_store

    host, _, port = args.listen.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"--listen {args.listen!r} is not address:port; for example 127.0.0.1:8080")
    if args.page_size < 1 or args.page_size > 1000:
        raise ConfigError(f"--page-size {args.page_size} must be between 1 and 1000")
    token = load_or_create_tokens(Path(args.token_file) if args.token_file else DEFAULT_TOKEN_FILE)
    store = open_store(args.db, readonly=True)
    try:
        names = {}
        if getattr(args, "venues", ""):
            from provisioning.venues import venue_names_in

            names = venue_names_in(args.venues)
        server = make_server(store, token, tz, (host.strip("[]"), int(port)), page_size=args.page_size,
                             allow_localhost=args.allow_localhost, hosts=tuple(getattr(args, "allowed_host", ()) or ()),
                             venue_names=names)
    except OSError as err:
        store.close()
        raise ConfigError(f"cannot listen on {args.listen} ({err.strerror}); pick a free address:port") from err
    stop = threading.Event()
    install_signal_handlers(stop)
    thread = threading.Thread(target=server.serve_forever, name="qrgate-history-web", daemon=True)
    thread.start()
    print(f"history page on http://{args.listen}/ (read-only)", flush=True)
    try:
        while not stop.wait(1.0):
            pass
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
        store.close()
    return 0

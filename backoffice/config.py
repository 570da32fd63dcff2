"""The back office's TOML configuration, parsed once into frozen dataclasses.

Pure apart from reading the file (and the escrow key, below): every problem is collected and raised together as a
``ConfigError`` (the CLI exits 78). Relative paths are resolved against the config file's
folder. Example::

    [site]
    base_url = "https://qr.example.vn"      # what people type; https turns secure cookies on
    listen = "127.0.0.1:8000"               # gunicorn binds here (a TLS proxy in front)
    allowed_hosts = ["qr.example.vn"]       # default: the host of base_url
    secret_key_file = "secret_key"          # made by `qrgate backoffice init` (0600)

    [database]
    url = "backoffice.sqlite3"              # or sqlite:///path, or postgresql://user@host/db

    [sms]
    backend = "console"                     # console | http
    console_file = "sms.jsonl"              # "-" for stdout

    [keys]
    issuer_key = "keys/issuer.pem"          # made by init when missing
    authority_key = "keys/authority.pem"
    command_key = "keys/command.pem"

    [mqtt]
    host = ""                               # empty: no broker (gates page shows no live state)
    port = 1883

    [privacy]
    escrow_key = "health-office.pub.pem"    # phone check-ins carry the contact sealed to it
    quarantine_keep_days = 90               # ended quarantine entries are deleted this long after their end

Apart from the TOML, it reads the one key file the back office must hold in memory from start
(``privacy.escrow_key``), so a bad key is a config problem at start, never an error at check-in.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from firmware.core.errors import ConfigError

SECTIONS: dict[str, tuple[str, ...]] = {
    "site": ("base_url", "listen", "allowed_hosts", "secret_key_file", "time_zone", "session_age_s",
             "workers", "behind_proxy", "page_size"),
    "database": ("url",),
    "sms": ("backend", "console_file", "url", "method", "auth_header", "auth_value_file", "body_template",
            "content_type", "timeout_s"),
    "otp": ("ttl_s", "max_tries", "resend_interval_s", "per_phone_per_hour", "per_client_per_hour"),
    "keys": ("issuer_key", "authority_key", "command_key"),
    "mqtt": ("host", "port", "prefix", "tls", "ca_file", "cert_file", "key_file", "username",
             "password_file"),
    "people": ("pass_valid_days", "health_hotline", "declaration_fresh_h", "checkin_repeat_s",
               "declaration_retention_days"),
    "privacy": ("escrow_key", "quarantine_keep_days"),
}
SMS_BACKENDS = ("console", "http")
_LISTEN = re.compile(r"^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.\-]+):(\d{1,5})$")
_HOST = re.compile(r"^(\.?[A-Za-z0-9\-]+(\.[A-Za-z0-9\-]+)*|\[[0-9a-fA-F:]+\]|\*)$")


@dataclass(frozen=True)
class SiteSettings:
    """``[site]``: where the back office is reached and how sessions behave."""

    base_url: str = "http://127.0.0.1:8000"
    listen: str = "127.0.0.1:8000"
    allowed_hosts: tuple[str, ...] = ()
    secret_key_file: Path = Path("secret_key")
    time_zone: str = "Asia/Ho_Chi_Minh"
    session_age_s: int = 8 * 3600
    workers: int = 2
    behind_proxy: bool = False
    page_size: int = 50

    @property
    def secure(self) -> bool:
        """Cookies are marked Secure when people reach the site over https."""
        return self.base_url.startswith("https://")

    @property
    def listen_host_port(self) -> tuple[str, int]:
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]"), int(port)


@dataclass(frozen=True)
class SmsSettings:
    """``[sms]``: the SMS adapter. ``body_template`` takes ``$to`` and ``$text``."""

    backend: str = "console"
    console_file: str = "sms.jsonl"
    url: str = ""
    method: str = "POST"
    auth_header: str = "Authorization"
    auth_value_file: str = ""
    body_template: str = '{"to": "$to", "text": "$text"}'
    content_type: str = "application/json"
    timeout_s: float = 10.0


@dataclass(frozen=True)
class OtpSettings:
    """``[otp]``: one-time code rules (the defaults are the issue's)."""

    ttl_s: int = 300
    max_tries: int = 5
    resend_interval_s: int = 60
    per_phone_per_hour: int = 5
    per_client_per_hour: int = 20


@dataclass(frozen=True)
class KeySettings:
    """``[keys]``: private keys the back office signs with (PEM files, 0600)."""

    issuer_key: Path = Path("keys/issuer.pem")
    authority_key: Path = Path("keys/authority.pem")
    command_key: Path = Path("keys/command.pem")


@dataclass(frozen=True)
class MqttSettings:
    """``[mqtt]``: the gates' broker (empty host: none)."""

    host: str = ""
    port: int = 1883
    prefix: str = "qrgate"
    tls: bool = False
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    username: str = ""
    password_file: str = ""


@dataclass(frozen=True)
class PeopleSettings:
    """``[people]``: the people's side (personal pass, health declaration, phone check-in)."""

    pass_valid_days: int = 30
    health_hotline: str = "19009095"
    declaration_fresh_h: float = 24.0
    checkin_repeat_s: int = 300
    declaration_retention_days: int = 30


@dataclass(frozen=True)
class PrivacySettings:
    """``[privacy]``: the contact escrow of phone check-ins, and how long ended quarantines are kept.

    Attributes:
        escrow_key: the health office's X25519 public key file (PEM, the ``.pub.pem`` of
            ``qrgate keys escrow-new``, the same file as the gates' ``privacy.escrow_key``), or
            None: phone check-ins then carry no sealed contact.
        escrow_public_key: that key, read and checked once at start.
        quarantine_keep_days: a quarantine entry (``QuarantineEntry``) is deleted by
            ``qrgate backoffice publish-lists`` once it ended more than this many days ago
            (1 to 3650); the audit rows of the quarantine stay.
    """

    escrow_key: Path | None = None
    escrow_public_key: X25519PublicKey | None = field(default=None, repr=False, compare=False)
    quarantine_keep_days: int = 90


@dataclass(frozen=True)
class BackofficeConfig:
    """The whole back office configuration.

    Attributes:
        path: the config file it was read from.
        database_url: a SQLite path (absolute) or a ``postgresql://`` URL.
    """

    path: Path
    site: SiteSettings
    database_url: str
    sms: SmsSettings
    otp: OtpSettings
    keys: KeySettings
    mqtt: MqttSettings = field(default_factory=MqttSettings)
    people: PeopleSettings = field(default_factory=PeopleSettings)
    privacy: PrivacySettings = field(default_factory=PrivacySettings)

    @property
    def is_postgres(self) -> bool:
        return self.database_url.startswith(("postgresql://", "postgres://"))

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.site.time_zone)


class _Reader:
    """Reads one section's keys, collecting problems instead of stopping at the first."""

    def __init__(self, section: str, data: dict[str, Any], problems: list[str]) -> None:
        self.section, self.data, self.problems = section, data, problems

    def _bad(self, key: str, value: Any, fix: str) -> None:
        self.problems.append(f"{self.section}.{key} = {value!r}: {fix}")

    def text(self, key: str, default: str) -> str:
        value = self.data.get(key, default)
        if not isinstance(value, str):
            self._bad(key, value, "must be a string")
            return default
        return value

    def number(self, key: str, default: float, low: float, high: float, integer: bool = True) -> Any:
        value = self.data.get(key, default)
        kinds = (int,) if integer else (int, float)
        if isinstance(value, bool) or not isinstance(value, kinds) or not low <= value <= high:
            what = "a whole number" if integer else "a number"
            self._bad(key, value, f"must be {what} from {low:g} to {high:g}")
            return default
        return value

    def flag(self, key: str, default: bool) -> bool:
        value = self.data.get(key, default)
        if not isinstance(value, bool):
            self._bad(key, value, "must be true or false")
            return default
        return value


def _path(base: Path, text: str) -> Path:
    p = Path(text).expanduser()
    return p if p.is_absolute() else base / p


def _database_url(base: Path, text: str, problems: list[str]) -> str:
    if text.startswith(("postgresql://", "postgres://")):
        if not urlsplit(text).path.strip("/"):
            problems.append(f"database.url = {text!r}: name the database, e.g. postgresql://qrgate@localhost/qrgate")
        return text
    if "://" in text and not text.startswith("sqlite:///"):
        problems.append(f"database.url = {text!r}: give a SQLite path, sqlite:///path or postgresql://user@host/db")
        return text
    path = text.removeprefix("sqlite:///") if text.startswith("sqlite:///") else text
    if text.startswith("sqlite:///"):
        path = "/" + path
    if not path:
        problems.append("database.url is empty: give a SQLite path such as backoffice.sqlite3")
    return str(_path(base, path))


def parse_config(data: dict[str, Any], base: Path, path: Path) -> BackofficeConfig:
    """Check a parsed TOML document and build the config.

    Args:
        data: the document (``tomllib.loads``).
        base: folder that relative paths are resolved against.
        path: the file, for messages and ``BackofficeConfig.path``.

    Raises:
        ConfigError: every problem found, one line each with the key, the value and the fix.
    """
    problems: list[str] = []
    for name, value in data.items():
        if name not in SECTIONS:
            near = difflib.get_close_matches(name, list(SECTIONS), 1)
            hint = f"; did you mean [{near[0]}]?" if near else f"; sections are {', '.join(SECTIONS)}"
            problems.append(f"[{name}] is not a back office section{hint}")
        elif not isinstance(value, dict):
            problems.append(f"{name} must be a [{name}] table")
        else:
            for key in value:
                if key not in SECTIONS[name]:
                    near = difflib.get_close_matches(key, SECTIONS[name], 1)
                    hint = f"; did you mean {name}.{near[0]}?" if near else ""
                    problems.append(f"{name}.{key} is not a known key{hint}")

    def section(name: str) -> _Reader:
        raw = data.get(name, {})
        return _Reader(name, raw if isinstance(raw, dict) else {}, problems)

    s = section("site")
    base_url = s.text("base_url", SiteSettings.base_url).rstrip("/")
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/"):
        problems.append(f"site.base_url = {base_url!r}: give the address people open, such as "
                        "https://qr.example.vn (no path)")
    listen = s.text("listen", SiteSettings.listen)
    m = _LISTEN.match(listen)
    if not m or not 1 <= int(m.group(2)) <= 65535:
        problems.append(f"site.listen = {listen!r}: give address:port, such as 127.0.0.1:8000")
    hosts_raw = s.data.get("allowed_hosts", [parts.hostname] if parts.hostname else [])
    hosts: tuple[str, ...] = ()
    if not isinstance(hosts_raw, list) or not all(isinstance(h, str) for h in hosts_raw):
        problems.append(f"site.allowed_hosts = {hosts_raw!r}: give a list of host names, such as [\"qr.example.vn\"]")
    else:
        hosts = tuple(hosts_raw)
        for h in hosts:
            if not _HOST.match(h):
                problems.append(f"site.allowed_hosts: {h!r} is not a host name")
        if not hosts:
            problems.append("site.allowed_hosts is empty: give the host name of site.base_url")
    tz = s.text("time_zone", SiteSettings.time_zone)
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        problems.append(f"site.time_zone = {tz!r}: give an IANA zone such as Asia/Ho_Chi_Minh")
    site = SiteSettings(
        base_url=base_url, listen=listen, allowed_hosts=hosts,
        secret_key_file=_path(base, s.text("secret_key_file", "secret_key")), time_zone=tz,
        session_age_s=s.number("session_age_s", SiteSettings.session_age_s, 300, 30 * 86400),
        workers=s.number("workers", SiteSettings.workers, 1, 64),
        behind_proxy=s.flag("behind_proxy", False),
        page_size=s.number("page_size", SiteSettings.page_size, 1, 1000),
    )

    d = section("database")
    database_url = _database_url(base, d.text("url", "backoffice.sqlite3"), problems)

    m_ = section("sms")
    backend = m_.text("backend", "console")
    if backend not in SMS_BACKENDS:
        problems.append(f"sms.backend = {backend!r}: must be one of {', '.join(SMS_BACKENDS)}")
    console_file = m_.text("console_file", SmsSettings.console_file)
    if console_file not in ("-", ""):
        console_file = str(_path(base, console_file))
    sms_url = m_.text("url", "")
    method = m_.text("method", "POST").upper()
    auth_value_file = m_.text("auth_value_file", "")
    if backend == "http":
        u = urlsplit(sms_url)
        if u.scheme not in ("http", "https") or not u.hostname:
            problems.append(f"sms.url = {sms_url!r}: the http backend needs the gateway's URL, "
                            "such as https://sms.example.vn/api/send")
        if method not in ("POST", "PUT", "GET"):
            problems.append(f"sms.method = {method!r}: must be POST, PUT or GET")
        if auth_value_file:
            auth_value_file = str(_path(base, auth_value_file))
            if not Path(auth_value_file).is_file():
                problems.append(f"sms.auth_value_file = {auth_value_file!r} does not exist; write the "
                                "gateway's credential (the header's value) into it, mode 0600")
    template = m_.text("body_template", SmsSettings.body_template)
    if backend == "http" and method != "GET" and ("$to" not in template or "$text" not in template):
        problems.append(f"sms.body_template = {template!r}: must contain $to and $text")
    sms = SmsSettings(backend=backend, console_file=console_file, url=sms_url, method=method,
                      auth_header=m_.text("auth_header", "Authorization"), auth_value_file=auth_value_file,
                      body_template=template, content_type=m_.text("content_type", SmsSettings.content_type),
                      timeout_s=m_.number("timeout_s", 10.0, 0.5, 120, integer=False))

    o = section("otp")
    otp = OtpSettings(ttl_s=o.number("ttl_s", 300, 60, 3600), max_tries=o.number("max_tries", 5, 1, 20),
                      resend_interval_s=o.number("resend_interval_s", 60, 0, 3600),
                      per_phone_per_hour=o.number("per_phone_per_hour", 5, 1, 1000),
                      per_client_per_hour=o.number("per_client_per_hour", 20, 1, 100000))

    k = section("keys")
    keys = KeySettings(*(_path(base, k.text(name, str(getattr(KeySettings, name))))
                         for name in ("issuer_key", "authority_key", "command_key")))

    q = section("mqtt")
    host = q.text("host", "")
    if host and not _HOST.match(host):
        problems.append(f"mqtt.host = {host!r}: give a host name or address, or leave it empty for no broker")
    prefix = q.text("prefix", "qrgate")
    if not re.fullmatch(r"[A-Za-z0-9_\-/]{1,64}", prefix) or prefix.startswith("/") or prefix.endswith("/"):
        problems.append(f"mqtt.prefix = {prefix!r}: letters, digits, _ - and inner / only")
    files = {}
    for name in ("ca_file", "cert_file", "key_file", "password_file"):
        value = q.text(name, "")
        if value:
            value = str(_path(base, value))
            if not Path(value).is_file():
                problems.append(f"mqtt.{name} = {value!r} does not exist")
        files[name] = value
    mqtt = MqttSettings(host=host, port=q.number("port", 1883, 1, 65535), prefix=prefix,
                        tls=q.flag("tls", False), username=q.text("username", ""), **files)

    pp = section("people")
    hotline = pp.text("health_hotline", PeopleSettings.health_hotline).strip()
    if not re.fullmatch(r"\+?[0-9][0-9 .\-]{2,19}", hotline):
        problems.append(f"people.health_hotline = {hotline!r}: give a phone number, such as 19009095")
    people = PeopleSettings(pass_valid_days=pp.number("pass_valid_days", 30, 1, 366), health_hotline=hotline,
                            declaration_fresh_h=pp.number("declaration_fresh_h", 24.0, 1, 24 * 30, integer=False),
                            checkin_repeat_s=pp.number("checkin_repeat_s", 300, 0, 86400),
                            declaration_retention_days=pp.number("declaration_retention_days", 30, 1, 3650))

    privacy = _privacy(section("privacy"), base, problems)

    if problems:
        raise ConfigError(problems)
    return BackofficeConfig(path=path, site=site, database_url=database_url, sms=sms, otp=otp, keys=keys,
                            mqtt=mqtt, people=people, privacy=privacy)


def _privacy(section: _Reader, base: Path, problems: list[str]) -> PrivacySettings:
    """``[privacy]``: read the escrow public key now, so a missing, private, foreign or unusable
    key stops the start with the others' problems instead of failing at a check-in."""
    keep_days = section.number("quarantine_keep_days", PrivacySettings.quarantine_keep_days, 1, 3650)
    text = section.text("escrow_key", "").strip()
    if not text:
        return PrivacySettings(quarantine_keep_days=keep_days)
    from firmware.adapters.escrow_key import load_escrow_public_key

    path = _path(base, text)
    try:
        return PrivacySettings(escrow_key=path, escrow_public_key=load_escrow_public_key(path, "privacy.escrow_key"),
                               quarantine_keep_days=keep_days)
    except ConfigError as err:
        problems.extend(err.problems)
        return PrivacySettings(quarantine_keep_days=keep_days)


def load_config(path: str | Path) -> BackofficeConfig:
    """Read and check the config file.

    Raises:
        ConfigError: the file is missing, not TOML, or has problems (all of them listed).
    """
    p = Path(path).expanduser().resolve()
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError as err:
        raise ConfigError(f"--config {p} does not exist; write one (see README, \"Back office\")") from err
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"--config {p} cannot be read ({err})") from err
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{p} is not valid TOML ({err})") from err
    return parse_config(data, p.parent, p)

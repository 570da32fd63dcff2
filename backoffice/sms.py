"""Sending SMS: a small port and its two adapters.

``ConsoleSms`` writes each message as one JSON line ``{"to": "+84...", "text": "..."}`` to a
file (or stdout) for development, the demo and the tests. ``HttpSms`` posts to an HTTP SMS
gateway: the URL, method, an auth header (its value read from a file) and a body template
with ``$to`` and ``$text`` fit Vietnamese brandname providers and Twilio-style APIs.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from string import Template
from typing import Protocol

from backoffice.config import SmsSettings
from firmware.core.errors import ConfigError, QrGateError

log = logging.getLogger(__name__)


class SmsError(QrGateError):
    """A message could not be handed to the SMS backend."""


class SmsSender(Protocol):
    """Sends one text message. Blocks for at most the adapter's timeout."""

    def send(self, to: str, text: str) -> None:
        """Hand the message to the backend.

        Args:
            to: the phone in E.164 form (+84...).
            text: the message.

        Raises:
            SmsError: the backend refused or could not be reached.
        """
        ...


class ConsoleSms:
    """Writes one JSON line per message to a file (appended, 0600) or, with ``-``, to stdout."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._lock = threading.Lock()

    def send(self, to: str, text: str) -> None:
        line = json.dumps({"to": to, "text": text}, ensure_ascii=False) + "\n"
        with self._lock:
            if self._path in ("", "-"):
                sys.stdout.write(line)
                sys.stdout.flush()
                return
            try:
                fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
                with os.fdopen(fd, "a", encoding="utf-8") as fh:
                    fh.write(line)
            except OSError as err:
                raise SmsError(f"cannot write sms.console_file {self._path} ({err.strerror})") from err


class HttpSms:
    """Posts each message to an HTTP gateway; a 2xx answer means it was accepted.

    Args:
        url: the gateway endpoint; for GET, ``$to`` and ``$text`` may appear in it.
        method: POST, PUT or GET.
        body_template: the body with ``$to`` and ``$text``; the values are escaped for
            ``content_type`` (JSON string contents, or form encoding).
        auth_header, auth_value: a header sent with each request (for example
            ``Authorization: Basic ...``); no header when auth_value is empty.
        timeout_s: connect and read timeout.
    """

    def __init__(self, url: str, *, method: str = "POST", body_template: str = "",
                 content_type: str = "application/json", auth_header: str = "Authorization",
                 auth_value: str = "", timeout_s: float = 10.0) -> None:
        self._url, self._method, self._template = url, method, Template(body_template)
        self._content_type, self._timeout_s = content_type, timeout_s
        self._headers = {"Content-Type": content_type, "User-Agent": "qrgate-backoffice"}
        if auth_value:
            self._headers[auth_header] = auth_value

    def _escape(self, value: str) -> str:
        if "json" in self._content_type:
            return json.dumps(value, ensure_ascii=False)[1:-1]
        return urllib.parse.quote_plus(value)

    def send(self, to: str, text: str) -> None:
        values = {"to": self._escape(to), "text": self._escape(text)}
        url, body = self._url, None
        if self._method == "GET":
            url = Template(self._url).safe_substitute(to=urllib.parse.quote(to), text=urllib.parse.quote(text))
        else:
            body = self._template.safe_substitute(values).encode("utf-8")
        request = urllib.request.Request(url, data=body, method=self._method, headers=self._headers)
        try:
            with urllib.request.urlopen(request, timeout=self._timeout_s) as answer:  # noqa: S310 - configured URL
                answer.read(4096)
        except urllib.error.HTTPError as err:
            raise SmsError(f"the SMS gateway answered HTTP {err.code}") from err
        except (urllib.error.URLError, OSError) as err:
            reason = getattr(err, "reason", err)
            raise SmsError(f"the SMS gateway cannot be reached ({reason})") from err
        log.info("SMS handed to the gateway for %s***", to[:6])


class DetachedSms:
    """Hands each message to ``inner`` on its own short-lived thread and returns at once.

    Used for login codes through a network gateway, so a slow gateway cannot tell a registered
    phone (an SMS is sent) from an unknown one (none is) by the time the page takes. A failure is logged, not raised;
    the person asks for a new code after the resend interval.
    """

    def __init__(self, inner: SmsSender) -> None:
        self._inner = inner

    def _send(self, to: str, text: str) -> None:
        try:
            self._inner.send(to, text)
        except SmsError as err:
            log.error("SMS to %s*** not sent: %s", to[:6], err)

    def send(self, to: str, text: str) -> None:
        threading.Thread(target=self._send, args=(to, text), name="qrgate-sms", daemon=True).start()


def make_sender(settings: SmsSettings) -> SmsSender:
    """The adapter ``[sms] backend`` names (fixed table).

    Raises:
        ConfigError: the auth value file cannot be read.
    """
    if settings.backend == "http":
        auth_value = ""
        if settings.auth_value_file:
            try:
                auth_value = Path(settings.auth_value_file).read_text(encoding="utf-8").strip()
            except OSError as err:
                raise ConfigError(f"sms.auth_value_file {settings.auth_value_file} cannot be read "
                                  f"({err.strerror})") from err
        return HttpSms(settings.url, method=settings.method, body_template=settings.body_template,
                       content_type=settings.content_type, auth_header=settings.auth_header,
                       auth_value=auth_value, timeout_s=settings.timeout_s)
    return ConsoleSms(settings.console_file)

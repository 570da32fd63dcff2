"""The case's id carried from a trace's answer to its "Xuất file" buttons, sealed; and the
whole trace carried to the health office's actions ("Cách ly", the reveal), sealed.

The answer page never holds the typed id (a CCCD number, a pass subject) in clear: its form
gets a token instead, AES-256-GCM under a key derived from the site's secret key, bound to
the logged-in person and to ``TOKEN_TTL_S``. Posting the form again with the id field left
empty uses the token's id. The actions' forms get a trace token (``seal_trace``): the case's
id, the window, the settings, the venue and the reason the page traced with, and what it
showed (counts, the masked display), so an action re-runs exactly that trace and its
confirmation can say what the page showed without tracing again. The two kinds of token are
bound to their kind and do not open as each other. Nothing is stored on the server. Pure:
the time is passed in.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

TOKEN_TTL_S = 1800
MAX_TOKEN_CHARS = 512
MAX_TRACE_TOKEN_CHARS = 4096
_NONCE_BYTES = 12
_INFO = b"qrgate backoffice trace case token v1"


def _aead(secret_key: str) -> AESGCM:
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(secret_key.encode("utf-8"))
    return AESGCM(key)


def seal_case(secret_key: str, by: str, case: str, user_pk: int, now_s: float) -> str:
    """A token holding ``(by, case)`` that only ``open_case`` with the same key and person opens.

    Args:
        secret_key: the site's secret key (Django's ``SECRET_KEY``).
        by: how the case is named (``person_id`` or ``subject``).
        case: the id as typed.
        user_pk: the logged-in person; another person's token does not open.
        now_s: the time of sealing (Unix seconds); the token lasts ``TOKEN_TTL_S``.
    """
    nonce = os.urandom(_NONCE_BYTES)
    plain = json.dumps({"by": by, "case": case, "at": int(now_s)}, separators=(",", ":")).encode("utf-8")
    sealed = _aead(secret_key).encrypt(nonce, plain, f"user:{user_pk}".encode())
    return base64.urlsafe_b64encode(nonce + sealed).decode("ascii").rstrip("=")


def open_case(secret_key: str, token: str, user_pk: int, now_s: float) -> tuple[str, str] | None:
    """``(by, case)`` from a token, or None if it is malformed, forged, another person's or too old."""
    if not token or len(token) > MAX_TOKEN_CHARS:
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        return None
    if len(raw) <= _NONCE_BYTES:
        return None
    try:
        plain = _aead(secret_key).decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], f"user:{user_pk}".encode())
        fields = json.loads(plain)
        by, case, at = str(fields["by"]), str(fields["case"]), float(fields["at"])
    except (InvalidTag, ValueError, KeyError, TypeError):
        return None
    if not 0 <= now_s - at <= TOKEN_TTL_S:
        return None
    return by, case


def _aad(kind: str, user_pk: int) -> bytes:
    return f"{kind}:user:{user_pk}".encode()


def seal_trace(secret_key: str, fields: dict[str, Any], user_pk: int, now_s: float) -> str:
    """A token holding a trace's fields (JSON values) that only ``open_trace`` with the same key and
    person opens, for ``TOKEN_TTL_S``.

    Args:
        fields: the trace's request and what the page showed; the key ``at`` is set here.
    """
    nonce = os.urandom(_NONCE_BYTES)
    plain = json.dumps({**fields, "at": int(now_s)}, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    sealed = _aead(secret_key).encrypt(nonce, plain, _aad("trace", user_pk))
    return base64.urlsafe_b64encode(nonce + sealed).decode("ascii").rstrip("=")


def open_trace(secret_key: str, token: str, user_pk: int, now_s: float) -> dict[str, Any] | None:
    """The fields of a trace token, or None if it is malformed, forged, another person's, a case
    token, or too old."""
    if not token or len(token) > MAX_TRACE_TOKEN_CHARS:
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        return None
    if len(raw) <= _NONCE_BYTES:
        return None
    try:
        plain = _aead(secret_key).decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], _aad("trace", user_pk))
        fields = json.loads(plain)
        at = float(fields["at"])
    except (InvalidTag, ValueError, KeyError, TypeError):
        return None
    if not isinstance(fields, dict) or not 0 <= now_s - at <= TOKEN_TTL_S:
        return None
    return fields

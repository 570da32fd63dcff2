"""Signed remote commands: the envelope format, signing, and verification. Pure.

On the wire (``<prefix>/<device_id>/cmd/<name>``, never retained) a command is a JSON object::

    {"v": 1, "kid": "<16 hex>", "payload": "<base64url of the body JSON>", "sig": "<base64url>"}

``sig`` is the Ed25519 signature of the exact ``payload`` bytes (after base64url
decoding), so nothing depends on how JSON is re-serialised. The body is::

    {"device_id": "gate-1", "venue_id": "v-7f3a9c2e", "prefix": "qrgate", "command": "open", "args": {},
     "nonce": "<16-64 chars>", "issued_at": 1764160000.0, "expires_at": 1764160010.0, "transaction": "t-42"}

``venue_id`` (empty for a gate not yet provisioned) and ``prefix`` (the gates' ``mqtt.prefix``)
are signed, so a command captured at one venue or broker does not act on a gate of the same
id at another.

Checks, first failure wins, each with its reject reason:

1. ``retained``: the broker delivered it as a retained message (never acted on);
2. ``malformed``: not JSON, not an object, over 4 KiB, a missing or mistyped field,
   a time that is not a finite number of Unix seconds between 2001 and 2100
   (``firmware.core.numbers``: NaN and Infinity are refused), ``expires_at`` not after
   ``issued_at``, or the topic name differs from ``command``;
3. ``unsigned``: no ``sig``/``kid`` (a bare ``PRESS`` or ``lockdown`` from a dashboard);
4. ``unknown_command``: not one of ``open``, ``mode``, ``reload``, ``rebirth``, ``identify`` (or bad args);
5. ``unknown_key``: no trusted command key has this kid;
6. ``bad_signature``: no key with this kid verifies the signature;
7. ``wrong_device``: signed for another gate; ``wrong_venue`` / ``wrong_prefix``: signed for
   another venue or topic prefix;
8. ``clock_unsynced``: the gate's wall clock is not trusted, so validity cannot be checked;
9. ``not_yet_valid``: ``issued_at`` later than now plus ``max_skew_s``;
10. ``expired``: now at or past ``expires_at``, or the envelope is valid for longer than
    ``max_age_s`` (at most 30 s);
11. ``replayed``: the nonce was accepted before (the cache outlives restarts);
12. ``rate_limited``: more accepted commands in the last 60 s than ``rate_per_min``.

Only the verified body is ever acted on. The caller persists the nonce cache
(``NonceCache.to_json``) before acting, so a crash cannot turn into a replay.
"""

from __future__ import annotations

import base64
import json
import re
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519

from firmware.core.device_state import Mode
from firmware.core.numbers import is_finite_number, is_time_s, loads_json_strict

ENVELOPE_VERSION = 1
MAX_ENVELOPE_BYTES = 4096
MAX_VALIDITY_S = 30.0
COMMANDS = ("open", "mode", "reload", "rebirth", "identify")
NONCE_PATTERN = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
KID_PATTERN = re.compile(r"^[0-9a-f]{2,128}$")


class Reject(StrEnum):
    """Why a command was refused. Sent back as ``error`` in the response."""

    UNSIGNED = "unsigned"
    BAD_SIGNATURE = "bad_signature"
    UNKNOWN_KEY = "unknown_key"
    WRONG_DEVICE = "wrong_device"
    EXPIRED = "expired"
    NOT_YET_VALID = "not_yet_valid"
    REPLAYED = "replayed"
    RETAINED = "retained"
    MALFORMED = "malformed"
    UNKNOWN_COMMAND = "unknown_command"
    RATE_LIMITED = "rate_limited"
    CLOCK_UNSYNCED = "clock_unsynced"
    WRONG_VENUE = "wrong_venue"
    WRONG_PREFIX = "wrong_prefix"


@dataclass(frozen=True)
class Command:
    """A verified command, safe to act on.

    Attributes:
        name: ``open``, ``mode``, ``reload``, ``rebirth`` or ``identify``.
        args: validated arguments (``mode``: ``{"mode": Mode}``; ``open``: optional ``pulse_ms``).
        device_id, nonce, issued_at, expires_at, transaction: from the body.
        kid_hex: the key that signed it.
    """

    name: str
    args: dict[str, Any]
    device_id: str
    nonce: str
    issued_at: float
    expires_at: float
    transaction: str | None
    kid_hex: str


@dataclass(frozen=True)
class Verdict:
    """The outcome of ``verify``: a command, or a reject reason with a detail text."""

    command: Command | None
    reject: Reject | None = None
    detail: str = ""
    transaction: str | None = None

    @property
    def ok(self) -> bool:
        return self.command is not None


@dataclass
class NonceCache:
    """Accepted nonces with their expiry (wall seconds), kept until they expire.

    Bounded by the rate limit times the validity window; ``prune`` drops expired ones.
    """

    entries: dict[str, float] = field(default_factory=dict)

    def seen(self, nonce: str) -> bool:
        return nonce in self.entries

    def add(self, nonce: str, expires_at: float) -> None:
        self.entries[nonce] = expires_at

    def prune(self, now_wall_s: float, skew_s: float) -> None:
        """Drop expired nonces, and any whose expiry no valid command could have had."""
        latest = now_wall_s + skew_s + MAX_VALIDITY_S
        self.entries = {n: e for n, e in self.entries.items() if now_wall_s < e + skew_s and e <= latest}

    def to_json(self) -> str:
        return json.dumps(self.entries, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> NonceCache:
        """Parse a persisted cache.

        Raises:
            ValueError: not a JSON object of nonce -> number.
        """
        data = loads_json_strict(text)
        if not isinstance(data, dict) or not all(is_finite_number(v) for v in data.values()):
            raise ValueError("nonce cache is not an object of nonce -> finite expiry")
        return cls({str(k): float(v) for k, v in data.items()})


class RateLimiter:
    """At most ``per_min`` events in any sliding 60 s (monotonic seconds)."""

    def __init__(self, per_min: int) -> None:
        self.per_min = per_min
        self._times: deque[float] = deque()

    def allow(self, now_mono_s: float) -> bool:
        """True (and counted) if one more is allowed now."""
        while self._times and now_mono_s - self._times[0] >= 60.0:
            self._times.popleft()
        if len(self._times) >= self.per_min:
            return False
        self._times.append(now_mono_s)
        return True


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64url(text: str) -> bytes:
    """Decode base64url with or without padding.

    Raises:
        ValueError: not base64url.
    """
    if not re.fullmatch(r"[A-Za-z0-9_-]*={0,2}", text):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign_command(private_key: Any, kid_hex: str, *, device_id: str, command: str, args: dict[str, Any],
                 nonce: str, issued_at: float, expires_at: float, transaction: str | None,
                 venue_id: str, prefix: str) -> bytes:
    """Build and sign an envelope (the operator side, ``qrgate cmd send``). Returns the JSON bytes.

    Raises:
        ValueError: issued_at or expires_at is not a finite time within the documented bounds.
    """
    if not (is_time_s(issued_at) and is_time_s(expires_at)):
        raise ValueError("issued_at and expires_at must be finite Unix times between 2001 and 2100")
    body = json.dumps({"device_id": device_id, "venue_id": venue_id, "prefix": prefix, "command": command,
                       "args": args, "nonce": nonce,
                       "issued_at": issued_at, "expires_at": expires_at, "transaction": transaction},
                      separators=(",", ":"), sort_keys=True).encode("utf-8")
    return json.dumps({"v": ENVELOPE_VERSION, "kid": kid_hex, "payload": b64url(body),
                       "sig": b64url(private_key.sign(body))}, separators=(",", ":")).encode("utf-8")


def _check_args(name: str, args: Any, max_pulse_ms: int) -> tuple[dict[str, Any] | None, str]:
    if not isinstance(args, dict):
        return None, "args must be an object"
    if name == "mode":
        try:
            return {"mode": Mode.parse(str(args.get("mode", "")))}, ""
        except ValueError:
            return None, f"mode {args.get('mode')!r} is not normal, lockdown or free_passage"
    if name == "open":
        pulse = args.get("pulse_ms")
        if pulse is None:
            return {}, ""
        if isinstance(pulse, bool) or not isinstance(pulse, int) or not 50 <= pulse <= max_pulse_ms:
            return None, f"pulse_ms {pulse!r} must be a whole number from 50 to {max_pulse_ms}"
        return {"pulse_ms": pulse}, ""
    return {}, ""


@dataclass
class CommandVerifier:
    """Verifies envelopes for one gate and remembers nonces and the rate.

    Not thread-safe: called from the MQTT worker thread only.

    Args:
        device_id: this gate's id.
        keys_for_kid: the command TrustStore (``keys_for``): kid bytes -> public keys.
        rate_per_min: ``[commands] rate_per_min``.
        max_age_s: ``[commands] max_age_s`` (capped at 30 s).
        max_skew_s: how far in the future ``issued_at`` may be (clock differences).
        max_pulse_ms: the longest ``open`` pulse accepted (the configured relay pulse).
        nonces: the persisted cache to start from.
        venue_id: this gate's venue ("" when not provisioned), or a function returning the venue in
            force (a provisioning QR changes it without a restart); a command must name it.
        prefix: this gate's ``mqtt.prefix``; a command must name it.
    """

    device_id: str
    keys_for_kid: Callable[[bytes], Sequence[Any]]
    rate_per_min: int = 30
    max_age_s: float = MAX_VALIDITY_S
    max_skew_s: float = 5.0
    max_pulse_ms: int = 1500
    nonces: NonceCache = field(default_factory=NonceCache)
    venue_id: str | Callable[[], str] = ""
    prefix: str = "qrgate"

    def __post_init__(self) -> None:
        self.max_age_s = min(self.max_age_s, MAX_VALIDITY_S)
        self._rate = RateLimiter(self.rate_per_min)

    def verify(self, topic_name: str, payload: bytes, retained: bool, now_wall_s: float,
               now_mono_s: float, clock_trusted: bool) -> Verdict:
        """Check one delivered command (see the module docstring for the order).

        Args:
            topic_name: the last topic level (``cmd/<name>``).
            payload: the message payload.
            retained: the broker's retain flag.
            now_wall_s, now_mono_s: the gate's clocks.
            clock_trusted: whether the wall clock may be used for validity checks.

        Returns:
            A Verdict; on success the nonce is recorded (persist ``nonces`` before acting).
        """
        def reject(reason: Reject, detail: str, tx: str | None = None) -> Verdict:
            return Verdict(None, reason, detail, tx)

        if retained:
            return reject(Reject.RETAINED, "retained commands are never acted on; clear the retained message",
                          _peek_transaction(payload))
        if len(payload) > MAX_ENVELOPE_BYTES:
            return reject(Reject.MALFORMED, f"envelope is {len(payload)} bytes, over {MAX_ENVELOPE_BYTES}")
        try:
            env = loads_json_strict(payload.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):  # deep nesting is a refusal too
            return reject(Reject.UNSIGNED if len(payload) < 64 and b"{" not in payload else Reject.MALFORMED,
                          "payload is not a signed JSON envelope")
        if not isinstance(env, dict):
            return reject(Reject.UNSIGNED, "payload is not a signed JSON envelope")
        if "sig" not in env or "kid" not in env or "payload" not in env:
            tx = env.get("transaction") if isinstance(env.get("transaction"), str) else None
            return reject(Reject.UNSIGNED, "no signature: commands must be signed (qrgate cmd send)", tx)
        sig_text, kid_text, body_text = env.get("sig"), env.get("kid"), env.get("payload")
        if (env.get("v") != ENVELOPE_VERSION or not isinstance(sig_text, str) or not isinstance(kid_text, str)
                or not isinstance(body_text, str)):
            return reject(Reject.MALFORMED, "envelope needs v=1 and string kid, payload and sig")
        try:
            body_bytes, sig = unb64url(body_text), unb64url(sig_text)
            body = loads_json_strict(body_bytes.decode("utf-8"))
        except (ValueError, UnicodeDecodeError, RecursionError) as err:
            return reject(Reject.MALFORMED, f"payload or sig is not base64url of JSON ({str(err)[:80]})")
        problem, tx = _body_problem(body)
        if problem:
            return reject(Reject.MALFORMED, problem, tx)
        if body["command"] != topic_name:
            return reject(Reject.MALFORMED, f"sent on cmd/{topic_name} but signed for {body['command']!r}", tx)
        if body["command"] not in COMMANDS:
            return reject(Reject.UNKNOWN_COMMAND, f"{body['command']!r} is not one of {', '.join(COMMANDS)}", tx)
        args, arg_problem = _check_args(body["command"], body.get("args", {}), self.max_pulse_ms)
        if args is None:
            return reject(Reject.UNKNOWN_COMMAND, arg_problem, tx)
        if not KID_PATTERN.fullmatch(kid_text):
            return reject(Reject.MALFORMED, "kid must be lowercase hex", tx)
        keys = [k for k in self.keys_for_kid(bytes.fromhex(kid_text)) if isinstance(k, ed25519.Ed25519PublicKey)]
        if not keys:
            return reject(Reject.UNKNOWN_KEY, f"no trusted command key has kid {kid_text}", tx)
        if not any(_verifies(k, sig, body_bytes) for k in keys):
            return reject(Reject.BAD_SIGNATURE, f"signature does not verify with key {kid_text}", tx)
        if body["device_id"] != self.device_id:
            return reject(Reject.WRONG_DEVICE, f"signed for {body['device_id']!r}, this is {self.device_id!r}", tx)
        venue = self.venue_id() if callable(self.venue_id) else self.venue_id
        if body["venue_id"] != venue:
            return reject(Reject.WRONG_VENUE, f"signed for venue {body['venue_id']!r}, this gate is in "
                          f"{venue!r}", tx)
        if body["prefix"] != self.prefix:
            return reject(Reject.WRONG_PREFIX, f"signed for topic prefix {body['prefix']!r}, this gate uses "
                          f"{self.prefix!r}", tx)
        if not clock_trusted:
            return reject(Reject.CLOCK_UNSYNCED, "the gate's clock is not synchronised; try again later", tx)
        issued, expires = float(body["issued_at"]), float(body["expires_at"])
        if issued > now_wall_s + self.max_skew_s:
            return reject(Reject.NOT_YET_VALID, f"issued {issued - now_wall_s:.1f} s in the future", tx)
        if now_wall_s >= expires:
            return reject(Reject.EXPIRED, f"expired {now_wall_s - expires:.1f} s ago", tx)
        if expires - issued > self.max_age_s:
            return reject(Reject.EXPIRED, f"valid for {expires - issued:.0f} s, over the {self.max_age_s:.0f} s "
                          "allowed", tx)
        self.nonces.prune(now_wall_s, self.max_skew_s)
        if self.nonces.seen(body["nonce"]):
            return reject(Reject.REPLAYED, "this nonce was already used", tx)
        if not self._rate.allow(now_mono_s):
            return reject(Reject.RATE_LIMITED, f"more than {self.rate_per_min} commands a minute", tx)
        self.nonces.add(body["nonce"], expires)
        return Verdict(Command(name=body["command"], args=args, device_id=body["device_id"], nonce=body["nonce"],
                               issued_at=issued, expires_at=expires, transaction=tx, kid_hex=kid_text),
                       transaction=tx)


def _peek_transaction(payload: bytes) -> str | None:
    """The transaction of an envelope, unverified, only to echo it in a rejection."""
    try:
        body = json.loads(unb64url(json.loads(payload)["payload"]))
        tx = body.get("transaction")
    except (ValueError, TypeError, KeyError, AttributeError):
        return None
    return tx if isinstance(tx, str) and len(tx) <= 128 else None


def _verifies(key: ed25519.Ed25519PublicKey, sig: bytes, data: bytes) -> bool:
    try:
        key.verify(sig, data)
    except InvalidSignature:
        return False
    return True


def _body_problem(body: Any) -> tuple[str, str | None]:
    if not isinstance(body, dict):
        return "body must be a JSON object", None
    tx = body.get("transaction")
    tx = tx if isinstance(tx, str) and len(tx) <= 128 else None
    for name, kinds in (("device_id", str), ("command", str), ("nonce", str)):
        if not isinstance(body.get(name), kinds):
            return f"{name} is missing or not a string", tx
    for name in ("issued_at", "expires_at"):
        if not is_time_s(body.get(name)):
            return f"{name} is missing or not a finite time in Unix seconds between 2001 and 2100", tx
    if body.get("transaction") is not None and tx is None:
        return "transaction must be a string of at most 128 characters", None
    if not NONCE_PATTERN.fullmatch(body["nonce"]):
        return "nonce must be 16-64 characters of A-Z a-z 0-9 _ -", tx
    if body["expires_at"] <= body["issued_at"]:
        return "expires_at must be after issued_at", tx
    for name in ("venue_id", "prefix"):
        if not isinstance(body.get(name), str) or len(body[name]) > 128:
            return f"{name} is missing or not a string (commands name the gate's venue and topic prefix)", tx
    return "", tx


def response_body(verdict: Verdict, data: dict[str, Any] | None = None, error: str | None = None) -> bytes:
    """The JSON answer on ``response/<name>``: status, error, detail, data, transaction."""
    err = error or (verdict.reject.value if verdict.reject else None)
    return json.dumps({"status": "error" if err else "ok", "error": err,
                       "detail": verdict.detail if verdict.reject else None,
                       "data": data or {}, "transaction": verdict.transaction},
                      separators=(",", ":")).encode("utf-8")

"""Signed remote commands: every reject reason, the happy path, replay across a restart, rate limit."""

from __future__ import annotations

import json

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from firmware.adapters.nonce_file import load_nonces, save_nonces
from firmware.core.cose import kid_for
from firmware.core.credentials.trust import TrustStore
from firmware.core.device_state import Mode
from firmware.core.remote_command import (
    CommandVerifier,
    NonceCache,
    Reject,
    b64url,
    response_body,
    sign_command,
    unb64url,
)

NOW = 1_764_160_000.0
KEY = ed25519.Ed25519PrivateKey.generate()
KID = kid_for(KEY.public_key()).hex()
OTHER = ed25519.Ed25519PrivateKey.generate()


def envelope(command="open", args=None, *, key=KEY, kid=KID, device_id="gate-1", nonce="n" * 16,
             issued_at=NOW, ttl_s=10.0, transaction="t-1", venue_id="", prefix="qrgate") -> bytes:
    return sign_command(key, kid, device_id=device_id, command=command, args=args or {}, nonce=nonce,
                        issued_at=issued_at, expires_at=issued_at + ttl_s, transaction=transaction,
                        venue_id=venue_id, prefix=prefix)


def verifier(**kw) -> CommandVerifier:
    return CommandVerifier(device_id="gate-1", keys_for_kid=TrustStore.from_keys([KEY.public_key()]).keys_for,
                           **kw)


def check(v, payload, topic="open", *, retained=False, now=NOW + 1, mono=100.0, trusted=True):
    return v.verify(topic, payload, retained, now, mono, trusted)


def test_a_valid_open_is_accepted_with_its_transaction():
    verdict = check(verifier(), envelope(transaction="t-42"))
    assert verdict.ok and verdict.reject is None
    assert (verdict.command.name, verdict.command.args, verdict.command.transaction) == ("open", {}, "t-42")
    assert json.loads(response_body(verdict, {"pulse_ms": 1500})) == {
        "status": "ok", "error": None, "detail": None, "data": {"pulse_ms": 1500}, "transaction": "t-42"}


def test_mode_command_args_are_parsed():
    verdict = check(verifier(), envelope("mode", {"mode": "free"}), topic="mode")
    assert verdict.command.args == {"mode": Mode.FREE_PASSAGE}


def _tampered_sig() -> bytes:
    env = json.loads(envelope())
    sig = bytearray(unb64url(env["sig"]))
    sig[0] ^= 1
    env["sig"] = b64url(bytes(sig))
    return json.dumps(env).encode()


def _tampered_body() -> bytes:
    env = json.loads(envelope())
    body = json.loads(unb64url(env["payload"]))
    body["device_id"] = "gate-2"
    env["payload"] = b64url(json.dumps(body).encode())
    return json.dumps(env).encode()


def _unsigned_json() -> bytes:
    return json.dumps({"command": "open", "transaction": "t-9"}).encode()


@pytest.mark.parametrize(("name", "payload", "topic", "options", "reason"), [
    ("retained", envelope(), "open", {"retained": True}, Reject.RETAINED),
    ("bare press", b"PRESS", "open", {}, Reject.UNSIGNED),
    ("empty", b"", "open", {}, Reject.UNSIGNED),
    ("plain mode word", b"lockdown", "mode", {}, Reject.UNSIGNED),
    ("json without signature", _unsigned_json(), "open", {}, Reject.UNSIGNED),
    ("broken json", b'{"v": 1, "kid": ', "open", {}, Reject.MALFORMED),
    ("not base64", b'{"v":1,"kid":"00","payload":"%%%","sig":"AA"}', "open", {}, Reject.MALFORMED),
    ("too large", b"{" + b" " * 5000 + b"}", "open", {}, Reject.MALFORMED),
    ("wrong version", json.dumps({**json.loads(envelope()), "v": 2}).encode(), "open", {}, Reject.MALFORMED),
    ("topic differs", envelope("rebirth"), "open", {}, Reject.MALFORMED),
    ("short nonce", envelope(nonce="abc"), "open", {}, Reject.MALFORMED),
    ("expires before issued", envelope(ttl_s=-1), "open", {}, Reject.MALFORMED),
    ("unknown command", envelope("selfdestruct"), "selfdestruct", {}, Reject.UNKNOWN_COMMAND),
    ("bad mode", envelope("mode", {"mode": "party"}), "mode", {}, Reject.UNKNOWN_COMMAND),
    ("pulse too long", envelope("open", {"pulse_ms": 60000}), "open", {}, Reject.UNKNOWN_COMMAND),
    ("unknown key", envelope(key=OTHER, kid=kid_for(OTHER.public_key()).hex()), "open", {}, Reject.UNKNOWN_KEY),
    ("other key, trusted kid", envelope(key=OTHER), "open", {}, Reject.BAD_SIGNATURE),
    ("flipped signature bit", _tampered_sig(), "open", {}, Reject.BAD_SIGNATURE),
    ("edited body", _tampered_body(), "open", {}, Reject.BAD_SIGNATURE),
    ("another gate", envelope(device_id="gate-2"), "open", {}, Reject.WRONG_DEVICE),
    ("clock unsynced", envelope(), "open", {"trusted": False}, Reject.CLOCK_UNSYNCED),
    ("issued in the future", envelope(issued_at=NOW + 60), "open", {}, Reject.NOT_YET_VALID),
    ("11 s late", envelope(ttl_s=10), "open", {"now": NOW + 11}, Reject.EXPIRED),
    ("exactly at expiry", envelope(ttl_s=10), "open", {"now": NOW + 10}, Reject.EXPIRED),
    ("valid too long", envelope(ttl_s=31), "open", {}, Reject.EXPIRED),
])
def test_each_reject_reason(name, payload, topic, options, reason):
    verdict = check(verifier(), payload, topic, **options)
    assert (verdict.ok, verdict.reject) == (False, reason), verdict.detail


def test_rejection_answers_echo_the_transaction_when_it_can_be_read():
    verdict = check(verifier(), envelope(device_id="gate-2", transaction="t-7"))
    assert json.loads(response_body(verdict)) == {
        "status": "error", "error": "wrong_device", "detail": verdict.detail, "data": {}, "transaction": "t-7"}


def test_the_same_nonce_twice_is_a_replay():
    v = verifier()
    assert check(v, envelope()).ok
    assert check(v, envelope(), now=NOW + 2).reject is Reject.REPLAYED


def test_a_restart_with_the_persisted_nonce_cache_still_refuses_the_replay(tmp_path):
    path = tmp_path / "command-nonces.json"
    first = verifier()
    assert check(first, envelope()).ok
    save_nonces(path, first.nonces)
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    restarted = verifier(nonces=load_nonces(path))
    assert check(restarted, envelope(), now=NOW + 3).reject is Reject.REPLAYED


def test_a_damaged_nonce_file_starts_empty(tmp_path):
    path = tmp_path / "command-nonces.json"
    path.write_text("{not json")
    assert load_nonces(path).entries == {}
    with pytest.raises(ValueError):
        NonceCache.from_json('{"a": "x"}')


def test_expired_nonces_are_pruned():
    v = verifier()
    assert check(v, envelope(nonce="a" * 16)).ok
    assert check(v, envelope(nonce="b" * 16, issued_at=NOW + 100), now=NOW + 101).ok
    assert sorted(v.nonces.entries) == ["b" * 16]


def test_a_burst_beyond_the_rate_limit_is_rejected_and_the_window_slides():
    v = verifier(rate_per_min=5)
    outcomes = [check(v, envelope(nonce=f"burst-{i:011d}"), mono=100.0 + i * 0.01).reject for i in range(1000)]
    assert outcomes[:5] == [None] * 5
    assert set(outcomes[5:]) == {Reject.RATE_LIMITED}
    # a rate-limited command did not burn its nonce; 60 s later the same nonce is accepted
    assert check(v, envelope(nonce=f"burst-{5:011d}"), mono=160.0).ok


def test_max_age_is_capped_at_30_s():
    assert verifier(max_age_s=300).max_age_s == 30.0
    assert check(verifier(max_age_s=10), envelope(ttl_s=11)).reject is Reject.EXPIRED

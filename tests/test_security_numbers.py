"""Issue 10, attack 6: every number read from config, commands and lists is finite and in range.

NaN passes every `<` and `>` check, so before this change `policy.clock_skew_s = nan` was
accepted (and then every expired pass was granted), a signed command with NaN times never
expired, and a list `version` of 2^62 froze later updates.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
import zlib

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from firmware.core.config import parse_config
from firmware.core.cose import kid_for, sign1
from firmware.core.credentials.trust import TrustStore
from firmware.core.errors import ConfigError
from firmware.core.list_message import LIST_TYPE, ListMessageError, decode_message, encode_message
from firmware.core.numbers import MAX_LIST_VERSION, loads_json_strict
from firmware.core.remote_command import CommandVerifier, NonceCache, Reject, b64url

NOW = 1_764_160_000.0
KEY = ed25519.Ed25519PrivateKey.generate()
KID = kid_for(KEY.public_key()).hex()


def qrgate(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "firmware.cli", *args], capture_output=True, text=True,
                          timeout=60)


def write_config(tmp_path, policy_lines: str):
    (tmp_path / "issuers").mkdir(exist_ok=True)
    path = tmp_path / "qrgate.toml"
    path.write_text(f'[device]\nid = "gate-1"\nstate_dir = "{tmp_path}/state"\n[policy]\n{policy_lines}\n')
    return path


@pytest.mark.parametrize("value", ["nan", "+nan", "inf", "-inf"])
def test_attack6_nan_clock_skew_is_refused_by_config_check_with_exit_78(tmp_path, value):
    result = qrgate("config", "check", "--config", str(write_config(tmp_path, f"clock_skew_s = {value}")))
    assert result.returncode == 78, result.stderr
    assert "policy.clock_skew_s" in result.stderr and "not a finite number" in result.stderr
    assert "Traceback" not in result.stderr


def test_attack6_deeply_nested_toml_value_is_exit_78_not_a_traceback(tmp_path):
    path = write_config(tmp_path, "clock_skew_s = " + "[" * 5000 + "]" * 5000)
    result = qrgate("config", "check", "--config", str(path))
    assert result.returncode == 78, result.stderr
    assert "too deeply" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("depth", [6, 400])
def test_attack6_nested_values_that_toml_reads_are_config_errors(depth):
    with pytest.raises(ConfigError, match="nested too deeply"):
        parse_config({"policy": {"repeat_window_s": _nested(depth)}})
    with pytest.raises(ConfigError, match="nested too deeply"):
        parse_config({"policy": {"dcc": {"min_days_after_last_dose": _nested(depth)}}})


def _nested(depth: int):
    value: object = 1
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize("table", ["{pcr = nan}", "{pcr = inf}"])
def test_attack6_non_finite_hours_in_a_table_are_refused(tmp_path, table):
    path = write_config(tmp_path, f"[policy.dcc]\nmax_test_age_h = {table}")
    result = qrgate("config", "check", "--config", str(path))
    assert result.returncode == 78 and "max_test_age_h" in result.stderr


def test_an_integer_too_big_for_a_float_setting_is_a_config_error():
    with pytest.raises(ConfigError, match="not a finite number"):
        parse_config({"policy": {"clock_skew_s": 10**400}})


def raw_envelope(issued_at, expires_at, nonce="n" * 16) -> bytes:
    """A command signed with the right key but carrying times json.dumps writes as NaN/Infinity."""
    body = json.dumps({"device_id": "gate-1", "command": "open", "args": {}, "nonce": nonce,
                       "issued_at": issued_at, "expires_at": expires_at, "transaction": "t"}).encode()
    return json.dumps({"v": 1, "kid": KID, "payload": b64url(body), "sig": b64url(KEY.sign(body))}).encode()


def verifier() -> CommandVerifier:
    return CommandVerifier(device_id="gate-1", keys_for_kid=TrustStore.from_keys([KEY.public_key()]).keys_for)


@pytest.mark.parametrize("issued_at,expires_at", [
    (float("nan"), float("nan")),
    (NOW, float("nan")),
    (float("nan"), NOW + 10),
    (NOW, float("inf")),
    (float("-inf"), NOW + 10),
    (1e300, 1e301),
    (-5.0, 1.0),
])
def test_attack6_signed_command_with_nan_or_infinite_times_is_malformed_and_cannot_be_replayed(issued_at,
                                                                                              expires_at):
    v = verifier()
    for later_s in (1.0, 3600.0, 86400.0 * 365):
        verdict = v.verify("open", raw_envelope(issued_at, expires_at), False, NOW + later_s, 100.0 + later_s, True)
        assert not verdict.ok and verdict.reject is Reject.MALFORMED
        assert "finite time" in verdict.detail or "not a number JSON allows" in verdict.detail
    assert v.nonces.entries == {}, "no nonce is kept for ever"


def test_attack6_an_infinite_nonce_expiry_in_the_cache_is_pruned():
    cache = NonceCache({"a" * 16: float("inf"), "b" * 16: NOW + 5, "c" * 16: 1e300})
    cache.prune(NOW, 5.0)
    assert list(cache.entries) == ["b" * 16]
    with pytest.raises(ValueError):
        NonceCache.from_json('{"aaaaaaaaaaaaaaaa": NaN}')


def test_strict_json_refuses_nan_infinity_overflow_and_deep_nesting():
    for text in ("NaN", "[Infinity]", '{"a": -Infinity}', "1e400", "[" * 100_000 + "]" * 100_000):
        with pytest.raises(ValueError):
            loads_json_strict(text)
    assert loads_json_strict('{"a": 1.5, "b": [1]}') == {"a": 1.5, "b": [1]}


def signed_manifest(**claims) -> bytes:
    body = b"x\x9c\x03\x00\x00\x00\x00\x01"  # zlib of nothing

    base = {"t": LIST_TYPE, "kind": "deny", "mode": "full", "version": 5, "iat": int(NOW),
            "exp": int(NOW) + 3600, "sha256": hashlib.sha256(body).digest()}
    base.update(claims)
    return cbor2.dumps([sign1(cbor2.dumps(base), KEY), body])


@pytest.mark.parametrize("claims", [
    {"version": 2**62},
    {"version": MAX_LIST_VERSION + 1},
    {"iat": 0, "exp": 3600},
    {"iat": 2**62, "exp": 2**62 + 10},
    {"mode": "delta", "base_version": 2**63},
])
def test_attack6_list_versions_and_times_out_of_bounds_are_malformed(claims):
    with pytest.raises(ListMessageError) as err:
        decode_message(signed_manifest(**claims), TrustStore.from_keys([KEY.public_key()]), topic_kind="deny",
                       device_id="gate-1", now_s=NOW)
    assert err.value.reason == "malformed"


def test_the_largest_list_version_is_accepted():
    msg = decode_message(encode_message(KEY, kind="deny", version=MAX_LIST_VERSION, now_s=NOW, ids=["A"],
                                        device_id="gate-1", prefix="qrgate"),
                         TrustStore.from_keys([KEY.public_key()]), topic_kind="deny", device_id="gate-1",
                         now_s=NOW + 1)
    assert msg.version == MAX_LIST_VERSION
    assert time.time() < 4_102_444_800


@pytest.mark.parametrize("claims", [{"version": 2**62}, {"iat": 0, "exp": 3600}])
def test_attack6_dcc_trust_list_versions_and_times_out_of_bounds_are_malformed(claims):
    from firmware.core.dcc_trust_message import TRUST_TYPE, TrustMessageError, decode_trust_message

    body = zlib.compress(b"[]")
    base = {"t": TRUST_TYPE, "version": 5, "iat": int(NOW), "exp": int(NOW) + 3600,
            "sha256": hashlib.sha256(body).digest(), "device_id": "gate-1", **claims}
    message = cbor2.dumps([sign1(cbor2.dumps(base), KEY), body])
    with pytest.raises(TrustMessageError) as err:
        decode_trust_message(message, TrustStore.from_keys([KEY.public_key()]), device_id="gate-1", venue_id="",
                             now_s=NOW, venue_topic=False)
    assert err.value.reason == "malformed"

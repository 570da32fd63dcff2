"""Issue 10, attack 9: one canonical form for ids (pass `sub`, CCCD ids, list entries).

Before: `NV-0042` + U+200B was granted while `NV-0042` was on the deny list; ids were only
NFC-normalised and trimmed.
"""

from __future__ import annotations

import time

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from firmware.core.credentials import check_payload
from firmware.core.credentials.qg1 import issue_text
from firmware.core.credentials.trust import TrustStore
from firmware.core.list_message import decode_message, encode_message
from firmware.core.lists import ListInfo, ListSnapshot, decode_list, encode_list, keys_of, normalise_id, parse_csv_bytes
from firmware.core.model import Credential, Rejection
from tests.daemon_support import qrgate, run_gate, trust_new_key, valid_pass, write_config

ISSUER = ed25519.Ed25519PrivateKey.generate()
NOW = 1_764_160_000
LOOKALIKES = ["NV-0042\u200b", "\u200bNV-0042", "NV\u2060-0042", "\u202eNV-0042", "NV-\u20660042\u2069",
              "NV-00\u00ad42", "NV-0042\ufeff", "NV-0042\u034f", "NV-0042\ufe0f", "NV-0042\x00"]


def a_pass(sub: str) -> str:
    return issue_text(ISSUER, sub=sub, name="LÊ THỊ C", phone=None, iat_s=NOW, exp_s=NOW + 86400,
                      cti=b"c" * 8)


@pytest.mark.parametrize("sub", LOOKALIKES)
def test_attack9_pass_sub_with_invisible_bidi_or_control_characters_is_refused(sub):
    result = check_payload(a_pass(sub).encode(), TrustStore.from_keys([ISSUER.public_key()]))
    assert isinstance(result, Rejection) and result.reason.value == "malformed", result


def test_pass_sub_is_nfkc():
    result = check_payload(a_pass("ＮＶ-００４２").encode(), TrustStore.from_keys([ISSUER.public_key()]))
    assert isinstance(result, Credential) and result.subject == "NV-0042"


@pytest.mark.parametrize("variant", ["NV-0042", "nv-0042", "ＮＶ-００４２", " NV-0042 ", *LOOKALIKES])
def test_attack9_every_variant_of_a_listed_id_is_on_the_list(variant):
    salt = b"s" * 16
    snap = ListSnapshot(ListInfo("deny", 1), salt, frozenset(keys_of(["NV-0042"], salt)))
    assert snap.contains(variant)
    assert not snap.contains("NV-0043")


def test_a_list_written_before_the_canonical_form_keeps_matching_its_ids():
    salt = b"s" * 16
    legacy = ListInfo("deny", 3, 1.0, 0, "old", id_form="nfc")
    data, _ = encode_list(legacy, salt, keys_of(["NV-0042", "Nguyễn-7"], salt, "nfc"))
    data = data.replace(b', "id_form": "nfc"', b"")  # exactly what an older gate wrote
    snap = decode_list(data, "old.qgl")
    assert snap.info.id_form == "nfc"
    assert snap.contains("NV-0042") and snap.contains("Nguyễn-7") and not snap.contains("NV-0043")


def test_attack9_csv_rows_with_invisible_characters_are_refused_and_counted():
    data = "id\nNV-0001\nNV-0042\u200b\nNV-\u202e0043\nNV-0044\u2066\nNV-0045\n".encode()
    result = parse_csv_bytes(data)
    assert result.ids == [b"nv-0001", b"nv-0045"]
    assert (result.bad_rows, result.invisible) == (3, 3)
    assert [line for line, _ in result.problems] == [3, 4, 5]


def test_attack9_a_signed_list_message_with_invisible_characters_is_counted_and_stripped():
    import cbor2

    from firmware.core.cose import parse1, sign1

    message = encode_message(ISSUER, kind="deny", version=5, now_s=NOW, ids=["x"], device_id="gate-1",
                             prefix="qrgate")
    manifest, _body = cbor2.loads(message)
    # a tool that did not canonicalise: the body holds the raw ids
    import hashlib
    import zlib

    body = zlib.compress("NV-0042\u200b\nNV-0050".encode())
    claims = cbor2.loads(parse1(manifest).payload)
    claims["sha256"] = hashlib.sha256(body).digest()
    forged = cbor2.dumps([sign1(cbor2.dumps(claims), ISSUER), body])
    msg = decode_message(forged, TrustStore.from_keys([ISSUER.public_key()]), topic_kind="deny",
                         device_id="gate-1", now_s=NOW + 1)
    assert msg.stripped == 1
    salt = b"t" * 16
    snap = ListSnapshot(ListInfo("deny", 5), salt, frozenset(keys_of(msg.ids, salt)))
    assert snap.contains("NV-0042") and snap.contains("nv-0050")


def test_normalise_id_is_idempotent_and_stable():
    for text in ["NV-0042", "Nguyễn-7", "ＮＶ-００４２", "Straße", *LOOKALIKES]:
        once = normalise_id(text)
        assert normalise_id(once) == once
    assert normalise_id("Straße") == normalise_id("STRASSE")


def test_attack9_lookalike_passes_of_a_deny_listed_id_are_refused_by_the_running_gate(tmp_path):
    from device.synthetic import write_code_png
    from provisioning import keys as key_tools

    issuer = trust_new_key(tmp_path, "issuer", "issuers", as_name="i.pem")
    private = key_tools.load_private_key(issuer.private_path)
    images = tmp_path / "images"
    images.mkdir()
    subjects = ["NV-0042", "NV-0042\u200b", "nv-0042", "ＮＶ-００４２", "NV-\u20660042\u2069", "EMP-1"]
    for n, sub in enumerate(subjects):
        write_code_png(images / f"{n:02d}.png", valid_pass(private, sub))
    config = write_config(tmp_path, device={"id": "id-gate", "venue_id": "v-0123456789ab"},
                          camera={"fps": 20, "frames_per_image": 20}, gpio={"relay_pulse_ms": 100},
                          privacy={"subject": "raw"})
    (tmp_path / "deny.csv").write_text("id\nNV-0042\n", encoding="utf-8")
    imported = qrgate("list", "deny", "import", str(tmp_path / "deny.csv"), "--config", str(config))
    assert imported.returncode == 0, imported.stderr
    result, events = run_gate(config)
    assert result.returncode == 0, result.stderr
    decisions = [(e["decision"], e["reason"]) for e in events]
    assert decisions == [("denied", "denied"), ("denied", "malformed"), ("denied", "denied"),
                         ("denied", "denied"), ("denied", "malformed"), ("granted", "ok")], decisions
    assert time.time() > NOW

"""Contact escrow in the core (firmware.core.escrow): HPKE base mode checked against RFC 9180's
published vector and against cryptography's own HPKE, the contact sealed to one event, and every
way a blob must fail to open (moved to another event or gate, another key, truncated, changed)."""

from __future__ import annotations

import json
import os

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from firmware.core import escrow
from firmware.core.escrow import Contact, EscrowError, open_contact, seal_contact
from firmware.core.event_signature import b64url
from firmware.core.events import ENTROPY_BYTES, EventFactory
from firmware.core.model import Credential, CredentialType, Decision, Reason, Verdict
from firmware.core.passage import not_passed_event

# RFC 9180, appendix A.2.1: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, ChaCha20Poly1305, base mode,
# the first encryption (sequence number 0). Public test data of the RFC.
RFC_INFO = bytes.fromhex("4f6465206f6e2061204772656369616e2055726e")
RFC_IKM_E = bytes.fromhex("909a9b35d3dc4713a5e72a4da274b55d3d3821a37e5d099e74a647db583a904b")
RFC_SK_R = bytes.fromhex("8057991eef8f1f1af18f4a9491d16a1ce333f695d4db8e38da75975c4478e0fb")
RFC_PK_R = bytes.fromhex("4310ee97d88cc1f088a5576c77ab0cf5c3ac797f3d95139c6c84b5429c59662a")
RFC_ENC = bytes.fromhex("1afa08d3dec047a643885163f1180476fa7ddb54c6a8029ea33f95796bf2ac4a")
RFC_PT = bytes.fromhex("4265617574792069732074727574682c20747275746820626561757479")
RFC_AAD = bytes.fromhex("436f756e742d30")
RFC_CT = bytes.fromhex("1c5250d8034ec2b784ba2cfd69dbdb8af406cfe3ff938e131f0def8c8b60b4db21993c62ce81883d2dd1b51a28")

HEALTH_OFFICE = X25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
OTHER_OFFICE = X25519PrivateKey.from_private_bytes(bytes(range(33, 65)))
CONTACT = Contact(name="TRẦN THỊ BÍCH NGỌC", phone="0987654321", id="079200001234")
EVENT_ID = "019a1b2c3d4e5f60718293a4b5c6d7e8"


def test_hpke_seal_reproduces_the_rfc_9180_vector_and_opens_it():
    recipient = X25519PrivateKey.from_private_bytes(RFC_SK_R)
    assert escrow._raw(recipient.public_key()) == RFC_PK_R
    sealed = escrow.hpke_seal(recipient.public_key(), RFC_INFO, RFC_AAD, RFC_PT, RFC_IKM_E)
    assert sealed == RFC_ENC + RFC_CT
    assert escrow.hpke_open(recipient, RFC_INFO, RFC_AAD, sealed) == RFC_PT


def test_hpke_interoperates_with_cryptographys_own_hpke():
    hpke = pytest.importorskip("cryptography.hazmat.primitives.hpke")
    suite = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.CHACHA20_POLY1305)
    ours = escrow.hpke_seal(HEALTH_OFFICE.public_key(), b"qrgate", b"", b"contact", os.urandom(32))
    assert suite.decrypt(ours, HEALTH_OFFICE, info=b"qrgate") == b"contact"
    theirs = suite.encrypt(b"contact", HEALTH_OFFICE.public_key(), info=b"qrgate")
    assert escrow.hpke_open(HEALTH_OFFICE, b"qrgate", b"", theirs) == b"contact"


def test_a_contact_opens_with_the_key_for_its_own_event_only():
    text = seal_contact(CONTACT, HEALTH_OFFICE.public_key(), "gate-1", EVENT_ID, os.urandom(32))
    assert open_contact(text, HEALTH_OFFICE, "gate-1", EVENT_ID) == CONTACT
    assert "0987654321" not in text and "079200001234" not in text
    for device, event_id, key in (("gate-1", EVENT_ID[:-1] + "9", HEALTH_OFFICE),  # moved to another event
                                  ("gate-2", EVENT_ID, HEALTH_OFFICE),              # or another gate
                                  ("gate-1", EVENT_ID, OTHER_OFFICE)):              # another key
        with pytest.raises(EscrowError, match="does not open"):
            open_contact(text, key, device, event_id)


@pytest.mark.parametrize("damage", ["truncated", "cut_to_enc", "flipped", "extended", "not_base64", "empty",
                                    "huge", "opened_garbage"])
def test_damaged_blobs_are_refused_with_a_reason_never_another_exception(damage):
    text = seal_contact(CONTACT, HEALTH_OFFICE.public_key(), "gate-1", EVENT_ID, os.urandom(32))
    raw = escrow.decode_sealed(text)
    if damage == "truncated":
        bad = b64url(raw[:-1])
    elif damage == "cut_to_enc":
        bad = b64url(raw[:40])
    elif damage == "flipped":
        bad = b64url(raw[:50] + bytes([raw[50] ^ 1]) + raw[51:])
    elif damage == "extended":
        bad = b64url(raw + b"\0")
    elif damage == "not_base64":
        bad = text[:-4] + "!!!!"
    elif damage == "empty":
        bad = ""
    elif damage == "huge":
        bad = "A" * (escrow.MAX_SEALED_CHARS + 1)
    else:  # sealed correctly, but not a contact inside
        bad = b64url(escrow.hpke_seal(HEALTH_OFFICE.public_key(), escrow.binding("gate-1", EVENT_ID), b"",
                                              b"[1, 2, 3]" + b" " * 119, os.urandom(32)))
    with pytest.raises(EscrowError):
        open_contact(bad, HEALTH_OFFICE, "gate-1", EVENT_ID)


def test_the_blob_length_does_not_tell_a_short_name_from_a_longer_one():
    short = seal_contact(Contact("AN", "0900000000", "1"), HEALTH_OFFICE.public_key(), "g", EVENT_ID, bytes(32))
    longer = seal_contact(Contact("NGUYỄN VĂN AN", "0900000000", "079200001234"), HEALTH_OFFICE.public_key(), "g",
                          EVENT_ID, bytes(32))
    assert len(short) == len(longer)
    assert escrow.MIN_SEALED_CHARS <= len(short) <= escrow.MAX_SEALED_CHARS


def test_a_contact_too_long_to_seal_is_refused():
    with pytest.raises(EscrowError, match="longer than"):
        seal_contact(Contact(name="X" * 2000), HEALTH_OFFICE.public_key(), "g", EVENT_ID, bytes(32))
    with pytest.raises(EscrowError, match="32 bytes"):
        seal_contact(CONTACT, HEALTH_OFFICE.public_key(), "g", EVENT_ID, bytes(31))


def decision(credential: Credential | None, verdict: Verdict = Verdict.GRANTED) -> Decision:
    return Decision(verdict=verdict, reason=Reason.OK if verdict is Verdict.GRANTED else Reason.EXPIRED,
                    code_sha256="ab" * 32, credential_type=CredentialType.QG1,
                    subject=credential.subject if credential else None, display="TRẦN THỊ BÍCH *** 0987 654 ***",
                    decided_mono_s=1.0, frame_mono_s=0.9, credential=credential)


PASS = Credential(type=CredentialType.QG1, subject="079200001234", name=CONTACT.name, phone=CONTACT.phone,
                  signed=True)


def factory(escrow_key=None) -> EventFactory:
    return EventFactory.fixed(device_id="gate-1", venue_id="v-1", direction="in", boot_id="b" * 16,
                              secret=b"s" * 32, escrow_key=escrow_key)


def test_an_event_of_a_person_carries_their_contact_sealed_to_its_own_id():
    entropy = bytes(range(ENTROPY_BYTES))
    event = factory(HEALTH_OFFICE.public_key()).build(decision(PASS), 1_782_990_000.0, True, entropy=entropy)
    assert event.event_id is not None and event.event_id.startswith(f"{1_782_990_000_000:012x}")
    doc = event.to_json_dict()
    assert open_contact(doc["contact_sealed"], HEALTH_OFFICE, "gate-1", doc["event_id"]) == CONTACT
    assert CONTACT.phone not in json.dumps(doc, ensure_ascii=False) and CONTACT.id not in json.dumps(doc)
    # the same decision with other randomness: another id and unrelated bytes
    again = factory(HEALTH_OFFICE.public_key()).build(decision(PASS), 1_782_990_000.0, True,
                                                      entropy=bytes(reversed(range(ENTROPY_BYTES))))
    assert again.event_id != event.event_id and again.contact_sealed != event.contact_sealed
    denied = factory(HEALTH_OFFICE.public_key()).build(decision(PASS, Verdict.DENIED), 1.0, True, entropy=entropy)
    assert denied.contact_sealed is not None


def test_no_field_without_the_key_or_without_a_person():
    plain = factory().build(decision(PASS), 1_782_990_000.0, True)
    assert "contact_sealed" not in plain.to_json_dict() and plain.event_id is None
    unread = factory(HEALTH_OFFICE.public_key()).build(decision(None, Verdict.DENIED), 1.0, True,
                                                      entropy=bytes(ENTROPY_BYTES))
    assert "contact_sealed" not in unread.to_json_dict() and unread.event_id is None
    with pytest.raises(ValueError, match="random bytes"):
        factory(HEALTH_OFFICE.public_key()).build(decision(PASS), 1.0, True, entropy=b"short")


def test_the_not_passed_record_of_a_grant_does_not_copy_its_sealed_contact():
    grant = factory(HEALTH_OFFICE.public_key()).build(decision(PASS), 1.0, True, entropy=bytes(ENTROPY_BYTES))
    assert grant.contact_sealed is not None
    assert not_passed_event(grant, 20.0, True).contact_sealed is None

"""The JSON Schema file describes exactly what the outbox stores and publishes."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import pytest

from firmware.adapters.outbox import SqliteOutbox, read_events
from firmware.core.events import EventFactory
from firmware.core.model import CredentialType, Decision, Reason, Verdict

SCHEMA = json.loads((Path(__file__).resolve().parents[1] / "firmware" / "schema" / "scan-event.schema.json")
                    .read_text())
TYPES = {"string": str, "integer": int, "number": (int, float), "boolean": bool, "null": type(None),
         "object": dict}


def problems(doc: dict, schema: dict = SCHEMA) -> list[str]:
    """The subset of JSON Schema the file uses: type, const, enum, pattern, minimum, required,
    additionalProperties false."""
    out = [f"missing {k}" for k in schema["required"] if k not in doc]
    out += [f"extra {k}" for k in doc if k not in schema["properties"]]
    for key, rule in schema["properties"].items():
        if key not in doc:
            continue
        value = doc[key]
        if "const" in rule and value != rule["const"]:
            out.append(f"{key}: {value!r} is not {rule['const']!r}")
        if "enum" in rule and value not in rule["enum"]:
            out.append(f"{key}: {value!r} not in {rule['enum']}")
        types = rule.get("type")
        if types is not None:
            allowed = tuple(TYPES[t] for t in ([types] if isinstance(types, str) else types))
            if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
                out.append(f"{key}: {value!r} is not {types}")
                continue
        if "pattern" in rule and isinstance(value, str) and not re.search(rule["pattern"], value):
            out.append(f"{key}: {value!r} does not match {rule['pattern']}")
        if "minimum" in rule and isinstance(value, (int, float)) and value < rule["minimum"]:
            out.append(f"{key}: {value!r} below {rule['minimum']}")
    return out


def decision(verdict: Verdict, reason: Reason, subject: str | None) -> Decision:
    return Decision(verdict=verdict, reason=reason, code_sha256="c0" * 32, credential_type=CredentialType.QG1,
                    subject=subject, display="NGUYỄN *** 0966 ***", decided_mono_s=10.05, frame_mono_s=10.0)


@pytest.mark.parametrize("mode", ["raw", "hmac", "none"])
def test_stored_events_match_the_schema_for_every_privacy_mode(tmp_path, mode):
    factory = EventFactory.fixed(device_id="busstation-3-gate-2", venue_id="v-7f3a9c2e", direction="in",
                           boot_id="0123456789abcdef", subject_mode=mode, secret=b"k" * 32)
    outbox = SqliteOutbox(tmp_path / "outbox.sqlite")
    outbox.append(factory.build(decision(Verdict.GRANTED, Reason.OK, "EMP-1"), 1.7e9, True))
    outbox.append(factory.build(decision(Verdict.DENIED, Reason.EXPIRED, None), 1.7e9 + 1, False, "QG1:..."))
    outbox.close()
    events = read_events(tmp_path / "outbox.sqlite")
    assert [problems(e) for e in events] == [[], []]
    assert [e["code"] for e in events] == [None, None]  # privacy.publish_codes is off


def test_schema_lists_exactly_the_fields_the_model_publishes():
    factory = EventFactory.fixed(device_id="g", venue_id="v", direction="out", boot_id="0123456789abcdef")
    doc = factory.build(decision(Verdict.DENIED, Reason.UNKNOWN_FORMAT, None), 1.7e9, True).to_json_dict()
    # the optional fields: the signature added when publishing, the enrolment pair, the sealed contact
    optional = ["contact_sealed", "device_key", "prov_nonce", "sig"]
    assert sorted(SCHEMA["required"]) == sorted(doc) == sorted(set(SCHEMA["properties"]) - set(optional))


def test_a_published_enrolment_event_with_its_signature_matches_the_schema():
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from firmware.core.event_signature import public_key_text, seal

    key = Ed25519PrivateKey.generate()
    factory = EventFactory.fixed(device_id="g", venue_id="v", direction="out", boot_id="0123456789abcdef")
    event = factory.build_record(decision="provisioned", reason="ok", credential="provisioning",
                                 code_sha256="ab" * 32, wall_s=1.7e9, time_synced=True,
                                 prov_nonce="0f" * 16, device_key=public_key_text(key.public_key()))
    body = json.dumps({**event.to_json_dict(), "event_id": "0" * 32, "seq": 1}, separators=(",", ":"))
    published = json.loads(seal(body.encode(), key))
    assert problems(published) == [] and list(published)[-1] == "sig"


def test_a_published_event_with_a_sealed_contact_matches_the_schema():
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    from firmware.core.event_signature import seal
    from firmware.core.events import ENTROPY_BYTES
    from firmware.core.model import Credential, CredentialType

    office = X25519PrivateKey.generate().public_key()
    factory = EventFactory.fixed(device_id="g", venue_id="v", direction="in", boot_id="0123456789abcdef",
                                 escrow_key=office)
    person = Credential(type=CredentialType.QG1, subject="079200001234", name="TRẦN THỊ BÍCH NGỌC",
                        phone="0987654321", signed=True)
    granted = replace(decision(Verdict.GRANTED, Reason.OK, "079200001234"), credential=person)
    event = factory.build(granted, 1.7e9, True, entropy=bytes(range(ENTROPY_BYTES)))
    body = json.dumps({**event.to_json_dict(), "seq": 1}, ensure_ascii=False, separators=(",", ":"))
    published = json.loads(seal(body.encode(), Ed25519PrivateKey.generate()))
    assert problems(published) == [] and "contact_sealed" in published and list(published)[-1] == "sig"


def test_the_checker_rejects_bad_documents():
    doc = {"schema": "qrgate.scan/2", "seq": 0, "ts": "2026-11-26 10:00:00", "bogus": 1}
    found = problems(doc)
    assert "extra bogus" in found and "missing event_id" in found
    assert any(p.startswith("schema:") for p in found) and any(p.startswith("seq:") for p in found)
    assert any(p.startswith("ts:") for p in found)

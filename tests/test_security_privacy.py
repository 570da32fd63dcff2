"""Issue 10, item 10 (privacy): the same pass gives unrelated ``code_sha256`` values at two
venues, so events cannot link a person across venues; the device key file is private."""

from __future__ import annotations

import hashlib
import os
import stat

from firmware.adapters.device_key import DEVICE_KEY_FILE, load_or_create_device_key, public_path
from firmware.core.events import EventFactory
from firmware.core.model import CredentialType, Decision, Reason, Verdict

PAYLOAD = b"QG1:the same pass shown at two venues"


def decision() -> Decision:
    return Decision(verdict=Verdict.GRANTED, reason=Reason.OK, code_sha256=hashlib.sha256(PAYLOAD).hexdigest(),
                    credential_type=CredentialType.QG1, subject="EMP-1", display="", decided_mono_s=1.0,
                    frame_mono_s=1.0)


def test_privacy_code_sha256_is_keyed_per_venue_and_does_not_link_a_person_across_venues():
    events = [EventFactory.fixed(device_id="g", venue_id=venue, direction="in", boot_id="0123456789abcdef",
                                 secret=secret).build(decision(), 1.7e9, True)
              for venue, secret in (("v-1", b"a" * 32), ("v-2", b"b" * 32))]
    first, second = (e.code_sha256 for e in events)
    plain = hashlib.sha256(PAYLOAD).hexdigest()
    assert first != second and plain not in (first, second)
    assert all(len(h) == 64 and int(h, 16) >= 0 for h in (first, second))
    # the same venue keeps one value per pass (repeat counts in the history still work)
    again = EventFactory.fixed(device_id="g2", venue_id="v-1", direction="out", boot_id="0123456789abcdef",
                               secret=b"a" * 32).build(decision(), 1.7e9 + 60, True)
    assert again.code_sha256 == first


def test_device_key_is_made_once_0600_and_its_public_half_published_beside_it(tmp_path):
    path = tmp_path / "state" / DEVICE_KEY_FILE
    key = load_or_create_device_key(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert public_path(path).read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")
    again = load_or_create_device_key(path)
    assert again.private_bytes_raw() == key.private_bytes_raw()
    damaged: list[str] = []
    path.write_text("not a key")
    replaced = load_or_create_device_key(path, on_damaged=damaged.append)
    assert replaced.private_bytes_raw() != key.private_bytes_raw() and damaged
    assert [p.name for p in path.parent.glob(DEVICE_KEY_FILE + ".corrupt-*")]

"""Issue 14 item 5: `qrgate history import` verifies each line like the collector. A real gate outbox
(SqliteOutbox and the gate's own device key) exported with `qrgate outbox export` imports verified and
unmarked, with its sealed contacts; the same file before the gate's key is registered, or exported
--unsigned, needs --unverified and is marked; a changed (forged) line is refused even with
--unverified. SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os

import pytest

from firmware.adapters.device_key import load_or_create_device_key
from firmware.adapters.escrow_key import load_escrow_private_key, load_escrow_public_key
from firmware.adapters.outbox import SqliteOutbox
from firmware.cli import main
from firmware.core.escrow import Contact, open_contact, seal_contact
from firmware.core.model import ScanEvent
from provisioning import keys
from provisioning.history.importer import marks
from provisioning.history.query import Filter
from provisioning.history.reveal import sealed_contacts
from provisioning.history.store import open_store
from tests.history_support import pg_server_url, pg_url  # noqa: F401

DEVICE = "gate-7"
CONTACT = Contact("TRẦN THỊ BÍCH NGỌC", "0987654321", "079200001234")


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    if request.param == "sqlite":
        return str(tmp_path / "history.sqlite")
    return request.getfixturevalue("pg_url")


def gate_state(tmp_path, office) -> tuple:
    """A gate's state directory: its device key and an outbox of three events, the first with a
    sealed contact. Returns (state dir, event ids)."""
    state = tmp_path / "state"
    state.mkdir()
    load_or_create_device_key(state / "device-key.pem")
    outbox = SqliteOutbox(state / "outbox.sqlite")
    ids = []
    try:
        for i in range(3):
            event_id = f"{1_782_990_000_000 + i:012x}{'ab' * 10}"
            sealed = seal_contact(CONTACT, office, DEVICE, event_id, os.urandom(32)) if i == 0 else None
            stored = outbox.append(ScanEvent(
                device_id=DEVICE, venue_id="v-1", direction="in", ts=f"2026-07-02T11:00:0{i}.000Z", time_synced=True,
                boot_id="b" * 16, decision="granted", reason="ok", credential="qg1", subject=f"hmac-{i}",
                display="TRẦN THỊ BÍCH *** 0987 654 ***", latency_ms=3.0, code_sha256=f"{i:064x}",
                event_id=event_id, contact_sealed=sealed))
            ids.append(stored.event_id)
    finally:
        outbox.close()
    return state, ids


def export(state, out, *extra: str) -> None:
    assert main(["outbox", "export", "--state-dir", str(state), "--out", str(out), *extra]) == 0


def stored(url: str) -> tuple[set[str], dict, dict]:
    store = open_store(url)
    try:
        ids = {e.event_id for e in store.rows(Filter())}
        return ids, marks(store), sealed_contacts(store, sorted(ids))
    finally:
        store.close()


def test_an_exported_outbox_imports_verified_with_its_sealed_contact(db_url, tmp_path, capsys):
    office = keys.new_escrow_keypair(tmp_path / "ho.pem")
    state, ids = gate_state(tmp_path, load_escrow_public_key(office.public_path))
    path = tmp_path / "gate-7.jsonl"
    export(state, path)
    assert "exported 3 events" in capsys.readouterr().err and oct(path.stat().st_mode & 0o777) == "0o600"
    assert all(line.endswith(b'"}') and b',"sig":"' in line for line in path.read_bytes().splitlines())
    # before the gate's key is registered, nothing in the file can be verified
    assert main(["history", "import", "--db", db_url, str(path)]) == 78
    err = capsys.readouterr().err
    assert "no key registered for device gate-7" in err and "3 of 3 events cannot be verified" in err
    assert stored(db_url)[0] == set()
    assert main(["history", "device", "add", "--db", db_url, "--device", DEVICE,
                 "--key", str(state / "device-key.pub.pem")]) == 0
    capsys.readouterr()
    assert main(["history", "import", "--db", db_url, str(path), "--operator", "it-hcm"]) == 0
    assert "3 events read (3 verified, 0 unverified), 3 stored" in capsys.readouterr().out
    found, marked, sealed = stored(db_url)
    assert found == set(ids)
    assert {i: m[3] for i, m in marked.items()} == dict.fromkeys(ids, False)  # imported, not unverified
    device, blob = sealed[ids[0]]
    assert set(sealed) == {ids[0]}
    assert open_contact(blob, load_escrow_private_key(office.private_path), device, ids[0]) == CONTACT


def test_unsigned_exports_need_unverified_and_are_marked(db_url, tmp_path, capsys):
    office = keys.new_escrow_keypair(tmp_path / "ho.pem")
    state, ids = gate_state(tmp_path, load_escrow_public_key(office.public_path))
    (state / "device-key.pem").unlink()  # the key was lost with the card
    assert main(["outbox", "export", "--state-dir", str(state), "--out", str(tmp_path / "x.jsonl")]) == 78
    assert "--unsigned" in capsys.readouterr().err
    path = tmp_path / "unsigned.jsonl"
    export(state, path, "--unsigned")
    assert main(["history", "import", "--db", db_url, str(path)]) == 78
    assert ":1: cannot be verified: unsigned" in capsys.readouterr().err
    assert main(["history", "import", "--db", db_url, str(path), "--unverified"]) == 0
    assert "(0 verified, 3 unverified), 3 stored" in capsys.readouterr().out
    found, marked, _ = stored(db_url)
    assert found == set(ids) and {i: m[3] for i, m in marked.items()} == dict.fromkeys(ids, True)


@pytest.mark.parametrize("forgery", ["changed_field", "other_key", "bad_signature_text"])
def test_a_forged_line_is_refused_even_with_unverified(db_url, tmp_path, capsys, forgery):
    office = keys.new_escrow_keypair(tmp_path / "ho.pem")
    state, ids = gate_state(tmp_path, load_escrow_public_key(office.public_path))
    path = tmp_path / "gate-7.jsonl"
    export(state, path)
    assert main(["history", "device", "add", "--db", db_url, "--device", DEVICE,
                 "--key", str(state / "device-key.pub.pem")]) == 0
    lines = path.read_bytes().splitlines(keepends=True)
    if forgery == "changed_field":  # the scan moved to another venue after signing
        lines[1] = lines[1].replace(b'"venue_id":"v-1"', b'"venue_id":"v-9"')
    elif forgery == "other_key":  # a whole event signed by someone else's key
        from firmware.core.event_signature import seal, unseal
        from tests.signing_support import device_key

        lines[1] = seal(unseal(lines[1].rstrip(b"\n")).body, device_key("gate-1")) + b"\n"
    else:
        lines[1] = lines[1][:-10] + b'!!!!!!!"}\n'
    path.write_bytes(b"".join(lines))
    capsys.readouterr()
    assert main(["history", "import", "--db", db_url, str(path), "--unverified"]) == 78
    err = capsys.readouterr().err
    assert "gate-7.jsonl:2:" in err and "nothing was imported" in err
    if forgery != "bad_signature_text":
        assert "signature does not verify with the key registered for gate-7" in err
    assert stored(db_url)[0] == set()
    assert main(["history", "import", "--db", db_url, str(path), "--skip-bad-lines"]) == 0
    assert "(2 verified, 0 unverified), 2 stored" in capsys.readouterr().out
    assert stored(db_url)[0] == {ids[0], ids[2]}


def test_a_quarantined_outbox_file_can_be_exported(tmp_path, capsys):
    office = keys.new_escrow_keypair(tmp_path / "ho.pem")
    state, ids = gate_state(tmp_path, load_escrow_public_key(office.public_path))
    aside = state / "outbox.sqlite.corrupt-20260702T110000Z"
    (state / "outbox.sqlite").rename(aside)
    out = tmp_path / "recovered.jsonl"
    assert main(["outbox", "export", "--outbox", str(aside), "--device-key", str(state / "device-key.pem"),
                 "--out", str(out)]) == 0
    assert [json.loads(line)["event_id"] for line in out.read_text(encoding="utf-8").splitlines()] == ids

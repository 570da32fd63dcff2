"""`qrgate history quarantine --recheck [--device D]` on SQLite and PostgreSQL.

A gate's signed events reach a real collector (real Mosquitto) before its key is registered, so
they are quarantined; once `qrgate history device add` registers the key, the re-check stores
those that verify (with a sealed contact), once each, and the gap report closes the hole they
leave; a forged and an unsigned event of the same gate, and another gate's event, stay with
their reasons; a second re-check changes nothing.
"""

from __future__ import annotations

import json
import os

import pytest

from firmware.cli import main
from firmware.core.escrow import Contact, seal_contact
from provisioning import keys
from provisioning.history.query import Filter
from provisioning.history.store import open_store
from tests.history_support import BASE_MS, pg_server_url, pg_url, scan_dict  # noqa: F401 - fixtures
from tests.signing_support import signed, write_public_pem
from tests.test_history_collector import Publisher, RunningCollector, settings

pytestmark = pytest.mark.broker

LATE = "gate-7"   # not among the keys the running collector registers
OTHER = "gate-6"  # never registered


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    if request.param == "sqlite":
        return str(tmp_path / "history.sqlite")
    return request.getfixturevalue("pg_url")


def quarantine_rows(url: str) -> list[tuple[str, str]]:
    store = open_store(url)
    try:
        return [(m.device_id, m.reason) for m in store.quarantined_messages()]
    finally:
        store.close()


def test_recheck_stores_the_events_that_verify_once_their_key_is_registered(db_url, shared_broker, topic_prefix,
                                                                            tmp_path, capsys):
    office = keys.new_escrow_keypair(tmp_path / "health-office.pem")
    from firmware.adapters.escrow_key import load_escrow_public_key

    events = {seq: scan_dict(LATE, seq, BASE_MS + seq * 1000) for seq in (1, 2, 3, 4, 6)}
    events[2]["contact_sealed"] = seal_contact(Contact("LÊ THỊ MAI", "+84901111222", "a1b2"),
                                               load_escrow_public_key(office.public_path), LATE,
                                               events[2]["event_id"], os.urandom(32))
    forged = signed("gate-8", events[4])  # the gate's event signed by another key
    store = open_store(db_url)
    running = RunningCollector(store, settings(shared_broker, topic_prefix))
    pub = Publisher(shared_broker, topic_prefix)
    try:
        for seq in (1, 2, 3, 3):  # signed by the gate, before its key is known; seq 3 twice (a redelivery)
            pub.send(LATE, events[seq])
        pub.send(LATE, forged)                                                          # seq 4, forged
        pub.send(LATE, json.dumps(scan_dict(LATE, 5, BASE_MS + 5000)).encode())         # seq 5, unsigned
        pub.send(OTHER, scan_dict(OTHER, 1, BASE_MS))
        running.wait(lambda st: st.quarantined >= 7, "quarantined 7")
        assert list(store.rows(Filter(device=LATE))) == []
        # The key is registered; the collector then stores the gate's next event, seq 6.
        pub_pem = write_public_pem(LATE, tmp_path / f"{LATE}.pub.pem")
        assert main(["history", "device", "add", "--db", db_url, "--device", LATE, "--key", str(pub_pem)]) == 0
        pub.send(LATE, events[6])
        running.wait(lambda st: st.stored >= 1, "stored seq 6")
    finally:
        pub.close()
        running.close()
        store.close()

    store = open_store(db_url)
    try:
        assert [(g.first_missing, g.last_missing) for g in store.gaps(LATE)] == [(1, 5)]
    finally:
        store.close()
    capsys.readouterr()
    assert main(["history", "quarantine", "--db", db_url, "--recheck", "--device", LATE]) == 0
    out = capsys.readouterr().out
    assert "rechecked 6 quarantined messages: 3 events stored, 1 already in the history, 2 kept" in out
    assert f"{LATE}: 1 gaps still open, 2 events missing (seq 4..5)" in out

    store = open_store(db_url)
    try:
        assert sorted(e.seq for e in store.rows(Filter(device=LATE))) == [1, 2, 3, 6]
        assert [(g.first_missing, g.last_missing) for g in store.gaps(LATE)] == [(4, 5)]
        sealed = store._fetch("SELECT event_id, contact_sealed FROM event_contacts")
        assert [(str(e), str(c)) for e, c in sealed] == [(events[2]["event_id"], events[2]["contact_sealed"])]
    finally:
        store.close()
    kept = quarantine_rows(db_url)
    assert kept == [(LATE, f"signature does not verify with the key registered for {LATE}"),
                    (LATE, kept[1][1]), (OTHER, f"no key registered for device {OTHER} (`qrgate history device add`)")]
    assert kept[1][1].startswith("unsigned: ")

    # Again, over every device: nothing new is stored, nothing is lost, the reasons stay.
    assert main(["history", "quarantine", "--db", db_url, "--recheck"]) == 0
    out = capsys.readouterr().out
    assert "rechecked 3 quarantined messages: 0 events stored, 0 already in the history, 3 kept" in out
    assert quarantine_rows(db_url) == kept
    assert main(["history", "quarantine", "--db", db_url, "--device", LATE]) == 78
    assert "--device goes with --recheck" in capsys.readouterr().err


def test_a_quarantined_message_cut_short_or_off_topic_is_kept_with_its_reason(tmp_path):
    from provisioning.history.events import Rejected
    from provisioning.history.recheck import recheck_message
    from provisioning.history.sql_store import QuarantinedMessage
    from tests.signing_support import public_text

    payload = signed(LATE, scan_dict(LATE, 1))
    registered = {LATE: public_text(LATE)}

    def message(topic: str = f"q/{LATE}/scan", device: str = LATE, body: bytes = payload,
                size: int | None = None) -> QuarantinedMessage:
        return QuarantinedMessage(1, BASE_MS, topic, device, "old reason", body, len(body) if size is None else size)

    assert recheck_message(message(), registered).seq == 1  # type: ignore[union-attr]
    for bad, why in ((message(size=len(payload) + 1), "longer than"), (message(device=""), "topic"),
                     (message(topic=f"q/{OTHER}/scan"), "topic"), (message(body=payload[:-3]), "unsigned"),
                     (message(), "no key registered")):
        outcome = recheck_message(bad, registered if why != "no key registered" else {})
        assert isinstance(outcome, Rejected) and why in outcome.problem, (why, outcome)

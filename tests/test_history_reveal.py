"""`qrgate history trace --reveal` on a real SQLite file and a real PostgreSQL: only the case's and the
contacts' events are opened (an unrelated person's sealed contact in the same database is not), the
audit names exactly the events opened and is written before anything is shown, a blob that does not
open gets its reason, refusals without a reason or a key, and retention deleting sealed contacts."""

from __future__ import annotations

import base64
import csv
import io
import json
import os
from dataclasses import replace

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey
from openpyxl import load_workbook

from firmware.cli import main
from firmware.core.escrow import Contact, seal_contact
from provisioning import keys
from provisioning.history.events import HistoryEvent, parse_scan
from provisioning.history.store import open_store
from provisioning.history.trace_store import audit_records
from provisioning.history.tracing import MINUTE_MS
from tests.history_support import BASE_MS, pg_server_url, pg_url, rfc3339, scan_dict  # noqa: F401

T0 = BASE_MS
PEOPLE = {
    "case": Contact("NGUYỄN VĂN HÙNG", "0966323123", "079200000001"),
    "a": Contact("LÊ THỊ MAI", "0901111222", "079200000002"),
    "u": Contact("PHẠM VĂN TÚ", "0933444555", "079200000003"),
    "w": Contact("ĐỖ THỊ LAN", "0977888999", "079200000004"),
    "m": Contact("VŨ VĂN NAM", "0944555666", "079200000005"),
}


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    if request.param == "sqlite":
        return str(tmp_path / "history.sqlite")
    return request.getfixturevalue("pg_url")


@pytest.fixture
def office(tmp_path):
    return keys.new_escrow_keypair(tmp_path / "health-office.pem")


def public_of(made) -> X25519PublicKey:
    from firmware.adapters.escrow_key import load_escrow_public_key

    return load_escrow_public_key(made.public_path)


def ev(subject: str, direction: str, minute: float, public: X25519PublicKey | None, *, venue: str = "v-1",
       device: str = "gate-1", sealed_for: str | None = None) -> HistoryEvent:
    """A stored scan of ``subject``; its contact sealed to ``public`` for this event (or, with
    ``sealed_for``, a blob made for another event id: moved)."""
    ts_ms = T0 + int(minute * MINUTE_MS)
    event_id = f"{ts_ms:013x}{subject}{direction}".ljust(32, "0")[:32]
    data = scan_dict(device, int(minute) + 1000, ts_ms, venue=venue, subject=subject, direction=direction,
                     display=f"{subject.upper()} *** 09xx xxx ***", event_id=event_id)
    if public is not None:
        data["contact_sealed"] = seal_contact(PEOPLE[subject], public, device, sealed_for or event_id, os.urandom(32))
    parsed = parse_scan(device, json.dumps(data).encode(), ts_ms)
    assert isinstance(parsed, HistoryEvent), parsed
    return parsed


def scenario(public: X25519PublicKey, stranger: X25519PublicKey) -> dict[str, HistoryEvent]:
    return {
        "case_in": ev("case", "in", 0, public), "case_out": ev("case", "out", 120, public),
        "a_in": ev("a", "in", 60, public), "a_out": ev("a", "out", 180, public),  # contact, 60 min
        "a_later_in": ev("a", "in", 600, public), "a_later_out": ev("a", "out", 640, public),  # not with the case
        "w_in": ev("w", "in", 90, stranger),                                    # contact, sealed to another key
        "m_in": ev("m", "in", 30, public, sealed_for="f" * 32),                  # contact, blob moved here
        "u_in": ev("u", "in", 600, public), "u_out": ev("u", "out", 660, public),  # same venue, hours later
        "u_other": ev("u", "in", 0, public, venue="v-2"),                       # same time, another venue
    }


def fill(url: str, events) -> None:
    store = open_store(url)
    try:
        store.add(list(events))
    finally:
        store.close()


def audits(url: str):
    store = open_store(url)
    try:
        return audit_records(store)
    finally:
        store.close()


def trace_argv(url: str, *extra: str) -> list[str]:
    return ["history", "trace", "--db", url, "--subject", "case", "--since", rfc3339(T0 - 3600_000),
            "--until", rfc3339(T0 + 4 * 3600_000), *extra]


def test_reveal_opens_only_the_traced_events_after_auditing_them(db_url, tmp_path, office):
    stranger = keys.new_escrow_keypair(tmp_path / "other.pem")
    events = scenario(public_of(office), public_of(stranger))
    fill(db_url, events.values())
    out = tmp_path / "reveal.json"
    assert main(trace_argv(db_url, "--reveal", "--escrow-key", str(office.private_path), "--reason", "F0 2026-117",
                           "--operator", "cdc-hcm", "--format", "json", "--out", str(out))) == 0
    report = json.loads(out.read_text(encoding="utf-8"))
    assert sorted({c["subject"] for c in report["contacts"]}) == ["a", "m", "w"]
    rows = {r["event_id"]: r for r in report["revealed"]}
    expected = {events[k].event_id for k in ("case_in", "case_out", "a_in", "a_out", "w_in", "m_in")}
    assert set(rows) == expected
    for key, person in (("case_in", "case"), ("case_out", "case"), ("a_in", "a"), ("a_out", "a")):
        row = rows[events[key].event_id]
        assert (row["name"], row["phone"], row["id"], row["problem"]) == (
            PEOPLE[person].name, PEOPLE[person].phone, PEOPLE[person].id, None)
        assert row["role"] == ("case" if person == "case" else "contact")
    for key in ("w_in", "m_in"):  # another key, a moved blob: a reason, nothing opened
        row = rows[events[key].event_id]
        assert row["name"] == row["phone"] == row["id"] == "" and "does not open" in row["problem"]
    record = audits(db_url)[-1]
    assert (record.action, record.operator, record.reason) == ("reveal", "cdc-hcm", "F0 2026-117")
    assert record.result["opened"] == sorted(expected)
    assert not {events[k].event_id for k in ("u_in", "u_out", "u_other", "a_later_in", "a_later_out")
                } & set(record.result["opened"])
    # the unrelated person's contact is nowhere in the answer
    text = out.read_text(encoding="utf-8")
    assert PEOPLE["u"].phone not in text and PEOPLE["u"].name not in text


def test_a_reveal_is_refused_without_a_reason_or_a_key_and_leaves_no_audit(tmp_path, office, capsys):
    url = str(tmp_path / "history.sqlite")
    fill(url, scenario(public_of(office), public_of(office)).values())
    # A PKCS#8 key naming an algorithm the library does not know (OID 1.2.3.4): a refusal, not a traceback.
    unknown = tmp_path / "unknown.pem"
    unknown.write_bytes(b"-----BEGIN PRIVATE KEY-----\n" + base64.encodebytes(bytes.fromhex(
        "302e020100300506032a0304" + "04220420" + "11" * 32)) + b"-----END PRIVATE KEY-----\n")
    refusals = [
        (trace_argv(url, "--reveal", "--escrow-key", str(office.private_path)), "--reveal needs --reason"),
        (trace_argv(url, "--reveal", "--escrow-key", str(office.private_path), "--reason", "   "),
         "--reveal needs --reason"),
        (trace_argv(url, "--reveal", "--reason", "F0"), "--reveal needs --escrow-key"),
        (trace_argv(url, "--escrow-key", str(office.private_path), "--reason", "F0"), "goes with --reveal"),
        (trace_argv(url, "--reveal", "--reason", "F0", "--escrow-key", str(office.public_path)),
         "this is the PUBLIC key"),
        (trace_argv(url, "--reveal", "--reason", "F0", "--escrow-key", str(tmp_path / "nope.pem")), "does not exist"),
        (trace_argv(url, "--reveal", "--reason", "F0", "--escrow-key", str(unknown)), "unknown algorithm"),
    ]
    for argv, message in refusals:
        assert main(argv) == 78
        captured = capsys.readouterr()
        assert message in captured.err and captured.out == ""
    assert audits(url) == []


def test_no_contact_is_shown_when_the_audit_cannot_be_written(tmp_path, office, capsys):
    url = str(tmp_path / "history.sqlite")
    fill(url, scenario(public_of(office), public_of(office)).values())
    import sqlite3

    audits(url)  # creates the audit table
    with sqlite3.connect(url) as conn:  # a damaged audit: every insert fails
        conn.execute("CREATE TRIGGER refuse_all BEFORE INSERT ON trace_audit BEGIN SELECT RAISE(ABORT, 'no'); END")
    assert main(trace_argv(url, "--reveal", "--escrow-key", str(office.private_path), "--reason", "F0")) != 0
    captured = capsys.readouterr()
    assert PEOPLE["case"].phone not in captured.out + captured.err and captured.out == ""


def test_reveal_in_every_format(tmp_path, office, capsys):
    url = str(tmp_path / "history.sqlite")
    events = scenario(public_of(office), public_of(office))
    fill(url, events.values())
    common = ["--reveal", "--escrow-key", str(office.private_path), "--reason", "F0 2026-117", "--tz", "UTC"]
    assert main(trace_argv(url, *common)) == 0
    table = capsys.readouterr().out
    assert "contacts opened (audited): 5 of 6 events" in table
    assert f"{PEOPLE['a'].name}" in table and PEOPLE["a"].phone in table and PEOPLE["a"].id in table
    assert "not opened: does not open" in table
    assert main(trace_argv(url, *common, "--format", "csv", "--out", str(tmp_path / "r.csv"))) == 0
    rows = list(csv.DictReader(io.StringIO((tmp_path / "r.csv").read_text(encoding="utf-8-sig"))))
    opened = [r for r in rows if r["kind"] == "opened"]
    assert len(opened) == 6 and {r["phone"] for r in opened} >= {PEOPLE["case"].phone, PEOPLE["a"].phone}
    assert oct((tmp_path / "r.csv").stat().st_mode & 0o777) == "0o600"
    assert main(trace_argv(url, *common, "--format", "xlsx", "--out", str(tmp_path / "r.xlsx"))) == 0
    book = load_workbook(tmp_path / "r.xlsx")
    assert book.sheetnames == ["visits", "contacts", "opened"]
    sheet = list(book["opened"].values)
    assert sheet[0][:4] == ("subject", "display", "venue_id", "from") and len(sheet) == 7
    assert len(audits(url)) == 3 and {r.action for r in audits(url)} == {"reveal"}


def test_retention_deletes_sealed_contacts_with_their_events(db_url, office):
    events = scenario(public_of(office), public_of(office))
    # One more visit the next day (PostgreSQL keeps days whole: a day goes as one partition).
    events["u_next_day"] = ev("u", "in", 24 * 60 + 60, public_of(office))
    fill(db_url, events.values())
    store = open_store(db_url)
    try:
        count = lambda: int(store._fetch("SELECT count(*) FROM event_contacts")[0][0])  # noqa: E731
        stored = lambda: {str(r[0]) for r in store._fetch("SELECT event_id FROM events")}  # noqa: E731
        sealed = lambda: {str(r[0]) for r in store._fetch("SELECT event_id FROM event_contacts")}  # noqa: E731
        assert count() == len(events)
        if db_url.startswith("postgresql"):
            # A gate whose clock was 30 days behind: its event lies in the default partition,
            # which retention prunes row by row; its sealed contact goes with it too.
            stale = replace(ev("w", "out", 5, public_of(office)), ts_ms=T0 - 30 * 24 * 60 * MINUTE_MS, received_ms=T0)
            store.add([stale])
            assert count() == len(events) + 1
            # Whole days: nothing of 2026-07-02 goes while the cutoff is inside it; only the stale
            # event, old by its stamp and its arrival, goes (row by row) with its sealed contact ...
            assert store.prune(T0 + 200 * MINUTE_MS) == 1 and count() == len(events)
            assert stale.event_id not in sealed() and sealed() == stored()
            # ... and the whole day (its partition) with its sealed contacts once it is past.
            day_end = (T0 // (24 * 60 * MINUTE_MS) + 1) * 24 * 60 * MINUTE_MS
            assert store.prune(day_end) == len(events) - 1
            assert sealed() == stored() == {events["u_next_day"].event_id}
        else:  # row by row
            assert store.prune(T0 + 200 * MINUTE_MS) == 7  # everything up to minute 180; the five at 600+ stay
            assert count() == 5
            assert sealed() == stored() == {events[k].event_id
                                            for k in ("u_in", "u_out", "a_later_in", "a_later_out", "u_next_day")}
    finally:
        store.close()


@pytest.mark.parametrize("value", [123, "", "not base64!" * 30, "A" * 100, "A" * 3000, None])
def test_the_collector_refuses_a_sealed_contact_that_cannot_be_one(value):
    data = scan_dict("gate-1", 1, T0)
    data["contact_sealed"] = value
    parsed = parse_scan("gate-1", json.dumps(data).encode(), T0)
    if value is None:  # an explicit null is no sealed contact
        assert isinstance(parsed, HistoryEvent) and parsed.contact_sealed is None
    else:
        assert not isinstance(parsed, HistoryEvent) and "contact_sealed" in parsed.problem

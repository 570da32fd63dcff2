"""`qrgate history trace` on a real SQLite file and a real PostgreSQL: the JSON answer, the formats,
per-venue secrets, reading only the case's venues, and the append-only audit."""

from __future__ import annotations

import csv
import io
import json

import pytest
from openpyxl import load_workbook

from firmware.cli import main
from firmware.core.errors import StoreError
from firmware.core.events import protect_subject
from provisioning.history.events import HistoryEvent, parse_scan
from provisioning.history.store import open_store
from provisioning.history.trace_store import audit_records, run_trace
from provisioning.history.tracing import MINUTE_MS, TraceRules
from tests.history_support import BASE_MS, pg_server_url, pg_url, rfc3339, scan_dict  # noqa: F401

T0 = BASE_MS  # 2026-07-02 11:00 UTC


def ev(subject: str | None, venue: str, device: str, direction: str, minute: float, decision: str = "granted",
       display: str = "TRẦN THỊ *** 0912 345 ***") -> HistoryEvent:
    ts_ms = T0 + int(minute * MINUTE_MS)
    data = scan_dict(device, int(minute) + 100_000, ts_ms, venue=venue, decision=decision, subject=subject,
                     direction=direction, display=display, event_id=f"{subject}-{venue}-{device}-{direction}-{ts_ms}")
    parsed = parse_scan(device, json.dumps(data).encode(), ts_ms)
    assert isinstance(parsed, HistoryEvent)
    return parsed


SCENARIO = [
    ev("case", "v-1", "gate-1", "in", 0, display="NGUYỄN VĂN *** 0966 323 ***"),
    ev("case", "v-1", "gate-2", "out", 120, display="NGUYỄN VĂN *** 0966 323 ***"),
    ev("a", "v-1", "gate-2", "in", 60, display="LÊ THỊ *** 0901 111 ***"),
    ev("a", "v-1", "gate-1", "out", 180, display="LÊ THỊ *** 0901 111 ***"),
    ev("b", "v-1", "gate-1", "in", 110),  # 10 min together: not a contact
    ev("c", "v-1", "gate-1", "in", 30, "denied"),  # turned away
    ev("d", "v-2", "gate-1", "in", 0), ev("d", "v-2", "gate-1", "out", 120),  # another venue
]


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    if request.param == "sqlite":
        return str(tmp_path / "history.sqlite")
    return request.getfixturevalue("pg_url")


def fill(url: str, events: list[HistoryEvent]) -> None:
    store = open_store(url)
    try:
        store.add(events)
    finally:
        store.close()


def trace_json(url: str, tmp_path, *extra: str) -> dict:
    out = tmp_path / "trace.json"
    assert main(["history", "trace", "--db", url, "--since", rfc3339(T0 - 3600_000),
                 "--until", rfc3339(T0 + 6 * 3600_000), "--format", "json", "--out", str(out), *extra]) == 0
    assert out.stat().st_mode & 0o777 == 0o600
    return json.loads(out.read_text(encoding="utf-8"))


def test_trace_json_shape_and_contacts(db_url, tmp_path):
    fill(db_url, SCENARIO)
    report = trace_json(db_url, tmp_path, "--subject", "case", "--operator", "bs-lan", "--reason", "case 2026-117")
    assert report["visits"] == [{"venue_id": "v-1", "from": "2026-07-02T11:00:00Z", "to": "2026-07-02T13:00:00Z",
                                 "started_by": "in", "ended_by": "out"}]
    assert report["contacts"] == [{"subject": "a", "display": "LÊ THỊ *** 0901 111 ***", "venue_id": "v-1",
                                   "from": "2026-07-02T12:00:00Z", "to": "2026-07-02T13:00:00Z",
                                   "overlap_s": 3600, "overlaps": 1}]
    assert report["count"] == 1 and report["case"]["display"] == "NGUYỄN VĂN *** 0966 323 ***"
    store = open_store(db_url)
    try:
        (record,) = audit_records(store)
    finally:
        store.close()
    assert (record.operator, record.action, record.reason) == ("bs-lan", "trace", "case 2026-117")
    assert record.searched["subjects"] == ["case"] and record.result["contact_subjects"] == ["a"]


def test_min_overlap_option_changes_who_counts(db_url, tmp_path):
    fill(db_url, SCENARIO)
    report = trace_json(db_url, tmp_path, "--subject", "case", "--min-overlap-min", "10")
    assert [c["subject"] for c in report["contacts"]] == ["a", "b"]


def test_audit_is_append_only(db_url, tmp_path):
    fill(db_url, SCENARIO)
    trace_json(db_url, tmp_path, "--subject", "case")
    store = open_store(db_url)
    try:
        with pytest.raises(StoreError, match="append-only"):
            store._write("UPDATE trace_audit SET reason = 'nothing to see'", [])
        with pytest.raises(StoreError, match="append-only"):
            store._write("DELETE FROM trace_audit", [])
        assert len(audit_records(store)) == 1
    finally:
        store.close()


def test_person_id_hashed_with_each_venue_secret_follows_the_case(tmp_path):
    """Three venues with their own secrets: --person-id with the back office's secrets finds all three."""
    secrets = {"v-1": b"\x01" * 32, "v-2": b"\x02" * 32, "v-3": b"\x03" * 32}
    at = {v: protect_subject("079123456789", "hmac", s) for v, s in secrets.items()}
    friend = {v: protect_subject("001099000001", "hmac", s) for v, s in secrets.items()}
    url = str(tmp_path / "history.sqlite")
    fill(url, [ev(at["v-1"], "v-1", "g", "in", 0), ev(at["v-1"], "v-1", "g", "out", 60),
               ev(at["v-2"], "v-2", "g", "in", 90), ev(at["v-2"], "v-2", "g", "out", 150),
               ev(at["v-3"], "v-3", "g", "in", 200),
               ev(friend["v-3"], "v-3", "g", "in", 210), ev(friend["v-1"], "v-1", "g", "in", 200)])
    store = open_store(url)  # the back office's tables, as its migrations make them
    store._write("CREATE TABLE venues_venue (id INTEGER PRIMARY KEY, venue_id TEXT)", [])
    store._write("CREATE TABLE personal_venuesecret (id INTEGER PRIMARY KEY, venue_id INTEGER, secret_hex TEXT)", [])
    for n, (venue, secret) in enumerate(secrets.items(), 1):
        store._write("INSERT INTO venues_venue VALUES (?, ?)", [n, venue])
        store._write("INSERT INTO personal_venuesecret VALUES (?, ?, ?)", [n, n, secret.hex()])
    store.close()
    report = trace_json(url, tmp_path, "--person-id", "079123456789")
    assert [v["venue_id"] for v in report["visits"]] == ["v-1", "v-2", "v-3"]
    assert "079123456789" not in json.dumps(report) and sorted(report["case"]["subjects"]) == sorted(at.values())
    store = open_store(url)
    try:
        assert "079123456789" not in json.dumps([r.searched for r in audit_records(store)])
    finally:
        store.close()
    assert [(c["subject"], c["venue_id"]) for c in report["contacts"]] == [(friend["v-3"], "v-3")]
    # One venue's secret file only: only that venue's visits.
    (tmp_path / "v2.secret").write_text(secrets["v-2"].hex())
    report = trace_json(url, tmp_path, "--person-id", "079123456789", "--hmac-secret-file",
                        str(tmp_path / "v2.secret"))
    assert [v["venue_id"] for v in report["visits"]] == ["v-2"]


def test_csv_xlsx_and_table(tmp_path, capsys):
    url = str(tmp_path / "history.sqlite")
    fill(url, [*SCENARIO, ev("=cmd", "v-1", "gate-1", "in", 30, display="=HYPERLINK(1)")])
    base = ["history", "trace", "--db", url, "--subject", "case", "--since", rfc3339(T0 - 3600_000),
            "--until", rfc3339(T0 + 6 * 3600_000), "--tz", "Asia/Ho_Chi_Minh"]
    assert main([*base, "--format", "csv", "--out", str(tmp_path / "t.csv")]) == 0
    rows = list(csv.DictReader(io.StringIO((tmp_path / "t.csv").read_text(encoding="utf-8-sig"))))
    assert [(r["kind"], r["subject"]) for r in rows] == [("visit", ""), ("contact", "'=cmd"), ("contact", "a")]
    assert rows[1]["display"] == "'=HYPERLINK(1)"
    assert main([*base, "--format", "xlsx", "--out", str(tmp_path / "t.xlsx")]) == 0
    book = load_workbook(tmp_path / "t.xlsx")
    assert [c.value for c in book["contacts"]["B"]][1:] == ["=cmd", "a"]
    assert book["contacts"]["B2"].data_type == "s"
    capsys.readouterr()
    assert main(base) == 0
    text = capsys.readouterr().out
    assert "v-1" in text and "18:00" in text and "2 overlaps, 2 people" in text


def test_trace_reads_only_the_case_venues_and_window(tmp_path):
    url = str(tmp_path / "history.sqlite")
    noise = [ev(f"p{n}", "v-9", "g", "in", n) for n in range(300)]  # busy venue the case never visited
    late = [ev(f"q{n}", "v-1", "g", "in", 3 * 24 * 60 + n) for n in range(200)]  # v-1, three days later
    fill(url, [*SCENARIO, *noise, *late])
    store = open_store(url)
    try:
        found = run_trace(store, frozenset({"case"}), T0 - 3600_000, T0 + 6 * 3600_000, TraceRules())
    finally:
        store.close()
    assert found.rows_read == 2 + 5  # the case's two scans, then v-1's granted scans with a subject


@pytest.mark.parametrize("argv,message", [
    (["--since", "2026-07-02", "--until", "2026-07-01"], "after --since"),
    (["--since", "2026-01-01", "--until", "2026-07-01"], "longer than"),
    (["--since", "2026-07-01", "--until", "2026-07-02", "--max-dwell-h", "nan"], "--max-dwell-h"),
    (["--since", "2026-07-01", "--until", "2026-07-02", "--default-dwell-min", "0"], "--default-dwell-min"),
    (["--since", "2026-07-01", "--until", "2026-07-02", "--min-overlap-min", "-1"], "--min-overlap-min"),
    (["--since", "yesterday-ish", "--until", "2026-07-02"], "not understood"),
])
def test_bad_options_are_refused_with_a_reason(tmp_path, capsys, argv, message):
    url = str(tmp_path / "history.sqlite")
    assert main(["history", "trace", "--db", url, "--subject", "case", *argv]) == 78
    assert message in capsys.readouterr().err


def test_bench_case_is_traced_alike_on_both_databases(pg_url, tmp_path):  # noqa: F811
    from provisioning.history.bench import TRACE_DAYS, bench_trace, synthetic_batches

    figures = []
    for url in (str(tmp_path / "bench.sqlite"), pg_url):
        store = open_store(url)
        try:
            for chunk in synthetic_batches(20_000, 1000, T0):
                store.add(chunk)
            figures.append(bench_trace(store, T0, 1))
        finally:
            store.close()
    lite, pg = figures
    assert lite["visits"] == TRACE_DAYS and lite["venues"] == 3
    assert lite["contacts"] > 0 and lite["rows_read"] > lite["contacts"]
    assert {k: lite[k] for k in ("visits", "contacts", "people", "rows_read")} == \
        {k: pg[k] for k in ("visits", "contacts", "people", "rows_read")}


@pytest.mark.parametrize("rules", [TraceRules(), TraceRules(default_dwell_ms=20 * MINUTE_MS, max_dwell_ms=3 * 3600_000,
                                                             min_overlap_ms=5 * MINUTE_MS)])
def test_the_narrowed_read_finds_what_reading_everything_finds(tmp_path, rules):
    """The database picks the candidate subjects (trace_store._VISIT_SCANS); the contacts must be exactly
    those the pure rules find over every stored event."""
    from provisioning.history.bench import case_events, synthetic_batches
    from provisioning.history.query import Filter
    from provisioning.history.tracing import presence_of, trace

    end = T0
    store = open_store(str(tmp_path / "h.sqlite"))
    try:  # dense: 5 venues, 300 people, 10 days, so long stays and orphan outs are common
        for chunk in synthetic_batches(30_000, 2000, end, days=10, venues=5, people=300):
            store.add(chunk)
        case = [e for e in case_events(end, days=8) if e.venue_id in ("v003",)]
        store.add(case)
        subjects = frozenset({case[0].subject or ""})
        since, until = end - 9 * 86_400_000, end
        narrowed = run_trace(store, subjects, since, until, rules)
        every = [presence_of(e.subject, e.venue_id, e.direction, e.decision, e.ts_ms, e.event_id)
                 for e in store.rows(Filter())]
        scans = [p for p in every if p is not None]
    finally:
        store.close()
    full = trace([p for p in scans if p.subject in subjects], scans, subjects, since, until, rules)
    assert narrowed.result.visits == full.visits and len(full.visits) >= 2
    assert narrowed.result.contacts == full.contacts and len(full.contacts) > 20
    assert narrowed.rows_read < len(scans) / 3


def test_a_missing_sqlite_file_is_refused_not_created(tmp_path, capsys):
    missing = tmp_path / "typo.sqlite"
    assert main(["history", "trace", "--db", str(missing), "--subject", "case", "--since", "2026-07-01",
                 "--until", "2026-07-02"]) == 78
    assert "does not exist" in capsys.readouterr().err and not missing.exists()

"""History store: idempotent ingest, gaps, every filter, retention, exports; SQLite and PostgreSQL alike."""

from __future__ import annotations

import csv
import io
import json
from datetime import timezone
from zoneinfo import ZoneInfo

import pytest

from firmware.core.errors import ConfigError
from provisioning.history.events import HistoryEvent, Rejected, parse_scan, person_key
from provisioning.history.export import EXPORT_COLUMNS, write_export, write_table
from provisioning.history.query import Filter, Gap, make_filter
from provisioning.history.store import open_store, parse_db_url
from tests.history_support import BASE_MS, pg_server_url, pg_url, scan_dict  # noqa: F401

HANOI = ZoneInfo("Asia/Ho_Chi_Minh")
MIN_MS = 60_000


def event(received_ms: int = BASE_MS, **kwargs) -> HistoryEvent:
    parsed = parse_scan(kwargs.get("device", "gate-1"), json.dumps(scan_dict(**kwargs)).encode(), received_ms)
    assert isinstance(parsed, HistoryEvent), parsed
    return parsed


def sample_events() -> list[HistoryEvent]:
    """Two venues, three gates, two people, both decisions, one lost scan (gate-2 seq 3)."""
    people = [("NGUYỄN ĐÌNH *** 0966 323 ***", "hmac-aa11"), ("TRẦN THỊ *** 0912 555 ***", "hmac-bb22")]
    out = []
    plan = [("gate-1", "v-1", [1, 2, 3, 4, 5, 6]), ("gate-2", "v-1", [1, 2, 4, 5]), ("gate-3", "v-2", [7, 8, 9])]
    minute = 0
    for device, venue, seqs in plan:
        for seq in seqs:
            display, subject = people[(seq + minute) % 2]
            out.append(event(device=device, venue=venue, seq=seq, ts_ms=BASE_MS + minute * MIN_MS,
                             decision="denied" if seq % 3 == 0 else "granted", display=display,
                             subject=subject))
            minute += 1
    return out


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path):
    if request.param == "sqlite":
        s = open_store(f"sqlite:///{tmp_path}/history.sqlite")
    else:
        s = open_store(request.getfixturevalue("pg_url"))
    try:
        yield s
    finally:
        s.close()


def ids(rows) -> list[str]:
    return [r.event_id for r in rows]


def test_parse_accepts_the_gate_event_and_drops_the_raw_code():
    parsed = parse_scan("gate-1", json.dumps(scan_dict(seq=7, code="QG1:SECRET")).encode(), 5)
    assert isinstance(parsed, HistoryEvent)
    assert (parsed.seq, parsed.ts_ms, parsed.received_ms) == (7, BASE_MS, 5)
    assert "QG1:SECRET" not in repr(parsed)
    assert parsed.person_key == "nguyendinh***0966323***"


@pytest.mark.parametrize("payload, problem", [
    (b"{not json", "not UTF-8 JSON"),
    (b"\xff\xfe", "not UTF-8 JSON"),
    (b"[1, 2]", "JSON is not an object"),
    (json.dumps({**scan_dict(), "seq": "7"}).encode(), "field 'seq' is missing or not a whole number >= 0"),
    (json.dumps({**scan_dict(), "seq": True}).encode(), "field 'seq' is missing or not a whole number >= 0"),
    (json.dumps({**scan_dict(), "ts": "2026-07-02 10:00"}).encode(), "timestamp has no UTC offset"),
    (json.dumps({**scan_dict(), "event_id": ""}).encode(), "field 'event_id' is empty"),
    (json.dumps({**scan_dict(), "device_id": "gate-9"}).encode(), "device_id does not match the topic's device"),
    (json.dumps({**scan_dict(), "schema": "qrgate.scan/2"}).encode(),
     "unknown schema 'qrgate.scan/2'; this collector reads qrgate.scan/1"),
])
def test_parse_rejects_bad_messages_without_quoting_them(payload, problem):
    assert parse_scan("gate-1", payload, 0) == Rejected(problem)


def test_parse_reports_a_missing_field():
    data = scan_dict()
    del data["venue_id"]
    result = parse_scan("gate-1", json.dumps(data).encode(), 0)
    assert isinstance(result, Rejected) and "venue_id" in result.problem


def test_person_key_folds_accents_case_and_spaces():
    assert person_key("Nguyễn Đình") == "nguyendinh"
    assert person_key("0966 323") == "0966323"


def test_db_urls():
    assert parse_db_url("/var/lib/h.sqlite") == ("sqlite", "/var/lib/h.sqlite")
    assert parse_db_url("sqlite:///var/lib/h.sqlite") == ("sqlite", "/var/lib/h.sqlite")
    assert parse_db_url("sqlite:rel.sqlite") == ("sqlite", "rel.sqlite")
    assert parse_db_url("postgresql://u@h/db") == ("postgresql", "postgresql://u@h/db")
    with pytest.raises(ConfigError, match="mysql://x"):
        parse_db_url("mysql://x")


def test_duplicates_are_stored_once(store):
    first = [event(seq=1), event(seq=2)]
    assert ids(store.add(first)) == ids(first)
    again = [event(seq=2), event(seq=3), event(seq=3)]
    assert ids(store.add(again)) == [event(seq=3).event_id]
    assert ids(store.add(again)) == []
    assert store.page(Filter()).total == 3


def test_out_of_order_events_fill_the_gap_they_belong_to(store):
    store.add([event(seq=3, ts_ms=BASE_MS + 3), event(seq=1, ts_ms=BASE_MS + 1)])
    assert store.gaps() == [Gap("gate-1", 2, 2, event(seq=1, ts_ms=BASE_MS + 1).ts,
                                event(seq=3, ts_ms=BASE_MS + 3).ts)]
    store.add([event(seq=7, ts_ms=BASE_MS + 7)])
    assert [(g.first_missing, g.last_missing, g.missing) for g in store.gaps()] == [(2, 2, 1), (4, 6, 3)]
    store.add([event(seq=2, ts_ms=BASE_MS + 2), event(seq=5, ts_ms=BASE_MS + 5)])
    assert [(g.device_id, g.first_missing, g.last_missing) for g in store.gaps()] == [
        ("gate-1", 4, 4), ("gate-1", 6, 6)]
    store.add([event(device="gate-2", seq=1), event(device="gate-2", seq=4)])
    assert [(g.device_id, g.first_missing) for g in store.gaps(device="gate-2")] == [("gate-2", 2)]
    assert store.max_seq("gate-1") == 7 and store.max_seq("gate-9") is None


def test_every_filter(store):
    evs = sample_events()
    store.add(evs)
    newest_first = sorted(evs, key=lambda e: (e.ts_ms, e.event_id), reverse=True)

    def expect(flt: Filter, keep) -> None:
        want = [e.event_id for e in newest_first if keep(e)]
        page = store.page(flt, page=1, page_size=100)
        assert (page.total, ids(page.rows)) == (len(want), want)
        assert ids(store.rows(flt)) == want

    expect(Filter(), lambda e: True)
    expect(Filter(since_ms=BASE_MS + 4 * MIN_MS), lambda e: e.ts_ms >= BASE_MS + 4 * MIN_MS)
    expect(Filter(until_ms=BASE_MS + 4 * MIN_MS), lambda e: e.ts_ms < BASE_MS + 4 * MIN_MS)
    expect(Filter(since_ms=BASE_MS + 2 * MIN_MS, until_ms=BASE_MS + 9 * MIN_MS),
           lambda e: BASE_MS + 2 * MIN_MS <= e.ts_ms < BASE_MS + 9 * MIN_MS)
    expect(Filter(venue="v-2"), lambda e: e.venue_id == "v-2")
    expect(Filter(device="gate-2"), lambda e: e.device_id == "gate-2")
    expect(Filter(decision="denied"), lambda e: e.decision == "denied")
    expect(Filter(decision="granted", venue="v-1"), lambda e: e.decision == "granted" and e.venue_id == "v-1")
    expect(Filter(person="trần thị"), lambda e: e.subject == "hmac-bb22")
    expect(Filter(person="0966 323"), lambda e: e.subject == "hmac-aa11")
    expect(Filter(person="0966323"), lambda e: e.subject == "hmac-aa11")
    expect(Filter(person="hmac-bb22"), lambda e: e.subject == "hmac-bb22")
    expect(Filter(person="100%_"), lambda e: False)
    expect(Filter(person="***"), lambda e: True)
    expect(Filter(person="hmac-aa11", device="gate-3"),
           lambda e: e.subject == "hmac-aa11" and e.device_id == "gate-3")
    assert store.sources() == [("v-1", "gate-1"), ("v-1", "gate-2"), ("v-2", "gate-3")]


def test_pages_split_the_newest_first_order(store):
    evs = sample_events()
    store.add(evs)
    want = [e.event_id for e in sorted(evs, key=lambda e: e.ts_ms, reverse=True)]
    got = [store.page(Filter(), page=n, page_size=4) for n in (1, 2, 3, 4, 99)]
    assert [(p.page, p.pages, p.total) for p in got] == [(1, 4, 13), (2, 4, 13), (3, 4, 13), (4, 4, 13),
                                                         (4, 4, 13)]
    assert ids(got[0].rows) + ids(got[1].rows) + ids(got[2].rows) + ids(got[3].rows) == want


def test_retention_deletes_old_events_in_batches(store):
    day_ms = 86_400_000
    old = [event(seq=s, ts_ms=BASE_MS + s, received_ms=BASE_MS + s) for s in range(1, 8)]
    wrong_clock = event(device="gate-2", seq=1, ts_ms=0, received_ms=BASE_MS + 40 * day_ms)
    fresh = [event(seq=s, ts_ms=BASE_MS + 40 * day_ms + s, received_ms=BASE_MS + 40 * day_ms) for s in (8, 9)]
    store.add([*old, wrong_clock, *fresh])
    cutoff = BASE_MS + 40 * day_ms - 30 * day_ms
    assert store.prune(cutoff, batch_rows=3) == 7
    assert ids(store.rows(Filter())) == ids(reversed(fresh)) + [wrong_clock.event_id]
    assert store.prune(cutoff, batch_rows=3) == 0


def test_sqlite_and_postgresql_give_the_same_answers(tmp_path, pg_url):  # noqa: F811
    lite, pg = open_store(str(tmp_path / "h.sqlite")), open_store(pg_url)
    try:
        for s in (lite, pg):
            s.add(sample_events())
        filters = [Filter(), Filter(venue="v-1", decision="granted"), Filter(person="Nguyễn"),
                   Filter(since_ms=BASE_MS + 3 * MIN_MS, device="gate-1"), Filter(person="hmac-bb22")]
        for flt in filters:
            assert list(lite.rows(flt)) == list(pg.rows(flt))
            assert lite.page(flt, 2, 3) == pg.page(flt, 2, 3)
        assert lite.gaps() == pg.gaps() == [Gap("gate-2", 3, 3, sample_events()[7].ts, sample_events()[8].ts),
                                            Gap("gate-3", 1, 6, "", sample_events()[10].ts)]
        assert lite.sources() == pg.sources()
    finally:
        lite.close()
        pg.close()


def test_readonly_store_refuses_writes(tmp_path):
    path = tmp_path / "h.sqlite"
    open_store(str(path)).close()
    ro = open_store(str(path), readonly=True)
    try:
        with pytest.raises(Exception, match="readonly|read-only|attempt to write"):
            ro.add([event()])
    finally:
        ro.close()


def test_make_filter_reads_dates_times_and_durations():
    now_ms = BASE_MS
    flt = make_filter(since="2026-07-02", until="2026-07-02", decision="Denied", now_ms=now_ms, tz=HANOI)
    assert (flt.since_ms, flt.until_ms, flt.decision) == (1782925200000, 1783011600000, "denied")
    assert make_filter(since="12h", now_ms=now_ms, tz=HANOI).since_ms == now_ms - 12 * 3600_000
    assert make_filter(since="2026-07-02T11:00:00Z", now_ms=0, tz=HANOI).since_ms == BASE_MS
    assert make_filter(since="2026-07-02 18:00", now_ms=0, tz=HANOI).since_ms == BASE_MS
    with pytest.raises(ConfigError) as err:
        make_filter(since="yesterday", until="2020-01-01", decision="no way", now_ms=now_ms, tz=HANOI)
    assert len(err.value.problems) == 2


def test_each_export_format_reads_back(tmp_path):
    evs = sorted(sample_events(), key=lambda e: e.ts_ms, reverse=True)
    evil = event(seq=99, ts_ms=BASE_MS - 1, display="=HYPERLINK(\"http://x\")")
    rows = [*evs, evil]
    tz = HANOI

    out = io.BytesIO()
    assert write_export("csv", rows, out, tz, {}) == len(rows)
    assert out.getvalue().startswith(b"\xef\xbb\xbf")
    records = list(csv.DictReader(io.StringIO(out.getvalue().decode("utf-8-sig"))))
    assert [r["event_id"] for r in records] == ids(rows)
    assert records[0]["display"] == evs[0].display and records[-1]["display"] == "'=HYPERLINK(\"http://x\")"
    assert records[0]["local_time"] == "2026-07-02 18:12:00"
    assert tuple(records[0]) == EXPORT_COLUMNS

    out = io.BytesIO()
    write_export("json", rows, out, tz, {"venue": "v-1"})
    doc = json.loads(out.getvalue())
    assert doc["count"] == len(rows) and doc["filters"] == {"venue": "v-1"}
    assert [e["event_id"] for e in doc["events"]] == ids(rows)
    assert doc["events"][0]["display"] == "NGUYỄN ĐÌNH *** 0966 323 ***" or doc["events"][0]["display"] == evs[0].display
    assert doc["events"][0]["seq"] == evs[0].seq and doc["events"][0]["time_synced"] is True

    from openpyxl import load_workbook

    path = tmp_path / "out.xlsx"
    with open(path, "wb") as fh:
        write_export("xlsx", rows, fh, tz, {})
    sheet = load_workbook(path).active
    table = [[c.value for c in row] for row in sheet.iter_rows()]
    assert tuple(table[0]) == EXPORT_COLUMNS
    assert [r[EXPORT_COLUMNS.index("event_id")] for r in table[1:]] == ids(rows)
    assert table[-1][EXPORT_COLUMNS.index("display")] == "=HYPERLINK(\"http://x\")"
    assert sheet.cell(len(table), EXPORT_COLUMNS.index("display") + 1).data_type == "s"
    assert table[1][EXPORT_COLUMNS.index("seq")] == evs[0].seq

    text = io.StringIO()
    write_table(rows[:2], len(rows), text, timezone.utc)
    lines = text.getvalue().splitlines()
    assert lines[0].split() == ["Time", "Person", "Venue", "Device", "Dir", "Decision", "Reason"]
    assert lines[1].startswith("2026-07-02 11:12:00  " + evs[0].display)
    assert lines[-1] == f"{len(rows)} events match; showing the newest 2 (use --limit, or --format csv|json|xlsx --out FILE for all)"


def test_query_by_person_id_hashes_it_like_the_gate(tmp_path, capsys):
    from firmware.cli import main
    from firmware.core.events import protect_subject

    secret = bytes(range(32))
    (tmp_path / "venue-secret").write_text(secret.hex() + "\n")
    hashed = protect_subject("001099012345", "hmac", secret)
    db = tmp_path / "h.sqlite"
    s = open_store(str(db))
    s.add([event(seq=1, subject=hashed), event(seq=2, subject="hmac-other"), event(seq=3, subject="001099012345")])
    s.close()
    base = ["history", "query", "--db", str(db), "--format", "json", "--person-id", "001099012345"]
    assert main([*base, "--hmac-secret-file", str(tmp_path / "venue-secret")]) == 0
    assert [e["seq"] for e in json.loads(capsys.readouterr().out)["events"]] == [1]
    assert main(base) == 0  # a gate with privacy.subject = raw
    assert [e["seq"] for e in json.loads(capsys.readouterr().out)["events"]] == [3]
    assert main([*base[:-2], "--person", hashed]) == 0
    assert [e["seq"] for e in json.loads(capsys.readouterr().out)["events"]] == [1]
    assert main([*base, "--hmac-secret-file", str(tmp_path / "missing")]) == 78


def test_a_written_off_hole_is_no_longer_a_gap_and_no_longer_holds_back_the_ack(store):
    store.add([event(seq=s, ts_ms=BASE_MS + s) for s in (1, 2, 3, 7, 8, 12)])
    assert store.contiguous_through("gate-1") == 3
    assert [(g.first_missing, g.last_missing) for g in store.gaps()] == [(4, 6), (9, 11)]
    written = store.write_off("gate-1", 4, 5, "outbox  quarantined\nat boot", now_ms=BASE_MS)
    assert (written.count, written.reason) == (2, "outbox quarantined at boot")
    assert store.contiguous_through("gate-1") == 5, "seq 6 is still open"
    assert [(g.first_missing, g.last_missing) for g in store.gaps()] == [(6, 6), (9, 11)]
    store.write_off("gate-1", 6, 6, "lost before app_ack was on", now_ms=BASE_MS + 1)
    assert store.contiguous_through("gate-1") == 8
    assert store.contiguous_through("gate-1", from_seq=5) == 8
    store.write_off("gate-1", 9, 11, "lost", now_ms=BASE_MS + 2)
    assert store.contiguous_through("gate-1") == 12 and store.gaps() == []
    assert [(w.first_seq, w.last_seq) for w in store.write_offs("gate-1")] == [(4, 5), (6, 6), (9, 11)]
    # a scan that turns up late inside a written-off range is stored and changes nothing
    store.add([event(seq=5, ts_ms=BASE_MS + 5), event(seq=13, ts_ms=BASE_MS + 13)])
    assert store.contiguous_through("gate-1", from_seq=12) == 13 and store.gaps() == []
    assert store.write_offs("gate-2") == []


@pytest.mark.parametrize("first, last, why", [
    (7, 7, "is not lost: 1 of them are stored"),
    (5, 9, "is not lost"),
    (4, 4, "overlaps the write-off of seq 4..5"),
    (13, 20, "not inside a known gap"),
    (0, 0, "below 1"),
    (6, 5, "is empty"),
])
def test_a_write_off_that_is_not_a_known_gap_is_refused_with_its_reason(store, first, last, why):
    store.add([event(seq=s, ts_ms=BASE_MS + s) for s in (1, 2, 3, 7, 8, 12)])
    store.write_off("gate-1", 4, 5, "quarantined", now_ms=BASE_MS)
    with pytest.raises(ConfigError, match=why):
        store.write_off("gate-1", first, last, "oops", now_ms=BASE_MS)
    with pytest.raises(ConfigError, match="--reason"):
        store.write_off("gate-1", 6, 6, "  ", now_ms=BASE_MS)
    assert [(w.first_seq, w.last_seq) for w in store.write_offs()] == [(4, 5)]
    assert store.contiguous_through("gate-1") == 5


def test_a_page_over_a_few_allowed_venues_is_the_same_page_as_the_plain_query(store):
    # The back office's manager view: venues=(...) is read venue by venue and merged.
    events = [event(device=f"gate-{n % 5}", venue=f"v-{n % 4}", seq=n + 1, ts_ms=BASE_MS + (n * 7919) % 5000,
                    decision="denied" if n % 3 == 0 else "granted") for n in range(300)]
    store.add(events)
    for flt in (Filter(venues=("v-0", "v-2")), Filter(venues=("v-0", "v-1", "v-3"), decision="denied"),
                Filter(venues=("v-1", "v-2"), venue="v-2"), Filter(venues=("v-9", "v-1"))):
        want = sorted((e for e in events if e.venue_id in flt.venues and flt.venue in ("", e.venue_id)
                       and flt.decision in ("", e.decision)), key=lambda e: (e.ts_ms, e.event_id), reverse=True)
        for page_no in (1, 2, 4):
            got = store.page(flt, page_no, 20)
            assert got.total == len(want)
            start = (got.page - 1) * 20
            assert [e.event_id for e in got.rows] == [e.event_id for e in want[start:start + 20]], (flt, page_no)


def test_a_leading_hole_is_a_gap_until_written_off_and_not_once_retention_pruned_it(store):
    """Events a gate published before the collector first subscribed were never stored."""
    store.add([event(seq=s, ts_ms=BASE_MS + s * MIN_MS) for s in (5, 6, 8)])
    assert [(g.first_missing, g.last_missing, g.after_ts) for g in store.gaps()] == [(1, 4, ""), (7, 7, event(
        seq=6, ts_ms=BASE_MS + 6 * MIN_MS).ts)]
    store.write_off("gate-1", 1, 4, "published before the collector started", now_ms=BASE_MS)
    assert [(g.first_missing, g.last_missing) for g in store.gaps()] == [(7, 7)]


def test_a_leading_hole_left_by_retention_is_not_reported(store):
    # one event a day: PostgreSQL's retention drops whole days (partitions), SQLite's exact rows
    day_ms = 86_400_000
    store.add([event(seq=s, ts_ms=BASE_MS + s * day_ms, received_ms=BASE_MS + s * day_ms) for s in (1, 2, 3, 4)])
    assert store.prune(before_ms=(BASE_MS // day_ms + 3) * day_ms) == 2
    assert store.gaps() == [], "seq 1 and 2 were stored, then pruned: not lost"


def test_gaps_command_reports_the_leading_hole(tmp_path, capsys):
    from firmware.cli import main

    db = tmp_path / "h.sqlite"
    s = open_store(str(db))
    s.add([event(seq=s_, ts_ms=BASE_MS + s_) for s_ in (3, 4)])
    s.close()
    assert main(["history", "query", "--db", str(db), "--gaps"]) == 0
    out = capsys.readouterr().out
    assert "1..2" in out and "the gate's seq starts at 1" in out and "no gaps" not in out


def test_a_new_history_database_is_created_0600_with_its_wal(tmp_path):
    import os

    old = os.umask(0o022)
    try:
        s = open_store(str(tmp_path / "history.sqlite"))
        s.add([event(seq=1)])
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in tmp_path.iterdir()}
    s.close()
    assert modes["history.sqlite"] == 0o600
    assert all(mode == 0o600 for mode in modes.values()), modes

"""PostgreSQL history partitioned by day (issue 17): where events go, retention by dropping
whole days, idempotency by event_id across partitions, and the migration of an old table."""

from __future__ import annotations

import psycopg
import pytest

from firmware.core.errors import StoreError
from firmware.cli import main as qrgate
from provisioning.history.pg_store import DEFAULT_PARTITION, PostgresHistoryStore, partition_day, partition_name
from provisioning.history.query import Filter
from provisioning.history.store import open_store
from tests.history_support import BASE_MS, pg_server_url, pg_url  # noqa: F401
from tests.test_history_store import event

DAY_MS = 86_400_000
DAY0 = BASE_MS // DAY_MS  # 2026-07-02


def at(day: int, minute: int = 0) -> int:
    """Unix ms of a minute of day DAY0 + day."""
    return (DAY0 + day) * DAY_MS + minute * 60_000


def on_day(day: int, seq: int, device: str = "gate-1", received_day: int | None = None, **kw) -> object:
    ts = at(day, seq)
    received = at(received_day, seq) if received_day is not None else ts + 500
    return event(device=device, seq=seq, ts_ms=ts, received_ms=received, **kw)


def rows_in(url: str, table: str) -> int:
    with psycopg.connect(url) as conn:
        return int(conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0])


def test_partition_names_round_trip():
    assert partition_name(DAY0) == "events_p20260702"
    assert partition_day("events_p20260702") == DAY0
    assert partition_day(DEFAULT_PARTITION) is None and partition_day("events_p2026070x") is None


def test_events_go_to_their_day_and_far_off_clocks_to_the_default_partition(pg_url):  # noqa: F811
    store = open_store(pg_url)
    try:
        store.add([on_day(0, 1), on_day(0, 2), on_day(1, 3)])
        # a gate whose clock says 1970, and one a year ahead: no table is made for their days
        store.add([event(device="gate-2", seq=1, ts_ms=0, received_ms=at(1, 5)),
                   event(device="gate-3", seq=1, ts_ms=at(365), received_ms=at(1, 6))])
        assert [name for name, _ in store.partitions()] == [partition_name(DAY0), partition_name(DAY0 + 1)]
        assert rows_in(pg_url, partition_name(DAY0)) == 2 and rows_in(pg_url, partition_name(DAY0 + 1)) == 1
        assert rows_in(pg_url, DEFAULT_PARTITION) == 2
        assert store.page(Filter(), 1, 50).total == 5
    finally:
        store.close()


def test_a_day_made_later_takes_its_rows_out_of_the_default_partition(pg_url):  # noqa: F811
    store = open_store(pg_url)
    try:
        early = on_day(5, 1, received_day=0)        # a clock five days ahead: default partition
        store.add([early])
        assert rows_in(pg_url, DEFAULT_PARTITION) == 1
        store.add([on_day(5, 2)])                    # day 5 has come: its table is made
        assert rows_in(pg_url, partition_name(DAY0 + 5)) == 2 and rows_in(pg_url, DEFAULT_PARTITION) == 0
        assert {e.event_id for e in store.rows(Filter())} == {early.event_id, on_day(5, 2).event_id}
    finally:
        store.close()


def test_an_event_id_is_stored_once_whatever_partition_a_copy_would_go_to(pg_url):  # noqa: F811
    """The primary key holds the partition key, (event_id, ts_ms); the insert must still keep an id once."""
    store = open_store(pg_url)
    try:
        first = on_day(0, 1)
        assert store.add([first, first]) == [first]            # twice in one batch
        late_copy = on_day(0, 1, received_day=3)                  # the same event redelivered days later
        assert late_copy.event_id == first.event_id and store.add([late_copy]) == []
        # the same id claiming another time (another day's partition): not a second row
        other_time = event(seq=1, ts_ms=at(1, 30), received_ms=at(1, 30), event_id=first.event_id)
        assert store.add([other_time]) == []
        assert [e.event_id for e in store.rows(Filter())] == [first.event_id]
        assert store.gaps() == []
    finally:
        store.close()


def test_retention_drops_whole_days_and_keeps_a_day_with_a_late_arrival(pg_url):  # noqa: F811
    store = open_store(pg_url)
    try:
        store.add([on_day(d, d + 1) for d in range(4)])                     # days 0..3, one event each
        late = on_day(1, 10, received_day=40)                                # day 1, arrived 40 days later
        wrong_clock_old = event(device="gate-2", seq=1, ts_ms=0, received_ms=at(0, 1))
        wrong_clock_new = event(device="gate-2", seq=2, ts_ms=5, received_ms=at(40, 1))
        early = on_day(3, 20, received_day=1)                                # stamped 2 days ahead, in day 3's table
        store.add([late, wrong_clock_old, wrong_clock_new, early])
        assert len(store.partitions()) == 4
        cutoff = at(2, 12 * 60)                                              # noon of day 2
        deleted = store.prune(cutoff)
        # day 0 dropped (1 event), day 1 kept (its late event arrived after the cutoff), day 2 holds
        # the cutoff (kept whole until it is over); the default partition's old row goes by the rule,
        # and the far-future stamp in day 3's table goes by its arrival
        assert deleted == 3
        assert early.event_id not in {e.event_id for e in store.rows(Filter())}
        assert [name for name, _ in store.partitions()] == [partition_name(DAY0 + d) for d in (1, 2, 3)]
        left = {e.event_id for e in store.rows(Filter())}
        assert on_day(0, 1).event_id not in left and wrong_clock_old.event_id not in left
        assert {late.event_id, wrong_clock_new.event_id, on_day(2, 3).event_id} <= left
        assert store.prune(at(41)) == 5 and store.partitions() == []
        assert store.page(Filter(), 1, 50).total == 0
        assert rows_in(pg_url, "event_days") == 0, "the per-day counts go with their days"
    finally:
        store.close()


def test_queries_gaps_and_acks_read_across_partitions(pg_url, tmp_path):  # noqa: F811
    pg, lite = open_store(pg_url), open_store(str(tmp_path / "h.sqlite"))
    try:
        evs = [on_day(d % 3, s, device=f"gate-{s % 2}") for d, s in enumerate([1, 2, 3, 4, 6, 7, 9, 10])]
        for store in (pg, lite):
            store.add(evs)
            store.write_off("gate-1", 8, 8, "lost with a card", at(5))
        assert len(pg.partitions()) == 3
        assert [g.__dict__ for g in pg.gaps()] == [g.__dict__ for g in lite.gaps()]
        flt = Filter(since_ms=at(1), until_ms=at(2, 60 * 23))
        assert [e.event_id for e in pg.rows(flt)] == [e.event_id for e in lite.rows(flt)]
        starts = {"gate-0": None, "gate-1": None, "nobody": None}
        assert pg.contiguous_through_many(starts) == lite.contiguous_through_many(starts) == {
            d: lite.contiguous_through(d) for d in starts}
        again = {"gate-0": 2, "gate-1": 3}
        assert pg.contiguous_through_many(again) == {d: pg.contiguous_through(d, s) for d, s in again.items()}
    finally:
        pg.close()
        lite.close()


OLD_EVENTS = (
    "CREATE TABLE events ("
    " event_id TEXT PRIMARY KEY, device_id TEXT NOT NULL, venue_id TEXT NOT NULL,"
    " direction TEXT NOT NULL, ts TEXT NOT NULL, ts_ms BIGINT NOT NULL, seq BIGINT NOT NULL,"
    " boot_id TEXT NOT NULL, time_synced BOOLEAN NOT NULL, decision TEXT NOT NULL,"
    " reason TEXT NOT NULL, credential TEXT NOT NULL, subject TEXT, display TEXT NOT NULL,"
    " person_key TEXT NOT NULL, latency_ms DOUBLE PRECISION NOT NULL, code_sha256 TEXT NOT NULL,"
    " received_ms BIGINT NOT NULL)"
)


def _old_database(url: str, events: list) -> None:
    """A history as the store made it before partitions: a plain events table with rows and indexes."""
    from provisioning.history.events import COLUMNS
    from provisioning.history.sql_store import INDEXES

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(OLD_EVENTS)
        for ddl in INDEXES:
            conn.execute(ddl)
        with conn.cursor() as cur:
            cur.executemany(f"INSERT INTO events ({', '.join(COLUMNS)}) VALUES ({', '.join(['%s'] * len(COLUMNS))})",
                            [[getattr(e, c) for c in COLUMNS] for e in events])


def test_an_old_small_table_is_migrated_at_open_with_its_events_and_answers(pg_url):  # noqa: F811
    evs = [on_day(d, d + 1) for d in range(3)] + [event(device="gate-2", seq=1, ts_ms=0, received_ms=at(0))]
    _old_database(pg_url, evs)
    store = open_store(pg_url)
    try:
        assert store.migrated == (4, 3)
        assert [n for n, _ in store.partitions()] == [partition_name(DAY0 + d) for d in range(3)]
        assert sorted(e.event_id for e in store.rows(Filter())) == sorted(e.event_id for e in evs)
        assert store.add(evs) == []                       # still idempotent after the move
        assert store.prune(at(2)) == 3                    # days 0 and 1 dropped, the 1970 row deleted
    finally:
        store.close()


def test_an_old_big_table_is_refused_until_qrgate_history_migrate(pg_url, capsys):  # noqa: F811
    evs = [on_day(0, s) for s in range(1, 4)]
    _old_database(pg_url, evs)
    with pytest.raises(StoreError, match="qrgate history migrate"):
        PostgresHistoryStore(pg_url, auto_migrate_max_rows=2)
    readonly = open_store(pg_url, readonly=True)          # the pages still read the old layout
    try:
        assert readonly.page(Filter(), 1, 50).total == 3
    finally:
        readonly.close()
    assert qrgate(["history", "migrate", "--db", pg_url]) == 0
    assert "moved 3 events into 1 daily partitions" in capsys.readouterr().out
    assert qrgate(["history", "migrate", "--db", pg_url]) == 0
    assert "already partitioned by day (1 daily partitions)" in capsys.readouterr().out
    store = PostgresHistoryStore(pg_url, auto_migrate_max_rows=2)
    try:
        assert store.migrated is None and store.page(Filter(), 1, 50).total == 3
    finally:
        store.close()

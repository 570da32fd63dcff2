"""`qrgate bench history`: history ingest rate and filtered queries over a large store.

Fills a fresh store (SQLite in a temporary folder; PostgreSQL in a private schema when a
server is reachable) with synthetic scan events shaped like a city's month: 20 venues,
5 gates each, 50,000 people, about 12 % denied, evenly over 30 days. Reports the ingest
rate (events/s, in the collector's batch size) and the median time of the manager's
queries: count plus the first page of 50, newest first. The target query is one venue,
the last 7 days, denied only (under 200 ms at 1,000,000 events on the dev machine). Then a
confirmed case with 14 days of visits at three venues is added and traced (``run_trace``,
target under 500 ms).

With ``--broker HOST:PORT`` it also measures the whole collector path: events published
QoS 1 to that broker, received by ``ScanCollector`` and stored with ack-after-commit.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import secrets
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from firmware.bench.common import add_json_flag, emit, format_table, machine_info
from provisioning.history.events import HistoryEvent, format_ts, person_key
from provisioning.history.pg_schema import create_schema, drop_schema, schema_url
from provisioning.history.query import Filter

DAY_MS = 86_400_000
LOCAL_PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
TARGET_MS = 200.0
TRACE_TARGET_MS = 500.0
TRACE_DAYS = 14
TRACE_VENUES = ("v003", "v007", "v011")
SURNAMES = ("NGUYỄN", "TRẦN", "LÊ", "PHẠM", "HOÀNG", "HUỲNH", "PHAN", "VŨ", "VÕ", "ĐẶNG", "BÙI", "ĐỖ")
MIDDLE = ("VĂN", "THỊ", "ĐÌNH", "MINH", "NGỌC", "HỮU", "THANH", "QUỐC")


def register(bench_sub: argparse._SubParsersAction) -> None:
    p = bench_sub.add_parser("history", help="history ingest rate and filtered queries over 1,000,000 events",
                             description="Fill a fresh SQLite (and PostgreSQL, if reachable) history store with "
                             "synthetic scans, then time ingest and the manager's filtered queries.")
    p.add_argument("--events", type=int, default=1_000_000, help="events to store (default: %(default)s)")
    p.add_argument("--batch", type=int, default=500, help="events per transaction (default: %(default)s)")
    p.add_argument("--repeats", type=int, default=5, help="timed runs per query; median kept (default: %(default)s)")
    p.add_argument("--pg", default=os.environ.get("QRGATE_BENCH_PG_URL", LOCAL_PG_URL),
                   help="PostgreSQL server for the PostgreSQL run; a private schema is created and dropped "
                   "(default: $QRGATE_BENCH_PG_URL or %(default)s)")
    p.add_argument("--no-pg", action="store_true", help="SQLite only")
    p.add_argument("--dir", default="", help="folder for the SQLite file (default: a temporary folder)")
    p.add_argument("--broker", default="", help="also time the collector through this broker (host:port)")
    p.add_argument("--mqtt-events", type=int, default=20_000,
                   help="events published for the --broker run (default: %(default)s)")
    p.add_argument("--retention-per-day", type=int, default=0, metavar="N",
                   help="instead: PostgreSQL retention by partitions, --retention-days days of N events a day "
                   "(1000000 for the README figure); drop one day and compare with deleting a day row by row")
    p.add_argument("--retention-days", type=int, default=30, help="days filled for --retention-per-day "
                   "(default: %(default)s)")
    add_json_flag(p)
    p.set_defaults(func=bench_history_command)


# --------------------------------------------------------------------------- synthetic data

def person(index: int) -> tuple[str, str]:
    """The masked display and the HMAC-like subject of synthetic person ``index``."""
    name = f"{SURNAMES[index % len(SURNAMES)]} {MIDDLE[(index // 12) % len(MIDDLE)]} ***"
    phone = f"09{index % 100:02d} {(index * 7919) % 1000:03d} ***"
    return f"{name} {phone}", hashlib.sha256(f"person-{index}".encode()).hexdigest()[:32]


def synthetic_batches(total: int, batch: int, end_ms: int, *, days: int = 30, venues: int = 20,
                      gates_per_venue: int = 5, people: int = 50_000, seed: int = 7,
                      received_ms: int | None = None) -> Iterator[list[HistoryEvent]]:
    """Yield ``total`` events in batches, oldest first, evenly spread over ``days`` before ``end_ms``."""
    rng = random.Random(seed)
    start_ms = end_ms - days * DAY_MS
    step_ms = days * DAY_MS / max(1, total)
    seqs: dict[str, int] = {}
    out: list[HistoryEvent] = []
    for n in range(total):
        venue = rng.randrange(venues)
        device = f"v{venue:03d}-gate-{rng.randrange(gates_per_venue)}"
        seq = seqs.get(device, 0) + 1
        seqs[device] = seq
        ts_ms = start_ms + int(n * step_ms)
        display, subject = person(rng.randrange(people))
        denied = rng.random() < 0.12
        out.append(HistoryEvent(
            event_id=f"{ts_ms:013x}-{device}-{seq:09d}", device_id=device, venue_id=f"v{venue:03d}",
            direction="in" if rng.random() < 0.5 else "out", ts=format_ts(ts_ms), ts_ms=ts_ms, seq=seq,
            boot_id="bench-boot", time_synced=True, decision="denied" if denied else "granted",
            reason="expired" if denied else "ok", credential="qg1", subject=subject, display=display,
            person_key=person_key(display), latency_ms=round(rng.uniform(20, 90), 3),
            code_sha256=hashlib.sha256(n.to_bytes(8, "big")).hexdigest(),
            received_ms=received_ms if received_ms is not None else ts_ms,
        ))
        if len(out) >= batch:
            yield out
            out = []
    if out:
        yield out


def bench_queries(end_ms: int) -> list[tuple[str, Filter | None]]:
    """The timed queries (None: the gap report). The first one is the 200 ms target."""
    return [
        ("venue, last 7 days, denied (target)", Filter(venue="v003", since_ms=end_ms - 7 * DAY_MS, decision="denied")),
        ("everything, newest page", Filter()),
        ("one gate, last day", Filter(device="v003-gate-2", since_ms=end_ms - DAY_MS)),
        ("venue, last 7 days", Filter(venue="v003", since_ms=end_ms - 7 * DAY_MS)),
        ("person by hashed id", Filter(person=person(4242)[1])),
        ("person by masked name, one venue, 7 days",
         Filter(person="trần minh", venue="v003", since_ms=end_ms - 7 * DAY_MS)),
        ("person by masked phone, all", Filter(person="0942 ")),
        # What the back office's history page runs: scoped to the manager's venues (here two).
        ("back office: my venue, 7 days, denied",
         Filter(venue="v003", since_ms=end_ms - 7 * DAY_MS, decision="denied", venues=("v003", "v011"))),
        ("back office: my venues, newest page", Filter(venues=("v003", "v011"))),
        ("gap report (all gates)", None),
    ]


def case_events(end_ms: int, days: int = TRACE_DAYS) -> list[HistoryEvent]:
    """A confirmed case for the trace figure: one visit a day for ``days`` days, in rotation at
    ``TRACE_VENUES``, in at 09:00 UTC plus the day's number of minutes by one gate, out two hours
    later by another (the last visit has no out: it ends by the default dwell)."""
    display, subject = "PHẠM CA *** 0977 000 ***", "bench-case-0000000000000000000000"
    first_day = (end_ms // DAY_MS - days) * DAY_MS
    events = []
    for day in range(days):
        venue = TRACE_VENUES[day % len(TRACE_VENUES)]
        start = first_day + day * DAY_MS + 9 * 3_600_000 + day * 60_000
        for seq, (direction, ts_ms, gate) in enumerate((("in", start, 0), ("out", start + 2 * 3_600_000, 1)), 1):
            if day == days - 1 and direction == "out":
                continue
            device = f"{venue}-gate-{gate}"
            events.append(HistoryEvent(
                event_id=f"{ts_ms:013x}-case-{day:03d}-{seq}", device_id=device, venue_id=venue,
                direction=direction, ts=format_ts(ts_ms), ts_ms=ts_ms, seq=10_000_000 + day * 2 + seq,
                boot_id="bench-boot", time_synced=True, decision="granted", reason="ok", credential="qg1",
                subject=subject, display=display, person_key=person_key(display), latency_ms=30.0,
                code_sha256=hashlib.sha256(f"case-{day}-{seq}".encode()).hexdigest(), received_ms=ts_ms))
    return events


def bench_trace(store: Any, end_ms: int, repeats: int) -> dict[str, Any]:
    """Add the case (``case_events``) and time ``run_trace`` over its last ``TRACE_DAYS`` days.

    Runs after the other queries, so their counts are those of the synthetic events alone.
    """
    from provisioning.history.trace_store import run_trace
    from provisioning.history.tracing import TraceRules

    case = case_events(end_ms)
    store.add(case)
    subjects = frozenset({case[0].subject or ""})
    since_ms, until_ms = end_ms - (TRACE_DAYS + 1) * DAY_MS, end_ms
    run_trace(store, subjects, since_ms, until_ms, TraceRules())  # warm, as the other queries
    ms, found = _median_ms(lambda: run_trace(store, subjects, since_ms, until_ms, TraceRules()), repeats)
    return {"ms": round(ms, 1), "visits": len(found.result.visits), "contacts": len(found.result.contacts),
            "people": len(found.result.contact_subjects()), "rows_read": found.rows_read,
            "venues": len({v.venue_id for v in found.result.visits}), "target_ms": TRACE_TARGET_MS,
            "target_met": ms < TRACE_TARGET_MS}


def _median_ms(action: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        result = action()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times), result


def bench_store(store: Any, events: int, batch: int, end_ms: int, repeats: int) -> dict[str, Any]:
    """Ingest ``events`` synthetic events into ``store`` and time the queries. Returns the figures.

    Statistics are refreshed after the bulk load, as in service (without them PostgreSQL's
    planner scans the whole table for an indexed lookup).
    """
    stored, ingest_s = 0, 0.0
    for chunk in synthetic_batches(events, batch, end_ms):
        t0 = time.perf_counter()
        stored += len(store.add(chunk))
        ingest_s += time.perf_counter() - t0
    store.optimize()  # the collector does this after each hourly retention pass
    queries = []
    for name, flt in bench_queries(end_ms):
        if flt is None:
            ms, gaps = _median_ms(store.gaps, 1)
            queries.append({"query": name, "ms": round(ms, 1), "count": len(gaps)})
        else:
            store.page(flt, 1, 50)  # warm the cache once, as a manager's second click would
            ms, page = _median_ms(lambda f=flt: store.page(f, 1, 50), repeats)
            queries.append({"query": name, "ms": round(ms, 1), "count": page.total})
    return {"events": stored, "ingest_s": round(ingest_s, 2),
            "ingest_events_per_s": round(stored / ingest_s) if ingest_s else 0,
            "queries": queries, "target_ms": TARGET_MS, "target_met": queries[0]["ms"] < TARGET_MS,
            "trace": bench_trace(store, end_ms, repeats)}


def bench_sqlite(events: int, batch: int, end_ms: int, repeats: int, folder: str = "") -> dict[str, Any]:
    """Run ``bench_store`` on a new SQLite file (in ``folder`` or a temporary one, removed after)."""
    from provisioning.history.store import open_store

    with tempfile.TemporaryDirectory(dir=folder or None, prefix="qrgate-bench-history-") as tmp:
        path = os.path.join(tmp, "history.sqlite")
        store = open_store(path)
        try:
            report = bench_store(store, events, batch, end_ms, repeats)
        finally:
            store.close()
        report["file_mb"] = round(sum(os.path.getsize(os.path.join(tmp, f)) for f in os.listdir(tmp)) / 1e6, 1)
    return report


def bench_postgres(server_url: str, events: int, batch: int, end_ms: int, repeats: int) -> dict[str, Any]:
    """Run ``bench_store`` in a private schema on ``server_url`` (dropped after).

    Returns ``{"skipped": reason}`` when the server cannot be reached.
    """
    import psycopg

    from provisioning.history.store import open_store

    try:
        schema = create_schema(server_url, "qrgate_bench")
    except psycopg.Error as err:
        return {"skipped": f"PostgreSQL unreachable ({str(err).strip().splitlines()[0][:100]})"}
    try:
        store = open_store(schema_url(server_url, schema))
        try:
            report = bench_store(store, events, batch, end_ms, repeats)
            size = store._fetch("SELECT pg_total_relation_size('events')")[0][0]  # noqa: SLF001 - bench only
            report["table_mb"] = round(int(size) / 1e6, 1)
        finally:
            store.close()
    finally:
        drop_schema(server_url, schema)
    return report


def bench_collector(host: str, port: int, events: int, end_ms: int, folder: str = "",
                    timeout_s: float = 300.0) -> dict[str, Any]:
    """Publish ``events`` scan messages QoS 1 and time until the collector has stored them all."""
    import paho.mqtt.client as mqtt

    from provisioning.history.collector import CollectorSettings, ScanCollector
    from provisioning.history.store import open_store

    prefix = f"qrgate-bench-{os.getpid()}-{secrets.token_hex(3)}"
    with tempfile.TemporaryDirectory(dir=folder or None, prefix="qrgate-bench-collector-") as tmp:
        store = open_store(os.path.join(tmp, "history.sqlite"))
        collector = ScanCollector(store, CollectorSettings(host=host, port=port, prefix=prefix,
                                                           client_id=prefix, retention_days=0))
        stop = threading.Event()
        thread = threading.Thread(target=collector.run, args=(stop,), name="qrgate-bench-collector")
        thread.start()
        pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=prefix + "-pub", protocol=mqtt.MQTTv5)
        try:
            with collector.changed:
                if not collector.changed.wait_for(lambda: collector.stats.subscribed, timeout=30):
                    return {"skipped": f"collector did not subscribe on {host}:{port}"}
            pub.max_inflight_messages_set(1000)
            pub.connect(host, port)
            pub.loop_start()
            from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

            from firmware.core.event_signature import public_key_text, seal

            payloads = []
            keys: dict[str, Ed25519PrivateKey] = {}  # each synthetic gate signs, as real gates do
            for chunk in synthetic_batches(events, 1000, end_ms):
                for ev in chunk:
                    if ev.device_id not in keys:
                        keys[ev.device_id] = Ed25519PrivateKey.generate()
                        store.register_device(ev.device_id, public_key_text(keys[ev.device_id].public_key()),
                                              "bench", end_ms)
                    payloads.append((f"{prefix}/{ev.device_id}/scan", seal(json.dumps({
                        "schema": "qrgate.scan/1", "event_id": ev.event_id, "seq": ev.seq, "boot_id": ev.boot_id,
                        "device_id": ev.device_id, "venue_id": ev.venue_id, "direction": ev.direction,
                        "ts": ev.ts, "time_synced": True, "decision": ev.decision, "event_type": ev.decision,
                        "reason": ev.reason, "credential": ev.credential, "subject": ev.subject,
                        "display": ev.display, "latency_ms": ev.latency_ms, "code_sha256": ev.code_sha256,
                        "code": None}, ensure_ascii=False, separators=(",", ":")).encode(), keys[ev.device_id])))
            t0 = time.perf_counter()
            for topic, body in payloads:
                pub.publish(topic, body, qos=1)
            with collector.changed:
                done = collector.changed.wait_for(lambda: collector.stats.stored >= events, timeout=timeout_s)
            elapsed = time.perf_counter() - t0
            stats = collector.stats
            return {"events": stats.stored, "seconds": round(elapsed, 2), "complete": done,
                    "events_per_s": round(stats.stored / elapsed) if elapsed else 0, "gaps": stats.gaps,
                    "duplicates": stats.duplicates}
        finally:
            pub.disconnect()
            pub.loop_stop()
            stop.set()
            thread.join(timeout=30)
            store.close()


_FILL_DAY = (
    "INSERT INTO {table} (event_id, device_id, venue_id, direction, ts, ts_ms, seq, boot_id, time_synced, decision,"
    " reason, credential, subject, display, person_key, latency_ms, code_sha256, received_ms)"
    " SELECT md5(%(day)s::text || '-' || i), 'g' || lpad((i %% 1000)::text, 5, '0'),"
    " 'v' || lpad((i %% 1000 / 10)::text, 4, '0'), CASE WHEN i %% 2 = 0 THEN 'in' ELSE 'out' END,"
    " to_char(to_timestamp(t / 1000.0) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'), t,"
    " %(seq0)s + i / 1000, 'bench-boot', true, CASE WHEN i %% 8 = 0 THEN 'denied' ELSE 'granted' END,"
    " CASE WHEN i %% 8 = 0 THEN 'expired' ELSE 'ok' END, 'qg1', md5('p' || (i %% 50000)),"
    " 'NGUYỄN VĂN *** 0912 345 ***', 'nguyenvan***0912345***', 30.0, md5('c' || i) || md5('d' || i), t + 500"
    " FROM generate_series(0, %(n)s - 1) AS i, LATERAL (SELECT %(start)s + i::bigint * 86400000 / %(n)s AS t) AS x"
)


def bench_retention(server_url: str, days: int, per_day: int, end_ms: int, batch: int = 500,
                    say: Callable[[str], None] | None = None) -> dict[str, Any]:
    """PostgreSQL retention by partitions: fill ``days`` days of ``per_day`` events (1,000 gates),
    time dropping the oldest day (``prune``), then delete the next day row by row in batches of
    5,000 (what the store did before partitions, on that day's table only: a lower bound for an
    unpartitioned table, whose indexes are ``days`` times bigger) and VACUUM it; also the
    collector's batch insert and the manager's query with ``days`` partitions."""

    import psycopg

    from provisioning.history.pg_store import DAY_MS as PG_DAY_MS
    from provisioning.history.pg_store import partition_name
    from provisioning.history.store import open_store

    say = say or (lambda text: None)
    try:
        schema = create_schema(server_url, "qrgate_bench_retention")
    except psycopg.Error as err:
        return {"skipped": f"PostgreSQL unreachable ({str(err).strip().splitlines()[0][:100]})"}
    url = schema_url(server_url, schema)
    last_day = end_ms // PG_DAY_MS - 1
    first_day = last_day - days + 1
    report: dict[str, Any] = {"days": days, "per_day": per_day}
    try:
        store = open_store(url)
        try:
            t0 = time.perf_counter()
            for n, day in enumerate(range(first_day, last_day + 1)):
                # Filled before it is attached, so its indexes are built once, in bulk (the
                # collector makes a day's table when its first event arrives, empty).
                name = partition_name(day)
                with psycopg.connect(url, autocommit=True) as conn:
                    conn.execute(f'CREATE TABLE "{name}" (LIKE events INCLUDING DEFAULTS)')
                    conn.execute(_FILL_DAY.replace("{table}", f'"{name}"'),
                                 {"day": day, "n": per_day, "start": day * PG_DAY_MS,
                                  "seq0": n * (per_day // 1000 + 1) + 1})
                    conn.execute(f'ALTER TABLE events ATTACH PARTITION "{name}" FOR VALUES FROM '
                                 f"({day * PG_DAY_MS}) TO ({(day + 1) * PG_DAY_MS})")
                    # what the collector's batches add up as they store a day
                    conn.execute(f"INSERT INTO event_days (day, events, last_received_ms, first_received_ms)"
                                 f' SELECT {day}, count(*), max(received_ms), min(received_ms) FROM "{name}"')
                say(f"retention bench: day {n + 1} of {days} filled ({time.perf_counter() - t0:.0f} s)")
            report["fill_s"] = round(time.perf_counter() - t0, 1)
            store.optimize()
            size = store._fetch("SELECT sum(pg_total_relation_size(relid)) FROM pg_partition_tree('events')")  # noqa: SLF001
            report["events"] = int(store._fetch("SELECT count(*) FROM events")[0][0])  # noqa: SLF001
            report["table_gb"] = round(int(size[0][0]) / 1e9, 2)
            fresh_ms = end_ms - 60_000
            inserts = []
            for r in range(5):
                evs = [HistoryEvent(
                    event_id=f"ret-{r}-{i:06d}-{secrets.token_hex(6)}", device_id=f"g{i % 1000:05d}",
                    venue_id=f"v{i % 1000 // 10:04d}", direction="in", ts=format_ts(fresh_ms + i), ts_ms=fresh_ms + i,
                    seq=10_000_000 + r * batch + i, boot_id="bench-boot", time_synced=True, decision="granted",
                    reason="ok", credential="qg1", subject="s" * 32, display="NGUYỄN VĂN *** 0912 345 ***",
                    person_key="nguyenvan***0912345***", latency_ms=30.0, code_sha256="c" * 64,
                    received_ms=fresh_ms + i) for i in range(batch)]
                t1 = time.perf_counter()
                store.add(evs)
                inserts.append((time.perf_counter() - t1) * 1000)
            report["insert_batch_ms_median"] = round(statistics.median(inserts), 1)
            flt = Filter(venue="v0003", since_ms=end_ms - 7 * DAY_MS, decision="denied")
            store.page(flt, 1, 50)
            ms, page = _median_ms(lambda: store.page(flt, 1, 50), 5)
            report["venue_7_days_denied_ms"] = round(ms, 1)
            report["venue_7_days_denied_count"] = page.total
            # a minute into the next day: the oldest day's last events (received 0.5 s after their
            # time) are past the cutoff by both clocks, so its table may go
            cutoff = (first_day + 1) * PG_DAY_MS + 60_000
            t1 = time.perf_counter()
            dropped = store.prune(cutoff)
            report["drop_one_day_s"] = round(time.perf_counter() - t1, 3)
            report["drop_one_day_events"] = dropped
            name = partition_name(first_day + 1)
            t1 = time.perf_counter()
            deleted = 0
            with psycopg.connect(url, autocommit=True) as conn:
                while True:
                    n = conn.execute(f'DELETE FROM "{name}" WHERE (event_id, ts_ms) IN (SELECT event_id, ts_ms'
                                     f' FROM "{name}" ORDER BY ts_ms LIMIT 5000)').rowcount
                    deleted += n
                    if n < 5000:
                        break
                report["delete_one_day_rows_s"] = round(time.perf_counter() - t1, 1)
                report["delete_one_day_rows_events"] = deleted
                t1 = time.perf_counter()
                conn.execute(f'VACUUM "{name}"')
                report["vacuum_after_delete_s"] = round(time.perf_counter() - t1, 1)
        finally:
            store.close()
    finally:
        drop_schema(server_url, schema)
    return report


def render_retention(report: dict[str, Any]) -> str:
    r = report["retention"]
    if "skipped" in r:
        return f"retention bench skipped: {r['skipped']}"
    rows = [["events (days x per day)", f"{r['events']:,} ({r['days']} x {r['per_day']:,})"],
            ["events table with indexes", f"{r['table_gb']} GB"],
            ["fill (one INSERT ... SELECT a day)", f"{r['fill_s']} s"],
            ["retention of one day: drop its partition (prune)", f"{r['drop_one_day_s']} s ({r['drop_one_day_events']:,} events)"],
            ["the same by row deletes, batches of 5,000 (one day's table only)",
             f"{r['delete_one_day_rows_s']} s ({r['delete_one_day_rows_events']:,} events) + VACUUM "
             f"{r['vacuum_after_delete_s']} s"],
            ["collector batch insert of 500 (median of 5)", f"{r['insert_batch_ms_median']} ms"],
            ["one venue, last 7 days, denied: count + first page", f"{r['venue_7_days_denied_ms']} ms "
             f"({r['venue_7_days_denied_count']:,})"]]
    return (f"history retention bench, {report['date']}, {report['cpu']} ({report['cpus']} CPUs), load "
            f"{report['load_avg_1m']}\n\n" + format_table(["measure", "result"], rows))


def run_bench(events: int, batch: int, repeats: int, pg_url: str | None, folder: str = "",
              broker: tuple[str, int] | None = None, mqtt_events: int = 0,
              end_ms: int | None = None) -> dict[str, Any]:
    """Run every part of the bench and return one report."""
    end_ms = end_ms if end_ms is not None else int(time.time() * 1000)
    report: dict[str, Any] = {"bench": "history", **machine_info(), "events": events, "batch": batch}
    report["sqlite"] = bench_sqlite(events, batch, end_ms, repeats, folder)
    report["postgresql"] = (bench_postgres(pg_url, events, batch, end_ms, repeats) if pg_url
                            else {"skipped": "--no-pg"})
    if broker:
        report["collector"] = bench_collector(broker[0], broker[1], mqtt_events, end_ms, folder)
    return report


def render(report: dict[str, Any]) -> str:
    """The report as Markdown tables."""
    lines = [f"history bench, {report['date']}, {report['cpu']} ({report['cpus']} CPUs), "
             f"{report['events']:,} events, batches of {report['batch']}", ""]
    backends = [b for b in ("sqlite", "postgresql") if "skipped" not in report[b]]
    rows = [["ingest (events/s)", *(report[b]["ingest_events_per_s"] for b in backends)]]
    for i, (name, _) in enumerate(bench_queries(0)):
        rows.append([f"{name}: ms (count)",
                     *(f"{report[b]['queries'][i]['ms']:.1f} ({report[b]['queries'][i]['count']:,})"
                       for b in backends)])
    rows.append([f"trace: {TRACE_DAYS} days, {len(TRACE_VENUES)} venues: ms (overlaps, people, scans read)",
                 *(f"{report[b]['trace']['ms']:.1f} ({report[b]['trace']['contacts']:,}, "
                   f"{report[b]['trace']['people']:,}, {report[b]['trace']['rows_read']:,})" for b in backends)])
    lines.append(format_table(["", *backends], rows))
    for b in ("sqlite", "postgresql"):
        if "skipped" in report[b]:
            lines.append(f"{b}: skipped: {report[b]['skipped']}")
        else:
            verdict = "met" if report[b]["target_met"] else "MISSED"
            lines.append(f"{b}: target query under {TARGET_MS:.0f} ms {verdict}; trace under "
                         f"{TRACE_TARGET_MS:.0f} ms {'met' if report[b]['trace']['target_met'] else 'MISSED'}")
    if "collector" in report:
        c = report["collector"]
        lines.append("collector via MQTT: " + (c["skipped"] if "skipped" in c else
                     f"{c['events']:,} events in {c['seconds']} s = {c['events_per_s']:,} events/s "
                     f"(complete: {c['complete']})"))
    return "\n".join(lines)


def bench_history_command(args: argparse.Namespace) -> int:
    from firmware.core.errors import ConfigError
    from provisioning.cli.history import parse_broker

    if args.events < 1 or args.batch < 1:
        raise ConfigError("--events and --batch must be at least 1")
    if args.retention_per_day:
        if args.retention_per_day < 1000 or args.retention_days < 2:
            raise ConfigError("--retention-per-day must be at least 1000 and --retention-days at least 2")
        import sys

        report = {"bench": "history-retention", **machine_info(),
                  "retention": bench_retention(args.pg, args.retention_days, args.retention_per_day,
                                               int(time.time() * 1000), args.batch,
                                               say=lambda text: print(text, file=sys.stderr, flush=True))}
        emit(args, report, render_retention(report))
        return 0
    broker = parse_broker(args.broker) if args.broker else None
    report = run_bench(args.events, args.batch, args.repeats, None if args.no_pg else args.pg, args.dir,
                       broker, args.mqtt_events)
    emit(args, report, render(report))
    return 0

"""`qrgate bench history` at a small size: both databases give the same counts, the collector path runs.

The full bench (1,000,000 events) is `qrgate bench history`; its figures are in the README.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from provisioning.history.bench import bench_queries, render, run_bench, synthetic_batches
from provisioning.history.store import open_store
from tests.history_support import pg_server_url  # noqa: F401  (a fixture)

END_MS = 1_782_990_000_000
REPO = Path(__file__).resolve().parents[1]


def test_bench_counts_agree_on_sqlite_and_postgresql_and_through_the_collector(
        pg_server_url, shared_broker, tmp_path):  # noqa: F811
    report = run_bench(3000, 250, 1, pg_server_url, str(tmp_path), (shared_broker.host, shared_broker.port),
                       mqtt_events=600, end_ms=END_MS)
    lite, pg = report["sqlite"], report["postgresql"]
    assert lite["events"] == pg["events"] == 3000
    assert [q["count"] for q in lite["queries"]] == [q["count"] for q in pg["queries"]]
    assert [q["query"] for q in lite["queries"]] == [name for name, _ in bench_queries(END_MS)]
    assert lite["queries"][1]["count"] == 3000 and lite["queries"][0]["count"] > 0
    assert lite["queries"][-1]["count"] == 0  # synthetic seqs have no holes
    assert report["collector"]["events"] == 600 and report["collector"]["complete"]
    assert report["collector"]["gaps"] == 0 and report["collector"]["duplicates"] == 0
    text = render(report)
    assert "ingest (events/s)" in text and "collector via MQTT: 600 events" in text


def test_synthetic_events_count_independently(tmp_path):
    store = open_store(str(tmp_path / "h.sqlite"))
    events = [ev for chunk in synthetic_batches(2000, 300, END_MS) for ev in chunk]
    store.add(events)
    for name, flt in bench_queries(END_MS)[:-1]:
        want = 0
        for ev in events:
            ok = ((flt.venue in ("", ev.venue_id)) and (flt.device in ("", ev.device_id))
                  and (flt.decision in ("", ev.decision)) and (flt.since_ms is None or ev.ts_ms >= flt.since_ms)
                  and (flt.venues is None or ev.venue_id in flt.venues))
            if flt.person:
                from provisioning.history.events import person_key

                ok = ok and (ev.subject == flt.person or person_key(flt.person) in ev.person_key)
            want += ok
        assert store.page(flt).total == want, name
    store.close()


def test_bench_history_command_prints_json(tmp_path):
    done = subprocess.run([sys.executable, "-m", "firmware.cli", "bench", "history", "--events", "500",
                           "--no-pg", "--repeats", "1", "--dir", str(tmp_path), "--json"],
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["bench"] == "history" and report["sqlite"]["events"] == 500
    assert report["postgresql"] == {"skipped": "--no-pg"}

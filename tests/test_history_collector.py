"""History collector against a real Mosquitto: duplicates, out of order, gaps, malformed JSON,
ack after store, shared subscriptions, and `qrgate history collect` as a process."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from firmware.core.errors import StoreError
from provisioning.history.collector import CollectorSettings, ScanCollector
from provisioning.history.query import Filter
from provisioning.history.store import open_store
from tests.history_support import BASE_MS, pg_server_url, pg_url, scan_dict  # noqa: F401
from tests.signing_support import register, signed, write_public_pem

pytestmark = pytest.mark.broker
WAIT_S = 20.0
REPO = Path(__file__).resolve().parents[1]


class Publisher:
    """A gate stand-in: publishes QoS 1 scan messages and waits for each PUBACK."""

    def __init__(self, broker, prefix: str) -> None:
        self.prefix = prefix
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"pub-{prefix}"[:60],
                                  protocol=mqtt.MQTTv5)
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()

    def send(self, device: str, payload: bytes | dict) -> None:
        """A dict is sent signed with the device's test key; bytes are sent as they are."""
        body = signed(device, payload) if isinstance(payload, dict) else payload
        info = self.client.publish(f"{self.prefix}/{device}/scan", body, qos=1)
        info.wait_for_publish(timeout=WAIT_S)
        assert info.is_published()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class RunningCollector:
    """A ScanCollector on its own thread, stopped by an Event."""

    def __init__(self, store, settings: CollectorSettings, changed: threading.Condition | None = None,
                 **clocks) -> None:
        register(store)  # the test devices' keys: only signed events are stored
        self.collector = ScanCollector(store, settings, changed=changed, **clocks)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.collector.run, args=(self.stop,), name="qrgate-history-test")
        self.thread.start()
        self.wait(lambda st: st.subscribed, "subscribed")

    def wait(self, predicate, what: str) -> None:
        with self.collector.changed:
            ok = self.collector.changed.wait_for(lambda: predicate(self.collector.stats), timeout=WAIT_S)
        assert ok, f"collector never {what}: {self.collector.stats}"

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=WAIT_S)
        assert not self.thread.is_alive()


def settings(broker, prefix: str, **kw) -> CollectorSettings:
    return CollectorSettings(host=broker.host, port=broker.port, prefix=prefix,
                             client_id=kw.pop("client_id", f"hist-{prefix}")[:60], **kw)


def test_collector_stores_once_reports_gaps_and_survives_malformed_json(shared_broker, topic_prefix, tmp_path,
                                                                         caplog):
    caplog.set_level("INFO")
    store = open_store(str(tmp_path / "h.sqlite"))
    running = RunningCollector(store, settings(shared_broker, topic_prefix))
    pub = Publisher(shared_broker, topic_prefix)
    try:
        sends = [
            ("gate-1", scan_dict(seq=1, ts_ms=BASE_MS + 1)),
            ("gate-1", scan_dict(seq=2, ts_ms=BASE_MS + 2)),
            ("gate-1", scan_dict(seq=2, ts_ms=BASE_MS + 2)),            # duplicate
            ("gate-1", b"{\"seq\": 3, \"display\": \"NGUY\xe1\xbb\x84N"),  # truncated JSON
            ("gate-1", scan_dict(seq=5, ts_ms=BASE_MS + 5)),            # 3 and 4 missing
            ("gate-1", scan_dict(seq=3, ts_ms=BASE_MS + 3)),            # late: fills 3
            ("gate-1", {"schema": "qrgate.scan/9"}),                    # unknown schema
            ("gate-2", scan_dict(device="gate-9", seq=1)),              # device does not match topic
            ("gate-2", scan_dict(device="gate-2", seq=10)),
            ("gate-1", scan_dict(seq=6, ts_ms=BASE_MS + 6)),
        ]
        for device, payload in sends:
            pub.send(device, payload)
        running.wait(lambda st: st.received >= len(sends), f"received {len(sends)}")
        st = running.collector.stats
        assert (st.received, st.stored, st.duplicates, st.malformed, st.gaps) == (10, 6, 1, 3, 1)
        assert running.thread.is_alive()
        assert [(e.device_id, e.seq) for e in store.rows(Filter())] == [
            ("gate-1", 6), ("gate-1", 5), ("gate-1", 3), ("gate-1", 2), ("gate-1", 1), ("gate-2", 10)]
        # gate-2's first stored seq is 10: 1..9 were never stored (a leading hole)
        assert [(g.device_id, g.first_missing, g.last_missing) for g in store.gaps()] == [
            ("gate-1", 4, 4), ("gate-2", 1, 9)]
        logged = "\n".join(r.getMessage() for r in caplog.records)
        assert "seq gap on gate-1: 3..4 missing (2 scans)" in logged
        assert "late event on gate-1: seq 3 arrived after 5" in logged
        assert "unsigned" in logged and "unknown schema" in logged
        assert "NGUY" not in logged and "0966" not in logged and "hmac-aa11" not in logged
    finally:
        pub.close()
        running.close()
        store.close()


def test_collector_applies_retention_when_it_starts(shared_broker, topic_prefix, tmp_path):
    day_ms = 86_400_000
    now_ms = BASE_MS + 40 * day_ms
    store = open_store(str(tmp_path / "h.sqlite"))
    old = [event_at(seq, BASE_MS + seq) for seq in (1, 2, 3)]
    recent = [event_at(seq, now_ms - day_ms + seq) for seq in (4, 5)]
    store.add(old + recent)
    running = RunningCollector(store, settings(shared_broker, topic_prefix, retention_days=30),
                               now_ms=lambda: now_ms)
    try:
        assert sorted(e.seq for e in store.rows(Filter())) == [4, 5]
    finally:
        running.close()
        store.close()


def event_at(seq: int, ms: int):
    from provisioning.history.events import parse_scan

    return parse_scan("gate-1", json.dumps(scan_dict(seq=seq, ts_ms=ms)).encode(), ms)


class RefusingStore:
    """A store whose database goes down at the first add: every add fails, and so does the
    collector's probe (max_seq) after it, so it is an outage, not one poison event (other
    reads go to the real store)."""

    def __init__(self, real) -> None:
        self.real = real
        self.attempts = threading.Event()

    def add(self, events):
        self.attempts.set()
        raise StoreError("database is down (test)")

    def max_seq(self, device):
        if self.attempts.is_set():
            raise StoreError("database is down (test)")
        return self.real.max_seq(device)

    def __getattr__(self, name):
        return getattr(self.real, name)


def test_events_not_stored_are_not_acked_and_come_back_to_the_next_collector(shared_broker, topic_prefix,
                                                                              tmp_path):
    store = open_store(str(tmp_path / "h.sqlite"))
    refusing = RefusingStore(store)
    cfg = settings(shared_broker, topic_prefix, store_retry_s=0.05)
    first = RunningCollector(refusing, cfg)
    pub = Publisher(shared_broker, topic_prefix)
    try:
        for seq in (1, 2, 3):
            pub.send("gate-1", scan_dict(seq=seq, ts_ms=BASE_MS + seq))
        assert refusing.attempts.wait(WAIT_S)
        first.close()
        assert store.page(Filter()).total == 0
        second = RunningCollector(store, cfg)  # same client id: resumes the session
        try:
            second.wait(lambda st: st.stored >= 3, "stored the redelivered events")
        finally:
            second.close()
        assert sorted(e.seq for e in store.rows(Filter())) == [1, 2, 3]
    finally:
        pub.close()
        store.close()


def test_two_collectors_share_the_load_into_one_postgresql(shared_broker, topic_prefix, pg_url):  # noqa: F811
    stores = [open_store(pg_url), open_store(pg_url)]
    changed = threading.Condition()
    runs = [RunningCollector(s, settings(shared_broker, topic_prefix, shared_group="hist",
                                         client_id=f"hist-{n}-{topic_prefix}"), changed)
            for n, s in enumerate(stores)]
    pub = Publisher(shared_broker, topic_prefix)
    try:
        for seq in range(1, 61):
            pub.send(f"gate-{seq % 3}", scan_dict(device=f"gate-{seq % 3}", seq=seq, ts_ms=BASE_MS + seq))
        runs[0].wait(lambda _: sum(r.collector.stats.received for r in runs) >= 60, "received all")
        assert all(r.collector.stats.received > 0 for r in runs), [r.collector.stats for r in runs]
        assert stores[0].page(Filter()).total == 60
        assert sum(r.collector.stats.stored for r in runs) == 60
    finally:
        pub.close()
        for r in runs:
            r.close()
        for s in stores:
            s.close()


def _reader(stream, lines: queue.Queue) -> None:
    for line in iter(stream.readline, ""):
        lines.put(line)
    lines.put(None)


def _wait_line(lines: queue.Queue, needle: str, seen: list[str]) -> None:
    while True:
        line = lines.get(timeout=WAIT_S)
        assert line is not None, "collector exited early:\n" + "".join(seen)
        seen.append(line)
        if needle in line:
            return


def qrgate(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "firmware.cli", *args], capture_output=True, text=True,
                          timeout=60, cwd=REPO)


def test_qrgate_history_collect_process_end_to_end(broker, topic_prefix, tmp_path):
    db = tmp_path / "history.sqlite"
    added = qrgate("history", "device", "add", "--db", str(db), "--device", "bus-3-gate-2", "--key",
                   str(write_public_pem("bus-3-gate-2", tmp_path / "bus-3-gate-2.pub.pem")))
    assert added.returncode == 0 and "registered bus-3-gate-2: SHA256:" in added.stdout, added.stderr
    proc = subprocess.Popen(
        [sys.executable, "-m", "firmware.cli", "-v", "history", "collect", "--broker", broker.address,
         "--db", f"sqlite:///{db}", "--prefix", topic_prefix, "--client-id", f"e2e-{os.getpid()}"],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, cwd=REPO)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=_reader, args=(proc.stderr, lines), daemon=True).start()
    seen: list[str] = []
    pub = None
    try:
        # "subscribing to" is logged before the SUBSCRIBE goes out; only after the SUBACK
        # ("subscribed to") is a message published now sure to reach the collector
        _wait_line(lines, "subscribed to", seen)
        pub = Publisher(broker, topic_prefix)
        for seq in [*range(1, 11), *range(13, 21)]:
            pub.send("bus-3-gate-2", scan_dict(device="bus-3-gate-2", seq=seq, ts_ms=BASE_MS + seq * 1000,
                                               venue="v-bus-3"))
        pub.send("bus-3-gate-2", b"not json at all")
        stored, skipped = 0, False
        while stored < 18 or not skipped:
            line = lines.get(timeout=WAIT_S)
            assert line is not None, "".join(seen)
            seen.append(line)
            if "stored " in line and " new events" in line:
                stored += int(line.split("stored ")[1].split()[0])
            skipped = skipped or "quarantined a message on" in line
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=WAIT_S) == 0
        for line in iter(lambda: lines.get(timeout=WAIT_S), None):
            seen.append(line)
    finally:
        if pub:
            pub.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
    logged = "".join(seen)
    assert "seq gap on bus-3-gate-2: 11..12 missing (2 scans)" in logged
    assert "unsigned" in logged and "not json" not in logged
    assert "collector stopped: 19 received, 18 stored, 0 duplicates, 1 skipped, 1 gaps seen" in logged

    out = qrgate("history", "query", "--db", str(db), "--format", "json", "--tz", "UTC", "--since",
                 "2026-07-02T11:00:05Z")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["count"] == 14 and [e["seq"] for e in doc["events"]] == [*range(20, 12, -1), *range(10, 4, -1)]
    gaps = qrgate("history", "query", "--db", str(db), "--gaps")
    assert gaps.returncode == 0, gaps.stderr
    assert gaps.stdout.splitlines()[1].split()[:3] == ["bus-3-gate-2", "11..12", "2"]
    assert gaps.stdout.splitlines()[-1] == "1 gaps, 2 events missing"
    refused = qrgate("history", "write-off", "--db", str(db), "--device", "bus-3-gate-2", "--seq", "10-12",
                     "--reason", "typo")
    assert refused.returncode == 78 and "seq 10..12 of bus-3-gate-2 is not lost" in refused.stderr
    written = qrgate("history", "write-off", "--db", str(db), "--device", "bus-3-gate-2", "--seq", "11-12",
                     "--reason", "outbox quarantined on 2026-07-02")
    assert written.returncode == 0, written.stderr
    assert written.stdout.startswith("written off seq 11..12 of bus-3-gate-2 (2 scans)")
    gaps = qrgate("history", "query", "--db", str(db), "--gaps")
    assert gaps.stdout.splitlines()[1].split() == ["bus-3-gate-2", "11..12", "2", "outbox", "quarantined", "on",
                                                   "2026-07-02"]
    assert gaps.stdout.splitlines()[2:] == ["1 write-offs, 2 events lost for good",
                                            "no open gaps: every other seq number is stored"]
    table = qrgate("history", "query", "--db", str(db), "--tz", "Asia/Ho_Chi_Minh", "--limit", "3",
                   "--venue", "v-bus-3", "--decision", "granted")
    assert table.returncode == 0, table.stderr
    assert table.stdout.splitlines()[1].startswith("2026-07-02 18:00:20  NGUYỄN ĐÌNH *** 0966 323 ***")
    assert table.stdout.splitlines()[-1].startswith("18 events match; showing the newest 3")
    xlsx = tmp_path / "out.xlsx"
    done = qrgate("history", "query", "--db", str(db), "--format", "xlsx", "--out", str(xlsx))
    assert done.returncode == 0 and done.stderr.strip() == f"wrote 18 events to {xlsx}"
    assert xlsx.stat().st_mode & 0o777 == 0o600
    bad = qrgate("history", "query", "--db", str(db), "--since", "someday")
    assert bad.returncode == 78 and "time 'someday' is not understood" in bad.stderr

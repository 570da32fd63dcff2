"""Skipped seq reservations (issue 11, item 9): a fresh outbox records the range it jumps over,
the gate publishes it signed, the collector writes it off as "skipped reservation" and
`qrgate history query --gaps` reports it apart from missing scans; a declaration that does not
verify with the gate's key writes nothing off. Real outbox, real Mosquitto, real collector into
SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import threading
from functools import partial
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from gpiozero.pins.mock import MockFactory
from paho.mqtt.enums import CallbackAPIVersion

from firmware.adapters.mqtt_link import MqttLink, MqttSettings, release_paho_sockets
from firmware.adapters.outbox import SEQ_RESERVE_BLOCK, SqliteOutbox, highest_seq_in, read_bodies
from firmware.adapters.publisher import OutboxPublisher
from firmware.app.builder import GateApp
from firmware.cli import main
from firmware.core.config import parse_config
from firmware.core.errors import ConfigError, StoreError
from firmware.core.event_signature import public_key_text, seal
from firmware.core.seq_skips import (
    MAX_DOCUMENT_BYTES,
    SKIPS_CONTEXT,
    SeqSkip,
    SkipsError,
    document_body,
    open_document,
    sealed_document,
    skipped_range,
)
from provisioning.history.query import Filter
from provisioning.history.store import open_store
from tests.conftest import FakeClock
from tests.history_support import BASE_MS, pg_server_url, pg_url, scan_dict  # noqa: F401
from tests.signing_support import device_key
from tests.test_history_collector import RunningCollector, settings
from tests.test_outbox import scan_event
from tests.test_outbox_app import site

WAIT_S = 20.0
KEY = device_key("gate-1")
STAMP = "2026-09-21T14:13:20.000Z"


def skip(first: int, last: int, exact: bool = True, cause: str = "quarantined_outbox",
         file: str = "outbox.sqlite.corrupt-20260921T141320Z") -> SeqSkip:
    return SeqSkip(first_seq=first, last_seq=last, cause=cause, exact=exact, file=file, declared_at=STAMP)


# --------------------------------------------------------------------------- the range (pure)

@pytest.mark.parametrize("reserved, highest, expected", [
    (0, None, None),                  # nothing was ever reserved (first start): nothing skipped
    (1000, None, (1, 1000, False)),   # the old file is unreadable or gone: the whole block, not exact
    (1000, 5, (6, 1000, True)),       # it was read: it used up to 5
    (1000, 0, (1, 1000, True)),       # it was read and held no event at all
    (1000, 1000, None),               # it used the whole block: no seq is skipped
    (2000, 1037, (1038, 2000, True)),
    (2000, 37, (1001, 2000, False)),  # below the block's start (an older copy?): only the block, not exact
])
def test_the_skip_is_exact_only_when_the_old_outbox_was_read(reserved, highest, expected):
    assert skipped_range(reserved, SEQ_RESERVE_BLOCK, highest) == expected


# --------------------------------------------------------------------------- the signed document

def test_a_skips_document_verifies_with_the_device_key_and_reads_back_whole():
    skips = (skip(6, 1000), skip(1003, 2000, exact=False, cause="new_outbox", file=""))
    payload = sealed_document("gate-1", skips, KEY)
    assert json.loads(payload)["skips"][1] == {"first_seq": 1003, "last_seq": 2000, "cause": "new_outbox",
                                               "exact": False, "declared_at": STAMP}
    assert open_document("gate-1", payload, KEY.public_key()) == skips


def _sealed(doc: dict, key=KEY, context: bytes = SKIPS_CONTEXT) -> bytes:
    return seal(json.dumps(doc, separators=(",", ":")).encode(), key, context)


GOOD = {"schema": "qrgate.seq-skips/1", "device_id": "gate-1", "skips": [skip(4, 5).to_json_dict()]}


@pytest.mark.parametrize("payload, why", [
    (document_body("gate-1", [skip(4, 5)]), "not signed"),
    (sealed_document("gate-1", [skip(4, 5)], device_key("gate-2")), "not signed"),
    (_sealed(GOOD, context=b"qrgate.scan-sig/1\n"), "not signed"),  # the key's scan signature is not a skips one
    (sealed_document("gate-1", [skip(4, 5)], KEY).replace(b'"first_seq":4', b'"first_seq":3'), "not signed"),
    (sealed_document("gate-2", [skip(4, 5)], KEY), "another device"),
    (_sealed({**GOOD, "schema": "qrgate.scan/1"}), "not a qrgate.seq-skips/1"),
    (_sealed({**GOOD, "skips": [{**GOOD["skips"][0], "first_seq": 0}]}), "first_seq"),
    (_sealed({**GOOD, "skips": [{**GOOD["skips"][0], "first_seq": 9}]}), "first_seq"),
    (_sealed({**GOOD, "skips": [{**GOOD["skips"][0], "last_seq": 5_000_000}]}), "wider"),
    (_sealed({**GOOD, "skips": [{**GOOD["skips"][0], "cause": "lost_scans"}]}), "cause"),
    (_sealed({**GOOD, "skips": [{**GOOD["skips"][0], "exact": 1}]}), "exact"),
    (_sealed({**GOOD, "skips": [{**GOOD["skips"][0], "file": "../../etc/passwd"}]}), "file"),
    (_sealed({**GOOD, "skips": [{**GOOD["skips"][0], "why": "x"}]}), "unknown skip field"),
    (_sealed({**GOOD, "skips": [skip(1, 1).to_json_dict()] * 101}), "at most 100"),
    (seal(b'{"a":' + b"[" * 50_000 + b"]" * 50_000 + b"}", KEY, SKIPS_CONTEXT), "longer than"),
    (seal(b"{\"a\":" + b"[" * 5_000 + b"]" * 5_000 + b"}", KEY, SKIPS_CONTEXT), "not UTF-8 JSON"),
    (b"\xff" * 64, "not signed"),
], ids=["unsigned", "other_key", "scan_context", "tampered", "other_device", "schema", "seq_zero", "reversed",
        "too_wide", "cause", "exact_not_bool", "file_path", "extra_field", "too_many", "too_long", "nested",
        "garbage"])
def test_a_skips_document_is_refused_with_a_reason_unless_the_device_signed_exactly_it(payload, why):
    with pytest.raises(SkipsError, match=why):
        open_document("gate-1", payload, KEY.public_key())
    assert len(_sealed(GOOD)) < MAX_DOCUMENT_BYTES


# --------------------------------------------------------------------------- the outbox records it

def damage_an_index(path: Path) -> None:
    """Overwrite the root page of the outbox's unsent index: quick_check fails (the gate
    quarantines the file) while the events table itself can still be read."""
    with sqlite3.connect(path) as conn:
        root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'events_unsent'").fetchone()[0]
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    with open(path, "r+b") as fh:
        fh.seek((root - 1) * page_size)
        fh.write(b"\xa5" * page_size)


def five_events_three_sent(path: Path) -> None:
    outbox = SqliteOutbox(path)
    for _ in range(5):
        outbox.append(scan_event())
    outbox.mark_sent([1, 2, 3])
    outbox.close()


def test_a_readable_quarantined_outbox_narrows_the_skip_to_what_it_never_used(tmp_path):
    path = tmp_path / "outbox.sqlite"
    five_events_three_sent(path)
    damage_an_index(path)
    fresh = SqliteOutbox(path, wall=FakeClock(wall_s=1_790_000_000.0).wall)
    quarantined = fresh.quarantined_now
    assert quarantined is not None and quarantined.name == "outbox.sqlite.corrupt-20260921T141320Z"
    expected = skip(6, 1000)  # 4 and 5 are unsent in the quarantined file: recoverable, not skipped
    assert fresh.skips == (expected,) and fresh.skipped_now == expected
    assert fresh.append(scan_event()).seq == 1001
    skips_file = tmp_path / "outbox.skips"
    assert stat.S_IMODE(skips_file.stat().st_mode) == 0o600
    assert json.loads(skips_file.read_text()) == [expected.to_json_dict()]
    fresh.close()
    again = SqliteOutbox(path)  # a restart declares nothing new and keeps the seq
    assert again.skips == (expected,) and again.skipped_now is None
    assert again.append(scan_event()).seq == 1002
    again.close()
    assert highest_seq_in(quarantined) == 5
    assert [json.loads(body)["seq"] for _, body in read_bodies(quarantined)] == [1, 2, 3, 4, 5]


@pytest.mark.parametrize("damage", ["garbage", "wrong_schema"])
def test_an_unreadable_quarantined_outbox_declares_the_whole_block_marked_not_exact(tmp_path, damage):
    path = tmp_path / "outbox.sqlite"
    five_events_three_sent(path)
    if damage == "garbage":
        path.write_bytes(b"this is not a database" * 100)
    else:
        path.unlink()
        with sqlite3.connect(path) as conn:
            conn.execute("CREATE TABLE events (x INTEGER)")
    fresh = SqliteOutbox(path, wall=FakeClock(wall_s=1_790_000_000.0).wall)
    assert fresh.skips == (skip(1, 1000, exact=False),)
    assert fresh.append(scan_event()).seq == 1001
    fresh.close()


def test_each_lost_outbox_adds_its_own_skip_and_the_earlier_ones_are_kept(tmp_path):
    path = tmp_path / "outbox.sqlite"
    five_events_three_sent(path)
    path.unlink()
    second = SqliteOutbox(path, wall=FakeClock(wall_s=1_790_000_000.0).wall)
    assert second.skips == (skip(1, 1000, exact=False, cause="new_outbox", file=""),)
    assert [second.append(scan_event()).seq for _ in range(3)] == [1001, 1002, 1003]
    second.close()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    third = SqliteOutbox(path, wall=FakeClock(wall_s=1_790_000_000.0).wall)
    assert third.skips == (skip(1, 1000, exact=False, cause="new_outbox", file=""),
                           skip(1001, 2000, exact=False, cause="new_outbox", file=""))
    assert third.append(scan_event()).seq == 2001
    third.close()


def test_a_skip_that_cannot_be_recorded_stops_the_fresh_outbox_and_no_seq_is_reused(tmp_path):
    path = tmp_path / "outbox.sqlite"
    five_events_three_sent(path)
    path.unlink()
    with pytest.raises(StoreError, match="cannot record the skipped seq 1..1000"):
        SqliteOutbox(path, skips_file=tmp_path / "missing-dir" / "outbox.skips")
    # the jump was rolled back with the schema: the next start records it, then continues above it
    outbox = SqliteOutbox(path)
    assert outbox.skips == (SeqSkip(1, 1000, "new_outbox", False, "", outbox.skips[0].declared_at),)
    assert outbox.append(scan_event()).seq == 1001
    outbox.close()


# --------------------------------------------------------------------------- the store

@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path):
    s = open_store(str(tmp_path / "h.sqlite") if request.param == "sqlite" else request.getfixturevalue("pg_url"))
    try:
        yield s
    finally:
        s.close()


def store_events(store, *seqs: int, device: str = "gate-1") -> None:
    from provisioning.history.events import parse_scan

    store.add([parse_scan(device, json.dumps(scan_dict(device, seq, BASE_MS + seq)).encode(), BASE_MS)
               for seq in seqs])


def test_a_recorded_skip_is_a_write_off_apart_from_the_gaps_and_lets_the_ack_pass(store):
    store_events(store, 1, 2, 3, 1001)
    assert [(g.first_missing, g.last_missing) for g in store.gaps()] == [(4, 1000)]
    assert store.record_skip("gate-1", 6, 1000, "quarantined_outbox", True, "f", STAMP, BASE_MS) == (True, 0)
    assert store.record_skip("gate-1", 6, 1000, "quarantined_outbox", True, "f", STAMP, BASE_MS) == (False, 0)
    assert [(g.first_missing, g.last_missing) for g in store.gaps()] == [(4, 5)]  # real lost scans stay
    assert [(w.first_seq, w.last_seq, w.reason) for w in store.write_offs()] == [(6, 1000, "skipped reservation")]
    [declared] = store.skipped()
    assert (declared.device_id, declared.first_seq, declared.last_seq, declared.exact, declared.stored,
            declared.not_stored) == ("gate-1", 6, 1000, True, 0, 995)
    assert store.contiguous_through("gate-1") == 3
    store_events(store, 4, 5)
    assert store.contiguous_through("gate-1") == 1001 and store.gaps() == []
    with pytest.raises(ConfigError, match="kept for the ranges a gate declares"):
        store.write_off("gate-1", 4, 5, "Skipped reservation", now_ms=BASE_MS)
    # an unverified block over stored events: they stay stored and are counted
    assert store.record_skip("gate-2", 1, 1000, "new_outbox", False, "", STAMP, BASE_MS) == (True, 0)
    store_events(store, 1, 2, device="gate-2")
    assert [(k.device_id, k.stored, k.not_stored) for k in store.skipped("gate-2")] == [("gate-2", 2, 998)]


# --------------------------------------------------------------------------- end to end

def publish_once(broker, topic: str, payload: bytes, retain: bool = False) -> None:
    client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        info = client.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(timeout=WAIT_S)
        assert info.is_published()
    finally:
        client.disconnect()
        client.loop_stop()
        release_paho_sockets(client)


def gaps_report(db: str, capsys, *extra: str) -> str:
    capsys.readouterr()
    assert main(["history", "query", "--db", db, "--gaps", *extra]) == 0
    return capsys.readouterr().out


def gate_config(tmp_path: Path, base, broker=None, prefix: str = ""):
    mqtt = {"host": broker.host, "port": broker.port, "prefix": prefix, "discovery": False, "app_ack": True,
            "app_ack_timeout_s": 1} if broker is not None else {}
    return parse_config({
        "device": {"id": "gate-1", "venue_id": "v-1", "state_dir": str(base.state_dir),
                   "runtime_dir": str(tmp_path / "run")},
        "camera": {"source": base.camera.source, "frames_per_image": 1, "as_fast_as_possible": True},
        "gpio": {"pin_factory": "mock", "relay_pulse_ms": 50},
        "keys": {"issuers_dir": str(tmp_path / "issuers")},
        "mqtt": mqtt,
    }, str(tmp_path / "qrgate.toml"))


def run_gate(cfg, store=None) -> GateApp:
    """Build and run the gate over its two pass images; returns it still open (to close)."""
    app = GateApp(cfg, pin_factory=MockFactory())
    app.build()
    if store is not None:  # the key the gate made at its first start, as `history device add` registers it
        store.register_device("gate-1", public_key_text(app.device_key.public_key()), "test", 0)
    app.run(threading.Event())
    return app


@pytest.mark.broker
def test_a_quarantined_outbox_shows_as_a_skipped_reservation_and_a_forged_skip_writes_nothing_off(
        tmp_path, shared_broker, topic_prefix, capsys):
    base = site(tmp_path)
    db = str(tmp_path / "h.sqlite")
    store = open_store(db)
    collector = RunningCollector(store, settings(shared_broker, topic_prefix))
    try:
        # 1. seq 1-2 reach the history; 2. seq 3-4 are decided while no broker is configured
        app = run_gate(gate_config(tmp_path, base, shared_broker, topic_prefix), store)
        try:
            assert app.publisher.wait_until(lambda: app.publisher.acked_through == 2, WAIT_S)
        finally:
            app.close()
        run_gate(gate_config(tmp_path, base)).close()
        outbox_path = base.state_dir / "outbox.sqlite"
        damage_an_index(outbox_path)
        # 3. the outbox is quarantined at the next start; the fresh one skips the rest of the block
        app = run_gate(gate_config(tmp_path, base, shared_broker, topic_prefix))
        try:
            assert [(s.first_seq, s.last_seq, s.cause, s.exact) for s in app.publisher.outbox.skips] == [
                (5, 1000, "quarantined_outbox", True)]
            collector.wait(lambda st: st.stored >= 4 and st.skips_recorded >= 1, "stored seq 1001-1002 and the skip")
            assert sorted(e.seq for e in store.rows(Filter())) == [1, 2, 1001, 1002]
            assert [(g.first_missing, g.last_missing) for g in store.gaps()] == [(3, 4)]
            text = gaps_report(db, capsys)
            assert "skipped reservation" in text and "5..1000" in text and "no seq of the range was ever used" in text
            assert "3..4" in text and "1 gaps, 2 events missing" in text and "998" not in text
            report = json.loads(gaps_report(db, capsys, "--format", "json"))
            assert report["missing"] == 2 and [(g["first_missing"], g["last_missing"]) for g in report["gaps"]] == [
                (3, 4)]
            assert [(k["first_seq"], k["last_seq"], k["exact"], k["cause"], k["not_stored"], k["reason"])
                    for k in report["skipped_reservations"]] == [(5, 1000, True, "quarantined_outbox", 996,
                                                                  "skipped reservation")]
            assert report["write_offs"] == []

            # the attack: a client without the device key declares the real lost scans 3-4 skipped
            forged = [sealed_document("gate-1", [skip(3, 4)], device_key("gate-2")),  # another key
                      document_body("gate-1", [skip(3, 4)]),                          # unsigned
                      seal(document_body("gate-1", [skip(3, 4)]), app.device_key)]   # the key's scan signature
            for payload in forged:
                publish_once(shared_broker, f"{topic_prefix}/gate-1/skips", payload)
            collector.wait(lambda st: st.skips_refused >= 3, "refused the forged skips")
            assert [(g.first_missing, g.last_missing) for g in store.gaps()] == [(3, 4)]
            assert [(w.first_seq, w.last_seq) for w in store.write_offs()] == [(5, 1000)]
            assert sum(why.startswith("skips refused: not signed") for _, _, _, why, _ in store.quarantined()) == 3
            assert app.publisher.acked_through < 1001  # the hole at 3-4 still holds the ack back

            # recovery: the events of the quarantined file, signed by the gate's key, go into the history
            [quarantined] = app.publisher.outbox.quarantined_files()
            export = tmp_path / "recovered.jsonl"
            assert main(["outbox", "export", "--state-dir", str(base.state_dir),
                         "--outbox", str(base.state_dir / quarantined), "--out", str(export)]) == 0
            assert [json.loads(line)["seq"] for line in export.read_text().splitlines()] == [1, 2, 3, 4]
            assert stat.S_IMODE(os.stat(export).st_mode) == 0o600
            assert main(["history", "import", "--db", db, str(export)]) == 0  # verified with the gate's key
            assert store.gaps() == []
            assert "no open gaps" in gaps_report(db, capsys)
            # the gate publishes its unacknowledged rows again and the ack now passes the skip
            assert app.publisher.wait_until(lambda: app.publisher.acked_through == 1002, WAIT_S), \
                app.publisher.acked_through
        finally:
            app.close()
    finally:
        collector.close()
        store.close()


class Gate:
    """An outbox, a link and a publisher for gate-1 with its test key and its skips document."""

    def __init__(self, state: Path, broker, prefix: str) -> None:
        self.outbox = SqliteOutbox(state / "outbox.sqlite")
        self.link = MqttLink(MqttSettings(device_id="gate-1", host=broker.host, port=broker.port, prefix=prefix,
                                          keepalive_s=10, inflight_max=20), reconnect_min_s=0.1, reconnect_max_s=0.5)
        document = sealed_document("gate-1", self.outbox.skips, KEY) if self.outbox.skips else None
        self.publisher = OutboxPublisher(self.outbox, self.link, inflight_max=20, seal=partial(seal, key=KEY),
                                         skips_document=document)
        self.publisher.start()
        self.link.start()

    def close(self) -> None:
        self.publisher.stop()
        self.link.stop(timeout_s=1.0)
        self.outbox.close()


@pytest.mark.broker
def test_an_unreadable_outbox_is_declared_as_an_unverified_block_into_postgresql(
        tmp_path, shared_broker, topic_prefix, pg_url, capsys):  # noqa: F811
    store = open_store(pg_url)
    collector = RunningCollector(store, settings(shared_broker, topic_prefix))
    try:
        gate = Gate(tmp_path, shared_broker, topic_prefix)
        try:
            for _ in range(3):
                gate.outbox.append(scan_event())
            gate.publisher.wake()
            assert gate.publisher.wait_drained(WAIT_S)
        finally:
            gate.close()
        (tmp_path / "outbox.sqlite").write_bytes(b"\0" * 8192)  # NUL-filled: nothing can be read
        gate = Gate(tmp_path, shared_broker, topic_prefix)
        try:
            gate.outbox.append(scan_event())
            gate.publisher.wake()
            collector.wait(lambda st: st.stored >= 4 and st.skips_recorded >= 1, "stored seq 1001 and the skip")
            # gate-2's genuine declaration replayed on gate-1's topic is not gate-1's
            publish_once(shared_broker, f"{topic_prefix}/gate-1/skips",
                         sealed_document("gate-2", [skip(1, 1000)], device_key("gate-2")))
            collector.wait(lambda st: st.skips_refused >= 1, "refused gate-2's declaration on gate-1's topic")
        finally:
            gate.close()
        [declared] = store.skipped()
        assert (declared.first_seq, declared.last_seq, declared.exact, declared.stored, declared.not_stored) == (
            1, 1000, False, 3, 997)
        assert store.gaps() == [] and store.contiguous_through("gate-1") == 1001
        text = gaps_report(pg_url, capsys)
        assert "UNVERIFIED" in text and "3 of it stored, the other 997 never used or lost" in text
    finally:
        collector.close()
        store.close()


@pytest.mark.broker
def test_the_collector_logs_a_declared_jump_as_a_skip_and_an_event_inside_it_as_a_warning(
        tmp_path, shared_broker, topic_prefix, caplog):
    from tests.test_history_collector import Publisher

    caplog.set_level("INFO")
    store = open_store(str(tmp_path / "h.sqlite"))
    collector = RunningCollector(store, settings(shared_broker, topic_prefix))
    pub = Publisher(shared_broker, topic_prefix)
    try:
        publish_once(shared_broker, f"{topic_prefix}/gate-1/skips", sealed_document("gate-1", [skip(6, 1000)], KEY),
                     retain=True)
        collector.wait(lambda st: st.skips_recorded == 1, "recorded the skip")
        for seq in (1, 2, 3, 1001, 7):  # 4-5 lost; 7 lies inside the declared skip
            pub.send("gate-1", scan_dict("gate-1", seq, BASE_MS + seq))
        collector.wait(lambda st: st.stored == 5, "stored the five events")
        assert collector.collector.stats.gaps == 1
        logged = "\n".join(r.getMessage() for r in caplog.records)
        assert "seq gap on gate-1: 4..5 missing (2 scans)" in logged
        assert "seq 7 of gate-1 arrived inside seq 6..1000, which the gate declared skipped" in logged
        assert [(k.first_seq, k.last_seq, k.stored) for k in store.skipped()] == [(6, 1000, 1)]
        assert [(g.first_missing, g.last_missing) for g in store.gaps()] == [(4, 5)]
    finally:
        pub.close()
        collector.close()
        # the retained document would reach the next test's collector on this topic prefix
        publish_once(shared_broker, f"{topic_prefix}/gate-1/skips", b"", retain=True)
        store.close()

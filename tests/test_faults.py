"""Delivery fault tests (issue 3, section 5) through the real daemon: `qrgate run` as a child
process replaying QR images from a `dir:` source, a real Mosquitto on a loopback port, and a
subscriber that checks every event by event_id and seq against the outbox file.

Sizes are reduced by default; QRGATE_FULL_FAULTS=1 runs them at the issue's sizes
(2,000 scans with the broker down, 50 kills, 1,000-scan burst).
"""

from __future__ import annotations

import random
import subprocess

import pytest

from tests.fault_support import (
    DEVICE_ID,
    FULL,
    Daemon,
    check_delivery,
    code_images,
    first_arrival_order,
    outbox_rows,
    subset,
    write_config,
)
from tests.mqtt_support import Collector

pytestmark = [pytest.mark.broker, pytest.mark.slow]

BROKER_DOWN_SCANS = 2000 if FULL else 400
KILLS = 50 if FULL else 20
KILL_RUN_SCANS = 300 if FULL else 120
BURST_SCANS = 1000


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Distinct unknown-format QR codes, one image each, shared by the tests of this module."""
    return code_images(tmp_path_factory.mktemp("fault-images"), max(BROKER_DOWN_SCANS, BURST_SCANS,
                                                                    KILL_RUN_SCANS))


def test_a_broker_stopped_during_replay_and_restarted_loses_nothing_and_keeps_order(
        tmp_path, broker, topic_prefix, images):
    broker.extra_conf = f"persistence true\npersistence_location {broker.workdir}/\n"
    broker.stop()
    broker.start()
    folder = subset(images, tmp_path / "images", BROKER_DOWN_SCANS)
    # 200 scans a second: fast, yet slow enough that the broker's stop and start land mid-replay.
    config = write_config(tmp_path, folder, broker=broker, prefix=topic_prefix, fps=200)
    collector = Collector(broker.host, broker.port, f"{topic_prefix}/{DEVICE_ID}/scan",
                          client_id=f"consumer-{topic_prefix}"[:60], persistent=True)
    daemon = Daemon(config, tmp_path / "daemon.log")
    try:
        assert daemon.wait_printed(BROKER_DOWN_SCANS // 5, 60), daemon.log_text()
        broker.stop()
        stopped_at = len(daemon.printed)
        assert daemon.wait_printed(BROKER_DOWN_SCANS * 3 // 4, 60), daemon.log_text()
        broker.start()
        assert daemon.wait(120) == 0, daemon.log_text()
        total = len(daemon.printed)
        assert collector.wait_until(lambda ms: len({m.json()["seq"] for m in ms}) >= total, 30)
    finally:
        daemon.kill()
        collector.close()
    assert total == BROKER_DOWN_SCANS
    assert stopped_at < BROKER_DOWN_SCANS * 3 // 4  # scans really were decided with the broker down
    rows = check_delivery(tmp_path / "state", collector.scans(), daemon.printed)
    assert len(rows) == BROKER_DOWN_SCANS
    assert first_arrival_order(collector.scans()) == list(range(1, BROKER_DOWN_SCANS + 1))


def test_b_sigkill_at_random_moments_loses_no_decided_event_and_duplicates_keep_their_event_id(
        tmp_path, shared_broker, topic_prefix, images):
    rng = random.Random(20261126)
    folder = subset(images, tmp_path / "images", KILL_RUN_SCANS)
    # 240 scans a second (the maximum): a replay lasts about KILL_RUN_SCANS / 240 s after its first event.
    config = write_config(tmp_path, folder, broker=shared_broker, prefix=topic_prefix, fps=240)
    replay_s = KILL_RUN_SCANS / 240
    collector = Collector(shared_broker.host, shared_broker.port, f"{topic_prefix}/#")
    printed: list[dict] = []
    killed_mid_run = 0
    try:
        for i in range(KILLS):
            daemon = Daemon(config, tmp_path / "daemon.log")
            assert daemon.wait_printed(1, 60), daemon.log_text()
            try:
                daemon.proc.wait(timeout=rng.uniform(0.0, replay_s))  # the random moment
            except subprocess.TimeoutExpired:
                killed_mid_run += 1
            daemon.kill()
            printed += daemon.printed
            if i == 0:
                # The broker publishes the will: retained "offline".
                assert collector.wait_until(
                    lambda ms: [m.payload for m in ms
                                if m.topic.endswith("/availability")][-1:] == [b"offline"],
                    15)
        final = Daemon(config, tmp_path / "daemon.log")
        assert final.wait(120) == 0, final.log_text()
        printed += final.printed
        stored = outbox_rows(tmp_path / "state")
        assert collector.wait_until(lambda ms: {m.json()["seq"] for m in ms if m.topic.endswith("/scan")}
                                    >= {r[0] for r in stored}, 30)
    finally:
        collector.close()
    assert killed_mid_run >= KILLS * 3 // 4, "most kills must land while the daemon works"
    received = collector.scans()
    rows = check_delivery(tmp_path / "state", received, printed)
    assert len(rows) >= len(printed) >= KILL_RUN_SCANS
    assert len(received) >= len(rows)


def test_c_acl_refusal_keeps_events_unsent_raises_the_alarm_in_state_then_they_go_out(
        tmp_path, broker, topic_prefix, images):
    base = f"{topic_prefix}/{DEVICE_ID}"
    broker.extra_conf = f"persistence true\npersistence_location {broker.workdir}/\n"
    broker.reload_acl(f"topic readwrite {base}/availability\ntopic readwrite {base}/state\n"
                      f"topic read {topic_prefix}/#\n")
    folder = subset(images, tmp_path / "images", 30)
    config = write_config(tmp_path, folder, broker=broker, prefix=topic_prefix)
    collector = Collector(broker.host, broker.port, f"{topic_prefix}/#",
                          client_id=f"acl-{topic_prefix}"[:60], persistent=True)
    daemon = Daemon(config, tmp_path / "daemon.log", drain_timeout_s=90)
    try:
        assert collector.wait_until(lambda ms: any(
            m.topic.endswith("/state") and "publish_refused" in m.json().get("alarms", {}) for m in ms), 30), \
            daemon.log_text()
        assert collector.scans() == []
        # the alarm can come before the replay has decided all 30 (a slow or busy host): wait for them
        assert daemon.wait_printed(30, 60), daemon.log_text()
        assert [r[2] for r in outbox_rows(tmp_path / "state")] == [0] * 30  # nothing marked sent
        broker.reload_acl(None)
        assert daemon.wait(120) == 0, daemon.log_text()
        assert collector.wait_until(lambda ms: len({m.json()["seq"] for m in ms if m.topic.endswith("/scan")})
                                    >= 30, 30)
    finally:
        daemon.kill()
        collector.close()
    check_delivery(tmp_path / "state", collector.scans(), daemon.printed)
    refused = [m.json()["alarms"]["publish_refused"] for m in collector.on("state")
               if "publish_refused" in m.json().get("alarms", {})]
    assert "0x87" in refused[0]


def test_d_budget_reached_refuses_grants_without_opening_then_recovers_with_nothing_lost(
        tmp_path, shared_broker, topic_prefix):
    from provisioning import keys
    from tests.daemon_support import trust_new_key, write_pass_images

    key = trust_new_key(tmp_path, "issuer", "issuers")
    issuers = tmp_path / "issuers"
    folder = write_pass_images(tmp_path / "images", keys.load_private_key(key.private_path), 15)
    # 1. No broker: ten grants fill the budget, the next five are refused and the relay stays shut.
    config = write_config(tmp_path, folder, fps=10, max_events=10, issuers=issuers)
    daemon = Daemon(config, tmp_path / "daemon.log", "--pin-log", str(tmp_path / "pins.json"))
    assert daemon.wait(60) == 0, daemon.log_text()
    assert [(e["seq"], e["decision"]) for e in daemon.printed] == [(n, "granted") for n in range(1, 11)]
    assert "outbox full" in daemon.log_text()
    import json
    relay = json.loads((tmp_path / "pins.json").read_text())["GPIO17"]
    pulses = sum(1 for a, b in zip(relay[:-1], relay[1:], strict=True) if a and not b)  # active-low: high -> low opens
    assert pulses == 10, relay
    rows = outbox_rows(tmp_path / "state")
    assert [(r[0], r[2]) for r in rows] == [(n, 0) for n in range(1, 11)]
    first = daemon.printed
    # 2. With the broker: the backlog drains, room returns, new grants are stored again.
    config = write_config(tmp_path, folder, broker=shared_broker, prefix=topic_prefix, fps=5, max_events=10,
                          issuers=issuers)
    collector = Collector(shared_broker.host, shared_broker.port, f"{topic_prefix}/{DEVICE_ID}/scan")
    try:
        daemon = Daemon(config, tmp_path / "daemon2.log")
        assert daemon.wait(90) == 0, daemon.log_text()
        stored = outbox_rows(tmp_path / "state")
        assert collector.wait_until(lambda ms: {m.json()["seq"] for m in ms} >= {r[0] for r in stored}, 30)
    finally:
        collector.close()
    assert len(daemon.printed) >= 10, "the gate did not recover when room returned"
    assert daemon.printed[0]["seq"] == 11
    received = collector.scans()
    assert {e["seq"] for e in received} == set(range(1, 11 + len(daemon.printed)))
    assert {(e["seq"], e["event_id"]) for e in first + daemon.printed} <= {(e["seq"], e["event_id"])
                                                                          for e in received}
    assert [r[2] for r in stored] == [1] * len(stored)


def test_e_burst_of_1000_scans_while_connected_all_arrive_in_order(
        tmp_path, shared_broker, topic_prefix, images):
    folder = subset(images, tmp_path / "images", BURST_SCANS)
    config = write_config(tmp_path, folder, broker=shared_broker, prefix=topic_prefix)
    collector = Collector(shared_broker.host, shared_broker.port, f"{topic_prefix}/#")
    try:
        daemon = Daemon(config, tmp_path / "daemon.log")
        assert daemon.wait(120) == 0, daemon.log_text()
        assert collector.wait_until(lambda ms: len([m for m in ms if m.topic.endswith("/scan")])
                                    >= BURST_SCANS
                                    and [m.payload for m in ms if m.topic.endswith("/availability")][-1:]
                                    == [b"offline"], 30)
    finally:
        collector.close()
    received = collector.scans()
    check_delivery(tmp_path / "state", received, daemon.printed)
    assert [e["seq"] for e in received] == list(range(1, BURST_SCANS + 1))
    assert len(daemon.printed) == BURST_SCANS
    assert [m.payload for m in collector.on("availability")] == [b"online", b"offline"]
    states = [m.json() for m in collector.on("state")]
    assert states, "no retained state published"
    assert {"version", "mode", "camera", "broker_backlog", "oldest_unsent_age_min", "scans", "granted",
            "alarms",
            "ts", "seq"} <= set(states[-1])
    assert states[-1]["device_id"] == DEVICE_ID


def test_corrupt_outbox_at_start_is_quarantined_the_gate_fails_closed_without_crash_loop_seq_above_high_water(
        tmp_path, images):
    folder = subset(images, tmp_path / "images", 5)
    config = write_config(tmp_path, folder)
    state = tmp_path / "state"
    state.mkdir()
    (state / "outbox.sqlite").write_bytes(b"\0" * 8192)
    (state / "outbox.seq").write_text("1999\n")  # reserved by the outbox that was lost
    daemon = Daemon(config, tmp_path / "daemon.log")
    assert daemon.wait(60) == 0, daemon.log_text()
    assert [e["seq"] for e in daemon.printed] == [2000, 2001, 2002, 2003, 2004]
    quarantined = sorted(p.name for p in state.glob("outbox.sqlite.corrupt-*"))
    assert len(quarantined) == 1 and (state / quarantined[0]).read_bytes() == b"\0" * 8192
    assert "moved it to outbox.sqlite.corrupt-" in daemon.log_text()
    assert [r[0] for r in outbox_rows(state)] == [2000, 2001, 2002, 2003, 2004]
    # A second start does not quarantine again and does not crash-loop; seq goes on.
    again = Daemon(config, tmp_path / "daemon.log")
    assert again.wait(60) == 0, again.log_text()
    assert [e["seq"] for e in again.printed] == [2005, 2006, 2007, 2008, 2009]
    assert len(list(state.glob("outbox.sqlite.corrupt-*"))) == 1
    # Until the quarantined file is dealt with, the gate fails closed: every code refused, recorded.
    assert {(e["decision"], e["reason"]) for e in daemon.printed + again.printed} == {("denied", "fail_closed")}
    # The technician recovers it and moves it out of the state directory: normal decisions again.
    (state / quarantined[0]).rename(tmp_path / quarantined[0])
    third = Daemon(config, tmp_path / "daemon.log")
    assert third.wait(60) == 0, third.log_text()
    assert [e["seq"] for e in third.printed] == [2010, 2011, 2012, 2013, 2014]
    assert "fail_closed" not in {e["reason"] for e in third.printed}

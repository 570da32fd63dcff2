"""OutboxPublisher's drain rules, driven step by step with a recording link and a fake clock."""

from __future__ import annotations

import json

from firmware.adapters.outbox import SqliteOutbox
from firmware.adapters.publisher import STALE_S, OutboxPublisher
from firmware.alarms import Alarms
from tests.conftest import FakeClock
from tests.test_outbox import scan_event


class RecordingLink:
    """The part of MqttLink the publisher uses. Records every tracked publish as (mid, seq);
    acks are delivered by the test through ``ack`` (or at once, before publish returns)."""

    def __init__(self, ack_before_return: bool = False) -> None:
        self.on_ack = None
        self.connected = True
        self.published: list[tuple[int, int]] = []
        self.hooks: list = []
        self.ack_before_return = ack_before_return
        self._mid = 0

    def add_on_connect(self, hook) -> None:
        self.hooks.append(hook)

    def add_on_disconnect(self, hook) -> None:
        pass

    def is_connected(self) -> bool:
        return self.connected

    def topic(self, sub: str) -> str:
        return f"qrgate/gate-1/{sub}"

    def publish(self, *args, **kwargs) -> bool:
        return self.connected

    def publish_tracked(self, subtopic: str, payload: str) -> int:
        assert subtopic == "scan"
        self._mid += 1
        self.published.append((self._mid, json.loads(payload)["seq"]))
        if self.ack_before_return:
            self.on_ack(self._mid, True, 0, "Success")  # paho #361: on_publish before publish() returns
        return self._mid

    def ack(self, mid: int, ok: bool = True, code: int = 0, reason: str = "Success") -> None:
        self.on_ack(mid, ok, code, reason)

    def seqs(self) -> list[int]:
        return [seq for _, seq in self.published]


def setup(tmp_path, count: int, inflight_max: int = 20, **link_kw):
    clock = FakeClock()
    outbox = SqliteOutbox(tmp_path / "outbox.sqlite", wall=clock.wall)
    for _ in range(count):
        outbox.append(scan_event())
    link = RecordingLink(**link_kw)
    alarms = Alarms()
    publisher = OutboxPublisher(outbox, link, inflight_max=inflight_max, alarms=alarms,
                                monotonic=clock.monotonic, wall=clock.wall)
    return outbox, link, publisher, alarms, clock


def test_window_is_fed_in_seq_order_and_refilled_only_as_acks_arrive(tmp_path):
    outbox, link, publisher, _, _ = setup(tmp_path, 50, inflight_max=20)
    publisher.step(0)
    assert link.seqs() == list(range(1, 21))
    publisher.step(0)
    assert link.seqs() == list(range(1, 21))  # nothing acked: nothing more
    for mid, _ in link.published[:5]:
        link.ack(mid)
    publisher.step(0)
    assert link.seqs() == list(range(1, 26))
    assert outbox.unsent == 45
    assert [s for s, _ in outbox.pending(0, 100)] == list(range(6, 51))  # 1-5 acked; 6-25 in flight stay unsent


def test_ack_arriving_before_publish_returns_still_marks_the_event_sent(tmp_path):
    outbox, link, publisher, _, _ = setup(tmp_path, 30, inflight_max=10, ack_before_return=True)
    for _ in range(5):
        publisher.step(0)
    assert link.seqs() == list(range(1, 31))
    assert outbox.unsent == 0


def test_refused_event_stays_unsent_raises_alarm_and_is_retried_in_order_after_backoff(tmp_path):
    outbox, link, publisher, alarms, clock = setup(tmp_path, 5, inflight_max=10)
    publisher.step(0)
    mids = dict((seq, mid) for mid, seq in link.published)
    link.ack(mids[1])
    link.ack(mids[2], ok=False, code=0x87, reason="Not authorized")
    for seq in (3, 4, 5):
        link.ack(mids[seq])
    publisher.step(0)
    assert [s for s, _ in outbox.pending(0, 10)] == [2]
    assert "0x87" in alarms.active()["publish_refused"]
    publisher.step(0)
    assert link.seqs() == [1, 2, 3, 4, 5]  # not before the backoff
    clock.advance(5.1)
    publisher.step(0)
    assert link.seqs() == [1, 2, 3, 4, 5, 2]
    link.ack(link.published[-1][0])
    publisher.step(0)
    assert outbox.unsent == 0
    assert "publish_refused" not in alarms.active()


def test_reconnect_retries_a_refused_event_at_once(tmp_path):
    outbox, link, publisher, alarms, clock = setup(tmp_path, 1)
    publisher.step(0)
    link.ack(link.published[0][0], ok=False, code=0x87, reason="Not authorized")
    publisher.step(0)
    for hook in link.hooks:
        hook()
    publisher.step(0)
    assert link.seqs() == [1, 1]


def test_nothing_is_fed_while_disconnected(tmp_path):
    outbox, link, publisher, _, _ = setup(tmp_path, 3)
    link.connected = False
    publisher.step(0)
    assert link.published == []
    link.connected = True
    publisher.step(0)
    assert link.seqs() == [1, 2, 3]


def test_events_unacknowledged_on_a_live_connection_are_published_again_with_the_same_body(tmp_path):
    outbox, link, publisher, _, clock = setup(tmp_path, 3)
    publisher.step(0)
    clock.advance(STALE_S - 1)
    publisher.step(0)
    assert link.seqs() == [1, 2, 3]
    clock.advance(2)
    publisher.step(0)
    assert link.seqs() == [1, 2, 3, 1, 2, 3]
    link.ack(link.published[0][0])  # the first copy's ack still counts
    publisher.step(0)
    assert [s for s, _ in outbox.pending(0, 10)] == [2, 3]


def test_wait_drained_returns_true_once_every_event_is_acknowledged(tmp_path):
    outbox, link, publisher, _, _ = setup(tmp_path, 2, ack_before_return=True)
    assert publisher.wait_drained(0) is False
    publisher.step(0)  # publishes; the acks are queued
    publisher.step(0)  # marks them sent
    assert publisher.wait_drained(0) is True


def test_late_puback_for_a_stale_copy_marks_it_sent_without_freeing_the_window_slot_of_its_new_copy(tmp_path):
    outbox, link, publisher, _, clock = setup(tmp_path, 4, inflight_max=2)
    publisher.step(0)
    clock.advance(STALE_S + 1)
    publisher.step(0)  # seqs 1 and 2 given up as stale and published again
    assert link.published == [(1, 1), (2, 2), (3, 1), (4, 2)]
    link.ack(1)  # the late PUBACK of seq 1's first copy: the broker took it
    publisher.step(0)
    # The window is still full: paho holds mids 3 and 4, so seq 3 must wait.
    assert link.published == [(1, 1), (2, 2), (3, 1), (4, 2)]
    assert publisher.inflight == 2
    assert [s for s, _ in outbox.pending(0, 10)] == [2, 3, 4]
    assert publisher.sent == 1
    link.ack(3)  # the second copy of seq 1: already sent, frees its slot
    publisher.step(0)
    assert link.published == [(1, 1), (2, 2), (3, 1), (4, 2), (5, 3)]
    assert publisher.sent == 1
    link.ack(2, ok=False, code=0x87, reason="Not authorized")  # a late refusal of a stale copy
    publisher.step(0)
    assert publisher.refused == 0 and publisher.inflight == 2
    assert publisher.tracked_ids == 2  # mids 4 and 5; the stale ids 1 and 2 are answered


def test_ids_of_stale_copies_that_never_get_a_puback_are_dropped_after_a_while(tmp_path):
    from firmware.adapters.publisher import LATE_ACK_KEEP_S

    outbox, link, publisher, _, clock = setup(tmp_path, 3, inflight_max=3)
    publisher.step(0)
    cycles = int(3 * LATE_ACK_KEEP_S / STALE_S)
    tracked = []
    for _ in range(cycles):
        clock.advance(STALE_S + 1)
        publisher.step(0)
        tracked.append(publisher.tracked_ids)
        assert publisher.inflight == 3
    assert len(link.published) == 3 * (cycles + 1)
    assert max(tracked) <= 3 * (1 + LATE_ACK_KEEP_S / STALE_S)
    assert tracked[-1] == tracked[-2]  # steady, not growing with every cycle
    mid, seq = link.published[-1]
    link.ack(mid)  # the copy in flight still counts
    publisher.step(0)
    assert [s for s, _ in outbox.pending(0, 10)] == [x for x in (1, 2, 3) if x != seq]

"""Presence intervals and contacts (provisioning.history.tracing), on scenarios whose contacts are known
by construction. Each scan goes through the collector's parser first, as the store would hold it."""

from __future__ import annotations

import json

import pytest

from provisioning.history.events import HistoryEvent, parse_scan
from provisioning.history.tracing import (
    MINUTE_MS,
    Presence,
    TraceRules,
    Visit,
    presence_intervals,
    presence_of,
    trace,
)
from tests.history_support import BASE_MS, scan_dict

T0 = BASE_MS
RULES = TraceRules()


def scan(subject: str, venue: str, device: str, direction: str, minute: float, decision: str = "granted",
         *, web: bool = False) -> HistoryEvent:
    """One stored event: ``minute`` minutes after T0 (seconds allowed as fractions)."""
    ts_ms = T0 + int(round(minute * MINUTE_MS))
    data = scan_dict(device, 1, ts_ms, venue=venue, decision=decision, subject=subject, direction=direction,
                     event_id=f"{subject}-{venue}-{device}-{direction}-{ts_ms}")
    if web:
        data["credential"] = "self"
    ev = parse_scan(device, json.dumps(data).encode(), ts_ms)
    assert isinstance(ev, HistoryEvent)
    return ev


def presences(events: list[HistoryEvent]) -> list[Presence]:
    found = [presence_of(e.subject, e.venue_id, e.direction, e.decision, e.ts_ms, e.event_id) for e in events]
    return [p for p in found if p is not None]


def run(events: list[HistoryEvent], case: frozenset[str] = frozenset({"case"}), since_min: float = -24 * 60,
        until_min: float = 48 * 60, rules: TraceRules = RULES):
    ps = presences(events)
    return trace([p for p in ps if p.subject in case], ps, case, T0 + int(since_min * MINUTE_MS),
                 T0 + int(until_min * MINUTE_MS), rules)


def minutes(v) -> tuple[float, float]:
    return ((v.from_ms - T0) / MINUTE_MS, (v.to_ms - T0) / MINUTE_MS)


INTERVAL_CASES = [
    # (name, scans as (direction, minute[, device]), expected visits as (from, to, started_by, ended_by))
    ("in then out across two gates", [("in", 0, "gate-1"), ("out", 120, "gate-2")],
     [(0, 120, "in", "out")]),
    ("missing out: default dwell", [("in", 0)], [(0, 60, "in", "default_dwell")]),
    ("out without in", [("out", 120)], [(60, 120, "default_dwell", "out")]),
    ("out after the max dwell", [("in", 0), ("out", 12 * 60 + 1)],
     [(0, 60, "in", "default_dwell"), (12 * 60 + 1 - 60, 12 * 60 + 1, "default_dwell", "out")]),
    ("out exactly at the max dwell", [("in", 0), ("out", 12 * 60)], [(0, 12 * 60, "in", "out")]),
    ("two ins, one out: one visit", [("in", 0, "gate-1"), ("in", 30, "gate-2"), ("out", 90)],
     [(0, 90, "in", "out")]),
    ("two outs: the second has no open interval", [("in", 0), ("out", 30), ("out", 200)],
     [(0, 30, "in", "out"), (140, 200, "default_dwell", "out")]),
    ("two visits the same day", [("in", 0), ("out", 30), ("in", 300), ("out", 330)],
     [(0, 30, "in", "out"), (300, 330, "in", "out")]),
]


@pytest.mark.parametrize("name,scans,expected", INTERVAL_CASES, ids=[c[0] for c in INTERVAL_CASES])
def test_presence_intervals(name, scans, expected):
    events = [scan("p", "v-1", s[2] if len(s) > 2 else "gate-1", s[0], s[1]) for s in scans]
    visits = presence_intervals(presences(events), RULES)
    assert [(*minutes(v), v.started_by, v.ended_by) for v in visits] == expected


def test_denied_scans_are_not_presence():
    events = [scan("p", "v-1", "gate-1", "in", 0, "denied"), scan("p", "v-1", "gate-1", "out", 30, "denied")]
    assert presence_intervals(presences(events), RULES) == []


def test_gates_of_one_venue_pair_but_venues_do_not():
    events = [scan("p", "v-1", "gate-1", "in", 0), scan("p", "v-2", "gate-9", "out", 30)]
    visits = presence_intervals(presences(events), RULES)
    assert [(v.venue_id, *minutes(v), v.ended_by) for v in visits] == [
        ("v-1", 0, 60, "default_dwell"), ("v-2", -30, 30, "out")]


def test_contacts_across_two_gates_with_missing_and_orphan_outs():
    events = [
        scan("case", "v-1", "gate-1", "in", 0), scan("case", "v-1", "gate-2", "out", 120),
        # a: in by gate-2, out by gate-1: overlap 60..120
        scan("a", "v-1", "gate-2", "in", 60), scan("a", "v-1", "gate-1", "out", 180),
        # b: no out: 100..160, overlap 100..120 (20 min)
        scan("b", "v-1", "gate-1", "in", 100),
        # c: out only at 30: -30..30, overlap 0..30
        scan("c", "v-1", "gate-2", "out", 30),
        # d: left before the case came
        scan("d", "v-1", "gate-1", "in", -100), scan("d", "v-1", "gate-1", "out", -10),
        # e: no out, came 110 min in: 110..170 overlaps 10 min only
        scan("e", "v-1", "gate-1", "in", 110),
        # f: another venue at the same time
        scan("f", "v-2", "gate-1", "in", 0), scan("f", "v-2", "gate-1", "out", 120),
    ]
    result = run(events)
    assert [(*minutes(v), v.ended_by) for v in result.visits] == [(0, 120, "out")]
    assert {(c.subject, *minutes(c)) for c in result.contacts} == {("a", 60, 120), ("b", 100, 120), ("c", 0, 30)}


@pytest.mark.parametrize("overlap_s,is_contact", [(15 * 60 - 1, False), (15 * 60, True), (15 * 60 + 1, True)])
def test_overlap_threshold(overlap_s, is_contact):
    events = [scan("case", "v-1", "gate-1", "in", 0), scan("case", "v-1", "gate-1", "out", 60),
              scan("x", "v-1", "gate-1", "in", 60 - overlap_s / 60), scan("x", "v-1", "gate-1", "out", 90)]
    result = run(events)
    assert [c.subject for c in result.contacts] == (["x"] if is_contact else [])
    if is_contact:
        assert result.contacts[0].overlap_ms == overlap_s * 1000


def test_case_at_three_venues_with_per_venue_subjects():
    case = frozenset({"case@v1", "case@v2", "case@v3"})
    events = [
        scan("case@v1", "v-1", "g1", "in", 0), scan("case@v1", "v-1", "g1", "out", 60),
        scan("case@v2", "v-2", "g1", "in", 120), scan("case@v2", "v-2", "g2", "out", 180),
        scan("case@v3", "v-3", "g1", "in", 24 * 60),  # next day, no out
        scan("x@v1", "v-1", "g2", "in", 10), scan("x@v1", "v-1", "g2", "out", 50),
        scan("y@v2", "v-2", "g1", "in", 0), scan("y@v2", "v-2", "g1", "out", 60),  # at v-2 before the case
        scan("y@v2", "v-2", "g1", "in", 170),  # back at v-2: 170..230, overlap 10 min
        scan("z@v3", "v-3", "g1", "out", 24 * 60 + 30),  # 1410..1470 vs 1440..1500: 30 min
        scan("w@v1", "v-1", "g1", "in", 24 * 60),  # v-1 next day while the case is at v-3
    ]
    result = run(events, case)
    assert [(v.venue_id, *minutes(v)) for v in result.visits] == [
        ("v-1", 0, 60), ("v-2", 120, 180), ("v-3", 1440, 1500)]
    assert [(c.subject, c.venue_id, *minutes(c)) for c in result.contacts] == [
        ("x@v1", "v-1", 10, 50), ("z@v3", "v-3", 1440, 1470)]


def test_people_denied_at_the_door_are_not_contacts():
    events = [scan("case", "v-1", "gate-1", "in", 0), scan("case", "v-1", "gate-1", "out", 60),
              scan("turned-away", "v-1", "gate-1", "in", 10, "denied"),
              scan("turned-away", "v-1", "gate-1", "in", 11, "denied"),
              scan("let-in", "v-1", "gate-1", "in", 20, "denied"), scan("let-in", "v-1", "gate-1", "in", 21)]
    assert [c.subject for c in run(events).contacts] == ["let-in"]


def test_case_denied_everywhere_has_no_visits():
    events = [scan("case", "v-1", "gate-1", "in", 0, "denied"), scan("x", "v-1", "gate-1", "in", 0)]
    result = run(events)
    assert result.visits == [] and result.contacts == []


def test_web_check_ins_count_as_presence():
    events = [scan("case", "v-1", "web", "in", 0, web=True), scan("case", "v-1", "web", "out", 90, web=True),
              scan("phone", "v-1", "web", "in", 30, web=True),
              scan("gate", "v-1", "gate-1", "in", 40), scan("gate", "v-1", "gate-1", "out", 80)]
    assert events[0].credential == "self" and events[0].device_id == "web"
    result = run(events)
    assert [(*minutes(v), v.ended_by) for v in result.visits] == [(0, 90, "out")]
    assert [(c.subject, *minutes(c)) for c in result.contacts] == [("phone", 30, 90), ("gate", 40, 80)]


def test_window_keeps_whole_visits_at_its_edges():
    events = [scan("case", "v-1", "g", "in", -30), scan("case", "v-1", "g", "out", 30),
              scan("case", "v-1", "g", "in", 200), scan("case", "v-1", "g", "out", 230)]
    result = run(events, since_min=0, until_min=100)
    assert [minutes(v) for v in result.visits] == [(-30, 30)]


def test_rules_refuse_nonsense():
    with pytest.raises(ValueError):
        TraceRules(default_dwell_ms=0)
    with pytest.raises(ValueError):
        TraceRules(max_dwell_ms=-1)
    assert isinstance(Visit("s", "v", 0, 1, "in", "out"), Visit)

"""The quarantine loop (issue 14, item 4): `qrgate history trace --config F --quarantine-days 14`
puts the case and the contacts on the deny lists of the venues where they might go; the back
office publishes those lists (merged with the managers' ids) through a real Mosquitto to real
gates, which refuse the contacts' passes with reason ``denied`` until the end date and grant
them after it (the gates' clocks are fakes the test moves; no sleeps). Forged, unsigned and
tampered lists are refused. Plus the pure plan of which entry goes on which venue's list."""

from __future__ import annotations

import json
import secrets
import time
import zlib

import cbor2
import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from gpiozero.pins.mock import MockFactory

from device.synthetic import write_blank_png
from firmware.adapters.config_file import load_config
from firmware.adapters.fakes import ScriptedFrames, TableDecoder
from firmware.app.builder import GateApp
from firmware.core.events import protect_subject
from firmware.core.list_message import encode_message, venue_list_topic
from firmware.core.model import Frame, ScanEvent
from provisioning import keys
from provisioning.history.events import HistoryEvent, parse_scan
from provisioning.history.quarantine_plan import CASE, CONTACT, plan_quarantine
from provisioning.history.store import open_store
from provisioning.history.trace_store import audit_records
from provisioning.history.tracing import MINUTE_MS, Contact, TraceResult, Visit
from tests.backoffice_support import BackofficeSite, qrgate
from tests.conftest import FakeClock
from tests.daemon_support import trust_new_key, valid_pass, write_config
from tests.history_support import BASE_MS, rfc3339, scan_dict
from tests.mqtt_support import Collector, publish_raw

DAY_S = 86400
WAIT_S = 30.0
SECRETS = {"v-q1": secrets.token_bytes(32), "v-q2": secrets.token_bytes(32)}
CASE_ID, CONTACT_A, CONTACT_C = "CASE-0117", "079111111111", "079333333333"
NAMED_B = "b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0"  # a personal pass the back office issued (its ``sub``)


def subject(person_id: str, venue_id: str) -> str:
    return protect_subject(person_id, "hmac", SECRETS[venue_id]) or ""


# --- the pure plan -------------------------------------------------------------------------------

def test_the_plan_puts_subjects_where_seen_and_named_people_and_the_case_everywhere():
    s1 = {p: subject(p, "v-q1") for p in (CASE_ID, CONTACT_A, NAMED_B)}
    result = TraceResult(
        visits=[Visit(s1[CASE_ID], "v-q1", 0, 10, "in", "out")],
        contacts=[Contact(s1[CONTACT_A], "v-q1", 2, 9), Contact(s1[NAMED_B], "v-q1", 3, 9),
                  Contact(s1[NAMED_B], "v-q1", 5, 8), Contact("raw-at-v9", "v-9", 1, 4)])
    plan = plan_quarantine(result, venues=["v-q1", "v-q2", "v-q3"], secrets=SECRETS, person_id=CASE_ID,
                           known_ids=lambda v, s: (NAMED_B,) if s == s1[NAMED_B] else ())
    assert plan.entries == {
        "v-q1": {s1[CASE_ID]: CASE, CASE_ID: CASE, s1[CONTACT_A]: CONTACT, s1[NAMED_B]: CONTACT},
        "v-q2": {subject(CASE_ID, "v-q2"): CASE, CASE_ID: CASE, subject(NAMED_B, "v-q2"): CONTACT},
        "v-q3": {CASE_ID: CASE},  # no secret kept for v-q3: the raw id of the case only
    }
    assert (plan.contacts, plan.named, plan.unknown_venues) == (3, 2, ("v-9",))
    # traced by subject: nobody is named, nothing leaves the venue where it was seen
    by_subject = plan_quarantine(result, venues=["v-q1", "v-q2"], secrets=SECRETS)
    assert by_subject.entries == {"v-q1": {s1[CASE_ID]: CASE, s1[CONTACT_A]: CONTACT, s1[NAMED_B]: CONTACT}}
    assert CONTACT_A not in json.dumps(by_subject.entries) and by_subject.named == 0


# --- end to end ----------------------------------------------------------------------------------

def event(person_id: str, venue: str, device: str, direction: str, minute: int, seq: int) -> HistoryEvent:
    ts_ms = BASE_MS + minute * MINUTE_MS
    data = scan_dict(device, seq, ts_ms, venue=venue, subject=subject(person_id, venue), direction=direction,
                     event_id=f"{venue}-{device}-{seq:04d}")
    parsed = parse_scan(device, json.dumps(data).encode(), ts_ms)
    assert isinstance(parsed, HistoryEvent)
    return parsed


SCENARIO = [  # 2026-07-02, venue v-q1: the case from 11:00 to 13:00
    event(CASE_ID, "v-q1", "gate-q1", "in", 0, 1), event(CASE_ID, "v-q1", "gate-q1", "out", 120, 2),
    event(CONTACT_A, "v-q1", "gate-q1", "in", 60, 3), event(CONTACT_A, "v-q1", "gate-q1", "out", 180, 4),
    event(NAMED_B, "v-q1", "gate-q1", "in", 30, 5),  # no out: 60 minutes
    event(CONTACT_C, "v-q1", "gate-q1", "in", 150, 6),  # came after the case left
]


class Gate:
    """A built gate of one venue on mock pins, a real broker and a clock the test moves; passes are
    shown to it through scripted frames and a table decoder (the policy and lists are the real ones)."""

    def __init__(self, tmp_path, broker, prefix: str, device_id: str, venue_id: str, command_pub: bytes,
                 issuer_dir, now_s: float) -> None:
        folder = tmp_path / device_id
        (folder / "images").mkdir(parents=True)
        write_blank_png(folder / "images" / "blank.png")  # the configured camera; the test scripts the frames
        (folder / "commands").mkdir()
        (folder / "commands" / "backoffice.pem").write_bytes(command_pub)
        secret_file = folder / "venue-secret"
        secret_file.write_text(SECRETS[venue_id].hex() + "\n")
        secret_file.chmod(0o600)
        config = write_config(folder, device={"id": device_id, "venue_id": venue_id},
                              keys={"issuers_dir": issuer_dir, "command_dir": folder / "commands"},
                              privacy={"hmac_secret_file": secret_file},
                              mqtt={"host": broker.host, "port": broker.port, "prefix": prefix, "keepalive_s": 10})
        self.clock = FakeClock(wall_s=now_s)
        self.events: list[ScanEvent] = []
        self.app = GateApp(load_config(config), pin_factory=MockFactory(), clock=self.clock, environ={},
                           input_bounce_s=None, on_event=[self.events.append])
        self.service = self.app.build()
        self.frames = ScriptedFrames()
        self.service.frames = self.frames
        self.decoder = TableDecoder()
        self.service.decoder = self.decoder
        assert self.app.link is not None and self.app.link.wait_ready(WAIT_S)

    def show(self, label: str, payload: str) -> tuple[str, str]:
        """Show one pass; returns the event's (decision, reason)."""
        self.decoder.table[label] = [payload.encode()]
        before = len(self.events)
        self.frames.push(Frame(np.zeros((4, 4), np.uint8), self.clock.monotonic(), 0, label))
        self.service.step(timeout_s=0.0)
        self.service.after_step()
        assert len(self.events) == before + 1, f"{label}: no decision"
        self.clock.advance(10.0)  # past the repeat window before the next pass
        return self.events[-1].decision, self.events[-1].reason

    def close(self) -> None:
        self.app.close()


def backoffice_data(site: BackofficeSite) -> None:
    site.django(
        "from django.contrib.auth import get_user_model\n"
        "from backoffice.gates.models import Gate\n"
        "from backoffice.personal.models import PersonProfile, VenueSecret\n"
        "from backoffice.venues.models import Venue\n"
        "users = get_user_model().objects\n"
        "manager = users.create(username='+84900000001')\n"
        f"for venue_id, secret_hex in {json.dumps({v: s.hex() for v, s in SECRETS.items()})}.items():\n"
        "    venue = Venue.objects.create(venue_id=venue_id, name='Chợ ' + venue_id, full_address='Hà Nội',\n"
        "                                 registrant=manager, registrant_name='A', record={})\n"
        "    VenueSecret.objects.create(venue=venue, secret_hex=secret_hex)\n"
        "    Gate.objects.create(venue=venue, device_id='gate-' + venue_id[2:], direction='in')\n"
        f"PersonProfile.objects.create(user=users.create(username='+84900000002'), subject={NAMED_B!r},\n"
        "                             full_name='LÊ THỊ HOA')\n")


def publish_from_backoffice(site: BackofficeSite, venue_id: str, ids: list[str], now_s: float) -> dict:
    """A manager's list change as the page makes it (``publish_list``), at now_s; returns what it did."""
    done = site.django(
        "import json\n"
        "from backoffice.gates.models import VenueList\n"
        "from backoffice.gates.views import publish_list\n"
        "from backoffice.venues.models import Venue\n"
        f"venue = Venue.objects.get(venue_id={venue_id!r})\n"
        "deny, _ = VenueList.objects.get_or_create(venue=venue, kind='deny')\n"
        f"done = publish_list(None, venue, deny, {ids!r}, now_s={now_s!r})\n"
        "print(json.dumps({'answer': done.answer, 'quarantined': done.quarantined, 'gates': done.gates}))\n")
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.broker
def test_a_quarantine_reaches_the_gates_and_keeps_contacts_out_until_the_end_date(tmp_path, shared_broker,
                                                                                   topic_prefix):
    (tmp_path / "bo").mkdir()
    site = BackofficeSite(tmp_path / "bo", mqtt={"host": shared_broker.host, "port": shared_broker.port,
                                                 "prefix": topic_prefix})
    site.init()
    backoffice_data(site)
    history = open_store(site.database_url_for_tests)
    try:
        history.add(SCENARIO)
    finally:
        history.close()
    issuer = keys.load_private_key(trust_new_key(tmp_path, "issuer", "issuers").private_path)
    passes = {who: valid_pass(issuer, who, days=30) for who in (CASE_ID, CONTACT_A, NAMED_B, CONTACT_C)}
    command_pub = (site.folder / "keys" / "command.pub.pem").read_bytes()
    responses = Collector(shared_broker.host, shared_broker.port, f"{topic_prefix}/+/response/lists")
    retained = Collector(shared_broker.host, shared_broker.port, f"{topic_prefix}/venues/+/lists/deny")
    now_s = time.time()
    gates = {v: Gate(tmp_path, shared_broker, topic_prefix, f"gate-{v[2:]}", v, command_pub,
                     tmp_path / "issuers", now_s) for v in SECRETS}
    q1, q2 = gates["v-q1"], gates["v-q2"]
    try:
        # Before the quarantine everyone gets in.
        assert q1.show("A-before", passes[CONTACT_A]) == ("granted", "ok")

        done = qrgate("history", "trace", "--config", str(site.config), "--person-id", CASE_ID,
                      "--since", rfc3339(BASE_MS - 3600_000), "--until", rfc3339(BASE_MS + 6 * 3600_000),
                      "--format", "json", "--out", str(tmp_path / "trace.json"), "--quarantine-days", "14",
                      "--reason", "F0 2026-117", "--operator", "bs-lan")
        assert done.returncode == 0, done.stderr
        report = json.loads((tmp_path / "trace.json").read_text())
        assert sorted(c["subject"] for c in report["contacts"]) == sorted(
            [subject(CONTACT_A, "v-q1"), subject(NAMED_B, "v-q1")])
        # Each gate's answer is shown: the case and 2 contacts at v-q1; the case and the named contact at v-q2.
        err = done.stderr
        assert "quarantine until" in err and "(14 days): the case and 2 contact(s), 2 named" in err
        assert "v-q1 (Chợ v-q1): 4 entries added, 4 in force" in err and "  gate-q1: deny list version" in err
        assert "v-q2 (Chợ v-q2): 3 entries added, 3 in force" in err and "  gate-q2: deny list version" in err
        assert CASE_ID not in done.stdout and CONTACT_A not in err
        answers = {m.topic.split("/")[-3]: m.json() for m in responses.messages}
        assert answers["gate-q1"]["data"]["count"] == 4 and answers["gate-q1"]["data"]["timed"] == 4
        assert answers["gate-q2"]["data"]["count"] == 3

        # In force: the contacts and the case are refused where they might go.
        assert q1.show("A", passes[CONTACT_A]) == ("denied", "denied")
        assert q1.show("B", passes[NAMED_B]) == ("denied", "denied")
        assert q1.show("case", passes[CASE_ID]) == ("denied", "denied")
        assert q1.show("C", passes[CONTACT_C]) == ("granted", "ok")
        assert q2.show("B", passes[NAMED_B]) == ("denied", "denied"), "named: kept out of the other venue too"
        assert q2.show("case", passes[CASE_ID]) == ("denied", "denied")
        assert q2.show("A", passes[CONTACT_A]) == ("granted", "ok"), "known only by its subject at v-q1"

        # A manager's change later publishes the list merged with the quarantine, not instead of it.
        merged = publish_from_backoffice(site, "v-q1", ["EMP-13"], time.time())
        assert merged["quarantined"] == 4 and [g[1]["data"]["count"] for g in merged["gates"]] == [5]
        assert q1.show("A-merged", passes[CONTACT_A]) == ("denied", "denied")

        # Attacks on the gate: a forged list that drops the entries, an unsigned one, and the real
        # list with its ends pushed to 2096: each refused, the quarantine stays as it was.
        topic = venue_list_topic(topic_prefix, "v-q1", "deny")
        assert retained.wait_until(lambda ms: len([m for m in ms if m.topic == topic]) >= 2, WAIT_S)
        manifest, body = cbor2.loads([m.payload for m in retained.messages if m.topic == topic][-1])  # the merged
        attacker = ed25519.Ed25519PrivateKey.generate()
        forged = encode_message(attacker, kind="deny", version=10**11, now_s=time.time(), ids=["EMP-13"],
                                venue_id="v-q1", transaction="t-forged", prefix=topic_prefix)
        publish_raw(shared_broker, topic, forged)
        publish_raw(shared_broker, topic, b"EMP-13\n")  # a list as plain text, no signature at all
        lines = zlib.decompress(body).decode().split("\n")
        stretched = zlib.compress("\n".join(line.split("\t")[0] + "\t4000000000" if "\t" in line else line
                                            for line in lines).encode())
        publish_raw(shared_broker, topic, cbor2.dumps([manifest, stretched]))
        assert responses.wait_until(lambda ms: len([m for m in ms if m.topic.split("/")[-3] == "gate-q1"
                                                    and m.json()["status"] == "error"]) >= 3, WAIT_S)
        errors = [m.json()["error"].split(":")[0] for m in responses.messages
                  if m.topic.split("/")[-3] == "gate-q1" and m.json()["status"] == "error"]
        assert errors == ["unknown_issuer", "unsigned", "bad_signature"]
        assert q1.show("A-attacked", passes[CONTACT_A]) == ("denied", "denied")

        # Until the end date, then in.
        for gate in gates.values():
            gate.clock.advance(14 * DAY_S - 600)
        assert q1.show("A-last-minutes", passes[CONTACT_A]) == ("denied", "denied")
        for gate in gates.values():
            gate.clock.advance(600)
        assert q1.show("A-after", passes[CONTACT_A]) == ("granted", "ok")
        assert q1.show("B-after", passes[NAMED_B]) == ("granted", "ok")
        assert q1.show("case-after", passes[CASE_ID]) == ("granted", "ok")
        assert q2.show("B-after", passes[NAMED_B]) == ("granted", "ok")
        assert q1.show("EMP-13", valid_pass(issuer, "EMP-13", days=30, start_offset_s=14 * DAY_S)) == \
            ("denied", "denied"), "the manager's own entry has no end"

        # The next publish after the end leaves the ended entries out.
        for gate in gates.values():
            gate.clock.advance(DAY_S)
        later = publish_from_backoffice(site, "v-q1", ["EMP-13"], now_s + 15 * DAY_S + 60)
        assert later["quarantined"] == 0 and [g[1]["data"]["count"] for g in later["gates"]] == [1]

        # Audited: the trace and the quarantine in the append-only trace audit (no raw id), and each
        # venue's publication with the gates' answers in the back office audit log.
        history = open_store(site.database_url_for_tests)
        try:
            trail = audit_records(history)
        finally:
            history.close()
        assert [r.action for r in trail] == ["trace", "quarantine"]
        record = trail[1]
        assert (record.operator, record.reason) == ("bs-lan", "F0 2026-117")
        assert record.result["entries"] == {"v-q1": 4, "v-q2": 3} and record.result["contacts"] == 2
        assert CASE_ID not in json.dumps([r.searched for r in trail] + [r.result for r in trail])
        logged = site.django(
            "from backoffice.people.models import AuditEntry\n"
            "for e in AuditEntry.objects.filter(action='quarantine').order_by('venue_id'):\n"
            "    print(e.venue_id, '|', e.detail, '|', e.answer)\n").stdout.splitlines()
        assert [line.split(" | ")[0] for line in logged] == ["v-q1", "v-q2"]
        assert "4 quarantine entries" in logged[0] and "1 of 1 gate(s) took it" in logged[0]
        stored = site.django(
            "from backoffice.gates.models import QuarantineEntry\n"
            "print(sorted({(q.venue.venue_id, q.role, q.reason, q.operator) for q in QuarantineEntry.objects.all()}))\n")
        assert stored.stdout.strip() == str(sorted({("v-q1", "case", "F0 2026-117", "bs-lan"),
                                                    ("v-q1", "contact", "F0 2026-117", "bs-lan"),
                                                    ("v-q2", "case", "F0 2026-117", "bs-lan"),
                                                    ("v-q2", "contact", "F0 2026-117", "bs-lan")}))
    finally:
        for gate in gates.values():
            gate.close()
        responses.close()
        retained.close()
        for venue_id in SECRETS:
            publish_raw(shared_broker, venue_list_topic(topic_prefix, venue_id, "deny"), b"", retain=True)


def test_a_quarantine_needs_the_back_office_config_a_reason_and_sane_days(tmp_path):
    history = tmp_path / "h.sqlite"
    open_store(str(history)).close()
    config = tmp_path / "bo.toml"
    config.write_text(f'[database]\nurl = "{history}"\n[site]\nbase_url = "http://127.0.0.1:9"\n')
    common = ["history", "trace", "--subject", "s", "--since", "2026-07-01", "--until", "2026-07-02"]
    for extra, message in [
        (["--db", str(history), "--quarantine-days", "14", "--reason", "F0"], "needs the back office's --config"),
        (["--config", str(config), "--quarantine-days", "61", "--reason", "F0"], "must be 1 to 60"),
        (["--config", str(config), "--quarantine-days", "14", "--reason", "  "], "needs --reason"),
    ]:
        done = qrgate(*common, *extra)
        assert (done.returncode, message in done.stderr) == (78, True), done.stderr
    store = open_store(str(history))
    try:
        assert audit_records(store) == [], "refused before any trace was run or audited"
    finally:
        store.close()

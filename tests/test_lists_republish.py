"""The quarantine loop's leftovers (issue 14): `qrgate backoffice publish-lists` publishes the
venues' lists again so ended quarantines drop out and retained lists never expire, only when
due with ``--if-older-than-h`` (time driven through ``now_s``, no sleeps), and deletes the
quarantine entries ended more than ``[privacy] quarantine_keep_days`` ago while the audit rows
stay; the lists page shows the manager how many people are quarantined at the venue and until
when, never who (Chromium, Vietnamese and English)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from firmware.core.credentials.trust import TrustStore
from firmware.core.list_message import decode_message, venue_list_topic
from provisioning import keys
from provisioning.history.store import open_store
from provisioning.history.trace_store import append_audit, audit_records
from tests.backoffice_support import REPO, BackofficeSite, qrgate
from tests.daemon_support import trust_new_key
from tests.history_support import pg_server_url, pg_url  # noqa: F401 - fixtures
from tests.mqtt_support import Collector, publish_raw
from tests.test_quarantine import CONTACT_A, NAMED_B, SECRETS, Gate, backoffice_data, subject

DAY_S = 86400
WAIT_S = 30.0
KEEP_DAYS = 30


def setup_lists(site: BackofficeSite, t0: float) -> None:
    """v-q1: a manager's deny list published 10 days ago, two contacts quarantined (one ends on day
    2, one on day 10); v-q2: an allow list published 10 days ago, no deny list yet, two quarantine
    entries that ended 40 and 27 days ago, with their audit rows; v-q3: no gate, no list."""
    site.django(
        "from datetime import UTC, datetime\n"
        "from backoffice.gates.models import QuarantineEntry, VenueList\n"
        "from backoffice.venues.models import Venue\n"
        "from backoffice.venues.services import audit\n"
        f"t0 = {t0!r}\n"
        "old = datetime.fromtimestamp(t0 - 10 * 86400, tz=UTC)\n"
        "q1, q2 = Venue.objects.get(venue_id='v-q1'), Venue.objects.get(venue_id='v-q2')\n"
        "Venue.objects.create(venue_id='v-q3', name='Chợ v-q3', full_address='Hà Nội', registrant=q1.registrant,\n"
        "                     registrant_name='A', record={})\n"
        "VenueList.objects.create(venue=q1, kind='deny', ids=['EMP-13'], version=5, published=old)\n"
        "VenueList.objects.create(venue=q2, kind='allow', ids=['EMP-2'], version=3, published=old)\n"
        f"for venue, entry, until in [(q1, {subject(CONTACT_A, 'v-q1')!r}, t0 + 2 * 86400),\n"
        f"                            (q1, {subject(NAMED_B, 'v-q1')!r}, t0 + 10 * 86400),\n"
        f"                            (q2, 'ended-40-days-ago', t0 - 40 * 86400),\n"
        f"                            (q2, 'ended-27-days-ago', t0 - 27 * 86400)]:\n"
        "    QuarantineEntry.objects.create(venue=venue, entry=entry, role='contact', until_s=int(until),\n"
        "                                   reason='F0 2026-117', operator='bs-lan')\n"
        "audit(None, 'quarantine', 'v-q2', detail='2 quarantine entries', answer='published')\n")
    history = open_store(site.database_url_for_tests)
    try:
        append_audit(history, at_ms=int((t0 - 41 * DAY_S) * 1000), operator="bs-lan", action="quarantine",
                     reason="F0 2026-117", searched={"by": "subject"}, result={"entries": {"v-q2": 2}})
    finally:
        history.close()


def republish(site: BackofficeSite, now_s: float, older_than_h: float | None, wait_budget_s: float = 300.0) -> dict:
    """One run at now_s (the clock the command would read), as the command makes it."""
    done = site.django(
        "import json\n"
        "from backoffice.gates.republish import republish_lists\n"
        f"out = republish_lists(now_s={now_s!r}, database_url={site.database_url_for_tests!r}, keep_days={KEEP_DAYS},\n"
        f"                      older_than_h={older_than_h!r}, wait_budget_s={wait_budget_s!r})\n"
        "print(json.dumps({'deleted': out.deleted, 'ok': out.ok, 'lines': out.lines(), 'lists': [\n"
        "    {'list': f'{o.venue_id} {o.kind}', 'sent': o.sent, 'why': o.why, 'version': o.version,\n"
        "     'answer': o.answer, 'awaited': o.awaited, 'gates': [g.text for g in o.gates]} for o in out.lists]}))\n")
    return json.loads(done.stdout.strip().splitlines()[-1])


def retained_list(broker, prefix: str, venue_id: str, kind: str, trust: TrustStore, now_s: float):
    """The list retained on the venue's topic, read by a new subscriber and verified as a gate does."""
    fresh = Collector(broker.host, broker.port, venue_list_topic(prefix, venue_id, kind))
    try:
        assert fresh.wait_until(lambda ms: len(ms) >= 1, WAIT_S), f"nothing retained for {venue_id} {kind}"
        message = fresh.messages[0]
    finally:
        fresh.close()
    assert message.retain
    return decode_message(message.payload, trust, topic_kind=kind, device_id=f"gate-{venue_id[2:]}", now_s=now_s,
                          venue_id=venue_id, venue_topic=True, prefix=prefix)


@pytest.mark.broker
@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_publish_lists_drops_ended_quarantines_keeps_lists_fresh_and_deletes_old_entries(tmp_path, shared_broker,
                                                                                           topic_prefix, database,
                                                                                           request):
    (tmp_path / "bo").mkdir()
    site = BackofficeSite(tmp_path / "bo", request.getfixturevalue("pg_url") if database == "postgresql" else None,
                          mqtt={"host": shared_broker.host, "port": shared_broker.port,
                                                 "prefix": topic_prefix},
                          privacy={"quarantine_keep_days": KEEP_DAYS})
    site.init()
    backoffice_data(site)
    t0 = time.time()
    setup_lists(site, t0)
    trust = TrustStore.from_keys([keys.load_public_key(site.folder / "keys" / "command.pub.pem")])
    trust_new_key(tmp_path, "issuer", "issuers")
    command_pub = (site.folder / "keys" / "command.pub.pem").read_bytes()
    lists = Collector(shared_broker.host, shared_broker.port, f"{topic_prefix}/venues/+/lists/+")
    responses = Collector(shared_broker.host, shared_broker.port, f"{topic_prefix}/+/response/lists")
    gates = {v: Gate(tmp_path, shared_broker, topic_prefix, f"gate-{v[2:]}", v, command_pub, tmp_path / "issuers", t0)
             for v in SECRETS}
    a, b = subject(CONTACT_A, "v-q1"), subject(NAMED_B, "v-q1")

    def sent_topics() -> list[str]:
        return [m.topic.split("/venues/")[1] for m in lists.messages]

    def move_gates_to(now_s: float) -> None:
        for gate in gates.values():
            gate.clock.advance(now_s - gate.clock.wall())

    try:
        # The command, on the real clock: every list with a gate or published before goes out again.
        done = qrgate("backoffice", "publish-lists", "--config", str(site.config))
        assert done.returncode == 0, done.stdout + done.stderr
        out = done.stdout.splitlines()
        assert out[0].startswith("deleted 1 quarantine entries that ended before ") and \
            out[0].endswith("(privacy.quarantine_keep_days = 30)"), out
        assert [line.split(":")[0] for line in out[1:] if not line.startswith("  ")] == [
            "v-q1 (Chợ v-q1)", "v-q2 (Chợ v-q2)", "v-q2 (Chợ v-q2)"], "v-q3 has no gate and no list"
        assert "deny list version" in out[1] and "(published 240 h ago, 2 quarantine entries in force)" in out[1]
        assert out[1].endswith(": published; 1 of 1 gate(s) took it") and out[2].endswith(", 3 ids")
        assert out[2].startswith("  gate-q1: deny list version")
        assert "(never published, 0 quarantine entries in force): published; 1 of 1" in out[3], out
        assert "allow list version" in out[5] and "(published 240 h ago)" in out[5]
        assert out[6].startswith("  gate-q2: allow list version") and out[6].endswith(", 1 ids")
        assert lists.wait_until(lambda ms: len(ms) >= 3, WAIT_S)
        assert sent_topics() == ["v-q1/lists/deny", "v-q2/lists/deny", "v-q2/lists/allow"]
        first = retained_list(shared_broker, topic_prefix, "v-q1", "deny", trust, time.time())
        assert sorted(first.ids) == sorted(["emp-13", a, b])  # as the gate reads them: canonical
        assert first.ends == {a: int(t0 + 2 * DAY_S), b: int(t0 + 10 * DAY_S)}, "the manager's own entry has no end"

        # A day later, with --if-older-than-h 48: every list is a day old and nothing ended: none goes out.
        t1 = t0 + DAY_S
        move_gates_to(t1)
        run = republish(site, t1, 48)
        assert [(item["list"], item["sent"]) for item in run["lists"]] == [
            ("v-q1 deny", False), ("v-q2 deny", False), ("v-q2 allow", False)]
        assert all(item["why"].endswith(": fresh") for item in run["lists"]) and run["ok"]
        assert run["lines"][1] == "v-q1 (Chợ v-q1): deny list published 24 h ago: fresh, not published again"

        # Day 3, --if-older-than-h 100: the lists are 72 h old, fresh enough, but contact A's quarantine
        # ended on day 2, so v-q1's list goes out again without it; v-q2's do not.
        t3 = t0 + 3 * DAY_S
        move_gates_to(t3)
        run = republish(site, t3, 100)
        assert [(item["list"], item["sent"]) for item in run["lists"]] == [
            ("v-q1 deny", True), ("v-q2 deny", False), ("v-q2 allow", False)]
        assert run["lists"][0]["why"] == "published 72 h ago; a quarantine ended since"
        assert run["lists"][0]["gates"] == [f"deny list version {run['lists'][0]['version']}, 2 ids"]
        assert lists.wait_until(lambda ms: len(ms) >= 4, WAIT_S)
        assert sent_topics()[3:] == ["v-q1/lists/deny"], "the runs before sent nothing"
        later = retained_list(shared_broker, topic_prefix, "v-q1", "deny", trust, t3)
        assert sorted(later.ids) == sorted(["emp-13", b]) and a not in later.ends
        assert later.ends == {b: int(t0 + 10 * DAY_S)} and later.version == run["lists"][0]["version"]

        # Day 5, --if-older-than-h 100: v-q2's lists are 120 h old and go out; v-q1's (48 h) does not.
        # The entry that ended 27 days before day 0 has now ended 32 days ago: deleted.
        t5 = t0 + 5 * DAY_S
        move_gates_to(t5)
        run = republish(site, t5, 100)
        assert [(item["list"], item["sent"]) for item in run["lists"]] == [
            ("v-q1 deny", False), ("v-q2 deny", True), ("v-q2 allow", True)]
        assert run["lists"][1]["why"] == run["lists"][2]["why"] == "published 120 h ago" and run["ok"]
        assert run["deleted"] == 1
        assert lists.wait_until(lambda ms: len(ms) >= 6, WAIT_S)
        assert sent_topics()[4:] == ["v-q2/lists/deny", "v-q2/lists/allow"]
        allow = retained_list(shared_broker, topic_prefix, "v-q2", "allow", trust, t5)
        assert allow.ids == ["emp-2"] and allow.issued_at_s == int(t5)

        # Day 6, every list, with the wait budget spent from the start (gates off at night): all are
        # still published, none awaited, and the gates take them all the same.
        t6 = t0 + 6 * DAY_S
        move_gates_to(t6)
        answered = len(responses.messages)
        run = republish(site, t6, None, wait_budget_s=0.0)
        assert [(item["list"], item["sent"], item["answer"], item["awaited"], item["gates"])
                for item in run["lists"]] == [(name, True, "published", False, [])
                                              for name in ("v-q1 deny", "v-q2 deny", "v-q2 allow")]
        assert run["lines"].count("  (the gates' answers were not awaited: the wait budget was spent)") == 3
        assert lists.wait_until(lambda ms: len(ms) >= 9, WAIT_S)
        assert sent_topics()[6:] == ["v-q1/lists/deny", "v-q2/lists/deny", "v-q2/lists/allow"]
        assert responses.wait_until(lambda ms: len(ms) >= answered + 3, WAIT_S)
        assert all(m.json()["status"] == "ok" for m in responses.messages[answered:])

        # What is stored: the entries still inside their keeping, every audit row.
        stored = site.django(
            "import json\n"
            "from backoffice.gates.models import QuarantineEntry\n"
            "from backoffice.people.models import AuditEntry\n"
            "print(json.dumps({'entries': sorted(QuarantineEntry.objects.values_list('entry', flat=True)),\n"
            "                  'audit': sorted(f'{e.action} {e.venue_id}' for e in AuditEntry.objects.all())}))\n")
        found = json.loads(stored.stdout.strip().splitlines()[-1])
        assert found["entries"] == sorted([a, b]), "ended 40 and 27 (now 32) days ago: deleted; A ended 3 days ago"
        assert found["audit"] == sorted(
            ["quarantine v-q2", "quarantine_retention ", "quarantine_retention "]
            + ["list_deny_republished v-q1"] * 3 + ["list_deny_republished v-q2"] * 3
            + ["list_allow_republished v-q2"] * 3)
        history = open_store(site.database_url_for_tests)
        try:
            assert [r.action for r in audit_records(history)] == ["quarantine"], "the trace audit keeps its row"
        finally:
            history.close()
    finally:
        for gate in gates.values():
            gate.close()
        lists.close()
        responses.close()
        for venue_id in SECRETS:
            for kind in ("deny", "allow"):
                publish_raw(shared_broker, venue_list_topic(topic_prefix, venue_id, kind), b"", retain=True)


def test_publish_lists_refuses_bad_arguments_before_deleting_and_fails_when_it_cannot_publish(tmp_path):
    from backoffice.config import parse_config
    from firmware.core.errors import ConfigError

    assert parse_config({}, tmp_path, tmp_path).privacy.quarantine_keep_days == 90
    assert parse_config({"privacy": {"quarantine_keep_days": 7}}, tmp_path, tmp_path).privacy.quarantine_keep_days == 7
    for bad in (0, 3651, "90", 1.5, True):
        with pytest.raises(ConfigError, match="privacy.quarantine_keep_days"):
            parse_config({"privacy": {"quarantine_keep_days": bad}}, tmp_path, tmp_path)

    site = BackofficeSite(tmp_path)  # no broker
    site.init()
    backoffice_data(site)
    site.django(
        "import time\n"
        "from backoffice.gates.models import QuarantineEntry\n"
        "from backoffice.venues.models import Venue\n"
        "QuarantineEntry.objects.create(venue=Venue.objects.get(venue_id='v-q1'), entry='e', role='contact',\n"
        "                               until_s=int(time.time()) - 100 * 86400, reason='F0')\n")

    def entries() -> int:
        done = site.django("from backoffice.gates.models import QuarantineEntry\n"
                           "print(QuarantineEntry.objects.count())\n")
        return int(done.stdout.strip())

    for extra, message in [(["--if-older-than-h", "0"], "above 0 and below 168"),
                           (["--if-older-than-h", "168"], "above 0 and below 168"),
                           (["--if-older-than-h", "nan"], "above 0 and below 168"),
                           (["--venue", "v-none"], "--venue 'v-none': no such venue")]:
        done = qrgate("backoffice", "publish-lists", "--config", str(site.config), *extra)
        assert (done.returncode, message in done.stderr) == (78, True), done.stderr
        assert entries() == 1, "refused before anything was deleted"

    done = qrgate("backoffice", "publish-lists", "--config", str(site.config), "--venue", "v-q1")
    assert done.returncode == 1, "no broker: the list could not be published"
    assert done.stdout.splitlines()[1:] == [
        "v-q1 (Chợ v-q1): deny list version %s (never published, 0 quarantine entries in force): "
        "stored; no broker configured" % done.stdout.split("version ")[1].split()[0]]
    assert entries() == 0, "the venue's ended entry past its keeping is deleted all the same"
    again = qrgate("backoffice", "publish-lists", "--config", str(site.config), "--venue", "v-q1",
                   "--if-older-than-h", "20")
    assert "(never published" in again.stdout, "a list the broker never took is still due"


def test_the_timer_and_its_service_verify_and_carry_the_back_offices_hardening(tmp_path):
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.fail("systemd-analyze is missing; install it with `sudo apt-get install -y systemd`")
    service = (REPO / "systemd" / "qrgate-backoffice-lists.service").read_text()
    timer = (REPO / "systemd" / "qrgate-backoffice-lists.timer").read_text()
    exe = Path(sys.executable).with_name("qrgate")
    (tmp_path / "qrgate-backoffice-lists.service").write_text(service.replace("/opt/qrgate/venv/bin/qrgate", str(exe)))
    (tmp_path / "qrgate-backoffice-lists.timer").write_text(timer)
    result = subprocess.run([tool, "verify", str(tmp_path / "qrgate-backoffice-lists.timer"),
                             str(tmp_path / "qrgate-backoffice-lists.service")],
                            capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert result.returncode == 0 and result.stderr.strip() == "", result.stderr
    assert "Type=oneshot" in service and "OnCalendar=*-*-* 03:00:00" in timer and "Persistent=true" in timer
    assert "backoffice publish-lists --config /etc/qrgate/backoffice.toml --if-older-than-h 20" in service
    backoffice = (REPO / "systemd" / "qrgate-backoffice.service").read_text()
    hardening = [line for line in backoffice.splitlines() if line.split("=")[0] in (
        "User", "NoNewPrivileges", "ProtectSystem", "ProtectHome", "PrivateTmp", "PrivateDevices",
        "CapabilityBoundingSet", "RestrictAddressFamilies", "SystemCallArchitectures", "UMask",
        "MemoryDenyWriteExecute", "RestrictNamespaces")]
    assert len(hardening) == 12 and all(line in service.splitlines() for line in hardening)


def test_the_lists_page_shows_the_manager_how_many_are_quarantined_and_until_when(browser, tmp_path):
    from tests.test_backoffice_web import VENUE, register_venue, shot

    site = BackofficeSite(tmp_path)
    site.init()
    site.start()
    context = browser.new_context()
    try:
        page = context.new_page()
        venue_id = register_venue(page, site, VENUE)
        page.goto(f"{site.base}/gates/{venue_id}/lists/")
        assert page.inner_text("#quarantine-in-force").startswith("Không có ai đang cách ly")
        now_s = int(time.time())
        ends = (now_s + 7 * DAY_S, now_s + 14 * DAY_S)
        # Two quarantines at this venue: the first's case (by subject and by id: one person) and two
        # contacts, the second's contact (also a contact of the first: one person, at the later end);
        # an ended entry; another venue's entry.
        site.django(
            "from backoffice.gates.models import QuarantineEntry\n"
            "from backoffice.venues.models import Venue\n"
            f"venue = Venue.objects.get(venue_id={venue_id!r})\n"
            "other = Venue.objects.create(venue_id='v-other', name='Chợ khác', full_address='Hà Nội',\n"
            "                             registrant=venue.registrant, registrant_name='A', record={})\n"
            f"first, second = {ends[0]}, {ends[1]}\n"
            "rows = [(venue, 'aaaa1111aaaa1111aaaa1111aaaa1111', 'case', first, 'F0 1'),\n"
            "        (venue, 'CASE-0117', 'case', first, 'F0 1'),\n"
            "        (venue, 'bbbb2222bbbb2222bbbb2222bbbb2222', 'contact', first, 'F0 1'),\n"
            "        (venue, 'cccc3333cccc3333cccc3333cccc3333', 'contact', first, 'F0 1'),\n"
            "        (venue, 'cccc3333cccc3333cccc3333cccc3333', 'contact', second, 'F0 2'),\n"
            f"        (venue, 'dddd4444dddd4444dddd4444dddd4444', 'contact', {now_s - 60}, 'F0 0'),\n"
            "        (other, 'eeee5555eeee5555eeee5555eeee5555', 'contact', second, 'F0 2')]\n"
            "for v, entry, role, until, reason in rows:\n"
            "    QuarantineEntry.objects.create(venue=v, entry=entry, role=role, until_s=until, reason=reason)\n")
        local = [datetime.fromtimestamp(end, tz=UTC).astimezone(site_zone()).strftime("%Y-%m-%d %H:%M") for end in ends]
        page.goto(f"{site.base}/gates/{venue_id}/lists/")
        headline = page.inner_text("#quarantine-in-force")
        assert headline.startswith(f"3 người đang cách ly, đến {local[1]}"), headline
        assert page.locator("#quarantine-ends li").all_inner_texts() == [f"2 người đến {local[0]}",
                                                                         f"1 người đến {local[1]}"]
        html = page.content()
        for secret in ("aaaa1111", "CASE-0117", "bbbb2222", "cccc3333", "dddd4444", "eeee5555", "F0 1"):
            assert secret not in html, f"{secret} shown to the manager"
        shot(page, "lists-quarantine", site)
        page.goto(f"{site.base}/gates/{venue_id}/lists/?lang=en")
        assert page.inner_text("#quarantine-in-force").startswith(f"3 in quarantine, until {local[1]}")
        assert page.locator("#quarantine-ends li").all_inner_texts() == [f"2 until {local[0]}", f"1 until {local[1]}"]
        assert "Quarantined by the health office" in page.inner_text("#quarantine-in-force")
    finally:
        context.close()
        site.stop()


def site_zone():
    from zoneinfo import ZoneInfo

    return ZoneInfo("Asia/Ho_Chi_Minh")  # the site's default time_zone

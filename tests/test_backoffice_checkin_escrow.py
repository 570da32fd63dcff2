"""Phone check-ins carry the person's contact sealed to the health office's key (issue 14, item 3).

With ``[privacy] escrow_key`` in the back office's TOML, a check-in on the venue's page
(``/v/<venue_id>``, a real gunicorn on SQLite and on PostgreSQL) stores the contact sealed as a
gate seals it: only the private key opens it, only for that event of the device ``web``, and
``qrgate history trace --reveal`` opens it for the case and a contact who overlapped, while the
check-in of a person who did not overlap stays closed. The database holds no phone, name or id
in clear beside the events. Without the key, the same service function stores no sealed contact.
A bad key file is a config problem at start (exit 78), listed with the others.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from backoffice.config import parse_config
from firmware.core.errors import ConfigError
from provisioning import keys
from tests.backoffice_support import REPO, BackofficeSite, WebClient, qrgate, register_by_http, write_toml
from tests.history_support import pg_server_url, pg_url, rfc3339  # noqa: F401 - fixtures
from tests.test_backoffice_people import OTHER, OTHER_E164, PERSON, PERSON_E164, http_person, venue_secret_hex
from tests.test_backoffice_web import VENUE

STRANGER = "0933444555"
STRANGER_E164 = "+84933444555"
CASE_NAME, CONTACT_NAME, STRANGER_NAME = "Nguyễn Đình Hùng", "Trần Thị Lan", "Phạm Văn Tú"


@pytest.fixture
def office(tmp_path):
    """The health office's pair: health-office.pem (private, 0600) and health-office.pub.pem."""
    return keys.new_escrow_keypair(tmp_path / "office" / "health-office.pem")


# --------------------------------------------------------------------------- bad key files

def _low_order_public_pem(path: Path) -> Path:
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    path.write_bytes(X25519PublicKey.from_public_bytes(bytes(32)).public_bytes(
        Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
    return path


def test_a_bad_escrow_key_file_is_a_config_problem_listed_with_the_others(tmp_path, office):
    signing = keys.new_keypair(tmp_path / "issuer.pem")
    (tmp_path / "garbage.pem").write_text("-----BEGIN PUBLIC KEY-----\nnot a key\n-----END PUBLIC KEY-----\n")
    bad_files = {
        "missing.pub.pem": "does not exist",
        str(office.private_path): "this is the PRIVATE key",
        str(signing.public_path): "not an X25519 public key",
        "garbage.pem": "is not a PEM public key",
        str(_low_order_public_pem(tmp_path / "zero.pub.pem")): "low-order X25519 point",
        str(tmp_path): "is a directory",
    }
    for name, message in bad_files.items():
        with pytest.raises(ConfigError) as err:
            parse_config({"privacy": {"escrow_key": name}, "otp": {"max_tries": 0}}, tmp_path, tmp_path / "bo.toml")
        assert len(err.value.problems) == 2, err.value.problems  # listed with the other problem
        [problem] = [p for p in err.value.problems if p.startswith("privacy.escrow_key")]
        assert message in problem, problem
    with pytest.raises(ConfigError) as err:
        parse_config({"privacy": {"escrow_keys": "x"}}, tmp_path, tmp_path)
    assert "did you mean privacy.escrow_key?" in err.value.problems[0]
    good = parse_config({"privacy": {"escrow_key": "office/health-office.pub.pem"}}, tmp_path, tmp_path / "bo.toml")
    assert good.privacy.escrow_key == office.public_path and good.privacy.escrow_public_key is not None
    assert parse_config({}, tmp_path, tmp_path).privacy.escrow_public_key is None


def test_init_and_serve_exit_78_on_a_bad_escrow_key_before_touching_anything(tmp_path, office):
    site = BackofficeSite(tmp_path, privacy={"escrow_key": str(office.private_path)})
    for action in ("init", "serve"):
        done = qrgate("backoffice", action, "--config", str(site.config))
        assert done.returncode == 78, (action, done.stderr)
        assert "privacy.escrow_key" in done.stderr and "PRIVATE key" in done.stderr
        assert "Traceback" not in done.stderr
    assert not (tmp_path / "secret_key").exists() and not (tmp_path / "backoffice.sqlite3").exists()
    done = qrgate("history", "query", "--config", str(site.config))
    assert done.returncode == 78 and "privacy.escrow_key" in done.stderr


# --------------------------------------------------------------------------- check-ins sealed

def _rows(url: str, sql: str) -> list[tuple]:
    from provisioning.history.store import open_store

    store = open_store(url)
    try:
        return [tuple(r) for r in store._fetch(sql)]
    finally:
        store.close()


def _django(config: Path, code: str) -> str:
    """Run code in a child process whose Django is configured from ``config``; returns its stdout."""
    prelude = ("from backoffice.config import load_config\nfrom backoffice.site import configure\n"
               f"configure(load_config({str(config)!r}))\n")
    done = subprocess.run([sys.executable, "-c", prelude + code], capture_output=True, text=True, timeout=120,
                          cwd=REPO)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _check_in_through_the_service(config: Path, phone_e164: str, venue_id: str, ago_s: float) -> str:
    """What the page's "Check in" calls (``services.check_in``), ``ago_s`` seconds in the past."""
    return _django(config, "import time\nfrom backoffice.personal import services\n"
                   "from backoffice.personal.models import PersonProfile\nfrom backoffice.venues.models import Venue\n"
                   f"profile = PersonProfile.objects.get(user__username={phone_e164!r})\n"
                   f"done = services.check_in(profile, Venue.objects.get(venue_id={venue_id!r}), 'in', "
                   f"time.time() - {ago_s!r})\nassert done.recorded\nprint(done.event_id)\n").strip()


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_a_phone_check_in_is_sealed_to_the_health_office_and_opened_only_by_an_audited_reveal(
        tmp_path, database, request, office, capsys):
    from firmware.adapters.escrow_key import load_escrow_private_key
    from firmware.core.escrow import EscrowError, open_contact
    from firmware.core.events import protect_subject
    from firmware.cli import main
    from provisioning.history.trace_store import audit_records

    url = request.getfixturevalue("pg_url") if database == "postgresql" else None
    (tmp_path / "bo").mkdir()
    site = BackofficeSite(tmp_path / "bo", url, privacy={"escrow_key": str(office.public_path)})
    site.init()
    site.start()
    try:
        manager = WebClient(site.base)
        venue_id = register_by_http(site, manager, VENUE)
        # Three people on their phones; the stranger's check-in at the venue was three hours ago
        # (through the service the page calls, which takes the time), long before the case came.
        case = http_person(site, PERSON, PERSON_E164, CASE_NAME)
        contact = http_person(site, OTHER, OTHER_E164, CONTACT_NAME)
        http_person(site, STRANGER, STRANGER_E164, STRANGER_NAME)
        stranger_event = _check_in_through_the_service(site.config, STRANGER_E164, venue_id, 3 * 3600)
        for person in (case, contact):
            status, _, _ = person.post(f"/v/{venue_id}/checkin/", {"direction": "in"}, token_from=f"/v/{venue_id}")
            assert status == 302
            assert 'id="checkin-ok"' in person.get(f"/v/{venue_id}")[1]
    finally:
        site.stop()

    db = site.database_url_for_tests
    subs = {phone: _django(site.config, "from backoffice.personal.models import PersonProfile\n"
                           f"print(PersonProfile.objects.get(user__username={phone!r}).subject)\n").strip()
            for phone in (PERSON_E164, OTHER_E164, STRANGER_E164)}
    secret = bytes.fromhex(venue_secret_hex(site, venue_id))
    web = {str(r[1]): str(r[0]) for r in _rows(db, "SELECT event_id, subject FROM events WHERE device_id = 'web'")}
    case_event = web[protect_subject(subs[PERSON_E164], "hmac", secret)]
    contact_event = web[protect_subject(subs[OTHER_E164], "hmac", secret)]
    assert web[protect_subject(subs[STRANGER_E164], "hmac", secret)] == stranger_event

    # Every check-in has a sealed contact, and nothing beside the events holds a phone, name or id in clear.
    sealed = dict(_rows(db, "SELECT event_id, contact_sealed FROM event_contacts"))
    assert set(sealed) == {case_event, contact_event, stranger_event}
    clear = [PERSON_E164, PERSON[1:], OTHER_E164, OTHER[1:], STRANGER[1:], CASE_NAME, CONTACT_NAME, STRANGER_NAME,
             *subs.values()]
    stored = json.dumps([_rows(db, "SELECT * FROM event_contacts"), _rows(db, "SELECT * FROM events")],
                        ensure_ascii=False, default=str)
    raw_blobs = b"".join(base64.urlsafe_b64decode(b + "=" * (-len(b) % 4)) for b in sealed.values())
    for text in clear:
        assert text not in stored and text.encode() not in raw_blobs, text

    # Only the private key opens it, and only as the web's event it was sealed for.
    private = load_escrow_private_key(office.private_path)
    opened = open_contact(sealed[case_event], private, "web", case_event)
    assert (opened.name, opened.phone, opened.id) == (CASE_NAME, PERSON_E164, subs[PERSON_E164])
    other = keys.new_escrow_keypair(tmp_path / "other.pem")
    for key, device, event_id in ((load_escrow_private_key(other.private_path), "web", case_event),
                                  (private, "gate-1", case_event), (private, "web", contact_event)):
        with pytest.raises(EscrowError):
            open_contact(sealed[case_event], key, device, event_id)

    # The health office traces the case by its pass id across the back office's venue secrets.
    now_ms = int(time.time() * 1000)
    out = tmp_path / "reveal.json"
    assert main(["history", "trace", "--config", str(site.config), "--person-id", subs[PERSON_E164],
                 "--since", rfc3339(now_ms - 2 * 3600_000), "--until", rfc3339(now_ms + 3600_000), "--reveal",
                 "--escrow-key", str(office.private_path), "--reason", "F0 2026-117", "--operator", "cdc",
                 "--format", "json", "--out", str(out)]) == 0, capsys.readouterr().err
    report = json.loads(out.read_text(encoding="utf-8"))
    assert [c["subject"] for c in report["contacts"]] == [protect_subject(subs[OTHER_E164], "hmac", secret)]
    revealed = {r["event_id"]: r for r in report["revealed"]}
    assert set(revealed) == {case_event, contact_event}
    assert [(revealed[e]["role"], revealed[e]["name"], revealed[e]["phone"], revealed[e]["id"], revealed[e]["problem"])
            for e in (case_event, contact_event)] == [
        ("case", CASE_NAME, PERSON_E164, subs[PERSON_E164], None),
        ("contact", CONTACT_NAME, OTHER_E164, subs[OTHER_E164], None)]
    assert STRANGER_NAME not in out.read_text(encoding="utf-8")
    from provisioning.history.store import open_store

    store = open_store(db)
    try:
        record = audit_records(store)[-1]
    finally:
        store.close()
    assert (record.action, record.reason) == ("reveal", "F0 2026-117")
    assert record.result["opened"] == sorted([case_event, contact_event])

    # Without [privacy] escrow_key, the same check-in stores no sealed contact.
    plain = write_toml(site.folder / "no-escrow.toml", {
        "site": {"base_url": site.base, "allowed_hosts": ["127.0.0.1"]}, "database": {"url": db},
        "sms": {"backend": "console", "console_file": str(site.sms_file)}})
    unsealed = _check_in_through_the_service(plain, OTHER_E164, venue_id, 3 * 3600)
    assert [r[0] for r in _rows(db, f"SELECT event_id FROM events WHERE event_id = '{unsealed}'")] == [unsealed]
    assert _rows(db, f"SELECT event_id FROM event_contacts WHERE event_id = '{unsealed}'") == []

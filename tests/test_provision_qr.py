"""The signed provisioning QR: code checks, the device-side intake, and the end-to-end path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from device.synthetic import write_blank_png, write_code_png
from firmware.adapters.fakes import MemorySink
from firmware.adapters.state_store import StateStore
from firmware.alarms import Alarms
from firmware.cli import main
from firmware.core import prov_code
from firmware.core.credentials.envelope import unwrap, wrap
from firmware.core.credentials.trust import TrustStore
from firmware.core.events import EventFactory
from firmware.core.identity import GateIdentity, IdentityCell
from firmware.core.model import DecodedCode, Moment
from firmware.features.provisioning import PROVISIONING_KEY, GateProvisioning, ProvisioningSettings
from provisioning import keys
from provisioning.prov_qr import make_code
from tests.daemon_support import qrgate, run_gate, trust_new_key, valid_pass, write_config

NOW = 1_800_000_000.0
VENUE = {"schema": "qrgate.venue/1", "venue_id": "v-0123456789ab", "name": "Bến xe Giáp Bát"}


@pytest.fixture(scope="module")
def authority():
    return ed25519.Ed25519PrivateKey.generate()


def code_for(authority, **kw) -> str:
    options = dict(direction="in", broker="mqtt.lan:1883", now_s=NOW, valid_minutes=60)
    options.update(kw)
    return make_code(authority, VENUE, **options).text


def trust(*private) -> TrustStore:
    return TrustStore.from_keys([k.public_key() for k in private])


# --------------------------------------------------------------------------- the code


def test_valid_code_carries_venue_direction_broker_and_issuer_keys(authority):
    issuer = ed25519.Ed25519PrivateKey.generate()
    text = code_for(authority, issuer_keys=[issuer.public_key()], device_id="gate-7")
    assert text.startswith("QGP1:")
    code = prov_code.check(text.encode(), trust(authority), NOW + 10)
    assert isinstance(code, prov_code.ProvisioningCode)
    assert (code.venue_id, code.venue_name, code.direction, code.broker, code.device_id) == (
        "v-0123456789ab", "Bến xe Giáp Bát", "in", "mqtt.lan:1883", "gate-7")
    assert len(code.nonce) == 16 and code.expires_s - code.issued_at_s == 3600
    assert TrustStore.from_keys([issuer.public_key()]).kids() == \
        TrustStore.from_keys([__import__("cryptography.hazmat.primitives.serialization",
                                         fromlist=["x"]).load_der_public_key(code.issuer_keys_der[0])]).kids()


@pytest.mark.parametrize("now_offset_s,wall_trusted,reason", [
    (3600, True, "expired"),
    (7200, True, "expired"),
    (-3600, True, "not_yet_valid"),
    (10, False, "clock_unsynced"),
])
def test_expired_future_or_unsynced_codes_are_refused(authority, now_offset_s, wall_trusted, reason):
    result = prov_code.check(code_for(authority), trust(authority), NOW + now_offset_s, wall_trusted)
    assert isinstance(result, prov_code.ProvisioningRefusal) and result.reason == reason


def test_forged_and_foreign_codes_are_refused(authority):
    text = code_for(authority)
    message = bytearray(unwrap("QGP1:", text))
    message[-1] ^= 0x01
    forged = wrap("QGP1:", bytes(message))
    other = ed25519.Ed25519PrivateKey.generate()
    assert prov_code.check(forged, trust(authority), NOW).reason == "bad_signature"
    assert prov_code.check(code_for(other), trust(authority), NOW).reason == "unknown_issuer"
    assert prov_code.check("QGP1:not base45 at all!", trust(authority), NOW).reason == "malformed"
    assert prov_code.check(code_for(authority), TrustStore(), NOW).reason == "unknown_issuer"


def test_a_code_valid_longer_than_24_hours_cannot_be_made_or_accepted(authority):
    from firmware.core.errors import ConfigError

    with pytest.raises(ConfigError, match="valid-minutes"):
        code_for(authority, valid_minutes=24 * 60 + 1)
    claims = prov_code.build_claims(venue_id=VENUE["venue_id"], venue_name="x", direction="in", broker="",
                                    nonce=b"n" * 16, iat_s=int(NOW), exp_s=int(NOW) + 3600)
    claims["exp"] = int(NOW) + 25 * 3600  # signed by the authority, but too long
    result = prov_code.check(prov_code.encode(claims, authority), trust(authority), NOW)
    assert result.reason == "malformed"


# --------------------------------------------------------------------------- the intake


class _Feedback:
    """The outputs' provisioning feedback, recorded (the only Outputs call provisioning makes)."""

    def __init__(self) -> None:
        self.confirmed: list[bool] = []

    def confirm(self, accepted: bool) -> None:
        self.confirmed.append(accepted)


class _Restarts:
    def __init__(self) -> None:
        self.requested: list[str] = []

    def request_restart(self, why: str) -> None:
        self.requested.append(why)


class Gate:
    """The provisioning feature wired to a real state store under tmp_path and an in-memory sink."""

    def __init__(self, state_path: Path, authority_store: TrustStore, *, device_id: str = "gate-7",
                 allow_reprovision: bool = False) -> None:
        self.store = StateStore(state_path)
        self.sink = MemorySink()
        self.identity = IdentityCell(GateIdentity())
        self.factory = EventFactory(device_id=device_id, identity=self.identity, boot_id="b1")
        self.applied: list[dict] = []
        self.outputs = _Feedback()
        self.restarts = _Restarts()
        self.intake = GateProvisioning(
            identity=self.identity, config_trust=TrustStore(), authority=authority_store, store=self.store,
            record=None, recorder=self.sink, events=self.factory, outputs=self.outputs, alarms=Alarms(),
            restart=self.restarts, on_change=lambda: self.applied.append(self.intake.record),
            settings=ProvisioningSettings(device_id=device_id, allow_reprovision=allow_reprovision,
                                          repeat_window_s=5.0))

    @property
    def feedback(self) -> list[bool]:
        return self.outputs.confirmed

    def show(self, text: str, mono_s: float, wall_s: float = NOW + 5, trusted: bool = True) -> bool:
        return self.intake.intercept(DecodedCode(text.encode(), text), Moment(mono_s, wall_s, trusted))

    def outcomes(self) -> list[tuple[str, str, str, str]]:
        return [(e.decision, e.reason, e.credential, e.venue_id) for e in self.sink.events]


def test_unprovisioned_gate_applies_a_valid_code_atomically_and_records_it(tmp_path, authority):
    gate = Gate(tmp_path / "state.json", trust(authority))
    text = code_for(authority, direction="out")
    assert gate.show(text, 100.0)
    record = StateStore(tmp_path / "state.json").get(PROVISIONING_KEY)
    assert record["venue_id"] == "v-0123456789ab" and record["direction"] == "out"
    assert record["venue_name"] == "Bến xe Giáp Bát"
    assert gate.applied == [record]
    assert gate.feedback == [True]
    assert gate.outcomes() == [("provisioned", "ok", "provisioning", "v-0123456789ab")]
    assert gate.sink.events[0].code is None and gate.sink.events[0].subject is None


def test_other_payloads_pass_through_untouched(tmp_path, authority):
    gate = Gate(tmp_path / "state.json", trust(authority))
    assert not gate.show("QG1:6BFOXN", 100.0)
    assert not gate.show("https://example.com", 100.0)
    assert gate.sink.events == [] and gate.feedback == []


def test_code_held_in_view_is_handled_once(tmp_path, authority):
    gate = Gate(tmp_path / "state.json", trust(authority))
    text = code_for(authority)
    for i in range(10):
        assert gate.show(text, 100.0 + i * 0.1)
    assert gate.outcomes() == [("provisioned", "ok", "provisioning", "v-0123456789ab")]


def test_used_nonce_is_refused_as_replayed_even_after_a_restart(tmp_path, authority):
    text = code_for(authority)
    first = Gate(tmp_path / "state.json", trust(authority), allow_reprovision=True)
    assert first.show(text, 100.0)
    first.store.close()
    again = Gate(tmp_path / "state.json", trust(authority), allow_reprovision=True)
    assert again.show(text, 5.0)
    assert again.outcomes() == [("denied", "replayed", "provisioning", "")]
    assert again.applied == [] and again.feedback == [False]
    fresh = code_for(authority, direction="out")
    assert again.show(fresh, 6.0)
    assert again.outcomes()[-1] == ("provisioned", "ok", "provisioning", "v-0123456789ab")


def test_provisioned_gate_ignores_codes_unless_reprovisioning_is_allowed(tmp_path, authority):
    gate = Gate(tmp_path / "state.json", trust(authority))
    assert gate.show(code_for(authority), 100.0)
    before = (tmp_path / "state.json").read_bytes()
    assert gate.show(code_for(authority, direction="out"), 110.0)
    assert gate.outcomes()[-1] == ("denied", "already_provisioned", "provisioning", "v-0123456789ab")
    assert (tmp_path / "state.json").read_bytes() == before


@pytest.mark.parametrize("case,reason", [
    ("expired", "expired"), ("forged", "bad_signature"), ("foreign", "unknown_issuer"),
    ("wrong_device", "wrong_device"), ("unsynced", "clock_unsynced"),
])
def test_invalid_codes_change_nothing_and_are_recorded_with_their_reason(tmp_path, authority, case, reason):
    gate = Gate(tmp_path / "state.json", trust(authority))
    text, wall_s, trusted = code_for(authority), NOW + 5, True
    if case == "expired":
        wall_s = NOW + 3600
    elif case == "forged":
        message = bytearray(unwrap("QGP1:", text))
        message[-3] ^= 0x10
        text = wrap("QGP1:", bytes(message))
    elif case == "foreign":
        text = code_for(ed25519.Ed25519PrivateKey.generate())
    elif case == "wrong_device":
        text = code_for(authority, device_id="gate-9")
    elif case == "unsynced":
        trusted = False
    assert gate.show(text, 100.0, wall_s, trusted)
    assert gate.outcomes() == [("denied", reason, "provisioning", "")]
    assert gate.applied == [] and gate.feedback == [False]
    assert gate.store.get(PROVISIONING_KEY) is None
    assert not (tmp_path / "state.json").exists() or gate.store.get(PROVISIONING_KEY) is None


def test_truncated_state_file_leaves_the_gate_unprovisioned_with_an_alarm(tmp_path, authority):
    gate = Gate(tmp_path / "state.json", trust(authority))
    text = code_for(authority)
    assert gate.show(text, 100.0)
    gate.store.close()
    raw = (tmp_path / "state.json").read_bytes()
    (tmp_path / "state.json").write_bytes(raw[: len(raw) // 2])
    # the copy keeps the nonce (an older commit) but not the record
    old = json.loads(raw)
    old["kv"] = {}
    (tmp_path / "state.json.bak").write_text(json.dumps(old))
    again = Gate(tmp_path / "state.json", trust(authority))
    assert again.store.get(PROVISIONING_KEY) is None
    assert again.store.alarm() is not None
    assert again.show(text, 5.0), "the used nonce survived through the last good copy"
    assert again.outcomes() == [("denied", "replayed", "provisioning", "")]
    assert again.show(code_for(authority), 6.0)
    assert again.outcomes()[-1][:2] == ("provisioned", "ok")
    assert again.store.alarm() is None, "provisioning again clears the alarm"


# --------------------------------------------------------------------------- command and end to end


def gate_config(tmp_path: Path, **overrides) -> Path:
    """The unprovisioned gate's config (no venue yet); overrides replace whole sections."""
    sections = {
        "device": {"id": "e2e-gate"},
        "camera": {"fps": 20, "frames_per_image": 20},
        "gpio": {"relay_pulse_ms": 100},
        "keys": {"authority_dir": tmp_path / "authority"},
        "privacy": {"subject": "raw"},
    }
    return write_config(tmp_path, **{**sections, **overrides})


@pytest.fixture
def unprovisioned_gate(tmp_path: Path):
    """An unprovisioned gate config with a trusted authority key and no issuer keys at all."""
    trust_new_key(tmp_path, "authority", "authority", as_name="a.pem")
    issuer = keys.new_keypair(tmp_path / "issuer.pem")
    venue = tmp_path / "venue.json"
    venue.write_text(json.dumps(VENUE, ensure_ascii=False), encoding="utf-8")
    images = tmp_path / "images"
    images.mkdir()
    return tmp_path, gate_config(tmp_path), images, venue, issuer


def test_provision_qr_then_run_provisions_the_gate_which_then_grants_a_pass(unprovisioned_gate):
    tmp_path, config, images, venue, issuer = unprovisioned_gate
    pass_text = valid_pass(keys.load_private_key(issuer.private_path), "EMP-1")
    made = qrgate("provision", "qr", "--authority-key", str(tmp_path / "authority.pem"), "--venue", str(venue),
                  "--direction", "out", "--trust-issuer", str(issuer.public_path), "--valid-minutes", "10",
                  "--png", str(images / "00-provisioning.png"))
    assert made.returncode == 0, made.stderr
    # two blank seconds: the 1.6 s confirmation pattern ends before the pass shows up
    write_blank_png(images / "01-blank.png")
    write_blank_png(images / "02-blank.png")
    write_code_png(images / "03-pass.png", pass_text)

    result, events = run_gate(config, "--pin-log", str(tmp_path / "pins.json"))

    assert result.returncode == 0, result.stderr
    assert [(e["decision"], e["reason"], e["credential"], e["venue_id"], e["direction"]) for e in events] == [
        ("provisioned", "ok", "provisioning", "v-0123456789ab", "out"),
        ("granted", "ok", "qg1", "v-0123456789ab", "out"),
    ]
    assert events[1]["subject"] == "EMP-1"
    pins = json.loads((tmp_path / "pins.json").read_text())
    confirm = [True, False] * 2   # provisioned: two long pulses on green and buzzer, relay untouched
    grant = [True, False]         # then the pass: one green pulse and one beep
    assert pins["GPIO27"] == [False] + confirm + grant
    assert pins["GPIO23"] == [False] + confirm + grant
    assert pins["GPIO22"] == [False]
    assert pins["GPIO17"] == [False, True, False, True], "active-low relay: one pulse, for the pass only"

    # Restart: the record is persisted, the pass still opens, the used code is ignored.
    (images / "00-provisioning.png").rename(images / "04-provisioning-again.png")
    result, events = run_gate(config)
    assert result.returncode == 0, result.stderr
    assert [(e["decision"], e["reason"], e["venue_id"]) for e in events] == [
        ("granted", "ok", "v-0123456789ab"),
        ("denied", "already_provisioned", "v-0123456789ab"),
    ]


def test_unprovisioned_gate_denies_passes_as_not_provisioned(unprovisioned_gate):
    tmp_path, config, images, venue, issuer = unprovisioned_gate
    pass_text = valid_pass(keys.load_private_key(issuer.private_path), "EMP-1")
    write_code_png(images / "01-pass.png", pass_text)
    result, events = run_gate(config)
    assert result.returncode == 0, result.stderr
    assert [(e["decision"], e["reason"]) for e in events] == [("denied", "not_provisioned")]


def test_provisioning_with_a_new_broker_exits_75_for_a_clean_restart_then_runs_with_it(unprovisioned_gate):
    tmp_path, config, images, venue, issuer = unprovisioned_gate
    made = qrgate("provision", "qr", "--authority-key", str(tmp_path / "authority.pem"), "--venue", str(venue),
                  "--direction", "in", "--broker", "127.0.0.1:9", "--png", str(images / "00-provisioning.png"))
    assert made.returncode == 0, made.stderr
    result, events = run_gate(config)
    assert result.returncode == 75, result.stderr
    assert [(e["decision"], e["venue_id"]) for e in events] == [("provisioned", "v-0123456789ab")]
    (images / "00-provisioning.png").unlink()
    write_blank_png(images / "01-blank.png")
    # nothing listens on port 9: the gate runs offline, which is never fatal
    result, events = run_gate(config, "--drain-timeout-s", "0.5")
    assert result.returncode == 0, "the next start already has the broker: no restart loop"
    assert events == []


def test_provision_qr_command_refuses_bad_input(tmp_path, capsys):
    keys.new_keypair(tmp_path / "authority.pem")
    venue = tmp_path / "venue.json"
    venue.write_text(json.dumps(VENUE), encoding="utf-8")
    rc = main(["provision", "qr", "--authority-key", str(tmp_path / "authority.pem"), "--venue", str(venue),
               "--direction", "in", "--broker", "no-port", "--valid-minutes", "2000",
               "--png", str(tmp_path / "p.png")])
    assert rc == 78
    err = capsys.readouterr().err
    assert "--valid-minutes 2000 must be 1 to 1440" in err
    rc = main(["provision", "qr", "--authority-key", str(tmp_path / "authority.pem"), "--venue", str(venue),
               "--direction", "in", "--broker", "no-port", "--png", str(tmp_path / "p.png")])
    assert rc == 78
    assert "--broker 'no-port' is not host:port" in capsys.readouterr().err
    assert not (tmp_path / "p.png").exists()


def test_truncated_state_file_at_start_fails_closed_without_crashing(unprovisioned_gate):
    tmp_path, config, images, venue, issuer = unprovisioned_gate
    made = qrgate("provision", "qr", "--authority-key", str(tmp_path / "authority.pem"), "--venue", str(venue),
                  "--direction", "in", "--trust-issuer", str(issuer.public_path),
                  "--png", str(images / "00-provisioning.png"))
    assert made.returncode == 0, made.stderr
    result, events = run_gate(config)
    assert [e["decision"] for e in events] == ["provisioned"]
    state = tmp_path / "state" / "state.json"
    state.write_bytes(state.read_bytes()[:40])
    (images / "00-provisioning.png").rename(images / "02-provisioning-again.png")
    pass_text = valid_pass(keys.load_private_key(issuer.private_path), "EMP-1")
    write_code_png(images / "01-pass.png", pass_text)

    result, events = run_gate(config)

    assert result.returncode == 0, result.stderr
    assert "was corrupt" in result.stderr and "recovered 1 record(s)" in result.stderr
    assert [(e["decision"], e["reason"]) for e in events] == [
        ("granted", "ok"),  # the record came back from the whole copy: still provisioned
        ("denied", "already_provisioned"),
    ]
    assert list((tmp_path / "state").glob("state.json.corrupt-*"))

    # both files damaged: fail closed, and the used code still cannot come back
    state.write_bytes(state.read_bytes()[:40])
    bak = tmp_path / "state" / "state.json.bak"
    old = json.loads(bak.read_text())
    old["kv"] = {}
    bak.write_text(json.dumps(old))
    result, events = run_gate(config)
    assert [(e["decision"], e["reason"]) for e in events] == [
        ("denied", "not_provisioned"),
        ("denied", "replayed"),  # its nonce survived in the copy
    ]


def _held_low_pin_class():
    """A MockPin held LOW by a pressed button: setting the internal pull-up does not raise it."""
    from gpiozero.pins.mock import MockPin

    class HeldLow(MockPin):
        def _set_pull(self, value):
            self._pull = value

    return HeldLow


def run_app(config: Path, factory) -> list:
    """Build a GateApp in this process on the given pin factory and run it until the images end."""
    import threading

    from firmware.adapters.config_file import load_config
    from firmware.app.builder import GateApp

    events: list = []
    app = GateApp(load_config(config), pin_factory=factory, on_event=[events.append])
    try:
        app.build()
        app.run(threading.Event())
        assert app.service.input_ended
    finally:
        app.close()
    return [(e.decision, e.reason, e.direction) for e in events]


def test_reprovision_pin_held_at_boot_lets_a_provisioned_gate_take_a_new_code(unprovisioned_gate):
    from gpiozero.pins.mock import MockFactory

    from device.reprovision_pin import held_at_boot

    tmp_path, config, images, venue, issuer = unprovisioned_gate
    gate_config(tmp_path, gpio={"relay_pulse_ms": 100, "reprovision_pin": 26})
    first = qrgate("provision", "qr", "--authority-key", str(tmp_path / "authority.pem"), "--venue", str(venue),
                   "--direction", "in", "--png", str(images / "00-first.png"))
    assert first.returncode == 0, first.stderr
    assert run_app(config, MockFactory()) == [("provisioned", "ok", "in")]

    (images / "00-first.png").unlink()
    second = qrgate("provision", "qr", "--authority-key", str(tmp_path / "authority.pem"), "--venue", str(venue),
                    "--direction", "out", "--png", str(images / "01-second.png"))
    assert second.returncode == 0, second.stderr
    assert run_app(config, MockFactory()) == [("denied", "already_provisioned", "in")]

    held = MockFactory()
    held.pin(26, pin_class=_held_low_pin_class())
    assert held_at_boot(held, 26)
    assert run_app(config, held) == [("provisioned", "ok", "out")]


def test_a_reprovisioning_that_drops_an_issuer_refuses_its_passes_in_the_same_run(unprovisioned_gate):
    """Issue 9: the trusted issuers after a new record are the config's plus that record's, at once,
    also when the gate started with an earlier record (its issuers are not the config's)."""
    from gpiozero.pins.mock import MockFactory

    tmp_path, config, images, venue, kept = unprovisioned_gate
    gate_config(tmp_path, provisioning={"allow_reprovision": True})
    dropped = keys.new_keypair(tmp_path / "dropped-issuer.pem")
    kept_key, dropped_key = keys.load_private_key(kept.private_path), keys.load_private_key(dropped.private_path)
    authority = ["--authority-key", str(tmp_path / "authority.pem"), "--venue", str(venue), "--direction", "in"]
    first = qrgate("provision", "qr", *authority, "--trust-issuer", str(kept.public_path),
                   "--trust-issuer", str(dropped.public_path), "--png", str(images / "00-both-issuers.png"))
    assert first.returncode == 0, first.stderr
    assert run_app(config, MockFactory()) == [("provisioned", "ok", "in")]

    (images / "00-both-issuers.png").unlink()  # the gate starts again with that record
    second = qrgate("provision", "qr", *authority, "--trust-issuer", str(kept.public_path),
                    "--png", str(images / "02-kept-issuer-only.png"))
    assert second.returncode == 0, second.stderr
    write_code_png(images / "01-dropped-issuer-pass.png", valid_pass(dropped_key, "EMP-1"))
    write_blank_png(images / "03-blank.png")
    write_code_png(images / "04-dropped-issuer-pass.png", valid_pass(dropped_key, "EMP-2"))
    write_code_png(images / "05-kept-issuer-pass.png", valid_pass(kept_key, "EMP-3"))

    outcomes = run_app(config, MockFactory())

    assert outcomes == [("granted", "ok", "in"), ("provisioned", "ok", "in"),
                        ("denied", "unknown_issuer", "in"), ("granted", "ok", "in")]

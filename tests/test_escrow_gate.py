"""A real gate with privacy.escrow_key: it replays passes, publishes through a real Mosquitto, and the
history collector stores each event with its sealed contact; the broker and the database hold no
phone or id in clear, and only the health office's private key opens the contacts. Also the
config checks of the key (`qrgate config check`, start-up)."""

from __future__ import annotations

import threading

import pytest
from gpiozero.pins.mock import MockFactory

from device.synthetic import write_code_png
from firmware.adapters.escrow_key import load_escrow_private_key
from firmware.app.builder import GateApp
from firmware.cli import main
from firmware.core.config import parse_config
from firmware.core.errors import ConfigError
from firmware.core.escrow import EscrowError, open_contact
from firmware.core.event_signature import public_key_text
from provisioning import keys
from provisioning.history.query import Filter
from provisioning.history.reveal import sealed_contacts
from provisioning.history.store import open_store
from tests.daemon_support import trust_new_key, valid_pass, write_config
from tests.mqtt_support import Collector
from tests.test_history_collector import RunningCollector, settings

WAIT_S = 20.0
DEVICE = "escrow-gate"  # not one of the test devices RunningCollector registers with fixed keys
PEOPLE = [("079200001234", "TRẦN THỊ BÍCH NGỌC", "0987654321"), ("001099004321", "LÊ VĂN HÙNG", "0912000111")]


def site(tmp_path, broker, prefix: str, escrow_key: str):
    issuer = trust_new_key(tmp_path, "issuer", "issuers")
    private = keys.load_private_key(issuer.private_path)
    images = tmp_path / "images"
    images.mkdir()
    for i, (sub, name, phone) in enumerate(PEOPLE):
        write_code_png(images / f"{i}.png", valid_pass(private, sub, name=name, phone=phone), width=400, height=400,
                       seed=i)
    return parse_config({
        "device": {"id": DEVICE, "venue_id": "v-1", "state_dir": str(tmp_path / "state"),
                   "runtime_dir": str(tmp_path / "run")},
        "camera": {"source": f"dir:{images}", "frames_per_image": 1, "as_fast_as_possible": True},
        "gpio": {"pin_factory": "mock", "relay_pulse_ms": 50},
        "keys": {"issuers_dir": str(tmp_path / "issuers")},
        "privacy": {"escrow_key": escrow_key},
        "mqtt": {"host": broker.host, "port": broker.port, "prefix": prefix, "discovery": False},
    }, str(tmp_path / "qrgate.toml"))


@pytest.mark.broker
def test_sealed_contacts_travel_signed_and_only_the_health_office_opens_them(tmp_path, broker, topic_prefix):
    office = keys.new_escrow_keypair(tmp_path / "health-office.pem")
    stranger = keys.new_escrow_keypair(tmp_path / "someone-else.pem")
    cfg = site(tmp_path, broker, topic_prefix, "health-office.pub.pem")
    db = tmp_path / "history.sqlite"
    store = open_store(str(db))
    collector = RunningCollector(store, settings(broker, topic_prefix))
    on_the_wire = Collector(broker.host, broker.port, f"{topic_prefix}/{DEVICE}/scan")
    app = GateApp(cfg, pin_factory=MockFactory(), environ={}, input_bounce_s=None)
    try:
        app.build()
        store.register_device(DEVICE, public_key_text(app.device_key.public_key()), "test", 0)
        app.run(threading.Event())
        assert app.service.input_ended
        assert app.publisher.wait_drained(WAIT_S), app.sink.stats()
        collector.wait(lambda st: st.stored >= 2, "stored the gate's two events")
        assert collector.collector.stats.quarantined == 0
        assert on_the_wire.wait_until(lambda ms: len(ms) >= 2, WAIT_S)
    finally:
        app.close()
        collector.close()
        on_the_wire.close()
    try:
        events = list(store.rows(Filter(device=DEVICE)))
        assert sorted(e.decision for e in events) == ["granted", "granted"]
        sealed = sealed_contacts(store, [e.event_id for e in events])
        assert set(sealed) == {e.event_id for e in events}
        private = load_escrow_private_key(office.private_path)
        opened = {(c.id, c.name, c.phone) for c in (open_contact(blob, private, device, event_id)
                                                    for event_id, (device, blob) in sealed.items())}
        assert opened == set(PEOPLE)
        other = load_escrow_private_key(stranger.private_path)
        first_id, (device, blob) = next(iter(sealed.items()))
        with pytest.raises(EscrowError):
            open_contact(blob, other, device, first_id)
        second_id = next(i for i in sealed if i != first_id)
        with pytest.raises(EscrowError):  # a blob copied onto the other event does not open
            open_contact(blob, private, device, second_id)
    finally:
        store.close()
    # neither the broker's messages nor the database file hold a full phone or id in clear
    wire = b"".join(m.payload for m in on_the_wire.messages)
    assert wire.count(b'"contact_sealed":"') == 2 and wire.count(b',"sig":"') == 2
    files = b"".join(p.read_bytes() for p in tmp_path.glob("history.sqlite*"))
    for sub, _, phone in PEOPLE:
        for secret in (sub.encode(), phone.encode()):
            assert secret not in wire and secret not in files


def test_config_check_shows_the_escrow_key_and_refuses_a_bad_one(tmp_path, capsys):
    made = keys.new_escrow_keypair(tmp_path / "health-office.pem")
    (tmp_path / "issuers").mkdir()
    (tmp_path / "images").mkdir()
    config = write_config(tmp_path, privacy={"escrow_key": "health-office.pub.pem"})
    assert main(["config", "check", "--config", str(config)]) == 0
    assert made.fingerprint in capsys.readouterr().out
    for bad, message in (("health-office.pem", "this is the PRIVATE key"),
                         ("issuer.pub.pem", "not an X25519 public key"),
                         ("missing.pub.pem", "does not exist")):
        trust_new_key(tmp_path, "issuer", "issuers", force=True)
        config = write_config(tmp_path, privacy={"escrow_key": bad})
        assert main(["config", "check", "--config", str(config)]) == 78
        assert message in capsys.readouterr().err


def test_a_gate_refuses_to_start_with_a_key_that_is_not_an_x25519_public_key(tmp_path):
    keys.new_escrow_keypair(tmp_path / "health-office.pem")
    trust_new_key(tmp_path, "issuer", "issuers")
    (tmp_path / "images").mkdir()
    config = write_config(tmp_path, privacy={"escrow_key": "health-office.pem"})
    from firmware.adapters.config_file import load_config

    app = GateApp(load_config(config), pin_factory=MockFactory(), environ={}, input_bounce_s=None)
    try:
        with pytest.raises(ConfigError, match="privacy.escrow_key .* PRIVATE key"):
            app.build()
    finally:
        app.close()

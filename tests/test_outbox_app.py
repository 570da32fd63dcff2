"""GateApp wiring of the outbox: the fail-closed sink, and an outbox without a broker."""

from __future__ import annotations

import threading

from gpiozero.pins.mock import MockFactory

from firmware.adapters.outbox import UnavailableSink, read_events
from firmware.app.builder import GateApp
from firmware.core.config import parse_config
from firmware.core.model import Reason, ScanEvent
from provisioning import keys
from tests.conftest import pin_levels
from tests.daemon_support import trust_new_key, write_pass_images


def site(tmp_path):
    key = trust_new_key(tmp_path, "issuer", "issuers")
    issuers = tmp_path / "issuers"
    images = write_pass_images(tmp_path / "images", keys.load_private_key(key.private_path), 2, name="{i}.png")
    return parse_config({
        "device": {"id": "app-gate", "venue_id": "v-1", "state_dir": str(tmp_path / "state"),
                   "runtime_dir": str(tmp_path / "run")},
        "camera": {"source": f"dir:{images}", "frames_per_image": 1, "as_fast_as_possible": True},
        "gpio": {"pin_factory": "mock", "relay_pulse_ms": 50},
        "keys": {"issuers_dir": str(issuers)},
    }, str(tmp_path / "qrgate.toml"))


def run_to_end(app: GateApp) -> None:
    app.build()
    try:
        app.run(threading.Event())
        assert app.service is not None and app.service.input_ended
        app.outputs.wait_idle(5.0)
    finally:
        app.close()


def test_without_a_usable_outbox_the_gate_fails_closed_and_never_opens(tmp_path):
    cfg = site(tmp_path)
    factory = MockFactory()
    stored: list[ScanEvent] = []
    app = GateApp(cfg, pin_factory=factory, sink=UnavailableSink("state partition is read-only"),
                  on_event=[stored.append])
    run_to_end(app)
    assert app.service.gatekeeper.blocked is Reason.FAIL_CLOSED
    assert app.alarms.active()["outbox_unavailable"] == "state partition is read-only"
    assert pin_levels(factory.pin(cfg.gpio.relay_pin)) == [False, True]  # driven off (active-low), never on
    assert stored == []
    assert app.publisher is None


def test_without_a_broker_valid_passes_open_and_events_wait_in_the_outbox(tmp_path):
    cfg = site(tmp_path)
    factory = MockFactory()
    stored: list[ScanEvent] = []
    app = GateApp(cfg, pin_factory=factory, on_event=[stored.append])
    run_to_end(app)
    assert app.link is None and app.publisher is None
    assert [(e.seq, e.decision) for e in stored] == [(1, "granted"), (2, "granted")]
    assert read_events(cfg.state_dir / "outbox.sqlite") == [e.to_json_dict() for e in stored]
    fields = app.events_summary.status_fields()
    assert (fields["broker_backlog"], fields["seq"], fields["scans"], fields["granted"]) == (2, 2, 2, 2)
    assert fields["alarms"] == {}

"""The composition root's builder: config in, a wired gate out, ordered shutdown.

``GateApp.build`` is the only place that turns configuration into hardware and
library objects, from fixed tables (``device.camera.open_frame_source``,
``device.decoders.make_decoder``, ``device.gpio.make_pin_factory``). Nothing here is
chosen by importing a name found in the config.

Start-up order: outputs first (the relay is claimed and driven off), then stores,
then the camera. Shutdown order (HOUSE_STYLE section 3): relay, STOPPING=1, camera,
outbox flush, MQTT offline and disconnect, GPIO and stores; each step guarded.
"""

from __future__ import annotations

import fcntl
import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum
from functools import partial
from pathlib import Path
from typing import Any

from firmware.clock import SystemClock
from firmware.config import Config
from firmware.credentials import check_payload
from firmware.venue_secret import load_or_create_secret
from firmware.errors import StoreError
from firmware.events import EventFactory
from firmware.model import Reason, ScanEvent
from firmware.passback_store import SqlitePassbackStore
from firmware.policy import GateMemory, Lists, Rules
from firmware.ports import Clock, EventSink
from firmware.service import Gatekeeper, GateService

log = logging.getLogger(__name__)


STATE_LOCK_NAME = "daemon.lock"


def hold_state_lock(state_dir: Path) -> Any:
    """Take the state directory's exclusive lock for the daemon's lifetime.

    Tools that must not touch the daemon's files check ``state_dir_in_use`` first.

    Raises:
        StoreError: another qrgate daemon already runs on this state directory.
    """
    fh = open(state_dir / STATE_LOCK_NAME, "a+")
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as err:
        fh.close()
        raise StoreError(f"another qrgate daemon is running on {state_dir}; stop it first "
                         "(`systemctl stop qrgate`)") from err
    return fh


def state_dir_in_use(state_dir: Path) -> bool:
    """True while a daemon holds the state directory's lock (for CLI tools)."""
    path = state_dir / STATE_LOCK_NAME
    if not path.exists():
        return False
    with open(path, "a+") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
    return False


def events_state_fields(app: GateApp, sink: EventSink) -> dict[str, Any]:
    """The events/MQTT part of the retained state: version, camera, backlog, counts, alarms."""
    from firmware import __version__

    doc: dict[str, Any] = {"version": __version__, "device_id": app.cfg.device.id, "boot_id": app.boot_id,
                           "mode": "normal"}
    service = app.service
    if service is not None:
        last = service.stats.last_frame_mono_s
        fresh = last is not None and service.clock.monotonic() - last <= app.cfg.camera.max_frame_age_s
        doc["camera"] = "ok" if fresh or service.input_ended else "stale"
        doc["scans"] = service.stats.decisions
        doc["granted"] = service.stats.granted
    stats = getattr(sink, "stats", None)
    if stats is not None:
        s = stats()
        doc["broker_backlog"] = s.unsent
        doc["outbox_fill"] = round(s.fill, 3)
        oldest = s.oldest_unsent_s
        # Whole minutes: the state is re-published on change, not every second.
        doc["oldest_unsent_age_min"] = None if oldest is None else int(max(0.0, time.time() - oldest) // 60)
        doc["seq"] = s.seq_high
    doc["alarms"] = app.alarms.active()
    return doc


def rules_from(cfg: Config) -> Rules:
    """The core's Rules from the [policy] and [device] sections."""
    p = cfg.policy
    return Rules(
        direction=cfg.device.direction,
        repeat_window_s=p.repeat_window_s,
        passback=p.passback,
        passback_window_s=p.passback_window_s,
        accept_unsigned_id=p.accept_unsigned_id,
        health_declaration_max_age_s=p.health_declaration_max_age_h * 3600.0,
        require_expiry=p.require_expiry,
        allow_list_required=p.allow_list_required,
        clock_skew_s=p.clock_skew_s,
    )


class Phase(IntEnum):
    """The shutdown phases of HOUSE_STYLE section 3, in the order they run."""

    RELAY = 1      # release the relay (and refuse any later pulse) before anything can hang
    ANNOUNCE = 2   # systemd STOPPING=1, stop the device monitor
    CAMERA = 3     # close the camera
    FLUSH = 4      # drain the outbox to MQTT, bounded
    MQTT = 5       # retained offline, disconnect, loop_stop
    CLOSE = 6      # GPIO devices, stores, files


@dataclass
class Shutdown:
    """Ordered shutdown steps; each runs in its own guard and logs one line on failure.

    Steps run by phase, and in the order they were added within a phase, so a close can be
    registered right after its open (a partial build then closes what it opened) and still
    run at its documented place.
    """

    steps: list[tuple[str, Callable[[], Any]]] = field(default_factory=list)
    _phases: list[Phase] = field(default_factory=list)

    def add(self, name: str, step: Callable[[], Any], phase: Phase = Phase.CLOSE) -> None:
        at = sum(1 for p in self._phases if p <= phase)
        self.steps.insert(at, (name, step))
        self._phases.insert(at, phase)

    def run(self) -> None:
        for name, step in self.steps:
            try:
                step()
            except Exception as err:  # one failing step must not skip the rest
                log.error("shutdown step %r failed: %s", name, err)

    def clear(self) -> None:
        self.steps.clear()
        self._phases.clear()


class GateApp:
    """A fully wired gate: the service plus the adapters it owns.

    Args:
        cfg: the validated configuration.
        pin_factory: a gpiozero pin factory to use instead of the configured one (tests, demo).
        clock: a Clock to use instead of the system clock (tests).
        sink: an EventSink to use instead of the configured one.
        lists: deny/allow lists to use instead of the stored ones (demo, tests).
        on_event: extra callbacks for stored events (``--print-events``).
    """

    def __init__(self, cfg: Config, *, pin_factory: Any = None, clock: Clock | None = None,
                 sink: EventSink | None = None, lists: Lists | None = None, on_event: list[Callable[[ScanEvent], None]] | None = None) -> None:
        self.cfg = cfg
        self._file_cfg = cfg  # as read from the file, before a provisioning record overrides it
        self._pin_factory = pin_factory
        self._clock = clock
        self._sink = sink
        self._lists = lists
        self._on_event = list(on_event or [])
        self.boot_id = secrets.token_hex(8)
        self.service: GateService | None = None
        self.outputs: Any = None
        self.frames: Any = None
        self.shutdown = Shutdown()
        self.extras: dict[str, Any] = {}
        self.exit_status = 0  # EX_RESTART (75) after a provisioning that changed the broker
        self.stop_event: threading.Event | None = None
        # Events and MQTT (firmware.outbox, firmware.mqtt, firmware.publisher). Other features
        # add fields to the retained state by appending to state_fields, and raise alarms here.
        from firmware.publisher import Alarms

        self.alarms = Alarms()
        self.state_fields: list[Callable[[], dict[str, Any]]] = []
        self.link: Any = None
        self.publisher: Any = None
        self.drain_timeout_s = 30.0
        self.flush_timeout_s = 3.0
        # Field operations (firmware.field): device state, LED, status file, systemd, inputs,
        # remote commands. Features feed the device state and `qrgate status` through these lists.
        self.device_inputs: list[Callable[[], dict[str, Any]]] = []
        self.status_fields: list[Callable[[], dict[str, Any]]] = []
        self.rebirth_hooks: list[Callable[[], Any]] = []
        self.reload_hooks: list[Callable[[], Any]] = []
        self.passage_listeners: list[Callable[[str], None]] = []
        self.field: Any = None
        self.field_options: dict[str, Any] = {}
        self.reload_requested = threading.Event()  # set by SIGHUP; served by the device monitor
        self.reload_hooks.append(self.reload_config)

    def build(self) -> GateService:
        """Open every adapter and return the service.

        Raises:
            ConfigError: keys or lists are unusable.
            GpioUnavailable: the relay or another output cannot be claimed (fatal at start).
            CameraUnavailable, StoreError: the camera or the state directory cannot be opened.
        """
        from device.camera import open_frame_source
        from device.decoders import make_decoder
        from device.gpio import GpiozeroOutputs, make_pin_factory

        cfg = self.cfg
        state_dir = cfg.state_dir
        state_dir.mkdir(parents=True, exist_ok=True)
        self._lock = hold_state_lock(state_dir)  # released last, in close()
        clock = self._clock or SystemClock(state_dir / "clock-high-water", cfg.policy.require_synced_clock)
        if isinstance(clock, SystemClock):
            self.shutdown.add("save clock high-water mark", clock.save)
        factory = self._pin_factory if self._pin_factory is not None else make_pin_factory(
            cfg.gpio.pin_factory, cfg.gpio.chip)
        g = cfg.gpio
        self.outputs = GpiozeroOutputs(
            pin_factory=factory, relay_pin=g.relay_pin, relay_active_high=g.relay_active_high,
            relay_pulse_ms=g.relay_pulse_ms, green_led_pin=g.green_led_pin, red_led_pin=g.red_led_pin,
            buzzer_pin=g.buzzer_pin, monotonic=clock.monotonic)
        self.shutdown.add("release relay", self.outputs.lock_out, Phase.RELAY)
        self.shutdown.add("close GPIO", self.outputs.close)
        self.pin_factory = factory
        # The persisted provisioning record overrides venue, direction and broker (firmware.provisioning_setup).
        from device.reprovision_pin import held_at_boot
        from firmware.provisioning_setup import install_provisioning, load_provisioning

        self.provisioning = load_provisioning(cfg, self.alarms)
        self.shutdown.add("close state store", self.provisioning.store.close)
        self.provisioning.reprovision |= held_at_boot(factory, g.reprovision_pin)
        cfg = self.cfg = self.provisioning.cfg

        from firmware.keystore import load_trust_dir

        # A gate provisioned by QR may have no issuer directory (its keys came in the code).
        trust = load_trust_dir(cfg.issuers_dir, missing_ok=not cfg.device.venue_id or bool(
            self.provisioning.record)).merged(self.provisioning.issuers)
        secret_path = cfg.resolve(cfg.privacy.hmac_secret_file, str(state_dir / "venue-secret"))
        secret = load_or_create_secret(secret_path, on_damaged=partial(self.alarms.set, "venue_secret_replaced"))
        sink = self._sink or self._open_sink()
        self.shutdown.add("close event sink", sink.close)
        rescan = getattr(sink, "quarantined_files", None)
        if rescan is not None:
            def recheck_quarantine() -> dict[str, Any]:
                """Reload: a quarantined outbox the technician moved away no longer blocks the gate."""
                left = list(rescan())
                if not left:
                    self.alarms.set("outbox_quarantined", None)
                return {"outbox_quarantined": left}

            self.reload_hooks.append(recheck_quarantine)
        self.link = self._open_link()
        passback = SqlitePassbackStore(state_dir / "passback.sqlite", keep_s=max(cfg.policy.passback_window_s, 3600.0))
        self.shutdown.add("close passback store", passback.close)
        self.passback = passback
        memory = GateMemory(passages=passback.load(clock.wall()), on_passage=self._passage_recorded)
        self.frames = open_frame_source(cfg.camera, cfg.config_dir, clock=clock)
        self.shutdown.add("close camera", self.frames.close, Phase.CAMERA)

        gatekeeper = Gatekeeper(rules=rules_from(cfg), check=partial(check_payload, trust=trust),
                                lists=self._open_lists(), memory=memory,
                                blocked=None if cfg.device.venue_id else Reason.NOT_PROVISIONED)
        events = EventFactory(device_id=cfg.device.id, venue_id=cfg.device.venue_id, direction=cfg.device.direction,
                              boot_id=self.boot_id, subject_mode=cfg.privacy.subject, secret=secret,
                              publish_codes=cfg.privacy.publish_codes)
        decoder = make_decoder(cfg.decoder.backend, retry=cfg.decoder.retry)
        self.service = GateService(frames=self.frames, decoder=decoder,
                                   outputs=self.outputs, sink=sink, clock=clock, gatekeeper=gatekeeper,
                                   events=events, on_event=self._on_event)
        self.sink = sink
        install_provisioning(self, self.provisioning)
        from firmware.field import FieldOps

        # before the link starts, so command subscriptions go out with the first connect
        self.field = FieldOps(self, **self.field_options).attach()
        self._start_events(sink)
        return self.service

    def reload_config(self) -> dict[str, Any]:
        """Reload hook: check the config file again; if it changed and is valid, restart cleanly.

        Everything in the config shapes how the gate was built (pins, camera, broker), so a
        changed file is applied by a clean stop with EX_RESTART (75), which systemd follows
        with a start; the relay is released first as in every stop. An invalid file changes
        nothing: the gate keeps running with the config it has.

        Raises:
            ConfigError: the file is now invalid (every problem listed).
        """
        from firmware.config import load_config
        from firmware.provisioning_setup import EX_RESTART

        if not self._file_cfg.path:
            return {"config": "unchanged"}
        new = load_config(self._file_cfg.path)
        if new == self._file_cfg:
            return {"config": "unchanged"}
        log.warning("config file %s changed; restarting to apply it", self._file_cfg.path)
        self.exit_status = EX_RESTART
        if self.stop_event is not None:
            self.stop_event.set()
        return {"config": "restarting"}

    def _passage_recorded(self, key: str, direction: str, wall_s: float) -> None:
        self.passback.record(key, direction, wall_s)
        for listener in self.passage_listeners:
            listener(key)

    def _open_sink(self) -> EventSink:
        """The SQLite outbox; if none can be opened, a sink that refuses (the gate fails closed)."""
        from firmware.outbox import SqliteOutbox, UnavailableSink

        try:
            return SqliteOutbox(self.cfg.state_dir / "outbox.sqlite", max_events=self.cfg.outbox.max_events,
                                retention_s=self.cfg.outbox.retention_days * 86400.0, on_alarm=self.alarms.set,
                                app_ack=self.cfg.mqtt.app_ack)
        except StoreError as err:
            log.error("no usable outbox, the gate refuses every scan until this is fixed: %s", err)
            self.alarms.set("outbox_unavailable", str(err))
            return UnavailableSink(str(err))

    def _open_link(self) -> Any:
        """The MQTT link when [mqtt] host is set (not started yet), else None."""
        if not self.cfg.mqtt.host:
            return None
        from firmware.mqtt import MqttLink, MqttSettings

        return MqttLink(MqttSettings.from_config(self.cfg))

    def _start_events(self, sink: EventSink) -> None:
        """Start publishing: the outbox drain, the retained state, the MQTT connection.

        Adds the shutdown steps "flush outbox" and "MQTT offline and disconnect" right after
        the camera is closed, before the stores close.
        """
        from firmware.outbox import SqliteOutbox, UnavailableSink
        from firmware.publisher import OutboxPublisher, StateReporter

        assert self.service is not None
        service = self.service
        if isinstance(sink, UnavailableSink):
            if "outbox_unavailable" not in self.alarms.active():
                self.alarms.set("outbox_unavailable", sink.problem)
            if service.gatekeeper.blocked is None:
                service.gatekeeper.blocked = Reason.FAIL_CLOSED
        self.state_fields.insert(0, partial(events_state_fields, self, sink))
        if self.link is None or not isinstance(sink, SqliteOutbox):
            if self.link is None:
                log.info("no MQTT broker configured ([mqtt] host); scan events wait in the outbox")
            return
        state = StateReporter(self.link, self.state_fields, self.cfg.mqtt.state_interval_s)
        self.publisher = OutboxPublisher(sink, self.link, inflight_max=self.cfg.mqtt.inflight_max,
                                         alarms=self.alarms, state=state,
                                         app_ack_timeout_s=(self.cfg.mqtt.app_ack_timeout_s
                                                            if self.cfg.mqtt.app_ack else None))
        service.on_event.append(lambda _event: self.publisher.wake())
        link, publisher = self.link, self.publisher
        self.shutdown.add("flush outbox", partial(self._flush_outbox, self.flush_timeout_s), Phase.FLUSH)
        self.shutdown.add("MQTT offline and disconnect", partial(link.stop, self.flush_timeout_s), Phase.MQTT)
        publisher.start()
        link.start()

    def _flush_outbox(self, timeout_s: float) -> None:
        if self.publisher is None:
            return
        if not self.publisher.wait_drained(timeout_s):
            log.warning("%d scan events still unsent at shutdown; they stay in the outbox",
                        self.publisher.outbox.unsent)
        self.publisher.stop()

    def wait_drained(self, timeout_s: float) -> bool:
        """With a broker: wait until every stored event is acknowledged (at most timeout_s).

        Returns True when nothing is left unsent, False on timeout or without a broker."""
        if self.publisher is None:
            return False
        return self.publisher.wait_drained(timeout_s)

    def _open_lists(self) -> Lists:
        if self._lists is not None:
            return self._lists
        from firmware.list_updates import open_gate_lists  # deny/allow files, staleness, MQTT updates

        self.lists = open_gate_lists(self)
        return self.lists

    def run(self, stop: threading.Event) -> None:
        """Run the scan loop until stop is set (or a replay source ends)."""
        assert self.service is not None
        self.stop_event = stop
        if self.field is not None:
            self.field.start()  # READY=1 and the device monitor, once
        self.service.run(stop)

    def close(self) -> None:
        """Shut down in the documented order. Safe to call once after build (even a partial one)."""
        self.shutdown.run()
        self.shutdown.clear()
        lock = getattr(self, "_lock", None)
        if lock is not None:
            lock.close()  # last: no other qrgate may open these files until everything is closed
            self._lock = None

"""The composition root's builder: config in, a wired gate out, ordered shutdown.

``GateApp.build`` is the only place that turns configuration into hardware and library
objects, from fixed tables (``device.camera.open_frame_source``,
``device.decoders.make_decoder``, ``device.gpio.make_pin_factory``). Nothing here is
chosen by importing a name found in the config. Every feature gets what it uses through
its constructor; nothing is attached to the app afterwards.

Start-up order: outputs first (the relay is claimed and driven off), then stores, then
the camera, then the features, then the MQTT link (so every subscription goes out with
the first connect). Shutdown order (HOUSE_STYLE section 3): relay, STOPPING=1, camera,
outbox flush, MQTT offline and disconnect, GPIO and stores; each step guarded.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import threading
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from firmware.adapters.clock import SystemClock
from firmware.adapters.dcc_keystore import DccTrustListFile, load_trust_list
from firmware.adapters.device_key import DEVICE_KEY_FILE, load_or_create_device_key
from firmware.adapters.effective_config import file_keys
from firmware.adapters.escrow_key import load_escrow_public_key
from firmware.adapters.keystore import load_trust_dir
from firmware.adapters.list_files import open_lists
from firmware.adapters.mode_file import MODE_FILE, ModeFile
from firmware.adapters.mqtt_link import MqttLink, MqttSettings
from firmware.adapters.nonce_file import NONCE_FILE, NonceFile
from firmware.adapters.outbox import SqliteOutbox, UnavailableSink
from firmware.adapters.passback_store import SqlitePassbackStore
from firmware.adapters.process import hold_state_lock
from firmware.adapters.publisher import OutboxPublisher, StateReporter
from firmware.adapters.state_store import StateStore
from firmware.adapters.status_file import StatusWriter, status_path
from firmware.adapters.system_probe import THERMAL_PATH, clock_synced, read_cpu_temp_c
from firmware.adapters.systemd_notify import SystemdNotifier
from firmware.adapters.venue_secret import load_or_create_secret
from firmware.alarms import Alarms
from firmware.app.shutdown import Phase, Shutdown
from firmware.core.config import Config
from firmware.core.credentials import check_payload
from firmware.core.credentials.dcc_trust import LiveDscStore
from firmware.core.credentials.trust import TrustStore
from firmware.core.dcc_rules import dcc_rules_from
from firmware.core.effective import EffectiveConfig, effective_config
from firmware.core.errors import StoreError
from firmware.core.event_signature import fingerprint, public_key_text, seal
from firmware.core.events import EventFactory, protect_subject
from firmware.core.gatekeeper import Gatekeeper, LoopStats
from firmware.core.identity import GateIdentity, IdentityCell
from firmware.core.model import Credential, Rejection, ScanEvent
from firmware.core.passage import PassageWatch
from firmware.core.policy import GateMemory, Lists, Rules
from firmware.core.remote_command import CommandVerifier
from firmware.core.seq_skips import sealed_document
from firmware.features.dcc_trust_updates import DccTrustUpdates
from firmware.features.device_monitor import BrokerInputs, DeviceMonitor, MonitorSettings, OutboxInputs
from firmware.features.home_assistant import HomeAssistantDiscovery, RelayTopic, discovery_payload, discovery_topic
from firmware.features.list_updates import GateLists, ListSettings
from firmware.features.passage_check import PassageCheck, PassageLog
from firmware.features.provisioning import PROVISIONING_KEY, GateProvisioning, ProvisioningSettings
from firmware.features.remote_control import RemoteControl
from firmware.features.scan_loop import EventRecorder, GateService
from firmware.features.status_report import EventsSummary, ReportSettings, StatusReport
from firmware.ports import (
    Clock,
    DeviceInputSource,
    EventListener,
    EventSink,
    LoopObserver,
    Reloadable,
    Republisher,
    StatusSource,
)

log = logging.getLogger(__name__)

EX_RESTART = 75  # EX_TEMPFAIL: "start me again", distinct from 1 (failure) and 78 (config)
STATE_FILE = "state.json"


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
        dcc=dcc_rules_from(cfg.policy_dcc),
        cccd_id_digits=cfg.privacy.cccd_id_digits,
    )


class CredentialCheck:
    """The gate's credential check: pass issuers from the identity in force, DSCs from the live
    DCC trust list (swapped whole by its update feature)."""

    def __init__(self, dcc_trust: LiveDscStore) -> None:
        self._dcc_trust = dcc_trust

    def __call__(self, payload: bytes, trust: TrustStore) -> Credential | Rejection:
        return check_payload(payload, trust, dcc_trust=self._dcc_trust.store)


class CallListener:
    """An EventListener around a plain callable (``--print-events``, tests)."""

    def __init__(self, callback: Callable[[ScanEvent], Any]) -> None:
        self._callback = callback

    def event_stored(self, event: ScanEvent) -> None:
        self._callback(event)


class GateApp:
    """A fully wired gate: the service, the features and the adapters it owns.

    Args:
        cfg: the validated configuration (as read from the file).
        pin_factory: a gpiozero pin factory to use instead of the configured one (tests, demo).
        clock: a Clock to use instead of the system clock (tests).
        sink: an EventSink to use instead of the configured one.
        lists: deny/allow lists to use instead of the stored ones (demo, tests).
        on_event: callables told of every stored event (``--print-events``, tests).
        environ: the environment for ``NOTIFY_SOCKET`` (tests pass a dict).
        input_bounce_s: debounce of the fire and passage inputs (None with mock pins).
        thermal_path: where the CPU temperature is read.
        extra_inputs: more device-input sources (tests).
        empty_source_ok: a ``dir:`` camera folder without images ends at once (``--exit-at-end``).
    """

    def __init__(self, cfg: Config, *, pin_factory: Any = None, clock: Clock | None = None,
                 sink: EventSink | None = None, lists: Lists | None = None,
                 on_event: Sequence[Callable[[ScanEvent], Any]] = (), environ: dict[str, str] | None = None,
                 input_bounce_s: float | None = 0.05, thermal_path: Path = THERMAL_PATH,
                 extra_inputs: Sequence[DeviceInputSource] = (), empty_source_ok: bool = False) -> None:
        self.file_cfg = cfg
        self.cfg = cfg  # with the start-up provisioning record applied, once built; never changed after
        self.effective: EffectiveConfig | None = None  # the config file plus the record, once built
        self._pin_factory = pin_factory
        self._clock = clock
        self._sink = sink
        self._lists = lists
        self._listeners: list[EventListener] = [CallListener(c) for c in on_event]
        self._environ = environ
        self._input_bounce_s = input_bounce_s
        self._thermal_path = thermal_path
        self._extra_inputs = tuple(extra_inputs)
        self._empty_source_ok = empty_source_ok
        self.boot_id = secrets.token_hex(8)
        self.alarms = Alarms()
        self.shutdown = Shutdown()
        self.exit_status = 0  # EX_RESTART (75) after a provisioning that changed the broker
        self.restart_reason = ""  # why, for the stop line
        self.stop_event: threading.Event | None = None
        self.reload_requested = threading.Event()  # set by SIGHUP; served by the device monitor
        self.drain_timeout_s = 30.0
        self.flush_timeout_s = 3.0
        self.service: GateService | None = None
        self.monitor: DeviceMonitor | None = None
        self.status_report: StatusReport | None = None
        self.provisioning: GateProvisioning | None = None
        self.lists: GateLists | None = None
        self.identity: IdentityCell | None = None
        self.remote: RemoteControl | None = None
        self.passage: PassageCheck | None = None
        self.outputs: Any = None
        self.frames: Any = None
        self.link: MqttLink | None = None
        self.publisher: OutboxPublisher | None = None
        self.device_key: Ed25519PrivateKey | None = None  # this gate's signing key, read at build
        self.pin_factory: Any = None
        self._lock_file: Any = None

    # ------------------------------------------------------------------ build

    def build(self) -> GateService:
        """Open every adapter, wire every feature, start the link; return the service.

        Raises:
            ConfigError: keys or lists are unusable.
            GpioUnavailable: the relay or another output cannot be claimed (fatal at start).
            CameraUnavailable, StoreError: the camera or the state directory cannot be opened.
        """
        from device.camera import open_frame_source
        from device.decoders import make_decoder
        from device.gpio import GpiozeroOutputs, make_pin_factory
        from device.reprovision_pin import held_at_boot

        file_cfg = self.file_cfg
        state_dir = file_cfg.state_dir
        state_dir.mkdir(parents=True, exist_ok=True)
        self._lock_file = hold_state_lock(state_dir)  # released last, in close()
        clock = self._clock or SystemClock(state_dir / "clock-high-water", file_cfg.policy.require_synced_clock)
        if isinstance(clock, SystemClock):
            self.shutdown.add("save clock high-water mark", clock.save)

        # outputs first: the relay is claimed and driven off before anything else can fail
        factory = self._pin_factory if self._pin_factory is not None else make_pin_factory(
            file_cfg.gpio.pin_factory, file_cfg.gpio.chip)
        self.pin_factory = factory
        g = file_cfg.gpio
        outputs = self.outputs = GpiozeroOutputs(
            pin_factory=factory, relay_pin=g.relay_pin, relay_active_high=g.relay_active_high,
            relay_pulse_ms=g.relay_pulse_ms, green_led_pin=g.green_led_pin, red_led_pin=g.red_led_pin,
            buzzer_pin=g.buzzer_pin, monotonic=clock.monotonic)
        self.shutdown.add("release relay", outputs.lock_out, Phase.RELAY)
        self.shutdown.add("close GPIO", outputs.close)

        # the stored provisioning record: venue, direction and broker at start
        state = StateStore(state_dir / STATE_FILE)
        self.shutdown.add("close state store", state.close)
        damaged = state.alarm()
        if state.recovered:
            self.alarms.set("state_corrupt", f"state file was corrupt and moved to {state.quarantined}; the "
                            "provisioning record and used nonces were recovered from its last good copy")
        elif damaged:
            self.alarms.set("state_corrupt", f"state file was corrupt and moved to {damaged.get('state_corrupt')}; "
                            "the gate stays unprovisioned until it is provisioned again")
        record = state.get(PROVISIONING_KEY)
        effective = self.effective = effective_config(
            file_cfg, record if isinstance(record, dict) else None, file_keys(file_cfg.path) if file_cfg.path else ())
        record = dict(effective.record) if effective.record else None
        cfg = self.cfg = effective.cfg
        reprovision = cfg.provisioning.allow_reprovision or held_at_boot(factory, g.reprovision_pin)

        # A gate provisioned by QR may have no issuer directory (its keys came in the code).
        config_trust = load_trust_dir(cfg.issuers_dir, missing_ok=not effective.issuers_dir_required)
        identity = IdentityCell(effective.identity(
            GateIdentity(venue_id=file_cfg.device.venue_id, rules=rules_from(file_cfg)), config_trust))
        self.identity = identity
        secret_path = cfg.resolve(cfg.privacy.hmac_secret_file, str(state_dir / "venue-secret"))
        secret = load_or_create_secret(secret_path, on_damaged=partial(self.alarms.set, "venue_secret_replaced"))
        self.device_key = load_or_create_device_key(state_dir / DEVICE_KEY_FILE,
                                                    on_damaged=partial(self.alarms.set, "device_key_replaced"))
        device_public = public_key_text(self.device_key.public_key())

        sink = self._sink or self._open_sink()
        self.sink = sink
        self.shutdown.add("close event sink", sink.close)
        self.link = link = self._open_link()
        publisher = self._make_publisher(sink)
        recorder = EventRecorder(sink, [*([publisher] if publisher is not None else []), *self._listeners])

        passback = SqlitePassbackStore(state_dir / "passback.sqlite", keep_s=max(cfg.policy.passback_window_s, 3600.0))
        self.shutdown.add("close passback store", passback.close)
        self.passback = passback
        stats = LoopStats()
        escrow_path = cfg.escrow_key_path
        escrow_key = load_escrow_public_key(escrow_path) if escrow_path is not None else None
        events = EventFactory(device_id=cfg.device.id, identity=identity, boot_id=self.boot_id,
                              subject_mode=cfg.privacy.subject, secret=secret,
                              publish_codes=cfg.privacy.publish_codes, escrow_key=escrow_key)
        watch = PassageWatch(cfg.commands.pass_timeout_s) if g.passage_sensor_pin >= 0 else None
        memory = GateMemory(passages=passback.load(clock.wall()), on_passage=PassageLog(passback, watch))
        passage = None
        if watch is not None:
            passage = self.passage = PassageCheck(clock=clock, recorder=recorder, memory=memory, passback=passback,
                                                  watch=watch)
        gate_lists = self._open_lists(cfg, clock, link, secret)
        self.dcc_trust = LiveDscStore(load_trust_list(cfg.dcc_trust_list, missing_ok=True))
        gatekeeper = Gatekeeper(identity, CredentialCheck(self.dcc_trust), lists=gate_lists.lists if gate_lists else self._lists,
                                memory=memory)

        provisioning = self.provisioning = GateProvisioning(
            identity=identity, config_trust=config_trust, authority=self._authority(cfg, identity, reprovision),
            store=state, record=record, recorder=recorder, events=events, outputs=outputs, alarms=self.alarms,
            restart=self, settings=ProvisioningSettings(
                device_id=cfg.device.id, broker=(cfg.mqtt.host, cfg.mqtt.port) if cfg.mqtt.host else None,
                allow_reprovision=reprovision, repeat_window_s=cfg.policy.repeat_window_s,
                clock_skew_s=cfg.policy.clock_skew_s, device_key=device_public),
            on_change=self._wake_monitor)

        self.frames = open_frame_source(cfg.camera, cfg.config_dir, clock=clock,
                                        empty_ok=self._empty_source_ok)
        self.shutdown.add("close camera", self.frames.close, Phase.CAMERA)

        notifier = SystemdNotifier(self._environ)
        self.shutdown.add("notify systemd STOPPING", notifier.stopping, Phase.ANNOUNCE)
        self.shutdown.add("close notify socket", notifier.close)
        led = None
        if g.status_led_pin >= 0:
            from device.status_led import StatusLed

            led = StatusLed(pin_factory=factory, pin=g.status_led_pin)
            self.shutdown.add("close status LED", led.close)
        status_sources: list[StatusSource] = [provisioning]
        if gate_lists is not None:
            status_sources.append(gate_lists)
        report = self.status_report = StatusReport(
            clock=clock, stats=stats, sink=sink, outputs=outputs, identity=identity, link=link,
            status_file=StatusWriter(status_path(cfg.resolve(cfg.device.runtime_dir, "run"))),
            settings=ReportSettings(device_id=cfg.device.id, boot_id=self.boot_id, pid=os.getpid(),
                                    max_frame_age_s=cfg.camera.max_frame_age_s,
                                    state_interval_s=cfg.mqtt.state_interval_s,
                                    broker_address=f"{cfg.mqtt.host}:{cfg.mqtt.port}" if cfg.mqtt.host else ""),
            sources=[*status_sources, *([passage] if passage is not None else [])], cpu_temp_c=partial(read_cpu_temp_c, self._thermal_path),
            clock_synced=clock_synced)
        self.shutdown.add("remove status file", report.stop)
        reloadables: list[Reloadable] = [ConfigReload(self)]
        if gate_lists is not None:
            reloadables.append(gate_lists)
        if isinstance(sink, SqliteOutbox):
            reloadables.append(OutboxQuarantineReload(sink, self.alarms))
        inputs: list[DeviceInputSource] = [provisioning, OutboxInputs(sink, self.alarms), BrokerInputs(link)]
        if gate_lists is not None:
            inputs.append(gate_lists)
        inputs.extend(self._extra_inputs)
        self._monitor_wake = threading.Event()
        monitor = self.monitor = DeviceMonitor(
            clock=clock, stats=stats, gatekeeper=gatekeeper, outputs=outputs, notifier=notifier,
            mode_store=ModeFile(cfg.state_dir / MODE_FILE),
            settings=MonitorSettings(max_frame_age_s=cfg.camera.max_frame_age_s,
                                     lists_fail_closed=cfg.lists.stale_policy == "fail_closed",
                                     free_passage_hold=cfg.gpio.free_passage_relay == "hold"),
            inputs=inputs, observers=[report], reloadables=reloadables, led=led,
            reset_required_after_fire=cfg.commands.reset_required_after_fire,
            reload_requested=self.reload_requested, wake=self._monitor_wake)
        self.shutdown.add("stop monitor", monitor.stop, Phase.ANNOUNCE)
        if g.fire_alarm_pin >= 0 or g.passage_sensor_pin >= 0:
            from device.inputs import GpioInputs

            gpio_inputs = GpioInputs(
                pin_factory=factory, fire_alarm_pin=g.fire_alarm_pin, fire_alarm_active_high=g.fire_alarm_active_high,
                passage_sensor_pin=g.passage_sensor_pin, on_fire=monitor.fire_alarm,
                on_passage=passage.passage_pulse if passage is not None else _ignore_pulse,
                bounce_s=self._input_bounce_s)
            self.shutdown.add("close inputs", gpio_inputs.close)
            gpio_inputs.report_fire_level()

        observers: list[LoopObserver] = [monitor, *([passage] if passage is not None else [])]
        decoder = make_decoder(cfg.decoder.backend, retry=cfg.decoder.retry)
        self.service = GateService(frames=self.frames, decoder=decoder, outputs=outputs,
                                   recorder=recorder, clock=clock, gatekeeper=gatekeeper, events=events, stats=stats,
                                   interceptors=[provisioning], observers=observers)
        self.events_summary = EventsSummary(clock=clock, stats=stats, sink=sink, alarms=self.alarms,
                                            device_id=cfg.device.id, boot_id=self.boot_id,
                                            max_frame_age_s=cfg.camera.max_frame_age_s)
        if link is not None:
            self._start_mqtt(cfg, link, publisher, clock, stats, sink, outputs, recorder, events, monitor, report,
                             status_sources, gate_lists)
        elif cfg.mqtt.host == "":
            log.info("no MQTT broker configured ([mqtt] host); scan events wait in the outbox")
        monitor.tick()  # the device state (and the gatekeeper's blocking reason) before the first frame
        return self.service

    def _venue_in_force(self, configured: str) -> str:
        """The venue of the identity in force (a provisioning QR changes it live), for command checks."""
        return self.identity.current.venue_id if self.identity is not None else configured

    def _authority(self, cfg: Config, identity: IdentityCell, reprovision: bool) -> Any:
        authority = load_trust_dir(cfg.authority_dir, missing_ok=True)
        # only worth a warning where a provisioning code could be applied at all
        if len(authority) == 0 and (not identity.current.provisioned or reprovision):
            log.warning("no provisioning authority key in %s: provisioning codes will be refused "
                        "(add one with `qrgate keys trust PUBFILE --role authority`)", cfg.authority_dir)
        return authority

    def _open_sink(self) -> EventSink:
        """The SQLite outbox; if none can be opened, a sink that refuses (the gate fails closed)."""
        try:
            return SqliteOutbox(self.file_cfg.state_dir / "outbox.sqlite", max_events=self.file_cfg.outbox.max_events,
                                retention_s=self.file_cfg.outbox.retention_days * 86400.0, on_alarm=self.alarms.set,
                                app_ack=self.file_cfg.mqtt.app_ack)
        except StoreError as err:
            log.error("no usable outbox, the gate refuses every scan until this is fixed: %s", err)
            return UnavailableSink(str(err))

    def _open_link(self) -> MqttLink | None:
        """The MQTT link when [mqtt] host is set (not started yet), else None."""
        if not self.cfg.mqtt.host:
            return None
        return MqttLink(MqttSettings.from_config(self.cfg))

    def _make_publisher(self, sink: EventSink) -> OutboxPublisher | None:
        if isinstance(sink, UnavailableSink):
            self.alarms.set("outbox_unavailable", sink.problem)
        if self.link is None or not isinstance(sink, SqliteOutbox):
            return None
        mqtt = self.cfg.mqtt
        key = self.device_key
        assert key is not None, "the device key is read before the publisher is made"
        key_document = json.dumps({"device_id": self.cfg.device.id, "alg": "Ed25519",
                                   "public_key": public_key_text(key.public_key()),
                                   "fingerprint": fingerprint(key.public_key())}, separators=(",", ":"))
        skips_document = sealed_document(self.cfg.device.id, sink.skips, key) if sink.skips else None
        self.publisher = OutboxPublisher(sink, self.link, inflight_max=mqtt.inflight_max, alarms=self.alarms,
                                         app_ack_timeout_s=mqtt.app_ack_timeout_s if mqtt.app_ack else None,
                                         seal=partial(seal, key=key), key_document=key_document,
                                         skips_document=skips_document)
        return self.publisher

    def _open_lists(self, cfg: Config, clock: Clock, link: MqttLink | None, secret: bytes) -> GateLists | None:
        if self._lists is not None:
            return None
        # Lookups match an entry written as the person's id or as their subject at this venue
        # (the HMAC the events carry), whatever privacy.subject says.
        store, lists = open_lists(cfg.state_dir / "lists", self.alarms,
                                  subject_of=partial(protect_subject, mode="hmac", secret=secret))
        command_keys = load_trust_dir(cfg.command_keys_dir, missing_ok=True) if link is not None else None
        self.lists = GateLists(store=store, lists=lists, alarms=self.alarms, wall=clock.wall, link=link,
                               command_keys=command_keys,
                               settings=ListSettings(max_age_h=cfg.lists.max_age_h, stale_policy=cfg.lists.stale_policy,
                                                     allow_list_required=cfg.policy.allow_list_required,
                                                     device_id=cfg.device.id, venue_id=cfg.device.venue_id,
                                                     prefix=cfg.mqtt.prefix))
        return self.lists

    def _start_mqtt(self, cfg: Config, link: MqttLink, publisher: OutboxPublisher | None, clock: Clock,
                    stats: LoopStats, sink: EventSink, outputs: Any, recorder: EventRecorder, events: EventFactory,
                    monitor: DeviceMonitor, report: StatusReport, status_sources: list[StatusSource],
                    gate_lists: GateLists | None) -> None:
        """The MQTT features, then the link (so their subscriptions go out with the first connect)."""
        republishers: list[Republisher] = []
        RelayTopic(link=link, outputs=outputs).start()
        if cfg.mqtt.discovery:
            discovery = HomeAssistantDiscovery(
                link=link, topic=discovery_topic(cfg.mqtt.discovery_prefix, cfg.device.id),
                payload=discovery_payload(device_id=cfg.device.id, base_topic=link.topic("").rstrip("/"),
                                          venue_id=cfg.device.venue_id, bridge=cfg.mqtt.discovery_bridge),
                status_topic=f"{cfg.mqtt.discovery_prefix}/status")
            discovery.start()
            republishers.append(discovery)
        if gate_lists is not None:
            gate_lists.start()
        command_keys = load_trust_dir(cfg.command_keys_dir, missing_ok=True)
        DccTrustUpdates(link, self.dcc_trust, DccTrustListFile(cfg.dcc_trust_list), command_keys, cfg.device.id,
                        wall=clock.wall, venue_id=cfg.device.venue_id, prefix=cfg.mqtt.prefix).start()
        if publisher is not None:
            state = StateReporter(link, [self.events_summary, monitor, report, *status_sources],
                                  cfg.mqtt.state_interval_s, wall=clock.wall)
            publisher.state = state
            republishers.append(state)
        if cfg.commands.enabled:
            trust = load_trust_dir(cfg.command_keys_dir, missing_ok=True)
            nonces = NonceFile(cfg.state_dir / NONCE_FILE)
            verifier = CommandVerifier(device_id=cfg.device.id, keys_for_kid=trust.keys_for,
                                       rate_per_min=cfg.commands.rate_per_min, max_age_s=cfg.commands.max_age_s,
                                       max_pulse_ms=cfg.gpio.relay_pulse_ms, nonces=nonces.load(),
                                       venue_id=partial(self._venue_in_force, cfg.device.venue_id),
                                       prefix=cfg.mqtt.prefix)
            self.remote = RemoteControl(link=link, verifier=verifier, nonces=nonces, clock=clock, control=monitor,
                                        outputs=outputs, recorder=recorder, events=events,
                                        republishers=republishers, relay_pulse_ms=cfg.gpio.relay_pulse_ms)
            self.remote.start()
            if len(trust) == 0:
                log.warning("no command keys in %s: every remote command will be refused (unknown_key)",
                            cfg.command_keys_dir)
        self.shutdown.add("flush outbox", partial(self._flush_outbox, self.flush_timeout_s), Phase.FLUSH)
        self.shutdown.add("MQTT offline and disconnect", partial(link.stop, self.flush_timeout_s), Phase.MQTT)
        if publisher is not None:
            publisher.start()
        link.start()

    # ------------------------------------------------------------------ run and stop

    def _wake_monitor(self) -> None:
        self._monitor_wake.set()

    def request_restart(self, why: str) -> None:
        """RestartRequest: stop cleanly with EX_RESTART (75); systemd starts the gate again.

        A planned restart, not a fault: the daemon's stop line gives ``why`` at INFO.
        """
        log.debug("restart requested: %s", why)
        self.exit_status = EX_RESTART
        self.restart_reason = why
        if self.stop_event is not None:
            self.stop_event.set()

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

    def run(self, stop: threading.Event) -> None:
        """Run the scan loop until stop is set (or a replay source ends)."""
        assert self.service is not None
        self.stop_event = stop
        if self.monitor is not None:
            self.monitor.start()  # READY=1 and the device monitor, once
        self.service.run(stop)

    def close(self) -> None:
        """Shut down in the documented order. Safe to call once after build (even a partial one)."""
        self.shutdown.run()
        self.shutdown.clear()
        if self._lock_file is not None:
            self._lock_file.close()  # last: no other qrgate may open these files until everything is closed
            self._lock_file = None


def _ignore_pulse() -> None:
    """A passage pulse without a passage check (the sensor pin is set only with the check)."""


class ConfigReload:
    """Reload: check the config file again; if it changed and is valid, restart cleanly.

    Everything in the config shapes how the gate was built (pins, camera, broker), so a
    changed file is applied by a clean stop with EX_RESTART (75), which systemd follows with
    a start; the relay is released first as in every stop. An invalid file changes nothing:
    the gate keeps running with the config it has.
    """

    def __init__(self, app: GateApp) -> None:
        self._app = app

    def reload(self) -> dict[str, Any]:
        """Raises:
            ConfigError: the file is now invalid (every problem listed).
        """
        from firmware.adapters.config_file import load_config

        app = self._app
        if not app.file_cfg.path:
            return {"config": "unchanged"}
        if load_config(app.file_cfg.path) == app.file_cfg:
            return {"config": "unchanged"}
        app.request_restart(f"config file {app.file_cfg.path} changed")
        return {"config": "restarting"}


class OutboxQuarantineReload:
    """Reload: a quarantined outbox the technician moved away no longer blocks the gate."""

    def __init__(self, outbox: SqliteOutbox, alarms: Alarms) -> None:
        self._outbox, self._alarms = outbox, alarms

    def reload(self) -> dict[str, Any]:
        left = list(self._outbox.quarantined_files())
        if not left:
            self._alarms.set("outbox_quarantined", None)
        return {"outbox_quarantined": left}

"""Field operations wiring (part of the composition root): device state, LED, status, systemd, inputs.

``FieldOps.attach(app)`` is called at the end of ``GateApp.build``; ``start()`` at the
first ``GateApp.run``. It adds:

- a monitor thread (``qrgate-monitor``, every 0.25 s or when woken) that samples the
  device inputs, evaluates the ``DeviceState``, sets ``Gatekeeper.blocked``, holds or
  releases the relay for free passage, plays the LED code, writes the status file and
  tells listeners (MQTT state) about changes. It needs neither the broker nor the scan
  loop, so a hung camera still shows ``camera_fault`` on the LED;
- from the scan loop (``GateService.after_step``): ``WATCHDOG=1`` while frames are fresh,
  passage-sensor matching and ``not_passed`` events (the sink is the loop's);
- ``READY=1`` at start, ``STATUS=`` on each state change, ``STOPPING=1`` as shutdown step 2;
- the fire-alarm and passage inputs.

Other parts feed it through two lists on the app: ``app.device_inputs`` (callables
returning ``DeviceInputs`` field overrides, e.g. ``{"lists_stale": True}``) and
``app.status_fields`` (callables returning dicts merged into the status snapshot).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from firmware import __version__
from firmware.adapters.atomic_files import write_atomic
from firmware.adapters.status_file import STATUS_SCHEMA, StatusWriter, status_path
from firmware.adapters.systemd_notify import SystemdNotifier
from firmware.core.device_state import DeviceInputs, DeviceState, Mode, ModeControl, blocked_reason, evaluate
from firmware.core.errors import QrGateError, StoreError
from firmware.core.events import rfc3339_ms
from firmware.core.model import CredentialType, Reason
from firmware.core.passage import PassageWatch, not_passed_event

log = logging.getLogger(__name__)

MONITOR_PERIOD_S = 0.25
THERMAL_PATH = Path("/sys/class/thermal/thermal_zone0/temp")
MODE_FILE = "mode.json"
TIMESYNC_FLAG = Path("/run/systemd/timesync/synchronized")
_INPUT_FIELDS = {f.name for f in fields(DeviceInputs)}
# alarms (firmware.publisher.Alarms names) that light the storage_alarm state
STORAGE_ALARMS = {"outbox_quarantined", "outbox_unavailable", "state_corrupt"}


def read_cpu_temp_c(path: Path = THERMAL_PATH) -> float | None:
    """CPU temperature in °C from sysfs (millidegrees), or None where it cannot be read."""
    try:
        return int(path.read_text().strip()) / 1000.0
    except (OSError, ValueError):
        return None


def load_mode(path: Path, reset_required: bool) -> ModeControl:
    """The persisted operator mode and fire latch (normal if missing or unreadable)."""
    control = ModeControl(reset_required_after_fire=reset_required)
    try:
        data = json.loads(path.read_text())
        return replace(control, mode=Mode.parse(str(data.get("mode", "normal"))),
                       fire_latched=bool(data.get("fire_latched", False)) and reset_required)
    except FileNotFoundError:
        return control
    except (OSError, ValueError, AttributeError) as err:
        log.warning("mode file %s is unreadable (%s); starting in normal mode", path, err)
        return control


def save_mode(path: Path, control: ModeControl) -> None:
    """Persist mode and fire latch atomically, so lockdown survives a restart."""
    data = json.dumps({"mode": control.mode.value, "fire_latched": control.fire_latched})
    write_atomic(path, data.encode("utf-8"))


class FieldOps:
    """Device state, LED, status file, systemd notifications and inputs of one GateApp.

    Args:
        app: the GateApp (built up to its service).
        environ: environment for ``NOTIFY_SOCKET`` (tests pass a dict).
        thermal_path: where to read the CPU temperature.
        input_bounce_s: debounce for the inputs (None with mock pins).
    """

    def __init__(self, app: Any, *, environ: dict[str, str] | None = None,
                 thermal_path: Path = THERMAL_PATH, input_bounce_s: float | None = 0.05) -> None:
        self.app = app
        self.service = app.service
        self.clock = self.service.clock
        self.notifier = SystemdNotifier(environ)
        self.thermal_path = thermal_path
        self._input_bounce_s = input_bounce_s
        self.started_mono_s = self.clock.monotonic()
        self.started_wall_s = time.time()
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._mode_path = self.cfg.state_dir / MODE_FILE
        self.modes = load_mode(self._mode_path, self.cfg.commands.reset_required_after_fire)
        self.state = DeviceState.BOOTING
        self.inputs = DeviceInputs(built=False)
        self.listeners: list[Callable[[DeviceState], None]] = []
        self._holding = False
        self._started = False
        self._health_cache: tuple[float, dict[str, Any]] | None = None
        self.remote: Any = None
        self.discovery: Any = None
        self.led: Any = None
        self.gpio_inputs: Any = None
        self.watch: PassageWatch | None = None
        self._passages: queue.SimpleQueue[float] = queue.SimpleQueue()
        self.writer = StatusWriter(status_path(self.cfg.resolve(self.cfg.device.runtime_dir, "run")))

    @property
    def cfg(self) -> Any:
        """The app's current config (provisioning may replace it while running)."""
        return self.app.cfg

    # ------------------------------------------------------------------ build and start

    def attach(self) -> FieldOps:
        """Open the LED and inputs and hook into the service and the shutdown order.

        Raises:
            GpioUnavailable: the status LED or an input pin cannot be claimed.
        """
        app, g = self.app, self.cfg.gpio
        from firmware.app.shutdown import Phase

        app.shutdown.add("notify systemd STOPPING", self.notifier.stopping, Phase.ANNOUNCE)
        app.shutdown.add("close notify socket", self.notifier.close)
        app.shutdown.add("stop monitor", self.stop, Phase.ANNOUNCE)
        if g.status_led_pin >= 0:
            from device.status_led import StatusLed

            self.led = StatusLed(pin_factory=app.pin_factory, pin=g.status_led_pin)
            self.led.show(DeviceState.BOOTING)
            app.shutdown.add("close status LED", self.led.close)
        if g.passage_sensor_pin >= 0:
            self.watch = PassageWatch(self.cfg.commands.pass_timeout_s)
            self.service.on_event.append(self._event_stored)
            app.passage_listeners.append(self.watch.passage_recorded)
        if g.fire_alarm_pin >= 0 or g.passage_sensor_pin >= 0:
            from device.inputs import GpioInputs

            self.gpio_inputs = GpioInputs(
                pin_factory=app.pin_factory, fire_alarm_pin=g.fire_alarm_pin,
                fire_alarm_active_high=g.fire_alarm_active_high, passage_sensor_pin=g.passage_sensor_pin,
                on_fire=self.fire_alarm, on_passage=self._passage_pulse, bounce_s=self._input_bounce_s)
            app.shutdown.add("close inputs", self.gpio_inputs.close)
            self.gpio_inputs.report_fire_level()
        app.shutdown.add("remove status file", self.writer.remove)
        self.service.after_step.append(self.after_step)
        app.state_fields.append(self.state_fields)
        if getattr(app, "link", None) is not None:
            self._attach_mqtt(app.link)
        self.tick()
        return self

    def _attach_mqtt(self, link: Any) -> None:
        """Remote commands, Home Assistant discovery and the retained relay topic."""
        from firmware.adapters.keystore import load_trust_dir
        from firmware.adapters.nonce_file import NONCE_FILE, load_nonces
        from firmware.core.remote_command import CommandVerifier
        from firmware.features.home_assistant import Discovery, discovery_payload, discovery_topic
        from firmware.features.remote_control import RemoteCommands

        cfg, app = self.cfg, self.app
        pulser = getattr(app.outputs, "pulser", None)
        if pulser is not None:
            pulser.add_listener(lambda on: link.publish("relay", "ON" if on else "OFF", qos=1, retain=True))
            link.add_on_connect(lambda: link.publish("relay", "ON" if pulser.energised else "OFF", qos=1,
                                                     retain=True))
        if cfg.mqtt.discovery:
            self.discovery = Discovery(
                link=link, topic=discovery_topic(cfg.mqtt.discovery_prefix, cfg.device.id),
                payload=discovery_payload(device_id=cfg.device.id, base_topic=link.topic("").rstrip("/"),
                                          venue_id=cfg.device.venue_id, bridge=cfg.mqtt.discovery_bridge),
                publish_absolute=link.publish_absolute)
            link.add_on_connect(self.discovery.publish)
            link.subscribe_absolute(f"{cfg.mqtt.discovery_prefix}/status", self.discovery.ha_status)
            app.rebirth_hooks.append(self.discovery.publish)
        if cfg.commands.enabled:
            trust = load_trust_dir(cfg.command_keys_dir, missing_ok=True)
            nonce_path = cfg.state_dir / NONCE_FILE
            verifier = CommandVerifier(device_id=cfg.device.id, keys_for_kid=trust.keys_for,
                                       rate_per_min=cfg.commands.rate_per_min,
                                       max_age_s=cfg.commands.max_age_s,
                                       max_pulse_ms=cfg.gpio.relay_pulse_ms, nonces=load_nonces(nonce_path))
            self.remote = RemoteCommands(link=link, verifier=verifier, nonce_path=nonce_path,
                                         clock=self.clock,
                                         actions={"open": self._cmd_open, "mode": self._cmd_mode,
                                                  "reload": self._cmd_reload, "rebirth": self._cmd_rebirth})
            self.remote.subscribe()
            if len(trust) == 0:
                log.warning("no command keys in %s: every remote command will be refused (unknown_key)",
                            cfg.command_keys_dir)

    # ------------------------------------------------------------------ command actions (MQTT worker)

    def _cmd_open(self, command: Any) -> tuple[dict[str, Any], str | None]:
        with self._lock:
            state = self.state
        if state in (DeviceState.LOCKDOWN, DeviceState.FREE_PASSAGE):
            return {"state": state.value}, state.value  # locked: no; free: already open
        pulse_ms = command.args.get("pulse_ms", self.cfg.gpio.relay_pulse_ms)
        # a remote opening is an opening: recorded before the relay moves, like a grant
        event = self.service.events.build_record(
            decision="granted", reason=Reason.REMOTE_OPEN.value, credential=CredentialType.REMOTE.value,
            code_sha256=hashlib.sha256(command.nonce.encode("utf-8")).hexdigest(),
            wall_s=self.clock.wall(), time_synced=self.clock.wall_trusted(), subject=f"key:{command.kid_hex}",
            display="remote open")
        try:
            # the passage watch belongs to the scan loop thread: not told from this one
            stored = self.service.record(event, skip=(self._event_stored,))
        except StoreError as err:
            log.error("remote open refused, it cannot be recorded: %s", err)
            return {"pulse_ms": 0}, Reason.STORAGE_FULL.value
        self.app.outputs.open_pulse(pulse_ms / 1000.0)
        return {"pulse_ms": pulse_ms, "event_id": stored.event_id, "seq": stored.seq}, None

    def _cmd_mode(self, command: Any) -> tuple[dict[str, Any], str | None]:
        error = self.set_mode(command.args["mode"])
        with self._lock:
            return {"mode": self.modes.mode.value, "state": self.state.value}, error

    def _cmd_reload(self, command: Any) -> tuple[dict[str, Any], str | None]:
        """Run every reload hook (config, lists); the first failure is the answer's error."""
        data: dict[str, Any] = {}
        error = None
        for hook in list(getattr(self.app, "reload_hooks", [])):
            try:
                data.update(hook() or {})
            except (QrGateError, ValueError) as err:
                log.error("reload: %s", err)
                error = error or str(err)
        return data, error

    def _cmd_rebirth(self, command: Any) -> tuple[dict[str, Any], str | None]:
        for hook in list(getattr(self.app, "rebirth_hooks", [])):
            hook()
        state = getattr(getattr(self.app, "publisher", None), "state", None)
        if state is not None:
            state.force()
        return {}, None

    def start(self) -> None:
        """Send READY=1 and start the monitor thread. Idempotent."""
        with self._lock:
            if self._started:
                return
            self._started = True
            self.inputs = replace(self.inputs, built=True)
        self.tick()
        self.notifier.ready(self._status_text())
        self._thread = threading.Thread(target=self._run, name="qrgate-monitor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the monitor thread (shutdown). Safe to call twice."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=2.0)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(MONITOR_PERIOD_S)
            self._wake.clear()
            if self._stop.is_set():
                break
            reload = getattr(self.app, "reload_requested", None)
            if reload is not None and reload.is_set():
                reload.clear()
                try:
                    log.info("reload requested (SIGHUP): %s", self._cmd_reload(None)[0])
                except Exception:  # a failing reload must not stop the monitor
                    log.exception("reload failed")
            try:
                self.tick()
            except Exception:  # the monitor must outlive one bad sample
                log.exception("device monitor tick failed")

    # ------------------------------------------------------------------ inputs and commands

    def fire_alarm(self, active: bool) -> None:
        """The fire-alarm input changed (gpiozero thread): update the latch, wake the monitor."""
        with self._lock:
            before = self.modes
            self.modes = self.modes.fire_alarm(active)
            if self.modes != before:
                log.warning("fire alarm %s", "ACTIVE: passage freed" if active else "cleared")
                self._save_modes()
        self._wake.set()

    def set_mode(self, mode: Mode) -> str | None:
        """Apply a verified ``mode`` command. Returns None, or the error text for the response."""
        with self._lock:
            control, error = self.modes.command(mode)
            if error is None:
                self.modes = control
                self._save_modes()
                log.warning("mode set to %s by a signed command", mode.value)
        self.tick()
        return error

    def _save_modes(self) -> None:
        try:
            save_mode(self._mode_path, self.modes)
        except OSError as err:
            log.error("cannot persist the mode to %s: %s; it will be normal after a restart",
                      self._mode_path, err)

    def _passage_pulse(self) -> None:
        self._passages.put(self.clock.monotonic())

    def _event_stored(self, event: Any) -> None:
        if self.watch is not None:
            self.watch.granted(event, self.clock.monotonic())

    # ------------------------------------------------------------------ scan loop hook

    def after_step(self) -> None:
        """Scan loop thread, after each step: watchdog ping, then passages and unused grants."""
        now = self.clock.monotonic()
        stats = self.service.stats
        self.notifier.ping_if_frames_fresh(now, stats.last_frame_mono_s, self.cfg.camera.max_frame_age_s)
        if self.watch is None:
            return
        while True:
            try:
                self._passages.get_nowait()
            except queue.Empty:
                break
            self.watch.passage()
        for grant in self.watch.expired(now):
            self._record_not_passed(grant)

    def _record_not_passed(self, grant: Any) -> None:
        memory = self.service.gatekeeper.memory
        if grant.subject_key is not None:
            memory.forget_passage(grant.subject_key)
            forget = getattr(getattr(self.app, "passback", None), "forget", None)
            if forget is not None:
                forget(grant.subject_key)
        event = not_passed_event(grant.event, self.clock.wall(), self.clock.wall_trusted())
        try:
            self.service.record(event, skip=(self._event_stored,))
        except StoreError as err:
            log.error("cannot record a not_passed event: %s", err)
            return
        log.info("grant %s was not used within %.0f s: recorded not_passed", grant.event.event_id,
                 self.cfg.commands.pass_timeout_s)

    # ------------------------------------------------------------------ the monitor

    def sample(self) -> DeviceInputs:
        """Gather the device inputs now (monitor thread)."""
        cfg, stats = self.cfg, self.service.stats
        now = self.clock.monotonic()
        last = stats.last_frame_mono_s if stats.last_frame_mono_s is not None else self.started_mono_s
        broker_configured, broker_connected = self._broker()
        storage_alarm, storage_full, fail_closed = self._storage()
        with self._lock:
            modes, built = self.modes, self.inputs.built
        inputs = DeviceInputs(
            built=built, provisioned=bool(cfg.device.venue_id), free_passage=modes.free_passage,
            mode=modes.mode, frame_age_s=max(0.0, now - last), max_frame_age_s=cfg.camera.max_frame_age_s,
            storage_alarm=storage_alarm, storage_full=storage_full, fail_closed=fail_closed,
            clock_trusted=self.clock.wall_trusted(),
            lists_fail_closed=cfg.lists.stale_policy == "fail_closed",
            broker_configured=broker_configured, broker_connected=broker_connected)
        overrides: dict[str, Any] = {}
        for provider in getattr(self.app, "device_inputs", []):
            try:
                overrides.update({k: v for k, v in provider().items() if k in _INPUT_FIELDS})
            except Exception:  # one broken provider must not stop the monitor
                log.exception("device input provider failed")
        return replace(inputs, **overrides) if overrides else inputs

    def _broker(self) -> tuple[bool, bool]:
        link = getattr(self.app, "link", None)
        if not self.cfg.mqtt.host or link is None:
            return bool(self.cfg.mqtt.host), False
        try:
            return True, bool(link.is_connected())
        except Exception:
            return True, False

    def _storage(self) -> tuple[bool, bool, bool]:
        """(storage_alarm, storage_full, fail_closed) from the outbox figures and the app's alarms."""
        alarms_obj = getattr(self.app, "alarms", None)
        alarms = set(alarms_obj.active()) if alarms_obj is not None else set()
        fail_closed = "outbox_unavailable" in alarms
        alarm = bool(alarms & STORAGE_ALARMS)
        stats_fn = getattr(getattr(self.app, "sink", None), "stats", None)
        if stats_fn is None:
            return alarm or fail_closed, False, fail_closed
        try:
            s = stats_fn()
        except Exception:
            return True, False, fail_closed
        level = getattr(s, "alarm_level", 0.0)
        # A quarantined outbox may hold unsent events: the gate fails closed (issue 3) until a
        # technician has recovered them and moved the file out, then reloads or restarts.
        quarantined = bool(getattr(s, "quarantined", ()))
        return alarm or level >= 0.8 or quarantined, level >= 1.0, fail_closed or quarantined

    def tick(self) -> DeviceState:
        """Sample, evaluate and apply the device state. Returns it. Any thread; serialised."""
        with self._lock:
            inputs = self.sample()
            state = evaluate(inputs)
            self.service.gatekeeper.blocked = blocked_reason(inputs)
            self._apply_relay(inputs, state)
            if self.led is not None:
                self.led.show(state)
            previous, self.state, self.inputs = self.state, state, inputs
            if state is not previous:
                log.log(logging.INFO if state is DeviceState.READY else logging.WARNING,
                        "device state %s -> %s", previous.value, state.value)
                self.notifier.status(self._status_text())
                self._changed.notify_all()
            self.writer.maybe_write(self.clock.monotonic(), self.snapshot, state.value)
            listeners = list(self.listeners) if state is not previous else []
        for listener in listeners:
            try:
                listener(state)
            except Exception:
                log.exception("device state listener failed")
        return state

    def _apply_relay(self, inputs: DeviceInputs, state: DeviceState) -> None:
        outputs = self.app.outputs
        want_hold = inputs.free_passage and self.cfg.gpio.free_passage_relay == "hold"
        if want_hold and not self._holding:
            outputs.hold_open()
        elif self._holding and not want_hold:
            outputs.hold_released()
        self._holding = want_hold
        if state is DeviceState.CAMERA_FAULT and self.state is not DeviceState.CAMERA_FAULT and not want_hold:
            outputs.release()  # a camera fault keeps the gate closed

    def wait_for_state(self, state: DeviceState, timeout_s: float) -> bool:
        """Wait until the monitor reaches state (tests). False on timeout."""
        with self._changed:
            return self._changed.wait_for(lambda: self.state is state, timeout_s)

    # ------------------------------------------------------------------ status

    def _status_text(self) -> str:
        fps = self.service.stats.fps()
        return f"{self.state.value}; {fps:.1f} fps; {self.service.stats.decisions} decisions"

    def state_fields(self) -> dict[str, Any]:
        """Fields of the retained MQTT state: device state, mode and health (refreshed every
        ``mqtt.state_interval_s`` so a moving fps does not republish the state twice a second)."""
        now = self.clock.monotonic()
        with self._lock:
            if self._health_cache is None or now - self._health_cache[0] >= self.cfg.mqtt.state_interval_s:
                self._health_cache = (now, self.health())
            return {"device_state": self.state.value, "mode": self.modes.mode.value,
                    "free_passage": self.modes.free_passage, "fire_alarm": self.modes.fire_active,
                    "health": self._health_cache[1]}

    def health(self) -> dict[str, Any]:
        """fps, decode p50/p99, uptime and CPU temperature (for status and the MQTT state)."""
        stats = self.service.stats
        backlog = None
        stats_fn = getattr(getattr(self.app, "sink", None), "stats", None)
        if stats_fn is not None:
            try:
                backlog = stats_fn().unsent
            except Exception:  # a closed or broken outbox: health still reports the rest
                backlog = None
        return {
            "backlog": backlog,
            "fps": round(stats.fps(), 2),
            "decode_p50_ms": round(stats.decode_percentile_ms(50), 3),
            "decode_p99_ms": round(stats.decode_percentile_ms(99), 3),
            "uptime_s": round(self.clock.monotonic() - self.started_mono_s, 1),
            "cpu_temp_c": read_cpu_temp_c(self.thermal_path),
        }

    def snapshot(self) -> dict[str, Any]:
        """The status file's content (monitor thread)."""
        cfg, app, stats = self.cfg, self.app, self.service.stats
        now_mono, now_wall = self.clock.monotonic(), time.time()
        health = self.health()
        last_frame_age = (now_mono - stats.last_frame_mono_s) if stats.last_frame_mono_s is not None else None
        outbox: dict[str, Any] = {"backlog": None, "oldest_unsent_age_s": None}
        stats_fn = getattr(getattr(app, "sink", None), "stats", None)
        if stats_fn is not None:
            try:
                o = stats_fn()
                outbox = {"backlog": o.unsent, "oldest_unsent_age_s":
                          None if o.oldest_unsent_s is None else max(0.0, now_wall - o.oldest_unsent_s),
                          "fill": round(o.fill, 4), "alarm_level": o.alarm_level}
            except Exception as err:
                outbox["error"] = str(err)
        last = stats.last_event
        outputs = app.outputs
        snap: dict[str, Any] = {
            "schema": STATUS_SCHEMA, "pid": os.getpid(), "written_at": rfc3339_ms(now_wall),
            "written_wall_s": now_wall, "state": self.state.value, "device_id": cfg.device.id,
            "venue_id": cfg.device.venue_id, "direction": cfg.device.direction, "version": __version__,
            "boot_id": app.boot_id, "started_at": rfc3339_ms(self.started_wall_s),
            "uptime_s": health["uptime_s"], "mode": self.modes.mode.value,
            "free_passage": self.modes.free_passage, "fire_alarm": self.modes.fire_active,
            "relay": "ON" if getattr(getattr(outputs, "pulser", None), "energised", False) else "OFF",
            "camera": {"fps": health["fps"], "frames": stats.frames,
                       "last_frame_age_s": None if last_frame_age is None else round(last_frame_age, 3),
                       "max_frame_age_s": cfg.camera.max_frame_age_s},
            "decode": {"p50_ms": health["decode_p50_ms"], "p99_ms": health["decode_p99_ms"]},
            "outbox": outbox,
            "broker": {"configured": bool(cfg.mqtt.host), "connected": self._broker()[1],
                       "address": f"{cfg.mqtt.host}:{cfg.mqtt.port}" if cfg.mqtt.host else ""},
            "lists": {},
            "clock": {"trusted": self.inputs.clock_trusted, "synced": TIMESYNC_FLAG.exists()},
            "decisions": stats.decisions, "granted": stats.granted,
            "last_decision": None if last is None else {
                "ts": last.ts, "decision": last.decision, "reason": last.reason,
                "credential": last.credential,
                "display": last.display, "code_sha256_prefix": last.code_sha256[:12]},
            "health": {"cpu_temp_c": health["cpu_temp_c"]},
            "passage": None if self.watch is None else {"waiting": self.watch.waiting,
                                                        "passed": self.watch.passed},
        }
        for provider in getattr(app, "status_fields", []):
            try:
                snap.update(provider())
            except Exception as err:  # one broken provider must not stop the status file
                log.warning("status provider failed: %s", err)
        return snap

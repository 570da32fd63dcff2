"""What the gate reports about itself: the status file (``qrgate status``) and the retained MQTT state.

``StatusReport`` observes the device monitor: after every tick it writes the status file
when the state changed or its interval passed. It also gives the MQTT state its
``health`` block (fps, decode times, uptime, CPU temperature), refreshed at most every
``state_interval_s`` so a moving fps does not republish the state twice a second.

``EventsSummary`` gives the MQTT state its events part: version, boot id, camera, scan
counts, outbox backlog and the active alarms.

Both read only: loop statistics, the sink's figures, the relay level, the identity and the
other features' ``StatusSource`` fields.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from firmware import __version__
from firmware.alarms import Alarms
from firmware.core.device_state import DeviceInputs, DeviceState, ModeControl
from firmware.core.events import rfc3339_ms
from firmware.core.gatekeeper import LoopStats
from firmware.core.identity import IdentityCell
from firmware.core.status_view import STATUS_SCHEMA
from firmware.ports import Clock, EventSink, Link, Outputs, StatusFile, StatusSource

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReportSettings:
    """What the report needs from the config and the process.

    Attributes:
        device_id: this gate.
        boot_id: random id of this daemon start.
        pid: the daemon's process id (``qrgate status`` checks it is alive).
        max_frame_age_s: ``camera.max_frame_age_s``.
        state_interval_s: ``mqtt.state_interval_s`` (health refresh for the MQTT state).
        broker_address: ``host:port``, or "" without a broker.
    """

    device_id: str
    boot_id: str
    pid: int
    max_frame_age_s: float = 3.0
    state_interval_s: float = 60.0
    broker_address: str = ""


class StatusReport:
    """The status file and the ``health`` part of the MQTT state.

    Args:
        clock: the gate's clock (monotonic for ages, wall for timestamps).
        stats: the scan loop's statistics.
        sink: the event sink (backlog figures).
        outputs: the relay level.
        identity: venue and direction in force.
        link: the MQTT link, or None.
        status_file: where the snapshot goes.
        settings: see ReportSettings.
        sources: other features' fields merged into the snapshot (provisioning, lists, passage).
        cpu_temp_c: reads the CPU temperature (None where unknown).
        clock_synced: reads the time-sync flag.
    """

    def __init__(self, *, clock: Clock, stats: LoopStats, sink: EventSink, outputs: Outputs, identity: IdentityCell,
                 link: Link | None, status_file: StatusFile, settings: ReportSettings,
                 sources: Sequence[StatusSource] = (), cpu_temp_c: Callable[[], float | None] = lambda: None,
                 clock_synced: Callable[[], bool] = lambda: False) -> None:
        self.clock, self.stats, self.sink, self.outputs = clock, stats, sink, outputs
        self.identity, self.link, self.status_file, self.settings = identity, link, status_file, settings
        self._sources = tuple(sources)
        self._cpu_temp_c, self._clock_synced = cpu_temp_c, clock_synced
        self.started_mono_s = clock.monotonic()
        self.started_wall_s = clock.wall()
        self._lock = threading.Lock()
        self._last: tuple[DeviceState, DeviceInputs, ModeControl] | None = None
        self._health_cache: tuple[float, dict[str, Any]] | None = None

    def start(self) -> None:
        """Nothing to start: the device monitor's ticks drive the status file."""

    def stop(self) -> None:
        """Remove the status file (a clean stop): ``qrgate status`` then says not running."""
        self.status_file.remove()

    # ------------------------------------------------------------------ monitor observer

    def monitor_ticked(self, state: DeviceState, inputs: DeviceInputs, modes: ModeControl) -> None:
        """Write the status file when the state changed or its interval passed."""
        with self._lock:
            self._last = (state, inputs, modes)
        self.status_file.maybe_write(self.clock.monotonic(), self.snapshot, state.value)

    # ------------------------------------------------------------------ health and snapshot

    def health(self) -> dict[str, Any]:
        """fps, decode p50/p99, uptime, backlog and CPU temperature."""
        stats = self.stats
        try:
            backlog: int | None = self.sink.stats().unsent
        except Exception:  # a closed or broken outbox: health still reports the rest
            backlog = None
        return {
            "backlog": backlog,
            "fps": round(stats.fps(), 2),
            "decode_p50_ms": round(stats.decode_percentile_ms(50), 3),
            "decode_p99_ms": round(stats.decode_percentile_ms(99), 3),
            "uptime_s": round(self.clock.monotonic() - self.started_mono_s, 1),
            "cpu_temp_c": self._cpu_temp_c(),
        }

    def status_fields(self) -> dict[str, Any]:
        """The MQTT state's ``health`` block, refreshed at most every ``state_interval_s``."""
        now = self.clock.monotonic()
        with self._lock:
            if self._health_cache is None or now - self._health_cache[0] >= self.settings.state_interval_s:
                self._health_cache = (now, self.health())
            return {"health": self._health_cache[1]}

    def snapshot(self) -> dict[str, Any]:
        """The status file's content."""
        with self._lock:
            last = self._last
        state, inputs, modes = last if last is not None else (DeviceState.BOOTING, DeviceInputs(built=False),
                                                              ModeControl())
        stats, settings, identity = self.stats, self.settings, self.identity.current
        now_mono, now_wall = self.clock.monotonic(), self.clock.wall()
        health = self.health()
        last_frame_age = (now_mono - stats.last_frame_mono_s) if stats.last_frame_mono_s is not None else None
        outbox: dict[str, Any] = {"backlog": None, "oldest_unsent_age_s": None}
        try:
            o = self.sink.stats()
            outbox = {"backlog": o.unsent, "oldest_unsent_age_s":
                      None if o.oldest_unsent_s is None else max(0.0, now_wall - o.oldest_unsent_s),
                      "fill": round(o.fill, 4), "alarm_level": o.alarm_level}
            if o.problem is not None:
                outbox["error"] = o.problem
        except Exception as err:
            outbox["error"] = str(err)
        try:
            connected = self.link is not None and bool(self.link.is_connected())
        except Exception:
            connected = False
        event = stats.last_event
        snap: dict[str, Any] = {
            "schema": STATUS_SCHEMA, "pid": settings.pid, "written_at": rfc3339_ms(now_wall),
            "written_wall_s": now_wall, "state": state.value, "device_id": settings.device_id,
            "venue_id": identity.venue_id, "direction": identity.direction, "version": __version__,
            "boot_id": settings.boot_id, "started_at": rfc3339_ms(self.started_wall_s),
            "uptime_s": health["uptime_s"], "mode": modes.mode.value,
            "free_passage": modes.free_passage, "fire_alarm": modes.fire_active,
            "relay": "ON" if self.outputs.relay_energised() else "OFF",
            "camera": {"fps": health["fps"], "frames": stats.frames,
                       "last_frame_age_s": None if last_frame_age is None else round(last_frame_age, 3),
                       "max_frame_age_s": settings.max_frame_age_s},
            "decode": {"p50_ms": health["decode_p50_ms"], "p99_ms": health["decode_p99_ms"]},
            "outbox": outbox,
            "broker": {"configured": bool(settings.broker_address), "connected": connected,
                       "address": settings.broker_address},
            "lists": {},
            "clock": {"trusted": inputs.clock_trusted, "synced": self._clock_synced()},
            "decisions": stats.decisions, "granted": stats.granted,
            "last_decision": None if event is None else {
                "ts": event.ts, "decision": event.decision, "reason": event.reason,
                "credential": event.credential,
                "display": event.display, "code_sha256_prefix": event.code_sha256[:12]},
            "health": {"cpu_temp_c": health["cpu_temp_c"]},
            "passage": None,
        }
        for source in self._sources:
            try:
                snap.update(source.status_fields())
            except Exception as err:  # one broken source must not stop the status file
                log.warning("status source %s failed: %s", type(source).__name__, err)
        return snap


class EventsSummary:
    """The events part of the retained MQTT state.

    Args:
        clock: the gate's clock.
        stats: the scan loop's statistics.
        sink: the event sink.
        alarms: the gate's alarms.
        device_id, boot_id: this gate and this start.
        max_frame_age_s: a camera silent this long is ``stale``.
    """

    def __init__(self, *, clock: Clock, stats: LoopStats, sink: EventSink, alarms: Alarms, device_id: str,
                 boot_id: str, max_frame_age_s: float) -> None:
        self.clock, self.stats, self.sink, self.alarms = clock, stats, sink, alarms
        self.device_id, self.boot_id, self.max_frame_age_s = device_id, boot_id, max_frame_age_s

    def status_fields(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"version": __version__, "device_id": self.device_id, "boot_id": self.boot_id,
                               "mode": "normal"}
        stats = self.stats
        last = stats.last_frame_mono_s
        fresh = last is not None and self.clock.monotonic() - last <= self.max_frame_age_s
        doc["camera"] = "ok" if fresh or stats.input_ended else "stale"
        doc["scans"] = stats.decisions
        doc["granted"] = stats.granted
        s = self.sink.stats()
        if s.problem is None:
            doc["broker_backlog"] = s.unsent
            doc["outbox_fill"] = round(s.fill, 3)
            oldest = s.oldest_unsent_s
            # Whole minutes: the state is re-published on change, not every second.
            doc["oldest_unsent_age_min"] = None if oldest is None else int(
                max(0.0, self.clock.wall() - oldest) // 60)
            doc["seq"] = s.seq_high
        doc["alarms"] = self.alarms.active()
        return doc

"""The small ports the gate's loop and features talk through.

Each port states its timing contract. Adapters live in ``device`` (camera, decoders, GPIO)
and in ``firmware/adapters`` (storage, MQTT, systemd, files); the composition root
(``firmware/app``) builds them and hands them to the features through their constructors.
Ports import only ``firmware.core``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractContextManager
from typing import Any, Protocol

from firmware.core.credentials.dcc_trust import DscStore
from firmware.core.device_state import DeviceState, Mode, ModeControl
from firmware.core.lists import ListSnapshot
from firmware.core.model import Decision, DecodedCode, Frame, Moment, OutboxStats, ScanEvent
from firmware.core.remote_command import NonceCache

# paho-style message handler: (topic, payload, retained, MQTT 5 properties as a dict)
MessageHandler = Callable[[str, bytes, bool, dict[str, Any]], None]


# --------------------------------------------------------------------------- the scan loop's ports

class FrameSource(Protocol):
    """Where frames come from: the camera, or image files replayed as a camera.

    Attributes:
        live: True for a camera, where two identical frames in a row mean a frozen capture;
            False for replayed images, which repeat on purpose.
    """

    live: bool

    def read(self, timeout_s: float) -> Frame | None:
        """Return the next greyscale frame, or None if none arrived within timeout_s.

        Blocks at most timeout_s (it never busy-loops when there is nothing to read).

        Raises:
            CameraUnavailable: the source failed and will not deliver again without a restart.
            EOFError: a finite replay source has run out of frames.
        """
        ...

    def flush_next(self) -> None:
        """Make the next read return a frame captured after this call (after a relay pulse,
        so an old buffered frame cannot show the same code again). Returns at once."""
        ...

    def close(self) -> None:
        """Release the camera. Safe to call twice."""
        ...


class Decoder(Protocol):
    """Finds QR codes in a frame."""

    def decode(self, frame: Frame) -> list[DecodedCode]:
        """Return every QR symbol in the frame (empty list if none). Blocks for the decode only.

        Raises:
            DecodeError: the library failed on this frame; the caller skips the frame.
        """
        ...


class Outputs(Protocol):
    """The relay, LEDs and buzzer. Every call returns at once unless it says otherwise; the
    relay release is timed on a background thread, independent of the caller."""

    def show(self, decision: Decision) -> None:
        """Start the relay pulse (if granted) and the LED/buzzer pattern."""
        ...

    def open_pulse(self, pulse_s: float | None = None) -> None:
        """Open once without a decision (a signed remote ``open``): one relay pulse of pulse_s
        (default: the configured pulse) and the granted pattern."""
        ...

    def confirm(self, accepted: bool) -> None:
        """The provisioning feedback: two long green+buzzer pulses when accepted, the denial
        pattern when refused. Never moves the relay."""
        ...

    def hold_open(self) -> None:
        """Free passage: energise the relay and keep it so until ``hold_released``."""
        ...

    def hold_released(self) -> None:
        """End free passage: release a held relay (a pulse in progress runs out)."""
        ...

    def release(self) -> None:
        """Drive the relay to its off level now and stop every pattern. Never raises."""
        ...

    def lock_out(self) -> None:
        """Shutdown step 1: release the relay and refuse every later pulse. Never raises."""
        ...

    def relay_energised(self) -> bool:
        """True while the relay is driven to its on level."""
        ...

    def add_relay_listener(self, listener: Callable[[bool], None]) -> None:
        """Call listener(energised) on the relay thread at every change (keep it quick)."""
        ...

    def wait_idle(self, timeout_s: float) -> bool:
        """Block until no pulse or pattern is running, at most timeout_s. False on timeout."""
        ...

    def close(self) -> None:
        """Release the pins. Safe to call twice."""
        ...


class EventSink(Protocol):
    """Durable storage for scan events (the SQLite outbox, or a sink that refuses)."""

    def append(self, event: ScanEvent) -> ScanEvent:
        """Store the event durably and return it with ``event_id`` and ``seq`` filled in.

        Returns only after the event is committed to disk. Thread-safe.

        Raises:
            StoreError: the event could not be stored (for example the disk is full).
        """
        ...

    def stats(self) -> OutboxStats:
        """A snapshot of the figures (backlog, fill, alarm level, quarantine, problem).
        Quick (no disk read). Thread-safe."""
        ...

    def close(self) -> None:
        """Flush and close. Safe to call twice."""
        ...


class Clock(Protocol):
    """Time, injected so that tests can move it."""

    def monotonic(self) -> float:
        """Seconds from an arbitrary start, never going backwards."""
        ...

    def wall(self) -> float:
        """Unix seconds, possibly wrong on a Pi without a real-time clock."""
        ...

    def wall_trusted(self) -> bool:
        """True when the wall clock can be used for validity checks."""
        ...


class CodeInterceptor(Protocol):
    """Sees every code before the policy (provisioning codes). Scan loop thread."""

    def intercept(self, code: DecodedCode, now: Moment) -> bool:
        """Return True if the code was consumed here (no scan decision for it)."""
        ...


class EventListener(Protocol):
    """Told about every stored event (scan decisions and records). Must return quickly; a
    failure is logged, never fatal."""

    def event_stored(self, event: ScanEvent) -> None:
        """The event was committed to the sink (it has ``event_id`` and ``seq``)."""
        ...


class Recorder(Protocol):
    """Records an event that is not a scan decision (``provisioned``, a remote open, ``not_passed``)
    and tells the gate's event listeners, as for a scan."""

    def append(self, event: ScanEvent) -> ScanEvent:
        """Store event durably; return it with ``event_id`` and ``seq``. Thread-safe.

        Raises:
            StoreError: it could not be stored; nobody was told.
        """
        ...


class LoopObserver(EventListener, Protocol):
    """A feature that runs on the scan loop thread: after each step, and for each scan event."""

    def after_step(self) -> None:
        """After every loop step (watchdog ping, timers). Must return quickly."""
        ...


# --------------------------------------------------------------------------- what features offer

class Feature(Protocol):
    """One capability of the running gate, built with everything it uses (HOUSE_STYLE section 1)."""

    def start(self) -> None:
        """Begin work: subscribe, start a thread. Before the MQTT link starts (subscriptions go out
        with the first connect), except the device monitor, which starts with the scan loop."""
        ...

    def stop(self) -> None:
        """End work in the shutdown order. Safe to call twice."""
        ...


class StatusSource(Protocol):
    """Contributes fields to the status file and the retained MQTT ``state``."""

    def status_fields(self) -> dict[str, Any]:
        """The current fields (JSON values). Quick, never blocks; any thread."""
        ...


class DeviceInputSource(Protocol):
    """Contributes inputs of the device state (``DeviceInputs`` field overrides)."""

    def device_inputs(self) -> dict[str, Any]:
        """For example ``{"lists_stale": True}``. Quick; called on the monitor thread."""
        ...


class Reloadable(Protocol):
    """Something ``reload`` (SIGHUP, the signed ``reload`` command) refreshes."""

    def reload(self) -> dict[str, Any]:
        """Reload and return what to report.

        Raises:
            QrGateError, ValueError: the reload failed; what was in force stays in force.
        """
        ...


class Republisher(Protocol):
    """Publishes its retained topics again (the ``rebirth`` command)."""

    def republish(self) -> None:
        """Publish again now. Returns at once."""
        ...


class RestartRequest(Protocol):
    """Ends the run with ``EX_RESTART`` (75) so that systemd starts the gate again."""

    def request_restart(self, why: str) -> None:
        """Ask for a clean stop and a restart. Returns at once; any thread."""
        ...


# --------------------------------------------------------------------------- the features' adapters

class Link(Protocol):
    """The gate's MQTT connection (one client, topics under ``<prefix>/<device_id>/``).

    Handlers run on the link's worker thread, never on paho's network thread.
    """

    def topic(self, subtopic: str) -> str:
        """The absolute topic of a subtopic of this gate."""
        ...

    def publish(self, subtopic: str, payload: str | bytes, qos: int = 1, retain: bool = False) -> bool:
        """Queue a message on this gate's subtopic. False when paho refused it. Never blocks."""
        ...

    def publish_absolute(self, topic: str, payload: str | bytes, qos: int = 1, retain: bool = False) -> bool:
        """Queue a message on any topic. False when paho refused it. Never blocks."""
        ...

    def subscribe(self, subtopic_filter: str, handler: MessageHandler, qos: int = 1) -> None:
        """Subscribe (now and after every reconnect) to a filter under this gate's topic."""
        ...

    def subscribe_absolute(self, topic_filter: str, handler: MessageHandler, qos: int = 1) -> None:
        """Subscribe (now and after every reconnect) to any filter."""
        ...

    def add_on_connect(self, callback: Callable[[], None]) -> None:
        """Run callback on the worker thread after each connect, once subscriptions are confirmed."""
        ...

    def is_connected(self) -> bool:
        """True while the connection is up."""
        ...


class Notifier(Protocol):
    """The service manager (systemd ``sd_notify``); a no-op outside systemd."""

    def ready(self, status: str = "") -> bool:
        """READY=1 with a status line."""
        ...

    def status(self, text: str) -> bool:
        """STATUS=text."""
        ...

    def stopping(self) -> bool:
        """STOPPING=1 (shutdown step 2)."""
        ...

    def ping_if_frames_fresh(self, now_mono_s: float, last_frame_mono_s: float | None,
                             max_frame_age_s: float) -> bool:
        """WATCHDOG=1 only while the last frame is younger than max_frame_age_s (loop thread)."""
        ...

    def close(self) -> None:
        """Close the socket."""
        ...


class StatusIndicator(Protocol):
    """The status LED: one blink code per device state."""

    def show(self, state: DeviceState) -> None:
        """Play the code of state from now on. Returns at once."""
        ...

    def close(self) -> None:
        """Turn off and release the pin."""
        ...


class StatusFile(Protocol):
    """The status file read by ``qrgate status``."""

    def maybe_write(self, now_mono_s: float, snapshot_fn: Callable[[], dict[str, Any]], state: str) -> bool:
        """Write snapshot_fn() when state changed or the interval passed. True if written."""
        ...

    def remove(self) -> None:
        """Remove the file (clean stop)."""
        ...


class ModeStore(Protocol):
    """Where the operator mode and the fire latch persist across restarts."""

    def load(self, reset_required_after_fire: bool) -> ModeControl:
        """The persisted control; normal when missing or unreadable (logged)."""
        ...

    def save(self, control: ModeControl) -> None:
        """Persist atomically.

        Raises:
            OSError: the file cannot be written.
        """
        ...


class NonceStore(Protocol):
    """Where used remote-command nonces persist (replay protection across restarts)."""

    def load(self) -> NonceCache:
        """The persisted cache; empty when missing or unreadable (logged)."""
        ...

    def save(self, cache: NonceCache) -> None:
        """Persist atomically and durably, before the command is acted on.

        Raises:
            OSError: the file cannot be written.
        """
        ...


class ProvisioningStore(Protocol):
    """The small durable state: the provisioning record and used provisioning nonces."""

    def get(self, key: str) -> Any:
        """The value stored under key, or None."""
        ...

    def put(self, key: str, value: Any) -> None:
        """Store value under key (inside ``batch`` it is written with the batch).

        Raises:
            StoreError: it cannot be written.
        """
        ...

    def nonce_used(self, nonce_hex: str) -> bool:
        """True if the nonce was recorded before."""
        ...

    def add_nonce(self, nonce_hex: str, expires_s: float, now_s: float) -> None:
        """Record a used nonce until it expires."""
        ...

    def batch(self) -> AbstractContextManager[None]:
        """Group writes into one atomic write."""
        ...

    def alarm(self) -> dict[str, Any] | None:
        """The alarm left by a damaged file at open, or None."""
        ...

    def clear_alarm(self) -> None:
        """Forget that alarm (a new record was written)."""
        ...


class ListFiles(Protocol):
    """The deny and allow lists on disk (written atomically; the old list stays on a failure)."""

    def load(self, kind: str) -> ListSnapshot:
        """Read one list.

        Raises:
            StoreError: the file is damaged.
        """
        ...

    def replace(self, kind: str, ids: Iterable[str], *, updated_s: float, source: str,
                version: int | None = None, current: ListSnapshot | None = None,
                ends: Mapping[str, int] | None = None) -> ListSnapshot:
        """Write a whole new list; ``ends`` holds the ``until`` (Unix seconds) of entries that end.

        Raises:
            ValueError: the version is not above the current one.
            StoreError: it cannot be written.
        """
        ...

    def apply_delta(self, kind: str, *, add: Iterable[str], remove: Iterable[str], updated_s: float,
                    source: str, version: int | None = None, base_version: int | None = None,
                    current: ListSnapshot | None = None, ends: Mapping[str, int] | None = None) -> ListSnapshot:
        """Write the list with ids added (with their ``until`` from ``ends``, or none) and removed.

        Raises:
            ValueError: the base or new version does not fit the current list.
            StoreError: it cannot be written.
        """
        ...


class DccTrustFile(Protocol):
    """The installed DCC trust list (``keys.dcc_trust_list``)."""

    def write(self, store: DscStore, *, installed_at_s: float, list_sha256: str, version: int | None = None) -> None:
        """Install store atomically.

        Raises:
            OSError: it cannot be written (the old list stays).
        """
        ...


class PassbackLog(Protocol):
    """Where recent passages persist, so anti-passback survives a restart."""

    def record(self, key: str, direction: str, wall_s: float) -> None:
        """Record one passage (never raises; a failure is logged)."""
        ...

    def forget(self, key: str) -> None:
        """Drop the last passage of key (a grant that was not used)."""
        ...


class GateControl(Protocol):
    """The operator's controls of a running gate (the device monitor), for remote commands."""

    def current_state(self) -> DeviceState:
        """The device state as of the last sample."""
        ...

    def current_mode(self) -> Mode:
        """The operator mode."""
        ...

    def set_mode(self, mode: Mode) -> str | None:
        """Apply a verified ``mode`` command; None, or the refusal text."""
        ...

    def reload(self) -> tuple[dict[str, Any], str | None]:
        """Run every reload; what they report, and the first failure's text or None."""
        ...

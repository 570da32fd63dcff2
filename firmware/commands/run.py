"""`qrgate run`: the daemon."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from functools import partial
from typing import TYPE_CHECKING

from device.pin_watch import PinChange, PinWatch, describe_change, roles_from_gpio
from firmware.adapters.config_file import load_config
from firmware.adapters.process import install_signal_handlers
from firmware.core.config import DEFAULT_CONFIG_PATH
from firmware.core.errors import ConfigError, HardwareError, QrGateError
from firmware.core.model import ScanEvent

if TYPE_CHECKING:
    from firmware.app.builder import GateApp

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run the gate daemon", description="Run the gate: camera, decoder, "
                       "policy, relay and event recording, until SIGTERM or SIGINT.")
    p.add_argument("--config", default=str(DEFAULT_CONFIG_PATH), help="TOML config file (default: %(default)s)")
    p.add_argument("--exit-at-end", action="store_true",
                   help="stop cleanly when a dir:/file: source runs out of images")
    p.add_argument("--print-events", action="store_true",
                   help="also print every stored scan event as one JSON line on stdout")
    p.add_argument("--drain-timeout-s", type=float, default=30.0,
                   help="with --exit-at-end and a broker: wait at most this long for the outbox to drain")
    p.add_argument("--pin-log", metavar="FILE",
                   help="with gpio.pin_factory = \"mock\": write every simulated pin's level history "
                        "as JSON to FILE at exit: levels per pin, the role of each pin (relay, green, red, "
                        "buzzer, status) and every change with its time in ms since start")
    p.add_argument("--print-outputs", action="store_true",
                   help="with gpio.pin_factory = \"mock\": print one readable line per relay, LED or "
                        "buzzer change on stderr, e.g. \"[  1.20s] relay ENERGISED (turnstile free)\"")
    p.set_defaults(func=run_command)


FEEDBACK_SETTLE_S = 10.0


def write_pin_log(watch: PinWatch | None, factory: object, path: str) -> None:
    """Write the simulated pins' history as JSON (see ``device.pin_watch.PinWatch.log``)."""
    if watch is None or not isinstance(getattr(factory, "pins", None), dict):
        log.error("--pin-log needs gpio.pin_factory = \"mock\"; no pin log written")
        return
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(watch.log(factory), fh, sort_keys=True)


def print_output_change(change: PinChange, relay_active_high: bool) -> None:
    """One readable line per simulated output change, as the demo prints them (stderr)."""
    text = describe_change(change.role, change.level, relay_active_high)
    sys.stderr.write(f"[{change.t_ms / 1000.0:6.2f}s] {change.pin:<7} {text}\n")
    sys.stderr.flush()


def print_event(event: ScanEvent) -> None:
    """Write one stored event as a JSON line on stdout (flushed: scripts read it live)."""
    sys.stdout.write(json.dumps(event.to_json_dict(), ensure_ascii=False, separators=(",", ":")) + "\n")
    sys.stdout.flush()




def ready_line(app: GateApp) -> str:
    """The one "ready" line of a start: venue (and where it came from), direction, decoder, broker."""
    eff, cfg = app.effective, app.cfg
    venue = cfg.device.venue_id or "unprovisioned"
    if eff is not None and eff.venue_name:
        venue += f" ({eff.venue_name})"
    source = eff.sources.get("device.venue_id", "") if eff is not None else ""
    broker = f"{cfg.mqtt.host}:{cfg.mqtt.port}" if cfg.mqtt.host else "none"
    return (f"gate {cfg.device.id} ready: venue {venue}{f' [{source}]' if source and cfg.device.venue_id else ''}, "
            f"direction {cfg.device.direction}, decoder {cfg.decoder.backend}, broker {broker}")


def run_command(args: argparse.Namespace) -> int:
    from firmware.app.builder import GateApp

    cfg = load_config(args.config)
    stop = threading.Event()
    install_signal_handlers(stop)
    watch = None
    if cfg.gpio.pin_factory == "mock" and (args.pin_log or args.print_outputs):
        on_change = partial(print_output_change, relay_active_high=cfg.gpio.relay_active_high) \
            if args.print_outputs else None
        watch = PinWatch(roles_from_gpio(cfg.gpio), on_change=on_change)
    elif args.print_outputs:
        log.error("--print-outputs needs gpio.pin_factory = \"mock\"; real pins are not reported")
    app = GateApp(cfg, on_event=[print_event] if args.print_events else (), empty_source_ok=args.exit_at_end,
                  pin_factory=watch.factory() if watch is not None else None)
    # systemctl reload (ExecReload=kill -HUP): the device monitor runs the reload hooks
    signal.signal(signal.SIGHUP, lambda signum, frame: app.reload_requested.set())
    app.drain_timeout_s = args.drain_timeout_s
    try:
        try:
            app.build()
        except HardwareError as err:
            log.error("cannot start: %s", err)
            return 1
        log.info("%s", ready_line(app))
        while not stop.is_set():
            app.run(stop)
            if app.service is not None and app.service.input_ended:
                if args.exit_at_end:
                    # let the last pulse and feedback pattern finish before the ordered shutdown
                    app.outputs.wait_idle(FEEDBACK_SETTLE_S)
                    if app.publisher is not None and not app.wait_drained(args.drain_timeout_s):
                        log.warning("outbox not drained within %.0f s; the rest stays on disk",
                                    args.drain_timeout_s)
                    break
                stop.wait()
        log.info("gate %s stopping%s", cfg.device.id,
                 f" to be restarted ({app.restart_reason})" if app.exit_status else "")
        return app.exit_status  # 75 after a provisioning that changed the broker: systemd restarts us
    except ConfigError:
        raise  # the CLI prints every problem and exits 78, so systemd does not restart-loop
    except QrGateError as err:
        log.error("stopped: %s", err)
        return 1
    finally:
        app.close()
        if args.pin_log:
            write_pin_log(watch, app.pin_factory, args.pin_log)

"""`qrgate cmd send|bridge`: signed remote commands from the operator side.

``send`` signs one command, sends it to a gate and prints the gate's answer. Exit status:
0 the gate answered ``ok``; 1 it answered an error; 4 no answer in time.

``bridge`` runs until SIGTERM: it signs Home Assistant's dashboard presses and forwards them
(``provisioning.command_bridge``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from firmware.core.errors import ConfigError
from firmware.core.remote_command import COMMANDS

EXIT_NO_ANSWER = 4


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("cmd", help=f"send a signed remote command to a gate ({', '.join(COMMANDS)})")
    cs = p.add_subparsers(dest="cmd_command", metavar="ACTION", required=True)
    s = cs.add_parser("send", help="sign, send, wait for the answer and print it",
                      description="Examples: `qrgate cmd send --key ops.pem --broker mqtt.lan:8883 --tls-ca ca.pem "
                      "--device gate-1 open`; `... mode lockdown`; `... mode normal`; `... rebirth`.")
    s.add_argument("--key", required=True, help="command signing key (Ed25519 private PEM, `qrgate keys new "
                   "--role command`); the gate must trust its public key (`qrgate keys trust --role command`)")
    s.add_argument("--broker", required=True, metavar="HOST:PORT", help="MQTT broker")
    s.add_argument("--device", required=True, help="the gate's device id")
    s.add_argument("--prefix", default="qrgate", help="topic prefix (default: %(default)s)")
    s.add_argument("--venue", default=None, metavar="VENUE_ID",
                   help="the gate's venue id, signed into the command (default: the venue in the gate's "
                   "retained state; \"\" for a gate not yet provisioned)")
    s.add_argument("--ttl-s", type=float, default=10.0, help="validity of the command, at most 30 s "
                   "(default: %(default)s)")
    s.add_argument("--timeout-s", type=float, default=10.0, help="wait this long for the answer (default: %(default)s)")
    s.add_argument("--transaction", default=None, help="transaction id echoed in the answer (default: random)")
    s.add_argument("--pulse-ms", type=int, default=None, help="open: pulse length (at most the gate's relay_pulse_ms)")
    _add_broker_login(s)
    s.add_argument("command", choices=COMMANDS, help="what to do")
    s.add_argument("argument", nargs="?", help="for mode: normal, lockdown or free_passage")
    s.set_defaults(func=cmd_send)

    b = cs.add_parser("bridge", help="sign Home Assistant's dashboard presses and forward them to the gates",
                      description="Home Assistant cannot sign. With mqtt.discovery_bridge = true on the gates, "
                      "their open button and mode select publish on <prefix>/<device>/dashboard/<name>; this "
                      "bridge signs each press with --key and sends it to cmd/<name>. Let only Home "
                      "Assistant's login write to <prefix>/+/dashboard/# (broker ACL). Runs until SIGTERM.")
    b.add_argument("--key", required=True, help="command signing key the gates trust")
    b.add_argument("--broker", required=True, metavar="HOST:PORT", help="MQTT broker")
    b.add_argument("--prefix", default="qrgate", help="topic prefix (default: %(default)s)")
    b.add_argument("--allow", default="open,mode", help="commands to forward, from open, mode, rebirth "
                   "(default: %(default)s)")
    b.add_argument("--ttl-s", type=float, default=10.0, help="validity of each signed command (default: %(default)s)")
    b.add_argument("--venue", default="", metavar="VENUE_ID",
                   help="the bridged gates' venue id (signed into each command)")
    b.add_argument("--gate", action="append", required=True, metavar="DEVICE_ID",
                   help="a gate whose dashboard presses the bridge signs (repeat for each gate); presses "
                   "for any other gate are ignored")
    _add_broker_login(b)
    b.set_defaults(func=cmd_bridge)


def _add_broker_login(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tls-ca", default="", help="CA certificate (enables TLS)")
    p.add_argument("--tls-cert", default="", help="client certificate")
    p.add_argument("--tls-key", default="", help="client certificate key")
    p.add_argument("--username", default="", help="broker user name")
    p.add_argument("--password-file", default="", help="file holding the broker password")


def _broker(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"--broker {text!r} must be HOST:PORT, for example mqtt.example.lan:8883")
    return host, int(port)


def _login(args: argparse.Namespace, host: str, port: int):
    """The Broker from --broker and the TLS and login options (see _add_broker_login)."""
    from provisioning.mqtt_request import Broker

    password = Path(args.password_file).read_text().strip() if args.password_file else ""
    return Broker(host, port, tls_ca=args.tls_ca, tls_cert=args.tls_cert, tls_key=args.tls_key,
                  username=args.username, password=password)


def cmd_send(args: argparse.Namespace) -> int:
    from firmware.core.device_state import Mode
    from provisioning.commands import build_envelope, send_command
    from provisioning.keys import load_private_key
    from provisioning.mqtt_request import Target

    host, port = _broker(args.broker)
    command_args: dict[str, object] = {}
    if args.command == "mode":
        try:
            command_args["mode"] = Mode.parse(args.argument or "").value
        except ValueError as err:
            raise ConfigError(f"mode {args.argument!r} must be normal, lockdown or free_passage") from err
    elif args.argument:
        raise ConfigError(f"{args.command} takes no argument (got {args.argument!r})")
    if args.command == "open" and args.pulse_ms is not None:
        command_args["pulse_ms"] = args.pulse_ms
    key = load_private_key(args.key)
    broker = _login(args, host, port)
    venue = args.venue if args.venue is not None else _venue_of(broker, args.prefix, args.device, args.timeout_s)
    try:
        envelope, tx = build_envelope(key, device_id=args.device, command=args.command, args=command_args,
                                      ttl_s=args.ttl_s, transaction=args.transaction, venue_id=venue,
                                      prefix=args.prefix)
    except ValueError as err:
        raise ConfigError(str(err)) from err
    target = Target(broker, device_id=args.device, prefix=args.prefix)
    answer = send_command(target, args.command, envelope, tx, ttl_s=args.ttl_s, timeout_s=args.timeout_s)
    if answer is None:
        print(f"no answer from {args.device} within {args.timeout_s} s (transaction {tx}); is the gate online?",
              file=sys.stderr)
        return EXIT_NO_ANSWER
    print(json.dumps(answer, ensure_ascii=False, sort_keys=True))
    return 0 if answer.get("status") == "ok" else 1


def _venue_of(broker: Any, prefix: str, device_id: str, timeout_s: float) -> str:
    """The venue in the gate's retained state, to sign into the command.

    The broker is not trusted for this: a wrong venue only makes the gate refuse the command
    (``wrong_venue``), it can never make another venue's gate accept it.

    Raises:
        ConfigError: the gate has published no state (give ``--venue``).
    """
    from provisioning.mqtt_request import read_retained

    state = read_retained(broker, f"{prefix}/{device_id}/state", timeout_s=timeout_s,
                          client_id_prefix="qrgate-cmd-venue")
    venue = state.get("venue_id") if state else None
    if not isinstance(venue, str):
        raise ConfigError(f"{device_id} has no retained state on {prefix}/{device_id}/state to read its venue "
                          "from; give --venue VENUE_ID (\"\" for a gate not yet provisioned)")
    return venue


def cmd_bridge(args: argparse.Namespace) -> int:
    import threading

    from firmware.adapters.process import install_signal_handlers
    from provisioning.command_bridge import CommandBridge
    from provisioning.keys import load_private_key

    host, port = _broker(args.broker)
    if not 0 < args.ttl_s <= 30:
        raise ConfigError(f"--ttl-s {args.ttl_s} must be above 0 and at most 30")
    try:
        bridge = CommandBridge(_login(args, host, port), load_private_key(args.key), prefix=args.prefix,
                               allowed=tuple(c.strip() for c in args.allow.split(",") if c.strip()),
                               ttl_s=args.ttl_s, gates=tuple(args.gate), venue_id=args.venue)
    except ValueError as err:
        raise ConfigError(str(err)) from err
    stop = threading.Event()
    install_signal_handlers(stop)
    bridge.run(stop)
    print(f"bridge stopped: {bridge.forwarded} forwarded, {bridge.ignored} ignored", file=sys.stderr)
    return 0

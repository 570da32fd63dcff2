"""`qrgate outbox export`: a gate's stored events as JSON Lines, signed, for `qrgate history import`.

Each line is the event exactly as the publisher sends it: the outbox's stored body sealed with the
gate's device key (``firmware.core.event_signature.seal``), so the history verifies it against the
key it registered for the gate, as the collector does. For recovery: the state directory copied off
a broken SD card (``--state-dir``), or a quarantined ``outbox.sqlite.corrupt-*`` (``--outbox``).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from firmware.core.config import DEFAULT_CONFIG_PATH
from firmware.core.errors import ConfigError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("outbox", help="export a gate's stored scan events (signed) for `qrgate history import`")
    os_ = p.add_subparsers(dest="outbox_command", metavar="ACTION", required=True)
    e = os_.add_parser(
        "export", help="write every event of an outbox as signed JSON Lines",
        description="Write every event stored in a gate's outbox (sent and unsent, in seq order), one a line, "
        "signed with the gate's device key exactly as the gate publishes it, so `qrgate history import` "
        "verifies each against the key the history registered for the gate. The files are only read.")
    e.add_argument("--config", default="", help=f"the gate's config, for its state directory (default: "
                   f"{DEFAULT_CONFIG_PATH} unless --state-dir is given)")
    e.add_argument("--state-dir", default="", help="a gate's state directory (e.g. copied off its SD card)")
    e.add_argument("--outbox", default="", help="the outbox file (default: STATE_DIR/outbox.sqlite); a "
                   "quarantined outbox.sqlite.corrupt-* may be given")
    e.add_argument("--device-key", default="", help="the gate's device key (default: STATE_DIR/device-key.pem)")
    e.add_argument("--unsigned", action="store_true", help="the device key is lost: write the events unsigned "
                   "(the history then imports them only with --unverified, marked)")
    e.add_argument("--out", default="", help="write to this file (created 0600) instead of stdout")
    e.set_defaults(func=export_command)


def _state_dir(args: argparse.Namespace) -> Path | None:
    if args.state_dir:
        return Path(args.state_dir)
    if args.config or not (args.outbox and (args.device_key or args.unsigned)):
        from firmware.adapters.config_file import load_config

        return load_config(args.config or DEFAULT_CONFIG_PATH).state_dir
    return None


def _device_key(path: Path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except FileNotFoundError as err:
        raise ConfigError(f"no device key at {path}; give --device-key, or --unsigned if the key is lost "
                          "(the history then needs `qrgate history import --unverified`)") from err
    except (OSError, ValueError, TypeError) as err:
        raise ConfigError(f"device key {path} cannot be read as a PEM private key ({str(err)[:80]})") from err
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"device key {path} is not an Ed25519 key")
    return key


def export_command(args: argparse.Namespace) -> int:
    """Write the outbox's events, signed, as JSON Lines. Never writes to the gate's files."""
    from firmware.adapters.device_key import DEVICE_KEY_FILE
    from firmware.adapters.outbox import read_bodies
    from firmware.core.event_signature import fingerprint, seal

    state_dir = _state_dir(args)
    outbox = Path(args.outbox) if args.outbox else (state_dir / "outbox.sqlite")  # type: ignore[operator]
    key = None
    if not args.unsigned:
        key = _device_key(Path(args.device_key) if args.device_key else state_dir / DEVICE_KEY_FILE)  # type: ignore[operator]
    rows = read_bodies(outbox)
    lines = [(seal(body.encode("utf-8"), key) if key is not None else body.encode("utf-8")) + b"\n"
             for _, body in rows]
    if args.out:
        fd = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.writelines(lines)
    else:
        sys.stdout.flush()
        sys.stdout.buffer.writelines(lines)
        sys.stdout.buffer.flush()
    signed = f"signed with {fingerprint(key.public_key())}" if key is not None else "UNSIGNED"
    span = f", seq {rows[0][0]}..{rows[-1][0]}" if rows else ""
    print(f"exported {len(rows)} events from {outbox}{span}, {signed}", file=sys.stderr)
    return 0

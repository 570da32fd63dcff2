"""`qrgate outbox export`: the events of an outbox file as JSON Lines, for recovery.

Reads the file read-only (a quarantined ``outbox.sqlite.corrupt-<time>`` as far as its table
can be read) and writes one event a line, exactly as the gate stored it, ready for
``qrgate history import``. Run it on the gate or on a copy of the file; it never touches the
daemon's open outbox.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from firmware.adapters.outbox import export_rows
from firmware.core.errors import ConfigError, StoreError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("outbox", help="recover events from an outbox file (a quarantined one)",
                       description="Work on an outbox file without the daemon: export its events.")
    osub = p.add_subparsers(dest="outbox_command", metavar="ACTION", required=True)
    e = osub.add_parser("export", help="write an outbox file's events as JSON Lines (for `qrgate history import`)",
                        description="Write the events of an outbox file, one JSON object a line, in seq order, "
                        "as the gate stored them. The file is opened read-only; a quarantined "
                        "outbox.sqlite.corrupt-<time> is read as far as its table can be read. Import the "
                        "result with `qrgate history import --unverified FILE`.")
    e.add_argument("file", metavar="OUTBOX", help="the outbox file, e.g. /var/lib/qrgate/outbox.sqlite.corrupt-...")
    e.add_argument("--undelivered", action="store_true",
                   help="only the events not known to be delivered (not PUBACKed, or awaiting the consumer's ack)")
    e.add_argument("--out", default="", help="write to this file (created 0600) instead of stdout")
    e.set_defaults(func=export_command)


def export_command(args: argparse.Namespace) -> int:
    if not Path(args.file).is_file():
        raise ConfigError(f"{args.file} is not a file; give the outbox file, e.g. "
                          "/var/lib/qrgate/outbox.sqlite.corrupt-<time>")
    count, last = 0, 0
    out = (open(args.out, "wb", opener=lambda path, flags: os.open(path, flags, 0o600))
           if args.out else sys.stdout.buffer)
    problem: StoreError | None = None
    try:
        try:
            for seq, body in export_rows(Path(args.file), undelivered_only=args.undelivered):
                out.write(body + b"\n")
                count, last = count + 1, seq
        except StoreError as err:
            problem = err  # what was read is written; say what is missing below
    finally:
        if args.out:
            out.close()
        else:
            out.flush()
    where = f" to {args.out}" if args.out else ""
    print(f"exported {count} events{where}" + (f", the last seq {last}" if count else ""), file=sys.stderr)
    if problem is not None:
        print(f"qrgate: {problem}", file=sys.stderr)
        return 1
    return 0

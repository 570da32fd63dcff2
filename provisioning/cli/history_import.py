"""`qrgate history import`: scan events from a JSON Lines file (provisioning.history.importer).

Registered under `qrgate history` by ``provisioning.cli.history``.
"""

from __future__ import annotations

import argparse
import getpass
import sys
import time

from firmware.core.errors import ConfigError


def register_import(hsub: argparse._SubParsersAction, add_db, func) -> None:
    """Add the `import` action (``add_db`` is the history CLI's --db/--config helper, ``func`` its entry)."""
    i = hsub.add_parser(
        "import", help="store scan events from a JSON Lines file, once each (recovery, backups, scenarios)",
        description="Store the scan events of a JSON Lines file (one event a line, as a gate publishes it), "
        "each checked like the collector checks it and stored once by event_id, so importing twice adds "
        "nothing. A file with a broken line is refused whole (the lines are listed) unless --skip-bad-lines. "
        "Events carry no signature in this version, so --unverified is required; every imported event is "
        "marked in the event_imports table.")
    add_db(i)
    i.add_argument("file", metavar="FILE.jsonl", help="the events, one JSON object a line")
    i.add_argument("--unverified", action="store_true",
                   help="store events that cannot be verified, marked unverified (required: events are unsigned)")
    i.add_argument("--skip-bad-lines", action="store_true", help="import the good lines of a file with broken ones")
    i.add_argument("--operator", default="", help="who imports, kept with each mark (default: the OS user)")
    i.set_defaults(func=func)


def import_command(args: argparse.Namespace) -> int:
    """Run an import (``--config`` already applied to ``args``)."""
    from provisioning.history.importer import check_file, import_events
    from provisioning.history.store import open_store

    now_ms = int(time.time() * 1000)
    try:
        with open(args.file, "rb") as fh:
            checked = check_file(fh, now_ms)
    except OSError as err:
        raise ConfigError(f"{args.file} cannot be read ({err.strerror}); check the path") from err
    for line, reason in checked.problems:
        print(f"{args.file}:{line}: {reason}", file=sys.stderr)
    if checked.refused > len(checked.problems):
        print(f"... and {checked.refused - len(checked.problems)} more broken lines", file=sys.stderr)
    if checked.refused and not args.skip_bad_lines:
        raise ConfigError(f"{checked.refused} of {checked.lines} lines are not scan events; nothing was "
                          "imported (fix the file, or give --skip-bad-lines to import the good lines)")
    if checked.events and not args.unverified:
        raise ConfigError(f"{checked.events} events cannot be verified (scan events are not signed in this "
                          "version); nothing was imported. Give --unverified to store them marked as unverified")
    store = open_store(args.db)
    try:
        with open(args.file, "rb") as fh:
            done = import_events(store, fh, now_ms, args.operator or getpass.getuser(), unverified=True,
                                 sha256=checked.sha256)
    finally:
        store.close()
    print(f"{done.events} events read, {done.stored} stored (marked unverified), {done.duplicates} already "
          f"stored, {done.refused} lines refused")
    return 0

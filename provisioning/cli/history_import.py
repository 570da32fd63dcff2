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
        description="Store the scan events of a JSON Lines file (one event a line, as a gate publishes it and "
        "`qrgate outbox export` writes it), each verified and checked like the collector does and stored once "
        "by event_id, so importing twice adds nothing. An event signed by its gate's registered key is "
        "verified; an unsigned one, or one of a gate with no registered key, is refused unless --unverified "
        "(then stored and marked unverified). A file with a broken line (including a signature that does not "
        "verify) is refused whole (the lines are listed) unless --skip-bad-lines. Every imported event is "
        "recorded in the event_imports table.")
    add_db(i)
    i.add_argument("file", metavar="FILE.jsonl", help="the events, one JSON object a line")
    i.add_argument("--unverified", action="store_true",
                   help="also store events that cannot be verified (unsigned, or no key registered for "
                   "their gate), marked unverified")
    i.add_argument("--skip-bad-lines", action="store_true", help="import the good lines of a file with broken ones")
    i.add_argument("--operator", default="", help="who imports, kept with each mark (default: the OS user)")
    i.set_defaults(func=func)


def import_command(args: argparse.Namespace) -> int:
    """Run an import (``--config`` already applied to ``args``)."""
    from provisioning.history.importer import check_file, import_events
    from provisioning.history.store import open_store

    now_ms = int(time.time() * 1000)
    store = open_store(args.db)
    try:
        keys = store.device_keys()
        try:
            with open(args.file, "rb") as fh:
                checked = check_file(fh, now_ms, keys)
        except OSError as err:
            raise ConfigError(f"{args.file} cannot be read ({err.strerror}); check the path") from err
        return _import(args, store, checked, now_ms, import_events)
    finally:
        store.close()


def _import(args: argparse.Namespace, store, checked, now_ms: int, import_events) -> int:
    for line, reason in checked.problems:
        print(f"{args.file}:{line}: {reason}", file=sys.stderr)
    if checked.refused > len(checked.problems):
        print(f"... and {checked.refused - len(checked.problems)} more broken lines", file=sys.stderr)
    if checked.refused and not args.skip_bad_lines:
        raise ConfigError(f"{checked.refused} of {checked.lines} lines are not scan events; nothing was "
                          "imported (fix the file, or give --skip-bad-lines to import the good lines)")
    if checked.unverified and not args.unverified:
        for line, why in checked.unverifiable:
            print(f"{args.file}:{line}: cannot be verified: {why}", file=sys.stderr)
        raise ConfigError(f"{checked.unverified} of {checked.events} events cannot be verified (unsigned, or no "
                          "key registered for their gate); nothing was imported. Register the gate's key "
                          "(`qrgate history device add`), or give --unverified to store them marked unverified")
    with open(args.file, "rb") as fh:
        done = import_events(store, fh, now_ms, args.operator or getpass.getuser(), unverified=args.unverified,
                             sha256=checked.sha256)
    print(f"{done.events} events read ({done.verified} verified, {done.unverified} unverified), {done.stored} "
          f"stored, {done.duplicates} already stored, {done.refused} lines refused")
    return 0

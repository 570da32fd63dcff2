"""`qrgate history trace`: a confirmed case's visits and contacts (provisioning.history.tracing).

Registered under `qrgate history` by ``provisioning.cli.history``. Every run appends a row to
the history database's ``trace_audit`` before anything is shown; if the audit cannot be
written, nothing is shown.
"""

from __future__ import annotations

import argparse
import getpass
import math
import sys
import time
from pathlib import Path

from firmware.core.errors import ConfigError

MAX_WINDOW_DAYS = 62


def register_trace(hsub: argparse._SubParsersAction, add_db, add_tz, func) -> None:
    """Add the `trace` action (``add_db``/``add_tz`` are the history CLI's shared option helpers, ``func``
    its entry, which applies ``--config`` and calls ``trace_command``)."""
    t = hsub.add_parser(
        "trace", help="a confirmed case's visits and everyone who overlapped them (truy vết)",
        description="Pair each person's granted in and out scans into presence intervals per venue, "
        "take the case's intervals in the window, and list every other subject whose interval at the "
        "same venue overlaps one by at least --min-overlap-min minutes. Every trace is audited in the "
        "history database (trace_audit). Times: as for `qrgate history query`.")
    add_db(t)
    who = t.add_mutually_exclusive_group(required=True)
    who.add_argument("--subject", default="", help="the case's subject as stored (HMAC or raw id)")
    who.add_argument("--person-id", default="",
                     help="the case's id (pass subject or CCCD number); hashed with --hmac-secret-file, or "
                     "with --config with each venue's secret from the back office, so the trace follows "
                     "the case across venues")
    t.add_argument("--hmac-secret-file", default="", help="a venue's HMAC secret file (hex) for --person-id")
    t.add_argument("--since", required=True, help="the window's start")
    t.add_argument("--until", required=True, help="the window's end (a bare date includes that day)")
    t.add_argument("--min-overlap-min", type=float, default=15.0,
                   help="least time together that makes a contact, minutes (default: %(default)g)")
    t.add_argument("--default-dwell-min", type=float, default=60.0,
                   help="length of a visit with no out scan (or an out with no in), minutes (default: %(default)g)")
    t.add_argument("--max-dwell-h", type=float, default=12.0,
                   help="an out later than this after the in does not end the visit, hours (default: %(default)g)")
    t.add_argument("--format", choices=("table", "json", "csv", "xlsx"), default="table",
                   help="output format (default: %(default)s)")
    t.add_argument("--out", default="", help="write to this file (created 0600) instead of stdout")
    t.add_argument("--operator", default="", help="who traces, for the audit (default: the OS user)")
    t.add_argument("--reason", default="", help="why (the case's file number...), for the audit; required "
                   "with --reveal")
    t.add_argument("--reveal", action="store_true",
                   help="health office only: open the sealed contacts (name, full phone, id) of the case's and "
                   "the contacts' events with --escrow-key; audited with the events opened before anything "
                   "is shown")
    t.add_argument("--escrow-key", action="append", default=[], metavar="FILE",
                   help="the health office's X25519 private key (PEM, from `qrgate keys escrow-new`); repeat "
                   "to try an old and a new key")
    add_tz(t)
    t.set_defaults(func=func)


def _positive(name: str, value: float, at_most: float) -> float:
    if not math.isfinite(value) or not 0 < value <= at_most:
        raise ConfigError(f"{name} must be above 0 and at most {at_most:g}")
    return value


def make_rules(args: argparse.Namespace):
    """The TraceRules of the command line (finite, in range)."""
    from provisioning.history.tracing import TraceRules

    dwell = _positive("--default-dwell-min", args.default_dwell_min, 7 * 24 * 60)
    max_dwell = _positive("--max-dwell-h", args.max_dwell_h, 7 * 24)
    if not math.isfinite(args.min_overlap_min) or not 0 <= args.min_overlap_min <= 7 * 24 * 60:
        raise ConfigError("--min-overlap-min must be 0 to 10080 (7 days)")
    return TraceRules(default_dwell_ms=int(dwell * 60_000), max_dwell_ms=int(max_dwell * 3_600_000),
                      min_overlap_ms=int(args.min_overlap_min * 60_000))


def case_subjects(args: argparse.Namespace, store, hashed_person) -> frozenset[str]:
    """The subjects the case is stored under.

    ``--subject``: as given. ``--person-id`` with ``--hmac-secret-file``: that venue's HMAC.
    ``--person-id`` alone: the raw id, plus its HMAC with every venue secret the back office
    keeps in this database (``--config``).
    """
    from firmware.core.events import protect_subject
    from provisioning.history.trace_store import venue_secrets

    if args.subject:
        if args.hmac_secret_file:
            raise ConfigError("--hmac-secret-file goes with --person-id")
        if not args.subject.strip():
            raise ConfigError("--subject is empty")
        return frozenset({args.subject.strip()})
    person_id = args.person_id.strip()
    if not person_id:
        raise ConfigError("--person-id is empty")
    if args.hmac_secret_file:
        return frozenset({hashed_person(person_id, args.hmac_secret_file)})
    hashed = {protect_subject(person_id, "hmac", secret) or "" for secret in venue_secrets(store).values()}
    return frozenset({person_id, *hashed} - {""})


def _escrow_keys(args: argparse.Namespace) -> list:
    """The private keys of a --reveal, read before anything is traced (a bad key file stops the run)."""
    if not args.reveal:
        if args.escrow_key:
            raise ConfigError("--escrow-key goes with --reveal")
        return []
    if not " ".join(args.reason.split()):
        raise ConfigError("--reveal needs --reason (the case's file number, the order...): it is kept in the "
                          "audit with the events opened")
    if not args.escrow_key:
        raise ConfigError("--reveal needs --escrow-key FILE, the health office's private key")
    from firmware.adapters.escrow_key import load_escrow_private_key

    return [load_escrow_private_key(Path(path)) for path in args.escrow_key]


def trace_command(args: argparse.Namespace, tz, hashed_person, private_opener) -> int:
    """Run a trace (``--config`` already applied to ``args``).

    Args:
        tz: the zone for reading and showing times.
        hashed_person: ``(person_id, secret_file) -> subject``, as `history query` hashes.
        private_opener: the ``open`` opener that makes files 0600.
    """
    from provisioning.history.query import day_after, parse_time
    from provisioning.history.store import open_store, parse_db_url
    from provisioning.history.trace_report import trace_report, write_trace
    from provisioning.history.trace_store import append_audit, run_trace

    rules = make_rules(args)
    escrow_keys = _escrow_keys(args)
    now_ms = int(time.time() * 1000)
    since_ms = parse_time(args.since, now_ms, tz)
    until_ms = parse_time(args.until, now_ms, tz)
    if len(args.until.strip()) == 10:
        until_ms = day_after(until_ms, tz)
    if until_ms <= since_ms:
        raise ConfigError("--until must be after --since")
    if until_ms - since_ms > MAX_WINDOW_DAYS * 86_400_000:
        raise ConfigError(f"the window is longer than {MAX_WINDOW_DAYS} days; trace a shorter time")
    if args.format == "xlsx" and not args.out and sys.stdout.isatty():
        raise ConfigError("--format xlsx is a binary file; add --out FILE.xlsx")
    kind, target = parse_db_url(args.db)
    if kind == "sqlite" and not Path(target).exists():
        raise ConfigError(f"history database {target} does not exist; check --db")
    store = open_store(args.db)
    try:
        subjects = case_subjects(args, store, hashed_person)
        started = time.perf_counter()
        found = run_trace(store, subjects, since_ms, until_ms, rules)
        elapsed_ms = (time.perf_counter() - started) * 1000
        # A --person-id is never written out in clear (report or audit): only its hashed forms.
        shown = subjects - {args.person_id.strip()} if args.person_id else subjects
        report = trace_report(found, shown, since_ms, until_ms, rules)
        searched = {"subjects": sorted(shown), "by": "person_id" if args.person_id else "subject",
                    "since": report["case"]["since"], "until": report["case"]["until"],
                    "min_overlap_min": report["case"]["min_overlap_min"],
                    "default_dwell_min": report["case"]["default_dwell_min"],
                    "max_dwell_h": report["case"]["max_dwell_h"]}
        audited = {"visits": len(report["visits"]), "contacts": report["people"],
                   "contact_subjects": sorted({c["subject"] for c in report["contacts"]})}
        operator = args.operator or getpass.getuser()
        if args.reveal:
            from provisioning.history.reveal import reveal
            from provisioning.history.trace_report import revealed_rows

            opened = reveal(store, found, subjects, rules, escrow_keys, at_ms=now_ms, operator=operator,
                            reason=args.reason, searched=searched, result=audited)
            report["revealed"] = revealed_rows(opened)
        else:
            append_audit(store, at_ms=now_ms, operator=operator, action="trace",
                         reason=" ".join(args.reason.split()), searched=searched, result=audited)
    finally:
        store.close()
    if args.out:
        with open(args.out, "wb", opener=private_opener) as fh:
            write_trace(args.format, report, fh, tz)
        print(f"wrote {len(report['visits'])} visits and {report['count']} contacts ({report['people']} people) "
              f"to {args.out} in {elapsed_ms:.0f} ms", file=sys.stderr)
    else:
        sys.stdout.flush()
        write_trace(args.format, report, sys.stdout.buffer, tz)
        sys.stdout.buffer.flush()
    return 0

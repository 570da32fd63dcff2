"""`qrgate history collect|query|serve|prune|write-off|token|trace|import`: the scan history service (provisioning.history)."""

from __future__ import annotations

import argparse
import itertools
import logging
import os
import socket
import sys
import threading
import time
from datetime import datetime, tzinfo
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from firmware.adapters.process import install_signal_handlers
from firmware.core.errors import ConfigError

log = logging.getLogger(__name__)

DEFAULT_TABLE_LIMIT = 100


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("history", help="scan history: collect events from MQTT, query, export, web page",
                       description="Keep every scan event the gates publish, and show it: filters, "
                       "count, export (table, CSV, JSON, XLSX) and a read-only web page.")
    hsub = p.add_subparsers(dest="history_command", metavar="ACTION", required=True)

    c = hsub.add_parser("collect", help="subscribe to <prefix>/+/scan and store each event once")
    c.add_argument("--broker", default="", help="broker as host:port (port 1883 if omitted); with --config, "
                   "default: the back office's [mqtt] host and port")
    _add_db(c)
    c.add_argument("--prefix", default="", help="topic prefix (default: qrgate, or the back office's [mqtt] prefix)")
    c.add_argument("--shared", default="", metavar="GROUP",
                   help="MQTT 5 shared subscription group, so several collectors split the load")
    c.add_argument("--client-id", default="",
                   help="MQTT client id; the broker keeps the session under it (default: "
                   "qrgate-history-<host name>[-<group>])")
    c.add_argument("--session-expiry-s", type=int, default=86_400,
                   help="how long the broker keeps queuing events while the collector is away "
                   "(default: %(default)s)")
    c.add_argument("--retention-days", type=float, default=30.0,
                   help="delete events older than this many days; 0 keeps all (default: %(default)s)")
    c.add_argument("--batch-max", type=int, default=500, help="events per transaction at most (default: %(default)s)")
    c.add_argument("--ack-interval-s", type=float, default=1.0,
                   help="at most one retained ack per gate this often (for gates with mqtt.app_ack; keep it well "
                   "under their mqtt.app_ack_timeout_s; default: %(default)s)")
    c.add_argument("--username", default="", help="broker user name")
    c.add_argument("--password-file", default="", help="file holding the broker password")
    c.add_argument("--ca-file", default="", help="CA certificate (PEM); turns TLS on")
    c.add_argument("--cert-file", default="", help="client certificate (PEM) for TLS")
    c.add_argument("--key-file", default="", help="client key (PEM) for TLS")
    c.set_defaults(func=collect_command)

    q = hsub.add_parser("query", help="list or export stored events with filters",
                        description="List or export stored events, newest first, with the count. "
                        "Times: 2026-07-02, '2026-07-02 10:21' (in --tz), RFC 3339, or 12h / 7d back from now.")
    _add_db(q)
    _add_filters(q)
    q.add_argument("--format", choices=("table", "csv", "json", "xlsx"), default="table",
                   help="output format (default: %(default)s)")
    q.add_argument("--out", default="", help="write to this file (created 0600) instead of stdout")
    q.add_argument("--limit", type=int, default=0,
                   help=f"rows at most (default: {DEFAULT_TABLE_LIMIT} for the table, all for exports)")
    q.add_argument("--venues", default="", metavar="DIR",
                   help="folder of venue records (`qrgate provision venue --out DIR`): venue names in the "
                   "table and a venue_name column in exports (the ids are kept)")
    q.add_argument("--gaps", action="store_true",
                   help="list the holes in each device's seq numbers (lost scans) instead of events, with "
                   "the reservations gates declared skipped and the write-offs (text, or --format json)")
    _add_tz(q)
    q.set_defaults(func=query_command)

    s = hsub.add_parser("serve", help="serve the read-only history web page",
                        description="One page with filters, count, paged table and export, in Vietnamese "
                        "and English. Protected by an access token.")
    _add_db(s)
    s.add_argument("--listen", default="127.0.0.1:8080", help="address:port (default: %(default)s)")
    s.add_argument("--token-file", default="",
                   help="file holding the access token; created 0600 with a new token if missing "
                   "(default: ~/.config/qrgate/history-token)")
    s.add_argument("--allow-localhost", action="store_true",
                   help="let requests from 127.0.0.1/::1 in without the token (off by default)")
    s.add_argument("--page-size", type=int, default=50, help="rows per page (default: %(default)s)")
    s.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                   help="--db: a host name the page answers to (repeatable); IP addresses and localhost "
                   "always work, any other Host header gets 421 (DNS rebinding)")
    s.add_argument("--venues", default="", metavar="DIR",
                   help="folder of venue records: the page shows venue names, exports add them")
    _add_tz(s)
    s.set_defaults(func=serve_command)

    r = hsub.add_parser("prune", help="delete events older than a number of days now")
    _add_db(r)
    r.add_argument("--days", type=float, default=30.0, help="keep this many days (default: %(default)s)")
    r.set_defaults(func=prune_command)

    m = hsub.add_parser("migrate", help="bring a PostgreSQL history to the current layout (events partitioned by day)",
                        description="Move an events table made before partitions into one partition per day, in "
                        "one transaction. Stop the collectors first; small tables are migrated by any writer "
                        "at open. SQLite needs nothing.")
    _add_db(m)
    m.set_defaults(func=migrate_command)

    t = hsub.add_parser("token", help="add or list access tokens of the web page (all or some venues)",
                        description="Access tokens for `qrgate history serve`. A token for some venues shows "
                        "only their events (the venue manager's view); one without --venue shows all.")
    tsub = t.add_subparsers(dest="token_command", metavar="ACTION", required=True)
    ta = tsub.add_parser("add", help="make a new token, append it to the token file, print it once")
    ta.add_argument("--token-file", default="", help="the token file `serve` reads (created 0600; default: "
                    "~/.config/qrgate/history-token)")
    ta.add_argument("--venue", action="append", default=[], metavar="VENUE_ID",
                    help="limit the token to this venue (repeat for several); none: every venue")
    ta.set_defaults(func=token_add_command)
    tl = tsub.add_parser("list", help="show each token's start and its venues (never the whole token)")
    tl.add_argument("--token-file", default="", help="the token file (default: ~/.config/qrgate/history-token)")
    tl.set_defaults(func=token_list_command)

    w = hsub.add_parser("write-off", help="declare a seq gap lost for good, so it stops holding back acks",
                        description="Declare a hole in a device's seq numbers lost for good (scans lost before "
                        "app acks were on, events of a quarantined outbox that could not be recovered; the "
                        "seq numbers a fresh outbox skips are written off by the gate's own signed "
                        "declaration, reason 'skipped reservation'). It stops counting as a gap, and a "
                        "gate with mqtt.app_ack gets acks past it again. The reason is kept for the audit "
                        "trail. `qrgate history query --gaps` lists the holes and the write-offs.")
    _add_db(w)
    w.add_argument("--device", required=True, help="the device id, as `query --gaps` shows it")
    w.add_argument("--seq", required=True, metavar="FIRST[-LAST]", help="the missing seq range, e.g. 11-12")
    w.add_argument("--reason", required=True, help="why these scans are lost for good")
    w.set_defaults(func=write_off_command)

    d = hsub.add_parser("device", help="register the gates' signing keys: the collector stores only events they sign",
                        description="The collector accepts a scan event only when it verifies against the key "
                        "registered for its device_id; the rest goes to the quarantine table. A key is registered "
                        "here, or by enrolment (`qrgate provision qr --register DB`). Compare the fingerprint "
                        "with the gate's retained <prefix>/<device>/key message before adding a key.")
    dsub = d.add_subparsers(dest="device_command", required=True)
    da = dsub.add_parser("add", help="register (or replace) a gate's public key")
    _add_db(da)
    da.add_argument("--device", required=True, help="the gate's device id")
    da.add_argument("--key", required=True, metavar="PUB.pem",
                    help="the gate's Ed25519 public key: a PEM file (device-key.pub.pem in its state "
                    "directory) or the public_key text of its retained key message")
    da.set_defaults(func=device_add_command)
    dl = dsub.add_parser("list", help="show each registered gate, its key fingerprint and how it was added")
    _add_db(dl)
    dl.set_defaults(func=device_list_command)
    dr = dsub.add_parser("remove", help="forget a gate's key (a stolen gate): its events are quarantined from then on")
    _add_db(dr)
    dr.add_argument("--device", required=True, help="the gate's device id")
    dr.set_defaults(func=device_remove_command)
    qq = hsub.add_parser("quarantine", help="list the newest quarantined messages and why they were not stored",
                         description="List the messages the collector kept aside, or with --recheck verify them "
                         "again against the gates' keys registered now and store those that verify.")
    _add_db(qq)
    qq.add_argument("--limit", type=int, default=50, help="how many (default 50)")
    qq.add_argument("--recheck", action="store_true",
                    help="verify every quarantined message again with the keys registered now (`device add`): "
                    "store those that verify (once by event_id), keep the rest with the reason found now")
    qq.add_argument("--device", default="", help="with --recheck: only this gate's messages")
    qq.set_defaults(func=quarantine_command)
    from provisioning.cli.history_trace import register_trace

    register_trace(hsub, _add_db, _add_tz, trace_command)

    from provisioning.cli.history_import import register_import

    register_import(hsub, _add_db, import_command)


def _add_db(p: argparse.ArgumentParser) -> None:
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--db", default="",
                       help="history database: a file path, sqlite:///path/history.sqlite or postgresql://...")
    where.add_argument("--config", default="", help="the back office's TOML config: use its database (and, for "
                       "collect, its [mqtt] broker); `serve --config` runs the back office itself")


def _apply_backoffice_config(args: argparse.Namespace) -> None:
    """With ``--config``, take the database (and the collector's broker and login) from the back office config.

    Raises:
        ConfigError: the back office config is invalid.
    """
    if not getattr(args, "config", ""):
        return
    from backoffice.config import load_config  # no Django: the config module is plain Python

    cfg = load_config(args.config)
    args.db = cfg.database_url
    if getattr(args, "history_command", "") != "collect":
        return
    m = cfg.mqtt
    if not args.broker:
        if not m.host:
            raise ConfigError(f"{args.config} has no [mqtt] host; give --broker host:port")
        args.broker = f"{m.host}:{m.port}"
    args.prefix = args.prefix or m.prefix
    args.username = args.username or m.username
    args.password_file = args.password_file or m.password_file
    args.ca_file, args.cert_file, args.key_file = (args.ca_file or m.ca_file, args.cert_file or m.cert_file,
                                                   args.key_file or m.key_file)


def _add_tz(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tz", default="", help="time zone for reading and showing times, e.g. "
                   "Asia/Ho_Chi_Minh (default: this machine's)")


def _add_filters(p: argparse.ArgumentParser) -> None:
    p.add_argument("--since", default="", help="events at or after this time")
    p.add_argument("--until", default="", help="events before this time (a bare date includes that day)")
    p.add_argument("--person", default="",
                   help="part of the masked name/phone, or the subject as stored (HMAC or raw id)")
    p.add_argument("--person-id", default="",
                   help="a person's id (pass subject or CCCD number): matched as the gate stored it, "
                   "hashed first with --hmac-secret-file when the venue uses privacy.subject = hmac")
    p.add_argument("--hmac-secret-file", default="",
                   help="the venue's HMAC secret file (hex, as the gate keeps it) for --person-id")
    p.add_argument("--venue", default="", help="venue id")
    p.add_argument("--device", default="", help="device id (the gate that scanned)")
    p.add_argument("--decision", default="", help="granted or denied (or another event type)")


def resolve_tz(name: str) -> tzinfo:
    """Return the named IANA zone, or this machine's local zone when empty.

    Raises:
        ConfigError: an unknown zone name.
    """
    if not name:
        return datetime.now().astimezone().tzinfo  # type: ignore[return-value]
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as err:
        raise ConfigError(f"--tz {name!r} is not a time zone; use an IANA name such as "
                          "Asia/Ho_Chi_Minh or UTC") from err


def parse_broker(text: str) -> tuple[str, int]:
    """Split ``host:port`` (``[v6]:port`` too); port 1883 when omitted.

    Raises:
        ConfigError: an empty host or a bad port.
    """
    value = text.strip()
    host, port = value, "1883"
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else "1883"
    elif value.count(":") == 1:
        host, port = value.split(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"--broker {text!r} is not host:port; for example 127.0.0.1:1883")
    return host, int(port)


def _read_secret(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8").strip()
    except OSError as err:
        raise ConfigError(f"--password-file {path} cannot be read ({err.strerror}); check the path "
                          "and its permissions") from err




def collect_command(args: argparse.Namespace) -> int:
    from provisioning.history.collector import CollectorSettings, ScanCollector
    from provisioning.history.store import open_store

    _apply_backoffice_config(args)
    if not args.broker:
        raise ConfigError("--broker host:port is required (or --config with an [mqtt] host)")
    args.prefix = args.prefix or "qrgate"

    host, port = parse_broker(args.broker)
    if args.batch_max < 1 or args.retention_days < 0 or args.session_expiry_s < 0 or args.ack_interval_s < 0:
        raise ConfigError("--batch-max must be at least 1, --retention-days, --session-expiry-s and "
                          "--ack-interval-s at least 0")
    client_id = args.client_id or "-".join(
        filter(None, ["qrgate-history", socket.gethostname().split(".")[0], args.shared]))
    settings = CollectorSettings(
        host=host, port=port, prefix=args.prefix.strip("/"), shared_group=args.shared, client_id=client_id,
        session_expiry_s=args.session_expiry_s, retention_days=args.retention_days, batch_max=args.batch_max,
        ack_min_interval_s=args.ack_interval_s,
        username=args.username, password=_read_secret(args.password_file) if args.password_file else "",
        ca_file=args.ca_file, cert_file=args.cert_file, key_file=args.key_file,
    )
    store = open_store(args.db)
    stop = threading.Event()
    install_signal_handlers(stop)
    collector = ScanCollector(store, settings)
    log.info("collecting %s from %s:%d into %s", settings.topic, host, port,
             "PostgreSQL" if args.db.startswith("postgres") else args.db)
    try:
        collector.run(stop)
    finally:
        store.close()
        st = collector.stats
        log.info("collector stopped: %d received, %d stored, %d duplicates, %d skipped, %d gaps seen",
                 st.received, st.stored, st.duplicates, st.malformed, st.gaps)
    return 0


def _private(path: str, flags: int) -> int:
    """Opener for exports: personal data, so new files are 0600."""
    return os.open(path, flags, 0o600)


def query_command(args: argparse.Namespace) -> int:
    from provisioning.history.export import write_export, write_table
    from provisioning.history.query import make_filter
    from provisioning.history.store import open_store

    _apply_backoffice_config(args)

    tz = resolve_tz(args.tz)
    person = args.person
    person_needs_secret = False
    if args.person_id:
        if args.person:
            raise ConfigError("give --person or --person-id, not both")
        person = hashed_person(args.person_id, args.hmac_secret_file) if args.hmac_secret_file else args.person_id
        person_needs_secret = not args.hmac_secret_file
    elif args.hmac_secret_file:
        raise ConfigError("--hmac-secret-file goes with --person-id")
    flt = make_filter(since=args.since, until=args.until, person=person, venue=args.venue,
                      device=args.device, decision=args.decision, now_ms=int(time.time() * 1000), tz=tz)
    names = _venue_names(args)
    store = open_store(args.db, readonly=True)
    try:
        if args.gaps:
            if args.format not in ("table", "json"):
                raise ConfigError("--gaps prints a text report or JSON: give --format table or --format json")
            return _print_gaps(store, args.device, as_json=args.format == "json")
        if person_needs_secret and store.page(flt, 1, 1).total == 0:
            # gates with privacy.subject = hmac store the id hashed: a raw match finds nothing
            raise ConfigError("no scan stores this person id as it is; gates with privacy.subject = hmac store "
                              "it hashed with the venue's secret: add --hmac-secret-file VENUE_ID.secret "
                              "(written by `qrgate provision venue`)")
        if args.format == "table":
            page = store.page(flt, 1, args.limit or DEFAULT_TABLE_LIMIT)
            if args.out:
                with open(args.out, "w", encoding="utf-8", opener=_private) as text:
                    write_table(page.rows, page.total, text, tz, names)
            else:
                write_table(page.rows, page.total, sys.stdout, tz, names)
            return 0
        rows = store.rows(flt)
        if args.limit:
            rows = itertools.islice(rows, args.limit)
        if args.out:
            with open(args.out, "wb", opener=_private) as fh:
                count = write_export(args.format, rows, fh, tz, flt.describe(), names)
            print(f"wrote {count} events to {args.out}", file=sys.stderr)
        else:
            if args.format == "xlsx" and sys.stdout.isatty():
                raise ConfigError("--format xlsx is a binary file; add --out FILE.xlsx")
            sys.stdout.flush()
            write_export(args.format, rows, sys.stdout.buffer, tz, flt.describe(), names)
            sys.stdout.buffer.flush()
        return 0
    finally:
        store.close()


def _venue_names(args: argparse.Namespace) -> dict[str, str]:
    if not getattr(args, "venues", ""):
        return {}
    from provisioning.venues import venue_names_in

    return venue_names_in(args.venues)


def hashed_person(person_id: str, secret_file: str) -> str:
    """Hash a person id the way a gate with ``privacy.subject = "hmac"`` does.

    Raises:
        ConfigError: the secret file is missing or not hex.
    """
    from firmware.core.events import protect_subject

    try:
        secret = bytes.fromhex(Path(secret_file).read_text(encoding="utf-8").strip())
    except (OSError, ValueError) as err:
        raise ConfigError(f"--hmac-secret-file {secret_file} is not a venue secret ({err}); copy the "
                          "gate's privacy.hmac_secret_file") from err
    return protect_subject(person_id.strip(), "hmac", secret) or ""


def _span(first: int, last: int) -> str:
    return f"{first}" if first == last else f"{first}..{last}"


def _print_gaps(store, device: str, as_json: bool = False) -> int:
    from provisioning.history.sql_store import SKIP_REASON

    gaps, skipped = store.gaps(device), store.skipped(device)
    written = [w for w in store.write_offs(device) if w.reason != SKIP_REASON]
    if as_json:
        import json

        doc = {"gaps": [{"device_id": g.device_id, "first_missing": g.first_missing, "last_missing": g.last_missing,
                         "missing": g.missing, "after_ts": g.after_ts or None, "before_ts": g.before_ts}
                        for g in gaps],
               "missing": sum(g.missing for g in gaps),
               "skipped_reservations": [{"device_id": k.device_id, "first_seq": k.first_seq,
                                         "last_seq": k.last_seq, "count": k.count, "stored": k.stored,
                                         "not_stored": k.not_stored, "cause": k.cause, "exact": k.exact,
                                         "file": k.file or None, "declared_at": k.declared_at,
                                         "reason": SKIP_REASON} for k in skipped],
               "write_offs": [{"device_id": w.device_id, "first_seq": w.first_seq, "last_seq": w.last_seq,
                               "count": w.count, "reason": w.reason} for w in written]}
        print(json.dumps(doc, ensure_ascii=False, indent=2))
        return 0
    if skipped:
        print(f"{'device':<24} {'skipped reservation':<24} {'count':>7}  declared by the gate")
        for k in skipped:
            print(f"{k.device_id:<24} {_span(k.first_seq, k.last_seq):<24} {k.count:>7}  {_skip_text(k)}")
        print(f"{len(skipped)} skipped reservations declared by the gates (signed): "
              f"{sum(k.not_stored for k in skipped)} seq numbers without a scan, not counted as missing")
    if written:
        print(f"{'device':<24} {'written-off seq':<24} {'count':>7}  reason")
        for w in written:
            print(f"{w.device_id:<24} {_span(w.first_seq, w.last_seq):<24} {w.count:>7}  {w.reason}")
        print(f"{len(written)} write-offs, {sum(w.count for w in written)} events lost for good")
    if not gaps:
        print("no gaps: every device's seq numbers are contiguous" if not written and not skipped else
              "no open gaps: every other seq number is stored")
        return 0
    print(f"{'device':<24} {'missing seq':<24} {'count':>7}  between")
    for g in gaps:
        between = f"{g.after_ts} and {g.before_ts}" if g.after_ts else \
            f"before {g.before_ts} (the first stored event; the gate's seq starts at 1)"
        print(f"{g.device_id:<24} {_span(g.first_missing, g.last_missing):<24} {g.missing:>7}  {between}")
    print(f"{len(gaps)} gaps, {sum(g.missing for g in gaps)} events missing")
    return 0


def _skip_text(skip) -> str:
    """What the gate declared, in words (the --gaps report)."""
    quarantined = skip.cause == "quarantined_outbox"
    what = (f"outbox quarantined on the gate ({skip.file})" if quarantined and skip.file
            else "outbox quarantined on the gate" if quarantined
            else "new outbox on the gate (the old one was missing)")
    if skip.exact:
        text = f"{what}; the old outbox was read: no seq of the range was ever used"
        if quarantined:
            text += (f"; scans missing below seq {skip.first_seq} may be in that file "
                     "(`qrgate outbox export --outbox FILE`, then `qrgate history import`)")
        if skip.stored:
            text += f"; yet {skip.stored} events are stored in it (check the gate)"
        return text
    why = "could not be read" if quarantined else "was gone"
    return (f"{what}; UNVERIFIED: the old outbox {why}, so this is its whole last reservation block; "
            f"{skip.stored} of it stored, the other {skip.not_stored} never used or lost with that outbox")


def write_off_command(args: argparse.Namespace) -> int:
    from provisioning.history.store import open_store

    _apply_backoffice_config(args)

    first_text, _, last_text = args.seq.partition("-")
    try:
        first = int(first_text)
        last = int(last_text) if last_text else first
    except ValueError:
        raise ConfigError(f"--seq {args.seq!r} is not a seq range; give FIRST-LAST or one seq, e.g. 11-12, "
                          "as `qrgate history query --gaps` lists them") from None
    store = open_store(args.db)
    try:
        done = store.write_off(args.device, first, last, args.reason, int(time.time() * 1000))
    finally:
        store.close()
    print(f"written off seq {_span(done.first_seq, done.last_seq)} of {done.device_id} ({done.count} scans); "
          "the collector acknowledges past it on the gate's next publish")
    return 0


def read_device_key(text: str) -> str:
    """A gate's public key as the registry keeps it (raw Ed25519, base64url), from a PEM file
    or from the ``public_key`` text of the gate's retained key message.

    Raises:
        ConfigError: neither a readable Ed25519 public key file nor a key text.
    """
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    from firmware.core.event_signature import SignatureError, public_key_from_text, public_key_text

    path = Path(text)
    if path.is_file():
        try:
            key = load_pem_public_key(path.read_bytes())
        except (ValueError, OSError) as err:
            raise ConfigError(f"--key {text}: not a PEM public key ({err})") from err
        if not isinstance(key, Ed25519PublicKey):
            raise ConfigError(f"--key {text}: a device key is Ed25519, this is {type(key).__name__}")
        return public_key_text(key)
    try:
        return public_key_text(public_key_from_text(text.strip()))
    except (SignatureError, ValueError) as err:
        raise ConfigError(f"--key {text!r} is neither a PEM file nor a base64url Ed25519 key ({err})") from err


def device_add_command(args: argparse.Namespace) -> int:
    from firmware.core.event_signature import fingerprint, public_key_from_text
    from provisioning.history.store import open_store

    _apply_backoffice_config(args)
    key = read_device_key(args.key)
    store = open_store(args.db)
    try:
        store.register_device(args.device, key, "qrgate history device add", int(time.time() * 1000))
    finally:
        store.close()
    print(f"registered {args.device}: {fingerprint(public_key_from_text(key))}")
    return 0


def device_list_command(args: argparse.Namespace) -> int:
    from firmware.core.event_signature import fingerprint, public_key_from_text
    from provisioning.history.store import open_store

    _apply_backoffice_config(args)
    store = open_store(args.db, readonly=True)
    try:
        for device, key, source, added_ms in store.devices():
            added = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(added_ms / 1000))
            print(f"{device:32} {fingerprint(public_key_from_text(key))}  {added}  {source}")
    finally:
        store.close()
    return 0


def device_remove_command(args: argparse.Namespace) -> int:
    from provisioning.history.store import open_store

    _apply_backoffice_config(args)
    store = open_store(args.db)
    try:
        removed = store.remove_device(args.device)
    finally:
        store.close()
    if not removed:
        print(f"{args.device} has no registered key", file=sys.stderr)
        return 1
    print(f"removed {args.device}: its events go to the quarantine until a key is registered again")
    return 0


def quarantine_command(args: argparse.Namespace) -> int:
    from provisioning.history.store import open_store

    _apply_backoffice_config(args)
    if args.recheck:
        return _recheck_quarantine(args)
    if args.device:
        raise ConfigError("--device goes with --recheck")
    store = open_store(args.db, readonly=True)
    try:
        kept = store.quarantined(max(1, args.limit))
        for received_ms, topic, device, reason, size in kept:
            when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(received_ms / 1000))
            print(f"{when}  {device or '-':24} {size:6d} B  {topic}: {reason}")
        if not kept:
            print("nothing quarantined", file=sys.stderr)
    finally:
        store.close()
    return 0


def _recheck_quarantine(args: argparse.Namespace) -> int:
    """`qrgate history quarantine --recheck [--device D]`: store what verifies now, report the rest and the gaps."""
    from provisioning.history.recheck import recheck_quarantine
    from provisioning.history.store import open_store

    store = open_store(args.db)
    try:
        done = recheck_quarantine(store, args.device)
        print(f"rechecked {done.checked} quarantined messages: {done.stored} events stored, "
              f"{done.duplicates} already in the history, {done.kept} kept")
        for reason, count in done.kept_reasons.most_common():
            print(f"  kept {count:6d}  {reason}")
        for device in sorted(done.devices):
            gaps = store.gaps(device)
            holes = ", ".join(_span(g.first_missing, g.last_missing) for g in gaps[:10])
            print(f"{device}: " + (f"{len(gaps)} gaps still open, {sum(g.missing for g in gaps)} events missing "
                                   f"(seq {holes}{', ...' if len(gaps) > 10 else ''})" if gaps else "no open gaps"))
    finally:
        store.close()
    return 0


def trace_command(args: argparse.Namespace) -> int:
    """`qrgate history trace` (provisioning.cli.history_trace)."""
    from provisioning.cli.history_trace import trace_command as run

    _apply_backoffice_config(args)
    return run(args, resolve_tz(args.tz), hashed_person, _private)


def import_command(args: argparse.Namespace) -> int:
    """`qrgate history import` (provisioning.cli.history_import)."""
    from provisioning.cli.history_import import import_command as run

    _apply_backoffice_config(args)
    return run(args)


def serve_command(args: argparse.Namespace) -> int:
    """``--config``: a thin alias of `qrgate backoffice serve` (the history page lives there now).
    ``--db``: the former token-protected page, kept for one release; deprecated."""
    if args.config:
        from backoffice.cli import run

        args.backoffice_command = "serve"
        return run(args)
    from provisioning.history.web import serve

    log.warning("`qrgate history serve --db` (the token page) is deprecated: the scan history is in the back "
                "office now (`qrgate backoffice serve --config F`, or `qrgate history serve --config F`)")
    return serve(args, resolve_tz(args.tz))


def prune_command(args: argparse.Namespace) -> int:
    from provisioning.history.store import open_store

    _apply_backoffice_config(args)

    store = open_store(args.db)
    try:
        deleted = store.prune(int(time.time() * 1000) - int(args.days * 86_400_000))
    finally:
        store.close()
    print(f"deleted {deleted} events older than {args.days:g} days")
    return 0


def migrate_command(args: argparse.Namespace) -> int:
    from provisioning.history.store import parse_db_url

    _apply_backoffice_config(args)
    kind, target = parse_db_url(args.db)
    if kind != "postgresql":
        print("SQLite history: nothing to migrate")
        return 0
    from provisioning.history.pg_store import PostgresHistoryStore

    store = PostgresHistoryStore(target, auto_migrate_max_rows=None)
    try:
        days = len(store.partitions())
    finally:
        store.close()
    if store.migrated is None:
        print(f"already partitioned by day ({days} daily partitions)")
    else:
        moved, made = store.migrated
        print(f"moved {moved} events into {made} daily partitions and the default one")
    return 0


def _token_file(args: argparse.Namespace) -> Path:
    from provisioning.history.web import DEFAULT_TOKEN_FILE

    return Path(args.token_file) if args.token_file else DEFAULT_TOKEN_FILE


def token_add_command(args: argparse.Namespace) -> int:
    from provisioning.history.web import add_token

    add_token(_token_file(args), tuple(args.venue) if args.venue else None)
    print("a running `qrgate history serve` reads the file at start: restart it to use the new token")
    return 0


def token_list_command(args: argparse.Namespace) -> int:
    from provisioning.history.web import load_or_create_tokens

    path = _token_file(args)
    if not path.exists():
        raise ConfigError(f"no token file at {path}; `qrgate history token add` makes one")
    for access in load_or_create_tokens(path):
        scope = "every venue" if access.venues is None else ", ".join(access.venues)
        print(f"{access.token[:4]}…  {scope}")
    return 0

"""`qrgate list deny|allow import|add|remove|show`: manage a gate's deny and allow lists.

Locally the command changes the list files in the gate's state directory, which only
works while the daemon is stopped (it owns them). With ``--remote`` the change goes to
the running daemon as a signed list message over MQTT (see ``firmware.features.list_updates``).

Exit status: 0 done; 1 refused (broken CSV rows, older version, daemon running, the
gate answered an error); 4 no answer from the gate in time; 78 bad configuration.
"""

from __future__ import annotations

import argparse
import logging
import secrets
import sys
import time
from datetime import UTC, datetime

from firmware.adapters.config_file import load_config
from firmware.core.config import DEFAULT_CONFIG_PATH
from firmware.core.errors import ConfigError

log = logging.getLogger(__name__)

EXIT_NO_ANSWER = 4


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("list", help="manage the deny (quarantine) and allow (employees) lists",
                       description="Lists hold person ids or subjects (first CSV column), each with an "
                       "optional end (a column headed `until`: RFC 3339 or a date, read in this machine's "
                       "time zone). A CSV with broken rows is refused unless --skip-bad-rows. With the daemon "
                       "running, use --remote.")
    p.add_argument("kind", choices=("deny", "allow"), help="which list")
    acts = p.add_subparsers(dest="list_command", metavar="ACTION", required=True)

    def common(a: argparse.ArgumentParser) -> None:
        a.add_argument("--config", default=str(DEFAULT_CONFIG_PATH), help="gate config (default: %(default)s)")
        a.add_argument("--remote", action="store_true", help="send the change to the running gate over MQTT")
        a.add_argument("--key", help="--remote: command signing key (the gate trusts it with "
                       "`qrgate keys trust --role command`)")
        a.add_argument("--broker", help="--remote: HOST:PORT (default: the config's [mqtt] host and port; "
                       "its TLS files and login are used either way)")
        a.add_argument("--device", help="--remote: gate id (default: the config's device.id)")
        a.add_argument("--timeout-s", type=float, default=30.0, help="--remote: wait this long for the answer")
        a.add_argument("--base-version", type=int, default=None, metavar="N",
                       help="--remote add/remove: the gate's list version the change applies to (default: "
                       "read from the gate's retained state); the gate refuses the change if it is not at N")
        a.add_argument("--venue", metavar="VENUE_ID",
                       help="--remote, import only: send the whole list to every gate of this venue, retained "
                       "on <prefix>/venues/VENUE_ID/lists/KIND so gates that are offline get it when they "
                       "connect; prints each gate's answer")
        a.add_argument("--gates", type=int, default=0, metavar="N",
                       help="--venue: stop waiting once N gates answered (default: wait --timeout-s)")

    imp = acts.add_parser("import", help="replace the whole list from a CSV file")
    imp.add_argument("file", metavar="FILE.csv")
    imp.add_argument("--skip-bad-rows", action="store_true", help="import the good rows of a CSV with broken rows")
    imp.add_argument("--version", type=int, default=None, help="list version (default: current + 1; "
                     "--remote: Unix time)")
    common(imp)
    imp.set_defaults(func=cmd_import)
    for name, help_text in (("add", "add person ids"), ("remove", "remove person ids")):
        a = acts.add_parser(name, help=help_text)
        a.add_argument("ids", nargs="+", metavar="ID")
        if name == "add":
            a.add_argument("--until", default="", metavar="TIME",
                           help="the entries end then (RFC 3339, or a date: when that day ends here); "
                           "default: no end")
        common(a)
        a.set_defaults(func=cmd_change)
    show = acts.add_parser("show", help="version, size, age of the list; --check ID tells if ID is on it")
    show.add_argument("--check", metavar="ID", default=None)
    show.add_argument("--config", default=str(DEFAULT_CONFIG_PATH), help="gate config (default: %(default)s)")
    show.set_defaults(func=cmd_show)


def _local_store(cfg, kind: str):
    from firmware.adapters.list_files import ListStore
    from firmware.adapters.process import state_dir_in_use

    if state_dir_in_use(cfg.state_dir):
        print(f"the qrgate daemon is running and owns {cfg.state_dir}; either stop it "
              "(`sudo systemctl stop qrgate`) or send the change to it with --remote --key COMMAND_KEY",
              file=sys.stderr)
        return None
    return ListStore(cfg.state_dir / "lists")


def _local_zone():
    from datetime import datetime

    return datetime.now().astimezone().tzinfo


def _print_problems(result) -> None:
    for line in result.report():
        print(f"  {line}", file=sys.stderr)


def cmd_import(args: argparse.Namespace) -> int:
    from firmware.adapters.list_files import import_csv_file
    from firmware.core.lists import parse_csv

    cfg = load_config(args.config)
    started = time.perf_counter()
    if args.remote:
        with open(args.file, "rb") as f:
            result = parse_csv(f, tz=_local_zone(), now_s=time.time())
        if result.bad_rows:
            print(f"{args.file}: {result.bad_rows} broken row(s):", file=sys.stderr)
            _print_problems(result)
            if not args.skip_bad_rows:
                print("nothing sent; fix the rows or pass --skip-bad-rows", file=sys.stderr)
                return 1
        ids = [i.decode("utf-8") for i in result.ids]
        ends = {i.decode("utf-8"): until for i, until in result.ends.items()}
        return _send(args, cfg, ids=ids, version=args.version, ends=ends)
    store = _local_store(cfg, args.kind)
    if store is None:
        return 1
    snap, result = import_csv_file(store, args.kind, args.file, now_s=time.time(), skip_bad_rows=args.skip_bad_rows,
                                   version=args.version, tz=_local_zone())
    if result.bad_rows:
        print(f"{args.file}: {result.bad_rows} broken row(s)" + (", skipped:" if snap else ":"), file=sys.stderr)
        _print_problems(result)
    if snap is None:
        print(f"{args.kind} list unchanged; fix the rows or pass --skip-bad-rows", file=sys.stderr)
        return 1
    print(f"{args.kind} list version {snap.info.version}: {snap.info.count} ids from {result.rows} rows "
          f"({result.duplicates} duplicates, {result.bad_rows} skipped, {snap.info.timed} with an end) in "
          f"{time.perf_counter() - started:.2f} s")
    return 0


def cmd_change(args: argparse.Namespace) -> int:
    from firmware.core.text import count_invisible

    cfg = load_config(args.config)
    odd = sum(1 for i in args.ids if count_invisible(i))
    if odd:
        print(f"{odd} id(s) held invisible, bidi or control characters; they are removed (ids are compared "
              "in their canonical form)", file=sys.stderr)
    adding = args.list_command == "add"
    ends = {}
    if adding and args.until:
        from firmware.core.lists import parse_until

        try:
            until = parse_until(args.until, _local_zone())
        except ValueError as err:
            raise ConfigError(f"--until {args.until!r} is not a date or an RFC 3339 time ({err})") from err
        if until <= time.time():
            raise ConfigError(f"--until {args.until!r} is already past")
        ends = {i: until for i in args.ids}
    if args.remote:
        return _send(args, cfg, add=args.ids if adding else [], remove=[] if adding else args.ids, version=None,
                     ends=ends)
    store = _local_store(cfg, args.kind)
    if store is None:
        return 1
    current = store.load(args.kind)
    # A hand edit does not make the list fresher; a first list starts its age now.
    updated_s = current.info.updated_s if current.info.version else time.time()
    snap = store.apply_delta(args.kind, add=args.ids if adding else [], remove=[] if adding else args.ids,
                             updated_s=updated_s, source=f"cli:{args.list_command}", current=current, ends=ends)
    print(f"{args.kind} list version {snap.info.version}: {snap.info.count} ids")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from firmware.adapters.list_files import ListStore
    from firmware.adapters.process import state_dir_in_use

    cfg = load_config(args.config)
    # Reading is safe while the daemon runs: the file is only ever replaced whole.
    snap = ListStore(cfg.state_dir / "lists").load(args.kind)
    info = snap.info
    if info.version == 0:
        print(f"{args.kind} list: empty (never loaded)")
    else:
        issued = datetime.fromtimestamp(info.updated_s, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        age_h = (info.age_s(time.time()) or 0.0) / 3600.0
        max_age = cfg.lists.max_age_h
        stale = " STALE" if max_age and age_h > max_age else ""
        print(f"{args.kind} list: version {info.version}, {info.count} ids ({info.timed} with an end, "
              f"{snap.in_force(time.time())} in force now), issued {issued} "
              f"({age_h:.1f} h ago{stale}), source {info.source}")
    if state_dir_in_use(cfg.state_dir):
        print("(the daemon is running: it holds the list in memory as shown)", file=sys.stderr)
    if args.check is not None:
        listed = snap.contains(args.check, time.time())
        print(f"{'listed' if listed else 'not listed'}")
        return 0 if listed else 1
    return 0


def _send(args: argparse.Namespace, cfg, *, ids=None, add=None, remove=None, version=None, ends=None) -> int:
    from firmware.core.list_message import encode_message
    from provisioning.keys import load_private_key
    from provisioning.list_remote import send_list
    from provisioning.mqtt_request import Broker, Target

    if not args.key:
        raise ConfigError("--remote needs --key COMMAND_KEY (a key the gate trusts with --role command)")
    if args.venue and ids is None:
        raise ConfigError("--venue sends a whole list: use `qrgate list KIND import FILE.csv --remote --venue V`; "
                          "add and remove go to one gate at a time")
    broker = Broker.of_gate(cfg, args.broker or "")  # the gate's TLS files and login too
    key = load_private_key(args.key)
    transaction = secrets.token_hex(6)
    now = time.time()
    if args.venue:
        return _send_venue(args, cfg, broker, key, ids, version, transaction, now, ends)
    device_id = args.device or cfg.device.id
    base_version = None
    if ids is None:
        # A delta names the version it applies to, so a gate that missed a list refuses it
        # instead of ending up at a newer version without that list's entries.
        base_version = args.base_version
        if base_version is None:
            base_version = _gate_list_version(broker, cfg.mqtt.prefix, device_id, args.kind, args.timeout_s)
            if base_version is None:
                print(f"could not learn {device_id}'s {args.kind} list version from its retained state "
                      f"({cfg.mqtt.prefix}/{device_id}/state) within {args.timeout_s:g} s; is the gate online? "
                      "Pass --base-version N to name it, or send the whole list with import", file=sys.stderr)
                return EXIT_NO_ANSWER
        # Versions only go up: Unix seconds, or one above the base if that is already later.
        version = version or max(int(now), base_version + 1)
    message = encode_message(key, kind=args.kind, version=version or int(now), now_s=now, ids=ids, add=add,
                             remove=remove, base_version=base_version, device_id=device_id, ends=ends,
                             transaction=transaction, venue_id=cfg.device.venue_id or None, prefix=cfg.mqtt.prefix)
    answer = send_list(Target(broker, device_id, cfg.mqtt.prefix), args.kind,
                       message, transaction, timeout_s=args.timeout_s)
    if answer is None:
        print(f"no answer within {args.timeout_s:g} s (transaction {transaction}); is the gate online?",
              file=sys.stderr)
        return EXIT_NO_ANSWER
    if answer.get("status") != "ok":
        print(f"the gate refused the list: {answer.get('error')}", file=sys.stderr)
        if str(answer.get("error", "")).startswith("base_version"):
            print("the gate's list is not the version this change was based on; check `qrgate status` "
                  "on the gate and send the whole list with `import --remote`", file=sys.stderr)
        return 1
    data = answer.get("data") or {}
    print(f"{args.kind} list version {data.get('version')}: {data.get('count')} ids (sent over MQTT)")
    return 0


def _gate_list_version(broker, prefix: str, device_id: str, kind: str, timeout_s: float) -> int | None:
    """The gate's list version as its retained state reports it (``lists.<kind>.version``), or None."""
    from firmware.core.numbers import MAX_LIST_VERSION
    from provisioning.mqtt_request import read_retained

    def version_of(doc: dict) -> int | None:
        entry = (doc.get("lists") or {}).get(kind) if isinstance(doc.get("lists"), dict) else None
        value = entry.get("version") if isinstance(entry, dict) else None
        ok = type(value) is int and 0 <= value <= MAX_LIST_VERSION
        return value if ok else None

    state = read_retained(broker, f"{prefix}/{device_id}/state", timeout_s=timeout_s,
                          client_id_prefix="qrgate-list-", accept=lambda doc: version_of(doc) is not None)
    return None if state is None else version_of(state)


def _send_venue(args: argparse.Namespace, cfg, broker, key, ids: list[str], version: int | None,
                transaction: str, now: float, ends: dict[str, int] | None = None) -> int:
    """Publish a full list retained on the venue-wide topic and print each gate's answer."""
    from firmware.core.list_message import MAX_VALIDITY_S, encode_message, venue_list_topic
    from provisioning.mqtt_request import exchange

    # Valid for the longest allowed: the retained copy must still verify for gates that come late.
    message = encode_message(key, kind=args.kind, version=version or int(now), now_s=now, ids=ids,
                             venue_id=args.venue, transaction=transaction, valid_s=MAX_VALIDITY_S,
                             prefix=cfg.mqtt.prefix, ends=ends)
    answers = exchange(broker, request_topic=venue_list_topic(cfg.mqtt.prefix, args.venue, args.kind),
                       response_filter=f"{cfg.mqtt.prefix}/+/response/lists", payload=message,
                       transaction=transaction, timeout_s=args.timeout_s, what="the list",
                       client_id_prefix="qrgate-list-", retain=True,
                       enough=(lambda got: len(got) >= args.gates) if args.gates else None)
    refused = 0
    for topic, answer in answers:
        gate = topic.split("/")[-3]
        data = answer.get("data") or {}
        if answer.get("status") == "ok":
            print(f"{gate}: {args.kind} list version {data.get('version')}, {data.get('count')} ids")
        else:
            refused += 1
            print(f"{gate}: refused: {answer.get('error')}", file=sys.stderr)
    print(f"{len(answers)} gate(s) answered, {refused} refused; the list stays retained for gates that "
          f"connect later (valid {MAX_VALIDITY_S // 86400} days)")
    if not answers:
        return EXIT_NO_ANSWER
    return 1 if refused or (args.gates and len(answers) < args.gates) else 0

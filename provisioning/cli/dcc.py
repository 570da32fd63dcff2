"""`qrgate dcc verify` and `qrgate keys dcc import|list`: EU Digital COVID Certificates (``HC1:``)."""

from __future__ import annotations

import argparse
import base64
import binascii
import datetime as dt
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from firmware.adapters.config_file import load_config
from firmware.core.config import DEFAULT_CONFIG_PATH
from firmware.core.errors import ConfigError

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("dcc", help="verify an EU Digital COVID Certificate (HC1:) against signer certificates",
                       description="EU Digital COVID Certificates: HC1: + base45(zlib(COSE_Sign1(CWT))).")
    ds = p.add_subparsers(dest="dcc_command", metavar="ACTION", required=True)
    v = ds.add_parser("verify", help="check prefix, base45, zlib, COSE, signature, validity and key usage; "
                      "exit 0 only when verified")
    v.add_argument("payload_file", metavar="PAYLOAD_FILE", help="file holding the HC1: text ('-': standard input)")
    v.add_argument("--dsc", required=True, action="append", metavar="FILE",
                   help="signer certificate(s): PEM (one or more) or base64 DER, one per line; repeatable")
    v.add_argument("--at", default=None, metavar="RFC3339",
                   help="verify as at this time, e.g. 2021-06-01T20:00:00+02:00 (default: now)")
    v.add_argument("--config", default=None,
                   help="also report `admitted` under this device's [policy.dcc] (default: the built-in rules)")
    v.add_argument("--json", action="store_true", help="print one JSON object")
    v.set_defaults(func=cmd_verify)


def register_keys(ks: argparse._SubParsersAction) -> None:
    """Add `qrgate keys dcc import|list` to the `keys` subcommands."""
    p = ks.add_parser("dcc", help="the device's trusted DCC Document Signer Certificates (trust list)")
    kd = p.add_subparsers(dest="keys_dcc_command", metavar="ACTION", required=True)
    i = kd.add_parser("import", help="install DSCs from a PEM bundle, a folder of DER/PEM files, or a JSON "
                      "DSC list; replaces the device's list")
    i.add_argument("file", metavar="FILE")
    i.add_argument("--config", default=str(DEFAULT_CONFIG_PATH), help="device config (default: %(default)s)")
    i.add_argument("--signature", default=None, metavar="SIGFILE",
                   help="detached signature of FILE (base64 or raw), checked with keys.dcc_list_key")
    i.add_argument("--remote", action="store_true",
                   help="send the list to the running gate over MQTT, signed with --key, instead of writing it here")
    i.add_argument("--key", help="--remote: command signing key (the gate trusts it with --role command)")
    i.add_argument("--broker", help="--remote: HOST:PORT (default: the config's [mqtt] host and port)")
    i.add_argument("--device", help="--remote: gate id (default: the config's device.id)")
    i.add_argument("--venue", metavar="VENUE_ID", help="--remote: every gate of this venue, retained on "
                   "<prefix>/venues/VENUE_ID/lists/dcc (gates that connect later get it too; valid 7 days)")
    i.add_argument("--gates", type=int, default=0, metavar="N", help="--venue: stop waiting once N gates answered")
    i.add_argument("--timeout-s", type=float, default=30.0, help="--remote: wait this long for answers")
    i.set_defaults(func=cmd_import)
    ls = kd.add_parser("list", help="list the installed DSCs: kid, country, kinds, validity")
    ls.add_argument("--config", default=str(DEFAULT_CONFIG_PATH), help="device config (default: %(default)s)")
    ls.set_defaults(func=cmd_list)


def _day(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.timezone.utc).strftime("%Y-%m-%d")


def _iso(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return dt.datetime.fromtimestamp(seconds, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str) -> float:
    """Unix seconds of an RFC 3339 time (no offset: UTC).

    Raises:
        ConfigError: not a time.
    """
    try:
        moment = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError as err:
        raise ConfigError(f"--at {text!r} is not an RFC 3339 time such as 2021-06-01T20:00:00+02:00") from err
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.timezone.utc)
    return moment.timestamp()


def read_dsc_file(path: str | Path) -> list[bytes]:
    """Certificate DERs from a file of PEM blocks, or of base64 DER (one per line), or raw DER.

    Raises:
        ConfigError: the file cannot be read or holds no certificate.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise ConfigError(f"--dsc {path} cannot be read ({err.strerror})") from err
    if b"-----BEGIN" in data:
        from cryptography import x509
        from cryptography.hazmat.primitives.serialization import Encoding

        try:
            return [c.public_bytes(Encoding.DER) for c in x509.load_pem_x509_certificates(data)]
        except ValueError as err:
            raise ConfigError(f"--dsc {path}: not a PEM certificate ({err})") from err
    lines = [line.strip() for line in data.splitlines() if line.strip()]
    try:
        ders = [base64.b64decode(line, validate=True) for line in lines]
    except (binascii.Error, ValueError):
        ders = [data]
    if not ders:
        raise ConfigError(f"--dsc {path} is empty")
    return ders


def verify_report(payload: bytes, store: Any, now_s: float, rules: Any) -> dict[str, Any]:
    """The `dcc verify` result for one payload: never the payload or the holder's data."""
    from firmware.core.credentials import dcc
    from firmware.core.dcc_rules import dcc_reason
    from firmware.core.model import Credential

    inspection = dcc.inspect(payload, store)
    out: dict[str, Any] = {"verified": False, "reason": None, "kind": inspection.kind,
                           "country": inspection.country, "expires": _iso(inspection.expires_s)}
    result = inspection.result
    if isinstance(result, Credential) and result.dcc is not None:
        timing = dcc.check_times(result.dcc, now_s)
        out["verified"] = timing is None
        out["reason"] = "ok" if timing is None else timing.value
        admitted = dcc_reason(result.dcc, now_s, rules)
        out["admitted"] = admitted is None
        out["admitted_reason"] = "ok" if admitted is None else admitted.value
    else:
        out["reason"] = result.reason.value
        out["detail"] = result.detail
        out["admitted"] = False
    out["stages"] = inspection.stages
    return out


def cmd_verify(args: argparse.Namespace) -> int:
    from firmware.core.credentials.dcc_trust import DscError, DscStore, parse_dsc
    from firmware.core.dcc_rules import DccRules

    dscs = []
    for path in args.dsc:
        for i, der in enumerate(read_dsc_file(path)):
            try:
                dscs.append(parse_dsc(der))
            except DscError as err:
                raise ConfigError(f"--dsc {path} certificate {i + 1}: {err}") from err
    now_s = parse_time(args.at) if args.at else time.time()
    rules = DccRules()
    if args.config:
        from firmware.core.dcc_rules import dcc_rules_from

        rules = dcc_rules_from(load_config(args.config).policy_dcc)
    if args.payload_file == "-":
        text = sys.stdin.read()
    else:
        try:
            text = Path(args.payload_file).read_text(encoding="utf-8", errors="replace")
        except OSError as err:
            raise ConfigError(f"{args.payload_file} cannot be read ({err.strerror})") from err
    report = verify_report(text.strip().encode("utf-8", "replace"), DscStore(dscs), now_s, rules)
    if args.json:
        print(json.dumps(report, ensure_ascii=False))
    else:
        state = "verified" if report["verified"] else "NOT verified"
        print(f"{state}: reason={report['reason']} kind={report['kind']} country={report['country']} "
              f"expires={report['expires']} admitted={report['admitted']}"
              + (f" ({report['admitted_reason']})" if report.get("admitted_reason") not in (None, "ok") else ""))
        if report.get("detail"):
            print(f"  {report['detail']}")
        print("  stages: " + ", ".join(f"{k} {v}" for k, v in report["stages"].items()))
    return 0 if report["verified"] else 1


def summary_rows(dscs: list[Any]) -> list[tuple[str, int, str, str, str]]:
    """(country, count, kinds, first expiry, last expiry) per country, sorted."""
    by_country: dict[str, list[Any]] = {}
    for d in dscs:
        by_country.setdefault(d.country or "?", []).append(d)
    rows = []
    for country in sorted(by_country):
        items = by_country[country]
        kinds = "".join(k for k in "vtr" if any(k in d.kinds for d in items))
        rows.append((country, len(items), kinds, _day(min(d.not_after_s for d in items)),
                     _day(max(d.not_after_s for d in items))))
    return rows


def _print_summary(dscs: list[Any], now_s: float) -> None:
    print(f"{'COUNTRY':<8} {'DSCS':>5}  {'KINDS':<5}  EXPIRES (first .. last)")
    for country, count, kinds, first, last in summary_rows(dscs):
        print(f"{country:<8} {count:>5}  {kinds:<5}  {first} .. {last}")
    expired = sum(1 for d in dscs if d.not_after_s < now_s)
    if expired:
        print(f"note: {expired} DSC(s) have already expired; certificates they signed are refused "
              "(dcc_signer_not_valid)", file=sys.stderr)


def cmd_import(args: argparse.Namespace) -> int:
    from firmware.adapters.dcc_keystore import (
        read_import,
        read_signature_file,
        verify_list_signature,
        write_trust_list,
    )
    from firmware.core.credentials.dcc_trust import DscStore
    from firmware.core.credentials.trust import public_key_from_pem
    from firmware.core.dcc_trust_message import list_digest

    cfg = load_config(args.config)
    imported = read_import(args.file)
    signature = read_signature_file(args.signature) if args.signature else imported.embedded_signature
    if cfg.keys.dcc_list_key:
        key_path = cfg.resolve(cfg.keys.dcc_list_key, cfg.keys.dcc_list_key)
        try:
            key = public_key_from_pem(key_path.read_bytes())
        except (OSError, ValueError) as err:
            raise ConfigError(f"keys.dcc_list_key {key_path}: {err}") from err
        if signature is None:
            print(f"refused: {args.file} is not signed, and keys.dcc_list_key requires a signed list "
                  "(give --signature SIGFILE)", file=sys.stderr)
            return 1
        if not verify_list_signature(imported.signed_body, signature, key):
            print(f"refused: the signature of {args.file} does not verify with keys.dcc_list_key {key_path}",
                  file=sys.stderr)
            return 1
        print(f"list signature verified with {key_path}", file=sys.stderr)
    elif signature is not None:
        print("note: the list carries a signature, but keys.dcc_list_key is not set: not checked", file=sys.stderr)
    for problem in imported.problems:
        print(f"skipped: {problem}", file=sys.stderr)
    if not imported.dscs:
        print(f"refused: {args.file} holds no usable DSC; the installed list is unchanged", file=sys.stderr)
        return 1
    now_s = time.time()
    store = DscStore(imported.dscs)
    if args.remote:
        return _send_remote(args, cfg, store, now_s)
    dest = cfg.dcc_trust_list
    write_trust_list(dest, store, installed_at_s=now_s, list_sha256=list_digest(imported.signed_body))
    print(f"installed {len(store)} DSC(s) from {len(store.countries())} countr"
          f"{'y' if len(store.countries()) == 1 else 'ies'} ({', '.join(store.countries())}) into {dest}")
    _print_summary(list(store.all()), now_s)
    print("restart the gate (systemctl restart qrgate) to use the new list", file=sys.stderr)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from firmware.adapters.dcc_keystore import load_trust_list

    cfg = load_config(args.config)
    store = load_trust_list(cfg.dcc_trust_list, missing_ok=True)
    if not len(store):
        print(f"(no DCC trust list at {cfg.dcc_trust_list}; install one with `qrgate keys dcc import FILE`)",
              file=sys.stderr)
        return 1
    print(f"{'KID':<16}  {'COUNTRY':<7}  {'KINDS':<5}  {'KEY':<9}  VALID")
    for d in store.all():
        kinds = "".join(k for k in "vtr" if k in d.kinds)
        print(f"{d.kid.hex():<16}  {d.country or '?':<7}  {kinds:<5}  {d.key_type:<9}  "
              f"{_day(d.not_before_s)} .. {_day(d.not_after_s)}")
    if store.installed_at_s is not None:
        print(f"installed {_iso(store.installed_at_s)}", file=sys.stderr)
    return 0


EXIT_NO_ANSWER = 4  # as `qrgate list --remote`


def _send_remote(args: argparse.Namespace, cfg: Any, store: Any, now_s: float) -> int:
    """Sign the list with a command key and send it to one gate, or retained to a venue's gates."""
    import secrets

    from firmware.core.dcc_trust_message import KIND, encode_trust_message, list_entries
    from firmware.core.list_message import MAX_VALIDITY_S, venue_list_topic
    from provisioning.keys import load_private_key
    from provisioning.list_remote import send_list
    from provisioning.mqtt_request import Broker, Target, exchange

    if not args.key:
        raise ConfigError("--remote needs --key COMMAND_KEY (a key the gates trust with --role command)")
    broker = Broker.of_gate(cfg, args.broker or "")
    key = load_private_key(args.key)
    transaction = secrets.token_hex(6)
    body = json.dumps(list_entries(list(store.all()))).encode("utf-8")
    print(f"sending {len(store)} DSC(s) from {', '.join(store.countries())}", file=sys.stderr)
    if args.venue:
        message = encode_trust_message(key, list_json=body, version=int(now_s), now_s=now_s, valid_s=MAX_VALIDITY_S,
                                       venue_id=args.venue, transaction=transaction)
        answers = exchange(broker, request_topic=venue_list_topic(cfg.mqtt.prefix, args.venue, KIND),
                           response_filter=f"{cfg.mqtt.prefix}/+/response/lists", payload=message,
                           transaction=transaction, timeout_s=args.timeout_s, what="the DCC trust list",
                           client_id_prefix="qrgate-dcc-", retain=True,
                           enough=(lambda got: len(got) >= args.gates) if args.gates else None)
        refused = 0
        for topic, answer in answers:
            gate = topic.split("/")[-3]
            data = answer.get("data") or {}
            if answer.get("status") == "ok":
                print(f"{gate}: DCC trust list version {data.get('version')}, {data.get('count')} DSC(s)")
            else:
                refused += 1
                print(f"{gate}: refused: {answer.get('error')}", file=sys.stderr)
        print(f"{len(answers)} gate(s) answered, {refused} refused; the list stays retained for gates that "
              f"connect later (valid {MAX_VALIDITY_S // 86400} days)")
        if not answers:
            return EXIT_NO_ANSWER
        return 1 if refused or (args.gates and len(answers) < args.gates) else 0
    device = args.device or cfg.device.id
    message = encode_trust_message(key, list_json=body, version=int(now_s), now_s=now_s, device_id=device,
                                   transaction=transaction)
    answer = send_list(Target(broker, device, cfg.mqtt.prefix), KIND, message, transaction, timeout_s=args.timeout_s)
    if answer is None:
        print(f"no answer within {args.timeout_s:g} s (transaction {transaction}); is the gate online?",
              file=sys.stderr)
        return EXIT_NO_ANSWER
    if answer.get("status") != "ok":
        print(f"the gate refused the list: {answer.get('error')}", file=sys.stderr)
        return 1
    data = answer.get("data") or {}
    print(f"{device}: DCC trust list version {data.get('version')}, {data.get('count')} DSC(s) (sent over MQTT)")
    return 0

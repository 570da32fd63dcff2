"""`qrgate pass`: issue a qrgate pass (`QG1:`) and check one the way a gate would."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import sys
import time
from typing import Any

from firmware.adapters.config_file import load_config
from firmware.core.config import DEFAULT_CONFIG_PATH

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pass", help="issue a signed qrgate pass, or check one",
                       description="A qrgate pass is QG1: + base45(zlib(COSE_Sign1(CWT claims))).")
    ps = p.add_subparsers(dest="pass_command", metavar="ACTION", required=True)

    i = ps.add_parser("issue", help="sign a pass; prints the pass text (QG1:...)")
    i.add_argument("--key", required=True, help="issuer private key PEM (from `qrgate keys new`)")
    i.add_argument("--sub", required=True, help="person id")
    i.add_argument("--name", required=True, help="holder's full name")
    i.add_argument("--phone", required=True, help="holder's phone number")
    i.add_argument("--iss", default=None, help="issuer name (optional)")
    i.add_argument("--valid-days", type=float, default=None, help="valid from now for N days (default 365)")
    i.add_argument("--not-before", default=None, metavar="T",
                   help="start of validity: Unix seconds, 2026-12-31, or 2026-12-31T08:00:00+07:00 (no offset: UTC)")
    i.add_argument("--expires", default=None, metavar="T", help="end of validity, same forms as --not-before")
    i.add_argument("--health-declared", default=None, metavar="T",
                   help="time of the holder's latest health declaration (claim hd)")
    i.add_argument("--no-compress", action="store_true", help="never zlib the message (default: only when it makes the pass shorter)")
    i.add_argument("--png", default=None, metavar="FILE", help="also write a QR PNG (scale 10, border 4)")
    i.add_argument("--svg", default=None, metavar="FILE", help="also write a QR SVG")
    i.set_defaults(func=cmd_issue)

    c = ps.add_parser("check", help="parse and verify a pass (or CCCD QR) against a device's trusted keys")
    c.add_argument("text", nargs="?", metavar="PASS_TEXT", help="the payload text (or use --image)")
    c.add_argument("--image", default=None, metavar="FILE", help="read the code from an image file")
    c.add_argument("--config", default=str(DEFAULT_CONFIG_PATH), help="device config (default: %(default)s)")
    c.add_argument("--issuer", action="append", default=[], metavar="PUBFILE",
                   help="trust this issuer public key (PEM) instead of a device's keys; repeatable")
    c.add_argument("--dsc", action="append", default=[], metavar="FILE",
                   help="for HC1: codes, trust these signer certificates (PEM or base64 DER) instead of "
                   "the device's DCC trust list; repeatable")
    c.add_argument("--json", action="store_true", help="print one JSON object")
    c.set_defaults(func=cmd_check)


def cmd_issue(args: argparse.Namespace) -> int:
    from provisioning.keys import load_private_key
    from provisioning.passes import issue, parse_time, save_png, save_svg, validity

    key = load_private_key(args.key)
    now_s = time.time()
    window = validity(now_s, valid_days=args.valid_days, not_before=args.not_before, expires=args.expires)
    hd = parse_time(args.health_declared, "--health-declared") if args.health_declared else None
    text = issue(key, sub=args.sub, name=args.name, phone=args.phone, now_s=now_s, window=window,
                 iss=args.iss, health_declared_s=hd, compress=False if args.no_compress else "auto")
    print(text)
    if args.png:
        save_png(text, args.png)
    if args.svg:
        save_svg(text, args.svg)
    print(f"pass: {len(text)} characters, valid {_iso(window.not_before_s)} to {_iso(window.expires_s)}",
          file=sys.stderr)
    # Still issued (a test pass for the `expired` refusal is useful), but never by surprise.
    if window.expires_s is not None and window.expires_s <= now_s:
        print(f"warning: this pass expired at {_iso(window.expires_s)}, before it was issued; "
              "every gate refuses it (reason expired)", file=sys.stderr)
    return 0


def _iso(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return dt.datetime.fromtimestamp(seconds, dt.timezone.utc).isoformat().replace("+00:00", "Z")


def _read_image(path: str) -> list[bytes]:
    from device.camera import load_grey_image
    from device.decoders import make_decoder
    from firmware.core.model import Frame

    frame = Frame(pixels=load_grey_image(path), captured_mono_s=0.0, origin=str(path))
    return [code.payload for code in make_decoder("zxing").decode(frame)]


def report(payload: bytes, trust: Any, now_s: float, dcc_trust: Any = None) -> dict[str, Any]:
    """What `pass check` prints for one payload: stages, result and masked display, never the payload."""
    import hashlib

    from firmware.core.credentials import DscStore, check_payload, dcc, qg1
    from firmware.core.masking import display_credential
    from firmware.core.model import Credential

    out: dict[str, Any] = {"code_sha256": hashlib.sha256(payload).hexdigest()[:16]}
    if qg1.detect(payload):
        inspection = qg1.inspect(payload, trust)
        out["stages"] = inspection.stages
        result = inspection.result
    elif dcc.detect(payload):
        dcc_inspection = dcc.inspect(payload, dcc_trust if dcc_trust is not None else DscStore())
        out["stages"] = dcc_inspection.stages
        result = dcc_inspection.result
        if isinstance(result, Credential) and result.dcc is not None:
            from firmware.core.dcc_rules import DccRules, dcc_reason, describe

            out["certificate"] = describe(result.dcc)
            refused = dcc_reason(result.dcc, now_s, DccRules())
            if refused is not None:
                out["note"] = f"a gate with the default [policy.dcc] denies it: reason {refused.value}"
    else:
        result = check_payload(payload, trust)
    out["type"] = result.type.value
    if isinstance(result, Credential):
        out.update(reason="ok", display=display_credential(result), signed=result.signed,
                   kid=result.kid_hex, issuer=result.issuer,
                   issued_at=_iso(result.issued_at_s), not_before=_iso(result.not_before_s),
                   expires=_iso(result.expires_s), health_declared=_iso(result.health_declared_s))
        if result.expires_s is not None and result.expires_s <= now_s:
            out["note"] = "expired (a gate denies it: reason expired)"
        elif result.not_before_s is not None and result.not_before_s > now_s:
            out["note"] = "not yet valid (a gate denies it: reason not_yet_valid)"
    else:
        out.update(reason=result.reason.value, detail=result.detail)
    return out


def _dcc_trust(args: argparse.Namespace) -> Any:
    """The DSCs for HC1: codes: --dsc files, else the device's trust list (if a config is readable)."""
    from firmware.core.credentials import DscStore
    from firmware.core.credentials.dcc_trust import parse_dsc

    if args.dsc:
        from provisioning.cli.dcc import read_dsc_file

        return DscStore([parse_dsc(der) for path in args.dsc for der in read_dsc_file(path)])
    if args.issuer:
        return DscStore()
    from firmware.adapters.dcc_keystore import load_trust_list

    return load_trust_list(load_config(args.config).dcc_trust_list, missing_ok=True)


def cmd_check(args: argparse.Namespace) -> int:
    from firmware.adapters.keystore import read_trust_dir

    if bool(args.text) == bool(args.image):
        print("give either PASS_TEXT or --image FILE", file=sys.stderr)
        return 2
    if args.issuer or args.dsc:
        from firmware.core.credentials import TrustStore
        from provisioning.keys import load_public_key

        trust = TrustStore.from_keys(load_public_key(path) for path in args.issuer)
    else:
        from firmware.adapters.effective_config import effective_from

        # the same issuers as the running gate: the config's directory plus the provisioning record's
        eff = effective_from(load_config(args.config))
        config_trust, problems = read_trust_dir(eff.cfg.issuers_dir)
        if not eff.issuers_dir_required and not eff.cfg.issuers_dir.exists():
            problems = []
        for problem in problems:
            log.warning("%s", problem)
        trust = eff.issuer_trust(config_trust)
        if eff.record is not None:
            log.info("issuer keys: %d from %s, %d from the provisioning record", len(config_trust),
                     eff.cfg.issuers_dir, len(eff.record_issuer_ders))
    dcc_trust = _dcc_trust(args)
    if args.image:
        try:
            payloads = _read_image(args.image)
        except OSError as err:
            detail = err.strerror or str(err)
            print(f"qrgate pass check: cannot read image {args.image}: {detail}", file=sys.stderr)
            return 1
    else:
        payloads = [args.text.encode("utf-8")]
    if not payloads:
        print(f"no QR code found in {args.image}", file=sys.stderr)
        return 1
    reports = [report(p, trust, time.time(), dcc_trust) for p in payloads]
    for r in reports:
        if args.json:
            print(json.dumps(r, ensure_ascii=False))
        else:
            print(" ".join(f"{k}={v}" for k, v in r.items() if v is not None and k != "stages"))
            if "stages" in r:
                print("  stages: " + ", ".join(f"{k} {v}" for k, v in r["stages"].items()))
    return 0 if all(r["reason"] == "ok" for r in reports) else 1

"""`qrgate provision venue|device|qr`: register venues, configure gates, make provisioning QRs."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("provision", help="register a venue, configure a gate, make a provisioning QR",
                       description="Provisioning tools for technicians. They never touch the files of "
                       "a running gate daemon.")
    ps = p.add_subparsers(dest="provision_command", metavar="ACTION", required=True)

    v = ps.add_parser("venue", help="validate a venue registration; write its record and QR poster",
                      description="Validates every field (all problems reported at once), gives the venue "
                      "a stable id, writes DIR/<venue_id>.json and the poster (PNG, SVG, PDF).")
    v.add_argument("--name", required=True, help="venue name, e.g. \"Bến xe Mỹ Đình\"")
    v.add_argument("--province", required=True, help="province or centrally-run city (Tỉnh/Thành phố)")
    v.add_argument("--district", default=None, help="district (Quận/Huyện/Thị xã) of a 2021 three-level "
                   "address; leave it out for a current (July 2025) two-level address")
    v.add_argument("--ward", required=True, help="ward, commune or township (Phường/Xã/Đặc khu; Thị trấn in a "
                   "2021 three-level address); list them with `qrgate provision wards --province P`")
    v.add_argument("--address", required=True, help="house number and street, e.g. \"Số 20 Phạm Hùng\"")
    v.add_argument("--registrant", required=True, help="the registrant's full name")
    v.add_argument("--phone", required=True, help="the registrant's Vietnamese mobile number")
    v.add_argument("--out", required=True, help="output directory")
    v.add_argument("--divisions", default=None, help="administrative units as a nested-divisions.json "
                   "file (either structure), used alone; default: the current two-level map of "
                   "vietnam-provinces and the 2021 three-level map shipped with qrgate")
    v.add_argument("--error", default="Q", choices=("M", "Q", "m", "q"), help="QR error level (default Q)")
    v.add_argument("--font", default=None, help="TrueType font with Vietnamese glyphs (default: DejaVu Sans)")
    v.add_argument("--no-pdf", action="store_true", help="do not write the PDF poster")
    v.set_defaults(func=cmd_venue)

    d = ps.add_parser("device", help="write or update a gate's TOML config (for a venue, or for a QR)",
                      description="Writes or updates the config file, shows what changed, and refuses "
                      "inconsistent input. Without --venue the gate is prepared for QR provisioning: "
                      "it starts unprovisioned and takes its venue, direction, broker and issuer keys "
                      "from a provisioning QR (`qrgate provision qr`).")
    d.add_argument("--config", required=True, help="the gate's TOML config to create or update")
    d.add_argument("--device-id", required=True, help="gate id, a slug such as busstation-3-gate-2")
    d.add_argument("--venue", default=None, help="venue record JSON from `qrgate provision venue`; leave it "
                   "out to keep the config's venue (a new config has none: the gate waits for a QR)")
    d.add_argument("--for-qr", action="store_true", help="prepare the gate for a provisioning QR: remove the "
                   "venue the config has (the QR brings venue, direction, broker and issuer keys)")
    d.add_argument("--direction", default=None, choices=("in", "out"),
                   help="required with --venue; with a QR the code sets it")
    d.add_argument("--broker", default=None, help="MQTT broker host:port")
    d.add_argument("--pins", default=None, help="pin profile: a name from `qrgate provision pins` or a "
                   "TOML file")
    d.add_argument("--venue-secret", default=None, metavar="FILE",
                   help="the venue's HMAC secret (from `qrgate provision venue`: VENUE_ID.secret) to install "
                   "as the gate's privacy.hmac_secret_file; default: the one beside the --venue record")
    d.add_argument("--camera", default=None, metavar="SOURCE", help="camera.source: picamera2, v4l2:N, "
                   "dir:PATH (a folder of images, e.g. to try the gate on a PC) or file:PATH")
    d.add_argument("--state-dir", default=None, metavar="DIR", help="device.state_dir (default "
                   "/var/lib/qrgate): outbox, state and the venue secret; e.g. for a second gate on one PC "
                   "(give it its own --runtime-dir too)")
    d.add_argument("--runtime-dir", default=None, metavar="DIR", help="device.runtime_dir (default "
                   "/run/qrgate): the status file `qrgate status` reads; each gate on one machine needs its own")
    d.add_argument("--dry-run", action="store_true", help="show the changes without writing")
    d.set_defaults(func=cmd_device)

    lp = ps.add_parser("pins", help="list the pin profiles shipped for common relay HATs")
    lp.set_defaults(func=cmd_pins)

    w = ps.add_parser("wards", help="list the wards of a province (current map) or of a district (2021 map)",
                      description="Lists the names `provision venue --ward` accepts: the wards and communes of "
                      "a province in the current two-level map, or, with --district, those of a district "
                      "in the 2021 three-level map (Phường, Xã, Thị trấn).")
    w.add_argument("--province", required=True, help="province or centrally-run city, e.g. \"Hà Nội\"")
    w.add_argument("--district", default=None, help="district of the 2021 three-level map (Quận/Huyện/Thị xã)")
    w.add_argument("--divisions", default=None, help="administrative units as a nested-divisions.json file "
                   "instead of the shipped maps")
    w.set_defaults(func=cmd_wards)

    q = ps.add_parser("qr", help="make a signed provisioning QR for a headless gate",
                      description="A QGP1: code signed by the provisioning authority key, valid for at most "
                      "24 hours, usable once per gate. Show it to the gate's camera.")
    q.add_argument("--authority-key", required=True, help="the authority's private key (PEM)")
    q.add_argument("--venue", required=True, help="venue record JSON")
    q.add_argument("--direction", required=True, choices=("in", "out"))
    q.add_argument("--broker", default="", help="MQTT broker host:port (default: none)")
    q.add_argument("--valid-minutes", type=float, default=60.0, help="validity, 1-1440 (default 60)")
    q.add_argument("--trust-issuer", action="append", default=[], metavar="PUBFILE",
                   help="pass issuer public key the gate should trust (repeatable)")
    q.add_argument("--device-id", default=None, help="only this gate may use the code")
    q.add_argument("--png", required=True, help="PNG file to write")
    q.add_argument("--svg", default=None, help="also write an SVG")
    q.add_argument("--print", dest="print_text", action="store_true", help="print the code text on stdout")
    q.add_argument("--register", default=None, metavar="DB",
                   help="history database (path, sqlite:///... or postgresql://...): record the code's nonce, "
                   "so the collector registers the key of the gate that uses this code first")
    q.set_defaults(func=cmd_qr)


def cmd_venue(args: argparse.Namespace) -> int:
    from provisioning.poster import write_poster
    from provisioning.venue_secret import write_venue_secret
    from provisioning.venues import DivisionMaps, Divisions, display_phone, validate_venue, write_venue

    divisions = Divisions.from_file(args.divisions) if args.divisions else DivisionMaps.default()
    venue = validate_venue(name=args.name, province=args.province, district=args.district, ward=args.ward,
                           address=args.address, registrant=args.registrant, phone=args.phone,
                           divisions=divisions)
    path, record = write_venue(venue, args.out, time.time())
    secret_path = write_venue_secret(record["venue_id"], args.out)
    files = write_poster(record, args.out, error=args.error, pdf=not args.no_pdf, font_path=args.font)
    print(record["venue_id"])
    print(f"venue {record['name']}: {record['full_address']}", file=sys.stderr)
    divisions_used = record["divisions"]
    print(f"units from the {divisions_used['structure']} map: {divisions_used['source']}", file=sys.stderr)
    print(f"registrant {record['registrant']['name']}, {display_phone(record['registrant']['phone'])}",
          file=sys.stderr)
    print(f"record {path}; poster {files.png}, {files.svg}" + (f", {files.pdf}" if files.pdf else "")
          + f" (QR {files.qr_symbol_mm:.0f} mm wide at 100 %)", file=sys.stderr)
    print(f"venue HMAC secret {secret_path} (0600): every gate of the venue needs it, so one person has one "
          "subject at all of them; `qrgate provision device --venue` installs it", file=sys.stderr)
    return 0


def cmd_device(args: argparse.Namespace) -> int:
    from provisioning.device_config import provision_device

    result = provision_device(config_path=args.config, device_id=args.device_id, venue_path=args.venue,
                              direction=args.direction, broker=args.broker, pins=args.pins,
                              camera=args.camera, venue_secret=args.venue_secret, state_dir=args.state_dir,
                              runtime_dir=args.runtime_dir,
                              for_qr=args.for_qr, dry_run=args.dry_run)
    if not result.changes:
        print(f"{args.config}: already up to date")
    for line in result.changes:
        print(line)
    if result.changes and not args.dry_run:
        print(f"wrote {args.config}", file=sys.stderr)
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if result.waits_for_qr:
        print("no venue: the gate starts unprovisioned and waits for a provisioning QR; trust the "
              f"authority key first: qrgate keys trust AUTHORITY.pub.pem --config {args.config} --role authority",
              file=sys.stderr)
    return 0


def cmd_pins(args: argparse.Namespace) -> int:
    from provisioning.device_config import list_profiles

    for name, description in list_profiles():
        print(f"{name:28} {description}")
    return 0


def cmd_wards(args: argparse.Namespace) -> int:
    from firmware.core.errors import ConfigError
    from provisioning.venues import DivisionMaps, Divisions, match_unit

    if args.divisions:
        divisions = Divisions.from_file(args.divisions)
    else:
        maps = DivisionMaps.default()
        divisions = maps.former if args.district else maps.current
    found = match_unit(args.province, divisions.provinces, "--province", "in Việt Nam")
    if found.unit is None:
        raise ConfigError(found.problem or f"--province {args.province!r} not found")
    units, where = found.unit.children, found.unit.name
    if divisions.levels == 3:
        if not args.district:
            raise ConfigError(f"--district is required with the three-level map ({divisions.source})")
        district = match_unit(args.district, units, "--district", f"in {found.unit.name}")
        if district.unit is None:
            raise ConfigError(district.problem or f"--district {args.district!r} not found")
        units, where = district.unit.children, f"{district.unit.name}, {found.unit.name}"
    print(f"{len(units)} wards in {where} ({divisions.source}):", file=sys.stderr)
    for unit in sorted(units, key=lambda u: u.code):
        print(unit.name)
    return 0


def cmd_qr(args: argparse.Namespace) -> int:
    from provisioning.keys import load_private_key, load_public_key
    from provisioning.prov_qr import make_code, save_png, save_svg
    from provisioning.venues import load_venue

    record = load_venue(args.venue)
    key = load_private_key(args.authority_key)
    issuers = [load_public_key(p) for p in args.trust_issuer]
    made = make_code(key, record, direction=args.direction, broker=args.broker, now_s=time.time(),
                     valid_minutes=args.valid_minutes, issuer_keys=issuers, device_id=args.device_id)
    if args.register:
        from provisioning.history.store import open_store

        store = open_store(args.register)
        try:
            store.add_enrolment(made.claims["nonce"].hex(), args.device_id or "", record["venue_id"],
                                int(time.time() * 1000))
        finally:
            store.close()
    save_png(made.text, args.png)
    if args.svg:
        save_svg(made.text, args.svg)
    if args.print_text:
        print(made.text)
    summary = {k: v for k, v in made.claims.items() if k not in ("nonce", "issuers")}
    summary["issuer_keys"] = len(made.claims.get("issuers", []))
    summary["expires"] = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(made.claims["exp"]))
    print(f"provisioning code written to {args.png}: {json.dumps(summary, ensure_ascii=False)}", file=sys.stderr)
    return 0

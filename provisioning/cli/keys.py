"""`qrgate keys`: make signing keys and manage a device's trusted keys."""

from __future__ import annotations

import argparse
import logging
import sys

from firmware.adapters.config_file import load_config
from firmware.core.config import DEFAULT_CONFIG_PATH

log = logging.getLogger(__name__)

ROLES = ("issuer", "authority", "command")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("keys", help="make signing keys; trust, untrust and list a device's keys",
                       description="Signing keys are PEM files (PKCS#8 private, SubjectPublicKeyInfo public); "
                       "a key's kid is the first 8 bytes of the SHA-256 of its public key DER.")
    ks = p.add_subparsers(dest="keys_command", metavar="ACTION", required=True)

    n = ks.add_parser("new", help="generate a key pair; prints the kid")
    n.add_argument("--out", required=True, help="private key file to write (0600); the public key goes "
                   "beside it as NAME.pub.pem")
    n.add_argument("--role", choices=ROLES, default="issuer", help="what the key will sign (default: issuer)")
    n.add_argument("--alg", choices=("ed25519", "es256"), default="ed25519", help="default: ed25519")
    n.add_argument("--force", action="store_true", help="replace existing files")
    n.set_defaults(func=cmd_new)

    t = ks.add_parser("trust", help="add a public key to a device's trust directory")
    t.add_argument("pubfile", metavar="PUBFILE", help="public key PEM (e.g. issuer.pub.pem)")
    t.add_argument("--config", default=str(DEFAULT_CONFIG_PATH), help="device config (default: %(default)s)")
    t.add_argument("--role", choices=ROLES, default="issuer", help="default: issuer")
    t.set_defaults(func=cmd_trust)

    u = ks.add_parser("untrust", help="remove a key, by kid, from a device's trust directories")
    u.add_argument("kid", metavar="KID", help="key id, 16 hex digits (see `qrgate keys list`)")
    u.add_argument("--config", default=str(DEFAULT_CONFIG_PATH), help="device config (default: %(default)s)")
    u.add_argument("--role", choices=ROLES, default=None, help="only this role's directory (default: all)")
    u.set_defaults(func=cmd_untrust)

    ls = ks.add_parser("list", help="list a device's trusted keys: kid, role, alg, file")
    ls.add_argument("--config", default=str(DEFAULT_CONFIG_PATH), help="device config (default: %(default)s)")
    ls.set_defaults(func=cmd_list)

    w = ks.add_parser("escrow-new", help="make the health office's X25519 escrow key pair (contact tracing)",
                      description="Write the health office's X25519 key pair: the private key (0600) opens the "
                      "contacts sealed in scan events (`qrgate history trace --reveal --escrow-key FILE`); the "
                      "public key NAME.pub.pem goes to every gate as privacy.escrow_key.")
    w.add_argument("--out", required=True, help="private key file to write (0600), e.g. health-office.pem")
    w.add_argument("--force", action="store_true", help="replace existing files")
    w.set_defaults(func=cmd_escrow_new)

    e = ks.add_parser("export", help="print the public key PEM of a private key")
    e.add_argument("privfile", metavar="PRIVFILE", help="private key PEM")
    e.set_defaults(func=cmd_export)

    from provisioning.cli.dcc import register_keys

    register_keys(ks)  # qrgate keys dcc import|list


def cmd_new(args: argparse.Namespace) -> int:
    from provisioning.keys import new_keypair

    made = new_keypair(args.out, args.alg, force=args.force)
    print(made.kid_hex)
    print(f"{args.role} key {made.alg}: private {made.private_path} (0600, keep it secret), "
          f"public {made.public_path}", file=sys.stderr)
    print(f"next: qrgate keys trust {made.public_path} --config CONFIG --role {args.role}", file=sys.stderr)
    return 0


def cmd_escrow_new(args: argparse.Namespace) -> int:
    from provisioning.keys import new_escrow_keypair

    made = new_escrow_keypair(args.out, force=args.force)
    print(made.fingerprint)
    print(f"escrow key X25519: private {made.private_path} (0600: only the health office keeps it), "
          f"public {made.public_path}", file=sys.stderr)
    print(f"next: copy {made.public_path} to each gate and set [privacy] escrow_key = \"{made.public_path.name}\"",
          file=sys.stderr)
    return 0


def cmd_trust(args: argparse.Namespace) -> int:
    from provisioning.keys import describe, trust

    cfg = load_config(args.config)
    dest, added = trust(args.pubfile, cfg, args.role)
    kid = describe(dest).kid_hex
    print(f"{'trusted' if added else 'already trusted'}: {args.role} key {kid} in {dest}")
    return 0


def cmd_untrust(args: argparse.Namespace) -> int:
    from provisioning.keys import untrust

    cfg = load_config(args.config)
    removed = untrust(args.kid, cfg, args.role)
    if not removed:
        print(f"no trusted key has kid {args.kid}; see `qrgate keys list --config {args.config}`",
              file=sys.stderr)
        return 1
    for path in removed:
        print(f"removed {path}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from firmware.adapters.effective_config import effective_from, state_file
    from firmware.core.cose import ALG_NAMES, alg_for, kid_for
    from firmware.core.effective import issuers_from
    from provisioning.keys import list_trusted

    eff = effective_from(load_config(args.config))
    cfg = eff.cfg
    rows = list_trusted(cfg)
    print(f"{'KID':<16}  {'ROLE':<9}  {'ALG':<5}  FILE")
    bad = 0
    for role, entry in rows:
        if entry.problem:
            bad += 1
            print(f"{'-':<16}  {role:<9}  {'-':<5}  {entry.path}  BAD: {entry.problem}")
        else:
            print(f"{entry.kid_hex:<16}  {role:<9}  {entry.alg:<5}  {entry.path}")
    record_keys = issuers_from(eff.record).all_keys() if eff.record else []
    for key in record_keys:
        # issuer keys a provisioning QR brought: they live in the gate's state, not in a directory
        print(f"{kid_for(key).hex():<16}  {'issuer':<9}  {ALG_NAMES[alg_for(key)]:<5}  "
              f"provisioning record ({state_file(cfg)})")
    if not rows and not record_keys:
        print("(no trusted keys)", file=sys.stderr)
    return 1 if bad else 0


def cmd_export(args: argparse.Namespace) -> int:
    from provisioning.keys import load_private_key, public_pem

    sys.stdout.write(public_pem(load_private_key(args.privfile)).decode("ascii"))
    return 0

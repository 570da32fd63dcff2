"""`qrgate config template|check|boot-fragment`: write, validate and derive configuration."""

from __future__ import annotations

import argparse
import json

from firmware.adapters.config_file import load_config
from firmware.core.config import DEFAULT_CONFIG_PATH, masked_dump, render_template
from firmware.core.errors import ConfigError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("config", help="print a commented config template, check a config, or print "
                       "the config.txt safe-boot fragment")
    cs = p.add_subparsers(dest="config_command", metavar="ACTION", required=True)

    t = cs.add_parser("template", help="print a commented config with every setting and its default")
    t.set_defaults(func=cmd_template)

    c = cs.add_parser("check", help="validate a config and its key directories; exit 78 on problems")
    c.add_argument("--config", default=str(DEFAULT_CONFIG_PATH), help="TOML config file (default: %(default)s)")
    c.add_argument("--json", action="store_true", help="print the parsed config (secrets masked) as JSON")
    c.set_defaults(func=cmd_check)

    b = cs.add_parser("boot-fragment", help="print the /boot/firmware/config.txt lines that hold the relay "
                      "off while the Pi boots, plus the hardware watchdog")
    b.add_argument("--config", default=str(DEFAULT_CONFIG_PATH), help="TOML config file (default: %(default)s)")
    b.set_defaults(func=cmd_boot_fragment)


def cmd_template(args: argparse.Namespace) -> int:
    print(render_template())
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    """Load the config, then the issuer and command key directories; every problem is reported.

    Raises:
        ConfigError: with every problem found (the CLI exits 78).
    """
    from firmware.adapters.effective_config import effective_from, source_lines
    from firmware.adapters.keystore import read_trust_dir

    eff = effective_from(load_config(args.config))
    cfg = eff.cfg
    problems: list[str] = []
    config_issuers, issuer_problems = read_trust_dir(cfg.issuers_dir)
    if not eff.issuers_dir_required and not cfg.issuers_dir.exists():
        issuer_problems = []  # a gate provisioned by QR (or waiting for one) gets its issuer keys from the code
    problems += issuer_problems
    issuers = eff.issuer_trust(config_issuers)
    commands, command_problems = (None, [])
    if cfg.commands.enabled and cfg.command_keys_dir.exists():
        commands, command_problems = read_trust_dir(cfg.command_keys_dir)
        problems += command_problems
    escrow = None
    escrow_path = cfg.escrow_key_path
    if escrow_path is not None:
        from firmware.adapters.escrow_key import load_escrow_public_key

        try:
            escrow = load_escrow_public_key(escrow_path)
        except ConfigError as err:
            problems += err.problems
    if problems:
        raise ConfigError(problems)
    if args.json:
        from firmware.core.event_signature import fingerprint

        print(json.dumps({**masked_dump(cfg), "sources": dict(eff.sources),
                          "escrow_key_fingerprint": fingerprint(escrow) if escrow is not None else None},
                         indent=1, sort_keys=True))
    else:
        print(f"{args.config}: OK (device {cfg.device.id}, venue {cfg.device.venue_id or 'not provisioned'}, "
              f"{len(issuers)} issuer key(s), {len(commands) if commands is not None else 0} command key(s))")
        for line in source_lines(eff):
            print(line)
        print(f"  {'issuer keys':<17} {len(config_issuers)} from {cfg.issuers_dir}, "
              f"{len(eff.record_issuer_ders)} from the provisioning record")
        if escrow is not None:
            from firmware.core.event_signature import fingerprint

            print(f"  {'escrow key':<17} {fingerprint(escrow)} from "
                  f"{escrow_path}: contacts are sealed in events")
        else:
            print(f"  {'escrow key':<17} none: events carry no sealed contact")
    return 0


def cmd_boot_fragment(args: argparse.Namespace) -> int:
    from device.safe_boot import boot_fragment

    cfg = load_config(args.config)
    print(boot_fragment(cfg.gpio), end="")
    return 0

"""The `qrgate` command: the CLI table and the entry point.

Each subcommand module exposes ``register(subparsers)``, which adds its parser and sets
``func`` to a function taking the parsed arguments and returning the exit status. The
gate's own subcommands live in ``firmware/commands/``; the operator tools' in
``provisioning/cli/``, named here as strings only (the gate never imports the tools)."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from firmware import __version__
from firmware.adapters.logsetup import setup_logging
from firmware.core.errors import ConfigError, QrGateError

EX_CONFIG = 78

# Fixed table: subcommand modules, in help order.
COMMAND_MODULES = (
    "firmware.commands.run",
    "firmware.commands.demo",
    "firmware.commands.decode",
    "provisioning.cli.keys",
    "provisioning.cli.pass_",
    "provisioning.cli.dcc",
    "firmware.commands.bench",
    "firmware.commands.config",
    "provisioning.cli.provision",
    "provisioning.cli.lists",
    "firmware.commands.status",
    "firmware.commands.outbox",
    "provisioning.cli.cmd",
    "provisioning.cli.history",
    "provisioning.cli.backoffice",  # parser only; Django is imported when it runs
)

log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="qrgate",
        description="QR turnstile controller: camera, offline pass checks, relay, durable MQTT events.",
    )
    parser.add_argument("--version", action="version", version=f"qrgate {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv: debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)  # every module in the table exists
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the qrgate command line. Returns the process exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except ConfigError as err:
        print("qrgate: configuration error:", file=sys.stderr)
        for problem in err.problems:
            print(f"  - {problem}", file=sys.stderr)
        return EX_CONFIG
    except QrGateError as err:
        print(f"qrgate: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `qrgate ... | head` closed our stdout: not an error. Point stdout at /dev/null so
        # the interpreter's final flush does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())

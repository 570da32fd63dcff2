"""The CLI's fixed module tables: every listed module exists and registers its subcommand."""

from __future__ import annotations

import argparse

from firmware.cli import build_parser


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices


def test_every_command_module_registers_in_table_order():
    assert list(_subcommands(build_parser())) == ["run", "demo", "decode", "keys", "pass", "dcc", "bench",
                                                  "config", "provision", "list", "status", "outbox", "cmd", "history",
                                                  "backoffice"]


def test_every_bench_module_registers():
    bench = _subcommands(build_parser())["bench"]
    assert list(_subcommands(bench)) == ["decode", "loop", "outbox", "lists", "history", "fleet", "approach"]

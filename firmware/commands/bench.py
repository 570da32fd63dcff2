"""`qrgate bench`: one subcommand, several sub-benches (`qrgate bench decode|loop|outbox|lists|history|fleet|approach`).

Each sub-bench lives in a module from the fixed list ``BENCH_MODULES`` that exposes
``register(bench_subparsers)``; a missing module is an error. Every bench
prints a readable table, or one JSON document with ``--json``; both carry the date
(UTC) and the CPU so that figures in the README can be traced to a machine.
"""

from __future__ import annotations

import argparse
import importlib

# Fixed table: sub-bench modules, in help order. Never built from user input.
BENCH_MODULES = (
    "firmware.bench.decode",
    "firmware.bench.loop",
    "firmware.bench.outbox",
    "firmware.bench.lists",
    "provisioning.history.bench",
    "provisioning.history.fleet",
    "firmware.bench.approach",
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="measure decoders, the gate loop and the stores",
                       description="Benchmarks. Each prints a table, or JSON with --json.")
    bench_sub = p.add_subparsers(dest="bench", metavar="BENCH")
    for name in BENCH_MODULES:
        importlib.import_module(name).register(bench_sub)  # every module in the table exists

    def no_bench(args: argparse.Namespace) -> int:
        p.print_help()
        return 2

    p.set_defaults(func=no_bench)

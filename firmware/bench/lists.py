"""`qrgate bench lists`: import a large CSV deny list, load it, and time lookups.

Writes a CSV of ``--rows`` 12-digit CCCD-like ids (with a Vietnamese name column) in a
temporary directory, then measures, in one process:

- ``import``: stream-parse the CSV, hash the ids, write the list file atomically;
- ``load``: read the list file into the in-memory set (what the daemon does at start);
- ``lookup``: ``is_denied`` for ids on and off the list (mean microseconds per lookup), by id
  only, and as the gate looks up (``gate_lookup``: the id, then its HMAC subject at the venue,
  with the decision's time: two keyed hashes for an id that is not on the list);
- the resident memory the loaded list adds (from ``tracemalloc``).
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

DEFAULT_ROWS = 1_000_000


def register(bench_sub: argparse._SubParsersAction) -> None:
    from firmware.bench.common import add_json_flag

    p = bench_sub.add_parser("lists", help="deny list: CSV import, load and lookup times for N rows",
                             description="Import a generated CSV of --rows ids, load it, time lookups.")
    p.add_argument("--rows", type=int, default=DEFAULT_ROWS, help="rows in the CSV (default: %(default)s)")
    p.add_argument("--lookups", type=int, default=200_000, help="timed lookups (default: %(default)s)")
    p.add_argument("--dir", default=None, help="work directory (default: a temporary one, removed after)")
    add_json_flag(p)
    p.set_defaults(func=bench_lists_command)


def write_csv(path: Path, rows: int, seed: int = 7) -> None:
    """Write rows of ``<12-digit id>,<name>`` with a header, in 1 MB chunks."""
    rng = random.Random(seed)
    with open(path, "wb") as f:
        f.write("cccd,ho_ten\n".encode())
        chunk: list[str] = []
        for i in range(rows):
            chunk.append(f"{rng.randrange(10**11, 10**12):012d},Nguyễn Văn {i}\n")
            if len(chunk) >= 20000:
                f.write("".join(chunk).encode("utf-8"))
                chunk.clear()
        f.write("".join(chunk).encode("utf-8"))


def run_bench(work: Path, rows: int, lookups: int) -> dict[str, Any]:
    """Run the measurements in work; returns the report dict."""
    from firmware.adapters.list_files import ListStore, import_csv_file
    from firmware.core.lists import MemoryLists

    csv_path = work / "deny.csv"
    write_csv(csv_path, rows)
    store = ListStore(work / "lists")
    started = time.perf_counter()
    snap, result = import_csv_file(store, "deny", csv_path, now_s=time.time())
    import_s = time.perf_counter() - started
    assert snap is not None
    del snap
    started = time.perf_counter()
    loaded = store.load("deny")
    load_s = time.perf_counter() - started
    del loaded
    # A second load under tracemalloc for the memory figure (tracing slows it down several times).
    tracemalloc.start()
    loaded = store.load("deny")
    memory_b, _peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    lists = MemoryLists(deny=loaded)
    rng = random.Random(11)
    with open(csv_path, encoding="utf-8") as f:
        next(f)
        sample = [line.split(",", 1)[0] for _, line in zip(range(lookups // 2), f, strict=False)]
    probes = sample + [f"{rng.randrange(10**11, 10**12):012d}x" for _ in range(lookups - len(sample))]
    started = time.perf_counter()
    hits = sum(1 for p in probes if lists.is_denied(p))
    lookup_s = time.perf_counter() - started
    from functools import partial

    from firmware.core.events import protect_subject

    gate = MemoryLists(deny=loaded, subject_of=partial(protect_subject, mode="hmac", secret=os.urandom(32)))
    now_s = time.time()
    started = time.perf_counter()
    gate_hits = sum(1 for p in probes if gate.is_denied(p, now_s))
    gate_lookup_s = time.perf_counter() - started
    assert gate_hits == hits
    return {
        "rows": rows, "ids": loaded.info.count, "duplicates": result.duplicates,
        "csv_mb": round(csv_path.stat().st_size / 1e6, 1),
        "list_file_mb": round(store.path("deny").stat().st_size / 1e6, 1),
        "import_s": round(import_s, 2), "load_s": round(load_s, 2),
        "lookup_us": round(lookup_s / max(1, len(probes)) * 1e6, 2), "lookups": len(probes), "hits": hits,
        "gate_lookup_us": round(gate_lookup_s / max(1, len(probes)) * 1e6, 2),
        "memory_mb": round(memory_b / 1e6, 1),
    }


def bench_lists_command(args: argparse.Namespace) -> int:
    from firmware.bench.common import emit, format_table, machine_info

    if args.dir:
        work = Path(args.dir)
        work.mkdir(parents=True, exist_ok=True)
        report = run_bench(work, args.rows, args.lookups)
    else:
        with tempfile.TemporaryDirectory(prefix="qrgate-bench-lists-") as tmp:
            report = run_bench(Path(tmp), args.rows, args.lookups)
    report = {"bench": "lists", "machine": machine_info(), **report}
    table = format_table(
        ["rows", "CSV MB", "import s", "load s", "lookup µs", "gate lookup µs", "list MB", "memory MB"],
        [[report["rows"], report["csv_mb"], report["import_s"], report["load_s"], report["lookup_us"],
          report["gate_lookup_us"], report["list_file_mb"], report["memory_mb"]]])
    m = report["machine"]
    emit(args, report, f"{table}\n\n{m['cpu']}, {m['cpus']} CPUs, load {m['load_avg_1m']}, "
         f"Python {m['python']}, pid {os.getpid()}")
    return 0

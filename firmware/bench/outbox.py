"""`qrgate bench outbox`: the outbox's append cost against backlog, disk bytes per event, drain rate.

Three figures (issue 3, section 6):

- append-and-commit time per event with a backlog of 1,000 and of 100,000 unsent events
  (target: the ratio at most 1.5);
- bytes written per event (append plus mark-sent, as the publisher does it, WAL
  checkpoints included), from ``/proc/self/io``: ``write_bytes`` (what reached the block
  layer, target at most 16 KB) and ``wchar`` (what was passed to ``write()``);
- drain rate to a local Mosquitto: QoS 1 events per second from the outbox until every
  PUBACK is in and marked (target at least 1,000/s). The bench starts its own
  ``mosquitto`` on a free loopback port when the program is installed, or uses ``--broker``;
- offline (RELIABILITY D2): ``--offline`` events appended one by one through the real outbox
  with no broker, the process's RSS after the first 1,000 and at the end (target: growth
  under 10 %), then the drain rate of that backlog (target at least 200/s).

The backlogs are filled in one bulk transaction (the fill is not what is measured).
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import shutil
import socket
import sqlite3
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from firmware.adapters.outbox import SqliteOutbox
from firmware.bench.common import add_json_flag, emit, format_table, machine_info, percentile
from firmware.core.errors import ConfigError
from firmware.core.model import ScanEvent

SAMPLE = ScanEvent(device_id="bench-gate", venue_id="v-bench", direction="in", ts="2026-11-26T10:00:00.000Z",
                   time_synced=True, boot_id="0123456789abcdef", decision="granted", reason="ok",
                   credential="qg1", subject="5f2b0c8e9d7a6b5c4d3e2f1a0b9c8d7e",
                   display="NGUYỄN *** 0966 ***",
                   latency_ms=41.7, code_sha256="ab" * 32)


def register(bench_sub: argparse._SubParsersAction) -> None:
    p = bench_sub.add_parser("outbox", help="outbox append cost vs backlog, bytes per event, MQTT drain rate",
                             description=__doc__.split("\n\n")[0])
    p.add_argument("--small", type=int, default=1000, help="small backlog (default %(default)s)")
    p.add_argument("--large", type=int, default=100_000, help="large backlog (default %(default)s)")
    p.add_argument("--appends", type=int, default=1000,
                   help="appends measured per backlog (default %(default)s)")
    p.add_argument("--drain", type=int, default=5000,
                   help="events drained to the broker (default %(default)s)")
    p.add_argument("--offline", type=int, default=20_000,
                   help="events appended through the real outbox with the broker away, then drained: "
                   "memory growth and drain rate (RELIABILITY D2: 260000 is 72 h at 1 scan/s; "
                   "default %(default)s)")
    p.add_argument("--broker", default="", help="HOST:PORT of a broker to use instead of a private mosquitto")
    p.add_argument("--workdir", default="", help="directory for the bench databases (default: a temp dir "
                   "on /tmp; give one on the SD card to measure it)")
    add_json_flag(p)
    p.set_defaults(func=bench_outbox_command)


def _rss_kb() -> int:
    """This process's resident set size in KiB (``VmRSS``), 0 where /proc is missing."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def measure_offline(path: Path, count: int, host: str, port: int) -> dict[str, Any]:
    """D2: append count events one by one while no broker is connected (the gate offline),
    sampling RSS after the first 1,000 and at the end, then drain them all to the broker."""
    outbox = SqliteOutbox(path, max_events=count + 10)
    warm = min(1000, count)
    rss_start = 0
    started = time.perf_counter()
    try:
        for n in range(count):
            if n == warm:
                gc.collect()
                rss_start = _rss_kb()
            outbox.append(SAMPLE)
        gc.collect()
        rss_end = _rss_kb()
        append_s = time.perf_counter() - started
    finally:
        outbox.close()
    drain = measure_drain(path, count, host, port, fill=False)
    return {"events": count, "append_s": append_s, "rss_kb_after_1000": rss_start, "rss_kb_end": rss_end,
            "rss_growth_pct": 100.0 * (rss_end - rss_start) / rss_start if rss_start else 0.0,
            "drain_events_per_s": drain["events_per_s"], "drained": drain["drained"]}


def _proc_io() -> dict[str, int]:
    out: dict[str, int] = {}
    try:
        with open("/proc/self/io", encoding="ascii") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                out[key.strip()] = int(value)
    except OSError:
        pass
    return out


def fill_backlog(path: Path, count: int) -> None:
    """Create an outbox holding count unsent events, in one transaction (not measured)."""
    SqliteOutbox(path).close()
    body = json.dumps(SAMPLE.to_json_dict(), ensure_ascii=False, separators=(",", ":"))
    conn = sqlite3.connect(path)
    try:
        with conn:
            conn.executemany("INSERT INTO events(seq, event_id, created_s, sent, body) "
                             "VALUES (?, ?, ?, 0, ?)",
                             ((n, f"{n:032x}", time.time(), body) for n in range(1, count + 1)))
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()


def measure_appends(path: Path, backlog: int, appends: int) -> dict[str, Any]:
    """Append (and, like the publisher, mark sent in batches of 100) with a given unsent backlog."""
    fill_backlog(path, backlog)
    outbox = SqliteOutbox(path, max_events=backlog + appends + 10)
    times_ms: list[float] = []
    before = _proc_io()
    seqs: list[int] = []
    for _ in range(appends):
        start = time.perf_counter()
        seqs.append(outbox.append(SAMPLE).seq or 0)
        times_ms.append((time.perf_counter() - start) * 1000.0)
        if len(seqs) == 100:
            outbox.mark_sent(seqs)
            seqs = []
    outbox.mark_sent(seqs)
    after = _proc_io()
    outbox.close()
    return {
        "backlog": backlog,
        "appends": appends,
        "append_ms_mean": sum(times_ms) / len(times_ms),
        "append_ms_p50": percentile(times_ms, 50),
        "append_ms_p99": percentile(times_ms, 99),
        "write_bytes_per_event": (after.get("write_bytes", 0) - before.get("write_bytes", 0)) / appends,
        "wchar_per_event": (after.get("wchar", 0) - before.get("wchar", 0)) / appends,
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_mosquitto(workdir: Path) -> tuple[subprocess.Popen, int]:
    binary = shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else "")
    if not binary:
        raise ConfigError("mosquitto is not installed; install it (`sudo apt-get install -y mosquitto`) "
                          "or pass --broker HOST:PORT")
    port = _free_port()
    conf = workdir / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                    "max_queued_messages 100000\n" + ("user root\n" if _is_root() else ""))
    proc = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ConfigError(f"mosquitto exited at start with status {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc, port
        except OSError:
            time.sleep(0.02)  # readiness probe with a deadline
    proc.kill()
    raise ConfigError(f"mosquitto did not open port {port} within 10 s")


def _is_root() -> bool:
    import os

    return os.geteuid() == 0


def measure_drain(path: Path, count: int, host: str, port: int, fill: bool = True) -> dict[str, Any]:
    """Drain count events from the outbox to the broker; events per second until all are marked.

    fill=False drains what the outbox already holds (count events)."""
    from firmware.adapters.mqtt_link import MqttLink, MqttSettings
    from firmware.adapters.publisher import OutboxPublisher

    if fill:
        fill_backlog(path, count)
    outbox = SqliteOutbox(path, max_events=count + 10)
    link = MqttLink(MqttSettings(device_id="bench-gate", host=host, port=port, prefix="qrgate-bench"),
                    reconnect_min_s=0.2, reconnect_max_s=1.0)
    publisher = OutboxPublisher(outbox, link, inflight_max=100)
    try:
        link.start()
        if not link.wait_connected(10.0):
            raise ConfigError(f"cannot connect to the broker at {host}:{port}")
        start = time.perf_counter()
        publisher.start()
        drained = publisher.wait_drained(max(120.0, count / 200.0))
        elapsed_s = time.perf_counter() - start
    finally:
        publisher.stop()
        link.stop(timeout_s=2.0)
        outbox.close()
    return {"events": count, "drained": drained, "seconds": elapsed_s, "events_per_s": count / elapsed_s,
            "max_inflight": publisher.max_inflight_seen}


def bench_outbox_command(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="qrgate-bench-outbox-", dir=args.workdir or None) as tmp:
        work = Path(tmp)
        for name in ("small", "large", "drain", "offline"):
            (work / name).mkdir()
        # The bench fills outboxes on purpose: their budget alarms are expected, not news.
        logging.getLogger("firmware.adapters.outbox").setLevel(logging.CRITICAL)
        logging.getLogger("firmware.adapters.mqtt_link").setLevel(logging.ERROR)
        small = measure_appends(work / "small" / "outbox.sqlite", args.small, args.appends)
        large = measure_appends(work / "large" / "outbox.sqlite", args.large, args.appends)
        broker_proc = None
        try:
            if args.broker:
                host, _, port_text = args.broker.rpartition(":")
                host, port = host or "127.0.0.1", int(port_text)
            else:
                broker_proc, port = _start_mosquitto(work)
                host = "127.0.0.1"
            drain = measure_drain(work / "drain" / "outbox.sqlite", args.drain, host, port)
            offline = measure_offline(work / "offline" / "outbox.sqlite", args.offline, host, port)
        finally:
            if broker_proc is not None:
                broker_proc.terminate()
                broker_proc.wait(timeout=10)
    ratio = large["append_ms_mean"] / small["append_ms_mean"]
    ratio_p50 = large["append_ms_p50"] / small["append_ms_p50"]
    report = {"bench": "outbox", **machine_info(), "workdir": args.workdir or tempfile.gettempdir(),
              "append": [small, large], "append_ratio": ratio, "append_ratio_p50": ratio_p50, "drain": drain,
              "offline": offline,
              "targets": {"append_ratio_max": 1.5, "write_bytes_per_event_max": 16384,
                          "drain_events_per_s_min": 1000, "offline_rss_growth_pct_max": 10,
                          "offline_drain_events_per_s_min": 200}}
    rows = [[f"append+commit ms, {r['backlog']:,} unsent (mean / p50 / p99)",
             f"{r['append_ms_mean']:.2f} / {r['append_ms_p50']:.2f} / {r['append_ms_p99']:.2f}", ""]
            for r in (small, large)]
    rows[1][2] = "ratio <= 1.5"
    rows.append(["ratio large / small (mean; p50)", f"{ratio:.2f}; {ratio_p50:.2f}", "<= 1.5"])
    for r in (small, large):
        rows.append([f"bytes written per event, {r['backlog']:,} unsent (write_bytes / wchar)",
                     f"{r['write_bytes_per_event'] / 1024:.1f} KB / {r['wchar_per_event'] / 1024:.1f} KB",
                     "<= 16 KB"])
    rows.append([f"drain to local Mosquitto, {drain['events']:,} events, QoS 1, max in flight "
                 f"{drain['max_inflight']}", f"{drain['events_per_s']:.0f} events/s", ">= 1,000/s"])
    rows.append([f"offline: {offline['events']:,} appends, RSS after 1,000 -> end",
                 f"{offline['rss_kb_after_1000'] / 1024:.1f} -> {offline['rss_kb_end'] / 1024:.1f} MB "
                 f"({offline['rss_growth_pct']:+.1f} %)", "< 10 % (D2)"])
    rows.append([f"offline: then drained to the broker ({offline['append_s']:.0f} s of appends before)",
                 f"{offline['drain_events_per_s']:.0f} events/s", ">= 200/s (D2)"])
    info = report
    text = (f"qrgate bench outbox - {info['date']}, {info['cpu']} ({info['cpus']} CPUs), "
            f"Python {info['python']}, "
            f"load {info['load_avg_1m']}\n\n" + format_table(["measure", "result", "target"], rows))
    emit(args, report, text)
    return 0

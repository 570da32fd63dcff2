"""`qrgate bench fleet`: a province's gates into one history, measured end to end (issue 17).

What runs, all on this machine:

- a **Mosquitto** started for the run on a free loopback port, configured for a fleet
  (``fleet_broker_conf``: persistence on, per-session queues and in-flight windows sized for
  collectors, no connection limit), unless ``--broker HOST:PORT`` names another broker;
- ``--collectors C`` **``qrgate history collect``** processes (the real command, run as
  children) sharing one MQTT 5 subscription (``--shared fleet``), each with its own client
  id and persistent session, storing into a private schema of the PostgreSQL server ``--db``
  (dropped after the run unless ``--keep``);
- ``--gates N`` **simulated gates** spread over ``--gate-procs`` processes
  (``firmware.bench.fleet_gates``: the gate's real outbox, publisher, device key and events,
  one network loop per process). Each gate enrols like a real one: the bench records a
  provisioning nonce per gate (``add_enrolment``, what ``qrgate provision qr --register``
  does) and the gate's ``provisioned`` event, signed with its new key, registers the key.

Then every gate scans ``--rate`` people a second on average (Poisson) for ``--minutes``. With
faults on (the default), one collector is killed (SIGKILL) at 35 % of the run and started
again at once with the same client id, and the broker is restarted (SIGTERM, then started
again on the same port and persistence file) at 65 %. After the last scan the bench waits
until every gate's outbox is delivered (acknowledged by the collectors: ``mqtt.app_ack``)
and then compares every gate's outbox file, event by event, with the database.

Figures: events produced, stored, lost (produced and never stored: must be 0), unexpected
(stored but never produced), duplicates absorbed (the collectors' own count, from their log),
the gate-commit-to-stored latency p50/p99/max (``stored_at_ms``, a column this bench adds to
its private table with ``clock_timestamp()`` as default: the moment the collector's insert
ran, in the transaction that commits it; minus the event's ``ts``, stamped by the gate just
before its outbox commit; one clock, one machine), the CPU seconds of the collectors, their
PostgreSQL backends, the broker and the gate processes, and the database size per million
events. ``--rate 1,2,3`` runs one step per rate (each ``--minutes`` long) and says for each
whether the chain kept up (``sustained``: stored as fast as produced, p99 of the step's last
quarter under 2 s), so the highest sustained step is the ceiling.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from multiprocessing.connection import wait as wait_any
from pathlib import Path
from typing import Any

from firmware.bench.common import add_json_flag, emit, format_table, machine_info
from firmware.core.errors import ConfigError
from provisioning.history.pg_schema import create_schema, drop_schema, schema_url

LOCAL_PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
SHARED_GROUP = "fleet"
P99_TARGET_MS = 2000.0
# Events this close (before or after) to a fault are left out of the "steady" latency.
FAULT_WINDOW_S = 15.0
APPLICATION_NAME = "qrgate-fleet-collector"
_STORED = re.compile(r"stored (\d+) new events \((\d+) duplicates, (\d+) quarantined\)")


def register(bench_sub: argparse._SubParsersAction) -> None:
    p = bench_sub.add_parser("fleet", help="N simulated gates -> Mosquitto -> C collectors -> PostgreSQL, "
                             "with a collector killed and the broker restarted",
                             description="Simulate a fleet of gates (the real outbox, publisher and device keys) "
                             "publishing to a Mosquitto started for the run, stored by `qrgate history collect` "
                             "processes sharing one subscription into PostgreSQL; report lost events (must be 0), "
                             "duplicates, gate-to-stored latency, CPU and database size.")
    p.add_argument("--gates", type=int, default=1000, help="simulated gates (default: %(default)s)")
    p.add_argument("--rate", default="1", help="scans a second per gate, or a comma list of rates run one "
                   "after the other to find the ceiling (default: %(default)s)")
    p.add_argument("--minutes", type=float, default=5.0, help="minutes per rate step; fractions allowed "
                   "(default: %(default)s)")
    p.add_argument("--collectors", type=int, default=2, help="`qrgate history collect` processes (default: %(default)s)")
    p.add_argument("--db", default=os.environ.get("QRGATE_BENCH_PG_URL", LOCAL_PG_URL),
                   help="PostgreSQL server; a private schema is made and dropped (default: $QRGATE_BENCH_PG_URL "
                   "or %(default)s)")
    p.add_argument("--gate-procs", type=int, default=2, help="processes the gates are spread over "
                   "(default: %(default)s)")
    p.add_argument("--no-faults", action="store_true", help="do not kill a collector nor restart the broker")
    p.add_argument("--broker", default="", help="use this broker (HOST:PORT) instead of a private Mosquitto "
                   "(no broker restart then)")
    p.add_argument("--workdir", default="", help="folder for the gates' state (outboxes, keys) and the broker's "
                   "files (default: a new folder in /dev/shm, else the temporary folder)")
    p.add_argument("--app-ack-timeout-s", type=float, default=60.0,
                   help="the gates' mqtt.app_ack_timeout_s (default: %(default)s)")
    p.add_argument("--ack-interval-s", type=float, default=5.0,
                   help="the collectors' --ack-interval-s: one ack per gate at most this often (default: %(default)s)")
    p.add_argument("--inflight-max", type=int, default=100, help="the gates' mqtt.inflight_max (default: %(default)s)")
    p.add_argument("--drain-timeout-s", type=float, default=180.0,
                   help="after the last scan, wait at most this long for every outbox to be delivered "
                   "(default: %(default)s)")
    p.add_argument("--keep", action="store_true", help="keep the schema and the work folder (for a look after)")
    add_json_flag(p)
    p.set_defaults(func=bench_fleet_command)


# --------------------------------------------------------------------------- the broker

def fleet_broker_conf(port: int, folder: Path) -> str:
    """The Mosquitto configuration of a fleet broker (documented in the README, "Scaling out").

    - ``persistence true``: sessions, their queued messages and retained acks survive a
      restart (saved on SIGTERM and every ``autosave_interval``);
    - ``max_queued_messages 1000000``, ``max_queued_bytes 0``: a collector away for a while
      keeps its queue (the default of 1,000 would drop events silently);
    - ``max_inflight_messages 1000``: QoS 1 messages in flight to one client (the collector
      asks for 1,000 with its MQTT 5 receive maximum);
    - ``max_connections -1``, ``set_tcp_nodelay true`` (latency of small messages).
    """
    lines = [f"listener {port} 127.0.0.1", "allow_anonymous true",
             "persistence true", f"persistence_location {folder}/", "persistence_file fleet.db",
             "autosave_interval 60", "max_queued_messages 1000000", "max_queued_bytes 0",
             "max_inflight_messages 1000", "max_connections -1", "set_tcp_nodelay true",
             f"log_dest file {folder}/mosquitto.log", "log_type error", "log_type warning", "log_type notice"]
    if os.geteuid() == 0:
        lines.append("user root")  # else it drops to "mosquitto", which cannot write the work folder
    return "\n".join(lines) + "\n"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, proc: subprocess.Popen | None, what: str, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise ConfigError(f"{what} exited at start with status {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)  # readiness probe with a deadline
    raise ConfigError(f"{what} did not open port {port} within {timeout_s:.0f} s")


class FleetBroker:
    """The run's Mosquitto: start, SIGTERM and start again on the same port and files."""

    def __init__(self, folder: Path) -> None:
        self.binary = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists()
                                                     else "")
        if not self.binary:
            raise ConfigError("mosquitto is not installed; install it (`sudo apt-get install -y mosquitto`) "
                              "or pass --broker HOST:PORT")
        self.folder = folder
        self.port = _free_port()
        self.conf = folder / "mosquitto.conf"
        self.conf.write_text(fleet_broker_conf(self.port, folder))
        self.proc: subprocess.Popen | None = None
        self.cpu_s = 0.0  # of the instances already stopped

    def start(self) -> None:
        self.proc = subprocess.Popen([self.binary, "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        _wait_port(self.port, self.proc, "mosquitto")

    def cpu(self) -> float:
        return self.cpu_s + (proc_cpu_s(self.proc.pid) if self.proc and self.proc.poll() is None else 0.0)

    def restart(self) -> float:
        """SIGTERM (it saves its persistence file), wait, start again. Returns the seconds it was down."""
        assert self.proc is not None
        t0 = time.monotonic()
        self.cpu_s += proc_cpu_s(self.proc.pid)
        self.proc.terminate()
        self.proc.wait(timeout=60)
        self.start()
        return time.monotonic() - t0

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.cpu_s += proc_cpu_s(self.proc.pid)
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def proc_cpu_s(pid: int) -> float:
    """User plus system CPU seconds of a process (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------- collectors

class Collectors:
    """The ``qrgate history collect`` children: start, SIGKILL one and start it again, stop all."""

    def __init__(self, count: int, host: str, port: int, db_url: str, folder: Path, ack_interval_s: float = 1.0) -> None:
        self.host, self.port, self.db_url, self.folder = host, port, db_url, folder
        self.ack_interval_s = ack_interval_s
        self.procs: list[subprocess.Popen] = []
        self.logs: list[Path] = []
        self.cpu_done_s = 0.0  # CPU of instances that ended
        self.last_cpu: dict[int, float] = {}
        for index in range(count):
            self.procs.append(self._spawn(index))

    def _spawn(self, index: int) -> subprocess.Popen:
        log_path = self.folder / f"collector-{index}-{len(self.logs)}.log"
        self.logs.append(log_path)
        cmd = [sys.executable, "-m", "firmware.cli", "-v", "history", "collect", "--broker", f"{self.host}:{self.port}",
               "--db", self.db_url, "--shared", SHARED_GROUP, "--client-id", f"qrgate-fleet-collector-{index}",
               "--retention-days", "0", "--ack-interval-s", str(self.ack_interval_s)]
        with open(log_path, "wb") as out:
            return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)

    def wait_subscribed(self, timeout_s: float) -> None:
        """Wait until every running collector has logged its subscription (a readiness probe with a
        deadline): a shared subscription nobody holds yet drops what is published to it."""
        deadline = time.monotonic() + timeout_s
        current = self.logs[-len(self.procs):]
        while time.monotonic() < deadline:
            for index, proc in enumerate(self.procs):
                if proc.poll() is not None:
                    raise ConfigError(f"collector {index} exited at start ({proc.returncode}); see "
                                      f"{current[index]}: {current[index].read_text(errors='replace')[-600:]}")
            if all(path.exists() and "subscribed to" in path.read_text(errors="replace") for path in current):
                return
            time.sleep(0.1)  # readiness probe with a deadline
        raise ConfigError(f"the collectors did not subscribe within {timeout_s:.0f} s; see {self.folder}")

    def sample(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                self.last_cpu[proc.pid] = max(self.last_cpu.get(proc.pid, 0.0), proc_cpu_s(proc.pid))

    def cpu(self) -> float:
        self.sample()
        return sum(self.last_cpu.values())

    def kill_and_restart(self, index: int) -> float:
        """SIGKILL collector ``index`` and start it again with the same client id; seconds it was away."""
        t0 = time.monotonic()
        proc = self.procs[index]
        self.sample()
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        self.procs[index] = self._spawn(index)
        return time.monotonic() - t0

    def stop(self) -> None:
        self.sample()
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()

    def log_counts(self) -> dict[str, int]:
        """The collectors' own counts, summed over every instance (the killed one's lines included)."""
        stored = duplicates = quarantined = 0
        for path in self.logs:
            text = path.read_text(errors="replace") if path.exists() else ""
            for match in _STORED.finditer(text):
                stored += int(match.group(1))
                duplicates += int(match.group(2))
                quarantined += int(match.group(3))
        return {"stored": stored, "duplicates": duplicates, "quarantined": quarantined}


# --------------------------------------------------------------------------- the database

def prepare_database(server_url: str) -> tuple[str, str]:
    """Make a private schema with the history tables and the bench's ``stored_at_ms`` column.

    Returns:
        (schema name, URL of the schema).
    """
    import psycopg

    from provisioning.history.store import open_store

    try:
        schema = create_schema(server_url, "qrgate_fleet")
    except psycopg.Error as err:
        raise ConfigError(f"PostgreSQL at --db is unreachable ({str(err).strip().splitlines()[0][:120]}); "
                          "give a server URL such as postgresql://postgres@127.0.0.1:5432/test") from err
    url = schema_url(server_url, schema, application_name=APPLICATION_NAME)
    store = open_store(url)
    try:
        # The moment each row is inserted, in the transaction that commits it (latency figures only).
        store._write("ALTER TABLE events ADD COLUMN stored_at_ms BIGINT NOT NULL"  # noqa: SLF001 - bench only
                     " DEFAULT (extract(epoch FROM clock_timestamp()) * 1000)::bigint", [])
    finally:
        store.close()
    return schema, url


def pg_backend_cpu(store: Any, seen: dict[int, float]) -> float:
    """CPU seconds of the PostgreSQL backends serving the collectors (by application_name)."""
    try:
        pids = [int(r[0]) for r in store._fetch(  # noqa: SLF001 - bench only
            "SELECT pid FROM pg_stat_activity WHERE application_name = ?", [APPLICATION_NAME])]
    except Exception:  # a figure, never a reason to stop the run
        pids = []
    for pid in pids:
        seen[pid] = max(seen.get(pid, 0.0), proc_cpu_s(pid))
    return sum(seen.values())


# --------------------------------------------------------------------------- the run

def parse_rates(text: str) -> list[float]:
    try:
        rates = [float(x) for x in text.split(",") if x.strip()]
    except ValueError as err:
        raise ConfigError(f"--rate {text!r} is not a number or a comma list of numbers") from err
    if not rates or any(r <= 0 for r in rates):
        raise ConfigError(f"--rate {text!r}: give scans a second per gate above 0, e.g. 1 or 1,2,3")
    return rates


def _default_workdir() -> Path:
    base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    return Path(tempfile.mkdtemp(prefix="qrgate-fleet-", dir=base))


class GateProcs:
    """The gate processes and their pipes."""

    def __init__(self, plans: list[dict[str, Any]]) -> None:
        from firmware.bench.fleet_gates import gate_process_main

        ctx = multiprocessing.get_context("spawn")
        self.pipes = []
        self.procs = []
        for plan in plans:
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=gate_process_main, args=(plan, child), name="qrgate-fleet-gates", daemon=True)
            proc.start()
            self.pipes.append(parent)
            self.procs.append(proc)
        self.progress: list[dict[str, Any]] = [{} for _ in plans]

    def expect(self, kind: str, timeout_s: float, on_idle: Any = None) -> list[dict[str, Any]]:
        """Wait for message ``kind`` from every process (recording progress meanwhile)."""
        got: dict[int, dict[str, Any]] = {}
        deadline = time.monotonic() + timeout_s
        while len(got) < len(self.pipes):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ConfigError(f"the gate processes did not report {kind!r} within {timeout_s:.0f} s")
            for pipe in wait_any([p for i, p in enumerate(self.pipes) if i not in got], timeout=min(0.5, remaining)):
                index = self.pipes.index(pipe)
                try:
                    message = pipe.recv()
                except EOFError as err:
                    raise ConfigError(f"gate process {index} ended before {kind!r}") from err
                if message[0] == "error":
                    raise ConfigError(f"gate process {index} failed: {message[1]}")
                if message[0] == "progress":
                    self.progress[index] = message[1]
                elif message[0] == kind:
                    got[index] = message[1]
            if on_idle is not None:
                on_idle()
        return [got[i] for i in range(len(self.pipes))]

    def send(self, message: tuple[Any, ...]) -> None:
        for pipe in self.pipes:
            pipe.send(message)

    def stop(self) -> None:
        for pipe in self.pipes:
            with contextlib.suppress(OSError):
                pipe.send(("stop",))
        for proc in self.procs:
            proc.join(timeout=30)
            if proc.is_alive():
                proc.kill()


def run_fleet(*, gates: int, rates: list[float], minutes: float, collectors: int, server_url: str,
              gate_procs: int = 2, faults: bool = True, broker: tuple[str, int] | None = None,
              workdir: Path | None = None, app_ack_timeout_s: float = 60.0, inflight_max: int = 100,
              drain_timeout_s: float = 180.0, keep: bool = False, ack_interval_s: float = 5.0,
              say: Any = None) -> dict[str, Any]:
    """Run the whole fleet bench and return its report (see the module docstring)."""
    from provisioning.history.store import open_store

    say = say or (lambda text: print(text, file=sys.stderr, flush=True))
    if gates < 1 or collectors < 1 or gate_procs < 1 or minutes <= 0:
        raise ConfigError("--gates, --collectors and --gate-procs must be at least 1, --minutes above 0")
    report: dict[str, Any] = {"bench": "fleet", **machine_info(), "gates": gates, "rates": rates,
                              "minutes_per_step": minutes, "collectors": collectors, "gate_procs": gate_procs,
                              "faults": faults, "ack_interval_s": ack_interval_s,
                              "app_ack_timeout_s": app_ack_timeout_s}
    folder = workdir or _default_workdir()
    folder.mkdir(parents=True, exist_ok=True)
    report["workdir"] = str(folder)
    schema, url = prepare_database(server_url)
    store = open_store(url)
    fleet_broker = None
    procs: GateProcs | None = None
    collect: Collectors | None = None
    try:
        if broker is None:
            fleet_broker = FleetBroker(folder)
            fleet_broker.start()
            host, port = "127.0.0.1", fleet_broker.port
        else:
            host, port = broker
        now_ms = int(time.time() * 1000)
        specs = []
        for index in range(gates):
            device, venue, nonce = f"g{index:05d}", f"v{index // 10:04d}", secrets.token_hex(16)
            store.add_enrolment(nonce, device, venue, now_ms)
            specs.append({"device_id": device, "venue_id": venue, "nonce_hex": nonce})
        collect = Collectors(collectors, host, port, url, folder, ack_interval_s)
        collect.wait_subscribed(60.0)
        prefix = "qrgate"
        plans = [{"gates": specs[i::gate_procs], "workdir": str(folder / "gates"), "host": host, "port": port,
                  "prefix": prefix, "keepalive_s": 30, "inflight_max": inflight_max,
                  "app_ack_timeout_s": app_ack_timeout_s, "ready_timeout_s": 120 + gates * 0.2, "seed": 17 + i,
                  "log_file": str(folder / f"gates-{i}.log")}
                 for i in range(gate_procs)]
        t_setup = time.monotonic()
        procs = GateProcs(plans)
        ready = procs.expect("ready", 180 + gates * 0.3)
        report["setup_s"] = round(time.monotonic() - t_setup, 1)
        if not all(r["complete"] for r in ready):
            raise ConfigError(f"not every gate connected and enrolled in time: {ready}")
        enrolled = int(store._fetch("SELECT count(*) FROM devices")[0][0])  # noqa: SLF001 - bench only
        report["enrolled"] = enrolled
        say(f"fleet: {gates} gates connected and enrolled ({enrolled} keys registered) in {report['setup_s']} s; "
            f"{collectors} collectors; broker {host}:{port}")

        step_s = minutes * 60.0
        start_wall = time.time() + 1.0
        total_s = step_s * len(rates)
        plan_faults: list[tuple[float, str]] = []
        if faults:
            plan_faults.append((start_wall + 0.35 * step_s, "kill_collector"))
            if fleet_broker is not None:
                plan_faults.append((start_wall + 0.65 * step_s, "restart_broker"))
        done_faults: list[dict[str, Any]] = []
        pg_seen: dict[int, float] = {}
        cpu0 = {"collectors": collect.cpu(), "broker": fleet_broker.cpu() if fleet_broker else 0.0,
                "pg": pg_backend_cpu(store, pg_seen)}
        load_start = os.getloadavg()[0]
        procs.send(("go", {"start_wall": start_wall, "steps": [[r, step_s] for r in rates]}))
        next_say = time.monotonic() + 10

        def tick() -> None:
            nonlocal next_say
            collect.sample()
            pg_backend_cpu(store, pg_seen)
            now = time.time()
            while plan_faults and now >= plan_faults[0][0]:
                at, what = plan_faults.pop(0)
                if what == "kill_collector":
                    away = collect.kill_and_restart(0)
                    say(f"fault: collector 0 killed (SIGKILL) and started again ({away:.2f} s)")
                else:
                    away = fleet_broker.restart()  # type: ignore[union-attr]
                    say(f"fault: broker restarted (SIGTERM, start) in {away:.2f} s")
                done_faults.append({"fault": what, "at_wall": at, "seconds_away": round(away, 2),
                                    "at_s": round(at - start_wall, 1)})
            if time.monotonic() >= next_say:
                next_say = time.monotonic() + 10
                produced = sum(p.get("produced", 0) for p in procs.progress)
                undelivered = sum(p.get("undelivered", 0) for p in procs.progress)
                say(f"fleet: {now - start_wall:.0f} s: {produced} scans, {undelivered} not yet acknowledged, "
                    f"load {os.getloadavg()[0]:.1f}")

        # Production: the gate processes end it themselves; meanwhile faults and samples.
        while time.time() < start_wall + total_s:
            tick()
            wait_any(procs.pipes, timeout=0.2)
            for index, pipe in enumerate(procs.pipes):
                while pipe.poll():
                    message = pipe.recv()
                    if message[0] == "progress":
                        procs.progress[index] = message[1]
                    elif message[0] == "error":
                        raise ConfigError(f"gate process {index} failed: {message[1]}")
        load_end = os.getloadavg()[0]
        say("fleet: production over; waiting for every outbox to be delivered")
        procs.send(("finish", {"drain_timeout_s": drain_timeout_s}))
        done = procs.expect("done", drain_timeout_s + 120, on_idle=tick)
        cpu1 = {"collectors": collect.cpu(), "broker": fleet_broker.cpu() if fleet_broker else 0.0,
                "pg": pg_backend_cpu(store, pg_seen)}
        collect.stop()
        counts = collect.log_counts()
        report.update(verify(store, done, counts))
        report["latency"] = latency(store, start_wall, step_s, rates, done_faults)
        report["faults_done"] = done_faults
        wall_s = total_s
        report["cpu_seconds"] = {
            "collectors_s": round(cpu1["collectors"] - cpu0["collectors"], 1),
            "collectors_share_of_a_core": round((cpu1["collectors"] - cpu0["collectors"]) / wall_s, 2),
            "pg_backends_s": round(cpu1["pg"] - cpu0["pg"], 1),
            "broker_s": round(cpu1["broker"] - cpu0["broker"], 1),
            "gate_procs_s": round(sum(d["production_cpu_s"] for d in done), 1),
            "seconds": round(wall_s, 1)}
        events = max(1, report["produced"])
        report["cpu_ms_per_event"] = {name: round(1000 * report["cpu_seconds"][key] / events, 3) for name, key in (
            ("collectors", "collectors_s"), ("pg_backends", "pg_backends_s"), ("broker", "broker_s"),
            ("gates", "gate_procs_s"))}
        report["load_avg_1m"] = {"start": round(load_start, 2), "end": round(load_end, 2)}
        report["db"] = db_size(store, report["stored"])
        report["gate_side"] = {
            "drained": all(d["drained"] for d in done),
            "production_late_p99_s": max(d["production_late_p99_s"] for d in done),
            "production_late_max_s": max(d["production_late_max_s"] for d in done),
            "republished_unacked": sum(g["republished_unacked"] for d in done for g in d["gates"]),
            "queue_refusals": sum(g["queue_refusals"] for d in done for g in d["gates"]),
            "reconnects": sum(max(0, g["connects"] - 1) for d in done for g in d["gates"]),
            "max_rss_mb": max(d["max_rss_mb"] for d in done)}
        return report
    finally:
        if procs is not None:
            procs.stop()
        if collect is not None:
            collect.stop()
        if fleet_broker is not None:
            fleet_broker.stop()
        store.close()
        if not keep:
            drop_schema(server_url, schema)
            shutil.rmtree(folder, ignore_errors=True)


def verify(store: Any, done: list[dict[str, Any]], counts: dict[str, int]) -> dict[str, Any]:
    """Compare every gate's outbox file, event by event, with the database."""
    from firmware.adapters.outbox import read_events

    produced: set[tuple[str, int, str]] = set()
    scans = 0
    for proc in done:
        for gate in proc["gates"]:
            for event in read_events(Path(gate["outbox"])):
                produced.add((event["device_id"], int(event["seq"]), event["event_id"]))
            scans += gate["scans"]
    stored = {(str(d), int(s), str(e)) for d, s, e in store._fetch(  # noqa: SLF001 - bench only
        "SELECT device_id, seq, event_id FROM events")}
    lost = produced - stored
    unexpected = stored - produced
    return {"produced": len(produced), "scans": scans, "stored": len(stored), "lost": len(lost),
            "lost_sample": sorted(lost)[:5], "unexpected": len(unexpected),
            "duplicates_absorbed": counts["duplicates"], "collector_log_stored": counts["stored"],
            "quarantined": store.quarantine_count()}


def _percentiles(store: Any, where: str, params: list[Any]) -> dict[str, Any]:
    row = store._fetch(  # noqa: SLF001 - bench only
        "SELECT count(*), percentile_disc(0.5) WITHIN GROUP (ORDER BY stored_at_ms - ts_ms),"
        " percentile_disc(0.99) WITHIN GROUP (ORDER BY stored_at_ms - ts_ms), max(stored_at_ms - ts_ms)"
        f" FROM events WHERE decision <> 'provisioned' AND {where}", params)[0]
    count = int(row[0])
    return {"events": count, "p50_ms": int(row[1]) if count else None, "p99_ms": int(row[2]) if count else None,
            "max_ms": int(row[3]) if count else None}


def latency(store: Any, start_wall: float, step_s: float, rates: list[float],
            faults: list[dict[str, Any]]) -> dict[str, Any]:
    """Gate commit (``ts``) to stored (``stored_at_ms``), overall, away from faults, and per step."""
    start_ms = int(start_wall * 1000)
    out: dict[str, Any] = {"all": _percentiles(store, "ts_ms >= ?", [start_ms])}
    clauses, params = ["ts_ms >= ?"], [start_ms]
    for fault in faults:
        at = int(fault["at_wall"] * 1000)
        clauses.append("NOT (ts_ms BETWEEN ? AND ?)")
        params += [at - int(FAULT_WINDOW_S * 1000), at + int(FAULT_WINDOW_S * 1000)]
    out["away_from_faults"] = _percentiles(store, " AND ".join(clauses), params)
    steps = []
    for index, rate in enumerate(rates):
        lo = start_ms + int(index * step_s * 1000)
        hi = lo + int(step_s * 1000)
        last_quarter = hi - int(step_s * 250)
        figures = _percentiles(store, "ts_ms >= ? AND ts_ms < ?", [lo, hi])
        tail = _percentiles(store, "ts_ms >= ? AND ts_ms < ?", [last_quarter, hi])
        stored_in_step = int(store._fetch(  # noqa: SLF001 - bench only
            "SELECT count(*) FROM events WHERE decision <> 'provisioned' AND stored_at_ms >= ? AND stored_at_ms < ?",
            [lo, hi])[0][0])
        offered = figures["events"] / step_s
        stored_rate = stored_in_step / step_s
        sustained = (tail["p99_ms"] is not None and tail["p99_ms"] < P99_TARGET_MS
                     and stored_rate >= 0.97 * offered)
        steps.append({"rate_per_gate": rate, "offered_per_s": round(offered, 1), "stored_per_s": round(stored_rate, 1),
                      **figures, "last_quarter_p99_ms": tail["p99_ms"], "sustained": sustained})
    out["steps"] = steps
    sustained = [s["offered_per_s"] for s in steps if s["sustained"]]
    out["ceiling_per_s"] = max(sustained) if sustained else None
    return out


def db_size(store: Any, stored: int) -> dict[str, Any]:
    """The events table's size on disk (every partition with its indexes) and per million events."""
    size = int(store._fetch(  # noqa: SLF001 - bench only
        "SELECT coalesce(sum(pg_total_relation_size(relid)), 0) FROM pg_partition_tree('events')")[0][0])
    return {"events_mb": round(size / 1e6, 1),
            "mb_per_million_events": round(size / 1e6 / stored * 1e6, 0) if stored else None,
            "note": "includes the bench's 8-byte stored_at_ms column"}


# --------------------------------------------------------------------------- output

def render(report: dict[str, Any]) -> str:
    """The report as Markdown tables."""
    lat = report["latency"]
    cpu = report["cpu_seconds"]
    lines = [f"fleet bench, {report['date']}, {report['cpu']} ({report['cpus']} CPUs), load "
             f"{report['load_avg_1m']['start']} -> {report['load_avg_1m']['end']}: {report['gates']:,} gates, "
             f"{report['collectors']} collectors (acks every {report['ack_interval_s']:g} s), "
             f"{report['minutes_per_step']} min per step, faults {'on' if report['faults'] else 'off'}", ""]

    def ms(value: Any) -> str:
        return "-" if value is None else f"{value:,}"

    rows = [["events produced (scans + provisioned)", f"{report['produced']:,}"],
            ["events stored", f"{report['stored']:,}"],
            ["lost (produced, never stored)", f"{report['lost']:,}"],
            ["unexpected (stored, never produced)", f"{report['unexpected']:,}"],
            ["duplicates absorbed (collectors' count)", f"{report['duplicates_absorbed']:,}"],
            ["quarantined", f"{report['quarantined']:,}"],
            ["latency gate commit -> stored, all: p50 / p99 / max ms",
             f"{ms(lat['all']['p50_ms'])} / {ms(lat['all']['p99_ms'])} / {ms(lat['all']['max_ms'])}"],
            [f"latency away from the faults (+-{FAULT_WINDOW_S:.0f} s): p50 / p99 / max ms",
             f"{ms(lat['away_from_faults']['p50_ms'])} / {ms(lat['away_from_faults']['p99_ms'])} / "
             f"{ms(lat['away_from_faults']['max_ms'])}"],
            ["CPU s: collectors / their PG backends / broker / gate processes",
             f"{cpu['collectors_s']} / {cpu['pg_backends_s']} / {cpu['broker_s']} / {cpu['gate_procs_s']} "
             f"(in {cpu['seconds']} s)"],
            ["events table, MB per million events", f"{report['db']['mb_per_million_events']}"]]
    for fault in report.get("faults_done", []):
        rows.append([f"fault at {fault['at_s']} s: {fault['fault']}", f"away {fault['seconds_away']} s"])
    gs = report["gate_side"]
    per = report["cpu_ms_per_event"]
    rows.append(["CPU ms per event: collectors / PG backends / broker / gates",
                 f"{per['collectors']} / {per['pg_backends']} / {per['broker']} / {per['gates']}"])
    rows.append(["gates: drained / republished (app ack) / reconnects / scans late p99 s",
                 f"{gs['drained']} / {gs['republished_unacked']} / {gs['reconnects']} / {gs['production_late_p99_s']}"])
    lines.append(format_table(["measure", "result"], rows))
    lines.append("")
    step_rows = [[s["rate_per_gate"], s["offered_per_s"], s["stored_per_s"], ms(s["p50_ms"]), ms(s["p99_ms"]),
                  ms(s["max_ms"]), ms(s["last_quarter_p99_ms"]), "yes" if s["sustained"] else "NO"]
                 for s in lat["steps"]]
    lines.append(format_table(["scans/s per gate", "offered/s", "stored/s", "p50 ms", "p99 ms", "max ms",
                               "p99 last quarter", "sustained"], step_rows))
    lines.append(f"ceiling (highest sustained step): {lat['ceiling_per_s']} events/s")
    return "\n".join(lines)


def bench_fleet_command(args: argparse.Namespace) -> int:
    from provisioning.cli.history import parse_broker

    report = run_fleet(gates=args.gates, rates=parse_rates(args.rate), minutes=args.minutes,
                       collectors=args.collectors, server_url=args.db, gate_procs=args.gate_procs,
                       faults=not args.no_faults, broker=parse_broker(args.broker) if args.broker else None,
                       workdir=Path(args.workdir) if args.workdir else None,
                       app_ack_timeout_s=args.app_ack_timeout_s, inflight_max=args.inflight_max,
                       drain_timeout_s=args.drain_timeout_s, keep=args.keep, ack_interval_s=args.ack_interval_s)
    emit(args, report, render(report))
    return 0 if report["lost"] == 0 and report["unexpected"] == 0 else 1

"""The gate side of ``qrgate bench fleet``: many simulated gates in one process.

Each simulated gate is made of the gate's real parts, wired as ``GateApp`` wires them: its own
Ed25519 device key (``load_or_create_device_key``, a 0600 file in its state folder), its own
SQLite outbox (``SqliteOutbox`` with ``app_ack``), the real ``OutboxPublisher`` sealing every
event with that key and publishing it QoS 1 over its own MQTT connection (client
``qrgate-<device_id>``, clean session, the ``ack`` subscription), and events built by the
core's ``EventFactory``. Only the threads differ: one ``NetworkLoop`` (``fleet_link``) drives
every gate's paho client, and the same thread appends the scans and steps the publishers
(``OutboxPublisher.step``, the method its own thread would call), so a process holds hundreds
of gates on one thread instead of three threads per gate.

A gate enrols like a real one: its first event is ``provisioned`` with the provisioning
nonce the bench recorded (``add_enrolment``, as ``qrgate provision qr --register`` does) and
its public key, signed with that key; the collector registers the key from it.

Scans arrive at each gate as a Poisson process (seeded), ``rate`` a second on average. The
parent talks to a gate process over a ``multiprocessing`` pipe:

- child: ``("ready", info)`` once every gate is connected and its ``provisioned`` event is
  acknowledged by the collector (the outbox has nothing undelivered);
- parent: ``("go", {"start_wall": t, "steps": [[rate_per_gate, seconds], ...]})``;
- child: ``("progress", figures)`` about once a second;
- parent: ``("finish", {"drain_timeout_s": s})``: stop producing, wait until every outbox is
  delivered (acknowledged by the collector) or the timeout passes;
- child: ``("done", report)`` and it exits. ``("stop",)`` ends it at once.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import logging
import os
import random
import resource
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from firmware.adapters.device_key import load_or_create_device_key
from firmware.adapters.mqtt_link import MqttSettings
from firmware.adapters.outbox import SqliteOutbox
from firmware.adapters.publisher import OutboxPublisher
from firmware.bench.common import percentile
from firmware.bench.fleet_link import NetworkLoop, SelectorLink
from firmware.core.event_signature import fingerprint, public_key_text, seal
from firmware.core.events import EventFactory
from firmware.core.model import CredentialType, Decision, Reason, Verdict

log = logging.getLogger(__name__)

# Every gate's publisher is stepped at least this often (timeouts, retries, pruning), as its
# own thread would with TICK_S.
SWEEP_S = 1.0
PROGRESS_S = 1.0
# Scans appended per turn of the loop at most, so the network keeps flowing when behind.
SCANS_PER_TURN = 200
DENIED_SHARE = 0.12


@dataclass(frozen=True)
class GateSpec:
    """One simulated gate: its id, venue and the provisioning nonce it enrols with (32 hex)."""

    device_id: str
    venue_id: str
    nonce_hex: str


class SimulatedGate:
    """One gate's key, outbox, link and publisher (see the module docstring)."""

    def __init__(self, spec: GateSpec, plan: dict[str, Any], loop: NetworkLoop, active: set[SimulatedGate],
                 rng: random.Random) -> None:
        self.spec = spec
        state_dir = Path(plan["workdir"]) / spec.device_id
        state_dir.mkdir(parents=True, exist_ok=True)
        self.key = load_or_create_device_key(state_dir / "device-key.pem")
        self.outbox = SqliteOutbox(state_dir / "outbox.sqlite", app_ack=plan["app_ack_timeout_s"] is not None)
        settings = MqttSettings(device_id=spec.device_id, host=plan["host"], port=plan["port"],
                                prefix=plan["prefix"], keepalive_s=plan["keepalive_s"],
                                inflight_max=plan["inflight_max"])
        self.link = SelectorLink(settings, loop, on_activity=partial(active.add, self), rng=rng)
        public = self.key.public_key()
        key_document = json.dumps({"device_id": spec.device_id, "alg": "Ed25519", "public_key": public_key_text(public),
                                   "fingerprint": fingerprint(public)}, separators=(",", ":"))
        self.publisher = OutboxPublisher(self.outbox, self.link, inflight_max=plan["inflight_max"],
                                         app_ack_timeout_s=plan["app_ack_timeout_s"],
                                         seal=partial(seal, key=self.key), key_document=key_document)
        self.events = EventFactory.fixed(device_id=spec.device_id, venue_id=spec.venue_id,
                                         direction="in" if rng.random() < 0.5 else "out",
                                         boot_id=os.urandom(8).hex(), subject_mode="hmac",
                                         secret=hashlib.sha256(spec.venue_id.encode()).digest())
        self.rng = rng
        self.scans = 0

    def provision(self, wall_s: float) -> None:
        """Record the ``provisioned`` event that enrols this gate's key."""
        event = self.events.build_record(decision="provisioned", reason="ok",
                                         credential=CredentialType.PROVISIONING.value,
                                         code_sha256=hashlib.sha256(self.spec.nonce_hex.encode()).hexdigest(),
                                         wall_s=wall_s, time_synced=True, prov_nonce=self.spec.nonce_hex,
                                         device_key=public_key_text(self.key.public_key()))
        self.outbox.append(event)

    def scan(self, wall_s: float, mono_s: float) -> None:
        """One person at the gate: a decision, its event committed to the outbox."""
        person = self.rng.randrange(1_000_000)
        denied = self.rng.random() < DENIED_SHARE
        decision = Decision(verdict=Verdict.DENIED if denied else Verdict.GRANTED,
                            reason=Reason.EXPIRED if denied else Reason.OK,
                            code_sha256=hashlib.sha256(f"pass-{person}".encode()).hexdigest(),
                            credential_type=CredentialType.QG1, subject=f"person-{person}",
                            display=f"NGUYỄN VĂN *** 09{person % 100:02d} {person % 997:03d} ***",
                            decided_mono_s=mono_s, frame_mono_s=mono_s - 0.03)
        self.outbox.append(self.events.build(decision, wall_s, True))
        self.scans += 1

    def report(self) -> dict[str, Any]:
        p = self.publisher
        return {"device_id": self.spec.device_id, "seq_high": self.outbox.seq_high, "scans": self.scans,
                "unsent": self.outbox.unsent, "pubacks": p.sent, "republished_unacked": p.republished_unacked,
                "queue_refusals": p.queue_refusals, "acks_ignored": p.acks_ignored, "connects": self.link.connects,
                "disconnects": self.link.disconnects,
                "outbox": str(self.outbox.path)}


class GateProcess:
    """The loop of one gate process (see the module docstring). ``conn`` is its pipe end."""

    def __init__(self, plan: dict[str, Any], conn: Any) -> None:
        self.plan = plan
        self.conn = conn
        self.loop = NetworkLoop()
        self.active: set[SimulatedGate] = set()
        seed = int(plan.get("seed", 17))
        self.gates = [SimulatedGate(GateSpec(**spec), plan, self.loop, self.active, random.Random(f"{seed}-{spec['device_id']}"))
                      for spec in plan["gates"]]
        self.rng = random.Random(seed)
        self.commands: list[tuple[Any, ...]] = []
        self.loop.watch(conn, self._read_command)
        self.produced_late_s: list[float] = []

    def _read_command(self) -> None:
        while self.conn.poll():
            self.commands.append(self.conn.recv())

    def _turn(self, timeout_s: float) -> None:
        self.loop.run_once(timeout_s)
        while self.active:
            self.active.pop().publisher.step(timeout_s=0.0)

    def _sweep(self) -> None:
        for gate in self.gates:
            gate.publisher.step(timeout_s=0.0)
        self.active.clear()

    def _undelivered(self) -> int:
        return sum(g.outbox.unsent for g in self.gates)

    def _connected(self) -> int:
        return sum(1 for g in self.gates if g.link.is_connected())

    def _wait(self, predicate: Any, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        next_sweep = 0.0
        while time.monotonic() < deadline:
            if predicate():
                return True
            if self._stopping():
                return False
            self._turn(0.05)
            if time.monotonic() >= next_sweep:
                next_sweep = time.monotonic() + SWEEP_S
                self._sweep()
        return predicate()

    def _stopping(self) -> bool:
        return any(c[0] == "stop" for c in self.commands)

    def _next_command(self, kind: str, timeout_s: float) -> dict[str, Any] | None:
        """Keep the gates running until the parent sends ``kind``; its argument, or None on stop."""
        found: list[dict[str, Any]] = []

        def arrived() -> bool:
            for command in list(self.commands):
                if command[0] == kind:
                    self.commands.remove(command)
                    found.append(command[1])
                    return True
            return False

        self._wait(lambda: arrived() or self._stopping(), timeout_s)
        return found[0] if found else None

    def run(self) -> None:
        for gate in self.gates:
            gate.link.start()
            gate.provision(time.time())
            self.active.add(gate)
        ready = self._wait(lambda: self._connected() == len(self.gates) and self._undelivered() == 0,
                           float(self.plan["ready_timeout_s"]))
        self.conn.send(("ready", {"gates": len(self.gates), "connected": self._connected(),
                                  "undelivered": self._undelivered(), "complete": ready}))
        go = self._next_command("go", 3600.0)
        if go is None:
            return self._close()
        usage = resource.getrusage(resource.RUSAGE_SELF)
        cpu_before_s = usage.ru_utime + usage.ru_stime
        produced_steps = self._produce(float(go["start_wall"]), [(float(r), float(s)) for r, s in go["steps"]])
        usage = resource.getrusage(resource.RUSAGE_SELF)
        production_cpu_s = usage.ru_utime + usage.ru_stime - cpu_before_s
        finish = self._next_command("finish", 3600.0)
        drained = False
        if finish is not None:
            drained = self._wait(lambda: self._undelivered() == 0, float(finish["drain_timeout_s"]))
        usage = resource.getrusage(resource.RUSAGE_SELF)
        self.conn.send(("done", {
            "gates": [g.report() for g in self.gates], "steps": produced_steps, "drained": drained,
            "undelivered": self._undelivered(), "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
            "production_cpu_s": round(production_cpu_s, 2),
            "max_rss_mb": round(usage.ru_maxrss / 1024, 1),
            "production_late_p99_s": round(percentile(self.produced_late_s, 99), 3),
            "production_late_max_s": round(max(self.produced_late_s, default=0.0), 3)}))
        self._close()

    def _produce(self, start_wall: float, steps: list[tuple[float, float]]) -> list[dict[str, Any]]:
        """Append scans on schedule until the last step ends; returns what each step produced."""
        out = []
        step_start = start_wall
        while time.time() < start_wall and not self._stopping():
            self._turn(min(0.05, max(0.0, start_wall - time.time())))
        next_sweep = next_progress = time.monotonic()
        for rate, seconds in steps:
            step_end = step_start + seconds
            heap = [(step_start + self.rng.expovariate(rate), i) for i in range(len(self.gates))]
            heapq.heapify(heap)
            made = 0
            while not self._stopping():
                now = time.time()
                if now >= step_end and (not heap or heap[0][0] >= step_end):
                    break
                done_here = 0
                while heap and heap[0][0] <= now and heap[0][0] < step_end and done_here < SCANS_PER_TURN:
                    due, i = heapq.heappop(heap)
                    gate = self.gates[i]
                    gate.scan(time.time(), time.monotonic())
                    self.produced_late_s.append(time.time() - due)
                    self.active.add(gate)
                    made += 1
                    done_here += 1
                    heapq.heappush(heap, (due + self.rng.expovariate(rate), i))
                wait_s = 0.0 if (heap and heap[0][0] <= time.time()) else min(
                    0.05, max(0.0, (heap[0][0] if heap else step_end) - time.time()))
                self._turn(wait_s)
                mono = time.monotonic()
                if mono >= next_sweep:
                    next_sweep = mono + SWEEP_S
                    self._sweep()
                if mono >= next_progress:
                    next_progress = mono + PROGRESS_S
                    self.conn.send(("progress", {"produced": sum(g.scans for g in self.gates),
                                                 "undelivered": self._undelivered(),
                                                 "connected": self._connected()}))
            out.append({"rate_per_gate": rate, "seconds": seconds, "start_wall": step_start, "end_wall": step_end,
                        "produced": made})
            step_start = step_end
        return out

    def _close(self) -> None:
        for gate in self.gates:
            try:
                gate.link.stop()
            except OSError:
                pass
            gate.outbox.close()
        self.loop.close()


def gate_process_main(plan: dict[str, Any], conn: Any) -> None:
    """Entry point of a gate process (``multiprocessing``, spawn). Never raises: a failure is sent
    to the parent as ``("error", text)``."""
    logging.basicConfig(level=logging.WARNING, filename=plan.get("log_file"),
                        format="%(asctime)s gates %(levelname)s %(name)s: %(message)s")
    try:
        GateProcess(plan, conn).run()
    except Exception as err:  # the parent must hear why, not wait for a report that never comes
        log.exception("gate process failed")
        try:
            conn.send(("error", f"{type(err).__name__}: {err}"))
        except OSError:
            pass

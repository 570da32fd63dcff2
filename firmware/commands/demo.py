"""`qrgate demo`: the whole gate on images, with simulated pins and no broker.

It makes a throw-away issuer key and a set of codes (a valid pass, an expired one, a
forged signature, a person on the deny list, a CCCD card, a URL, a blank frame), and a
throw-away DCC signer with three EU Digital COVID Certificates (``HC1:``: vaccinated,
expired, forged),
renders them as camera scenes, and plays them through the real ``dir:`` camera
source, decoder, policy, event sink and gpiozero outputs on a MockFactory. Each
decision and each relay, LED and buzzer change is printed as it happens.
"""

from __future__ import annotations

import argparse
import secrets
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from device.pin_watch import describe_change
from firmware.core.config import parse_config
from firmware.core.model import Decision, ScanEvent

COALESCE_S = 0.01
FRAMES_PER_SCENE = 6
PINS = {"relay": 17, "green": 27, "red": 22, "buzzer": 23}

DEMO_PERSON = ("NGUYỄN ĐÌNH HÙNG", "0966323123")
DENIED_PERSON = ("LÊ VĂN TÁM", "0912345678")
CCCD_TEXT = "001190012345||TRẦN THỊ MAI|15081990|Nữ|12 Lê Lợi, Phường Bến Nghé, Quận 1, TP Hồ Chí Minh|01022021"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the gate end to end on generated images (no hardware, no broker)",
                       description="Run the gate end to end on generated QR images with simulated GPIO.")
    p.add_argument("--keep", metavar="DIR", help="keep the images, config, keys and events in DIR")
    p.add_argument("--fps", type=float, default=6.0, help="replay frame rate (default: %(default)s)")
    p.add_argument("--no-color", action="store_true", help="plain text output")
    p.set_defaults(func=demo_command)


class Printer:
    """Prints decisions and pin changes as they happen, from any thread."""

    def __init__(self, labels: dict[str, str], color: bool) -> None:
        self.labels = labels
        self.color = color
        self.start = time.monotonic()
        self.lock = threading.Lock()
        self.pin_roles = {pin: role for role, pin in PINS.items()}
        self.relay_active_high = False
        self.counts = {"granted": 0, "denied": 0, "pulses": 0, "recorded": 0}
        self.seen: set[str] = set()
        self.pending: list[str] = []

    def _paint(self, text: str, code: str) -> str:
        return f"\033[{code}m{text}\033[0m" if self.color else text

    def line(self, text: str) -> None:
        with self.lock:
            print(f"[{time.monotonic() - self.start:6.2f}s] {text}", flush=True)

    def decided(self, decision: Decision) -> None:
        """Print a decision as its feedback starts (a grant's event is already committed)."""
        label = self.labels.get(decision.code_sha256, "code")
        self.seen.add(decision.code_sha256)
        verdict = decision.verdict.value
        painted = self._paint(f"{verdict.upper():<7}", "1;32" if verdict == "granted" else "1;31")
        self.counts[verdict] = self.counts.get(verdict, 0) + 1
        self.line(f"{label:<26} {painted} {decision.reason.value:<22} {decision.display or '-'}  "
                  f"({decision.latency_ms:.1f} ms from frame to decision)")

    def event(self, event: ScanEvent) -> None:
        self.counts["recorded"] += 1

    def pin_changed(self, number: int, state: bool) -> None:
        """Queue one pin change; changes within COALESCE_S print as one line."""
        role = self.pin_roles.get(number)
        if role is None:
            return
        if role == "relay" and state == self.relay_active_high:
            self.counts["pulses"] += 1
        text = describe_change(role, state, self.relay_active_high)
        with self.lock:
            self.pending.append(text)
            if len(self.pending) == 1:
                timer = threading.Timer(COALESCE_S, self.flush)
                timer.daemon = True
                timer.start()

    def flush(self) -> None:
        with self.lock:
            texts, self.pending = self.pending, []
        if texts:
            self.line("    " + self._paint(", ".join(texts), "2"))


class PrintingOutputs:
    """Wraps the gate's Outputs: prints each decision, then starts its feedback."""

    def __init__(self, inner: Any, printer: Printer) -> None:
        self._inner, self._printer = inner, printer

    def show(self, decision: Decision) -> None:
        self._printer.decided(decision)
        self._inner.show(decision)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def _reporting_factory(printer: Printer) -> Any:
    from gpiozero.pins.mock import MockFactory, MockPin

    class ReportingPin(MockPin):
        """A MockPin that reports each level change to the demo printer."""

        def _change_state(self, value: bool) -> bool:
            changed = super()._change_state(value)
            if changed and getattr(printer, "live", False):
                printer.pin_changed(self._info.name and int(str(self._info.name).removeprefix("GPIO")), bool(value))
            return changed

    return MockFactory(pin_class=ReportingPin)


def build_codes(workdir: Path) -> tuple[list[tuple[str, str | None]], Path, set[str]]:
    """Make the issuer key, trust it, and return (label, code text) pairs plus the deny list."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    from firmware.core.credentials import envelope
    from firmware.core.credentials.qg1 import issue_text

    issuers = workdir / "issuers"
    issuers.mkdir(parents=True, exist_ok=True)
    # a throw-away issuer: only its public key is written, where the gate looks for trusted issuers
    private = ed25519.Ed25519PrivateKey.generate()
    (issuers / "demo-issuer.pub.pem").write_bytes(private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    now = int(time.time())
    month_s = 30 * 86400

    def issue(sub: str, person: tuple[str, str], iat_s: int) -> str:
        return issue_text(private, sub=sub, name=person[0], phone=person[1], iat_s=iat_s, exp_s=iat_s + month_s,
                          cti=secrets.token_bytes(16), iss="qrgate demo")

    valid = issue("EMP-0001", DEMO_PERSON, now)
    expired = issue("EMP-0002", ("PHẠM THỊ LAN", "0987654321"), now - 40 * 86400)
    quarantined = issue("EMP-0666", DENIED_PERSON, now)
    # forge: same pass, one bit of the signature flipped
    message = bytearray(envelope.unwrap("QG1:", valid))
    message[-1] ^= 0x01
    forged = envelope.wrap("QG1:", bytes(message))
    codes = [
        ("valid pass", valid),
        ("expired pass", expired),
        ("forged signature", forged),
        ("person on the deny list", quarantined),
        ("CCCD citizen ID card", CCCD_TEXT),
        ("a URL", "https://example.com/menu"),
        ("blank frame (no code)", None),
    ]
    return codes, issuers, {"EMP-0666"}


def build_dcc_codes(workdir: Path) -> tuple[list[tuple[str, str | None]], Path]:
    """Make a test DCC signer, install it as the demo's trust list, and return three HC1 codes.

    Returns:
        (label, code text) pairs (vaccinated, expired, forged) and the trust list path.
    """
    from firmware.adapters.dcc_keystore import write_trust_list
    from firmware.core.credentials import dcc_issue
    from firmware.core.credentials.dcc_trust import DscStore, parse_dsc

    now = time.time()
    day = 86400.0
    ca = dcc_issue.new_ca(not_before_s=now - 400 * day, not_after_s=now + 3000 * day)
    dsc = dcc_issue.new_dsc(ca, not_before_s=now - 300 * day, not_after_s=now + 365 * day, kinds=("v", "t", "r"))
    forger = dcc_issue.new_dsc(ca, not_before_s=now - 300 * day, not_after_s=now + 365 * day)
    trust_list = workdir / "dcc-trust.json"
    write_trust_list(trust_list, DscStore([parse_dsc(dsc.der)]), installed_at_s=now, list_sha256="demo")

    def vaccinated(ci: str, family: str, given: str, dob: str) -> dict[str, Any]:
        return dcc_issue.vaccination(family, given, dob, date=dcc_issue.day(now - 60 * day), ci=ci)

    valid = dsc.sign(vaccinated("URN:UVCI:01:VN:DEMO0001#A", "Đỗ", "Thị Hương", "1988-03-12"),
                     iat_s=now - day, exp_s=now + 300 * day)
    expired = dsc.sign(vaccinated("URN:UVCI:01:VN:DEMO0002#B", "Hoàng", "Văn Nam", "1979-11-02"),
                       iat_s=now - 200 * day, exp_s=now - 20 * day)
    # forged: signed by a key that is not the trusted signer's, under the trusted signer's kid
    forged = dcc_issue.Signer(key=forger.key, cert=dsc.cert, der=dsc.der, kid=dsc.kid).sign(
        vaccinated("URN:UVCI:01:VN:DEMO0003#C", "Vũ", "Minh Khoa", "2001-07-30"), iat_s=now - day,
        exp_s=now + 300 * day)
    return [("HC1 COVID, vaccinated", valid), ("HC1 COVID, expired", expired),
            ("HC1 COVID, forged sig.", forged)], trust_list


def demo_command(args: argparse.Namespace) -> int:
    from device.synthetic import write_blank_png, write_code_png
    from firmware.app.builder import GateApp
    from firmware.core.model import DecodedCode
    from firmware.core.policy import Lists

    if not args.fps > 0:
        print(f"qrgate demo: --fps {args.fps:g} must be above 0, for example --fps 6", file=sys.stderr)
        return 2
    # the pulse lasts half a scene, so one grant's pulse always ends before the next scene
    pulse_ms = max(50, min(800, int(500 * FRAMES_PER_SCENE / args.fps)))
    color = sys.stdout.isatty() and not args.no_color
    with tempfile.TemporaryDirectory(prefix="qrgate-demo-") as tmp:
        workdir = Path(args.keep) if args.keep else Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        images = workdir / "images"
        images.mkdir(exist_ok=True)
        for old in images.glob("*.png"):
            old.unlink()
        codes, issuers, denied = build_codes(workdir)
        dcc_codes, dcc_trust_list = build_dcc_codes(workdir)
        codes = codes[:-1] + dcc_codes + codes[-1:]  # the blank frame stays last
        labels = {}
        for i, (label, text) in enumerate(codes):
            if text is None:
                write_blank_png(images / f"{i:02d}.png", seed=i)
            else:
                write_code_png(images / f"{i:02d}.png", text, seed=i)
            if text is not None:
                labels[DecodedCode(text.encode("utf-8")).sha256] = label

        class DemoLists:
            def is_denied(self, subject: str, now_s: float | None = None) -> bool:
                return subject in denied

            def is_allowed(self, subject: str, now_s: float | None = None) -> bool:
                return True

        lists: Lists = DemoLists()
        cfg = parse_config({
            "device": {"id": "demo-gate", "venue_id": "demo-venue", "direction": "in",
                       "state_dir": str(workdir / "state"), "runtime_dir": str(workdir / "run")},
            "camera": {"source": f"dir:{images}", "fps": args.fps, "frames_per_image": FRAMES_PER_SCENE},
            "gpio": {"pin_factory": "mock", "relay_pulse_ms": pulse_ms, **{f"{k}_pin" if k == "relay" else
                     {"green": "green_led_pin", "red": "red_led_pin", "buzzer": "buzzer_pin"}[k]: v
                     for k, v in PINS.items()}},
            "policy": {"accept_unsigned_id": True, "repeat_window_s": 3.0},
            "keys": {"issuers_dir": str(issuers), "dcc_trust_list": str(dcc_trust_list)},
            "privacy": {"subject": "hmac"},
        }, str(workdir / "qrgate.toml"))
        printer = Printer(labels, color)
        factory = _reporting_factory(printer)
        app = GateApp(cfg, pin_factory=factory, lists=lists, on_event=[printer.event])
        print("qrgate demo: gate 'demo-gate', direction in, simulated GPIO (relay is active-low), no broker.")
        print("Note: the demo sets [policy] accept_unsigned_id = true so the CCCD card is granted; a gate "
              "with the default (false) refuses an unsigned card.")
        print(f"Playing {len(codes)} scenes from {images} at {args.fps:g} fps, each for {FRAMES_PER_SCENE} frames.\n")
        stop = threading.Event()
        try:
            app.build()
            assert app.service is not None
            app.service.outputs = PrintingOutputs(app.service.outputs, printer)
            printer.live = True
            app.run(stop)
            app.outputs.wait_idle(5.0)
        finally:
            printer.flush()
            printer.live = False
            app.close()
        for label, text in codes:
            if text is None:
                print(f"{'':10}{label}: no code, so no decision and nothing recorded")
        events_file = cfg.state_dir / "outbox.sqlite"
        c = printer.counts
        print(f"\n{c['granted']} granted, {c['denied']} denied, {c['pulses']} relay pulse(s), "
              f"{c['recorded']} events recorded in the outbox, each grant's before its relay moved "
              f"({events_file}{'' if args.keep else ', deleted with the demo folder; --keep DIR keeps it'}).")
        expected = {"granted": 3, "denied": 6, "pulses": 3, "recorded": 9}
        if {k: c[k] for k in expected} != expected:
            print(f"unexpected result: wanted {expected}", file=sys.stderr)
            return 1
    return 0

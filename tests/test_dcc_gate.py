"""A real gate run with HC1 codes: `qrgate keys dcc import`, then `qrgate run` on a `dir:` camera, mock pins."""

from __future__ import annotations

import json
import time
from pathlib import Path

from device.synthetic import write_code_png
from firmware.core.credentials import dcc_issue
from tests.daemon_support import qrgate, run_gate, write_config

RELAY, GREEN = "GPIO17", "GPIO27"
DAY = 86400.0
HOUR = 3600.0


def test_the_gate_admits_a_valid_vaccination_and_refuses_expired_forged_old_test_and_incomplete(tmp_path: Path):
    now = time.time()
    ca = dcc_issue.new_ca(not_before_s=now - 400 * DAY, not_after_s=now + 3000 * DAY)
    dsc = dcc_issue.new_dsc(ca, not_before_s=now - 200 * DAY, not_after_s=now + 365 * DAY, kinds=("v", "t"))
    forger = dcc_issue.new_dsc(ca, not_before_s=now - 200 * DAY, not_after_s=now + 365 * DAY)
    bundle = tmp_path / "dsc.pem"
    bundle.write_bytes(dsc.pem())
    images = tmp_path / "images"
    images.mkdir()
    (tmp_path / "issuers").mkdir()  # a DCC-only venue trusts no qrgate pass issuer
    config = write_config(tmp_path, device={"id": "dcc-gate", "venue_id": "v-dcc"},
                          camera={"fps": 20, "frames_per_image": 20}, gpio={"relay_pulse_ms": 100},
                          policy={"repeat_window_s": 2.0}, privacy={"subject": "raw"},
                          keys={"dcc_trust_list": tmp_path / "dcc-trust.json"})
    imported = qrgate("keys", "dcc", "import", str(bundle), "--config", str(config))
    assert imported.returncode == 0, imported.stderr
    assert "installed 1 DSC(s) from 1 country (VN)" in imported.stdout

    def vaccination(ci: str, dose: int = 2) -> dict:
        return dcc_issue.vaccination("Nguyễn", "Văn An", "1990-04-30", date=dcc_issue.day(now - 40 * DAY),
                                     dose=dose, ci=ci)

    valid = dsc.sign(vaccination("URN:UVCI:01:VN:GATE1#A"), iat_s=now - DAY, exp_s=now + 300 * DAY)
    expired = dsc.sign(vaccination("URN:UVCI:01:VN:GATE2#B"), iat_s=now - 30 * DAY, exp_s=now - DAY)
    forged = dcc_issue.Signer(key=forger.key, cert=dsc.cert, der=dsc.der, kid=dsc.kid).sign(
        vaccination("URN:UVCI:01:VN:GATE3#C"), iat_s=now - DAY, exp_s=now + 300 * DAY)
    old_test = dsc.sign(dcc_issue.covid_test("Lê", "Văn Tám", "1975", sampled=dcc_issue.moment(now - 80 * HOUR),
                                             ci="URN:UVCI:01:VN:GATE4#D"), iat_s=now - 3 * DAY, exp_s=now + 3 * DAY)
    incomplete = dsc.sign(vaccination("URN:UVCI:01:VN:GATE5#E", dose=1), iat_s=now - DAY, exp_s=now + 300 * DAY)
    for i, code in enumerate((valid, expired, forged, old_test, incomplete)):
        write_code_png(images / f"{i:02d}.png", code, seed=i)

    pin_log = tmp_path / "pins.json"
    result, events = run_gate(config, "--pin-log", str(pin_log))
    assert result.returncode == 0, result.stderr
    assert [(e["decision"], e["reason"], e["credential"]) for e in events] == [
        ("granted", "ok", "dcc"),
        ("denied", "expired", "dcc"),
        ("denied", "bad_signature", "dcc"),
        ("denied", "dcc_test_too_old", "dcc"),
        ("denied", "dcc_incomplete", "dcc"),
    ]
    granted = events[0]
    assert granted["display"] == "Nguyễn Văn *** 1990"
    # the certificate identifier is a health record id: its HMAC is published even with subject = raw
    assert granted["subject"] is not None and len(granted["subject"]) == 32 and "UVCI" not in granted["subject"]
    assert events[2]["subject"] is None
    pins = json.loads(pin_log.read_text())
    assert pins[RELAY] == [False, True, False, True]  # active-low relay: one pulse, for the valid certificate only
    assert pins[GREEN] == [False, True, False]
    for code in (valid, expired, forged, old_test, incomplete):
        assert code not in result.stderr and code not in result.stdout
    assert "UVCI" not in result.stderr

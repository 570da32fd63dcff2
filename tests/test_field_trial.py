"""Issue 11, the field trial: a gate prepared for a QR, tools that agree with it, clear errors.

Each test runs the real `qrgate` command (a child process, or ``main`` in this process) on a
site under tmp_path, with no file edited by hand between the commands.
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

from device.synthetic import write_blank_png, write_code_png
from firmware.cli import main
from provisioning import keys
from tests.daemon_support import qrgate, run_gate, trust_new_key, valid_pass, write_config

REPO = Path(__file__).resolve().parents[1]
VENUE = {"schema": "qrgate.venue/1", "venue_id": "v-0123456789ab", "name": "Bến xe Giáp Bát"}


def _site(tmp_path: Path) -> tuple[Path, Path, Path, keys.NewKey]:
    """A gate config that an earlier `provision device --venue` left with a venue, and no issuers/."""
    config = write_config(tmp_path, device={"id": "field-gate", "venue_id": VENUE["venue_id"]},
                          camera={"fps": 20, "frames_per_image": 20},
                          keys={"authority_dir": tmp_path / "authority"}, gpio={"relay_pulse_ms": 100})
    trust_new_key(tmp_path, "authority", "authority", as_name="a.pem")
    venue = tmp_path / "venue.json"
    venue.write_text(json.dumps(VENUE, ensure_ascii=False), encoding="utf-8")
    (tmp_path / "images").mkdir()
    return config, venue, tmp_path / "images", keys.new_keypair(tmp_path / "issuer.pem")


def test_a_gate_prepared_for_a_qr_starts_unprovisioned_takes_the_qr_and_every_tool_agrees(tmp_path):
    config, venue, images, issuer = _site(tmp_path)

    # technician: without --venue the config keeps its venue; --for-qr prepares the gate for a QR
    kept = qrgate("provision", "device", "--config", str(config), "--device-id", "field-gate")
    assert kept.returncode == 0, kept.stderr
    assert tomllib.loads(config.read_text())["device"]["venue_id"] == VENUE["venue_id"]
    prepared = qrgate("provision", "device", "--config", str(config), "--device-id", "field-gate", "--for-qr")
    assert prepared.returncode == 0, prepared.stderr
    assert "waits for a provisioning QR" in prepared.stderr
    assert "venue_id" not in tomllib.loads(config.read_text())["device"]
    assert "device.venue_id: 'v-0123456789ab' -> (unset: waits for a QR)" in prepared.stdout
    assert not (tmp_path / "issuers").exists(), "nobody made the issuer folder by hand"

    checked = qrgate("config", "check", "--config", str(config))
    assert checked.returncode == 0, checked.stderr
    assert "venue not provisioned" in checked.stdout

    # an empty camera folder with --exit-at-end just ends; the start says it is unprovisioned, at INFO
    result, events = run_gate(config)
    assert result.returncode == 0, result.stderr
    assert events == []
    assert "ready: venue unprovisioned, direction in, decoder zxing, broker none" in result.stderr
    assert "WARNING" not in result.stderr and "Traceback" not in result.stderr

    # the QR brings venue, direction and the issuer key; the pass is granted in the same run
    made = qrgate("provision", "qr", "--authority-key", str(tmp_path / "authority.pem"), "--venue", str(venue),
                  "--direction", "out", "--trust-issuer", str(issuer.public_path),
                  "--png", str(images / "00-provisioning.png"))
    assert made.returncode == 0, made.stderr
    write_blank_png(images / "01-blank.png")
    write_blank_png(images / "02-blank.png")
    pass_text = valid_pass(keys.load_private_key(issuer.private_path), "EMP-7")
    write_code_png(images / "03-pass.png", pass_text)
    result, events = run_gate(config)
    assert result.returncode == 0, result.stderr
    assert [(e["decision"], e["venue_id"], e["direction"]) for e in events] == [
        ("provisioned", VENUE["venue_id"], "out"), ("granted", VENUE["venue_id"], "out")]

    # every tool now sees what the gate sees, and says where it came from
    checked = qrgate("config", "check", "--config", str(config))
    assert checked.returncode == 0, checked.stderr
    assert f"venue {VENUE['venue_id']}, 1 issuer key(s)" in checked.stdout
    assert re.search(r"device\.venue_id\s+v-0123456789ab\s+provisioning record", checked.stdout)
    assert re.search(r"device\.direction\s+out\s+provisioning record", checked.stdout)
    assert re.search(r"device\.id\s+field-gate\s+config file", checked.stdout)
    as_json = qrgate("config", "check", "--config", str(config), "--json")
    assert json.loads(as_json.stdout)["sources"]["device.venue_id"] == "provisioning record"

    listed = qrgate("keys", "list", "--config", str(config))
    assert listed.returncode == 0, listed.stderr
    assert re.search(rf"{issuer.kid_hex}\s+issuer\s+EdDSA\s+provisioning record", listed.stdout)

    checked_pass = qrgate("pass", "check", pass_text, "--config", str(config))
    assert checked_pass.returncode == 0, checked_pass.stdout + checked_pass.stderr
    assert "reason=ok" in checked_pass.stdout
    from_image = qrgate("pass", "check", "--image", str(images / "03-pass.png"), "--config", str(config))
    assert from_image.returncode == 0 and "reason=ok" in from_image.stdout

    # the next start's ready line names the venue, its name and where it came from
    (images / "00-provisioning.png").unlink()
    (images / "03-pass.png").unlink()
    result, events = run_gate(config)
    assert result.returncode == 0, result.stderr
    assert (f"ready: venue {VENUE['venue_id']} (Bến xe Giáp Bát) [provisioning record], direction out, "
            "decoder zxing, broker none") in result.stderr


def test_pass_check_on_a_missing_or_unreadable_image_says_so_without_a_traceback(tmp_path, capsys):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)  # a PNG signature and nothing whole after it
    (tmp_path / "folder.png").mkdir()
    issuer = keys.new_keypair(tmp_path / "issuer.pem")
    for path, detail in ((tmp_path / "missing.png", "No such file or directory"),
                         (broken, "broken.png"), (tmp_path / "folder.png", "folder.png")):
        rc = main(["pass", "check", "--image", str(path), "--issuer", str(issuer.public_path)])
        err = capsys.readouterr().err
        assert rc == 1
        assert f"cannot read image {path}" in err and detail in err


def test_an_empty_camera_folder_is_a_config_error_unless_the_run_ends_at_the_end(tmp_path):
    config = write_config(tmp_path)
    (tmp_path / "images").mkdir()
    (tmp_path / "issuers").mkdir()
    result = qrgate("run", "--config", str(config))
    assert result.returncode == 78 and "holds no PNG, JPEG or WebP image" in result.stderr
    result = qrgate("run", "--config", str(config), "--exit-at-end")
    assert result.returncode == 0, result.stderr


def test_a_clean_stop_with_a_broker_logs_no_warning(tmp_path, broker):
    config = write_config(tmp_path, device={"id": "field-gate", "venue_id": "v-0123456789ab"},
                          mqtt={"host": broker.host, "port": broker.port, "keepalive_s": 10},
                          commands={"enabled": False})
    (tmp_path / "images").mkdir()
    (tmp_path / "issuers").mkdir()
    write_blank_png(tmp_path / "images" / "blank.png")
    result = qrgate("run", "--config", str(config), "--exit-at-end")
    assert result.returncode == 0, result.stderr
    assert "WARNING" not in result.stderr, result.stderr
    assert f"broker {broker.host}:{broker.port}" in result.stderr
    verbose = qrgate("-v", "run", "--config", str(config), "--exit-at-end")
    assert "MQTT: disconnected from the broker" in verbose.stderr
    assert "connection lost" not in verbose.stderr


def test_nothing_in_the_tests_benchmarks_or_build_reads_outside_the_repository():
    outside = ("../" + "shared", "/work/" + "shared")
    files = [REPO / "Makefile", *(REPO / "tests").rglob("*.py"), *(REPO / "firmware" / "bench").rglob("*.py"),
             *(REPO / "scripts").glob("*"), *(REPO / ".ci").glob("*")]
    found = [f"{path.relative_to(REPO)}: {needle}" for path in files if path.is_file()
             for needle in outside if needle in path.read_text(encoding="utf-8", errors="replace")]
    assert found == []


def test_two_gates_of_a_venue_give_one_person_one_subject_and_person_id_needs_the_secret(tmp_path, capsys):
    from provisioning.history.events import parse_scan
    from provisioning.history.store import open_store

    venues = tmp_path / "venues"
    made = qrgate("provision", "venue", "--name", "Bến xe Giáp Bát", "--province", "Hà Nội",
                  "--ward", "Phường Hoàng Mai", "--address", "Số 1 Giải Phóng", "--registrant", "Nguyễn Văn A",
                  "--phone", "0912345678", "--out", str(venues), "--no-pdf")
    assert made.returncode == 0, made.stderr
    venue_id = made.stdout.strip()
    secret = venues / f"{venue_id}.secret"
    assert secret.stat().st_mode & 0o777 == 0o600 and len(bytes.fromhex(secret.read_text().strip())) == 32
    issuer = keys.new_keypair(tmp_path / "issuer.pem")
    pass_text = valid_pass(keys.load_private_key(issuer.private_path), "CCCD-001099012345")
    subjects, scans = [], []
    for gate, direction in (("gate-in", "in"), ("gate-out", "out")):
        site = tmp_path / gate
        site.mkdir()
        config = write_config(site, device={"id": gate})
        trust_new_key(site, "unused", "issuers")
        (site / "issuers" / "issuer.pub.pem").write_bytes(issuer.public_path.read_bytes())
        (site / "images").mkdir()
        write_code_png(site / "images" / "pass.png", pass_text)
        result = qrgate("provision", "device", "--config", str(config), "--device-id", gate,
                        "--venue", str(venues / f"{venue_id}.json"), "--direction", direction)
        assert result.returncode == 0, result.stderr
        assert "privacy venue secret: installed" in result.stdout
        installed = site / "state" / "venue-secret"
        assert installed.read_bytes() == secret.read_bytes() and installed.stat().st_mode & 0o777 == 0o600
        result, events = run_gate(config)
        assert [e["decision"] for e in events] == ["granted"], result.stderr
        subjects.append(events[0]["subject"])
        scans.append(events[0])
    assert subjects[0] == subjects[1] and subjects[0] != "CCCD-001099012345"

    db = tmp_path / "history.sqlite"
    store = open_store(str(db))
    store.add([parse_scan(e["device_id"], json.dumps(e).encode(), 0) for e in scans])
    store.close()
    base = ["history", "query", "--db", str(db), "--format", "json", "--person-id", "CCCD-001099012345"]
    assert main(base) == 78, "without the secret nothing matches: the command says what it needs"
    assert "--hmac-secret-file" in capsys.readouterr().err
    assert main([*base, "--hmac-secret-file", str(secret)]) == 0
    found = json.loads(capsys.readouterr().out)["events"]
    assert sorted(e["device_id"] for e in found) == ["gate-in", "gate-out"]


def test_the_history_collector_says_it_started_and_connected_without_v(broker, tmp_path):
    import queue
    import subprocess
    import sys
    import threading

    proc = subprocess.Popen(
        [sys.executable, "-m", "firmware.cli", "history", "collect", "--broker", broker.address,
         "--db", f"sqlite:///{tmp_path / 'h.sqlite'}", "--client-id", "field-trial"],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, cwd=REPO)
    lines: queue.Queue = queue.Queue()

    def read() -> None:
        for line in proc.stderr:
            lines.put(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    seen = []
    try:
        while not any("subscribed to" in line for line in seen):
            seen.append(lines.get(timeout=30))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        reader.join(timeout=30)
        proc.stderr.close()
    text = "".join(seen)
    assert "history collector starting: broker" in text
    assert f"connected to {broker.address}" in text


def test_simulated_outputs_are_logged_with_times_and_roles_and_printed_readably(tmp_path):
    config = write_config(tmp_path, device={"id": "field-gate", "venue_id": "v-0123456789ab"},
                          camera={"fps": 20, "frames_per_image": 10},
                          gpio={"relay_pulse_ms": 100, "status_led_pin": 24})
    (tmp_path / "images").mkdir()
    made = trust_new_key(tmp_path, "issuer", "issuers")
    write_code_png(tmp_path / "images" / "pass.png", valid_pass(keys.load_private_key(made.private_path), "E-1"))
    pin_log = tmp_path / "pins.json"
    result, events = run_gate(config, "--pin-log", str(pin_log), "--print-outputs")
    assert result.returncode == 0, result.stderr
    assert [e["decision"] for e in events] == ["granted"]
    log = json.loads(pin_log.read_text())
    assert log["GPIO17"] == [False, True, False, True], "the level lists by pin stay as they were"
    assert log["roles"] == {"relay": "GPIO17", "green": "GPIO27", "red": "GPIO22", "buzzer": "GPIO23",
                            "status": "GPIO24"}
    relay = [c for c in log["changes"] if c["role"] == "relay"]
    assert [c["level"] for c in relay] == [False, True, False, True]
    times = [c["t_ms"] for c in log["changes"]]
    assert times == sorted(times) and all(t >= 0 for t in times)
    energised, released = relay[2]["t_ms"], relay[3]["t_ms"]
    assert 90 <= released - energised < 1000, "the 100 ms pulse can be read off the log"
    assert re.search(r"\]\s+GPIO17\s+relay ENERGISED \(turnstile free\)", result.stderr)
    assert re.search(r"\]\s+GPIO17\s+relay released \(locked\)", result.stderr)
    assert re.search(r"\]\s+GPIO27\s+green LED on", result.stderr)

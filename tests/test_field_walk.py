"""Findings of issue 11's seven-role walk-through, each as a test that failed before its fix.

The walk (a newcomer following only the README, two gates of one venue on one PC, QR
provisioning with a broker, the history collector) is in the issue's closing note.
"""

from __future__ import annotations

import json
import logging

from device.synthetic import write_blank_png
from firmware.adapters.logsetup import LIFECYCLE_LOGGERS
from firmware.core.event_signature import fingerprint, public_key_from_text
from provisioning import keys
from provisioning.cli.history import read_device_key
from provisioning.history.store import open_store
from tests.daemon_support import qrgate, run_gate, trust_new_key, write_config

VENUE = {"schema": "qrgate.venue/1", "venue_id": "v-0123456789ab", "name": "Bến xe Giáp Bát"}


def test_a_qr_that_brings_the_broker_logs_one_info_line_and_the_restart_reason(tmp_path, shared_broker):
    config = write_config(tmp_path, device={"id": "walk-gate"}, camera={"fps": 20, "frames_per_image": 5},
                          keys={"authority_dir": tmp_path / "authority"}, commands={"enabled": False})
    trust_new_key(tmp_path, "authority", "authority", as_name="a.pem")
    venue = tmp_path / "venue.json"
    venue.write_text(json.dumps(VENUE, ensure_ascii=False), encoding="utf-8")
    images = tmp_path / "images"
    images.mkdir()
    issuer = keys.new_keypair(tmp_path / "issuer.pem")
    made = qrgate("provision", "qr", "--authority-key", str(tmp_path / "authority.pem"), "--venue", str(venue),
                  "--direction", "in", "--broker", shared_broker.address, "--trust-issuer",
                  str(issuer.public_path), "--png", str(images / "00-provisioning.png"))
    assert made.returncode == 0, made.stderr

    result, events = run_gate(config)
    assert result.returncode == 75, result.stderr
    assert [e["decision"] for e in events] == ["provisioned"]
    assert "WARNING" not in result.stderr, result.stderr  # a planned step, not a fault
    assert (f"provisioned: venue {VENUE['venue_id']}, direction in, broker {shared_broker.address}, "
            "1 issuer key(s)") in result.stderr
    assert "the broker is new: restarting to connect to it" in result.stderr
    assert f"gate walk-gate stopping to be restarted (new broker {shared_broker.address})" in result.stderr

    # what systemd does next: the same gate starts again and connects to the QR's broker
    (images / "00-provisioning.png").unlink()
    write_blank_png(images / "01-blank.png")
    result, events = run_gate(config)
    assert result.returncode == 0, result.stderr
    assert "WARNING" not in result.stderr, result.stderr
    assert f"broker {shared_broker.address}" in result.stderr


def test_registering_a_gate_key_logs_one_line_info_first_and_warning_on_replacement(tmp_path, caplog):
    first = keys.new_keypair(tmp_path / "first.pem")
    second = keys.new_keypair(tmp_path / "second.pem")
    text = {made: read_device_key(str(made.public_path)) for made in (first, second)}
    store = open_store(str(tmp_path / "history.sqlite"))
    try:
        with caplog.at_level(logging.DEBUG, logger="provisioning.history"):
            store.register_device("gate-1", text[first], "enrolled by provisioning nonce 0123abcd...", 1)
            store.register_device("gate-1", text[first], "enrolled by provisioning nonce 0123abcd...", 2)
            store.register_device("gate-1", text[second], "qrgate history device add", 3)
    finally:
        store.close()
    lines = [(r.levelname, r.getMessage()) for r in caplog.records if r.name.startswith("provisioning.history")]
    assert {r.name for r in caplog.records if r.name.startswith("provisioning.history")} == {
        "provisioning.history.registry"}  # a lifecycle logger: shown without -v
    assert "provisioning.history.registry" in LIFECYCLE_LOGGERS
    fp_first = fingerprint(public_key_from_text(text[first]))
    fp_second = fingerprint(public_key_from_text(text[second]))
    assert lines == [
        ("INFO", f"device gate-1 registered with key {fp_first} (enrolled by provisioning nonce 0123abcd...)"),
        ("WARNING", f"device gate-1: key {fp_first} replaced by {fp_second} (qrgate history device add)"),
    ]


def test_an_empty_quarantine_says_so_instead_of_printing_nothing(tmp_path, capsys):
    from firmware.cli import main

    db = tmp_path / "history.sqlite"
    open_store(str(db)).close()
    assert main(["history", "quarantine", "--db", str(db)]) == 0
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.strip() == "nothing quarantined"


def test_a_ward_typed_without_diacritics_after_a_prefix_with_them_is_found(tmp_path, capsys):
    from firmware.cli import main

    common = ["provision", "venue", "--name", "Chợ Bến Thành", "--province", "Hồ Chí Minh", "--address", "Lê Lợi",
              "--registrant", "Trần B", "--phone", "0912345678", "--no-pdf"]
    assert main([*common, "--ward", "Phường Bến Thành", "--out", str(tmp_path / "a")]) == 0
    venue_id = capsys.readouterr().out.strip()
    assert main([*common, "--ward", "Phường Ben Thanh", "--out", str(tmp_path / "b")]) == 0
    assert capsys.readouterr().out.strip() == venue_id
    # a name typed with the wrong marks is still refused, with the right one suggested
    assert main([*common, "--ward", "Phường Bến Thánh", "--out", str(tmp_path / "c")]) == 78
    assert "did you mean 'Phường Bến Thành'" in capsys.readouterr().err


def test_the_collector_names_both_topics_and_says_when_it_stops(shared_broker, tmp_path):
    import queue
    import subprocess
    import sys
    import threading

    proc = subprocess.Popen(
        [sys.executable, "-m", "firmware.cli", "history", "collect", "--broker", shared_broker.address,
         "--db", f"sqlite:///{tmp_path / 'h.sqlite'}", "--client-id", "walk-stop"],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    lines: queue.Queue = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(line) for line in proc.stderr], daemon=True)
    reader.start()
    seen: list[str] = []
    try:
        while not any("subscribed to" in line for line in seen):
            seen.append(lines.get(timeout=30))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        reader.join(timeout=30)
        proc.stderr.close()
    while not lines.empty():
        seen.append(lines.get_nowait())
    text = "".join(seen)
    assert "subscribed to qrgate/+/scan and qrgate/+/skips" in text  # the ACL needs both
    assert "history collector stopping: 0 events stored, 0 duplicates, 0 quarantined since start" in text

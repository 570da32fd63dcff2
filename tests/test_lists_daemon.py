"""Lists through the real daemon: the stale-list policy, and `qrgate list --remote` to a running gate."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import pytest

from device.synthetic import write_blank_png, write_code_png
from provisioning import keys
from tests.daemon_support import qrgate, run_gate, start_gate, trust_new_key, valid_pass, write_config
from tests.mqtt_support import Collector


def make_site(tmp_path: Path, **sections) -> tuple[Path, Path, object]:
    issuer = trust_new_key(tmp_path, "issuer", "issuers", as_name="i.pem")
    images = tmp_path / "images"
    images.mkdir()
    config = write_config(tmp_path, device={"id": "list-gate", "venue_id": "v-0123456789ab"},
                          camera={"fps": 20, "frames_per_image": 20}, gpio={"relay_pulse_ms": 100},
                          keys={"command_dir": tmp_path / "commands"}, privacy={"subject": "raw"}, **sections)
    return config, images, keys.load_private_key(issuer.private_path)


def a_pass(private, sub: str) -> str:
    return valid_pass(private, sub, name="LÊ THỊ C", phone="0987654321")


def decisions(result: subprocess.CompletedProcess) -> list[tuple[str, str, str | None]]:
    assert result.returncode == 0, result.stderr
    return [(e["decision"], e["reason"], e["subject"]) for e in map(json.loads, result.stdout.splitlines())]


def test_stale_list_with_fail_closed_denies_until_a_fresh_list_is_loaded(tmp_path):
    config, images, private = make_site(tmp_path, lists={"max_age_h": 1, "stale_policy": "fail_closed"})
    write_code_png(images / "00-pass.png", a_pass(private, "EMP-1"))
    assert decisions(run_gate(config)[0]) == [("denied", "lists_stale", "EMP-1")]

    (tmp_path / "deny.csv").write_text("cccd\n079111111111\n", encoding="utf-8")
    imported = qrgate("list", "deny", "import", str(tmp_path / "deny.csv"), "--config", str(config))
    assert imported.returncode == 0, imported.stderr
    assert decisions(run_gate(config)[0]) == [("granted", "ok", "EMP-1")]


def test_keep_policy_goes_on_deciding_with_the_old_list(tmp_path):
    config, images, private = make_site(tmp_path, lists={"max_age_h": 1, "stale_policy": "keep"})
    write_code_png(images / "00-pass.png", a_pass(private, "EMP-1"))
    write_code_png(images / "01-pass.png", a_pass(private, "079111111111"))
    (tmp_path / "deny.csv").write_text("079111111111\n", encoding="utf-8")
    assert qrgate("list", "deny", "import", str(tmp_path / "deny.csv"), "--config", str(config)).returncode == 0
    # make the list two hours old: its version header says when it was issued
    from firmware.adapters.list_files import ListStore

    store = ListStore(tmp_path / "state" / "lists")
    old = store.load("deny")
    store.apply_delta("deny", add=[], remove=[], updated_s=old.info.updated_s - 7200, source="test")
    result, _events = run_gate(config)
    assert decisions(result) == [("granted", "ok", "EMP-1"), ("denied", "denied", "079111111111")]
    assert "lists_stale" in result.stderr, "the stale state is visible"


@pytest.mark.broker
def test_list_command_goes_through_the_running_daemon_over_mqtt(tmp_path, broker):
    config, images, _private = make_site(tmp_path, mqtt={"host": broker.host, "port": broker.port,
                                                         "prefix": "qlist"})
    trust_new_key(tmp_path, "ops", "commands", as_name="ops.pem")
    write_blank_png(images / "00-blank.png")
    online = Collector(broker.host, broker.port, "qlist/list-gate/availability")
    daemon = start_gate(config, stderr=subprocess.PIPE, text=True)
    try:
        assert online.wait_until(lambda m: any(r.payload == b"online" for r in m), 30), "gate never came online"
        refused = qrgate("list", "deny", "add", "079111111111", "--config", str(config))
        assert refused.returncode == 1 and "--remote" in refused.stderr
        sent = qrgate("list", "deny", "add", "079111111111", "079222222222", "--remote", "--key",
                      str(tmp_path / "ops.pem"), "--config", str(config), "--timeout-s", "20")
        assert sent.returncode == 0, sent.stderr
        assert "deny list version" in sent.stdout and ": 2 ids (sent over MQTT)" in sent.stdout
    finally:
        daemon.send_signal(signal.SIGTERM)
        _out, err = daemon.communicate(timeout=30)
        online.close()
    assert daemon.returncode == 0, err
    shown = qrgate("list", "deny", "show", "--check", "079222222222", "--config", str(config))
    assert shown.returncode == 0 and shown.stdout.strip().endswith("listed")

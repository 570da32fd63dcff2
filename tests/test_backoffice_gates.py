"""Kiểm soát vào ra bằng máy in Chromium: provision a real gate from the page's QR (read through
its ``dir:`` camera), see it online, open it from the page, see the audit line; lists published.
On SQLite and on PostgreSQL."""

from __future__ import annotations

import base64
import json

import pytest

from tests.backoffice_support import BackofficeSite
from tests.daemon_support import start_gate, write_config
from tests.history_support import pg_server_url, pg_url  # noqa: F401 - fixtures
from tests.mqtt_support import Collector
from tests.test_backoffice_web import VENUE, register_venue, shot

WAIT_S = 60.0


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_a_gate_is_provisioned_from_the_page_opened_from_the_page_and_audited(browser, tmp_path, shared_broker,
                                                                             topic_prefix, database, request):
    (tmp_path / "bo").mkdir()
    site = BackofficeSite(tmp_path / "bo", request.getfixturevalue("pg_url") if database == "postgresql" else None,
                          mqtt={"host": shared_broker.host, "port": shared_broker.port, "prefix": topic_prefix})
    site.init()
    site.start()
    gate_dir = tmp_path / "gate"
    images = gate_dir / "images"
    images.mkdir(parents=True)
    for role, folder in (("authority", "authority"), ("command", "commands")):
        (gate_dir / folder).mkdir()
        (gate_dir / folder / f"{role}.pem").write_bytes((site.folder / "keys" / f"{role}.pub.pem").read_bytes())
    watcher = Collector(shared_broker.host, shared_broker.port, f"{topic_prefix}/gate-7/#")
    proc = None
    context = browser.new_context()
    try:
        page = context.new_page()
        venue_id = register_venue(page, site, VENUE)
        page.goto(f"{site.base}/gates/{venue_id}/add/")
        page.select_option("#id_direction", "in")
        page.fill("#id_device_id", "gate-7")
        page.fill("#id_valid_minutes", "10")
        page.click("#make-qr")
        src = page.get_attribute("#qr-image", "src")
        assert src and src.startswith("data:image/png;base64,")
        shot(page, "gate-provisioning-qr", site)
        # The QR exactly as the page shows it goes before the new gate's camera.
        (images / "00-provisioning.png").write_bytes(base64.b64decode(src.split(",", 1)[1]))
        config = write_config(gate_dir, device={"id": "gate-7"},
                              camera={"fps": 20, "frames_per_image": 20},
                              keys={"issuers_dir": gate_dir / "issuers", "authority_dir": gate_dir / "authority",
                                    "command_dir": gate_dir / "commands"},
                              mqtt={"host": shared_broker.host, "port": shared_broker.port, "prefix": topic_prefix})
        (gate_dir / "issuers").mkdir()
        proc = start_gate(config)
        assert watcher.wait_until(lambda ms: any(
            m.topic.endswith("/scan") and json.loads(m.payload)["decision"] == "provisioned" for m in ms), WAIT_S), \
            [m.topic for m in watcher.messages]
        provisioned = [m.json() for m in watcher.on("scan")][0]
        assert provisioned["venue_id"] == venue_id and provisioned["direction"] == "in"
        # The page recorded the code's nonce in the history: the gate that applied the code
        # (its provisioned event carries the nonce and its key) is the one that enrols.
        from provisioning.history.store import open_store

        history = open_store(site.database_url_for_tests)
        try:
            assert history.claim_enrolment(provisioned["prov_nonce"], "gate-7", provisioned["device_key"], 1)
            assert history.device_keys()["gate-7"] == provisioned["device_key"]
            assert not history.claim_enrolment(provisioned["prov_nonce"], "gate-7", "B" * 43, 2)
        finally:
            history.close()
        # the state published after the provisioning (a "booting" one from before it would not do)
        assert watcher.wait_until(lambda ms: any(m.topic.endswith("/state") and json.loads(m.payload).get(
            "device_state") == "ready" for m in ms), WAIT_S)

        page.goto(f"{site.base}/gates/{venue_id}/")
        row = page.locator("#gate-gate-7")
        assert row.locator(".availability").inner_text() == "online"
        assert "unprovisioned" not in row.inner_text()
        shot(page, "gates", site)
        row.locator("button[value=open]").click()
        page.wait_for_url(f"**/gates/{venue_id}/")
        audit = page.inner_text("#audit tbody tr")  # newest first
        assert "command_open" in audit and "gate-7" in audit and "ok" in audit
        assert watcher.wait_until(lambda ms: any(
            m.topic.endswith("/scan") and json.loads(m.payload)["reason"] == "remote_open" for m in ms), WAIT_S)

        # A gate provisioned in place subscribes to its venue's lists from its next start: restart it.
        online = len([m for m in watcher.on("availability") if m.payload == b"online"])
        proc.terminate()
        assert proc.wait(timeout=WAIT_S) == 0
        proc = start_gate(config)
        assert watcher.wait_until(lambda ms: len([m for m in ms if m.topic.endswith("/availability")
                                                  and m.payload == b"online"]) > online, WAIT_S)
        # A deny list for the venue, published signed on the venue-wide topic; the gate takes it.
        page.goto(f"{site.base}/gates/{venue_id}/lists/")
        page.locator("#list-deny input[name=ident]").fill("EMP-13")
        page.locator("#list-deny button[value=add]").click()
        assert "1 of 1 gate(s) took it" in page.inner_text("#list-message")
        assert "EMP-13" in page.inner_text("#list-deny")
    finally:
        context.close()
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)
        watcher.close()
        site.stop()

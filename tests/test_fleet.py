"""`qrgate bench fleet` in small (issue 17): 20 simulated gates, two `qrgate history collect`
processes on one shared subscription into PostgreSQL, a collector killed with SIGKILL and the
broker restarted during the run; every event committed in a gate's outbox is in the database."""

from __future__ import annotations

from provisioning.history.fleet import fleet_broker_conf, parse_rates, render, run_fleet
from tests.history_support import pg_server_url  # noqa: F401


def test_a_small_fleet_loses_nothing_through_a_collector_kill_and_a_broker_restart(pg_server_url, tmp_path):  # noqa: F811
    said: list[str] = []
    # Mosquitto 2.0 does not restore shared subscriptions from its persistence file, so events
    # published between its restart and the collectors' new SUBSCRIBE are acknowledged and dropped:
    # the gates' app-level ack publishes them again after app_ack_timeout_s (10 s here).
    report = run_fleet(gates=20, rates=[2.0], minutes=0.15, collectors=2, server_url=pg_server_url, gate_procs=1,
                       faults=True, workdir=tmp_path / "fleet", app_ack_timeout_s=10.0, drain_timeout_s=60.0,
                       say=said.append)
    assert [f["fault"] for f in report["faults_done"]] == ["kill_collector", "restart_broker"]
    assert report["enrolled"] == 20, "every gate enrolled by its provisioned event"
    assert report["scans"] > 200 and report["produced"] == report["scans"] + 20
    assert (report["lost"], report["unexpected"], report["quarantined"]) == (0, 0, 0), report["lost_sample"]
    assert report["stored"] == report["produced"]
    assert report["gate_side"]["drained"] and report["gate_side"]["reconnects"] >= 20, "all came back after the restart"
    assert report["latency"]["all"]["events"] == report["scans"]
    assert "lost (produced, never stored)" in render(report)
    assert any("broker restarted" in line for line in said)
    assert not (tmp_path / "fleet").exists(), "the work folder is removed after the run"


def test_rates_and_the_broker_configuration():
    assert parse_rates("1,1.5, 3") == [1.0, 1.5, 3.0]
    conf = fleet_broker_conf(1884, __import__("pathlib").Path("/x"))
    for line in ("listener 1884 127.0.0.1", "persistence true", "max_queued_messages 1000000",
                 "max_inflight_messages 1000", "max_connections -1"):
        assert line + "\n" in conf

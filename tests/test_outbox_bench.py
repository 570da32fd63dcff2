"""`qrgate bench outbox` runs end to end (small sizes) and reports every figure."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.broker


def test_bench_outbox_reports_append_cost_bytes_per_event_and_drain_rate_as_json():
    result = subprocess.run([sys.executable, "-m", "firmware.cli", "bench", "outbox", "--small", "100",
                             "--large", "3000", "--appends", "60", "--drain", "300", "--offline", "1500",
                             "--json"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["bench"] == "outbox"
    assert [a["backlog"] for a in report["append"]] == [100, 3000]
    for a in report["append"]:
        assert a["appends"] == 60
        assert 0 < a["append_ms_p50"] <= a["append_ms_p99"]
        assert a["wchar_per_event"] > 0
    assert report["append_ratio"] > 0
    assert report["drain"]["drained"] is True
    assert report["drain"]["events"] == 300
    assert 0 < report["drain"]["max_inflight"] <= 100
    offline = report["offline"]
    assert (offline["events"], offline["drained"]) == (1500, True)
    assert offline["rss_kb_after_1000"] > 0 and offline["drain_events_per_s"] > 0
    for key in ("date", "cpu", "cpus"):
        assert report[key]

"""`qrgate bench decode` and `qrgate bench loop` at a tiny size: structure, counts, and that they run."""

from __future__ import annotations

import json

import pytest

from firmware.bench.common import format_table, percentile
from firmware.cli import main


def run_json(capsys, *args: str) -> dict:
    status = main(["bench", *args, "--json"])
    out = capsys.readouterr().out
    assert status == 0
    return json.loads(out)


def test_bench_decode_reports_timings_and_sample_detection(capsys, samples_dir):
    report = run_json(capsys, "decode", "--backend", "zxing", "--frames", "2", "--samples", str(samples_dir))
    assert report["bench"] == "decode"
    assert report["date"] and report["cpu"] and report["versions"]["zxing-cpp"] != "missing"
    cases = {(t["size"], t["frames"], t["code"]) for t in report["timings"]}
    assert cases == {(size, kind, code) for size in ("640x480", "1280x720")
                     for kind, code in (("photos", False), ("noise", False), ("pass QR", True))}
    for row in report["timings"]:
        assert row["count"] == 2 and row["mean_ms"] > 0 and row["p99_ms"] >= row["p50_ms"] > 0
        assert row["decoded"] == (2 if row["code"] else 0), row
    decoded = {d["folder"]: d["decoded"] for d in report["detection"]}
    reference = {"qrcode-1": 8, "qrcode-2": 53, "qrcode-3": 18, "qrcode-4": 15, "qrcode-5": 16,
                 "qrcode-6": 15, "qrcode-7": 1}
    assert set(decoded) == set(reference)
    assert {k: v for k, v in decoded.items() if v < reference[k]} == {}
    assert report["false_positives"] == [{"backend": "zxing", "images": 46, "detections": 0}]


def test_bench_decode_table_names_backends_and_folders(capsys, samples_dir):
    status = main(["bench", "decode", "--backend", "zbar", "--frames", "1", "--samples", str(samples_dir),
                   "--folders", "qrcode-1"])
    out = capsys.readouterr().out
    assert status == 0
    assert "| zbar" in out and "| qrcode-1" in out and "false positives" in out


def test_bench_decode_without_samples_still_times_synthetic_frames(capsys, tmp_path):
    report = run_json(capsys, "decode", "--backend", "zxing", "--frames", "1",
                      "--samples", str(tmp_path / "none"))
    assert {t["frames"] for t in report["timings"]} == {"noise", "pass QR"}
    assert report["detection"] == []


def test_bench_loop_runs_the_gate_and_grants_every_pass(capsys, samples_dir):
    report = run_json(capsys, "loop", "--frames", "20", "--rounds", "1", "--grants", "4",
                      "--samples", str(samples_dir))
    assert report["bench"] == "loop" and report["frames"] == 20
    assert (report["granted"], report["missed"]) == (4, 0)
    assert report["raw_fps"] > 0 and report["loop_fps"] > 0
    assert 0 < report["frame_to_relay_ms"]["p50"] <= report["frame_to_relay_ms"]["p99"]
    assert set(report["targets"]) == {"loop_to_raw_min", "beyond_decode_p99_max_ms", "loop_ok", "latency_ok"}


def test_bench_without_a_sub_bench_prints_help_and_exits_2(capsys):
    assert main(["bench"]) == 2
    assert "decode" in capsys.readouterr().out


@pytest.mark.parametrize(("values", "pct", "want"), [
    ([], 50, 0.0), ([5.0], 99, 5.0), ([1.0, 2.0, 3.0, 4.0], 50, 2.0),
    (list(range(1, 101)), 99, 99), (list(range(1, 101)), 100, 100), ([3.0, 1.0, 2.0], 0, 1.0),
])
def test_percentile_is_nearest_rank(values, pct, want):
    assert percentile(values, pct) == want


def test_format_table_aligns_columns():
    assert format_table(["a", "bb"], [[1.234, "x"], ["long", 2]]).splitlines() == [
        "| a    | bb |", "|------|----|", "| 1.23 | x  |", "| long | 2  |"]

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
    report = run_json(capsys, "decode", "--backend", "zxing", "--frames", "2", "--samples", str(samples_dir),
                      "--no-targets")
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
                   "--folders", "qrcode-1", "--no-targets"])
    out = capsys.readouterr().out
    assert status == 0
    assert "| zbar" in out and "| qrcode-1" in out and "false positives" in out


def test_bench_decode_without_samples_still_times_synthetic_frames(capsys, tmp_path):
    report = run_json(capsys, "decode", "--backend", "zxing", "--frames", "1",
                      "--samples", str(tmp_path / "none"), "--synthetic", "2")
    assert {t["frames"] for t in report["timings"]} == {"noise", "pass QR"}
    assert report["detection"] == []
    assert "photos" not in report["targets"] and report["targets"]["synthetic"]["items"] == 2


def test_bench_decode_targets_put_qrgate_beside_zxing_cpp_and_zbar_on_the_same_frames(capsys, samples_dir):
    report = run_json(capsys, "decode", "--frames", "2", "--samples", str(samples_dir), "--synthetic", "6")
    assert {t["backend"] for t in report["timings"]} == {"qrgate", "zxing", "zbar"}
    targets = report["targets"]
    assert targets["decoders"] == ["qrgate", "zxing-cpp local-average", "zxing-cpp global-histogram",
                                   "zxing-cpp fixed-threshold", "zbar"]
    photos = targets["photos"]
    assert photos["items"] == 138 and photos["reads"]["zxing-cpp local-average"] == 126
    assert photos["reads"]["qrgate"] == 130 and photos["union"] == 130
    assert photos["union_not_qrgate"] == [] and photos["met"] is True
    assert targets["false_positives"] == {
        "images": 46, "met": True, "detections": {name: 0 for name in targets["decoders"]}}
    synthetic = targets["synthetic"]
    assert synthetic["items"] == 6 and synthetic["reads"]["qrgate"] >= synthetic["reads"]["zxing-cpp local-average"]
    assert synthetic["met"] == (synthetic["reads"]["qrgate"] >= synthetic["union"])
    for size in ("640x480", "1280x720"):
        row = targets["no_code"][size]
        assert row["qrgate_mean_ms"] > 0 and row["zxing_mean_ms"] > 0 and len(row["round_ratios"]) == 5
        assert row["met"] == (row["ratio"] <= 1.10)
        assert len(row["round_cpu_ratios"]) == 5 and row["cpu_ratio"] > 0
        assert row["second_detector_ratio"] > 1.0


def test_bench_decode_table_says_whether_each_target_is_met(capsys, samples_dir):
    assert main(["bench", "decode", "--backend", "qrgate", "--frames", "1", "--samples", str(samples_dir),
                 "--folders", "qrcode-2", "--synthetic", "2"]) == 0
    out = capsys.readouterr().out
    for row in ("sample photos read (of 56)", "camera-like frames read (of 2)", "false detections",
                "no-code frames 640x480", "no-code frames 1280x720"):
        line = next(line for line in out.splitlines() if row in line)
        assert line.rstrip(" |").endswith(("| met", "| NOT met")), line
    photos = next(line for line in out.splitlines() if "sample photos read (of 56)" in line)
    assert "| 54 " in photos and photos.rstrip(" |").endswith("| met"), photos  # 53 + qrcode-2/28.webp
    assert "read by the union, not by qrgate" not in out.split("synthetic:")[0]


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


def test_bench_approach_replays_sequences_through_the_gate_for_each_decoder(capsys):
    report = run_json(capsys, "approach", "--sequences", "3", "--seed", "30")
    assert report["bench"] == "approach" and report["sequences"] == 3 and report["fps"] == 30
    assert set(report["decoders"]) == {"zxing-cpp", "zbar", "qrgate"}
    for name, row in report["decoders"].items():
        assert 0 <= row["within_0_5_s"] <= row["within_1_s"] <= row["decided"] <= 3, name
        assert row["denials"] == 0 and row["frames_decoded"] > 0 and row["mean_decode_ms"] > 0
    frames = report["frames_to_decision"]
    assert all(len(values) == 3 for values in frames.values())
    # qrgate's first pass is zxing-cpp's own call: it never decides later than zxing-cpp alone
    for zxing, qrgate in zip(frames["zxing-cpp"], frames["qrgate"], strict=True):
        assert zxing is None or (qrgate is not None and qrgate <= zxing)
    assert set(report["targets"]) == {"decided_ok", "median_ok"}


def test_bench_approach_table_says_whether_the_targets_are_met(capsys):
    assert main(["bench", "approach", "--sequences", "1"]) == 0
    out = capsys.readouterr().out
    assert "| qrgate" in out and "| zbar" in out and "| zxing-cpp" in out
    verdicts = [line for line in out.splitlines()
                if line.startswith("| qrgate") and line.rstrip(" |").endswith(("| met", "| NOT met"))]
    assert len(verdicts) == 2, out


@pytest.mark.parametrize(("args", "reason"), [(["--size", "big"], "--size 'big' is not WIDTHxHEIGHT"),
                                              (["--size", "10x10"], "between 160x120 and 4096x3072"),
                                              (["--sequences", "0"], "--sequences 0 must be between 1")])
def test_bench_approach_refuses_bad_arguments_with_the_reason(capsys, args, reason):
    assert main(["bench", "approach", *args]) == 78
    captured = capsys.readouterr()
    assert reason in captured.err and captured.out == ""

"""`qrgate bench decode`: decoder speed and accuracy (the whole gate loop is `bench loop`, firmware.bench.loop).

``bench decode`` times each backend on 640x480 and 1280x720 frames without a code (the
false-positive photos of the sample set resized, and a noisy grey frame) and with one
(a pass-sized segno ``make_qr`` code on a noisy background), then counts the sample
photos each backend decodes to exactly the expected text.

``bench loop`` runs the real ``GateService`` (replay source as fast as possible,
MockFactory pins, an in-memory event sink) on no-code frames, next to the raw decoder on
the same frames in the same run, and then measures frame-to-relay latency on valid passes.

Like the other benches this is composition-root code: it builds adapters from ``device``
inside its functions.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from firmware.bench.common import (
    DEFAULT_SAMPLES,
    SIZES,
    add_json_flag,
    emit,
    format_table,
    machine_info,
    no_code_photos,
    percentile,
)
from firmware.core.model import Frame

# A pass-sized payload: QG1 passes are 150-250 characters of base45 text.
BENCH_PAYLOAD = "QG1:" + "".join("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:"[(i * 7 + 3) % 45]
                                 for i in range(200))


def register(bench_sub: argparse._SubParsersAction) -> None:
    p = bench_sub.add_parser("decode", help="decoder ms per frame and detection rate on sample photos",
                             description="Time each decoder on frames with and without a code at 640x480 "
                             "and 1280x720, and count the sample photos it reads.")
    p.add_argument("--backend", action="append", choices=("qrgate", "zxing", "zbar"),
                   help="decoder to time: qrgate (zxing-cpp with retries, the gate's), zxing (raw "
                   "zxing-cpp) or zbar (repeatable; default: all three)")
    p.add_argument("--synthetic", type=int, default=200,
                   help="camera-like synthetic frames for the read counts (default: %(default)s; 0: none)")
    p.add_argument("--no-targets", dest="targets", action="store_false",
                   help="skip the issue 16 targets (read counts, false detections, no-code time ratio)")
    p.add_argument("--frames", type=int, default=100, help="timed decodes per case (default: %(default)s)")
    p.add_argument("--samples", default=os.environ.get("QRGATE_SAMPLES", str(DEFAULT_SAMPLES)),
                   help="qr-samples folder (default: $QRGATE_SAMPLES or %(default)s)")
    p.add_argument("--folders", default="qrcode-*",
                   help="glob of sample folders for the detection rate (default: %(default)s)")
    p.add_argument("--zxing-variants", action="store_true",
                   help="also time zxing with try_rotate/try_downscale/try_invert off")
    add_json_flag(p)
    p.set_defaults(func=bench_decode_command)


# --------------------------------------------------------------------------- frames


def time_decodes(decoder: Any, frames: Sequence[np.ndarray], count: int,
                 warmup: int = 3) -> tuple[list[float], int]:
    """Decode count frames (cycling through frames); return the ms of each and the codes found."""
    def frame(i: int) -> Frame:
        return Frame(pixels=frames[i % len(frames)], captured_mono_s=0.0, index=i, origin="bench")

    for i in range(warmup):
        decoder.decode(frame(i))
    timings, found = [], 0
    for i in range(count):
        f = frame(i)
        start = time.perf_counter()
        codes = decoder.decode(f)
        timings.append((time.perf_counter() - start) * 1000.0)
        found += len(codes)
    return timings, found


def stats_ms(timings: Sequence[float]) -> dict[str, float]:
    """Mean, p50 and p99 of timings in ms, and the frame rate they allow."""
    mean = sum(timings) / len(timings) if timings else 0.0
    return {"mean_ms": round(mean, 3), "p50_ms": round(percentile(timings, 50), 3),
            "p99_ms": round(percentile(timings, 99), 3), "fps": round(1000.0 / mean) if mean else 0}


# --------------------------------------------------------------------------- bench decode

def _decoders(backends: Sequence[str], variants: bool) -> list[tuple[str, Any]]:
    from device.decoders import ZxingDecoder, make_decoder

    out: list[tuple[str, Any]] = []
    for name in backends:
        # "zxing" is raw zxing-cpp (the gate's options, no retries); "qrgate" is the gate's decoder
        out.append((name, ZxingDecoder() if name == "zxing" else make_decoder("zxing" if name == "qrgate" else name)))
        if name == "zxing" and variants:
            out.append(("zxing-fast", ZxingDecoder(try_rotate=False, try_downscale=False, try_invert=False)))
    return out


def detection(decoder: Any, samples: Path, pattern: str) -> list[dict[str, Any]]:
    """Per sample folder: images decoded to exactly their expected text, and mean decode ms.

    A folder whose images are the parts of one structured-append message (``01-01.png`` ...
    with the joined text in ``01.txt``) counts messages instead: one when the payloads of
    its parts, joined in file order, give the expected text.
    """
    from device.camera import list_image_files, load_grey_image

    rows = []
    for folder in sorted(p for p in samples.glob(pattern) if p.is_dir()):
        images = list_image_files(folder)
        good, ms = 0, 0.0
        parts: dict[Path, list[bytes]] = {}
        for path in images:
            frame = Frame(pixels=load_grey_image(path), captured_mono_s=0.0, origin=path.name)
            start = time.perf_counter()
            codes = decoder.decode(frame)
            ms += (time.perf_counter() - start) * 1000.0
            expected = path.with_suffix(".txt")
            if expected.exists():
                good += any(c.text == expected.read_bytes().decode("utf-8") for c in codes)
            elif "-" in path.stem:
                message = folder / (path.stem.split("-", 1)[0] + ".txt")
                parts.setdefault(message, []).append(b"".join(c.payload for c in codes))
        messages = {m: b"".join(p) == m.read_bytes() for m, p in parts.items() if m.exists()}
        units = len(images) - sum(len(p) for p in parts.values()) + len(messages)
        rows.append({"folder": folder.name, "images": units,
                     "decoded": good + sum(messages.values()), "unit": "messages" if messages else "images",
                     "mean_ms": round(ms / len(images), 3) if images else 0.0})
    return rows


def false_positives(decoder: Any, samples: Path) -> dict[str, int]:
    """Images and detections in the falsepositives-* folders (every detection is a false one)."""
    from device.camera import list_image_files, load_grey_image

    images = detections = 0
    for folder in sorted(samples.glob("falsepositives-*")):
        for path in list_image_files(folder):
            images += 1
            detections += len(decoder.decode(Frame(pixels=load_grey_image(path), captured_mono_s=0.0)))
    return {"images": images, "detections": detections}


def run_decode_bench(backends: Sequence[str], frames: int, samples: Path, folders: str = "qrcode-*",
                     variants: bool = False, synthetic: int = 200, targets: bool = True) -> dict[str, Any]:
    """Measure every backend; return the JSON-ready report."""
    from device.synthetic import noise_frame, render_code_frame

    have_samples = samples.is_dir()
    cases: list[tuple[str, int, int, bool, list[np.ndarray]]] = []
    for width, height in SIZES:
        if have_samples:
            cases.append(("photos", width, height, False, no_code_photos(samples, width, height)))
        cases.append(("noise", width, height, False, [noise_frame(width, height, seed) for seed in range(4)]))
        cases.append(("pass QR", width, height, True,
                      [render_code_frame(BENCH_PAYLOAD, width, height, seed) for seed in range(4)]))
    timings, detections, fps = [], [], []
    for name, decoder in _decoders(backends, variants):
        for label, width, height, has_code, images in cases:
            ms, found = time_decodes(decoder, images, frames)
            timings.append({"backend": name, "size": f"{width}x{height}", "frames": label, "code": has_code,
                            "decoded": found, "count": len(ms), **stats_ms(ms)})
        if have_samples:
            for row in detection(decoder, samples, folders):
                detections.append({"backend": name, **row})
            fps.append({"backend": name, **false_positives(decoder, samples)})
    report = {"bench": "decode", **machine_info(), "versions": library_versions(), "samples": str(samples),
              "timings": timings, "detection": detections, "false_positives": fps}
    if targets:
        from firmware.bench.decode_targets import run_targets

        report["targets"] = run_targets(samples, synthetic, max(frames, 1) * 2, pattern=folders)
    return report


def library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for dist in ("zxing-cpp", "zbar-py", "numpy", "pillow"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = "missing"
    return out


def decode_report_text(report: dict[str, Any]) -> str:
    lines = [f"qrgate bench decode - {report['date']} - {report['cpu']} ({report['cpus']} CPUs, load "
             f"{report['load_avg_1m']}), Python {report['python']}, "
             + ", ".join(f"{k} {v}" for k, v in report["versions"].items()), ""]
    lines.append(format_table(
        ["backend", "size", "frames", "code", "mean ms", "p50 ms", "p99 ms", "fps", "decoded/frames"],
        [[t["backend"], t["size"], t["frames"], "yes" if t["code"] else "no", t["mean_ms"], t["p50_ms"],
          t["p99_ms"], t["fps"], f"{t['decoded']}/{t['count']}"] for t in report["timings"]]))
    if report["detection"]:
        backends = list(dict.fromkeys(d["backend"] for d in report["detection"]))
        folders = list(dict.fromkeys(d["folder"] for d in report["detection"]))
        table = {(d["backend"], d["folder"]): d for d in report["detection"]}
        rows = []
        for folder in folders:
            first = table[(backends[0], folder)]
            name = folder if first["unit"] == "images" else f"{folder} ({first['unit']})"
            rows.append([name, first["images"], *[table[(b, folder)]["decoded"] for b in backends]])
        rows.append(["total", sum(r[1] for r in rows),
                     *[sum(table[(b, f)]["decoded"] for f in folders) for b in backends]])
        rows.append(["false positives (falsepositives-*)",
                     next(f["images"] for f in report["false_positives"]),
                     *[next(f["detections"] for f in report["false_positives"] if f["backend"] == b)
                       for b in backends]])
        lines += ["", f"Sample photos decoded to exactly the expected text ({report['samples']}):", ""]
        lines.append(format_table(["folder", "images", *backends], rows))
    else:
        lines += ["", f"(no detection rate: samples folder {report['samples']} not found; pass --samples)"]
    if report.get("targets"):
        from firmware.bench.decode_targets import targets_text

        lines += ["", targets_text(report["targets"])]
    return "\n".join(lines)


def bench_decode_command(args: argparse.Namespace) -> int:
    from importlib.util import find_spec

    # without zbar-py installed the default leaves zbar out rather than failing
    backends = args.backend or ["qrgate", "zxing"] + (["zbar"] if find_spec("zbar") else [])
    report = run_decode_bench(backends, max(1, args.frames), Path(args.samples), args.folders,
                              args.zxing_variants, synthetic=max(0, args.synthetic), targets=args.targets)
    emit(args, report, decode_report_text(report))
    return 0

"""What every bench shares: the ``--json`` flag, the machine line (CPU, Python, date), percentiles,
tables, and the sample photos shipped in the repository."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def add_json_flag(parser: argparse.ArgumentParser) -> None:
    """Add the common ``--json`` flag to a sub-bench parser."""
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of a table")


def cpu_model() -> str:
    """The CPU's model name as lscpu reports it (``/proc/cpuinfo`` if lscpu is missing)."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10,
                             env={**os.environ, "LC_ALL": "C"}).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.lower().startswith(("model name", "hardware")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
    """Date (UTC), CPU, core count, load average at the start and Python version, for every bench report."""
    try:
        load_1m = round(os.getloadavg()[0], 2)
    except OSError:
        load_1m = -1.0
    return {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d"),
        "load_avg_1m": load_1m,
        "cpu": cpu_model(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "machine": platform.machine(),
    }


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (0-100) of values; 0.0 for an empty sequence."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-pct * len(ordered) // 100))))
    return ordered[rank - 1]


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Render rows as a Markdown table (readable in a terminal and pasteable into the README)."""
    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.2f}" if abs(value) < 1000 else f"{value:.0f}"
        return str(value)

    text_rows = [[cell(v) for v in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in text_rows]) for i, h in enumerate(headers)]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |",
             "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    lines += ["| " + " | ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) + " |" for row in text_rows]
    return "\n".join(lines)


def emit(args: argparse.Namespace, report: dict[str, Any], text: str) -> None:
    """Print the report as JSON (``--json``) or the given text, to stdout."""
    if getattr(args, "json", False):
        sys.stdout.write(json.dumps(report, ensure_ascii=False, indent=1) + "\n")
    else:
        sys.stdout.write(text.rstrip("\n") + "\n")
    sys.stdout.flush()


SIZES = ((640, 480), (1280, 720))  # the frame sizes the decode benches time
# The sample photos ship in the repository (tests/data/qr-samples, Apache-2.0 from zxing-cpp).
DEFAULT_SAMPLES = Path(__file__).resolve().parents[2] / "tests" / "data" / "qr-samples"

def no_code_photos(samples: Path, width: int, height: int) -> list[np.ndarray]:
    """The falsepositives-* photos resized to width x height (empty if the folder is missing)."""
    from PIL import Image

    from device.camera import list_image_files, load_grey_image

    out = []
    for folder in sorted(samples.glob("falsepositives-*")):
        for path in list_image_files(folder):
            image = Image.fromarray(load_grey_image(path)).resize((width, height), Image.Resampling.BILINEAR)
            out.append(np.asarray(image, dtype=np.uint8))
    return out

"""Synthetic camera frames: QR codes shaped like what the gate camera delivers.

Used by the tests (through ``tests/qrimages.py``), the benchmarks and the demo; it
ships in the package because production code never imports ``tests/``.

Every helper renders a normal QR code with ``segno.make_qr`` (never Micro QR: the gate's
passes are always full QR), error level M, a quiet zone of 4 modules, dark modules at about
grey 35 and light ones at about grey 215, pasted in the middle of a noisy mid-grey frame the
size of a YUV420 Y plane (default 640x480, the picamera2 lores stream). The output is a 2-D
``uint8`` numpy array (height x width), exactly what ``firmware.core.model.Frame.pixels`` holds.

The result is deterministic for a given ``seed``, so tests can compare runs.

Usage::

    from device.synthetic import render_code_frame, write_code_png, noise_frame

    pixels = render_code_frame("QG1:...")            # numpy (480, 640) uint8
    write_code_png(tmp_path / "01-pass.png", b"\\xff\\x00binary")  # for dir:/file: sources
    blank = noise_frame(640, 480, seed=3)            # a frame with no code at all
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import segno

DARK_GREY = 35
LIGHT_GREY = 215
BACKGROUND_GREY = 128
NOISE_SIGMA = 12.0
QUIET_ZONE_MODULES = 4


def noise_frame(width: int = 640, height: int = 480, seed: int = 0) -> np.ndarray:
    """Return a noisy mid-grey frame with no code in it.

    Args:
        width: frame width in pixels.
        height: frame height in pixels.
        seed: random seed; the same seed gives the same frame.

    Returns:
        A 2-D ``uint8`` array of shape (height, width).
    """
    rng = np.random.default_rng(seed)
    noise = rng.normal(BACKGROUND_GREY, NOISE_SIGMA * 2, size=(height, width))
    return np.clip(noise, 0, 255).astype(np.uint8)


def code_modules(data: str | bytes) -> np.ndarray:
    """Return the QR symbol for data as a boolean module matrix (True = dark), quiet zone included.

    Always a normal QR code (``segno.make_qr``), error level M; segno picks the smallest version.
    """
    qr = segno.make_qr(data, error="m", boost_error=False)
    rows = list(qr.matrix_iter(scale=1, border=QUIET_ZONE_MODULES))
    return np.array([[bool(v) for v in row] for row in rows], dtype=bool)


def render_code_frame(data: str | bytes, width: int = 640, height: int = 480, seed: int = 0,
                      scale: int | None = None) -> np.ndarray:
    """Render data as a QR code on a noisy grey frame shaped like a YUV420 Y plane.

    Args:
        data: the payload (text is encoded by segno, bytes are stored as given).
        width: frame width in pixels (the code must fit; 640 fits any pass).
        height: frame height in pixels.
        seed: random seed for the background and sensor noise.
        scale: pixels per module; None picks the largest that fills at most half of the
            shorter side, between 2 and 6 (about what a pass held 20-30 cm from the camera gives).

    Returns:
        A 2-D ``uint8`` array of shape (height, width) with the code centred.

    Raises:
        ValueError: the code does not fit in the frame at the chosen scale.
    """
    modules = code_modules(data)
    n = modules.shape[0]
    if scale is None:
        scale = min(6, max(2, (min(width, height) // 2) // n))
    side = n * scale
    if side > width or side > height:
        raise ValueError(f"a {n}-module code at {scale} px per module ({side} px) does not fit "
                         f"in {width}x{height}; give a larger frame or a smaller scale")
    frame = noise_frame(width, height, seed).astype(np.float32)
    symbol = np.where(modules, DARK_GREY, LIGHT_GREY).astype(np.float32)
    symbol = np.kron(symbol, np.ones((scale, scale), dtype=np.float32))
    rng = np.random.default_rng(seed + 1)
    symbol += rng.normal(0.0, NOISE_SIGMA, size=symbol.shape)
    top, left = (height - side) // 2, (width - side) // 2
    frame[top:top + side, left:left + side] = symbol
    return np.clip(frame, 0, 255).astype(np.uint8)


def write_code_png(path: str | Path, data: str | bytes, width: int = 640, height: int = 480,
                   seed: int = 0) -> Path:
    """Write ``render_code_frame(data, width, height, seed)`` as a greyscale PNG and return its path.

    Use it to fill a ``dir:`` replay folder; files replay in name order, so prefix names with
    a number (``01-valid.png``).
    """
    from PIL import Image

    path = Path(path)
    Image.fromarray(render_code_frame(data, width, height, seed)).save(path)
    return path


def write_blank_png(path: str | Path, width: int = 640, height: int = 480, seed: int = 0) -> Path:
    """Write a noisy grey PNG with no code (a "blank frame") and return its path."""
    from PIL import Image

    path = Path(path)
    Image.fromarray(noise_frame(width, height, seed)).save(path)
    return path

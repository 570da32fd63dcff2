"""Render QR codes as camera-like greyscale scenes (for the demo and for test images).

Always a full QR made with segno ``make_qr`` (never Micro QR), placed on a noisy grey
background the size of a camera frame, as the Y plane of a 640x480 lores stream would be.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import segno
from PIL import Image


def render_scene(data: str | bytes | None, width: int = 640, height: int = 480, seed: int = 0,
                 module_px: int = 4) -> np.ndarray:
    """Return a 2-D uint8 frame with the code centred on a noisy grey background.

    Args:
        data: the code's content; None gives a blank scene (no code).
        width, height: frame size in pixels.
        seed: noise seed, so scenes are reproducible.
        module_px: pixels per QR module (4 at 640x480 is a pass held ~30 cm away).
    """
    rng = np.random.default_rng(seed)
    frame = np.clip(rng.normal(128, 18, (height, width)), 0, 255).astype(np.uint8)
    if data is None:
        return frame
    qr = segno.make_qr(data, error="m", boost_error=False)
    modules = qr.symbol_size(scale=1, border=4)[0]
    px = max(1, min(module_px, min(width, height) // modules))  # shrink big codes to fit the frame
    matrix = np.array([[0 if dark else 255 for dark in row] for row in qr.matrix_iter(scale=px, border=4)],
                      dtype=np.uint8)[:height, :width]
    h, w = matrix.shape
    top, left = (height - h) // 2, (width - w) // 2
    frame[top:top + h, left:left + w] = matrix
    return frame


def save_scene(path: str | Path, data: str | bytes | None, **options: int) -> Path:
    """Write ``render_scene(data, ...)`` as a PNG and return its path."""
    out = Path(path)
    Image.fromarray(render_scene(data, **options), mode="L").save(out)
    return out

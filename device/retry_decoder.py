"""qrgate's decoder: zxing-cpp, and a second chance only where zxing-cpp located a code it could not read.

At a gate most frames hold no code, so nothing may be added to them: the first pass is
one zxing-cpp call with the gate's options, asked also to return the symbols it *located*
but could not decode (a checksum or format error: blur, a glare spot, a threshold that did
not suit the light). A frame without any such symbol costs exactly that one call. For each
located-but-unread symbol (at most ``MAX_RETRIED_SYMBOLS`` per frame, and no new pass after
``RETRY_BUDGET_S`` of retrying, so a hostile frame full of damaged codes cannot stall the
loop) the decoder crops the symbol's region with a margin and tries, in
order, until one pass reads a code:

==========================  ==========================================================
pass                        what it does on the crop
==========================  ==========================================================
``retry-global-histogram``  zxing-cpp with the GlobalHistogram binarizer
``retry-fixed-threshold``   zxing-cpp with the FixedThreshold binarizer (grey 127)
``retry-upscale``           2x bicubic upscale (small symbols only), zxing-cpp
``retry-upscale-sharpen``   the same, sharpened (unsharp mask), zxing-cpp
``retry-stretch``           contrast stretched (2nd-98th percentile to 0-255), zxing-cpp
``retry-sharpen``           sharpened, zxing-cpp
``retry-zbar``              zbar-py on the crop (only when zbar-py is installed)
``retry-zbar-upscale``      zbar-py on the 2x crop (small symbols, zbar-py installed)
==========================  ==========================================================

The decoder reports which pass read each code (``decode_with_passes``; ``zxing`` for the
first pass), which ``qrgate decode`` prints as the field ``pass``. A code read again by a
retry (a neighbour inside the margin) is not returned twice.

Usage::

    decoder = RetryingDecoder(ZxingDecoder(), zbar=ZbarDecoder())   # or zbar=None
    codes = decoder.decode(frame)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np
from PIL import Image, ImageFilter

from firmware.core.errors import DecodeError
from firmware.core.model import DecodedCode, Frame

log = logging.getLogger(__name__)

PASS_FIRST = "zxing"
MAX_RETRIED_SYMBOLS = 3
RETRY_BUDGET_S = 0.030       # no new retry pass starts after this much CPU time spent retrying in a frame
MARGIN_SHARE = 0.25          # of the symbol's side, on each side of its bounding box
MARGIN_MIN_PX = 8
UPSCALE_BELOW_MODULE_PX = 6.0
UPSCALE_MAX_SIDE_PX = 700    # a crop larger than this is not small: no upscaling
MIN_CROP_PX = 12
ASSUMED_MODULES = 41         # version 6, pass-sized, when zxing-cpp could not read the version


class SymbolReader(Protocol):
    """The zxing-cpp adapter's symbol-level reading (``device.decoders.ZxingDecoder``)."""

    def read_symbols(self, frame: Frame, *, binarizer: str | None = None,
                     with_failures: bool = False) -> list[Any]:
        """Symbols with ``code`` (DecodedCode or None), ``corners`` and ``version``."""
        ...


class FrameDecoder(Protocol):
    """A whole-frame decoder used on crops (``device.decoders.ZbarDecoder``)."""

    def decode(self, frame: Frame) -> list[DecodedCode]:
        """Every code in the frame; raises DecodeError when the library fails."""
        ...


class RetryingDecoder:
    """zxing-cpp with a second chance on located but unread symbols (see the module doc).

    Args:
        zxing: the zxing-cpp adapter (``ZxingDecoder``) whose options make the first pass.
        zbar: a zbar-py adapter (``ZbarDecoder``) for the last retries, or None when zbar-py
            is not installed (the zxing-cpp retries still run).
        retry: False makes this exactly the zxing-cpp adapter (``[decoder] retry = false``).
        retry_budget_s: no retry pass starts once the frame's retries have used this much CPU
            time (a pass already running finishes).
        clock: seconds of this thread's CPU time (default ``time.thread_time``), so other
            processes' load does not change what is read; tests pass a fake.

    Not thread-safe (neither library's scanner is): one decoder per thread.
    """

    name = "zxing"

    def __init__(self, zxing: SymbolReader, zbar: FrameDecoder | None = None, *, retry: bool = True,
                 retry_budget_s: float = RETRY_BUDGET_S, clock: Callable[[], float] = time.thread_time) -> None:
        self._zxing = zxing
        self._zbar = zbar
        self.retry = retry
        self._budget_s = retry_budget_s
        self._clock = clock

    @property
    def has_zbar(self) -> bool:
        """True when the retries include zbar-py."""
        return self._zbar is not None

    def decode(self, frame: Frame) -> list[DecodedCode]:
        """Return every QR code read in the frame (empty list if none).

        Blocks for the decode: one zxing-cpp call on a frame with no located symbol; a few
        more on small crops for each located but unread symbol (at most 3 symbols, and no
        new pass after ``retry_budget_s`` of retrying).

        Raises:
            DecodeError: the pixels are not a 2-D uint8 array, or a library failed on them.
        """
        return [code for code, _ in self.decode_with_passes(frame)]

    def decode_with_passes(self, frame: Frame) -> list[tuple[DecodedCode, str]]:
        """Like ``decode``, with the name of the pass that read each code (``zxing``, ``retry-...``)."""
        symbols = self._zxing.read_symbols(frame, with_failures=self.retry)
        found = [(s.code, PASS_FIRST) for s in symbols if s.code is not None]
        if not self.retry:
            return found
        unread = [s for s in symbols if s.code is None and not _inside_any(s, symbols)]
        deadline = self._clock() + self._budget_s if unread else 0.0
        for symbol in unread[:MAX_RETRIED_SYMBOLS]:
            known = {code.payload for code, _ in found}
            found += self._second_chance(frame, symbol, known, deadline)
        return found

    def _second_chance(self, frame: Frame, symbol: Any, known: set[bytes],
                       deadline: float) -> list[tuple[DecodedCode, str]]:
        crop, module_px = _crop_around(frame.pixels, symbol.corners, symbol.version)
        if crop is None:
            return []
        for pass_name, attempt in self._plan(crop, module_px):
            if self._clock() >= deadline:
                log.debug("retry budget spent on frame %d; %s and later passes skipped", frame.index, pass_name)
                return []
            try:
                codes = attempt(_with_pixels(frame, crop))
            except DecodeError as err:
                # a retry is a bonus: one that fails leaves the frame's first-pass codes intact
                log.debug("retry pass %s failed on frame %d: %s", pass_name, frame.index, err)
                continue
            new = [code for code in codes if code.payload not in known]
            if new:
                return [(code, pass_name) for code in new]
        return []

    def _plan(self, crop: np.ndarray, module_px: float) -> list[tuple[str, Callable[[Frame], list[DecodedCode]]]]:
        """The retry passes for one crop, in order; each takes a Frame of the crop."""
        small = module_px < UPSCALE_BELOW_MODULE_PX and max(crop.shape) <= UPSCALE_MAX_SIDE_PX
        cache: dict[str, np.ndarray] = {}

        def image(kind: str) -> np.ndarray:
            if kind not in cache:
                cache[kind] = _IMAGE_OPS[kind](crop, cache)
            return cache[kind]

        def zxing_on(kind: str, binarizer: str | None = None) -> Callable[[Frame], list[DecodedCode]]:
            def attempt(frame: Frame) -> list[DecodedCode]:
                pixels = crop if kind == "crop" else image(kind)
                symbols = self._zxing.read_symbols(_with_pixels(frame, pixels), binarizer=binarizer)
                return [s.code for s in symbols if s.code is not None]
            return attempt

        def zbar_on(kind: str) -> Callable[[Frame], list[DecodedCode]]:
            def attempt(frame: Frame) -> list[DecodedCode]:
                assert self._zbar is not None
                return self._zbar.decode(_with_pixels(frame, crop if kind == "crop" else image(kind)))
            return attempt

        plan: list[tuple[str, Callable[[Frame], list[DecodedCode]]]] = [
            ("retry-global-histogram", zxing_on("crop", "global_histogram")),
            ("retry-fixed-threshold", zxing_on("crop", "fixed_threshold")),
        ]
        if small:
            plan += [("retry-upscale", zxing_on("upscale")),
                     ("retry-upscale-sharpen", zxing_on("upscale-sharpen"))]
        plan += [("retry-stretch", zxing_on("stretch")),
                 ("retry-sharpen", zxing_on("sharpen"))]
        if self._zbar is not None:
            plan.append(("retry-zbar", zbar_on("crop")))
            if small:
                plan.append(("retry-zbar-upscale", zbar_on("upscale")))
        return plan


# --------------------------------------------------------------------------- crops and image operations

def _with_pixels(frame: Frame, pixels: np.ndarray) -> Frame:
    return Frame(pixels=pixels, captured_mono_s=frame.captured_mono_s, index=frame.index, origin=frame.origin)


def _inside_any(symbol: Any, symbols: Sequence[Any]) -> bool:
    """True when the unread symbol's centre lies in a decoded symbol's box (the same code seen twice)."""
    cx = sum(x for x, _ in symbol.corners) / 4.0
    cy = sum(y for _, y in symbol.corners) / 4.0
    for other in symbols:
        if other.code is None:
            continue
        xs = [x for x, _ in other.corners]
        ys = [y for _, y in other.corners]
        if min(xs) <= cx <= max(xs) and min(ys) <= cy <= max(ys):
            return True
    return False


def _crop_around(pixels: np.ndarray, corners: Sequence[tuple[int, int]],
                 version: int | None) -> tuple[np.ndarray | None, float]:
    """The region of the symbol with a margin (a view, not a copy), and its module size in px.

    Returns (None, 0.0) when the region is too small or outside the frame (odd corners).
    """
    height, width = pixels.shape
    xs = [float(x) for x, _ in corners]
    ys = [float(y) for _, y in corners]
    side = max(max(xs) - min(xs), max(ys) - min(ys))
    if not np.isfinite(side) or side <= 0:
        return None, 0.0
    margin = side * MARGIN_SHARE + MARGIN_MIN_PX
    x0, x1 = max(0, int(min(xs) - margin)), min(width, int(max(xs) + margin) + 1)
    y0, y1 = max(0, int(min(ys) - margin)), min(height, int(max(ys) + margin) + 1)
    if x1 - x0 < MIN_CROP_PX or y1 - y0 < MIN_CROP_PX:
        return None, 0.0
    modules = 17 + 4 * version if version else ASSUMED_MODULES
    return np.ascontiguousarray(pixels[y0:y1, x0:x1]), side / modules


def _upscale(crop: np.ndarray, cache: dict[str, np.ndarray]) -> np.ndarray:
    h, w = crop.shape
    return np.asarray(Image.fromarray(crop).resize((w * 2, h * 2), Image.Resampling.BICUBIC))


def _sharpen_image(pixels: np.ndarray) -> np.ndarray:
    return np.asarray(Image.fromarray(pixels).filter(ImageFilter.UnsharpMask(radius=2, percent=150, threshold=0)))


def _upscale_sharpen(crop: np.ndarray, cache: dict[str, np.ndarray]) -> np.ndarray:
    up = cache.get("upscale")
    return _sharpen_image(up if up is not None else _upscale(crop, cache))


def _sharpen(crop: np.ndarray, cache: dict[str, np.ndarray]) -> np.ndarray:
    return _sharpen_image(crop)


def _stretch(crop: np.ndarray, cache: dict[str, np.ndarray]) -> np.ndarray:
    """Map the crop's 2nd-98th percentile grey range onto 0-255 (a washed-out or dim symbol)."""
    low, high = np.percentile(crop, (2.0, 98.0))
    if high - low < 8.0:  # flat: nothing to stretch
        return crop
    scaled = (crop.astype(np.float32) - float(low)) * (255.0 / float(high - low))
    return np.clip(scaled, 0.0, 255.0).astype(np.uint8)


_IMAGE_OPS: dict[str, Callable[[np.ndarray, dict[str, np.ndarray]], np.ndarray]] = {
    "upscale": _upscale,
    "upscale-sharpen": _upscale_sharpen,
    "sharpen": _sharpen,
    "stretch": _stretch,
}

"""qrgate's decoder: zxing-cpp searching the frame at two sizes, and a second chance only where a code was located but not read.

At a gate most frames hold no code, so nothing may be added to them. The first pass costs
what zxing-cpp alone costs with its defaults (the gate's formats, ``try_rotate``,
``try_invert``, ``try_downscale`` and the LocalAverage binarizer), but spends it
differently. zxing-cpp's ``try_downscale`` searches, besides the full-size frame, a copy
averaged down to a third of its width (only for frames wider or taller than 500 px), both
in normal and inverted polarity. qrgate instead makes two zxing-cpp calls:

==============  ===========================================================================
pass            what it searches
==============  ===========================================================================
``zxing``       the full-size frame, normal and inverted (light-on-dark screens), no pyramid
``zxing-half``  every second pixel of every second row (a strided view: no copy, no
                averaging), normal polarity only; skipped on frames under 42 px a side
==============  ===========================================================================

On frames without a code the two together take what zxing-cpp's defaults take (the bench
measures it: ``qrgate bench decode``), and the half-size search reads codes the third-size
layer misses (mid-sized, blurred or noisy codes, and small photos, which zxing-cpp never
downscales). Both calls also return the symbols they *located* but could not decode (a
checksum or format error: blur, a glare spot, a threshold that did not suit the light). A
frame without any such symbol costs exactly those two calls.

For each located-but-unread symbol (at most ``MAX_RETRIED_SYMBOLS`` per frame, the same
symbol located by both searches counting once, and no new pass after ``RETRY_BUDGET_S`` of
retrying, so a hostile frame full of damaged codes cannot stall the loop) the decoder crops
the symbol's region of the full-size frame with a margin and tries, in order, until one pass
reads a code:

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

Every frame is decoded the same way whatever came before it: nothing is carried from one
frame to the next. The decoder reports which pass read each code (``decode_with_passes``),
which ``qrgate decode`` prints as the field ``pass``. A code read again by a later search or
a retry (the same code at both sizes, a neighbour inside the margin) is not returned twice.
``retry=False`` gives exactly zxing-cpp's reads with its defaults (one call, pass ``zxing``).

Usage::

    decoder = RetryingDecoder(ZxingDecoder(), zbar=ZbarDecoder())   # or zbar=None
    codes = decoder.decode(frame)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from PIL import Image, ImageFilter

from firmware.core.errors import DecodeError
from firmware.core.model import DecodedCode, Frame

log = logging.getLogger(__name__)

PASS_FIRST = "zxing"
PASS_HALF_SIZE = "zxing-half"
HALF_SIZE_MIN_SIDE_PX = 42   # the half-size view of a smaller frame is under 21 px, a version 1 symbol
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

    def read_symbols(self, frame: Frame, *, binarizer: str | None = None, with_failures: bool = False,
                     pixel_step: int = 1, try_invert: bool | None = None,
                     try_downscale: bool | None = None) -> list[Any]:
        """Symbols with ``code`` (DecodedCode or None), ``corners`` (frame pixels) and ``version``."""
        ...


@dataclass(frozen=True)
class SearchLayer:
    """One zxing-cpp search over the whole frame in the first pass.

    Attributes:
        pass_name: reported for the codes this search reads.
        pixel_step: 1 for the full-size frame, 2 for every second pixel of every second row.
        try_invert: also search light-on-dark codes; None keeps the zxing-cpp adapter's option.
    """

    pass_name: str
    pixel_step: int
    try_invert: bool | None


# zxing-cpp's own pyramid (try_downscale) is off in both: the half-size search takes its place.
SEARCH_LAYERS = (SearchLayer(PASS_FIRST, 1, None), SearchLayer(PASS_HALF_SIZE, 2, False))


class FrameDecoder(Protocol):
    """A whole-frame decoder used on crops (``device.decoders.ZbarDecoder``)."""

    def decode(self, frame: Frame) -> list[DecodedCode]:
        """Every code in the frame; raises DecodeError when the library fails."""
        ...


class RetryingDecoder:
    """zxing-cpp at two sizes, with a second chance on located but unread symbols (see the module doc).

    Args:
        zxing: the zxing-cpp adapter (``ZxingDecoder``); its options (formats, binarizer,
            ``try_rotate``, ``try_invert``) make the full-size search.
        zbar: a zbar-py adapter (``ZbarDecoder``) for the last retries, or None when zbar-py
            is not installed (the zxing-cpp retries still run).
        retry: False makes this exactly the zxing-cpp adapter with its own options, one call a
            frame (``[decoder] retry = false``).
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

        Blocks for the decode: two zxing-cpp calls (full size, half size) on a frame with no
        located symbol, about what one zxing-cpp call with its defaults takes; a few more on
        small crops for each located but unread symbol (at most 3 symbols, and no new pass
        after ``retry_budget_s`` of retrying). With ``retry`` off, one zxing-cpp call.

        Raises:
            DecodeError: the pixels are not a 2-D uint8 array, or a library failed on them.
        """
        return [code for code, _ in self.decode_with_passes(frame)]

    def decode_with_passes(self, frame: Frame) -> list[tuple[DecodedCode, str]]:
        """Like ``decode``, with the name of the pass that read each code (``zxing``, ``zxing-half``, ``retry-...``)."""
        if not self.retry:
            return [(s.code, PASS_FIRST) for s in self._zxing.read_symbols(frame) if s.code is not None]
        found: list[tuple[DecodedCode, str]] = []
        read: list[Any] = []
        located: list[Any] = []
        for layer in _layers_for(frame):
            symbols = self._zxing.read_symbols(frame, with_failures=True, pixel_step=layer.pixel_step,
                                               try_invert=layer.try_invert, try_downscale=False)
            known = {code.payload for code, _ in found}
            for symbol in symbols:
                if symbol.code is None:
                    located.append(symbol)
                    continue
                read.append(symbol)
                # the full-size search returns every symbol it reads, as zxing-cpp does (two
                # copies of one pass included); a later search adds only codes not yet read
                if symbol.code.payload not in known:
                    found.append((symbol.code, layer.pass_name))
        unread: list[Any] = []
        for symbol in located:
            # the same symbol seen by both searches, or a damaged copy of a code that was read
            if not _inside_any(symbol, read) and not _inside_any(symbol, unread):
                unread.append(symbol)
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


def _layers_for(frame: Frame) -> tuple[SearchLayer, ...]:
    """The first pass's searches for this frame: no half-size search on a tiny frame."""
    pixels = frame.pixels
    shape = getattr(pixels, "shape", ())
    if len(shape) == 2 and min(shape) < HALF_SIZE_MIN_SIDE_PX:
        return SEARCH_LAYERS[:1]
    return SEARCH_LAYERS


def _inside_any(symbol: Any, others: Sequence[Any]) -> bool:
    """True when the symbol's centre lies in the bounding box of one of others (the same code seen twice)."""
    cx = sum(x for x, _ in symbol.corners) / 4.0
    cy = sum(y for _, y in symbol.corners) / 4.0
    for other in others:
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

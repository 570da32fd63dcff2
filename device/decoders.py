"""QR decoders behind the ``Decoder`` port: zxing-cpp (default) and zbar-py.

Each adapter imports its library when it is built, so importing this module needs
neither. Both take the frame's 2-D ``uint8`` Y plane as it is (no copy to RGB),
look for QR symbols only, and return every symbol found as ``DecodedCode``:
``payload`` is the raw bytes the symbol carries, ``text`` a best-effort reading of
it. Odd content (binary, invalid UTF-8, Kanji, ECI, several codes in one frame)
never raises; a failure inside the library becomes ``DecodeError`` and the caller
skips the frame.

``make_decoder("zxing")`` gives qrgate's decoder: zxing-cpp with a second chance where it
located a code it could not read (``device.retry_decoder``; ``retry=False`` turns it off).

Usage::

    decoder = make_decoder("zxing")
    codes = decoder.decode(frame)       # list[DecodedCode], maybe empty
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from device.retry_decoder import RetryingDecoder
from firmware.core.errors import ConfigError, DecodeError
from firmware.core.model import DecodedCode, Frame

log = logging.getLogger(__name__)


def _grey_pixels(frame: Frame, backend: str) -> np.ndarray:
    """Return the frame's pixels as a 2-D uint8 array, or raise DecodeError naming the problem."""
    pixels = frame.pixels
    if not isinstance(pixels, np.ndarray) or pixels.ndim != 2 or pixels.dtype != np.uint8:
        shape = getattr(pixels, "shape", None)
        dtype = getattr(pixels, "dtype", type(pixels).__name__)
        raise DecodeError(f"{backend}: frame {frame.index} from {frame.origin or '?'} is not a 2-D uint8 "
                          f"greyscale array (shape {shape}, dtype {dtype}); sources must deliver the Y plane")
    if pixels.shape[0] < 1 or pixels.shape[1] < 1:
        raise DecodeError(f"{backend}: frame {frame.index} from {frame.origin or '?'} is empty "
                          f"(shape {pixels.shape})")
    return pixels


def _utf8_or_none(data: bytes) -> str | None:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


class ZxingDecoder:
    """QR decoder on zxing-cpp (tested with 3.1.1; option names checked in tests).

    It reads normal QR codes, model 2 and the old model 1 (two of the sample photos). In
    zxing-cpp 3, ``BarcodeFormat.QRCode`` names the whole family, Micro QR and rMQR
    included, so the formats are listed one by one: the gate's passes are always normal QR,
    and a one-finder Micro QR is the likeliest false detection in a noisy scene.

    ``payload`` is the symbol's raw bytes (before any ECI or Shift_JIS transcoding);
    ``text`` is zxing-cpp's transcoded text (UTF-8 for Kanji and ECI content), or None
    when zxing-cpp classifies the content as binary.

    zxing-cpp's Python binding does not expose structured-append fields (index, count,
    parity) in 3.1.1, so each part of a structured-append sequence comes back as its own
    code; the gate never uses structured append for passes.

    Args:
        try_rotate: also search 90/270 degree rotations (zxing-cpp ``try_rotate``).
        try_downscale: also search downscaled copies (finds large, blurred codes).
        try_invert: also search light-on-dark codes (phones in dark mode).
        binarizer: ``"local_average"`` (default, copes with uneven light),
            ``"global_histogram"`` or ``"fixed_threshold"`` (grey 127). zxing-cpp's
            ``BoolCast`` is left out: it expects an already binarised image.

    Raises:
        ConfigError: zxing-cpp is not installed or a value is not recognised.
    """

    name = "zxing"
    BINARIZERS = ("local_average", "global_histogram", "fixed_threshold")

    def __init__(self, *, try_rotate: bool = True, try_downscale: bool = True, try_invert: bool = True,
                 binarizer: str = "local_average") -> None:
        try:
            import zxingcpp
        except ImportError as err:
            raise ConfigError(f"decoder.backend = 'zxing' needs zxing-cpp, which is not importable "
                              f"({err}); install it with `pip install 'zxing-cpp>=3.1,<4'` in qrgate's venv"
                              ) from err
        binarizers = {
            "local_average": zxingcpp.Binarizer.LocalAverage,
            "global_histogram": zxingcpp.Binarizer.GlobalHistogram,
            "fixed_threshold": zxingcpp.Binarizer.FixedThreshold,
        }
        self._binarizers = binarizers
        if binarizer not in binarizers:
            raise ConfigError(f"zxing binarizer {binarizer!r} is not one of {', '.join(self.BINARIZERS)}")
        self._zx = zxingcpp
        self._binary = zxingcpp.ContentType.Binary
        # A list, not `A | B`: zxing-cpp 3 deprecates combining formats with `|`.
        self._options: dict[str, Any] = {
            "formats": [zxingcpp.BarcodeFormat.QRCodeModel2, zxingcpp.BarcodeFormat.QRCodeModel1],
            "try_rotate": try_rotate,
            "try_downscale": try_downscale,
            "try_invert": try_invert,
            "text_mode": zxingcpp.TextMode.Plain,
            "binarizer": binarizers[binarizer],
            "is_pure": False,
        }

    @property
    def options(self) -> dict[str, Any]:
        """The keyword arguments passed to ``zxingcpp.read_barcodes`` (a copy)."""
        return dict(self._options)

    def decode(self, frame: Frame) -> list[DecodedCode]:
        """Return every QR symbol in the frame (empty list if none).

        Blocks for the decode only (0.8-2.5 ms for a 640x480 frame without a code on the dev
        machine, see README, Benchmarks; re-measure on the Pi).

        Raises:
            DecodeError: the pixels are not a 2-D uint8 array, or zxing-cpp failed on them.
        """
        return [s.code for s in self.read_symbols(frame) if s.code is not None]

    def read_symbols(self, frame: Frame, *, binarizer: str | None = None, with_failures: bool = False,
                     pixel_step: int = 1, try_invert: bool | None = None,
                     try_downscale: bool | None = None) -> list[ZxingSymbol]:
        """Return the symbols zxing-cpp finds in the frame, with their corners.

        Args:
            frame: the frame (its pixels may be any 2-D uint8 array, a crop included).
            binarizer: one of ``BINARIZERS`` for this call only (default: the decoder's own).
            with_failures: also return symbols that were detected but could not be decoded
                (zxing-cpp ``return_errors``; their ``code`` is None). It does not change
                what is decoded, nor the time taken on a frame without any symbol.
            pixel_step: search only every ``pixel_step``-th pixel of every ``pixel_step``-th
                row (2: a half-size view of the frame, no copy, no averaging). Corners are
                still given in the frame's own pixels.
            try_invert: this call's ``try_invert`` (default: the decoder's own).
            try_downscale: this call's ``try_downscale`` (default: the decoder's own).

        Raises:
            DecodeError: the pixels are not a 2-D uint8 array, or zxing-cpp failed on them.
            ConfigError: binarizer is not one of ``BINARIZERS``.
            ValueError: pixel_step is not an integer from 1 to 8 (a caller's bug).
        """
        pixels = _grey_pixels(frame, self.name)
        options = self._options
        overrides: dict[str, Any] = {}
        if with_failures:
            overrides["return_errors"] = True
        if binarizer is not None:
            if binarizer not in self._binarizers:
                raise ConfigError(f"zxing binarizer {binarizer!r} is not one of {', '.join(self.BINARIZERS)}")
            overrides["binarizer"] = self._binarizers[binarizer]
        if try_invert is not None:
            overrides["try_invert"] = try_invert
        if try_downscale is not None:
            overrides["try_downscale"] = try_downscale
        if overrides:
            options = dict(options, **overrides)
        if not (isinstance(pixel_step, int) and 1 <= pixel_step <= 8):
            raise ValueError(f"zxing pixel_step {pixel_step!r} must be an integer from 1 to 8")
        if pixel_step > 1:
            # a strided view: zxing-cpp reads the strides itself, so nothing is copied
            pixels = pixels[::pixel_step, ::pixel_step]
        try:
            barcodes = self._zx.read_barcodes(pixels, **options)
        except Exception as err:  # the library's own failure, translated at the edge
            raise DecodeError(f"zxing-cpp failed on frame {frame.index} from {frame.origin or '?'}: "
                              f"{type(err).__name__}: {err}") from err
        symbols = []
        for barcode in barcodes:
            p = barcode.position
            corners = tuple((x * pixel_step, y * pixel_step) for x, y in (
                (p.top_left.x, p.top_left.y), (p.top_right.x, p.top_right.y),
                (p.bottom_right.x, p.bottom_right.y), (p.bottom_left.x, p.bottom_left.y)))
            code = None
            if barcode.valid:
                text = None if barcode.content_type == self._binary else barcode.text
                code = DecodedCode(payload=bytes(barcode.bytes), text=text)
            symbols.append(ZxingSymbol(code=code, corners=corners, version=_version_of(barcode)))
        return symbols


@dataclass(frozen=True)
class ZxingSymbol:
    """One symbol zxing-cpp found: decoded (``code``) or only detected (``code`` None).

    Attributes:
        code: the decoded code, or None when the symbol was located but not decoded
            (checksum or format error: too blurred, a glare spot, a wrong threshold).
        corners: the symbol's four corners in frame pixels (x, y), clockwise from top-left,
            quiet zone excluded.
        version: the QR version zxing-cpp read from the symbol, or None if unknown.
    """

    code: DecodedCode | None
    corners: tuple[tuple[int, int], ...]
    version: int | None = None


def _version_of(barcode: Any) -> int | None:
    """The QR version from zxing-cpp's ``extra`` dictionary, when it has a sane one."""
    extra = getattr(barcode, "extra", None)
    raw = extra.get("Version") if isinstance(extra, dict) else None
    try:
        version = int(raw) if raw is not None else None
    except (TypeError, ValueError):
        return None
    return version if version is not None and 1 <= version <= 40 else None


class ZbarDecoder:
    """QR decoder on zbar-py (the design card's library; bundles zbar 0.10).

    Only the QR symbology is enabled and location reporting is off. zbar 0.10 transcodes
    what it reads into UTF-8 by guessing the character set, so ``payload`` is zbar's UTF-8
    output, not the symbol's raw bytes: binary payloads and Shift_JIS text come back
    altered. ``text`` is that output when it is valid UTF-8. zbar 0.10 has known
    memory-safety bugs on crafted codes (CVE-2023-40889, CVE-2023-40890); prefer zxing.

    Args:
        scanner: an object with zbar-py's ``Scanner.scan(image)`` (tests pass a stand-in);
            default: a ``zbar.Scanner`` set up for QR only.

    Raises:
        ConfigError: zbar-py is not installed.
    """

    name = "zbar"

    def __init__(self, scanner: Any = None) -> None:
        if scanner is not None:
            self._scanner = scanner
            return
        try:
            import zbar
        except ImportError as err:
            raise ConfigError(f"decoder.backend = 'zbar' needs zbar-py, which is not importable ({err}); "
                              "install it with `pip install 'qrgate[zbar]'`, or use backend 'zxing'") from err
        config = [
            ("ZBAR_NONE", "ZBAR_CFG_ENABLE", 0),
            ("ZBAR_QRCODE", "ZBAR_CFG_ENABLE", 1),
            ("ZBAR_NONE", "ZBAR_CFG_POSITION", 0),
        ]
        try:
            self._scanner = zbar.Scanner(config)
        except Exception as err:
            raise ConfigError(f"decoder.backend = 'zbar': zbar-py could not create a scanner "
                              f"({type(err).__name__}: {err}); reinstall it or use backend 'zxing'") from err

    def decode(self, frame: Frame) -> list[DecodedCode]:
        """Return every QR symbol in the frame (empty list if none).

        Blocks for the decode only. Not thread-safe: one decoder per thread.

        Raises:
            DecodeError: the pixels are not a 2-D uint8 array, or zbar failed on them.
        """
        # zbar-py reads the buffer as C-contiguous rows; a stride-padded slice would be
        # transposed by zbar-py itself, so hand it a compact copy instead.
        pixels = np.ascontiguousarray(_grey_pixels(frame, self.name))
        try:
            symbols = self._scanner.scan(pixels)
        except Exception as err:  # the library's own failure, translated at the edge
            raise DecodeError(f"zbar failed on frame {frame.index} from {frame.origin or '?'}: "
                              f"{type(err).__name__}: {err}") from err
        codes = []
        for symbol in symbols:
            if symbol.type != "QR-Code":
                continue
            payload = bytes(symbol.data)
            codes.append(DecodedCode(payload=payload, text=_utf8_or_none(payload)))
        return codes


def _zxing_with_retry(retry: bool) -> RetryingDecoder:
    """qrgate's decoder: zxing-cpp, retried where it located a code it could not read; the
    retries use zbar-py too when it is installed, and zxing-cpp alone when it is not."""
    zbar: ZbarDecoder | None = None
    if retry:
        try:
            zbar = ZbarDecoder()
        except ConfigError:
            log.info("zbar-py is not installed; decoder retries use zxing-cpp only")
    return RetryingDecoder(ZxingDecoder(), zbar, retry=retry)


# Fixed table: config value -> factory(retry). Never built from a module name found in config.
DECODERS: dict[str, Callable[[bool], Any]] = {
    "zxing": _zxing_with_retry,
    "zbar": lambda retry: ZbarDecoder(),  # the retries are zxing-cpp's second chance; zbar has none
}


def make_decoder(backend: str, *, retry: bool = True) -> RetryingDecoder | ZbarDecoder:
    """Build the decoder named by ``decoder.backend``.

    Args:
        backend: ``"zxing"`` or ``"zbar"``.
        retry: ``decoder.retry``: with ``zxing``, retry located but unread symbols
            (``device.retry_decoder``); False gives exactly zxing-cpp's reads. No effect on ``zbar``.

    Raises:
        ConfigError: the name is unknown, or its library is not installed.
    """
    factory = DECODERS.get(backend)
    if factory is None:
        raise ConfigError(f"decoder.backend = {backend!r} is not one of {', '.join(map(repr, DECODERS))}; "
                          "use 'zxing' (default) or 'zbar'")
    return factory(retry)

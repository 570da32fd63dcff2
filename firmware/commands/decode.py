"""`qrgate decode`: read the QR codes in image files, one JSON line per image.

Technicians use it to check a printed or on-screen pass; tests use it on the sample photos.
Each line is ``{"file": ..., "codes": [{"text": ..., "bytes_b64": ..., "pass": ...}], "ms": ...}``
(``pass``: which decoder pass read the code, ``zxing`` for zxing-cpp on the full-size frame,
``zxing-half`` for the half-size search, ``retry-...`` for a second chance, ``zbar`` with
``--backend zbar``); an
image that cannot be read gives ``{"file": ..., "error": ...}`` and the exit status is 1
once every image has been tried. Payloads are printed because the operator asked for them;
nothing here is logged.
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from firmware.core.errors import DecodeError
from firmware.core.model import Frame

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("decode", help="decode the QR codes in image files (JSON lines)",
                       description="Decode every QR code in each image (PNG, JPEG, WebP; a folder means "
                       "its images in name order) and print one JSON line per image.")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image file or folder of images")
    p.add_argument("--backend", choices=("zxing", "zbar"), default="zxing",
                   help="decoder library (default: %(default)s)")
    p.add_argument("--no-retry", dest="retry", action="store_false",
                   help="zxing: no second chance on codes it located but could not read ([decoder] retry = false)")
    p.add_argument("--json", action="store_true",
                   help="JSON lines (the only output format; accepted so scripts can say so)")
    p.set_defaults(func=decode_command)


def expand_images(paths: list[str]) -> list[Path]:
    """Return the image paths to decode: files as given, folders expanded to their images by name."""
    from device.camera import list_image_files

    out: list[Path] = []
    for raw in paths:
        path = Path(raw)
        out.extend(list_image_files(path) if path.is_dir() else [path])
    return out


def decode_file(decoder: Any, path: Path) -> dict[str, Any]:
    """Decode one image file into the JSON-ready result line (never raises for a bad image)."""
    from device.camera import load_grey_image

    try:
        pixels = load_grey_image(path)
    except OSError as err:
        return {"file": str(path), "error": f"cannot read image: {err}"}
    frame = Frame(pixels=pixels, captured_mono_s=time.monotonic(), index=0, origin=path.name)
    start = time.perf_counter()
    try:
        with_passes = getattr(decoder, "decode_with_passes", None)
        if with_passes is not None:
            codes = with_passes(frame)
        else:
            codes = [(code, getattr(decoder, "name", "decoder")) for code in decoder.decode(frame)]
    except DecodeError as err:
        return {"file": str(path), "error": str(err)}
    ms = (time.perf_counter() - start) * 1000.0
    return {
        "file": str(path),
        "codes": [{"text": code.text, "bytes_b64": base64.b64encode(code.payload).decode("ascii"),
                   "pass": pass_name} for code, pass_name in codes],
        "ms": round(ms, 3),
    }


def decode_command(args: argparse.Namespace) -> int:
    from device.decoders import make_decoder

    decoder = make_decoder(args.backend, retry=args.retry)
    failed = 0
    for path in expand_images(args.images):
        line = decode_file(decoder, path)
        failed += "error" in line
        sys.stdout.write(json.dumps(line, ensure_ascii=False) + "\n")
        sys.stdout.flush()
    return 1 if failed else 0

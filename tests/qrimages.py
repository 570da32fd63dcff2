"""Test images of QR codes shaped like what the gate camera delivers.

A thin re-export of ``device.synthetic`` (the benchmarks and the demo use the same
renderer and cannot import ``tests/``). Every helper renders a normal QR code with
``segno.make_qr`` (never Micro QR), error level M, quiet zone 4, on a noisy mid-grey
frame shaped like a YUV420 Y plane (default 640x480), as a 2-D ``uint8`` numpy array.

Usage::

    from tests.qrimages import render_code_frame, write_code_png, write_blank_png, noise_frame

    pixels = render_code_frame("QG1:...")                     # numpy (480, 640) uint8
    write_code_png(tmp_path / "01-pass.png", b"\\xff\\x00")    # for dir:/file: sources
    write_blank_png(tmp_path / "02-blank.png")                # a frame with no code
"""

from device.synthetic import (  # noqa: F401  (re-exported for tests)
    BACKGROUND_GREY,
    DARK_GREY,
    LIGHT_GREY,
    code_modules,
    noise_frame,
    render_code_frame,
    write_blank_png,
    write_code_png,
)

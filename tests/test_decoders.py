"""Decoders: real photos from tests/data/qr-samples (shipped in the repository), odd content, and errors at the library edge."""

from __future__ import annotations

import re
from collections import namedtuple
from pathlib import Path

import numpy as np
import pytest
import segno
import zxingcpp

from device.camera import list_image_files, load_grey_image
from device.decoders import ZbarDecoder, ZxingDecoder, make_decoder
from firmware.core.errors import ConfigError, DecodeError
from firmware.core.model import DecodedCode, Frame
from tests.qrimages import noise_frame, render_code_frame

BACKENDS = ("zxing", "zbar")

# Images decoded to exactly the expected text, one upright decoder call each: at least the
# reference counts of tests/data/qr-samples (shipped in the repository)/README.md.
MIN_DECODED = {
    "zxing": {"qrcode-1": 8, "qrcode-2": 53, "qrcode-3": 18, "qrcode-4": 15, "qrcode-5": 16, "qrcode-6": 15},
    "zbar": {"qrcode-1": 8, "qrcode-2": 35, "qrcode-3": 17, "qrcode-4": 14, "qrcode-5": 12, "qrcode-6": 14},
}


@pytest.fixture(scope="module")
def decoders() -> dict[str, ZxingDecoder | ZbarDecoder]:
    return {name: make_decoder(name) for name in BACKENDS}


def frame_of(pixels: np.ndarray, origin: str = "test") -> Frame:
    return Frame(pixels=pixels, captured_mono_s=0.0, index=0, origin=origin)


def expected_text(image: Path) -> str | None:
    txt = image.with_suffix(".txt")
    # bytes, not read_text(): universal newlines would turn the samples' \r\n into \n
    return txt.read_bytes().decode("utf-8") if txt.exists() else None


def decoded_exactly(decoder, folder: Path) -> tuple[int, list[str]]:
    good, missed = 0, []
    for image in list_image_files(folder):
        want = expected_text(image)
        codes = decoder.decode(frame_of(load_grey_image(image), image.name))
        if want is not None and any(code.text == want for code in codes):
            good += 1
        else:
            missed.append(image.name)
    return good, missed


# --------------------------------------------------------------------------- real photos

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("folder", sorted(MIN_DECODED["zxing"]))
def test_decoder_reads_at_least_the_reference_count_of_sample_photos(decoders, samples_dir, backend, folder):
    good, missed = decoded_exactly(decoders[backend], samples_dir / folder)
    assert good >= MIN_DECODED[backend][folder], f"{backend} on {folder}: {good} decoded; missed {missed}"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("folder", ["falsepositives-1", "falsepositives-2"])
def test_decoder_finds_nothing_in_photos_without_a_code(decoders, samples_dir, backend, folder):
    found = {}
    images = list_image_files(samples_dir / folder)
    assert len(images) >= 20
    for image in images:
        codes = decoders[backend].decode(frame_of(load_grey_image(image), image.name))
        if codes:
            found[image.name] = [code.sha256[:12] for code in codes]
    assert found == {}


def test_zxing_reads_every_part_of_the_structured_append_sample_in_order(decoders, samples_dir):
    folder = samples_dir / "qrcode-7"
    parts = []
    for image in list_image_files(folder):
        codes = decoders["zxing"].decode(frame_of(load_grey_image(image), image.name))
        assert len(codes) == 1, image.name
        parts.append(codes[0].payload)
    assert len(parts) == 4
    # zxing-cpp's Python binding does not expose the sequence header; the parts come in file order
    assert b"".join(parts) == (folder / "01.txt").read_bytes()


# --------------------------------------------------------------------------- odd content

ODD_PAYLOADS = [
    pytest.param(b"\xff\x00\x80\x81binary\x00\x01", id="binary"),
    pytest.param(b"\xc3\x28\xa0\xa1 not utf-8", id="invalid-utf8"),
    pytest.param("QG1:6BFOXN*TS0BI$ZD-PHQ7I9AD66V5B22CH9M9ESI9XBHXK-%69LQOGI.*V76GCV4*XUA2P-FHT-HN",
                 id="qg1-like"),
    pytest.param("NGUYỄN ĐÌNH THẢO|0966323444", id="vietnamese"),
    pytest.param("x" * 1200, id="long"),
]


@pytest.mark.parametrize("payload", ODD_PAYLOADS)
def test_zxing_returns_the_exact_bytes_of_any_payload(decoders, payload):
    raw = payload if isinstance(payload, bytes) else payload.encode("utf-8")
    codes = decoders["zxing"].decode(frame_of(render_code_frame(payload)))
    assert codes == [DecodedCode(payload=raw, text=codes[0].text)]
    if isinstance(payload, str):
        assert codes[0].text == payload


@pytest.mark.parametrize("payload", ODD_PAYLOADS)
def test_zbar_reads_any_payload_without_raising(decoders, payload):
    codes = decoders["zbar"].decode(frame_of(render_code_frame(payload)))
    assert len(codes) == 1
    if isinstance(payload, str) and payload.isascii():
        assert codes[0].payload == payload.encode("ascii")


def test_zxing_reads_kanji_mode_as_shift_jis_bytes_with_unicode_text(decoders):
    qr = segno.make_qr("漢字テスト", mode="kanji")
    assert qr.mode == "kanji"
    codes = decoders["zxing"].decode(frame_of(render_code_frame("漢字テスト")))
    assert codes == [DecodedCode(payload="漢字テスト".encode("shift_jis"), text="漢字テスト")]


def test_kanji_does_not_crash_zbar(decoders):
    assert len(decoders["zbar"].decode(frame_of(render_code_frame("漢字テスト")))) == 1


@pytest.mark.parametrize("backend", BACKENDS)
def test_eci_payload_is_read(decoders, backend):
    qr = segno.make_qr("Grüße aus Hà Nội", encoding="utf-8", eci=True)
    pixels = _render_segno(qr)
    codes = decoders[backend].decode(frame_of(pixels))
    assert len(codes) == 1
    assert codes[0].text == "Grüße aus Hà Nội"


def _render_segno(qr, scale: int = 5, width: int = 640, height: int = 480) -> np.ndarray:
    rows = np.array([[bool(v) for v in row] for row in qr.matrix_iter(scale=1, border=4)])
    symbol = np.kron(np.where(rows, 30, 220), np.ones((scale, scale))).astype(np.uint8)
    frame = noise_frame(width, height, seed=5)
    top, left = (height - symbol.shape[0]) // 2, (width - symbol.shape[1]) // 2
    frame[top:top + symbol.shape[0], left:left + symbol.shape[1]] = symbol
    return frame


@pytest.mark.parametrize("backend", BACKENDS)
def test_several_codes_in_one_frame_are_all_returned(decoders, backend):
    left = render_code_frame("QG1:LEFT", width=320, height=480, seed=1)
    right = render_code_frame("QG1:RIGHT", width=320, height=480, seed=2)
    codes = decoders[backend].decode(frame_of(np.hstack([left, right])))
    assert sorted(code.payload for code in codes) == [b"QG1:LEFT", b"QG1:RIGHT"]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("seed", range(5))
def test_noise_frames_give_no_code(decoders, backend, seed):
    assert decoders[backend].decode(frame_of(noise_frame(640, 480, seed))) == []


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_stride_padded_y_plane_view_is_decoded(decoders, backend):
    # what a camera buffer looks like: rows padded to a stride, then sliced [:h, :w]
    pixels = render_code_frame("QG1:STRIDE", width=600, height=450)
    padded = np.full((450, 640), 255, dtype=np.uint8)
    padded[:, :600] = pixels
    view = padded[:, :600]
    assert not view.flags.c_contiguous
    assert decoders[backend].decode(frame_of(view)) == [DecodedCode(b"QG1:STRIDE", "QG1:STRIDE")]


def test_zxing_does_not_read_micro_qr(decoders):
    micro = segno.make_micro("12345")
    assert micro.is_micro
    assert decoders["zxing"].decode(frame_of(_render_segno(micro, scale=8))) == []


# --------------------------------------------------------------------------- options and errors

def read_barcodes_parameters() -> set[str]:
    # a nanobind function has no inspect.signature; its docstring starts with the signature
    head = zxingcpp.read_barcodes.__doc__.split(")", 1)[0]
    return set(re.findall(r"(\w+):", head.split("(", 1)[1]))


def test_zxing_option_names_are_those_of_the_installed_zxing_cpp():
    params = read_barcodes_parameters()
    assert {"image", "formats", "try_rotate", "try_downscale", "try_invert", "binarizer"} <= params
    decoder = ZxingDecoder()
    assert set(decoder.options) <= params, set(decoder.options) - params
    # zxing-cpp 3: QRCode is the family (Micro QR and rMQR included), so the two models are named
    assert decoder.options["formats"] == [zxingcpp.BarcodeFormat.QRCodeModel2,
                                          zxingcpp.BarcodeFormat.QRCodeModel1]
    family = list(zxingcpp.barcode_formats_list(zxingcpp.BarcodeFormat.QRCode))
    assert zxingcpp.BarcodeFormat.MicroQRCode in family


@pytest.mark.parametrize("binarizer", ZxingDecoder.BINARIZERS)
def test_every_zxing_binarizer_reads_a_clean_code(binarizer):
    decoder = ZxingDecoder(binarizer=binarizer, try_rotate=False, try_downscale=False, try_invert=False)
    assert decoder.decode(frame_of(render_code_frame("QG1:BIN"))) == [DecodedCode(b"QG1:BIN", "QG1:BIN")]


def test_zxing_reads_a_light_on_dark_code_only_with_try_invert():
    inverted = 255 - render_code_frame("QG1:DARKMODE")
    assert ZxingDecoder().decode(frame_of(inverted)) == [DecodedCode(b"QG1:DARKMODE", "QG1:DARKMODE")]
    assert ZxingDecoder(try_invert=False).decode(frame_of(inverted)) == []


def test_unknown_binarizer_is_a_config_error():
    with pytest.raises(ConfigError, match="'otsu' is not one of"):
        ZxingDecoder(binarizer="otsu")


def test_unknown_backend_is_a_config_error_naming_the_choices():
    with pytest.raises(ConfigError, match="decoder.backend = 'quirc'.*'zxing'"):
        make_decoder("quirc")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("pixels", [
    pytest.param(np.zeros((48, 64, 3), np.uint8), id="colour"),
    pytest.param(np.zeros((48, 64), np.float32), id="float"),
    pytest.param(np.zeros((0, 64), np.uint8), id="empty"),
    pytest.param([[0, 1], [1, 0]], id="list"),
])
def test_pixels_that_are_not_a_y_plane_raise_decode_error(decoders, backend, pixels):
    with pytest.raises(DecodeError, match=f"{backend}: frame 0 from test"):
        decoders[backend].decode(frame_of(pixels))


def test_a_zxing_library_failure_becomes_decode_error():
    too_tall = np.zeros((65_537, 1), dtype=np.uint8)  # zxing-cpp's ImageView limit is 65535
    with pytest.raises(DecodeError, match="zxing-cpp failed on frame 0 from test: ValueError"):
        ZxingDecoder().decode(frame_of(too_tall))


class CrashingScanner:
    """Stands in for a zbar scanner that fails on a crafted frame."""

    def __init__(self) -> None:
        self.frames_seen = 0

    def scan(self, image):
        self.frames_seen += 1
        raise OSError("zbar_scan_image returned -1")


def test_a_zbar_library_failure_becomes_decode_error():
    scanner = CrashingScanner()
    with pytest.raises(DecodeError, match="zbar failed on frame 0 from test: OSError"):
        ZbarDecoder(scanner=scanner).decode(frame_of(noise_frame(64, 48)))
    assert scanner.frames_seen == 1


def test_zbar_ignores_symbols_other_than_qr():
    Symbol = namedtuple("Symbol", "type data quality position")

    class MixedScanner:
        def scan(self, image):
            return [Symbol("EAN-13", b"4006381333931", 1, []), Symbol("QR-Code", b"QG1:X", 1, [])]

    assert ZbarDecoder(scanner=MixedScanner()).decode(frame_of(noise_frame(64, 48))) == [
        DecodedCode(b"QG1:X", "QG1:X")]

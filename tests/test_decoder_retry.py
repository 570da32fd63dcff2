"""qrgate's decoder (device/retry_decoder.py): zxing-cpp searching the frame at full and half size,
plus a second chance where it located a code it could not read. Real photos from
tests/data/qr-samples, real zxing-cpp and zbar-py."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from device.camera import list_image_files, load_grey_image
from device.decoders import ZbarDecoder, ZxingDecoder, make_decoder
from device.retry_decoder import HALF_SIZE_MIN_SIDE_PX, MAX_RETRIED_SYMBOLS, SEARCH_LAYERS, RetryingDecoder
from firmware.core.config import ConfigError, parse_config
from firmware.core.model import Frame
from tests.conftest import SAMPLES_DIR
from tests.qrimages import code_modules, noise_frame, render_code_frame

SAMPLE_FOLDERS = ("qrcode-1", "qrcode-2", "qrcode-3", "qrcode-4", "qrcode-5", "qrcode-6")
# A QR printed on rough stone (339x233 px): zxing-cpp with its defaults never locates it (its
# pyramid only downscales frames over 500 px), GlobalHistogram and zbar read it, and qrgate's
# half-size search reads it.
HALF_SIZE_ONLY = "qrcode-2/28.webp"
FIRST_PASS_CALLS = len(SEARCH_LAYERS)  # zxing-cpp calls on a frame with nothing to retry


def frame_of(pixels: np.ndarray, origin: str = "test") -> Frame:
    return Frame(pixels=pixels, captured_mono_s=0.0, index=0, origin=origin)


def sample_images(samples_dir: Path) -> list[tuple[str, np.ndarray, str]]:
    out = []
    for folder in SAMPLE_FOLDERS:
        for image in list_image_files(samples_dir / folder):
            txt = image.with_suffix(".txt")
            if txt.exists():  # bytes: the samples' \r\n must stay
                out.append((f"{folder}/{image.name}", load_grey_image(image), txt.read_bytes().decode("utf-8")))
    return out


def read_set(decoder, images) -> set[str]:
    return {name for name, pixels, want in images
            if any(code.text == want for code in decoder.decode(frame_of(pixels, name)))}


@pytest.fixture(scope="module")
def images() -> list[tuple[str, np.ndarray, str]]:
    if not SAMPLES_DIR.is_dir():
        pytest.fail(f"QR sample folder {SAMPLES_DIR} is missing; it ships in the repository")
    return sample_images(SAMPLES_DIR)


@pytest.fixture(scope="module")
def union_reads(images) -> dict[str, set[str]]:
    """What each single decoder reads: zxing-cpp with each binarizer, and zbar-py."""
    reads = {b: read_set(ZxingDecoder(binarizer=b), images) for b in ZxingDecoder.BINARIZERS}
    reads["zbar"] = read_set(ZbarDecoder(), images)
    return reads


# --------------------------------------------------------------------------- reads on real photos

def test_qrgate_reads_every_sample_photo_that_any_single_decoder_reads(images, union_reads):
    union = set().union(*union_reads.values())
    qrgate = read_set(make_decoder("zxing"), images)
    # the reference figures of tests/data/qr-samples/README.md, measured here again
    assert len(union_reads["local_average"]) == 125 and len(union) == 129
    assert union - qrgate == set(), sorted(union - qrgate)
    assert len(qrgate) >= len(union)
    assert len(qrgate) > max(len(reads) for reads in union_reads.values())


def test_the_half_size_search_reads_a_photo_zxing_cpp_never_locates(samples_dir):
    pixels = load_grey_image(samples_dir / HALF_SIZE_ONLY)
    want = (samples_dir / HALF_SIZE_ONLY).with_suffix(".txt").read_bytes().decode("utf-8")
    assert ZxingDecoder().read_symbols(frame_of(pixels), with_failures=True) == []
    assert [(code.text, p) for code, p in make_decoder("zxing").decode_with_passes(frame_of(pixels))] == [
        (want, "zxing-half")]


def test_every_code_zxing_located_and_any_decoder_reads_is_read(images, union_reads):
    union = set().union(*union_reads.values())
    zxing = ZxingDecoder()
    located = {name for name, pixels, _ in images
               if zxing.read_symbols(frame_of(pixels, name), with_failures=True)}
    qrgate = read_set(make_decoder("zxing"), images)
    assert (union & located) - qrgate == set()


def test_the_retries_say_which_pass_read_each_code(images):
    decoder = make_decoder("zxing")
    passes = {}
    for name, pixels, want in images:
        for code, pass_name in decoder.decode_with_passes(frame_of(pixels, name)):
            if code.text == want:
                passes[name] = pass_name
    retried = {name: p for name, p in passes.items() if p != "zxing"}
    assert retried == {HALF_SIZE_ONLY: "zxing-half",
                       "qrcode-4/09.webp": "retry-global-histogram",
                       "qrcode-4/14.webp": "retry-global-histogram",
                       "qrcode-4/08.webp": "retry-zbar"}


@pytest.mark.parametrize("zbar", [True, False], ids=["with-zbar", "without-zbar"])
@pytest.mark.parametrize("folder", ["falsepositives-1", "falsepositives-2"])
def test_no_false_detection_on_photos_without_a_code(samples_dir, folder, zbar):
    decoder = RetryingDecoder(ZxingDecoder(), ZbarDecoder() if zbar else None)
    found = {image.name: [c.sha256[:12] for c in codes] for image in list_image_files(samples_dir / folder)
             if (codes := decoder.decode(frame_of(load_grey_image(image), image.name)))}
    assert found == {}


@pytest.mark.parametrize("seed", range(4))
def test_noise_frames_give_no_code(seed):
    assert make_decoder("zxing").decode(frame_of(noise_frame(640, 480, seed))) == []


# --------------------------------------------------------------------------- retry = false, no zbar

def test_retry_false_reads_exactly_what_zxing_cpp_reads(images):
    plain, off = ZxingDecoder(), make_decoder("zxing", retry=False)
    for name, pixels, _ in images:
        assert off.decode(frame_of(pixels, name)) == plain.decode(frame_of(pixels, name)), name
    assert all(p == "zxing" for name, pixels, _ in images
               for _, p in off.decode_with_passes(frame_of(pixels, name)))


def test_without_zbar_the_zxing_retries_still_run(images, union_reads):
    decoder = RetryingDecoder(ZxingDecoder(), zbar=None)
    assert not decoder.has_zbar
    passes = set()
    reads = set()
    for name, pixels, want in images:
        for code, pass_name in decoder.decode_with_passes(frame_of(pixels, name)):
            passes.add(pass_name)
            if code.text == want:
                reads.add(name)
    assert not any("zbar" in p for p in passes)
    assert reads >= union_reads["local_average"] | {"qrcode-4/09.webp", "qrcode-4/14.webp", HALF_SIZE_ONLY}
    assert "qrcode-4/08.webp" not in reads  # only zbar on the crop reads this one


def test_without_zbar_installed_the_factory_still_gives_both_searches_and_the_zxing_retries(
        monkeypatch, samples_dir):
    monkeypatch.setitem(sys.modules, "zbar", None)  # `import zbar` now raises ImportError
    decoder = make_decoder("zxing")
    assert isinstance(decoder, RetryingDecoder) and decoder.retry and not decoder.has_zbar
    passes = {}
    for name in (HALF_SIZE_ONLY, "qrcode-4/09.webp"):
        want = (samples_dir / name).with_suffix(".txt").read_bytes().decode("utf-8")
        passes[name] = [p for code, p in decoder.decode_with_passes(frame_of(load_grey_image(samples_dir / name)))
                        if code.text == want]
    assert passes == {HALF_SIZE_ONLY: ["zxing-half"], "qrcode-4/09.webp": ["retry-global-histogram"]}


def test_the_factory_uses_zbar_for_retries_when_it_is_installed():
    decoder = make_decoder("zxing")
    assert isinstance(decoder, RetryingDecoder) and decoder.has_zbar and decoder.retry
    assert isinstance(make_decoder("zbar", retry=True), ZbarDecoder)


@pytest.mark.parametrize(("value", "want"), [(None, True), (True, True), (False, False)])
def test_decoder_retry_config_key_defaults_to_true(value, want):
    section = {} if value is None else {"retry": value}
    assert parse_config({"decoder": section}).decoder.retry is want


@pytest.mark.parametrize("value", ["yes", 1, "true"])
def test_decoder_retry_must_be_a_boolean(value):
    with pytest.raises(ConfigError) as info:
        parse_config({"decoder": {"retry": value}})
    assert info.value.problems == [f"decoder.retry = {value!r} must be true or false"]


# --------------------------------------------------------------------------- hostile frames

def damaged_code(data: str, seed: int, scale: int = 3, share: float = 0.3) -> np.ndarray:
    """A code whose finder patterns are intact and whose data modules are flipped at random:
    zxing-cpp locates it and fails its checksum."""
    modules = code_modules(data).copy()
    n = modules.shape[0]
    inner = slice(4 + 9, n - 4 - 9)
    modules[inner, inner] ^= np.random.default_rng(seed).uniform(size=modules[inner, inner].shape) < share
    return np.kron(np.where(modules, 35, 215), np.ones((scale, scale))).astype(np.uint8)


class CountingReader:
    """The real zxing-cpp adapter, counting its calls (to bound the work a frame can cause)."""

    def __init__(self) -> None:
        self.inner = ZxingDecoder()
        self.calls = 0

    def read_symbols(self, frame, **kwargs):
        self.calls += 1
        return self.inner.read_symbols(frame, **kwargs)


def test_a_frame_full_of_unreadable_codes_retries_at_most_three_of_them():
    tiles = [damaged_code(f"QG1:DAMAGED-{i}" + "X" * 60, seed=i) for i in range(12)]
    side = tiles[0].shape[0]
    frame = noise_frame(4 * side + 40, 3 * side + 30, seed=1)
    for i, tile in enumerate(tiles):
        row, col = divmod(i, 4)
        top, left = 10 + row * (side + 5), 10 + col * (side + 5)
        frame[top:top + side, left:left + side] = tile
    reader = CountingReader()
    assert len(reader.inner.read_symbols(frame_of(frame), with_failures=True)) > MAX_RETRIED_SYMBOLS
    decoder = RetryingDecoder(reader, ZbarDecoder())
    assert decoder.decode(frame_of(frame)) == []
    zxing_passes_per_symbol = 6  # two binarizers, upscaled, upscaled and sharpened, stretched, sharpened
    assert reader.calls <= FIRST_PASS_CALLS + MAX_RETRIED_SYMBOLS * zxing_passes_per_symbol


class SteppingClock:
    """A fake clock that moves on by step_s each time it is read."""

    def __init__(self, step_s: float) -> None:
        self.now_s, self.step_s = 0.0, step_s

    def __call__(self) -> float:
        self.now_s += self.step_s
        return self.now_s


def test_no_retry_pass_starts_once_the_frame_budget_is_spent(samples_dir):
    pixels = load_grey_image(samples_dir / "qrcode-4" / "08.webp")  # read only by the last pass, zbar
    roomy = RetryingDecoder(ZxingDecoder(), ZbarDecoder(), clock=SteppingClock(0.001), retry_budget_s=1.0)
    assert [p for _, p in roomy.decode_with_passes(frame_of(pixels))] == ["retry-zbar"]
    reader = CountingReader()
    tight = RetryingDecoder(reader, ZbarDecoder(), clock=SteppingClock(0.010), retry_budget_s=0.025)
    assert tight.decode(frame_of(pixels)) == []
    assert reader.calls == FIRST_PASS_CALLS + 2  # the two searches, then two retry passes before the budget ran out


def test_a_code_next_to_an_unreadable_one_is_returned_once():
    good = render_code_frame("QG1:GOOD", width=200, height=240, seed=3, scale=4)
    bad = np.full((240, 200), 128, dtype=np.uint8)
    tile = damaged_code("QG1:BAD-" + "Y" * 40, seed=9, scale=4)
    bad[(240 - tile.shape[0]) // 2:(240 - tile.shape[0]) // 2 + tile.shape[0], :tile.shape[1]] = tile
    codes = make_decoder("zxing").decode(frame_of(np.hstack([good, bad])))
    assert [code.payload for code in codes] == [b"QG1:GOOD"]


@pytest.mark.parametrize("corners", [
    ((0, 0), (0, 0), (0, 0), (0, 0)),
    ((-50, -50), (-40, -50), (-40, -40), (-50, -40)),
    ((5000, 5000), (6000, 5000), (6000, 6000), (5000, 6000)),
])
def test_odd_corners_from_the_library_give_no_crop_and_no_error(corners):
    from device.retry_decoder import _crop_around

    crop, module_px = _crop_around(np.zeros((480, 640), dtype=np.uint8), corners, None)
    assert crop is None and module_px == 0.0


# --------------------------------------------------------------------------- the two searches

def test_the_half_size_search_gives_corners_in_frame_pixels():
    pixels = render_code_frame("QG1:CORNERS", width=640, height=480, seed=4, scale=6)
    reader = ZxingDecoder()
    [full] = reader.read_symbols(frame_of(pixels))
    [half] = reader.read_symbols(frame_of(pixels), pixel_step=2)
    assert half.code == full.code
    assert np.abs(np.array(half.corners) - np.array(full.corners)).max() <= 3


@pytest.mark.parametrize("step", [0, 9, 1.5])
def test_a_pixel_step_out_of_range_is_refused(step):
    with pytest.raises(ValueError, match="pixel_step"):
        ZxingDecoder().read_symbols(frame_of(noise_frame(64, 64, 0)), pixel_step=step)


def test_a_code_both_searches_read_is_returned_once_by_the_full_size_search():
    pixels = render_code_frame("QG1:BOTH-SIZES", width=640, height=480, seed=5, scale=6)
    assert ZxingDecoder().read_symbols(frame_of(pixels), pixel_step=2) != []  # the half size reads it too
    assert [(code.payload, p) for code, p in make_decoder("zxing").decode_with_passes(frame_of(pixels))] == [
        (b"QG1:BOTH-SIZES", "zxing")]


def test_two_copies_of_one_code_are_both_returned_as_zxing_cpp_returns_them():
    tile = render_code_frame("QG1:TWICE", width=240, height=240, seed=6, scale=4)
    pixels = np.hstack([tile, np.full((240, 40), 128, dtype=np.uint8), tile])
    raw = ZxingDecoder().decode(frame_of(pixels))
    assert [c.payload for c in raw] == [b"QG1:TWICE"] * 2
    assert make_decoder("zxing").decode(frame_of(pixels)) == raw


def test_a_light_on_dark_code_is_read_by_the_full_size_search():
    inverted = 255 - render_code_frame("QG1:DARKMODE", scale=3)
    assert [(code.payload, p) for code, p in make_decoder("zxing").decode_with_passes(frame_of(inverted))] == [
        (b"QG1:DARKMODE", "zxing")]


def test_a_damaged_code_located_by_both_searches_is_retried_once():
    tile = damaged_code("QG1:DAMAGED-" + "Z" * 60, seed=2, scale=4)
    frame = noise_frame(tile.shape[1] + 80, tile.shape[0] + 80, seed=2)
    frame[40:40 + tile.shape[0], 40:40 + tile.shape[1]] = tile
    reader = CountingReader()
    for step in (1, 2):  # precondition: each search locates it and neither reads it
        symbols = reader.inner.read_symbols(frame_of(frame), with_failures=True, pixel_step=step,
                                            try_downscale=False)
        assert len(symbols) == 1 and symbols[0].code is None, step
    assert RetryingDecoder(reader, zbar=None).decode(frame_of(frame)) == []
    one_symbols_retries = 6  # two binarizers, upscaled, upscaled and sharpened, stretched, sharpened
    assert reader.calls == FIRST_PASS_CALLS + one_symbols_retries


def test_a_frame_too_small_for_a_half_size_symbol_gets_only_the_full_size_search():
    reader = CountingReader()
    RetryingDecoder(reader, zbar=None).decode(frame_of(noise_frame(400, HALF_SIZE_MIN_SIDE_PX - 1, seed=3)))
    assert reader.calls == 1
    RetryingDecoder(reader, zbar=None).decode(frame_of(noise_frame(400, HALF_SIZE_MIN_SIDE_PX, seed=3)))
    assert reader.calls == 1 + FIRST_PASS_CALLS

"""Image-file replay source: order, timing on a fake clock, end of input, blank frames, factory."""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from device.camera import Blank, ReplayFrames, list_image_files, load_grey_image, open_frame_source
from firmware.core.config import CameraConfig
from firmware.core.errors import CameraUnavailable, ConfigError
from tests.conftest import FakeClock
from tests.qrimages import render_code_frame, write_blank_png, write_code_png


class FakeWait:
    """A wait function for ReplayFrames that moves a FakeClock instead of sleeping."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> bool:
        self.waits.append(round(seconds, 9))
        self.clock.advance(seconds)
        return False


def read_all(source: ReplayFrames, timeout_s: float = 1.0) -> list:
    frames = []
    while True:
        try:
            frame = source.read(timeout_s)
        except EOFError:
            return frames
        if frame is not None:
            frames.append(frame)


@pytest.fixture
def image_dir(tmp_path: Path) -> Path:
    write_code_png(tmp_path / "02-second.png", "QG1:SECOND", width=320, height=240)
    write_code_png(tmp_path / "01-first.png", "QG1:FIRST")
    write_blank_png(tmp_path / "03-blank.jpg", width=100, height=80)
    (tmp_path / "01-first.txt").write_text("QG1:FIRST")
    (tmp_path / "notes.md").write_text("not an image")
    return tmp_path


def test_dir_source_replays_images_in_name_order_skipping_other_files(image_dir, fake_clock):
    source = ReplayFrames.from_source(f"dir:{image_dir}", frames_per_image=2, as_fast_as_possible=True,
                                      clock=fake_clock)
    frames = read_all(source)
    assert [(f.index, f.origin, f.pixels.shape) for f in frames] == [
        (0, "01-first.png", (480, 640)), (1, "01-first.png", (480, 640)),
        (2, "02-second.png", (240, 320)), (3, "02-second.png", (240, 320)),
        (4, "03-blank.jpg", (80, 100)), (5, "03-blank.jpg", (80, 100)),
    ]
    assert all(f.pixels.dtype == np.uint8 and f.pixels.ndim == 2 for f in frames)


def test_each_image_is_decoded_once_and_shared_read_only(image_dir, fake_clock):
    source = ReplayFrames.from_source(f"dir:{image_dir}", frames_per_image=3, as_fast_as_possible=True,
                                      clock=fake_clock)
    frames = read_all(source)
    assert frames[0].pixels is frames[1].pixels is frames[2].pixels
    assert not frames[0].pixels.flags.writeable
    assert np.array_equal(frames[0].pixels, load_grey_image(image_dir / "01-first.png"))


def test_frames_come_one_period_apart_on_the_fake_clock(fake_clock):
    wait = FakeWait(fake_clock)
    start = fake_clock.monotonic()
    source = ReplayFrames([render_code_frame("A"), render_code_frame("B")], fps=10.0, frames_per_image=2,
                          clock=fake_clock, wait=wait)
    frames = read_all(source)
    assert [round(f.captured_mono_s - start, 6) for f in frames] == [0.0, 0.1, 0.2, 0.3]
    assert wait.waits == [0.1, 0.1, 0.1]


def test_read_returns_none_when_the_next_frame_is_not_due_within_the_timeout(fake_clock):
    wait = FakeWait(fake_clock)
    source = ReplayFrames([render_code_frame("A")], fps=2.0, frames_per_image=2, clock=fake_clock, wait=wait)
    first = source.read(0.1)
    assert first is not None and first.index == 0
    assert source.read(0.1) is None  # the next frame is due 0.5 s later
    assert source.read(0.1) is None
    second = source.read(0.4)  # now 0.3 s remain, within the timeout
    assert second is not None and second.index == 1
    assert wait.waits == [0.1, 0.1, 0.3]
    with pytest.raises(EOFError):
        source.read(0.1)


def test_a_slow_reader_slows_the_replay_without_losing_frames(fake_clock):
    wait = FakeWait(fake_clock)
    source = ReplayFrames([render_code_frame("A")], fps=10.0, frames_per_image=3, clock=fake_clock, wait=wait)
    t0 = source.read(1.0).captured_mono_s
    fake_clock.advance(0.35)  # the reader spent 350 ms on the first frame
    t1 = source.read(1.0).captured_mono_s
    t2 = source.read(1.0).captured_mono_s
    assert [round(t - t0, 6) for t in (t1, t2)] == [0.35, 0.45]
    assert wait.waits == [0.1]


def test_as_fast_as_possible_never_waits(fake_clock):
    wait = FakeWait(fake_clock)
    source = ReplayFrames([render_code_frame("A")], fps=1.0, frames_per_image=50, as_fast_as_possible=True,
                          clock=fake_clock, wait=wait)
    assert len(read_all(source)) == 50
    assert wait.waits == []


def test_flush_next_on_a_replay_changes_nothing(fake_clock):
    source = ReplayFrames([render_code_frame("A"), Blank()], as_fast_as_possible=True, clock=fake_clock)
    source.flush_next()
    assert [f.index for f in read_all(source)] == [0, 1]


def test_end_of_input_raises_eof_on_every_later_read(fake_clock):
    source = ReplayFrames([render_code_frame("A")], as_fast_as_possible=True, clock=fake_clock)
    assert source.read(0.1) is not None
    assert source.remaining == 0
    for _ in range(3):
        with pytest.raises(EOFError, match="after 1 frames"):
            source.read(0.1)


def test_blank_frames_between_images_take_the_size_of_the_image_before(fake_clock):
    small = render_code_frame("S", width=320, height=240)
    large = render_code_frame("L", width=1280, height=720)
    source = ReplayFrames([small, large], blank_frames_between=2, as_fast_as_possible=True, clock=fake_clock)
    frames = read_all(source)
    assert [(f.origin, f.pixels.shape) for f in frames] == [
        ("array", (240, 320)), ("blank", (240, 320)), ("blank", (240, 320)),
        ("array", (720, 1280)), ("blank", (720, 1280)), ("blank", (720, 1280)),
    ]
    assert all((f.pixels == 128).all() for f in frames if f.origin == "blank")


def test_blank_placeholder_of_any_size(fake_clock):
    source = ReplayFrames([Blank(), Blank(width=33, height=17)], frames_per_image=1, as_fast_as_possible=True,
                          clock=fake_clock)
    assert [f.pixels.shape for f in read_all(source)] == [(480, 640), (17, 33)]


def test_repeat_plays_the_list_again(fake_clock):
    source = ReplayFrames([render_code_frame("A"), Blank()], repeat=3, as_fast_as_possible=True,
                          clock=fake_clock)
    assert [f.origin for f in read_all(source)] == ["array", "blank"] * 3
    assert source.frame_count == 6


def test_the_callers_array_is_not_frozen(fake_clock):
    pixels = render_code_frame("A")
    source = ReplayFrames([pixels], as_fast_as_possible=True, clock=fake_clock)
    source.read(0.1)
    assert pixels.flags.writeable


class ProbedEvent(threading.Event):
    """A stop event that also tells the test when someone starts waiting on it."""

    def __init__(self) -> None:
        super().__init__()
        self.waiting = threading.Event()

    def wait(self, timeout: float | None = None) -> bool:
        self.waiting.set()
        return super().wait(timeout)


def test_close_wakes_a_waiting_read_and_later_reads_fail():
    stop = ProbedEvent()
    source = ReplayFrames([render_code_frame("A")], fps=0.5, frames_per_image=2, stop_event=stop)
    assert source.read(1.0) is not None
    result: list = []
    reader = threading.Thread(target=lambda: result.append(source.read(30.0)), name="test-replay-reader")
    reader.start()
    assert stop.waiting.wait(5.0)
    source.close()
    reader.join(timeout=5.0)
    assert not reader.is_alive()
    assert result == [None]
    with pytest.raises(CameraUnavailable, match="closed"):
        source.read(0.1)
    source.close()


def test_file_source_replays_one_image(image_dir, fake_clock):
    source = ReplayFrames.from_source(f"file:{image_dir / '02-second.png'}", frames_per_image=4,
                                      as_fast_as_possible=True, clock=fake_clock)
    assert [f.origin for f in read_all(source)] == ["02-second.png"] * 4


def test_a_transparent_png_is_laid_on_white(tmp_path):
    from PIL import Image

    rgba = np.zeros((10, 10, 4), dtype=np.uint8)
    rgba[2:5, 2:5] = (0, 0, 0, 255)
    Image.fromarray(rgba).save(tmp_path / "t.png")
    grey = load_grey_image(tmp_path / "t.png")
    assert grey[0, 0] == 255 and grey[3, 3] == 0


@pytest.mark.parametrize(("source", "message"), [
    ("dir:{tmp}/missing", "is not a directory"),
    ("dir:{tmp}/empty", "holds no PNG, JPEG or WebP image"),
    ("file:{tmp}/missing.png", "is not a file"),
    ("file:{tmp}/broken.png", "broken.png"),
])
def test_bad_replay_paths_are_config_errors(tmp_path, source, message):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("x")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ConfigError, match=message):
        ReplayFrames.from_source(source.format(tmp=tmp_path))


@pytest.mark.parametrize("options", [{"fps": 0}, {"frames_per_image": 0}, {"repeat": 0},
                                     {"blank_frames_between": -1}])
def test_bad_replay_options_are_config_errors(options):
    with pytest.raises(ConfigError):
        ReplayFrames([render_code_frame("A")], **options)


def test_factory_resolves_relative_dir_against_the_config_dir(image_dir, fake_clock):
    config = replace(CameraConfig(), source=f"dir:{image_dir.name}", fps=5.0, frames_per_image=2,
                     as_fast_as_possible=True)
    source = open_frame_source(config, image_dir.parent, clock=fake_clock)
    assert isinstance(source, ReplayFrames)
    assert source.frame_count == 2 * len(list_image_files(image_dir))


@pytest.mark.parametrize("source", ["gstreamer:0", "firmware.commands.run", "", "v4l2:video0"])
def test_factory_refuses_unknown_sources(source):
    with pytest.raises(ConfigError, match="camera.source"):
        open_frame_source(replace(CameraConfig(), source=source), ".")

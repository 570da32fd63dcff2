"""PicameraFrames against a stand-in that behaves like Picamera2 (stride padding, request release)."""

from __future__ import annotations

import contextlib
from collections import deque

import numpy as np
import pytest

from device.camera import PicameraFrames
from device.decoders import ZxingDecoder
from firmware.core.errors import CameraUnavailable
from tests.conftest import FakeClock
from tests.qrimages import noise_frame, render_code_frame

PAD_BYTE = 0xEE
CHROMA_BYTE = 0x80


class FakeRequest:
    """A completed request holding one YUV420 buffer. Scribbles on it when released, as reuse would."""

    def __init__(self, camera: FakePicamera2, buffer: np.ndarray) -> None:
        self.camera = camera
        self.buffer = buffer
        self.released = False

    def make_buffer(self, name: str) -> np.ndarray:
        assert name == "lores", name
        assert not self.released, "buffer used after release"
        return self.buffer

    def release(self) -> None:
        assert not self.released, "request released twice"
        self.released = True
        self.buffer[:] = 0  # libcamera reuses the memory for a later frame
        self.camera.outstanding -= 1


class FakePicamera2:
    """Behaves like picamera2.Picamera2 for the calls PicameraFrames makes.

    configure() rounds the lores size down to even numbers and pads rows to a multiple of
    64 bytes, as the Pi ISP does. Each captured request carries the next queued Y image
    in a stride-padded YUV420 buffer; an empty queue behaves like a timed-out wait.
    """

    def __init__(self, camera_num: int = 0, *, autofocus: bool = True, open_error: Exception | None = None,
                 configure_error: Exception | None = None, capture_error: Exception | None = None) -> None:
        if open_error is not None:
            raise open_error
        self.camera_num = camera_num
        self.camera_controls = {"ExposureTime": (1, 66666, None), "FrameRate": (1.0, 120.0, None)}
        if autofocus:
            self.camera_controls |= {"AfMode": (0, 2, 0), "LensPosition": (0.0, 32.0, 1.0)}
        self.configure_error = configure_error
        self.capture_error = capture_error
        self.frames: deque[np.ndarray] = deque()
        self.config: dict | None = None
        self.controls: dict = {}
        self.started = False
        self.calls: list[str] = []
        self.captures: list[tuple[float, object]] = []  # (wait, flush)
        self.outstanding = 0
        self.released_total = 0
        self.cancellations = 0

    def create_video_configuration(self, main=None, lores=None, controls=None, buffer_count=6, **others):
        return {"main": dict(main or {}), "lores": dict(lores) if lores else None,
                "controls": dict(controls or {}), "buffer_count": buffer_count, **others}

    def configure(self, config: dict) -> None:
        self.calls.append("configure")
        if self.configure_error is not None:
            raise self.configure_error
        lores = config["lores"]
        assert lores["format"] == "YUV420"
        width, height = lores["size"]
        assert (width, height) <= tuple(config["main"]["size"]), "lores may not exceed main"
        width, height = width & ~1, height & ~1
        stride = (width + 63) // 64 * 64
        self.config = config | {"lores": {"size": (width, height), "stride": stride, "format": "YUV420"}}

    def camera_configuration(self) -> dict:
        assert self.config is not None, "not configured"
        return self.config

    def set_controls(self, controls: dict) -> None:
        self.controls.update(controls)

    def start(self) -> None:
        self.calls.append("start")
        self.started = True

    def stop(self) -> None:
        self.calls.append("stop")
        self.started = False

    def close(self) -> None:
        self.calls.append("close")

    def cancel_all_and_flush(self) -> None:
        self.cancellations += 1

    def queue(self, y_plane: np.ndarray) -> None:
        self.frames.append(y_plane)

    def _buffer_for(self, y_plane: np.ndarray) -> np.ndarray:
        lores = self.config["lores"]
        (width, height), stride = lores["size"], lores["stride"]
        assert y_plane.shape == (height, width)
        padded = np.full((height * 3 // 2, stride), CHROMA_BYTE, dtype=np.uint8)
        padded[:height, :] = PAD_BYTE
        padded[:height, :width] = y_plane
        return padded.reshape(-1)

    @contextlib.contextmanager
    def captured_request(self, wait=None, flush=None):
        assert self.started, "capture before start()"
        assert isinstance(wait, float) and wait > 0, f"wait must be a positive timeout, got {wait!r}"
        self.captures.append((wait, flush))
        if self.capture_error is not None:
            raise self.capture_error
        if not self.frames:
            raise TimeoutError
        request = FakeRequest(self, self._buffer_for(self.frames.popleft()))
        self.outstanding += 1
        try:
            yield request
        finally:
            request.release()
            self.released_total += 1


def open_frames(fake: FakePicamera2, **options) -> PicameraFrames:
    clock = options.pop("clock", FakeClock())
    return PicameraFrames(picamera2_factory=lambda num: fake, clock=clock, **options)


def test_frames_are_the_y_plane_sliced_out_of_the_stride_padded_buffer():
    fake = FakePicamera2()
    frames = open_frames(fake, width=600, height=450, fps=20.0)
    assert (frames.width, frames.height, frames.stride) == (600, 450, 640)
    images = [render_code_frame("QG1:PI", width=600, height=450, seed=s) for s in range(3)]
    for image in images:
        fake.queue(image)
    got = [frames.read(0.5) for _ in images]
    assert [f.index for f in got] == [0, 1, 2]
    for frame, image in zip(got, images, strict=True):
        assert frame.pixels.shape == (450, 600) and frame.pixels.dtype == np.uint8
        assert frame.pixels.flags.c_contiguous
        # equal even though the request buffer was zeroed on release: the plane was copied
        assert np.array_equal(frame.pixels, image)
    assert (fake.outstanding, fake.released_total) == (0, 3)
    assert fake.config["controls"] == {"FrameRate": 20.0}
    assert fake.config["lores"]["format"] == "YUV420"


def test_the_real_size_after_configure_is_used():
    fake = FakePicamera2()
    frames = open_frames(fake, width=641, height=481)
    assert (frames.width, frames.height, frames.stride) == (640, 480, 640)
    assert fake.config["main"] == {"size": (641, 481), "format": "YUV420"}  # unused: the cheapest format
    fake.queue(noise_frame(640, 480))
    assert frames.read(0.5).pixels.shape == (480, 640)


def test_a_frame_from_the_camera_decodes():
    fake = FakePicamera2()
    frames = open_frames(fake, width=600, height=450)
    fake.queue(render_code_frame("QG1:THROUGH-THE-CAMERA", width=600, height=450))
    frame = frames.read(0.5)
    assert [c.payload for c in ZxingDecoder().decode(frame)] == [b"QG1:THROUGH-THE-CAMERA"]


def test_frames_are_stamped_with_the_injected_clock_when_the_request_returns():
    fake = FakePicamera2()
    clock = FakeClock(mono_s=500.0)
    frames = open_frames(fake, clock=clock)
    fake.queue(noise_frame())
    assert frames.read(0.5).captured_mono_s == 500.0


def test_manual_focus_is_set_when_the_camera_has_autofocus():
    fake = FakePicamera2(autofocus=True)
    open_frames(fake, lens_position=4.0)
    assert fake.controls == {"AfMode": 0, "LensPosition": 4.0}


@pytest.mark.parametrize(("autofocus", "lens_position"), [(True, -1.0), (False, 4.0), (False, -1.0)])
def test_focus_is_left_alone_without_autofocus_or_lens_position(autofocus, lens_position):
    fake = FakePicamera2(autofocus=autofocus)
    open_frames(fake, lens_position=lens_position)
    assert fake.controls == {}


def test_flush_next_asks_for_a_fresh_frame_once():
    fake = FakePicamera2()
    frames = open_frames(fake)
    for seed in range(3):
        fake.queue(noise_frame(seed=seed))
    frames.read(0.5)
    frames.flush_next()
    frames.read(0.5)
    frames.read(0.5)
    assert [flush for _, flush in fake.captures] == [None, True, None]


def test_a_timed_out_capture_returns_none_and_cancels_the_pending_job():
    fake = FakePicamera2()
    frames = open_frames(fake)
    assert frames.read(0.25) is None
    assert fake.captures == [(0.25, None)]
    assert (fake.cancellations, fake.outstanding) == (1, 0)


def test_a_zero_timeout_still_gives_picamera2_a_positive_wait():
    fake = FakePicamera2()
    frames = open_frames(fake)
    fake.queue(noise_frame())
    assert frames.read(0.0) is not None
    assert fake.captures == [(0.001, None)]


def test_a_busy_camera_says_to_stop_the_service():
    def busy(num):
        error = RuntimeError("Failed to acquire camera: Device or resource busy")
        return FakePicamera2(num, open_error=error)

    with pytest.raises(CameraUnavailable, match=r"camera 0 is busy .*stop the qrgate service"):
        PicameraFrames(picamera2_factory=busy)


def test_no_camera_says_to_check_the_cable():
    def missing(num):
        return FakePicamera2(num, open_error=IndexError("list index out of range"))

    with pytest.raises(CameraUnavailable, match="no camera 0 found .*ribbon cable"):
        PicameraFrames(picamera2_factory=missing)


def test_a_refused_configuration_closes_the_camera_and_explains():
    fake = FakePicamera2(configure_error=RuntimeError("Failed to configure the camera"))
    with pytest.raises(CameraUnavailable, match="refused a 640x480 YUV420 lores stream"):
        open_frames(fake)
    assert fake.calls == ["configure", "stop", "close"]


def test_a_failing_capture_becomes_camera_unavailable():
    fake = FakePicamera2(capture_error=RuntimeError("Camera frontend has timed out!"))
    frames = open_frames(fake)
    with pytest.raises(CameraUnavailable, match="stopped delivering frames .*timed out"):
        frames.read(0.5)


def test_close_stops_and_closes_once():
    fake = FakePicamera2()
    frames = open_frames(fake)
    frames.close()
    frames.close()
    assert fake.calls == ["configure", "start", "stop", "close"]
    with pytest.raises(CameraUnavailable, match="closed"):
        frames.read(0.1)


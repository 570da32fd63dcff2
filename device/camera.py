"""Frame sources behind the ``FrameSource`` port: the Pi camera, image-file replay, a USB webcam.

Every source yields ``Frame`` objects whose ``pixels`` are a 2-D ``uint8`` greyscale
array (the Y plane), stamped with the monotonic time of capture.

- ``PicameraFrames`` (``picamera2``): a YUV420 ``lores`` stream from the Pi camera.
- ``ReplayFrames`` (``dir:PATH``, ``file:PATH``): image files replayed as a camera, for
  tests, the demo and the benchmarks.
- ``V4l2Frames`` (``v4l2:N``): a USB webcam through OpenCV, an optional extra.

``open_frame_source`` picks one from a fixed table by the prefix of ``camera.source``.
Each hardware library is imported inside its adapter, so this module imports on any PC.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from firmware.core.errors import CameraUnavailable, ConfigError
from firmware.core.model import Frame

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
BLANK_GREY = 128


class MonotonicClock(Protocol):
    """Anything with ``monotonic()`` in seconds (``firmware.ports.Clock`` fits)."""

    def monotonic(self) -> float: ...


class _SystemClock:
    def monotonic(self) -> float:
        return time.monotonic()


# --------------------------------------------------------------------------- images

def load_grey_image(path: str | Path) -> np.ndarray:
    """Read an image file (PNG, JPEG, WebP...) as a 2-D ``uint8`` greyscale array.

    Transparent pixels are laid on white first, as a printed or on-screen code would be
    seen (a transparent background would otherwise turn black and hide the code).

    Raises:
        OSError: the file cannot be read or is not an image Pillow understands.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.load()
            if "A" in image.getbands() or "transparency" in image.info:
                rgba = image.convert("RGBA")
                white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                image = Image.alpha_composite(white, rgba)
            grey = np.asarray(image.convert("L"), dtype=np.uint8)
    except UnidentifiedImageError as err:
        raise OSError(f"{path} is not an image Pillow can read ({err})") from err
    except (Image.DecompressionBombError, ValueError, SyntaxError, EOFError) as err:
        # a damaged or hostile file: report it like any unreadable file
        raise OSError(f"{path} cannot be read as an image ({err})") from err
    return np.ascontiguousarray(grey)


def list_image_files(folder: str | Path) -> list[Path]:
    """Return the PNG, JPEG and WebP files directly in folder, sorted by name.

    Other files (``.txt`` expectations beside sample images, for instance) are skipped.
    """
    return sorted(p for p in Path(folder).iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


@dataclass(frozen=True)
class Blank:
    """A placeholder for a blank frame (no code) in a replay list.

    Attributes:
        width: frame width in pixels; 0 means "the size of the image before it" (640 if none).
        height: frame height in pixels; 0 as for width.
    """

    width: int = 0
    height: int = 0


# --------------------------------------------------------------------------- replay

class ReplayFrames:
    """Replays images as a camera would deliver them: each for a number of frames, at an fps.

    Every image is decoded to greyscale once, when the source is built (so a bad file fails
    at start-up), and the same read-only array is handed out for each of its frames. After
    the last frame every ``read`` raises ``EOFError``.

    Timing: frame *k* is due one frame period after frame *k-1* was delivered, so a slow
    reader slows the replay down instead of losing frames; each image really is seen
    ``frames_per_image`` times, which keeps tests deterministic. ``read`` waits for the due
    time on a ``threading.Event`` (``close()`` wakes it) and never busy-loops; if the next
    frame is not due within ``timeout_s`` it waits ``timeout_s`` and returns None. With
    ``as_fast_as_possible`` frames are delivered at once (benchmarks).

    Args:
        images: paths of image files, numpy 2-D uint8 arrays, or ``Blank()`` placeholders,
            in replay order. Images may have any size.
        fps: frames per second (> 0).
        frames_per_image: consecutive frames that show each image (>= 1).
        blank_frames_between: blank frames (uniform grey, the size of the image before)
            inserted after each image, so a code can leave the view and come back.
        repeat: how many times to play the whole list (>= 1).
        as_fast_as_possible: ignore fps and never wait.
        clock: something with ``monotonic()`` (default: ``time.monotonic``). Frames are
            stamped with it.
        wait: ``wait(seconds) -> bool`` used to wait for a due frame; returning True means
            "stop waiting, the source is closing". Default: ``stop_event.wait``.
            Tests pass a function that advances a fake clock.
        stop_event: the event ``close()`` sets (default: a new ``threading.Event``); a
            service may pass its own stop event so a shutdown also ends a replay wait
            (a read after it is set raises ``CameraUnavailable``).
        origin: a name for logs (default: the file name of each image).

    Raises:
        ConfigError: the list is empty, a value is out of range, or an image cannot be read.
    """

    live = False  # images repeat on purpose

    def __init__(self, images: Iterable[str | Path | np.ndarray | Blank], *, fps: float = 15.0,
                 frames_per_image: int = 1, blank_frames_between: int = 0, repeat: int = 1,
                 as_fast_as_possible: bool = False, clock: MonotonicClock | None = None,
                 wait: Callable[[float], bool] | None = None, origin: str = "",
                 stop_event: threading.Event | None = None, allow_empty: bool = False) -> None:
        problems = []
        self._allow_empty = allow_empty
        if not fps > 0:
            problems.append(f"replay fps {fps!r} must be above 0, for example 15")
        if frames_per_image < 1:
            problems.append(f"replay frames_per_image {frames_per_image!r} must be at least 1")
        if blank_frames_between < 0:
            problems.append(f"replay blank_frames_between {blank_frames_between!r} must be 0 or more")
        if repeat < 1:
            problems.append(f"replay repeat {repeat!r} must be at least 1")
        if problems:
            raise ConfigError(problems)
        self._closed = stop_event or threading.Event()
        self._clock = clock or _SystemClock()
        self._wait = wait or self._closed.wait
        self._period_s = 1.0 / fps
        self._fast = as_fast_as_possible
        items = list(images)
        if not items and not allow_empty:
            raise ConfigError("replay source has no images; give at least one image file or array")
        self._plan = self._build_plan(items, frames_per_image, blank_frames_between, origin) * repeat
        self._next = 0
        self._next_due_s: float | None = None

    @classmethod
    def from_source(cls, source: str, **options: Any) -> ReplayFrames:
        """Build a replay from a ``dir:PATH`` or ``file:PATH`` source string.

        Raises:
            ConfigError: the path does not exist, holds no image, or an image is unreadable.
        """
        kind, _, raw_path = source.partition(":")
        path = Path(raw_path).expanduser()
        if kind == "dir":
            if not path.is_dir():
                raise ConfigError(f"camera.source = {source!r}: {path} is not a directory; "
                                  "give a folder of PNG/JPEG/WebP images")
            files = list_image_files(path)
            if not files and not options.get("allow_empty"):
                raise ConfigError(f"camera.source = {source!r}: {path} holds no PNG, JPEG or WebP image")
            return cls(files, **options)
        if kind == "file":
            if not path.is_file():
                raise ConfigError(f"camera.source = {source!r}: {path} is not a file; "
                                  "give the path of one PNG/JPEG/WebP image")
            return cls([path], **options)
        raise ConfigError(f"camera.source = {source!r} is not a replay source; use dir:PATH or file:PATH")

    @staticmethod
    def _build_plan(items: Sequence[Any], frames_per_image: int, blanks: int,
                    origin: str) -> list[tuple[np.ndarray, str]]:
        plan: list[tuple[np.ndarray, str]] = []
        problems: list[str] = []
        blank_cache: dict[tuple[int, int], np.ndarray] = {}
        last_shape = (480, 640)

        def blank(shape: tuple[int, int]) -> np.ndarray:
            if shape not in blank_cache:
                arr = np.full(shape, BLANK_GREY, dtype=np.uint8)
                arr.flags.writeable = False
                blank_cache[shape] = arr
            return blank_cache[shape]

        for item in items:
            if isinstance(item, Blank):
                shape = (item.height or last_shape[0], item.width or last_shape[1])
                plan.extend([(blank(shape), origin or "blank")] * frames_per_image)
                continue
            if isinstance(item, np.ndarray):
                if item.ndim != 2 or item.dtype != np.uint8:
                    problems.append(f"replay array #{len(plan)} has shape {item.shape} and dtype "
                                    f"{item.dtype}; "
                                    "give a 2-D uint8 greyscale array")
                    continue
                pixels, name = np.ascontiguousarray(item), origin or "array"
            else:
                try:
                    pixels, name = load_grey_image(item), origin or Path(item).name
                except OSError as err:
                    problems.append(f"replay image {item}: {err}")
                    continue
            if pixels is item:
                pixels = pixels.copy()
            pixels.flags.writeable = False  # shared by all its frames: nobody may scribble on it
            last_shape = pixels.shape
            plan.extend([(pixels, name)] * frames_per_image)
            plan.extend([(blank(last_shape), "blank")] * blanks)
        if problems:
            raise ConfigError(problems)
        if not plan and not items:
            return plan  # an empty folder the caller accepts (allow_empty): the source ends at once
        if not plan:
            raise ConfigError("replay source has no images; give at least one image file or array")
        return plan

    @property
    def frame_count(self) -> int:
        """Total number of frames this source will deliver."""
        return len(self._plan)

    @property
    def remaining(self) -> int:
        """Frames not delivered yet."""
        return len(self._plan) - self._next

    def read(self, timeout_s: float) -> Frame | None:
        """Return the next frame, or None if it is not due within timeout_s.

        Blocks at most timeout_s, waiting on an event (never spinning).

        Raises:
            EOFError: every frame has been delivered.
            CameraUnavailable: the source was closed.
        """
        if self._closed.is_set():
            raise CameraUnavailable("the replay source is closed")
        if self._next >= len(self._plan):
            raise EOFError(f"replay source finished after {len(self._plan)} frames")
        now_s = self._clock.monotonic()
        if not self._fast:
            if self._next_due_s is None:
                self._next_due_s = now_s  # the first frame is due at once
            delay_s = self._next_due_s - now_s
            if delay_s > timeout_s:
                self._wait(max(0.0, timeout_s))
                return None
            if delay_s > 0:
                if self._wait(delay_s):
                    return None  # closing
                now_s = self._clock.monotonic()
            self._next_due_s = max(now_s, self._next_due_s) + self._period_s
        pixels, name = self._plan[self._next]
        frame = Frame(pixels=pixels, captured_mono_s=now_s, index=self._next, origin=name)
        self._next += 1
        return frame

    def flush_next(self) -> None:
        """Nothing to do: a replayed frame is never stale. Present so every source can be flushed."""

    def close(self) -> None:
        """Stop the replay and wake a waiting ``read``. Safe to call twice."""
        self._closed.set()


# --------------------------------------------------------------------------- picamera2

class PicameraFrames:
    """The Pi camera through picamera2: the Y plane of a YUV420 ``lores`` stream.

    The camera is opened, configured and started in the constructor, so bad settings fail
    at start-up. After ``configure()`` the real size and row stride of the stream are read
    back (the ISP may round the size and pads each row), and every frame is the Y plane
    sliced ``[:height, :width]`` out of the stride-padded buffer and copied, so the camera
    buffer goes back to libcamera at once: each ``read`` takes exactly one request inside
    ``with picam2.captured_request()``. Cameras with autofocus (``AfMode`` among the
    controls, e.g. Camera Module 3) are put in manual focus at ``lens_position`` dioptres
    when it is >= 0.

    Not thread-safe: one reader thread.

    Args:
        width, height: requested lores size in pixels (the camera may round it).
        fps: requested frame rate.
        lens_position: manual focus in dioptres; -1 leaves focus alone.
        camera_num: which camera (0 on a single-camera Pi).
        picamera2_factory: ``factory(camera_num)`` returning a Picamera2 or an object that
            behaves like one (tests). Default: ``picamera2.Picamera2``, imported here.
        clock: something with ``monotonic()``; frames are stamped with it when a request
            comes back.

    Raises:
        CameraUnavailable: picamera2 is missing, no camera is connected, the camera is in use
            by another process, or it refused the configuration.
    """

    live = True  # identical frames in a row mean a frozen capture

    def __init__(self, width: int = 640, height: int = 480, fps: float = 15.0, lens_position: float = -1.0,
                 camera_num: int = 0, picamera2_factory: Callable[[int], Any] | None = None,
                 clock: MonotonicClock | None = None) -> None:
        self._clock = clock or _SystemClock()
        self._flush = False
        self._closed = False
        self._index = 0
        factory = picamera2_factory or self._import_picamera2()
        try:
            self._cam = factory(camera_num)
        except Exception as err:  # picamera2 raises RuntimeError/IndexError for most of these
            raise CameraUnavailable(self._explain_open_error(err, camera_num)) from err
        try:
            config = self._cam.create_video_configuration(
                # main is never read, but a lores stream needs one; YUV420 costs the ISP 1.5
                # bytes a pixel instead of XBGR8888's 4.
                main={"size": (width, height), "format": "YUV420"},
                lores={"size": (width, height), "format": "YUV420"},
                controls={"FrameRate": float(fps)},
                buffer_count=4,
            )
            self._cam.configure(config)
            lores = self._cam.camera_configuration()["lores"]
            self.width, self.height = (int(v) for v in lores["size"])
            self.stride = int(lores["stride"])
            if self.stride < self.width:
                raise CameraUnavailable(f"picamera2 reported a lores stride of {self.stride} bytes for a "
                                        f"width of {self.width}; the stream is not YUV420")
            self._set_focus(lens_position)
            self._cam.start()
        except CameraUnavailable:
            self._release_camera()
            raise
        except Exception as err:
            self._release_camera()
            raise CameraUnavailable(f"the camera refused a {width}x{height} YUV420 lores stream at {fps} fps "
                                    f"({type(err).__name__}: {err}); try camera.width/height 640x480 "
                                    "and camera.fps 15") from err
        log.info("picamera2 lores stream %dx%d (stride %d) at %.1f fps", self.width, self.height,
                 self.stride, fps)

    @staticmethod
    def _import_picamera2() -> Callable[[int], Any]:
        try:
            from picamera2 import Picamera2
        except ImportError as err:
            raise CameraUnavailable(
                f"picamera2 is not importable ({err}); on Raspberry Pi OS install it with "
                "`sudo apt install -y python3-picamera2` and create qrgate's venv with "
                "--system-site-packages (see README, Raspberry Pi); on a PC use camera.source = "
                "\"dir:PATH\"") from err
        return lambda camera_num: Picamera2(camera_num)

    @staticmethod
    def _explain_open_error(err: BaseException, camera_num: int) -> str:
        text = f"{type(err).__name__}: {err}"
        if "busy" in text.lower():
            return (f"camera {camera_num} is busy ({text}); another process holds it: stop the qrgate "
                    "service (`sudo systemctl stop qrgate`) or the other camera program first")
        if isinstance(err, IndexError) or "list index" in text or "no camera" in text.lower():
            return (f"no camera {camera_num} found ({text}); check the ribbon cable and that "
                    "`rpicam-hello --list-cameras` lists it")
        return f"camera {camera_num} could not be opened ({text})"

    def _set_focus(self, lens_position: float) -> None:
        if lens_position < 0:
            return
        if "AfMode" not in self._cam.camera_controls:
            log.info("camera has no autofocus; camera.lens_position %.2f ignored", lens_position)
            return
        # AfMode 0 is libcamera's AfModeManual; the integer avoids importing libcamera here.
        self._cam.set_controls({"AfMode": 0, "LensPosition": float(lens_position)})

    def flush_next(self) -> None:
        """Make the next ``read`` return a frame exposed after this call.

        Call it after a relay pulse so an older, buffered frame cannot show the same code again.
        """
        self._flush = True

    def read(self, timeout_s: float) -> Frame | None:
        """Return the next frame, or None if the camera delivered none within timeout_s.

        Blocks at most about timeout_s (waiting inside picamera2, not spinning).

        Raises:
            CameraUnavailable: the camera failed or was closed.
        """
        if self._closed:
            raise CameraUnavailable("the camera is closed")
        flush = self._flush
        # picamera2 treats wait=0 as "do not wait" and returns a job instead of a request.
        wait_s = max(float(timeout_s), 0.001)
        try:
            with self._cam.captured_request(wait=wait_s, flush=flush or None) as request:
                buffer = request.make_buffer("lores")
                captured_mono_s = self._clock.monotonic()
                plane = np.asarray(buffer, dtype=np.uint8).reshape(-1)[: self.stride * self.height]
                pixels = plane.reshape(self.height, self.stride)[:, : self.width].copy()
        except TimeoutError:
            # The timed-out capture job would otherwise hold the next request forever.
            cancel = getattr(self._cam, "cancel_all_and_flush", None)
            if cancel is not None:
                cancel()
            return None
        except Exception as err:
            raise CameraUnavailable(f"the camera stopped delivering frames ({type(err).__name__}: {err}); "
                                    "check the cable, then restart qrgate") from err
        self._flush = False
        frame = Frame(pixels=pixels, captured_mono_s=captured_mono_s, index=self._index, origin="picamera2")
        self._index += 1
        return frame

    def _release_camera(self) -> None:
        for step in ("stop", "close"):
            try:
                getattr(self._cam, step)()
            except Exception as err:  # shutdown goes on: each step is tried on its own
                log.warning("picamera2 %s failed: %s", step, err)

    def close(self) -> None:
        """Stop and close the camera. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._release_camera()


# --------------------------------------------------------------------------- v4l2 (USB webcam)

def _import_cv2() -> Any:
    import cv2

    return cv2


class V4l2Frames:
    """A USB webcam through OpenCV (extra ``webcam``; never installed into a picamera2 venv).

    Args:
        device: the /dev/videoN number.
        width, height, fps: requested capture settings (the webcam may pick others).
        clock: something with ``monotonic()``.
        import_cv2: returns the OpenCV module (tests pass their own); default imports ``cv2``.

    Raises:
        CameraUnavailable: OpenCV is missing or the device cannot be opened.
    """

    live = True  # identical frames in a row mean a frozen capture

    def __init__(self, device: int = 0, width: int = 640, height: int = 480, fps: float = 15.0,
                 clock: MonotonicClock | None = None, import_cv2: Callable[[], Any] | None = None) -> None:
        try:
            cv2_module = (import_cv2 or _import_cv2)()
        except ImportError as err:
            raise CameraUnavailable(
                f"camera.source v4l2:{device} needs OpenCV, which is not importable ({err}); install it "
                "with `pip install 'qrgate[webcam]'` (not into a picamera2 venv: it pulls its own "
                "numpy)") from err
        self._cv2 = cv2_module
        self._clock = clock or _SystemClock()
        self._index = 0
        self._cap = cv2_module.VideoCapture(device, cv2_module.CAP_V4L2)
        if not self._cap.isOpened():
            raise CameraUnavailable(f"/dev/video{device} could not be opened; check `v4l2-ctl "
                                    "--list-devices` and that the user is in group video")
        self._cap.set(cv2_module.CAP_PROP_FRAME_WIDTH, width)
        self._cap.set(cv2_module.CAP_PROP_FRAME_HEIGHT, height)
        self._cap.set(cv2_module.CAP_PROP_FPS, fps)
        self._cap.set(cv2_module.CAP_PROP_BUFFERSIZE, 1)
        self._device = device
        self._flush = False

    def flush_next(self) -> None:
        """Drop the one buffered frame before the next ``read`` (the capture buffer holds one)."""
        self._flush = True

    def read(self, timeout_s: float) -> Frame | None:
        """Return the next frame. OpenCV's read blocks for one frame period; timeout_s is not enforced.

        Raises:
            CameraUnavailable: the webcam stopped delivering.
        """
        if self._flush:
            self._flush = False
            self._cap.grab()
        ok, image = self._cap.read()
        if not ok:
            raise CameraUnavailable(f"/dev/video{self._device} stopped delivering frames")
        captured_mono_s = self._clock.monotonic()
        grey = image if image.ndim == 2 else self._cv2.cvtColor(image, self._cv2.COLOR_BGR2GRAY)
        frame = Frame(pixels=np.ascontiguousarray(grey, dtype=np.uint8), captured_mono_s=captured_mono_s,
                      index=self._index, origin=f"v4l2:{self._device}")
        self._index += 1
        return frame

    def close(self) -> None:
        """Release the webcam. Safe to call twice."""
        self._cap.release()


# --------------------------------------------------------------------------- factory

def _open_picamera(source: str, camera: Any, config_dir: Path, clock: MonotonicClock | None) -> Any:
    return PicameraFrames(width=camera.width, height=camera.height, fps=camera.fps,
                          lens_position=camera.lens_position, clock=clock)


def _open_replay(source: str, camera: Any, config_dir: Path, clock: MonotonicClock | None,
                 empty_ok: bool = False) -> Any:
    kind, _, raw_path = source.partition(":")
    path = Path(raw_path).expanduser()
    if not path.is_absolute():
        path = config_dir / path
    return ReplayFrames.from_source(f"{kind}:{path}", fps=camera.fps,
                                    frames_per_image=camera.frames_per_image,
                                    as_fast_as_possible=camera.as_fast_as_possible, clock=clock,
                                    allow_empty=empty_ok)


def _open_v4l2(source: str, camera: Any, config_dir: Path, clock: MonotonicClock | None) -> Any:
    _, _, number = source.partition(":")
    if not number.isdigit():
        raise ConfigError(f"camera.source = {source!r}: give the /dev/videoN number, for example v4l2:0")
    return V4l2Frames(int(number), width=camera.width, height=camera.height, fps=camera.fps, clock=clock)


# Fixed table: source prefix -> opener. Never built from a module name found in config.
SOURCES: dict[str, Callable[[str, Any, Path, MonotonicClock | None], Any]] = {
    "picamera2": _open_picamera,
    "dir": _open_replay,
    "file": _open_replay,
    "v4l2": _open_v4l2,
}


def open_frame_source(camera_config: Any, config_dir: str | Path = ".",
                      clock: MonotonicClock | None = None, empty_ok: bool = False) -> Any:
    """Open the frame source named by ``camera.source``.

    Args:
        camera_config: the ``[camera]`` section (``firmware.core.config.CameraConfig``).
        config_dir: directory that relative ``dir:``/``file:`` paths are resolved against.
        clock: something with ``monotonic()``; default ``time.monotonic``.
        empty_ok: a ``dir:`` folder without images is a source that ends at once (``run
            --exit-at-end`` draining a backlog) instead of a configuration error.

    Returns:
        A ``FrameSource``: ``PicameraFrames``, ``ReplayFrames`` or ``V4l2Frames``.

    Raises:
        ConfigError: the source string is not understood, or a replay path is wrong.
        CameraUnavailable: the camera could not be opened.
    """
    source = camera_config.source.strip()
    prefix = source.split(":", 1)[0]
    opener = SOURCES.get(prefix)
    if opener is None:
        raise ConfigError(f"camera.source = {source!r} is not understood; use picamera2, dir:PATH, "
                          "file:PATH or v4l2:N")
    if prefix == "dir":
        return _open_replay(source, camera_config, Path(config_dir), clock, empty_ok=empty_ok)
    return opener(source, camera_config, Path(config_dir), clock)

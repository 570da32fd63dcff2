"""Port contracts, run against the fakes and replay sources here and against real hardware on a Pi.

Each ``check_*`` function asserts what every adapter of a port must do, whatever library is
behind it. ``tests/test_contracts.py`` runs them on the adapters that work anywhere;
``tests/hardware/test_pi_contracts.py`` runs the same functions on picamera2 and lgpio.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from firmware.core.model import CredentialType, Decision, Reason, Verdict


def check_frame_source(source: Any, *, live: bool, frames_wanted: int = 5, timeout_s: float = 2.0,
                       flush_requests: Callable[[], list[bool]] | None = None) -> None:
    """A FrameSource delivers 2-D uint8 frames with rising capture stamps, honours its
    timeout (never returns much later than asked), takes flush_next, closes twice, and says
    whether it is a camera (``live``, which turns on the frozen-frame check) as expected.

    flush_next (called after the second frame): the very next ``read`` still delivers a frame,
    for every source. A source that buffers frames ahead (picamera2, V4L2) must also ask for
    that capture fresh: pass ``flush_requests``, which lists, for each capture the source has
    asked of its camera so far, whether it asked for a fresh one; the contract then requires
    exactly the capture after flush_next to ask. A replay source (``ReplayFrames``,
    ``ScriptedFrames``) makes each frame when it is read, so nothing older is waiting to be
    dropped and its flush_next is a no-op: call it without ``flush_requests``.
    """
    assert frames_wanted >= 3, "the flush check needs a frame after the first two"
    # a camera says so (frozen-frame check); replayed images repeat on purpose
    assert source.live is live, f"{type(source).__name__}.live is {source.live!r}"
    frames = []
    captures_before_flush: list[bool] | None = None
    deadline = time.monotonic() + 10 * timeout_s
    while len(frames) < frames_wanted and time.monotonic() < deadline:
        frame = _timed_read(source, timeout_s)
        if frame is not None:
            frames.append(frame)
        if len(frames) == 2 and captures_before_flush is None:
            captures_before_flush = list(flush_requests()) if flush_requests is not None else []
            assert captures_before_flush == [False] * len(captures_before_flush), captures_before_flush
            source.flush_next()
            after_flush = _timed_read(source, timeout_s)
            assert after_flush is not None, "the read right after flush_next() delivered no frame"
            frames.append(after_flush)
    assert len(frames) == frames_wanted, f"only {len(frames)} frames in {10 * timeout_s} s"
    if flush_requests is not None:
        assert captures_before_flush is not None
        asked = list(flush_requests())
        # the whole list: no fresh capture before flush_next, exactly one after it, none later
        assert asked == captures_before_flush + [True] + [False] * (len(asked) - len(captures_before_flush) - 1), \
            asked
    for frame in frames:
        assert isinstance(frame.pixels, np.ndarray) and frame.pixels.ndim == 2
        assert frame.pixels.dtype == np.uint8 and min(frame.pixels.shape) > 0
    stamps = [f.captured_mono_s for f in frames]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
    assert [f.index for f in frames] == sorted(f.index for f in frames)
    source.close()
    source.close()


def _timed_read(source: Any, timeout_s: float) -> Any:
    asked = time.monotonic()
    frame = source.read(timeout_s)
    assert time.monotonic() - asked < timeout_s + 1.0, "read() overran its timeout"
    return frame


def decision(verdict: Verdict) -> Decision:
    return Decision(verdict=verdict, reason=Reason.OK if verdict is Verdict.GRANTED else Reason.UNKNOWN_FORMAT,
                    code_sha256="0" * 64, credential_type=CredentialType.QG1, subject=None, display="",
                    decided_mono_s=time.monotonic(), frame_mono_s=time.monotonic())


def check_outputs(outputs: Any, pulse_s: float) -> None:
    """Outputs never energise the relay at start; a grant pulses it for about pulse_s on a
    background thread; a denial leaves it alone; release() drops it at once; close twice."""
    pulser = outputs.pulser
    assert pulser.energised is False
    started = time.monotonic()
    outputs.show(decision(Verdict.GRANTED))
    assert time.monotonic() - started < 0.05, "show() must return at once"
    assert pulser.energised is True
    assert outputs.wait_idle(pulse_s + 5.0)
    assert pulser.energised is False
    assert time.monotonic() - started >= pulse_s * 0.9
    outputs.show(decision(Verdict.DENIED))
    assert pulser.energised is False
    assert outputs.wait_idle(5.0)
    outputs.show(decision(Verdict.GRANTED))
    outputs.release()
    assert pulser.energised is False
    outputs.close()
    outputs.close()

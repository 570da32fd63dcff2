"""Camera-like synthetic frames (device/camera_scenes.py): fixed by their seed, shaped like the Y plane."""

from __future__ import annotations

import numpy as np
import pytest

from device.camera_scenes import approach_sequence, camera_like_frame, perspective_coeffs
from device.decoders import ZxingDecoder
from firmware.core.model import Frame


def test_a_still_is_a_y_plane_and_the_same_seed_gives_the_same_pixels():
    first = camera_like_frame("QG1:SCENE", seed=5)
    assert first.shape == (480, 640) and first.dtype == np.uint8
    assert np.array_equal(first, camera_like_frame("QG1:SCENE", seed=5))
    assert not np.array_equal(first, camera_like_frame("QG1:SCENE", seed=6))


def test_most_stills_are_readable_and_some_are_not():
    decoder = ZxingDecoder()
    read = sum(any(c.text == f"QG1:STILL-{i}" for c in decoder.decode(
        Frame(pixels=camera_like_frame(f"QG1:STILL-{i}", seed=i), captured_mono_s=0.0))) for i in range(12))
    assert 4 <= read <= 12  # hard frames, not hopeless ones


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_an_approach_sequence_holds_the_code_in_view_for_a_second_after_it_arrives(seed):
    seq = approach_sequence("QG1:APPROACH", seed)
    assert seq.in_view_index >= 1  # it comes into view, it is not there from the start
    assert len(seq.frames) == seq.in_view_index + 32
    assert all(f.shape == (480, 640) and f.dtype == np.uint8 for f in seq.frames)
    # at the end the hand has stopped: the code is sharp and readable
    codes = ZxingDecoder().decode(Frame(pixels=seq.frames[-1], captured_mono_s=0.0))
    assert [c.text for c in codes] == ["QG1:APPROACH"]
    again = approach_sequence("QG1:APPROACH", seed)
    assert all(np.array_equal(a, b) for a, b in zip(seq.frames, again.frames, strict=True))


def test_perspective_coefficients_map_the_output_corners_onto_the_input_corners():
    dst = np.array([[10, 20], [200, 30], [190, 220], [5, 210]], dtype=float)
    src = np.array([[0, 0], [100, 0], [100, 100], [0, 100]], dtype=float)
    a, b, c, d, e, f, g, h = perspective_coeffs(dst, src)
    for (x, y), (u, v) in zip(dst, src, strict=True):
        den = g * x + h * y + 1
        assert (a * x + b * y + c) / den == pytest.approx(u) and (d * x + e * y + f) / den == pytest.approx(v)

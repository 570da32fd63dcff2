"""The optional USB webcam source: a clear message when OpenCV is not installed."""

from __future__ import annotations

import pytest

from device.camera import V4l2Frames
from firmware.core.errors import CameraUnavailable


def test_missing_opencv_says_how_to_install_the_webcam_extra():
    def no_cv2():
        raise ModuleNotFoundError("No module named 'cv2'", name="cv2")

    with pytest.raises(CameraUnavailable, match=r"pip install 'qrgate\[webcam\]'"):
        V4l2Frames(0, import_cv2=no_cv2)

"""Camera-like QR frames: tilt, blur, glare, shadow, noise and JPEG, and a phone moving into view.

``device.synthetic`` draws a clean code on a noisy grey frame; this module draws what a
gate camera sees when a person shows a pass: a printed card or a phone screen in
perspective, out of focus or smeared by motion, with a glare spot, a shadow across it,
sensor noise and (for stills sent through a lossy path) JPEG artefacts. The benchmarks
use it (``qrgate bench decode`` and ``qrgate bench approach``), so the scenes are fixed by
a seed: the same seed always gives the same pixels (numpy ``default_rng`` and Pillow only).

Two entry points:

- ``camera_like_frame(data, seed)``: one still frame, parameters drawn at random from the
  seed within the ranges of ``STILL_RANGES``.
- ``approach_sequence(data, seed)``: the frames of a phone screen brought into view at
  30 fps (small to full size, motion blur falling as the hand slows, a glare spot, a
  perspective tilt), with the index of the first frame in which the whole symbol is inside
  the frame.

Every frame is a 2-D ``uint8`` array (height x width), what ``Frame.pixels`` holds.
Codes are always normal QR (``segno.make_qr``), error level M, quiet zone 4.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

from device.synthetic import code_modules

# Ranges the still frames are drawn from (uniform unless said otherwise).
STILL_RANGES = {
    "module_px": (3.0, 7.5),          # pixels per module, face on (a pass 20-50 cm from the lens)
    "roll_deg": (-35.0, 35.0),
    "tilt_deg": (0.0, 42.0),          # out-of-plane, about a random axis
    "defocus_sigma_px": (0.0, 1.5),
    "motion_px": (0.0, 5.0),
    "glare_peak": (0.0, 230.0),       # added grey at the spot's centre (clipped at 255)
    "shadow_depth": (0.0, 0.65),      # share of light the shadow takes away
    "noise_sigma": (2.0, 11.0),
    "jpeg_quality": (22, 90),
}

FPS = 30.0
FOCAL_FRAC = 1.1  # pinhole focal length as a share of the frame width (a ~50 degree lens)


# --------------------------------------------------------------------------- geometry

def perspective_coeffs(dst: np.ndarray, src: np.ndarray) -> tuple[float, ...]:
    """Pillow PERSPECTIVE coefficients mapping output points dst (4x2) to input points src (4x2)."""
    rows, rhs = [], []
    for (x, y), (u, v) in zip(dst, src, strict=True):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y])
        rhs += [u, v]
    solution = np.linalg.solve(np.asarray(rows, dtype=np.float64), np.asarray(rhs, dtype=np.float64))
    return tuple(float(c) for c in solution)


def project_card(width_px: float, height_px: float, *, centre: tuple[float, float], roll_deg: float,
                 tilt_deg: float, tilt_axis_deg: float, focal_px: float) -> np.ndarray:
    """Frame coordinates (4x2: top-left, top-right, bottom-right, bottom-left) of a flat card.

    The card is width_px x height_px when seen face on at the focal distance; it is turned
    by roll_deg in its plane, then tilted by tilt_deg about an in-plane axis at
    tilt_axis_deg, and projected through a pinhole centred on ``centre``.
    """
    half_w, half_h = width_px / 2.0, height_px / 2.0
    corners = np.array([[-half_w, -half_h, 0.0], [half_w, -half_h, 0.0],
                        [half_w, half_h, 0.0], [-half_w, half_h, 0.0]])
    roll, tilt, axis = map(math.radians, (roll_deg, tilt_deg, tilt_axis_deg))
    rz = np.array([[math.cos(roll), -math.sin(roll), 0], [math.sin(roll), math.cos(roll), 0], [0, 0, 1]])
    # rotation by tilt about the unit axis (cos a, sin a, 0) (Rodrigues)
    k = np.array([math.cos(axis), math.sin(axis), 0.0])
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    rt = np.eye(3) + math.sin(tilt) * kx + (1 - math.cos(tilt)) * kx @ kx
    points = corners @ (rt @ rz).T
    depth = focal_px + points[:, 2]
    xs = centre[0] + focal_px * points[:, 0] / depth
    ys = centre[1] + focal_px * points[:, 1] / depth
    return np.stack([xs, ys], axis=1)


# --------------------------------------------------------------------------- pieces of a scene

def background(width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """A static scene behind the card: smooth light falloff, large soft shapes, fine texture (float32)."""
    coarse = rng.uniform(60.0, 190.0, size=(6, 8)).astype(np.float32)
    base = np.asarray(Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC))
    base = np.array(base, dtype=np.float32)
    for _ in range(int(rng.integers(2, 6))):  # edges of things in the scene: rails, a wall, a sign
        x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
        x1, y1 = x0 + int(rng.integers(20, width // 2)), y0 + int(rng.integers(20, height // 2))
        base[y0:y1, x0:x1] += float(rng.uniform(-60, 60))
    texture = rng.normal(0.0, 6.0, size=(height // 4 + 1, width // 4 + 1)).astype(np.float32)
    fine = np.asarray(Image.fromarray(texture).resize((width, height), Image.Resampling.BILINEAR))
    return np.clip(base + fine, 0, 255).astype(np.float32)


def code_image(modules: np.ndarray, module_px: int, dark: float, light: float) -> np.ndarray:
    """The symbol (``code_modules`` output, quiet zone included) at module_px pixels per module (float32)."""
    symbol = np.where(modules, dark, light).astype(np.float32)
    return np.kron(symbol, np.ones((module_px, module_px), dtype=np.float32))


def warp_onto(frame: np.ndarray, card: np.ndarray, quad: np.ndarray) -> np.ndarray:
    """Lay card (float32) onto frame (float32, modified and returned) where quad says.

    Pillow's bilinear sampling has no area filter, so the card should be drawn at about the
    size it will have in the frame (``card_pyramid`` gives the choice).
    """
    height, width = frame.shape
    h, w = card.shape
    src = np.array([[0, 0], [w, 0], [w, h], [0, h]], dtype=np.float64)
    coeffs = perspective_coeffs(quad, src)
    warped = Image.fromarray(card).transform((width, height), Image.Transform.PERSPECTIVE, coeffs,
                                                        resample=Image.Resampling.BILINEAR)
    mask = Image.fromarray(np.ones((h, w), dtype=np.float32)).transform(
        (width, height), Image.Transform.PERSPECTIVE, coeffs, resample=Image.Resampling.BILINEAR)
    m = np.asarray(mask, dtype=np.float32)
    frame *= 1.0 - m
    frame += np.asarray(warped, dtype=np.float32) * m
    return frame


def motion_blur(image: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """Average of image shifted along the segment (0, 0)-(dx, dy): a linear motion smear (float32)."""
    length = math.hypot(dx, dy)
    steps = int(math.ceil(length))
    if steps < 1:
        return image
    pad = steps + 1
    padded = np.pad(image, pad, mode="edge")
    height, width = image.shape
    out = np.zeros_like(image)
    for i in range(steps + 1):
        t = i / steps - 0.5
        ox, oy = int(round(t * dx)), int(round(t * dy))
        out += padded[pad + oy:pad + oy + height, pad + ox:pad + ox + width]
    return out / float(steps + 1)


def gaussian_blur(image: np.ndarray, sigma_px: float) -> np.ndarray:
    """Pillow's Gaussian blur on a float32 image (no-op below 0.2 px)."""
    if sigma_px < 0.2:
        return image
    # Pillow blurs only 8-bit images; the rounding is far below the sensor noise added later
    return np.array(Image.fromarray(to_uint8(image)).filter(ImageFilter.GaussianBlur(sigma_px)),
                    dtype=np.float32)


def glare(shape: tuple[int, int], centre: tuple[float, float], radius_px: float, peak: float) -> np.ndarray:
    """An additive glare spot: a Gaussian bump of height peak (float32)."""
    height, width = shape
    ys = (np.arange(height, dtype=np.float32) - centre[1])[:, None]
    xs = (np.arange(width, dtype=np.float32) - centre[0])[None, :]
    return peak * np.exp(-(xs * xs + ys * ys) / (2.0 * radius_px * radius_px))


def shadow(shape: tuple[int, int], angle_deg: float, offset_px: float, depth: float,
           softness_px: float) -> np.ndarray:
    """A multiplicative shadow: 1 on one side of a soft straight edge, 1 - depth on the other."""
    height, width = shape
    a = math.radians(angle_deg)
    ys = (np.arange(height, dtype=np.float32) - height / 2.0)[:, None]
    xs = (np.arange(width, dtype=np.float32) - width / 2.0)[None, :]
    distance = xs * math.cos(a) + ys * math.sin(a) - offset_px
    return 1.0 - depth / (1.0 + np.exp(np.clip(-distance / max(softness_px, 0.5), -60.0, 60.0)))


def jpeg_roundtrip(image: np.ndarray, quality: int) -> np.ndarray:
    """Compress to JPEG at quality and decode again (uint8)."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=int(quality))
    buffer.seek(0)
    return np.array(Image.open(buffer).convert("L"), dtype=np.uint8)


def to_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(image + 0.5, 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- stills

def camera_like_frame(data: str | bytes, seed: int, width: int = 640, height: int = 480) -> np.ndarray:
    """One camera-like frame of data's QR code, fully in view, drawn from ``STILL_RANGES`` by seed.

    Args:
        data: the payload.
        seed: fixes every random choice; the same seed gives the same pixels.
        width: frame width in pixels.
        height: frame height in pixels.

    Returns:
        A 2-D ``uint8`` array (height x width).
    """
    rng = np.random.default_rng(seed)
    r = {k: float(rng.uniform(*v)) for k, v in STILL_RANGES.items()}
    matrix = code_modules(data)
    side = min(r["module_px"] * matrix.shape[0], 0.9 * min(width, height))
    module_px = side / matrix.shape[0]
    card = code_image(matrix, max(2, int(math.ceil(module_px))), dark=float(rng.uniform(15, 80)),
                      light=float(rng.uniform(165, 245)))
    frame = background(width, height, rng)
    focal = FOCAL_FRAC * width
    margin = side * 0.75
    centre = (float(rng.uniform(margin, width - margin)) if width > 2 * margin else width / 2.0,
              float(rng.uniform(margin, height - margin)) if height > 2 * margin else height / 2.0)
    quad = project_card(side, side, centre=centre, roll_deg=r["roll_deg"], tilt_deg=r["tilt_deg"],
                        tilt_axis_deg=float(rng.uniform(0, 180)), focal_px=focal)
    frame = warp_onto(frame, card, quad)
    frame = gaussian_blur(frame, r["defocus_sigma_px"])
    angle = rng.uniform(0, 2 * math.pi)
    frame = motion_blur(frame, r["motion_px"] * math.cos(angle), r["motion_px"] * math.sin(angle))
    # the shadow's edge crosses the code somewhere (an arm, a cap's peak, the turnstile's frame)
    edge_deg = float(rng.uniform(0, 360))
    normal = (math.cos(math.radians(edge_deg)), math.sin(math.radians(edge_deg)))
    through_code = float(np.dot(np.asarray(centre) - (width / 2.0, height / 2.0), normal))
    frame *= shadow(frame.shape, edge_deg, through_code + float(rng.uniform(-side / 2, side / 2)),
                    r["shadow_depth"], float(rng.uniform(1, 25)))
    spot = quad.mean(axis=0) + rng.uniform(-0.4, 0.4, size=2) * side
    frame += glare(frame.shape, (float(spot[0]), float(spot[1])), side * float(rng.uniform(0.06, 0.3)),
                   r["glare_peak"])
    frame += rng.normal(0.0, r["noise_sigma"], size=frame.shape).astype(np.float32)
    return jpeg_roundtrip(to_uint8(frame), int(r["jpeg_quality"]))


# --------------------------------------------------------------------------- approach sequences

@dataclass(frozen=True)
class ApproachSequence:
    """A phone screen brought into view, frame by frame at ``FPS``.

    Attributes:
        seed: the seed the sequence was drawn from.
        frames: the frames (2-D uint8 arrays) in capture order.
        in_view_index: index of the first frame with the whole symbol (quiet zone included)
            inside the frame; decisions are timed from it.
        dark_mode: True when the screen shows light modules on dark.
    """

    seed: int
    frames: tuple[np.ndarray, ...]
    in_view_index: int
    dark_mode: bool


def _ease_out(t: float) -> float:
    """Position along the path at time share t (0-1): fast at first, slowing to a stop."""
    t = min(max(t, 0.0), 1.0)
    return 1.0 - (1.0 - t) ** 3


def approach_sequence(data: str | bytes, seed: int, width: int = 640, height: int = 480,
                      after_in_view: int = 31, max_frames: int = 120) -> ApproachSequence:
    """Render a phone screen showing data's QR code moving into view, at 30 fps.

    The hand enters from a random side with the phone small (far away) and partly or wholly
    out of view, and slows to a stop (ease-out over 0.5-1.1 s) with the code at full size,
    then holds it with a small tremor. Motion blur is the screen's displacement during a
    half-frame exposure, so it falls as the hand slows. A glare spot sits on the screen
    (it drifts as the phone turns), and the phone is tilted in perspective, less as it
    settles. One sequence in eight shows a dark-mode screen (light modules on dark).

    Args:
        data: the payload.
        seed: fixes every random choice.
        width: frame width in pixels.
        height: frame height in pixels.
        after_in_view: frames rendered after the one where the code is first fully in view
            (31 at 30 fps: just over a second).
        max_frames: stop there even if the code never came fully into view (``in_view_index``
            is then -1).

    Returns:
        The ``ApproachSequence``.
    """
    rng = np.random.default_rng(seed)
    matrix = code_modules(data)
    modules = matrix.shape[0]
    final_side = float(rng.uniform(0.3, 0.55)) * height
    start_side = final_side * float(rng.uniform(0.3, 0.55))
    dark_mode = bool(rng.uniform() < 0.125)
    screen_light = float(rng.uniform(190, 250))
    screen_dark = float(rng.uniform(10, 50))
    dark, light = (screen_light, screen_dark) if dark_mode else (screen_dark, screen_light)
    # cards drawn at a few module sizes, so the warp never shrinks a card much (no aliasing)
    pyramid = {px: _phone_card(matrix, px, dark, light) for px in (2, 3, 4, 6, 8, 12)}
    scene = background(width, height, rng)
    noise_sigma = float(rng.uniform(2.0, 7.0))
    noise_field = rng.normal(0.0, 1.0, size=(height + 32, width + 32)).astype(np.float32)
    focal = FOCAL_FRAC * width
    move_frames = int(rng.integers(15, 34))
    end_centre = np.array([width / 2.0 + rng.uniform(-0.12, 0.12) * width,
                           height / 2.0 + rng.uniform(-0.1, 0.1) * height])
    entry = rng.uniform(0, 2 * math.pi)
    start_centre = end_centre + np.array([math.cos(entry) * width * 1.1, math.sin(entry) * height * 1.1])
    roll_start, roll_end = float(rng.uniform(-40, 40)), float(rng.uniform(-12, 12))
    tilt_start, tilt_end = float(rng.uniform(20, 50)), float(rng.uniform(5, 30))
    tilt_axis = float(rng.uniform(0, 180))
    glare_peak = float(rng.uniform(60, 240))
    glare_radius = float(rng.uniform(0.08, 0.3))
    glare_at = rng.uniform(-0.35, 0.35, size=2)
    glare_drift = rng.uniform(-0.25, 0.25, size=2)
    defocus = float(rng.uniform(0.0, 1.0))

    def pose(i: float) -> tuple[np.ndarray, float, float, float]:
        s = _ease_out(i / move_frames)
        centre = start_centre + (end_centre - start_centre) * s
        if i > move_frames:  # holding still, with a small hand tremor
            centre = centre + np.array([math.sin(i * 1.7 + seed), math.cos(i * 1.3 + seed)]) * 0.8
        side = start_side + (final_side - start_side) * s
        return centre, side, roll_start + (roll_end - roll_start) * s, tilt_start + (tilt_end - tilt_start) * s

    out: list[np.ndarray] = []
    in_view = -1
    i = -1
    while i + 1 < max_frames and (in_view < 0 or i < in_view + after_in_view):
        i += 1
        centre, side, roll, tilt = pose(i)
        level = next((px for px in sorted(pyramid) if px >= side / modules), max(pyramid))
        card, code_box = pyramid[level]
        scale = side / code_box[2]  # frame px per card px
        quad = project_card(card.shape[1] * scale, card.shape[0] * scale,
                            centre=(float(centre[0]), float(centre[1])), roll_deg=roll, tilt_deg=tilt,
                            tilt_axis_deg=tilt_axis, focal_px=focal)
        symbol_quad = _sub_quad(quad, card.shape, code_box)
        if in_view < 0 and _inside(symbol_quad, width, height):
            in_view = i
        # motion smear: the displacement over a half-frame exposure
        ahead = pose(i + 0.25)[0]
        behind = pose(max(i - 0.25, 0.0))[0]
        dx, dy = (ahead - behind)
        share = _ease_out(i / move_frames)
        spot = symbol_quad.mean(axis=0) + (glare_at + glare_drift * share) * side
        frame = scene.copy()
        _lay_moving_card(frame, card, quad, (float(dx), float(dy)), (float(spot[0]), float(spot[1])),
                         glare_radius * side, glare_peak, defocus)
        oy, ox = int(rng.integers(0, 32)), int(rng.integers(0, 32))
        frame += noise_field[oy:oy + height, ox:ox + width] * noise_sigma
        out.append(to_uint8(frame))
    return ApproachSequence(seed=seed, frames=tuple(out), in_view_index=in_view, dark_mode=dark_mode)


def _lay_moving_card(frame: np.ndarray, card: np.ndarray, quad: np.ndarray, smear: tuple[float, float],
                     glare_centre: tuple[float, float], glare_radius_px: float, glare_peak: float,
                     defocus_sigma_px: float) -> None:
    """Lay card onto frame (in place) at quad, with a glare spot on it, out of focus by
    defocus_sigma_px and smeared by smear (dx, dy). The camera focuses on where the code is
    held, so the scene behind stays as it is.

    Works on the card's bounding box only, so a small card costs little.
    """
    height, width = frame.shape
    pad = int(math.ceil(math.hypot(*smear))) + 2
    x0 = max(0, int(math.floor(quad[:, 0].min())) - pad)
    y0 = max(0, int(math.floor(quad[:, 1].min())) - pad)
    x1 = min(width, int(math.ceil(quad[:, 0].max())) + pad)
    y1 = min(height, int(math.ceil(quad[:, 1].max())) + pad)
    if x1 <= x0 or y1 <= y0:
        return
    local = quad - (x0, y0)
    h, w = card.shape
    src = np.array([[0, 0], [w, 0], [w, h], [0, h]], dtype=np.float64)
    coeffs = perspective_coeffs(local, src)
    size = (x1 - x0, y1 - y0)
    layer = np.asarray(Image.fromarray(card).transform(size, Image.Transform.PERSPECTIVE, coeffs,
                                                        resample=Image.Resampling.BILINEAR), dtype=np.float32)
    cover = np.asarray(Image.fromarray(np.ones((h, w), dtype=np.float32)).transform(
        size, Image.Transform.PERSPECTIVE, coeffs, resample=Image.Resampling.BILINEAR), dtype=np.float32)
    layer = layer * cover + glare(layer.shape, (glare_centre[0] - x0, glare_centre[1] - y0),
                                  glare_radius_px, glare_peak) * cover
    layer = motion_blur(gaussian_blur(layer, defocus_sigma_px), *smear)
    cover = motion_blur(cover, *smear)
    region = frame[y0:y1, x0:x1]
    region *= 1.0 - cover
    region += layer


def _phone_card(modules: np.ndarray, module_px: int, dark: float,
                light: float) -> tuple[np.ndarray, tuple[int, int, int]]:
    """A phone face: black bezel, screen of the light colour, the code (quiet zone included) in it.

    Returns:
        The card (float32) and the code's box on it as (left, top, side) in card pixels.
    """
    code = code_image(modules, module_px, dark, light)
    side = code.shape[0]
    screen_w, screen_h = int(side * 1.3), int(side * 2.1)
    bezel = max(2, int(side * 0.05))
    screen_colour = light
    card = np.full((screen_h + 2 * bezel, screen_w + 2 * bezel), 12.0, dtype=np.float32)
    card[bezel:bezel + screen_h, bezel:bezel + screen_w] = screen_colour
    left = bezel + (screen_w - side) // 2
    top = bezel + int(screen_h * 0.35) - side // 2
    card[top:top + side, left:left + side] = code
    # the app's header bar above the code, as pass apps show one
    bar_top = bezel + int(screen_h * 0.05)
    card[bar_top:bar_top + max(2, side // 10), bezel:bezel + screen_w] = (dark + light) / 2.0
    return card, (left, top, side)


def _sub_quad(quad: np.ndarray, card_shape: tuple[int, ...], box: tuple[int, int, int]) -> np.ndarray:
    """Frame coordinates of the code box (left, top, side) on a card laid onto quad."""
    h, w = card_shape
    src = np.array([[0, 0], [w, 0], [w, h], [0, h]], dtype=np.float64)
    a, b, c, d, e, f, g, hh = perspective_coeffs(src, quad)  # card -> frame
    left, top, side = box
    points = np.array([[left, top], [left + side, top], [left + side, top + side], [left, top + side]],
                      dtype=np.float64)
    out = []
    for x, y in points:
        den = g * x + hh * y + 1.0
        out.append([(a * x + b * y + c) / den, (d * x + e * y + f) / den])
    return np.asarray(out)


def _inside(quad: np.ndarray, width: int, height: int) -> bool:
    return bool((quad[:, 0] >= 0).all() and (quad[:, 0] <= width - 1).all()
                and (quad[:, 1] >= 0).all() and (quad[:, 1] <= height - 1).all())


def iter_camera_like(payloads: list[str], seed: int, width: int = 640,
                     height: int = 480) -> Iterator[tuple[str, np.ndarray]]:
    """Yield (payload, frame) for each payload, frame i drawn with seed ``seed * 100_003 + i``."""
    for i, payload in enumerate(payloads):
        yield payload, camera_like_frame(payload, seed * 100_003 + i, width, height)

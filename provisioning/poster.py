"""The venue's printable QR poster: PNG, SVG and PDF on an A4 page (adapter: segno, Pillow).

The 2021 rule: the venue QR is printed at least 15 x 15 cm. The poster puts the QR
symbol (without its quiet zone) at 15 cm or a little more on an A4 portrait page, with
the venue's name above it and its address and id below, in Vietnamese.

- The QR is always a full QR (``segno.make_qr``, never Micro QR), error level Q by
  default (M allowed), quiet zone of 4 modules.
- PNG: 300 dpi (2480 x 3508 pixels), the dpi is written into the file.
- PDF: the same raster at 300 dpi, so the page is exactly 210 x 297 mm.
- SVG: vector, in millimetres (print shops scale it without loss).

Text needs a TrueType font with Vietnamese glyphs: DejaVu Sans (Debian package
``fonts-dejavu-core``) is looked up in the usual places, or pass ``font_path``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from firmware.core.errors import ConfigError

log = logging.getLogger(__name__)

DPI = 300
PAGE_MM = (210.0, 297.0)
MIN_QR_MM = 150.0
BORDER_MODULES = 4
MM_PER_INCH = 25.4
VENUE_PREFIX = "QGV1:"

FONT_CANDIDATES = {
    False: ("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", "/usr/share/fonts/dejavu/DejaVuSans.ttf",
            "/usr/share/fonts/TTF/DejaVuSans.ttf", "/usr/share/fonts/truetype/noto/NotoSans-Regular.ttf"),
    True: ("/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf", "/usr/share/fonts/dejavu/DejaVuSans-Bold.ttf",
           "/usr/share/fonts/TTF/DejaVuSans-Bold.ttf", "/usr/share/fonts/truetype/noto/NotoSans-Bold.ttf"),
}
SVG_FONT_FAMILY = "'DejaVu Sans', 'Noto Sans', Arial, sans-serif"


def px(mm: float) -> int:
    """Millimetres to pixels at the poster's 300 dpi."""
    return int(round(mm / MM_PER_INCH * DPI))


def find_font(bold: bool = False, font_path: str | None = None) -> str:
    """Return a TrueType font file with Vietnamese glyphs.

    Raises:
        ConfigError: none found; the message says how to install one.
    """
    if font_path:
        if not Path(font_path).is_file():
            raise ConfigError(f"--font {font_path} does not exist; give a .ttf file with Vietnamese glyphs")
        return font_path
    for candidate in FONT_CANDIDATES[bold]:
        if Path(candidate).is_file():
            return candidate
    raise ConfigError("no font with Vietnamese glyphs found; install DejaVu with "
                      "`sudo apt-get install fonts-dejavu-core` or pass --font FILE.ttf")


def venue_payload(venue_id: str) -> str:
    """The text the venue QR carries: ``QGV1:<venue_id>`` (short, so the code stays coarse)."""
    return VENUE_PREFIX + venue_id


def make_symbol(payload: str, error: str = "q") -> Any:
    """Return the segno QR for payload: always a full QR code, error level M or Q.

    Raises:
        ConfigError: an error level other than M or Q.
    """
    import segno

    if error.lower() not in ("m", "q"):
        raise ConfigError(f"--error {error!r}: use M or Q (L is too weak for a printed poster, "
                          "H makes the modules small)")
    return segno.make_qr(payload, error=error.lower(), boost_error=False)


@dataclass(frozen=True)
class Layout:
    """Where everything goes on the page, in pixels at 300 dpi."""

    page_px: tuple[int, int]
    modules: int           # symbol width in modules, without the quiet zone
    module_px: int
    qr_origin_px: tuple[int, int]   # top-left of the quiet zone
    title_lines: list[str]
    title_size_px: int
    title_top_px: int
    body_lines: list[str]
    body_size_px: int
    body_top_px: int
    line_gap: float = 1.25

    @property
    def qr_symbol_mm(self) -> float:
        """Printed width of the symbol (without quiet zone) in millimetres."""
        return self.modules * self.module_px / DPI * MM_PER_INCH

    @property
    def qr_total_px(self) -> int:
        return (self.modules + 2 * BORDER_MODULES) * self.module_px


def _wrap(text: str, font: Any, max_width_px: int) -> list[str]:
    words, lines, line = text.split(), [], ""
    for word in words:
        trial = f"{line} {word}".strip()
        if font.getlength(trial) <= max_width_px or not line:
            line = trial
        else:
            lines.append(line)
            line = word
    if line:
        lines.append(line)
    return lines


def layout(qr: Any, title: str, body: list[str], *, font_path: str | None = None) -> Layout:
    """Compute the poster layout for a QR symbol, a title and body lines."""
    from PIL import ImageFont

    page = (px(PAGE_MM[0]), px(PAGE_MM[1]))
    modules = qr.symbol_size(border=0)[0]
    module_px = math.ceil(px(MIN_QR_MM) / modules)
    total = (modules + 2 * BORDER_MODULES) * module_px
    margin = px(15)
    text_width = page[0] - 2 * margin
    title_size = px(9)
    bold = ImageFont.truetype(find_font(True, None if font_path is None else font_path), title_size)
    title_lines = _wrap(title, bold, text_width)
    while len(title_lines) > 3 and title_size > px(5):
        title_size = int(title_size * 0.85)
        bold = ImageFont.truetype(find_font(True, font_path), title_size)
        title_lines = _wrap(title, bold, text_width)
    body_size = px(5)
    regular = ImageFont.truetype(find_font(False, font_path), body_size)
    body_lines = [line for text in body for line in _wrap(text, regular, text_width)]
    title_top = px(15)
    title_height = int(len(title_lines) * title_size * 1.25)
    qr_top = title_top + title_height  # the quiet zone gives the gap
    body_top = qr_top + total
    body_height = int(len(body_lines) * body_size * 1.25)
    if body_top + body_height > page[1] - px(8):
        raise ConfigError(f"the venue name and address are too long for one A4 poster "
                          f"({len(title_lines)} title lines, {len(body_lines)} address lines); shorten them")
    return Layout(page, modules, module_px, ((page[0] - total) // 2, qr_top), title_lines, title_size,
                  title_top, body_lines, body_size, body_top)


def render_png_image(qr: Any, lay: Layout, *, font_path: str | None = None) -> Any:
    """Draw the poster as a 1-bit-looking greyscale Pillow image at 300 dpi."""
    import numpy as np
    from PIL import Image, ImageDraw, ImageFont

    page = Image.new("L", lay.page_px, 255)
    matrix = np.array([list(row) for row in qr.matrix_iter(scale=1, border=BORDER_MODULES)], dtype=bool)
    symbol = np.where(matrix, 0, 255).astype(np.uint8)
    big = np.kron(symbol, np.ones((lay.module_px, lay.module_px), dtype=np.uint8))
    page.paste(Image.fromarray(big, mode="L"), lay.qr_origin_px)
    draw = ImageDraw.Draw(page)
    bold = ImageFont.truetype(find_font(True, font_path), lay.title_size_px)
    regular = ImageFont.truetype(find_font(False, font_path), lay.body_size_px)
    cx = lay.page_px[0] // 2
    y = lay.title_top_px
    for line in lay.title_lines:
        draw.text((cx, y), line, font=bold, fill=0, anchor="ma")
        y += int(lay.title_size_px * lay.line_gap)
    y = lay.body_top_px
    for line in lay.body_lines:
        draw.text((cx, y), line, font=regular, fill=0, anchor="ma")
        y += int(lay.body_size_px * lay.line_gap)
    return page


def render_svg(qr: Any, lay: Layout) -> str:
    """The poster as SVG in millimetres: one path for the dark modules, text elements."""
    scale = MM_PER_INCH / DPI  # mm per pixel

    def mm(value_px: float) -> str:
        return f"{value_px * scale:.3f}"

    parts: list[str] = []
    for y, row in enumerate(qr.matrix_iter(scale=1, border=0)):
        x = 0
        row = list(row)
        while x < len(row):
            if row[x]:
                start = x
                while x < len(row) and row[x]:
                    x += 1
                parts.append(f"M{start} {y}h{x - start}v1h{start - x}z")
            else:
                x += 1
    ox = lay.qr_origin_px[0] + BORDER_MODULES * lay.module_px
    oy = lay.qr_origin_px[1] + BORDER_MODULES * lay.module_px
    module_mm = lay.module_px * scale
    out = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{PAGE_MM[0]:g}mm" height="{PAGE_MM[1]:g}mm" '
        f'viewBox="0 0 {PAGE_MM[0]:g} {PAGE_MM[1]:g}">',
        f'<rect width="{PAGE_MM[0]:g}" height="{PAGE_MM[1]:g}" fill="#fff"/>',
        f'<path transform="translate({mm(ox)} {mm(oy)}) scale({module_mm:.5f})" fill="#000" '
        f'd="{"".join(parts)}"/>',
    ]
    cx = PAGE_MM[0] / 2
    for lines, size_px, top_px, weight in ((lay.title_lines, lay.title_size_px, lay.title_top_px, "bold"),
                                           (lay.body_lines, lay.body_size_px, lay.body_top_px, "normal")):
        y = top_px
        for line in lines:
            # Pillow's "ma" anchor puts the ascender at y; the SVG baseline sits about 0.93 em lower.
            out.append(f'<text x="{cx:g}" y="{mm(y + size_px * 0.93)}" font-family="{SVG_FONT_FAMILY}" '
                       f'font-size="{mm(size_px)}" font-weight="{weight}" text-anchor="middle">'
                       f'{escape(line)}</text>')
            y += int(size_px * lay.line_gap)
    out.append("</svg>")
    return "\n".join(out) + "\n"


@dataclass(frozen=True)
class PosterFiles:
    """What ``write_poster`` wrote, and the printed size of the QR symbol."""

    png: Path
    svg: Path
    pdf: Path | None
    qr_symbol_mm: float
    payload: str


def venue_url(base_url: str, venue_id: str) -> str:
    """The back office's venue page a phone opens from the poster: ``<base_url>/v/<venue_id>``."""
    return f"{base_url.rstrip('/')}/v/{venue_id}"


def write_poster(record: dict[str, Any], out_dir: str | Path, *, error: str = "q", pdf: bool = True,
                 font_path: str | None = None, payload: str | None = None) -> PosterFiles:
    """Write ``<venue_id>-poster.png``, ``.svg`` and (if pdf) ``.pdf`` for a venue record.

    Args:
        payload: the QR's text; default ``QGV1:<venue_id>``. The back office puts its venue
            page's URL there (``venue_url``), so a phone's camera opens the check-in.

    Raises:
        ConfigError: no usable font, a bad error level, or text too long for the page.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    venue_id = record["venue_id"]
    payload = payload or venue_payload(venue_id)
    qr = make_symbol(payload, error)
    body = [record.get("full_address") or record.get("address", ""), f"Mã địa điểm: {venue_id}",
            "In đúng tỉ lệ 100%: mã QR rộng 15 cm"]
    lay = layout(qr, record["name"], body, font_path=font_path)
    image = render_png_image(qr, lay, font_path=font_path)
    stem = out / f"{venue_id}-poster"
    png = stem.with_suffix(".png")
    image.save(png, dpi=(DPI, DPI), optimize=True)
    svg = stem.with_suffix(".svg")
    svg.write_text(render_svg(qr, lay), encoding="utf-8")
    pdf_path = None
    if pdf:
        pdf_path = stem.with_suffix(".pdf")
        image.save(pdf_path, "PDF", resolution=float(DPI), title=record["name"])
    return PosterFiles(png, svg, pdf_path, lay.qr_symbol_mm, payload)

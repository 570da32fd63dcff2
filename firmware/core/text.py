"""Invisible, bidi and control characters in text from outside. Pure.

Two ids that look the same must be the same id, and a name shown to a guard must read in
the order it was written, so these characters are refused in identifiers (pass ``sub``,
``iss``), refused in list imports, removed from list entries' hashed form and from
display names.
"""

from __future__ import annotations

import unicodedata

# Characters that do not show, or change how text around them shows: controls (Cc), format
# characters (Cf: zero-width space and joiners, bidi embeddings and isolates, soft hyphen, BOM),
# surrogates, private use, unassigned, line and paragraph separators, and the invisible
# letters and marks NFKC keeps (combining grapheme joiner, variation selectors, Hangul fillers).
_INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
_INVISIBLE_EXTRA = frozenset([0x034F, 0x115F, 0x1160, 0x3164, 0xFFA0, *range(0x180B, 0x1810),
                              *range(0xFE00, 0xFE10), *range(0xE0100, 0xE01F0)])


def is_invisible(ch: str) -> bool:
    """True for a character that does not show or reorders text (see ``_INVISIBLE_CATEGORIES``)."""
    return unicodedata.category(ch) in _INVISIBLE_CATEGORIES or ord(ch) in _INVISIBLE_EXTRA


def count_invisible(text: str) -> int:
    """How many invisible, bidi or control characters text holds."""
    return 0 if text.isascii() and text.isprintable() else sum(1 for ch in text if is_invisible(ch))


def strip_invisible(text: str) -> str:
    """text without its invisible, bidi and control characters."""
    if text.isascii() and text.isprintable():
        return text
    return "".join(ch for ch in text if not is_invisible(ch))

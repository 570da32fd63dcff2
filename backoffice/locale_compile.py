"""Compile gettext catalogues (.po) to the binary .mo files Django reads, in pure Python.

So neither the build nor the tests need the ``gettext`` package's msgfmt. The .mo files are
committed beside their .po; ``tests/test_backoffice_units.py`` checks they match.
Run ``python -m backoffice.locale_compile`` after editing a .po file.

Only what the back office's catalogues use is supported: ``msgctxt`` is refused, plural
forms are kept as written, entries marked ``fuzzy`` or with an empty ``msgstr`` are left
out (Django then shows the msgid, the Vietnamese text).
"""

from __future__ import annotations

import ast
import struct
import sys
from pathlib import Path

LOCALE_DIR = Path(__file__).resolve().parent / "locale"


class PoError(ValueError):
    """A .po file this compiler does not understand; the message names the line."""


def parse_po(text: str, name: str = "<po>") -> dict[str, str]:
    """Return {msgid: msgstr} of the translated, non-fuzzy entries (the header under "")."""
    entries: dict[str, str] = {}
    msgid: list[str] | None = None
    msgstr: list[str] | None = None
    current: list[str] | None = None
    fuzzy = False

    def flush() -> None:
        nonlocal msgid, msgstr, fuzzy
        if msgid is not None and msgstr is not None:
            key, value = "".join(msgid), "".join(msgstr)
            if value and not (fuzzy and key):
                entries[key] = value
        msgid, msgstr, fuzzy = None, None, False

    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#,") and "fuzzy" in line:
            flush()
            fuzzy = True
            continue
        if line.startswith("#"):
            continue
        if line.startswith("msgctxt") or line.startswith("msgid_plural") or line.startswith("msgstr["):
            raise PoError(f"{name} line {number}: contexts and plurals are not supported here")
        try:
            if line.startswith("msgid "):
                keep_fuzzy = fuzzy
                flush()
                fuzzy = keep_fuzzy
                msgid, current = [ast.literal_eval(line[6:])], None
                current = msgid
            elif line.startswith("msgstr "):
                msgstr = [ast.literal_eval(line[7:])]
                current = msgstr
            elif line.startswith('"') and current is not None:
                current.append(ast.literal_eval(line))
            else:
                raise PoError(f"{name} line {number}: cannot read {line[:40]!r}")
        except (SyntaxError, ValueError) as err:
            raise PoError(f"{name} line {number}: bad string ({err})") from err
    flush()
    return entries


def mo_bytes(entries: dict[str, str]) -> bytes:
    """The GNU .mo file (little-endian, revision 0, no hash table) for the entries, sorted by msgid."""
    keys = sorted(entries)
    ids = [k.encode("utf-8") for k in keys]
    strs = [entries[k].encode("utf-8") for k in keys]
    count = len(keys)
    header_size = 7 * 4
    ids_table = header_size
    strs_table = ids_table + count * 8
    data_start = strs_table + count * 8
    offsets: list[int] = []
    blob = b""
    for item in ids + strs:
        offsets.append(data_start + len(blob))
        blob += item + b"\0"
    out = struct.pack("<7I", 0x950412DE, 0, count, ids_table, strs_table, 0, data_start)
    for i, item in enumerate(ids):
        out += struct.pack("<2I", len(item), offsets[i])
    for i, item in enumerate(strs):
        out += struct.pack("<2I", len(item), offsets[count + i])
    return out + blob


def compile_all(locale_dir: Path = LOCALE_DIR) -> list[Path]:
    """Write ``django.mo`` beside every ``django.po`` under locale_dir. Returns the files written."""
    written = []
    for po in sorted(locale_dir.glob("*/LC_MESSAGES/django.po")):
        mo = po.with_suffix(".mo")
        mo.write_bytes(mo_bytes(parse_po(po.read_text(encoding="utf-8"), str(po))))
        written.append(mo)
    return written


if __name__ == "__main__":
    for path in compile_all():
        print(path, file=sys.stderr)

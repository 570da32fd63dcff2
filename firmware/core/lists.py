"""Deny and allow lists: a compact file per list, replaced atomically, looked up in O(1).

The deny list keeps people under quarantine out; the allow list is the employees-only
list. Each list is one file in ``<state_dir>/lists/`` (``deny.qgl``, ``allow.qgl``):

- line 1: ``QGL1``; line 2: a JSON header ``{kind, version, updated_s, count, salt,
  source, sha256}``; then ``count`` keys of 8 bytes each (little-endian), sorted.
- A key is BLAKE2b-64 of the person id keyed with the list's random salt, so the file
  does not hold readable ids (casual reading; a 12-digit id space can still be searched
  by someone holding the file and the salt). The id is hashed in its canonical form
  (``normalise_id``: invisible characters removed, NFKC, case folded, trimmed), named
  ``id_form`` = ``nfkc-fold`` in the header; files written before it carry no
  ``id_form`` and keep their ``nfc`` form (NFC, trimmed) until they are replaced.
- ``version`` only goes up; ``updated_s`` is when the list content was issued (import
  time, or the signed message's ``iat``) and drives the staleness check.
- The file is written to a temporary file, fsynced and renamed over the old one, then
  the directory is fsynced: a reader sees the old or the new list, never a mix.

In memory a list is a Python ``set`` of ints: a lookup hashes the id once (about a
microsecond) and is O(1). A million entries take about 70 MB (36-byte ints plus the
set's table); see README "Provisioning" for measured figures.

Import (``parse_csv``): a CSV whose first column is the person id; an optional header
row (``id``, ``subject``, ``cccd``...) is skipped; blank lines are ignored; other
columns are ignored. Broken rows (empty id, id too long, control characters, bytes that
are not UTF-8, CSV syntax errors) are reported with their line numbers. By default a
file with any broken row is refused and the list is left as it was; ``skip_bad_rows``
imports the good rows and reports the rest.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
import re
import sys
import unicodedata
from array import array
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import IO, Any

from firmware.core.errors import StoreError
from firmware.core.numbers import MAX_LIST_VERSION, is_finite_number
from firmware.core.text import count_invisible, strip_invisible

log = logging.getLogger(__name__)


KINDS = ("deny", "allow")


MAGIC = b"QGL1\n"


KEY_BYTES = 8


SALT_BYTES = 16


MAX_ID_CHARS = 128


MAX_REPORTED_PROBLEMS = 50


HEADER_NAMES = {"id", "subject", "sub", "cccd", "person_id", "so_cccd", "ma", "mã", "số cccd"}


ID_FORM = "nfkc-fold"  # the canonical form of ids in lists written now
LEGACY_ID_FORM = "nfc"  # lists written before the canonical form (no ``id_form`` in the header)

def normalise_id(text: str, form: str = ID_FORM) -> str:
    """The canonical form of a person id (pass ``sub``, CCCD number, list entry), as hashed.

    ``nfkc-fold``: invisible, bidi and control characters removed, NFKC, case folded (ids are
    compared without regard to case: ``nv-0042`` is ``NV-0042``), surrounding whitespace
    removed. ``nfc`` (lists written before): NFC, trimmed.
    """
    if form == LEGACY_ID_FORM:
        return unicodedata.normalize("NFC", text).strip()
    if text.isascii():
        return strip_invisible(text).lower().strip()
    folded = unicodedata.normalize("NFKC", strip_invisible(text)).casefold()
    return unicodedata.normalize("NFKC", folded).strip()


def display_id(text: str) -> str:
    """An id as a person typed it, cleaned for showing and storing: invisible characters removed,
    NFKC, trimmed, case kept. Compare ids with ``normalise_id``, never in this form."""
    return unicodedata.normalize("NFKC", strip_invisible(text)).strip()


def key_of(subject: str | bytes, salt: bytes, form: str = ID_FORM) -> int:
    """The 64-bit list key of a person id (text, or its normalised UTF-8 bytes) under a list's salt."""
    raw = subject if isinstance(subject, bytes) else normalise_id(subject, form).encode("utf-8")
    return int.from_bytes(hashlib.blake2b(raw, digest_size=KEY_BYTES, key=salt).digest(), "little")


def keys_of(ids: Iterable[str | bytes], salt: bytes, form: str = ID_FORM) -> set[int]:
    """The key set of many ids (ids given as bytes must already be normalised UTF-8 in that form)."""
    blake2b = hashlib.blake2b
    digests = bytearray()
    for i in ids:
        raw = i if isinstance(i, bytes) else normalise_id(i, form).encode("utf-8")
        digests += blake2b(raw, digest_size=KEY_BYTES, key=salt).digest()
    body = array("Q")
    body.frombytes(bytes(digests))
    if sys.byteorder != "little":  # pragma: no cover
        body.byteswap()
    return set(body)


@dataclass(frozen=True)
class ListInfo:
    """A list's header: what it is, which version, when issued, how many entries."""

    kind: str
    version: int = 0
    updated_s: float = 0.0
    count: int = 0
    source: str = ""
    sha256: str = ""
    id_form: str = ID_FORM

    def age_s(self, now_s: float) -> float | None:
        """Seconds since the list was issued, None if it never was."""
        return None if self.version == 0 else max(0.0, now_s - self.updated_s)

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "version": self.version, "updated_s": self.updated_s, "count": self.count,
                "source": self.source, "id_form": self.id_form}


@dataclass(frozen=True)
class ListSnapshot:
    """One list in memory: its header, salt and key set. Immutable once built."""

    info: ListInfo
    salt: bytes
    keys: frozenset[int] | set[int] = field(default_factory=frozenset, repr=False)

    def contains(self, subject: str) -> bool:
        """True if the person id is on the list. O(1)."""
        return bool(self.keys) and key_of(subject, self.salt, self.info.id_form) in self.keys

    @classmethod
    def empty(cls, kind: str) -> ListSnapshot:
        return cls(ListInfo(kind), os.urandom(SALT_BYTES), frozenset())


def encode_list(info: ListInfo, salt: bytes, keys: Iterable[int]) -> tuple[bytes, ListInfo]:
    """Serialise a list; returns the file bytes and the header with count and sha256 filled."""
    body = array("Q", sorted(keys))
    if body.itemsize != KEY_BYTES:  # pragma: no cover - every CPython platform has 8-byte Q
        raise StoreError("this platform has no 8-byte unsigned array type")
    if sys.byteorder != "little":  # pragma: no cover
        body.byteswap()
    raw = body.tobytes()
    info = ListInfo(info.kind, info.version, info.updated_s, len(body), info.source, hashlib.sha256(raw).hexdigest(),
                    info.id_form)
    header = dict(info.to_json(), salt=salt.hex(), sha256=info.sha256)
    return MAGIC + json.dumps(header, ensure_ascii=False).encode("utf-8") + b"\n" + raw, info


def decode_list(data: bytes, origin: str) -> ListSnapshot:
    """Parse list file bytes.

    Raises:
        StoreError: wrong magic, bad header, wrong length or checksum.
    """
    if not data.startswith(MAGIC):
        raise StoreError(f"list file {origin} does not start with QGL1; it is not a qrgate list")
    end = data.find(b"\n", len(MAGIC))
    try:
        header: Any = json.loads(data[len(MAGIC):end].decode("utf-8")) if end > 0 else None
        if not isinstance(header, dict):
            raise ValueError("the header is not a JSON object")
        kind, version, count = str(header["kind"]), int(header["version"]), int(header["count"])
        info = ListInfo(kind, version, float(header["updated_s"]), count, str(header.get("source", "")),
                        str(header["sha256"]), str(header.get("id_form", LEGACY_ID_FORM)))
        if info.id_form not in (ID_FORM, LEGACY_ID_FORM):
            raise ValueError(f"unknown id_form {info.id_form!r}")
        if not 0 <= version <= MAX_LIST_VERSION or not is_finite_number(info.updated_s) or count < 0:
            raise ValueError("version, issue time or count out of range")
        salt = bytes.fromhex(header["salt"])
    except (TypeError, KeyError, ValueError) as err:
        raise StoreError(f"list file {origin} has a broken header ({err})") from err
    raw = data[end + 1:]
    if len(raw) != count * KEY_BYTES or hashlib.sha256(raw).hexdigest() != info.sha256:
        raise StoreError(f"list file {origin} is truncated or damaged ({len(raw)} bytes for {count} entries)")
    body = array("Q")
    body.frombytes(raw)
    if sys.byteorder != "little":  # pragma: no cover
        body.byteswap()
    return ListSnapshot(info, salt, frozenset(body))


@dataclass
class CsvResult:
    """What ``parse_csv`` found.

    Attributes:
        ids: the good ids as normalised UTF-8 bytes, in file order (duplicates kept once).
        rows: data rows seen (not counting blank lines and the header).
        problems: (line number, explanation) of each broken row, at most
            ``MAX_REPORTED_PROBLEMS`` kept; ``bad_rows`` counts them all.
        bad_rows: how many rows were broken.
        duplicates: how many ids appeared more than once.
    """

    ids: list[bytes] = field(default_factory=list)
    rows: int = 0
    problems: list[tuple[int, str]] = field(default_factory=list)
    bad_rows: int = 0
    duplicates: int = 0
    invisible: int = 0

    def problem(self, line: int, text: str) -> None:
        self.bad_rows += 1
        if len(self.problems) < MAX_REPORTED_PROBLEMS:
            self.problems.append((line, text))

    def report(self) -> list[str]:
        """One line per reported problem, plus a count of those not shown."""
        lines = [f"line {n}: {text}" for n, text in self.problems]
        if self.bad_rows > len(self.problems):
            lines.append(f"... and {self.bad_rows - len(self.problems)} more broken rows")
        return lines


def _check_id(value: str, line: int, result: CsvResult) -> bool:
    if not value:
        result.problem(line, "the id (first column) is empty")
    elif len(value) > MAX_ID_CHARS:
        result.problem(line, f"the id is {len(value)} characters, more than {MAX_ID_CHARS}")
    elif count_invisible(value):
        result.invisible += 1
        result.problem(line, "the id contains control or invisible characters (zero-width, bidi, format)")
    else:
        return True
    return False


_FIRST_FIELD = re.compile(rb"^([^,\n]*)[^\n]*$", re.M)


_ASCII_CONTROL = re.compile(rb"[\x00-\x1f\x7f]")


BLOCK_BYTES = 4 * 1024 * 1024


class _Parser:
    """Streaming state of ``parse_csv``."""

    def __init__(self) -> None:
        self.result = CsvResult()
        self.order: dict[bytes, None] = {}
        self.first = True

    def header(self, value: str) -> bool:
        """True (and consumed) if this first data cell is a header."""
        if self.first:
            self.first = False
            return value.lower() in HEADER_NAMES
        return False

    def fast_block(self, block: bytes) -> bool:
        """Take a block of whole lines at C speed if it is plain; False to go line by line."""
        if b'"' in block:
            return False
        firsts = [f.strip() for f in _FIRST_FIELD.findall(block)]
        if firsts and firsts[-1] == b"" and block.endswith(b"\n"):
            firsts.pop()  # the empty match after the final newline
        if b"" in firsts or not firsts:
            return False
        joined = b"\x01".join(firsts)
        if not joined.isascii() or _ASCII_CONTROL.search(joined.replace(b"\x01", b"")) or \
                max(map(len, firsts)) > MAX_ID_CHARS:
            return False
        if self.first and self.header(firsts[0].decode("ascii")):
            firsts = firsts[1:]
        firsts = [f.lower() for f in firsts]  # the canonical form of a printable ASCII id
        self.first = False
        self.result.rows += len(firsts)
        before = len(self.order)
        self.order.update(dict.fromkeys(firsts))
        self.result.duplicates += len(firsts) - (len(self.order) - before)
        return True

    def line(self, raw: bytes, line: int) -> None:
        result = self.result
        if not raw.strip(b" \t\r\n,"):
            return  # blank line
        if b'"' in raw:
            if raw.count(b'"') % 2:
                result.rows += 1
                result.problem(line, "unbalanced double quote (a quoted field cannot span lines)")
                return
            try:
                rows = list(csv.reader([raw.decode("utf-8")], strict=True))
            except UnicodeDecodeError:
                result.rows += 1
                result.problem(line, "is not UTF-8 text; save the file as UTF-8")
                return
            except csv.Error as err:
                result.rows += 1
                result.problem(line, f"CSV syntax error ({err})")
                return
            cell_b = rows[0][0].encode("utf-8") if rows and rows[0] else b""
        else:
            cell_b = raw.split(b",", 1)[0]
        cell_b = cell_b.strip()
        try:
            raw_value = cell_b.decode("utf-8").strip()
        except UnicodeDecodeError:
            result.rows += 1
            result.problem(line, "is not UTF-8 text; save the file as UTF-8")
            return
        if self.header(raw_value):
            return
        result.rows += 1
        # Checked before normalising: an id with invisible characters is refused, not silently merged.
        if _check_id(raw_value, line, result):
            value = normalise_id(raw_value)
            if not value:
                result.problem(line, "the id (first column) is empty")
                return
            value_b = value.encode("utf-8")
            if value_b in self.order:
                result.duplicates += 1
            self.order[value_b] = None


def parse_csv(stream: IO[bytes], block_bytes: int = BLOCK_BYTES) -> CsvResult:
    """Read person ids from a CSV byte stream (first column), in blocks of whole lines.

    Plain blocks (no quotes, no odd ids) are taken at C speed; a block with anything
    unusual is read line by line, quoted lines through the csv module. A quoted field
    spanning lines is reported as broken. ``ids`` holds normalised UTF-8 bytes.
    """
    parser = _Parser()
    line_base = 0
    carry = b""
    bom_checked = False
    while True:
        chunk = stream.read(block_bytes)
        data = carry + chunk
        if not chunk:
            block, carry = data, b""
        else:
            cut = data.rfind(b"\n")
            if cut < 0:
                carry = data
                continue
            block, carry = data[:cut + 1], data[cut + 1:]
        if not bom_checked:
            bom_checked = True
            if block.startswith(b"\xef\xbb\xbf"):
                block = block[3:]
        if block and not parser.fast_block(block):
            for offset, raw in enumerate(block.split(b"\n")[:block.count(b"\n") + (0 if block.endswith(b"\n") else 1)]):
                parser.line(raw, line_base + offset + 1)
        line_base += block.count(b"\n")
        if not chunk:
            break
    result = parser.result
    result.ids = list(parser.order)
    return result


class MemoryLists:
    """The lists the policy looks up (implements ``firmware.core.policy.Lists``). Thread-safe:
    ``swap`` replaces a whole snapshot at once (the MQTT thread), lookups read the
    current one (the scan loop).

    Args:
        deny, allow: the snapshots in force.
    """

    def __init__(self, deny: ListSnapshot | None = None, allow: ListSnapshot | None = None) -> None:
        self._snaps = {"deny": deny or ListSnapshot.empty("deny"), "allow": allow or ListSnapshot.empty("allow")}
        self.damaged: set[str] = set()

    def is_denied(self, subject: str) -> bool:
        return self._snaps["deny"].contains(subject)

    def is_allowed(self, subject: str) -> bool:
        return self._snaps["allow"].contains(subject)

    def snapshot(self, kind: str) -> ListSnapshot:
        return self._snaps[kind]

    def swap(self, kind: str, snap: ListSnapshot) -> None:
        """Put a new snapshot in force (one reference assignment: atomic for readers).

        Only a real list (version 1 or more) clears ``damaged``: re-reading a missing file
        after a damaged one was moved aside must not make the gate trust an empty list.
        """
        self._snaps = {**self._snaps, kind: snap}
        if snap.info.version > 0:
            self.damaged.discard(kind)

    def infos(self) -> dict[str, ListInfo]:
        return {kind: snap.info for kind, snap in self._snaps.items()}

    def stale(self, now_s: float, max_age_s: float, needed: Iterable[str] = ("deny",)) -> list[str]:
        """The needed lists that are damaged or older than max_age_s (0 = never stale).

        A list that was never loaded (version 0) is stale only when max_age_s is set:
        a gate told to check list age has no list to trust.
        """
        if max_age_s <= 0:
            return sorted(k for k in needed if k in self.damaged)
        out = []
        for kind in needed:
            age = self._snaps[kind].info.age_s(now_s)
            if kind in self.damaged or age is None or age > max_age_s:
                out.append(kind)
        return out

    def status(self, now_s: float) -> dict[str, Any]:
        """Version, count, age (s) of each list, for `qrgate status` and the retained state."""
        out = {}
        for kind, snap in self._snaps.items():
            age = snap.info.age_s(now_s)
            out[kind] = {"version": snap.info.version, "count": snap.info.count,
                         "age_s": None if age is None else round(age), "damaged": kind in self.damaged}
        return out


def parse_csv_bytes(data: bytes) -> CsvResult:
    """``parse_csv`` on bytes in memory (remote updates, tests)."""
    return parse_csv(io.BytesIO(data))

"""Deny and allow lists: a compact file per list, replaced atomically, looked up in O(1).

The deny list keeps people under quarantine out; the allow list is the employees-only
list. Each list is one file in ``<state_dir>/lists/`` (``deny.qgl``, ``allow.qgl``):

- line 1: ``QGL2``; line 2: a JSON header ``{kind, version, updated_s, count, timed, salt,
  source, id_form, sha256}``; then ``count - timed`` keys of 8 bytes each (little-endian),
  sorted (entries without an end), then ``timed`` pairs of an 8-byte key and the entry's
  ``until`` (Unix seconds, 8 bytes), sorted by key. ``sha256`` covers both sections.
- Files written before entries could end start with ``QGL1`` and hold the first section
  only; they are still read (and written as ``QGL2`` at their next change).
- An entry with ``until`` counts while ``now_s < until`` (the decision's time, given by the
  caller: pure); when the caller does not trust its wall clock it passes ``None``, and a
  timed entry then counts on the deny list (fail closed) and not on the allow list.
- An entry is a person id (pass ``sub``, CCCD number, ``pass:<cti hex>``) or a person's
  **subject** at a venue (the 32-hex HMAC the gates store in events, ``privacy.subject =
  "hmac"``): ``MemoryLists`` looks up the id and, given the venue's subject function, the
  id's subject too, so a contact known only by subject is on the list.
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

In memory a list is a Python ``set`` of ints, plus a ``dict`` key -> until for the timed
entries: a lookup hashes the id once (about a microsecond) and is O(1). A million entries
take about 70 MB (36-byte ints plus the set's table); see README "Provisioning" for
measured figures.

Import (``parse_csv``): a CSV whose first column is the person id; an optional header
row (``id``, ``subject``, ``cccd``...) is skipped; blank lines are ignored; other
columns are ignored, except a column whose header is ``until``: the entry's end, RFC 3339
with an offset (``2026-12-21T00:00:00+07:00``) or a date (``2026-12-20``: the entry ends
when that day ends in the import's time zone); empty for no end. Broken rows (empty id,
id too long, control characters, bytes that are not UTF-8, CSV syntax errors, an ``until``
that is not a time or is already past) are reported with their line numbers. By default a
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
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone, tzinfo
from typing import IO, Any

from firmware.core.errors import StoreError
from firmware.core.numbers import MAX_LIST_VERSION, MAX_TIME_S, MIN_TIME_S, is_finite_number, is_time_s
from firmware.core.text import count_invisible, strip_invisible

log = logging.getLogger(__name__)


KINDS = ("deny", "allow")


MAGIC = b"QGL2\n"  # the format written now: keys, then (key, until) pairs
MAGIC_V1 = b"QGL1\n"  # lists written before entries could end: keys only


KEY_BYTES = 8


SALT_BYTES = 16


MAX_ID_CHARS = 128


MAX_REPORTED_PROBLEMS = 50


HEADER_NAMES = {"id", "subject", "sub", "cccd", "person_id", "so_cccd", "ma", "mã", "số cccd"}


UNTIL_HEADER = "until"  # the CSV column holding an entry's end
UTC_ZONE = timezone.utc


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


def entry_keys(ids: Iterable[str | bytes], ends: Mapping[str | bytes, int] | None, salt: bytes,
               form: str = ID_FORM) -> tuple[set[int], dict[int, int]]:
    """The keys of a list's entries: those without an end, and those with one (key -> until).

    Args:
        ids: every entry (ids given as bytes must already be normalised UTF-8).
        ends: the ``until`` (Unix seconds) of the entries that end, keyed as in ``ids``; an
            entry that is also given without an end (under any spelling of the same id) has
            none, and of two ends the later counts, so merging lists never shortens an entry.
        salt, form: the list's salt and id form.
    """
    ends = ends or {}
    timed: dict[int, int] = {}
    for entry, until in ends.items():
        key = key_of(entry, salt, form)
        if until > timed.get(key, 0):
            timed[key] = int(until)
    keys = keys_of((i for i in ids if i not in ends), salt, form)
    for key in keys.intersection(timed):
        del timed[key]
    return keys, timed


# The person's subject at a venue (``firmware.core.events.protect_subject`` with the venue's
# secret), as the gate computes it for a lookup; None when the gate has no venue secret.
SubjectOf = Callable[[str], str | None]


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
    timed: int = 0  # entries (within count) that end

    def age_s(self, now_s: float) -> float | None:
        """Seconds since the list was issued, None if it never was."""
        return None if self.version == 0 else max(0.0, now_s - self.updated_s)

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "version": self.version, "updated_s": self.updated_s, "count": self.count,
                "timed": self.timed, "source": self.source, "id_form": self.id_form}


@dataclass(frozen=True)
class ListSnapshot:
    """One list in memory: its header, salt, the keys of entries without an end, and the
    ends of the others (key -> until, Unix seconds). Immutable once built."""

    info: ListInfo
    salt: bytes
    keys: frozenset[int] | set[int] = field(default_factory=frozenset, repr=False)
    ends: Mapping[int, int] = field(default_factory=dict, repr=False)

    def holds(self, key: int, now_s: float | None, unknown_time_counts: bool = True) -> bool:
        """True if the entry with this key is on the list at ``now_s``. O(1).

        Args:
            key: ``key_of`` the entry under this list's salt and id form.
            now_s: the decision's wall time (Unix seconds), or None when it is not trusted.
            unknown_time_counts: what a timed entry counts as without a trusted time.
        """
        if key in self.keys:
            return True
        until = self.ends.get(key) if self.ends else None
        if until is None:
            return False
        return unknown_time_counts if now_s is None else now_s < until

    def contains(self, subject: str, now_s: float | None = None, unknown_time_counts: bool = True) -> bool:
        """True if the entry (a person id or subject) is on the list at ``now_s`` (see ``holds``). O(1)."""
        if not self.keys and not self.ends:
            return False
        return self.holds(key_of(subject, self.salt, self.info.id_form), now_s, unknown_time_counts)

    def in_force(self, now_s: float) -> int:
        """How many entries count at ``now_s`` (every entry without an end, and timed ones not yet ended)."""
        return len(self.keys) + sum(1 for until in self.ends.values() if now_s < until)

    @classmethod
    def empty(cls, kind: str) -> ListSnapshot:
        return cls(ListInfo(kind), os.urandom(SALT_BYTES), frozenset())


def _uint64s(values: Iterable[int]) -> bytes:
    body = array("Q", values)
    if body.itemsize != KEY_BYTES:  # pragma: no cover - every CPython platform has 8-byte Q
        raise StoreError("this platform has no 8-byte unsigned array type")
    if sys.byteorder != "little":  # pragma: no cover
        body.byteswap()
    return body.tobytes()


def _read_uint64s(raw: bytes) -> "array[int]":
    body = array("Q")
    body.frombytes(raw)
    if sys.byteorder != "little":  # pragma: no cover
        body.byteswap()
    return body


def encode_list(info: ListInfo, salt: bytes, keys: Iterable[int],
                ends: Mapping[int, int] | None = None) -> tuple[bytes, ListInfo]:
    """Serialise a list (``QGL2``); returns the file bytes and the header with count, timed
    and sha256 filled. A key in both ``keys`` and ``ends`` is written without an end."""
    permanent_set = set(keys)
    permanent = sorted(permanent_set)
    timed = sorted((k, int(u)) for k, u in (ends or {}).items() if k not in permanent_set)
    raw = _uint64s(permanent) + _uint64s(v for pair in timed for v in pair)
    info = ListInfo(info.kind, info.version, info.updated_s, len(permanent) + len(timed), info.source,
                    hashlib.sha256(raw).hexdigest(), info.id_form, len(timed))
    header = dict(info.to_json(), salt=salt.hex(), sha256=info.sha256)
    return MAGIC + json.dumps(header, ensure_ascii=False).encode("utf-8") + b"\n" + raw, info


def decode_list(data: bytes, origin: str) -> ListSnapshot:
    """Parse list file bytes (``QGL2``, or ``QGL1`` as written before entries could end).

    Raises:
        StoreError: wrong magic, bad header, wrong length or checksum, an end out of range.
    """
    magic = data[:len(MAGIC)]
    if magic not in (MAGIC, MAGIC_V1):
        raise StoreError(f"list file {origin} does not start with QGL2 or QGL1; it is not a qrgate list")
    end = data.find(b"\n", len(MAGIC))
    try:
        header: Any = json.loads(data[len(MAGIC):end].decode("utf-8")) if end > 0 else None
        if not isinstance(header, dict):
            raise ValueError("the header is not a JSON object")
        kind, version, count = str(header["kind"]), int(header["version"]), int(header["count"])
        timed = int(header["timed"]) if magic == MAGIC else 0
        info = ListInfo(kind, version, float(header["updated_s"]), count, str(header.get("source", "")),
                        str(header["sha256"]), str(header.get("id_form", LEGACY_ID_FORM)), timed)
        if info.id_form not in (ID_FORM, LEGACY_ID_FORM):
            raise ValueError(f"unknown id_form {info.id_form!r}")
        if not 0 <= version <= MAX_LIST_VERSION or not is_finite_number(info.updated_s) or not 0 <= timed <= count:
            raise ValueError("version, issue time, count or timed out of range")
        salt = bytes.fromhex(header["salt"])
    except (TypeError, KeyError, ValueError) as err:
        raise StoreError(f"list file {origin} has a broken header ({err})") from err
    raw = data[end + 1:]
    if len(raw) != (count + timed) * KEY_BYTES or hashlib.sha256(raw).hexdigest() != info.sha256:
        raise StoreError(f"list file {origin} is truncated or damaged ({len(raw)} bytes for {count} entries)")
    split = (count - timed) * KEY_BYTES
    keys = frozenset(_read_uint64s(raw[:split]))
    pairs = _read_uint64s(raw[split:])
    ends = dict(zip(pairs[0::2], pairs[1::2], strict=True))
    if len(ends) != timed or any(not MIN_TIME_S <= u <= MAX_TIME_S for u in ends.values()):
        raise StoreError(f"list file {origin} has a repeated entry or an end outside 2001-2100")
    return ListSnapshot(info, salt, keys, ends)


@dataclass
class CsvResult:
    """What ``parse_csv`` found.

    Attributes:
        ids: the good ids as normalised UTF-8 bytes, in file order (duplicates kept once).
        ends: the ``until`` (Unix seconds) of the ids given one in the ``until`` column; an id
            also given without one has none, of two ends the later counts.
        rows: data rows seen (not counting blank lines and the header).
        problems: (line number, explanation) of each broken row, at most
            ``MAX_REPORTED_PROBLEMS`` kept; ``bad_rows`` counts them all.
        bad_rows: how many rows were broken.
        duplicates: how many ids appeared more than once.
    """

    ids: list[bytes] = field(default_factory=list)
    ends: dict[bytes, int] = field(default_factory=dict)
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


def parse_until(text: str, tz: tzinfo) -> int:
    """An entry's end from a CSV cell: RFC 3339 with an offset, or a date (the entry ends when
    that day ends in tz). Returns Unix seconds.

    Raises:
        ValueError: not one of those forms, a time without an offset, or outside 2001-2100.
    """
    text = text.strip()
    if len(text) == 10:
        day = date.fromisoformat(text)
        moment = datetime.combine(day + timedelta(days=1), time(0), tzinfo=tz)
    else:
        moment = datetime.fromisoformat(text)
        if moment.tzinfo is None:
            raise ValueError("give the time zone (Z or +07:00)")
    until = int(moment.timestamp())
    if not is_time_s(until):
        raise ValueError("outside 2001-2100")
    return until


class _Parser:
    """Streaming state of ``parse_csv``."""

    def __init__(self, tz: tzinfo | None = None, now_s: float | None = None) -> None:
        self.result = CsvResult()
        self.order: dict[bytes, None] = {}
        self.first = True
        self.until_column: int | None = None  # the index of the ``until`` column, from the header
        self.tz, self.now_s = tz, now_s

    def header(self, value: str, cells: list[str] | None = None) -> bool:
        """True (and consumed) if this first data cell is a header; notes its ``until`` column."""
        if self.first:
            self.first = False
            if value.lower() not in HEADER_NAMES:
                return False
            names = [c.strip().lower() for c in cells or []]
            if UNTIL_HEADER in names[1:]:
                self.until_column = names.index(UNTIL_HEADER, 1)
            return True
        return False

    def until_of(self, cells: list[str], line: int) -> int | None | bool:
        """The row's end (None: no end), or False when the cell is broken (reported)."""
        column = self.until_column
        text = cells[column].strip() if column is not None and column < len(cells) else ""
        if not text:
            return None
        try:
            until = parse_until(text, self.tz or UTC_ZONE)
        except ValueError as err:
            self.result.problem(line, f"until {text[:40]!r} is not a date or an RFC 3339 time ({err})")
            return False
        if self.now_s is not None and until <= self.now_s:
            self.result.problem(line, f"until {text[:40]!r} is already past")
            return False
        return until

    def fast_block(self, block: bytes) -> bool:
        """Take a block of whole lines at C speed if it is plain; False to go line by line."""
        if b'"' in block or self.until_column is not None:
            return False
        if self.first:
            cells = block.split(b"\n", 1)[0].split(b",")
            if UNTIL_HEADER.encode() in (c.strip().lower() for c in cells[1:]):
                return False  # a header with an ``until`` column: the rows are read one by one
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
            cells_b = [c.encode("utf-8") for c in rows[0]] if rows and rows[0] else [b""]
        else:
            cells_b = raw.rstrip(b"\r").split(b",") if self.first or self.until_column is not None \
                else [raw.split(b",", 1)[0]]
        try:
            first = cells_b[0].decode("utf-8")
        except UnicodeDecodeError:
            result.rows += 1
            result.problem(line, "is not UTF-8 text; save the file as UTF-8")
            return
        # Other columns are read only for the header and the ``until`` cell; a name column in
        # another encoding stays ignored, and a broken ``until`` cell is reported as not a time.
        cells = [first, *(c.decode("utf-8", "replace") for c in cells_b[1:])]
        raw_value = first.strip()
        if self.header(raw_value, cells):
            return
        result.rows += 1
        # Checked before normalising: an id with invisible characters is refused, not silently merged.
        if _check_id(raw_value, line, result):
            value = normalise_id(raw_value)
            if not value:
                result.problem(line, "the id (first column) is empty")
                return
            until = self.until_of(cells, line) if self.until_column is not None else None
            if until is False:
                return
            value_b = value.encode("utf-8")
            if value_b in self.order:
                result.duplicates += 1
                known = result.ends.get(value_b)
                if known is None or until is None:
                    result.ends.pop(value_b, None)  # once without an end, the entry has none
                elif until > known:
                    result.ends[value_b] = until
            elif until is not None:
                result.ends[value_b] = until
            self.order[value_b] = None


def parse_csv(stream: IO[bytes], block_bytes: int = BLOCK_BYTES, *, tz: tzinfo | None = None,
              now_s: float | None = None) -> CsvResult:
    """Read person ids from a CSV byte stream (first column), in blocks of whole lines.

    Plain blocks (no quotes, no odd ids) are taken at C speed; a block with anything
    unusual is read line by line, quoted lines through the csv module. A quoted field
    spanning lines is reported as broken. ``ids`` holds normalised UTF-8 bytes.

    Args:
        tz: the zone a date in the ``until`` column is read in (default: UTC; the CLI passes
            the machine's zone).
        now_s: when given, an ``until`` at or before it is a broken row.
    """
    parser = _Parser(tz, now_s)
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

    A lookup checks the person id and, with ``subject_of``, the id's subject at this venue
    (the HMAC its events carry), so an entry written either way matches: two keyed hashes
    and two set lookups, O(1).

    Args:
        deny, allow: the snapshots in force.
        subject_of: the person's subject at this gate's venue (``protect_subject`` with the
            venue secret), or None to look up ids only.
    """

    def __init__(self, deny: ListSnapshot | None = None, allow: ListSnapshot | None = None,
                 subject_of: SubjectOf | None = None) -> None:
        self._snaps = {"deny": deny or ListSnapshot.empty("deny"), "allow": allow or ListSnapshot.empty("allow")}
        self.damaged: set[str] = set()
        self._subject_of = subject_of

    def _holds(self, kind: str, person_id: str, now_s: float | None, unknown_time_counts: bool) -> bool:
        snap = self._snaps[kind]
        if not snap.keys and not snap.ends:
            return False
        if snap.contains(person_id, now_s, unknown_time_counts):
            return True
        subject = self._subject_of(person_id) if self._subject_of is not None else None
        if not subject:
            return False
        return snap.contains(subject, now_s, unknown_time_counts)

    def is_denied(self, subject: str, now_s: float | None = None) -> bool:
        """True if the person id, or its subject here, is on the deny list at ``now_s``.

        ``now_s`` None (the wall clock is not trusted): an entry that ends still counts.
        """
        return self._holds("deny", subject, now_s, True)

    def is_allowed(self, subject: str, now_s: float | None = None) -> bool:
        """True if the person id, or its subject here, is on the allow list at ``now_s``.

        ``now_s`` None (the wall clock is not trusted): an entry that ends does not count.
        """
        return self._holds("allow", subject, now_s, False)

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


def parse_csv_bytes(data: bytes, *, tz: tzinfo | None = None, now_s: float | None = None) -> CsvResult:
    """``parse_csv`` on bytes in memory (remote updates, tests)."""
    return parse_csv(io.BytesIO(data), tz=tz, now_s=now_s)

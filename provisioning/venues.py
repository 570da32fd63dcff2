"""Venue registration: validate the 2021 registration fields and write a venue record.

The 2021 form (Phụ lục I of the original order) asked for the venue's name, its
province, district and ward, the street address, and the registrant's name and mobile
phone. Vietnam's administrative map changed on 1 July 2025 from three levels
(province / district / ward) to two (province / ward). Both maps ship and are chosen per
registration (``DivisionMaps``):

- without a district, the current two-level map of the installed ``vietnam-provinces``
  package (2025.x) is used; a ward (or province) it does not know is then looked for in
  the whole province of the three-level map, and taken from there when exactly one ward
  has that name (its district is filled in from the map);
- with a district, the three-level map of 2021 shipped in
  ``provisioning/data/divisions-2021.json.gz`` (the GSO list as published in
  vietnam-provinces 0.6.0, data of 2025-01-04; built by scripts/build-divisions-2021.py)
  is used, and the ward is looked up inside the district;
- ``--divisions FILE`` overrides both with one map of either structure (a
  ``nested-divisions.json`` of either package generation, or a file in the shipped
  format): with three levels the district is then required, with two levels a given
  district is kept as written (it no longer exists as a unit).

The venue record says which structure matched (``divisions.structure``: ``"2025"`` or
``"2021"``) and where its data came from (``divisions.source``).

Names match with or without diacritics and with or without their unit prefix
("Tỉnh", "Thành phố", "TP.", "Quận", "Huyện", "Thị xã", "Phường", "Xã"...).
Every problem is reported at once, each with its fix (close names are suggested, and
the other map is suggested when the name belongs to it).

Text is NFC-normalised and otherwise kept exactly as typed, so Vietnamese round-trips.
The venue id is derived from the normalised name, the ward code and the address, so the
same registration always gets the same id.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import gzip
import hashlib
import json
import logging
import re
import unicodedata
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from firmware.core.errors import ConfigError

log = logging.getLogger(__name__)

VENUE_SCHEMA = "qrgate.venue/1"
VENUE_ID_PATTERN = re.compile(r"^v-[0-9a-f]{12}$")
# The three-level (2021) map shipped in the package, and its file format.
SHIPPED_2021 = "data/divisions-2021.json.gz"
COMPACT_FORMAT = "qrgate.divisions/1"

# Unit prefixes, longest first so "thành phố" wins over a bare "thành".
_PREFIXES = ("thanh pho trung uong", "thanh pho", "thi tran", "thi xa", "dac khu", "tinh", "quan",
             "huyen", "phuong", "xa", "tp.", "tp", "p.", "q.", "h.", "tx.", "tt.")

# Vietnamese mobile numbers: 0 or +84, then a mobile network prefix, then 7 digits.
_MOBILE = re.compile(r"^(?:\+?84|0)((?:3[2-9]|5[25689]|7[06-9]|8[1-9]|9\d)\d{7})$")


def nfc(text: str) -> str:
    """NFC-normalise and trim text; inner spaces are collapsed to one."""
    return re.sub(r"\s+", " ", unicodedata.normalize("NFC", text)).strip()


def fold(text: str) -> str:
    """Lower case without diacritics ("Thành phố Hồ Chí Minh" -> "thanh pho ho chi minh")."""
    decomposed = unicodedata.normalize("NFD", nfc(text).lower().replace("đ", "d"))
    plain = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return re.sub(r"[\s\-–,]+", " ", plain).strip()


def strip_prefix(folded: str) -> str:
    """Remove one leading unit prefix from a folded name ("phuong dong tho" -> "dong tho")."""
    for prefix in _PREFIXES:
        if folded.startswith(prefix + " ") or (prefix.endswith(".") and folded.startswith(prefix)):
            rest = folded[len(prefix):].strip(" .")
            if rest:
                return rest
    return folded


def name_key(text: str) -> str:
    """The matching key of a unit name: folded, prefix removed, leading zeros of numbers dropped."""
    key = strip_prefix(fold(text))
    return re.sub(r"\b0+(\d)", r"\1", key)


@dataclass(frozen=True)
class Unit:
    """One administrative unit.

    Attributes:
        name: the official name with its prefix ("Phường Hạc Thành").
        code: the statistics office code.
        kind: "tỉnh", "thành phố trung ương", "huyện", "phường", "xã"...
        children: the units inside it (districts, or wards).
    """

    name: str
    code: int
    kind: str = ""
    children: tuple[Unit, ...] = field(default=(), repr=False)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "code": self.code}


@dataclass(frozen=True)
class Divisions:
    """A data set of administrative units, two-level (2025) or three-level (2021).

    Attributes:
        structure: ``"2025"`` (province / ward) or ``"2021"`` (province / district / ward).
        source: where the data came from, recorded in the venue record.
        provinces: the provinces, each with its children.
    """

    structure: str
    source: str
    provinces: tuple[Unit, ...]

    @property
    def levels(self) -> int:
        return 3 if self.structure == "2021" else 2

    @classmethod
    def from_nested_json(cls, data: Any, source: str) -> Divisions:
        """Build from a ``nested-divisions.json`` document (either structure).

        Raises:
            ConfigError: the document is not in that format.
        """
        if not isinstance(data, list) or not data or not isinstance(data[0], dict):
            raise ConfigError(f"{source}: not a nested-divisions list of provinces")
        three = "districts" in data[0]

        def unit(item: dict[str, Any], kids: tuple[Unit, ...] = ()) -> Unit:
            return Unit(nfc(str(item["name"])), int(item["code"]), str(item.get("division_type", "")), kids)

        try:
            if three:
                provinces = tuple(unit(p, tuple(unit(d, tuple(unit(w) for w in d.get("wards", [])))
                                                for d in p["districts"])) for p in data)
            else:
                provinces = tuple(unit(p, tuple(unit(w) for w in p["wards"])) for p in data)
        except (KeyError, TypeError, ValueError) as err:
            raise ConfigError(f"{source}: a unit lacks its name, code or children ({err})") from err
        return cls("2021" if three else "2025", source, provinces)

    @classmethod
    def from_compact_json(cls, doc: Any, source: str) -> Divisions:
        """Build from a ``qrgate.divisions/1`` document (scripts/build-divisions-2021.py).

        Units are ``[code, name, type_index]`` lists with a fourth item, the children,
        above the ward level. The document's own ``source`` (the list it was built from)
        is appended to source.

        Raises:
            ConfigError: the document is not in that format.
        """
        try:
            types = [str(t) for t in doc["types"]]

            def unit(item: list[Any]) -> Unit:
                kids = tuple(unit(k) for k in item[3]) if len(item) > 3 else ()
                return Unit(nfc(item[1]), int(item[0]), types[item[2]], kids)

            provinces = tuple(unit(p) for p in doc["provinces"])
            structure = str(doc["structure"])
            if doc.get("source"):
                source = f"{source}: {doc['source']}"
        except (KeyError, IndexError, TypeError, ValueError) as err:
            raise ConfigError(f"{source}: not a valid {COMPACT_FORMAT} file ({err!r}); rebuild it with "
                              "scripts/build-divisions-2021.py") from err
        if structure not in ("2021", "2025") or not provinces:
            raise ConfigError(f"{source}: structure {structure!r} with {len(provinces)} provinces; "
                              "rebuild it with scripts/build-divisions-2021.py")
        return cls(structure, source, provinces)

    @classmethod
    def from_bytes(cls, raw: bytes, source: str) -> Divisions:
        """Build from file contents: nested-divisions JSON or the compact format, gzipped or not.

        Raises:
            ConfigError: the contents are not JSON in one of those formats.
        """
        try:
            if raw[:2] == b"\x1f\x8b":
                raw = gzip.decompress(raw)
            data = json.loads(raw.decode("utf-8"))
        except (OSError, EOFError, ValueError) as err:
            raise ConfigError(f"{source} cannot be read as JSON or gzipped JSON ({err})") from err
        if isinstance(data, dict) and data.get("format") == COMPACT_FORMAT:
            return cls.from_compact_json(data, source)
        return cls.from_nested_json(data, source)

    @classmethod
    def from_file(cls, path: str | Path) -> Divisions:
        """Load a ``nested-divisions.json`` file of either structure, or a compact (``.json.gz``) one.

        Raises:
            ConfigError: the file is missing or not in one of those formats.
        """
        p = Path(path)
        try:
            raw = p.read_bytes()
        except FileNotFoundError as err:
            raise ConfigError(f"--divisions {p} does not exist; give a nested-divisions.json file "
                              "(from the vietnam-provinces package) or leave it out to use the "
                              "maps that ship with qrgate") from err
        except OSError as err:
            raise ConfigError(f"--divisions {p} cannot be read ({err})") from err
        return cls.from_bytes(raw, f"--divisions {p}")

    @classmethod
    def builtin(cls) -> Divisions:
        """The data of the installed ``vietnam-provinces`` package (its structure is detected)."""
        return _builtin()

    @classmethod
    def shipped_2021(cls) -> Divisions:
        """The three-level (2021) map shipped in ``provisioning/data/divisions-2021.json.gz``.

        Loaded once per process and kept (the data is immutable).

        Raises:
            ConfigError: the file is missing from the installation or damaged.
        """
        return _shipped_2021()


@functools.cache
def _builtin() -> Divisions:
    import vietnam_provinces

    data = json.loads(Path(vietnam_provinces.NESTED_DIVISIONS_JSON_PATH).read_text(encoding="utf-8"))
    version = getattr(vietnam_provinces, "__version__", "?")
    data_version = getattr(vietnam_provinces, "__data_version__", "?")
    return Divisions.from_nested_json(data, f"vietnam-provinces {version} (data {data_version})")


@functools.cache
def _shipped_2021() -> Divisions:
    from importlib import resources

    name = f"provisioning/{SHIPPED_2021}"
    try:
        raw = resources.files("provisioning").joinpath(SHIPPED_2021).read_bytes()
    except OSError as err:
        raise ConfigError(f"{name} is missing from this installation ({err}); reinstall qrgate, rebuild "
                          "it with scripts/build-divisions-2021.py, or give --divisions FILE") from err
    return Divisions.from_bytes(raw, name)


@dataclass(frozen=True)
class DivisionMaps:
    """The two maps a registration is checked against when no ``--divisions`` is given.

    Attributes:
        current: the two-level map in force since 1 July 2025 (province / ward).
        former: the three-level map of 2021 (province / district / ward).
    """

    current: Divisions
    former: Divisions

    @classmethod
    def default(cls) -> DivisionMaps:
        """The installed vietnam-provinces (2025.x) and the shipped 2021 map.

        Raises:
            ConfigError: the installed vietnam-provinces is not a two-level (2025.x) release,
                or the shipped file is missing.
        """
        current = Divisions.builtin()
        if current.levels != 2:
            raise ConfigError(f"the installed {current.source} holds the three-level map; install "
                              "vietnam-provinces>=2025.1 (pip install -U vietnam-provinces) for the "
                              "current one")
        return cls(current, Divisions.shipped_2021())


@dataclass(frozen=True)
class Match:
    """The outcome of looking a name up among units."""

    unit: Unit | None
    problem: str | None = None


# Abbreviated and long prefixes -> the prefix they stand for.
_PREFIX_CANON = {"tp.": "thanh pho", "tp": "thanh pho", "thanh pho trung uong": "thanh pho",
                 "p.": "phuong", "q.": "quan", "h.": "huyen", "tx.": "thi xa", "tt.": "thi tran"}
# Vietnamese tone marks (after NFD); the vowel marks (â, ê, ô, ơ, ư, ă) are not among them.
_TONES = {"\u0300": "2", "\u0301": "1", "\u0303": "4", "\u0309": "3", "\u0323": "5"}


def _toned_word(word: str) -> str:
    """A word with its tone mark moved to the end ("hoá" and "hóa" -> "hoa1"), so the old and new
    tone placements compare equal while Hóa and Hòa stay apart."""
    tone = ""
    kept = []
    for ch in unicodedata.normalize("NFD", word):
        if ch in _TONES:
            tone = _TONES[ch]
        else:
            kept.append(ch)
    return unicodedata.normalize("NFC", "".join(kept)) + tone


@dataclass(frozen=True)
class NameParts:
    """A unit name taken apart for matching.

    Attributes:
        prefix: the unit prefix, folded and spelled out ("thanh pho", "phuong"), or "".
        toned: the rest, lower case, with tones kept (placement-independent).
        folded: the rest without diacritics.
        has_marks: the name after its prefix carries Vietnamese diacritics (then a match must
            keep them); a prefix typed with them ("Phường Ben Thanh") does not count.
    """

    prefix: str
    toned: str
    folded: str
    has_marks: bool

    @classmethod
    def of(cls, text: str) -> NameParts:
        lowered = nfc(text).lower()
        lowered = re.sub(r"^([a-zđ]{1,2})\.\s*", r"\1. ", lowered)  # "p.từ liêm" -> "p. từ liêm"
        words = [w for w in re.split(r"[\s\-–,]+", lowered) if w]
        folded = [fold(w) for w in words]
        prefix = ""
        for candidate in _PREFIXES:
            n = len(candidate.split())
            if len(words) > n and " ".join(folded[:n]) == candidate:
                prefix, words, folded = _PREFIX_CANON.get(candidate, candidate), words[n:], folded[n:]
                break
        # "Phường 01" is "Phường 1".
        def unzero(ws: list[str]) -> str:
            return re.sub(r"\b0+(\d)", r"\1", " ".join(ws))
        # marks in the name itself: "Phường Ben Thanh" is a name typed without diacritics
        return cls(prefix, unzero([_toned_word(w) for w in words]), unzero(folded),
                   any(ord(ch) > 127 for w in words for ch in w))

    def fits(self, other: NameParts) -> bool:
        """Prefixes do not contradict each other (either is missing, or both are the same)."""
        return not self.prefix or not other.prefix or self.prefix == other.prefix


def candidates(text: str, units: tuple[Unit, ...]) -> list[Unit]:
    """The units named text, from the first of these rules that finds any.

    1. the same name (NFC); 2. the same name ignoring case, the tone mark's placement
    ("Hoá"/"Hóa") and the prefix's spelling ("TP."/"Thành phố"); 3. the same without the
    prefix, if the prefixes do not contradict ("Đông Thọ", not "Xã Đông Thọ" for
    "Phường Đông Thọ"); 4. only for text typed without diacritics: the same without
    diacritics and prefix. Text with diacritics never matches a name with other ones
    (Thanh Hóa is not Thanh Hòa); close names are suggested instead.
    """
    wanted = nfc(text)
    exact = [u for u in units if u.name == wanted]
    if exact:
        return exact
    typed = NameParts.of(wanted)
    parts = [(u, NameParts.of(u.name)) for u in units]
    same = [u for u, n in parts if (n.prefix, n.toned) == (typed.prefix, typed.toned)]
    if same:
        return same
    same_rest = [u for u, n in parts if n.toned == typed.toned and typed.fits(n)]
    if same_rest or typed.has_marks:
        return same_rest
    return [u for u, n in parts if n.folded == typed.folded and typed.fits(n)]


def close_names(text: str, units: tuple[Unit, ...], n: int = 4) -> list[Unit]:
    """Up to n units whose names are close to text (for "did you mean")."""
    keys: dict[str, Unit] = {}
    for u in units:
        keys.setdefault(name_key(u.name), u)
    return [keys[k] for k in difflib.get_close_matches(name_key(text), list(keys), n=n, cutoff=0.6)]


def match_unit(text: str, units: tuple[Unit, ...], what: str, where: str) -> Match:
    """Find the unit named text among units (exact, then without diacritics and prefix).

    Args:
        text: the name as typed.
        units: the candidates.
        what: the option name for messages ("--ward").
        where: the parent for messages ("in Thành phố Hà Nội").
    """
    found = candidates(text, units)
    if len(found) == 1:
        return Match(found[0])
    if len(found) > 1:
        names = ", ".join(f"{u.name!r}" for u in found)
        return Match(None, f"{what} {text!r} is ambiguous {where}: it could be {names}; "
                     "give the name with its prefix")
    close = close_names(text, units)
    hint = ("; did you mean " + " or ".join(repr(u.name) for u in close) + "?") if close else \
        "; check the spelling"
    return Match(None, f"{what} {text!r} is not a known unit {where}{hint}")


@dataclass(frozen=True)
class Placement:
    """Where province, district and ward text landed in one map.

    Attributes:
        divisions: the map that was searched.
        province, district, ward: the units found (None where not found or not given).
        problems: one line per field that did not match, each with its fix.
        ward_problem: the index in problems of the ward's line, if any.
        district_from_map: the district was not given but found as the ward's parent.
    """

    divisions: Divisions
    province: Unit | None = None
    district: Unit | None = None
    ward: Unit | None = None
    problems: tuple[str, ...] = ()
    ward_problem: int | None = None
    district_from_map: bool = False

    @property
    def ok(self) -> bool:
        return not self.problems and self.province is not None and self.ward is not None


def place(divisions: Divisions, province: str, district: str, ward: str) -> Placement:
    """Look province, district and ward up in one map, as the registration gives them.

    With a three-level map the district is required and the ward is looked up inside
    it; with a two-level map the ward is looked up in the province and the district is
    not looked at. Empty texts are skipped (the caller reports them as required).
    """
    problems: list[str] = []
    ward_problem = None
    province_u = district_u = ward_u = None
    if province:
        m = match_unit(province, divisions.provinces, "--province", "in Việt Nam")
        province_u = m.unit
        if m.problem:
            problems.append(m.problem)
    if divisions.levels == 3 and not district:
        problems.append(f"--district is required with the three-level map ({divisions.source}); "
                        "give the district (Quận/Huyện/Thị xã/Thành phố) of the ward")
    scope: tuple[Unit, ...] = ()
    scope_text = ""
    if province_u is not None:
        if divisions.levels == 3:
            if district:
                m = match_unit(district, province_u.children, "--district", f"in {province_u.name}")
                district_u = m.unit
                if m.problem:
                    problems.append(m.problem)
                elif district_u is not None:
                    scope, scope_text = district_u.children, f"in {district_u.name}, {province_u.name}"
        else:
            scope, scope_text = province_u.children, f"in {province_u.name}"
    if scope and ward:
        m = match_unit(ward, scope, "--ward", scope_text)
        ward_u = m.unit
        if m.problem:
            ward_problem = len(problems)
            problems.append(m.problem)
    return Placement(divisions, province_u, district_u, ward_u, tuple(problems), ward_problem)


def place_without_district(former: Divisions, province: str, ward: str) -> tuple[Placement | None, str]:
    """Look a ward up in the whole province of the three-level map (no district given).

    Returns:
        (placement, "") when exactly one ward of the province has that name (its district
        is filled in); else (None, hint) where hint says what the three-level map knows
        ("" when it knows nothing useful).
    """
    provinces = candidates(province, former.provinces)
    if len(provinces) != 1:
        return None, ""
    province_u = provinces[0]
    parent: dict[int, Unit] = {}
    wards: list[Unit] = []
    for district_u in province_u.children:
        for ward_u in district_u.children:
            parent[id(ward_u)] = district_u
            wards.append(ward_u)
    found = candidates(ward, tuple(wards))
    if len(found) == 1:
        return Placement(former, province_u, parent[id(found[0])], found[0], district_from_map=True), ""
    if found:
        names = sorted({u.name for u in found})
        districts = [parent[id(u)].name for u in found]
        more = f" and {len(districts) - 6} more" if len(districts) > 6 else ""
        return None, (f"in the 2021 three-level map {province_u.name} has {' and '.join(map(repr, names))} "
                      f"in {', '.join(districts[:6])}{more}: add --district with the ward's district")
    districts = candidates(ward, province_u.children)
    if districts:
        return None, (f"{ward!r} is a 2021 district of {province_u.name}: give it with --district "
                      f"{districts[0].name!r} and the ward with --ward")
    close = close_names(ward, tuple(wards), n=3)
    if close:
        names = " or ".join(f"{u.name!r} ({parent[id(u)].name})" for u in close)
        return None, f"in the 2021 three-level map of {province_u.name}: {names}, with --district"
    return None, ""


def place_in_maps(maps: DivisionMaps, province: str, district: str, ward: str) -> Placement:
    """Pick the map for a registration and look the units up in it.

    With a district: the 2021 three-level map. Without: the current two-level map, then
    (when it does not know the province or ward) the whole province in the 2021 map. A
    failure carries a hint from the other map when that map knows the name.
    """
    if district:
        placed = place(maps.former, province, district, ward)
        if placed.ok or not ward:
            return placed
        hints = []
        current = place(maps.current, province, "", ward)
        if current.ok:
            assert current.ward is not None and current.province is not None
            hints.append(f"in the current two-level map it is {current.ward.name}, {current.province.name}: "
                         "leave out --district to register it that way")
        elif placed.province is not None:
            elsewhere, _ = place_without_district(maps.former, province, ward)
            if elsewhere is not None and elsewhere.ward is not None and elsewhere.district is not None:
                hints.append(f"in the 2021 map {elsewhere.ward.name!r} is in {elsewhere.district.name!r}: "
                             "give that as --district")
        return _with_hint(placed, hints)
    current = place(maps.current, province, "", ward)
    if current.ok or not province or not ward:
        return current
    former, hint = place_without_district(maps.former, province, ward)
    if former is not None:
        return former
    return _with_hint(current, [hint] if hint else [])


def _with_hint(placed: Placement, hints: list[str]) -> Placement:
    """Append hints to the ward's problem line (or to the last line) of a failed placement."""
    if not hints or not placed.problems:
        return placed
    at = placed.ward_problem if placed.ward_problem is not None else len(placed.problems) - 1
    problems = list(placed.problems)
    problems[at] += " (" + "; ".join(hints) + ")"
    return dataclasses.replace(placed, problems=tuple(problems))


def normalise_phone(text: str) -> str | None:
    """Return a Vietnamese mobile number as +84XXXXXXXXX, or None if it is not one.

    Spaces, dots, dashes and parentheses are ignored; ``0``, ``84`` and ``+84`` are accepted.
    """
    compact = re.sub(r"[\s.\-()]", "", text)
    m = _MOBILE.match(compact)
    return f"+84{m.group(1)}" if m else None


def display_phone(e164: str) -> str:
    """+84912345678 -> 0912 345 678."""
    local = "0" + e164[3:]
    return f"{local[:4]} {local[4:7]} {local[7:]}"


def _check_text(value: str | None, option: str, min_len: int, max_len: int, example: str,
                problems: list[str]) -> str:
    text = nfc(value or "")
    if not text:
        problems.append(f"{option} is required, for example {option} \"{example}\"")
    elif len(text) < min_len or len(text) > max_len:
        problems.append(f"{option} {text!r} must be {min_len} to {max_len} characters long")
    elif any(unicodedata.category(ch).startswith("C") for ch in text):
        problems.append(f"{option} contains control characters; type it again as plain text")
    return text


def venue_id_for(name: str, ward_code: int, address: str) -> str:
    """The stable venue id: ``v-`` and 12 hex digits of SHA-256 over the normalised fields."""
    material = "\x00".join((fold(name), str(ward_code), fold(address)))
    return "v-" + hashlib.sha256(material.encode("utf-8")).hexdigest()[:12]


@dataclass(frozen=True)
class Venue:
    """A validated venue registration (schema ``qrgate.venue/1``)."""

    venue_id: str
    name: str
    province: Unit
    district: Unit | None
    district_text: str | None
    ward: Unit
    address: str
    registrant: str
    phone: str
    structure: str
    source: str
    created_at: str = ""

    @property
    def full_address(self) -> str:
        """Street address, ward, district (if any) and province, comma separated."""
        district = self.district.name if self.district else self.district_text
        province = self.province.name
        if self.province.kind == "tỉnh" and strip_prefix(fold(province)) == fold(province):
            province = "Tỉnh " + province  # the 2025 data names provinces without their prefix
        parts = [self.address, self.ward.name, district, province]
        return ", ".join(p for p in parts if p)

    def to_json(self) -> dict[str, Any]:
        """The venue record written to ``<venue_id>.json``."""
        district: dict[str, Any] | None
        if self.district is not None:
            district = self.district.to_json()
        elif self.district_text:
            district = {"name": self.district_text, "code": None}
        else:
            district = None
        return {
            "schema": VENUE_SCHEMA,
            "venue_id": self.venue_id,
            "name": self.name,
            "province": self.province.to_json(),
            "district": district,
            "ward": self.ward.to_json(),
            "address": self.address,
            "full_address": self.full_address,
            "registrant": {"name": self.registrant, "phone": self.phone},
            "divisions": {"structure": self.structure, "source": self.source},
            "created_at": self.created_at,
        }


def validate_venue(*, name: str | None, province: str | None, ward: str | None, address: str | None,
                   registrant: str | None, phone: str | None, district: str | None = None,
                   divisions: Divisions | DivisionMaps) -> Venue:
    """Check every registration field and return the Venue.

    Args:
        divisions: both maps (``DivisionMaps.default()``), chosen per registration as the
            module docstring says; or one map (``--divisions FILE``) used alone.

    Raises:
        ConfigError: with one line per problem (all of them), each with its fix.
    """
    problems: list[str] = []
    name_t = _check_text(name, "--name", 2, 200, "Bến xe Mỹ Đình", problems)
    address_t = _check_text(address, "--address", 2, 300, "Số 20 Phạm Hùng", problems)
    registrant_t = _check_text(registrant, "--registrant", 2, 100, "Nguyễn Văn A", problems)
    if registrant_t and re.search(r"\d", registrant_t):
        problems.append(f"--registrant {registrant_t!r} contains digits; give the person's full name")
    phone_e164 = None
    if not (phone or "").strip():
        problems.append("--phone is required: the registrant's mobile number, for example 0912 345 678")
    else:
        phone_e164 = normalise_phone(phone or "")
        if phone_e164 is None:
            problems.append(f"--phone {phone!r} is not a Vietnamese mobile number; give 10 digits starting "
                            "with 03, 05, 07, 08 or 09 (or +84 and 9 digits), e.g. 0912 345 678")
    province_t, district_t, ward_t = nfc(province or ""), nfc(district or ""), nfc(ward or "")
    if not province_t:
        problems.append("--province is required, for example --province \"Thành phố Hà Nội\"")
    if not ward_t:
        problems.append("--ward is required, for example --ward \"Phường Hạc Thành\"")
    if isinstance(divisions, DivisionMaps):
        placed = place_in_maps(divisions, province_t, district_t, ward_t)
    else:
        placed = place(divisions, province_t, district_t, ward_t)
        if divisions.levels == 2 and district_t and placed.ward_problem is not None:
            placed = _with_hint(placed, [
                "a ward from before July 2025? give its current name, or leave out --divisions to use "
                "the 2021 three-level map that ships with qrgate"])
    problems.extend(placed.problems)
    if problems:
        raise ConfigError(problems)
    assert placed.province is not None and placed.ward is not None
    used = placed.divisions
    district_text = district_t or None
    if used.levels == 2 and district_text:
        log.info("district %r kept as written: the 2025 two-level map has no districts", district_text)
    if placed.district_from_map:
        log.info("ward %r found in the 2021 three-level map only; district %r taken from the map",
                 placed.ward.name, placed.district.name if placed.district else None)
    return Venue(
        venue_id=venue_id_for(name_t, placed.ward.code, address_t),
        name=name_t, province=placed.province, district=placed.district,
        district_text=district_text if placed.district is None else None,
        ward=placed.ward, address=address_t, registrant=registrant_t, phone=phone_e164 or "",
        structure=used.structure, source=used.source,
    )


def load_venue(path: str | Path) -> dict[str, Any]:
    """Read and check a venue record written by ``write_venue``.

    Raises:
        ConfigError: the file is missing, not JSON, or not a venue record.
    """
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise ConfigError(f"--venue {p} does not exist; make it with `qrgate provision venue ... --out DIR`") from err
    except (OSError, ValueError) as err:
        raise ConfigError(f"--venue {p} is not a readable JSON venue record ({err})") from err
    if not isinstance(data, dict) or data.get("schema") != VENUE_SCHEMA:
        raise ConfigError(f"--venue {p} is not a venue record (schema {VENUE_SCHEMA} expected); "
                          "make one with `qrgate provision venue`")
    vid = data.get("venue_id")
    if not isinstance(vid, str) or not VENUE_ID_PATTERN.match(vid) or not isinstance(data.get("name"), str):
        raise ConfigError(f"--venue {p} has no valid venue_id/name; make it again with `qrgate provision venue`")
    return data


def write_venue(venue: Venue, out_dir: str | Path, now_s: float) -> tuple[Path, dict[str, Any]]:
    """Write ``<out_dir>/<venue_id>.json`` (keeping ``created_at`` of an earlier run).

    Returns:
        The path and the record written.
    """
    from firmware.adapters.atomic_files import write_atomic

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{venue.venue_id}.json"
    created = datetime.fromtimestamp(now_s, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if path.exists():
        try:
            created = json.loads(path.read_text(encoding="utf-8")).get("created_at") or created
        except (OSError, ValueError):
            pass
    record = dataclasses.replace(venue, created_at=created).to_json()
    text = json.dumps(record, ensure_ascii=False, indent=2) + "\n"
    # 0640: the record holds the registrant's phone number.
    write_atomic(path, text.encode("utf-8"), mode=0o640)
    return path, record


def venue_names_in(directory: str | Path) -> dict[str, str]:
    """{venue_id: name} of the venue records (``<venue_id>.json``) in a folder.

    Raises:
        ConfigError: the folder does not exist. Files that are not venue records are skipped.
    """
    root = Path(directory)
    if not root.is_dir():
        raise ConfigError(f"--venues {root} is not a folder; give the --out folder of `qrgate provision venue`")
    names = {}
    for path in sorted(root.glob("v-*.json")):
        try:
            record = load_venue(path)
        except ConfigError:
            continue
        names[record["venue_id"]] = record["name"]
    return names

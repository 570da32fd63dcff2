"""Venue registration: validate the 2021 registration fields and write a venue record.

The 2021 form (Phụ lục I of the original order) asked for the venue's name, its
province, district and ward, the street address, and the registrant's name and mobile
phone. Vietnam's administrative map changed on 1 July 2025 from three levels
(province / district / ward) to two (province / ward). Both are accepted:

- the data set comes from the ``vietnam-provinces`` package: 2025.x ships the
  two-level structure, 0.x (before 2025) the three-level one; any file in either
  package's ``nested-divisions.json`` format can be given with ``--divisions FILE``
  (the structure is detected from the file);
- with three-level data the district is required and the ward is looked up in it;
  with two-level data the ward is looked up in the province and a district, if given,
  is kept as written (it no longer exists as a unit).

Names match with or without diacritics and with or without their unit prefix
("Tỉnh", "Thành phố", "TP.", "Quận", "Huyện", "Thị xã", "Phường", "Xã"...).
Every problem is reported at once, each with its fix (close names are suggested).

Text is NFC-normalised and otherwise kept exactly as typed, so Vietnamese round-trips.
The venue id is derived from the normalised name, the ward and the address, so the
same registration always gets the same id.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import logging
import re
import unicodedata
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from firmware.errors import ConfigError

log = logging.getLogger(__name__)

VENUE_SCHEMA = "qrgate.venue/1"
VENUE_ID_PATTERN = re.compile(r"^v-[0-9a-f]{12}$")

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
    def from_file(cls, path: str | Path) -> Divisions:
        """Load a ``nested-divisions.json`` file of either structure.

        Raises:
            ConfigError: the file is missing or not in that format.
        """
        p = Path(path)
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError as err:
            raise ConfigError(f"--divisions {p} does not exist; give a nested-divisions.json file "
                              "(from the vietnam-provinces package) or leave it out") from err
        except (OSError, ValueError) as err:
            raise ConfigError(f"--divisions {p} cannot be read as JSON ({err})") from err
        return cls.from_nested_json(data, str(p))

    @classmethod
    def builtin(cls) -> Divisions:
        """The data of the installed ``vietnam-provinces`` package (its structure is detected)."""
        import vietnam_provinces

        data = json.loads(Path(vietnam_provinces.NESTED_DIVISIONS_JSON_PATH).read_text(encoding="utf-8"))
        version = getattr(vietnam_provinces, "__version__", "?")
        data_version = getattr(vietnam_provinces, "__data_version__", "?")
        return cls.from_nested_json(data, f"vietnam-provinces {version} (data {data_version})")


@dataclass(frozen=True)
class Match:
    """The outcome of looking a name up among units."""

    unit: Unit | None
    problem: str | None = None


def match_unit(text: str, units: tuple[Unit, ...], what: str, where: str) -> Match:
    """Find the unit named text among units (exact, then without diacritics and prefix).

    Args:
        text: the name as typed.
        units: the candidates.
        what: the option name for messages ("--ward").
        where: the parent for messages ("in Thành phố Hà Nội").
    """
    wanted = nfc(text)
    exact = [u for u in units if u.name == wanted]
    if len(exact) == 1:
        return Match(exact[0])
    folded = fold(wanted)
    same_fold = [u for u in units if fold(u.name) == folded]
    if len(same_fold) == 1:
        return Match(same_fold[0])
    key = name_key(wanted)
    by_key = [u for u in units if name_key(u.name) == key]
    if len(by_key) == 1:
        return Match(by_key[0])
    if len(by_key) > 1:
        names = ", ".join(f"{u.name!r}" for u in by_key)
        return Match(None, f"{what} {text!r} is ambiguous {where}: it could be {names}; "
                     "give the name with its prefix")
    keys = {name_key(u.name): u for u in units}
    close = difflib.get_close_matches(key, list(keys), n=4, cutoff=0.6)
    hint = ("; did you mean " + " or ".join(repr(keys[k].name) for k in close) + "?") if close else \
        "; check the spelling"
    return Match(None, f"{what} {text!r} is not a known unit {where}{hint}")


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
        if self.province.kind == "tỉnh" and not fold(province).startswith("tinh "):
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
                   divisions: Divisions) -> Venue:
    """Check every registration field and return the Venue.

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
    province_u = district_u = ward_u = None
    if not (province or "").strip():
        problems.append("--province is required, for example --province \"Thành phố Hà Nội\"")
    else:
        m = match_unit(province or "", divisions.provinces, "--province", "in Việt Nam")
        province_u = m.unit
        if m.problem:
            problems.append(m.problem)
    if divisions.levels == 3 and not (district or "").strip():
        problems.append(f"--district is required with the three-level data ({divisions.source}); "
                        "give the district (Quận/Huyện/Thị xã/Thành phố) of the ward")
    if not (ward or "").strip():
        problems.append("--ward is required, for example --ward \"Phường Hạc Thành\"")
    wards_scope: tuple[Unit, ...] = ()
    scope_text = ""
    if province_u is not None:
        if divisions.levels == 3:
            if (district or "").strip():
                m = match_unit(district or "", province_u.children, "--district", f"in {province_u.name}")
                district_u = m.unit
                if m.problem:
                    problems.append(m.problem)
                elif district_u is not None:
                    wards_scope, scope_text = district_u.children, f"in {district_u.name}, {province_u.name}"
        else:
            wards_scope, scope_text = province_u.children, f"in {province_u.name}"
    if wards_scope and (ward or "").strip():
        m = match_unit(ward or "", wards_scope, "--ward", scope_text)
        ward_u = m.unit
        if m.problem:
            extra = ""
            if divisions.levels == 2 and (district or "").strip():
                extra = (" (a ward from before July 2025? give its current name, or load the "
                         "three-level data with --divisions FILE)")
            problems.append(m.problem + extra)
    if problems:
        raise ConfigError(problems)
    assert province_u is not None and ward_u is not None
    district_text = nfc(district or "") or None
    if divisions.levels == 2 and district_text:
        log.info("district %r kept as written: the 2025 two-level data has no districts", district_text)
    return Venue(
        venue_id=venue_id_for(name_t, ward_u.code, address_t),
        name=name_t, province=province_u, district=district_u,
        district_text=district_text if district_u is None else None,
        ward=ward_u, address=address_t, registrant=registrant_t, phone=phone_e164 or "",
        structure=divisions.structure, source=divisions.source,
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
    from firmware.state_store import write_atomic

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
    write_atomic(path, text.encode("utf-8"), 0o640)
    return path, record

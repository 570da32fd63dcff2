#!/usr/bin/env python3
"""Build provisioning/data/divisions-2021.json.gz, the three-level (2021) administrative map.

Vietnam's administrative units before 1 July 2025 had three levels: province, district,
ward. Their names and codes are public facts from the General Statistics Office (GSO)
list. The last release of the ``vietnam-provinces`` package that holds that structure is
0.6.0 (data retrieved 2025-01-04, the final state of the three-level map). Get it with::

    pip download vietnam-provinces==0.6.0 --no-deps -d /tmp/vp

then run, from the repository root, with the wheel or the JSON file unpacked from it::

    python3 scripts/build-divisions-2021.py /tmp/vp/vietnam_provinces-0.6.0-py3-none-any.whl
    python3 scripts/build-divisions-2021.py /tmp/vp/vietnam_provinces/data/nested-divisions.json

The output keeps only what matching needs: codes, names and division types. The source's
``division_type`` says only "tỉnh"/"huyện"/"xã" for every unit, so the real type is
read from the name's prefix (a name without a known prefix stops the build). The file is
minimal JSON, gzip -9, with a zero timestamp and no file name so a rebuild is
byte-identical. Format ``qrgate.divisions/1``::

    {"format": "qrgate.divisions/1", "structure": "2021", "source": "...",
     "types": ["tỉnh", ...],
     "provinces": [[code, name, type_index,
                    [[code, name, type_index, [[code, name, type_index], ...]], ...]], ...]}

Standard library only; no network access.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import re
import sys
import unicodedata
import zipfile
from pathlib import Path
from typing import Any

FORMAT = "qrgate.divisions/1"
DEFAULT_OUT = Path(__file__).resolve().parent.parent / "provisioning" / "data" / "divisions-2021.json.gz"
JSON_IN_WHEEL = "vietnam_provinces/data/nested-divisions.json"
INIT_IN_WHEEL = "vietnam_provinces/__init__.py"
# SHA-256 of nested-divisions.json in vietnam-provinces 0.6.0: names the source when the
# JSON file is given alone, without the package's __init__.py next to it.
KNOWN_SOURCES = {
    "a7de74aa026531fff09636cbb6657dab09a83eaff5f230e4736f66e0b7460001": ("0.6.0", "2025-01-04"),
}

# Name prefix -> division type, per level; longest prefix first.
PROVINCE_TYPES = (("Thành phố ", "thành phố trung ương"), ("Tỉnh ", "tỉnh"))
DISTRICT_TYPES = (("Thành phố ", "thành phố"), ("Thị xã ", "thị xã"), ("Quận ", "quận"), ("Huyện ", "huyện"))
WARD_TYPES = (("Thị trấn ", "thị trấn"), ("Phường ", "phường"), ("Xã ", "xã"))
TYPES = ("tỉnh", "thành phố trung ương", "thành phố", "thị xã", "quận", "huyện", "phường", "xã", "thị trấn")


def read_source(path: Path) -> tuple[list[dict[str, Any]], str, str]:
    """Return (nested divisions, package version, data version) from a wheel or a JSON file.

    The versions come from the package's ``__init__.py`` (in the wheel, or at
    ``../__init__.py`` of an unpacked JSON file), else from KNOWN_SOURCES, else "unknown".
    """
    if path.suffix == ".whl":
        with zipfile.ZipFile(path) as whl:
            raw = whl.read(JSON_IN_WHEEL)
            init = whl.read(INIT_IN_WHEEL).decode("utf-8")
    else:
        raw = path.read_bytes()
        init_path = path.resolve().parent.parent / "__init__.py"
        init = init_path.read_text(encoding="utf-8") if init_path.exists() else ""
    version = re.search(r"__version__\s*=\s*['\"]([^'\"]+)", init)
    data_version = re.search(r"__data_version__\s*=\s*['\"]([^'\"]+)", init)
    known = KNOWN_SOURCES.get(hashlib.sha256(raw).hexdigest(), ("unknown", "unknown"))
    return (json.loads(raw.decode("utf-8")), version.group(1) if version else known[0],
            data_version.group(1) if data_version else known[1])


def unit_type(name: str, table: tuple[tuple[str, str], ...], where: str) -> int:
    """The index in TYPES of the type named by name's prefix; exits if there is none."""
    for prefix, kind in table:
        # Case-insensitive: the list has a few names such as "Thành Phố Bắc Kạn".
        if name.lower().startswith(prefix.lower()) and len(name) > len(prefix):
            return TYPES.index(kind)
    sys.exit(f"{where}: {name!r} has no known prefix ({', '.join(p.strip() for p, _ in table)}); "
             "is this the three-level data of vietnam-provinces 0.x?")


def compact(data: list[dict[str, Any]]) -> list[Any]:
    """The nested provinces as [code, name, type, children] lists, in source order."""
    if not data or "districts" not in data[0]:
        sys.exit("not the three-level nested-divisions.json (provinces have no 'districts'); "
                 "use vietnam-provinces 0.6.0, not 2025.x")
    provinces = []
    for p in data:
        p_name = unicodedata.normalize("NFC", p["name"])
        districts = []
        for d in p["districts"]:
            d_name = unicodedata.normalize("NFC", d["name"])
            wards = [[int(w["code"]), unicodedata.normalize("NFC", w["name"]),
                      unit_type(unicodedata.normalize("NFC", w["name"]), WARD_TYPES, d_name)]
                     for w in d.get("wards", [])]
            districts.append([int(d["code"]), d_name, unit_type(d_name, DISTRICT_TYPES, p_name), wards])
        provinces.append([int(p["code"]), p_name, unit_type(p_name, PROVINCE_TYPES, "provinces"), districts])
    return provinces


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="vietnam_provinces-0.6.0-py3-none-any.whl or its "
                        "vietnam_provinces/data/nested-divisions.json")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output file (default {DEFAULT_OUT})")
    args = parser.parse_args(argv)

    data, version, data_version = read_source(args.source)
    provinces = compact(data)
    doc = {
        "format": FORMAT,
        "structure": "2021",
        "source": f"GSO list as published in vietnam-provinces {version} (data {data_version})",
        "types": list(TYPES),
        "provinces": provinces,
    }
    text = json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    buf = io.BytesIO()
    # mtime=0 and no file name in the header: the same input gives the same bytes.
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, compresslevel=9, mtime=0) as gz:
        gz.write(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(buf.getvalue())
    n_districts = sum(len(p[3]) for p in provinces)
    n_wards = sum(len(d[3]) for p in provinces for d in p[3])
    print(f"{args.out}: {len(provinces)} provinces, {n_districts} districts, {n_wards} wards; "
          f"{len(text):,} bytes JSON, {len(buf.getvalue()):,} bytes gzip; "
          f"sha256 {hashlib.sha256(buf.getvalue()).hexdigest()[:16]}; source: {doc['source']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

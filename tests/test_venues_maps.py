"""Venue registration with both shipped maps: the 2021 three-level one and the current two-level one.

No test here passes --divisions except where the override itself is tested: both
structures must work out of the box.
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import time
from importlib import resources
from pathlib import Path

import pytest

from firmware.cli import main
from firmware.core.errors import ConfigError
from provisioning.venues import DivisionMaps, Divisions, validate_venue, write_venue

ROOT = Path(__file__).resolve().parent.parent
PERSON = dict(registrant="Nguyễn Văn A", phone="0912 345 678")


@pytest.fixture(scope="module")
def maps() -> DivisionMaps:
    return DivisionMaps.default()


def problems_of(**fields) -> list[str]:
    with pytest.raises(ConfigError) as err:
        validate_venue(**fields)
    return err.value.problems


def test_shipped_2021_map_holds_the_whole_three_level_structure_and_loads_fast(maps):
    raw = resources.files("provisioning").joinpath("data/divisions-2021.json.gz").read_bytes()
    assert 50_000 < len(raw) < 250_000, "compact: codes, names and types only"
    started = time.perf_counter()
    loaded = Divisions.from_bytes(raw, "shipped")
    load_s = time.perf_counter() - started
    print(f"\nshipped 2021 map: {len(raw):,} bytes, parsed into units in {load_s * 1000:.1f} ms")
    assert load_s < 1.0, f"loading the shipped map took {load_s:.2f} s"
    former = maps.former
    assert former.structure == "2021" and loaded.provinces == former.provinces
    assert len(former.provinces) == 63
    assert sum(len(p.children) for p in former.provinces) == 696
    assert sum(len(d.children) for p in former.provinces for d in p.children) == 10051
    assert former.source == ("provisioning/data/divisions-2021.json.gz: GSO list as published in "
                             "vietnam-provinces 0.6.0 (data 2025-01-04)")
    kinds = {u.kind for p in former.provinces for d in p.children for u in (p, d, *d.children)}
    assert kinds == {"tỉnh", "thành phố trung ương", "thành phố", "thị xã", "quận", "huyện",
                     "phường", "xã", "thị trấn"}
    assert maps.current.structure == "2025" and len(maps.current.provinces) == 34


def test_the_2021_orders_own_example_validates_without_any_divisions_flag(maps, tmp_path):
    venue = validate_venue(name="Sở Lao động - Thương binh và Xã hội tỉnh Thanh Hóa",
                           province="Tỉnh Thanh Hóa", district="Thành phố Thanh Hóa", ward="Phường Đông Thọ",
                           address="Số 74 Tô Vĩnh Diện", registrant="Vũ Thị Hương", phone="038 663 2627",
                           divisions=maps)
    _, record = write_venue(venue, tmp_path, now_s=1.7e9)
    assert (record["province"], record["district"], record["ward"]) == (
        {"name": "Tỉnh Thanh Hóa", "code": 38}, {"name": "Thành phố Thanh Hóa", "code": 380},
        {"name": "Phường Đông Thọ", "code": 14758})
    assert record["full_address"] == ("Số 74 Tô Vĩnh Diện, Phường Đông Thọ, Thành phố Thanh Hóa, "
                                      "Tỉnh Thanh Hóa")
    assert record["divisions"] == {"structure": "2021", "source": maps.former.source}
    # The id is the one an earlier release gave with --divisions and the 0.6.0 file.
    assert record["venue_id"] == "v-4987a732f889"


def test_a_ha_noi_three_level_address_validates_and_the_district_may_be_left_out(maps):
    fields = dict(name="Nhà văn hóa phường Phúc Xá", province="Thành phố Hà Nội", address="Số 1 Phúc Xá",
                  **PERSON)
    with_district = validate_venue(**fields, district="Quận Ba Đình", ward="Phường Phúc Xá", divisions=maps)
    assert (with_district.province.code, with_district.district.code, with_district.ward.code) == (1, 1, 1)
    assert with_district.full_address == "Số 1 Phúc Xá, Phường Phúc Xá, Quận Ba Đình, Thành phố Hà Nội"
    assert with_district.structure == "2021"
    # Not in the current map; exactly one 2021 ward of Hà Nội has the name: its district comes from the map.
    without = validate_venue(**fields, district=None, ward="phuc xa", divisions=maps)
    assert (without.structure, without.district, without.ward) == (
        "2021", with_district.district, with_district.ward)
    assert without.venue_id == with_district.venue_id


def test_a_current_two_level_address_validates_with_the_same_id_as_before(maps):
    venue = validate_venue(name="Bến xe Mỹ Đình", province="Hà Nội", ward="Phường Từ Liêm",
                           address="Số 20 Phạm Hùng", **PERSON, divisions=maps)
    assert (venue.structure, venue.province.name, venue.district, venue.ward.name) == (
        "2025", "Thành phố Hà Nội", None, "Phường Từ Liêm")
    assert venue.source.startswith("vietnam-provinces 2025.")
    assert venue.venue_id == "v-b7b6b8ea3fbc"  # the README's example, made before both maps shipped
    hac_thanh = validate_venue(name="Sở Y tế", province="Thanh Hóa", ward="Phường Hạc Thành",
                               address="Số 101 Nguyễn Trãi", **PERSON, divisions=maps)
    assert hac_thanh.full_address == "Số 101 Nguyễn Trãi, Phường Hạc Thành, Tỉnh Thanh Hóa"


def test_an_unknown_ward_in_the_three_level_map_fails_with_close_names(maps):
    assert problems_of(name="Nhà văn hóa", province="Hà Nội", district="Ba Đình", ward="Phường Phúc Xáa",
                       address="Số 1", **PERSON, divisions=maps) == [
        "--ward 'Phường Phúc Xáa' is not a known unit in Quận Ba Đình, Thành phố Hà Nội; "
        "did you mean 'Phường Phúc Xá'?"]


def test_an_unknown_ward_in_the_two_level_map_fails_with_close_names_from_both_maps(maps):
    assert problems_of(name="Bến xe", province="Hà Nội", ward="Phường Từ Liêmm", address="Số 1",
                       **PERSON, divisions=maps) == [
        "--ward 'Phường Từ Liêmm' is not a known unit in Thành phố Hà Nội; did you mean 'Phường Từ Liêm' "
        "or 'Xã Thư Lâm'? (in the 2021 three-level map of Thành phố Hà Nội: 'Phường Tứ Liên' "
        "(Quận Tây Hồ) or 'Xã Tuy Lai' (Huyện Mỹ Đức) or 'Xã Tứ Hiệp' (Huyện Thanh Trì), with --district)"]


def test_every_problem_is_still_reported_at_once_with_both_maps(maps):
    problems = problems_of(name="B", province="Ha Noii", ward="Tu Liem", address="", registrant="A1",
                           phone="0123456789", divisions=maps)
    assert len(problems) == 5, problems
    assert any("--province 'Ha Noii'" in p and "did you mean 'Thành phố Hà Nội'" in p for p in problems)


@pytest.mark.parametrize("fields,hint", [
    # A current ward given with a 2021 district: the two-level map knows it.
    (dict(province="Hà Nội", district="Quận Nam Từ Liêm", ward="Phường Từ Liêm"),
     "in the current two-level map it is Phường Từ Liêm, Thành phố Hà Nội: leave out --district"),
    # A 2021 district typed as the ward, without --district.
    (dict(province="Thanh Hóa", district=None, ward="Thành phố Thanh Hóa"),
     "'Thành phố Thanh Hóa' is a 2021 district of Tỉnh Thanh Hóa: give it with --district "
     "'Thành phố Thanh Hóa' and the ward with --ward"),
    # A 2021 ward name found in several districts.
    (dict(province="Hồ Chí Minh", district=None, ward="Phường 1"),
     "in the 2021 three-level map Thành phố Hồ Chí Minh has 'Phường 1' in Quận Gò Vấp, "),
    # The wrong district for a 2021 ward.
    (dict(province="Thanh Hóa", district="Huyện Nga Sơn", ward="Đông Thọ"),
     "in the 2021 map 'Phường Đông Thọ' is in 'Thành phố Thanh Hóa': give that as --district"),
])
def test_a_failure_suggests_the_other_map_when_it_knows_the_name(maps, fields, hint):
    problems = problems_of(name="Bến xe", address="Số 1", **PERSON, **fields, divisions=maps)
    assert len(problems) == 1 and hint in problems[0], problems


@pytest.mark.parametrize("province,district,ward,expected", [
    ("Thanh Hoá", "thanh pho thanh hoa", "Đông Thọ", "Phường Đông Thọ"),   # old tone placement, no prefix
    ("thanh hoa", "TP. Thanh Hóa", "P. Đông Thọ", "Phường Đông Thọ"),
    ("Hồ Chí Minh", "Quận 03", "phuong 01", "Phường 1"),
])
def test_three_level_names_match_loosely_where_it_is_safe(maps, province, district, ward, expected):
    venue = validate_venue(name="Bến xe", province=province, district=district, ward=ward, address="Số 1",
                           **PERSON, divisions=maps)
    assert venue.ward.name == expected


def test_a_name_typed_with_diacritics_never_matches_other_diacritics_or_another_unit_type(maps):
    # "Thanh Hóa" is not "Thanh Hòa", and a "Thành phố" is not a "Xã": no match, only suggestions.
    problems = problems_of(name="Bến xe", province="Thanh Hóa", ward="Thành phố Thanh Hóa", address="Số 1",
                           **PERSON, divisions=maps)
    assert "Xã Thanh Hòa" not in problems[0].split("(")[0]
    problems = problems_of(name="Bến xe", province="Thanh Hóa", district="Thành phố Thanh Hóa",
                           ward="Xã Đông Thọ", address="Số 1", **PERSON, divisions=maps)
    assert problems[0].startswith("--ward 'Xã Đông Thọ' is not a known unit in Thành phố Thanh Hóa")


def test_provision_venue_command_takes_a_2021_address_without_divisions(tmp_path, capsys):
    rc = main(["provision", "venue", "--name", "Nhà văn hóa", "--province", "Hà Nội", "--district", "Ba Đình",
               "--ward", "Phúc Xá", "--address", "Số 1 Phúc Xá", "--registrant", "Trần Thị Bình",
               "--phone", "0987 654 321", "--out", str(tmp_path), "--no-pdf"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    record = json.loads((tmp_path / f"{out.strip()}.json").read_text(encoding="utf-8"))
    assert record["divisions"]["structure"] == "2021"
    assert record["full_address"] == "Số 1 Phúc Xá, Phường Phúc Xá, Quận Ba Đình, Thành phố Hà Nội"
    assert "units from the 2021 map: provisioning/data/divisions-2021.json.gz" in err


def test_divisions_file_still_overrides_both_maps(tmp_path, capsys):
    # A compact file (the shipped one, copied) given with --divisions is the only map used:
    # a current two-level address is then refused, with the district required.
    raw = resources.files("provisioning").joinpath("data/divisions-2021.json.gz").read_bytes()
    (tmp_path / "old.json.gz").write_bytes(raw)
    rc = main(["provision", "venue", "--name", "Bến xe", "--province", "Hà Nội", "--ward", "Phường Từ Liêm",
               "--address", "Số 1", "--registrant", "Nguyễn Văn A", "--phone", "0912345678",
               "--out", str(tmp_path / "out"), "--divisions", str(tmp_path / "old.json.gz")])
    assert rc == 78
    assert "--district is required with the three-level map" in capsys.readouterr().err


def test_build_script_keeps_codes_names_and_types_and_is_reproducible(tmp_path):
    nested = [{"name": "Tỉnh Thanh Hóa", "code": 38, "codename": "tinh_thanh_hoa", "division_type": "tỉnh",
               "phone_code": 237, "districts": [
                   {"name": "Thành Phố Thanh Hóa", "code": 380, "division_type": "huyện", "codename": "x",
                    "wards": [{"name": "Phường Đông Thọ", "code": 14758, "division_type": "xã"},
                              {"name": "Thị trấn Rừng Thông", "code": 16360, "division_type": "xã"}]}]}]
    source = tmp_path / "nested-divisions.json"
    source.write_text(json.dumps(nested, ensure_ascii=False), encoding="utf-8")
    script = ROOT / "scripts" / "build-divisions-2021.py"
    outs = []
    for n in (1, 2):
        out = tmp_path / f"out{n}.json.gz"
        run = subprocess.run([sys.executable, str(script), str(source), "--out", str(out)],
                             capture_output=True, text=True, timeout=60, check=False)
        assert run.returncode == 0, run.stderr
        outs.append(out.read_bytes())
    assert outs[0] == outs[1], "same input, same bytes"
    doc = json.loads(gzip.decompress(outs[0]))
    assert doc["format"] == "qrgate.divisions/1" and doc["structure"] == "2021"
    loaded = Divisions.from_bytes(outs[0], "built")
    (province,) = loaded.provinces
    (district,) = province.children
    assert (province.kind, district.name, district.kind) == ("tỉnh", "Thành Phố Thanh Hóa", "thành phố")
    assert [(w.name, w.code, w.kind) for w in district.children] == [
        ("Phường Đông Thọ", 14758, "phường"), ("Thị trấn Rừng Thông", 16360, "thị trấn")]
    # The two-level data (2025.x) is refused: it has no districts.
    source.write_text(json.dumps([{"name": "Hà Nội", "code": 1, "wards": []}]), encoding="utf-8")
    run = subprocess.run([sys.executable, str(script), str(source), "--out", str(tmp_path / "bad.gz")],
                         capture_output=True, text=True, timeout=60, check=False)
    assert run.returncode != 0 and "use vietnam-provinces 0.6.0" in run.stderr

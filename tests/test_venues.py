"""Venue registration: fields, administrative units (2021 and 2025), phone, poster."""

from __future__ import annotations

import json
import re
import unicodedata

import pytest
from PIL import Image

from firmware.cli import main
from firmware.core.errors import ConfigError
from provisioning.poster import MIN_QR_MM, write_poster
from provisioning.venues import Divisions, normalise_phone, validate_venue, write_venue

# A small three-level data set in the format of vietnam-provinces before 2025 (the 2021
# structure), with the address from the 2021 order's example.
OLD_DIVISIONS = [
    {"name": "Tỉnh Thanh Hóa", "code": 38, "division_type": "tỉnh", "districts": [
        {"name": "Thành phố Thanh Hóa", "code": 380, "division_type": "thành phố", "wards": [
            {"name": "Phường Đông Thọ", "code": 14758, "division_type": "phường"},
            {"name": "Phường Điện Biên", "code": 14755, "division_type": "phường"},
        ]},
        {"name": "Huyện Đông Sơn", "code": 405, "division_type": "huyện", "wards": [
            {"name": "Thị trấn Rừng Thông", "code": 16360, "division_type": "thị trấn"},
        ]},
    ]},
    {"name": "Thành phố Hồ Chí Minh", "code": 79, "division_type": "thành phố trung ương", "districts": [
        {"name": "Quận 1", "code": 760, "division_type": "quận", "wards": [
            {"name": "Phường Bến Nghé", "code": 26740, "division_type": "phường"},
            {"name": "Phường 1", "code": 26999, "division_type": "phường"},
        ]},
    ]},
]

GOOD = dict(name="Bến xe Mỹ Đình", province="Thành phố Hà Nội", ward="Phường Từ Liêm",
            address="Số 20 Phạm Hùng", registrant="Nguyễn Văn A", phone="0912 345 678")


@pytest.fixture(scope="module")
def current() -> Divisions:
    return Divisions.builtin()


@pytest.fixture
def old() -> Divisions:
    return Divisions.from_nested_json(OLD_DIVISIONS, "test 2021 data")


def test_builtin_data_is_the_2025_two_level_structure(current):
    assert current.structure == "2025"
    assert len(current.provinces) == 34
    assert "vietnam-provinces" in current.source


@pytest.mark.parametrize("province,ward", [
    ("Thành phố Hà Nội", "Phường Từ Liêm"),
    ("Hà Nội", "Từ Liêm"),
    ("ha noi", "phuong tu liem"),
    ("TP. Hà Nội", "P. Từ Liêm"),
    ("THÀNH PHỐ HÀ NỘI", "PHƯỜNG TỪ LIÊM"),
])
def test_names_match_with_or_without_diacritics_and_prefixes(current, province, ward):
    venue = validate_venue(**{**GOOD, "province": province, "ward": ward}, divisions=current)
    assert venue.province.name == "Thành phố Hà Nội"
    assert venue.ward.name == "Phường Từ Liêm"


def test_vietnamese_text_round_trips_unchanged_in_nfc(current, tmp_path):
    decomposed = unicodedata.normalize("NFD", "Bến xe Mỹ Đình")
    venue = validate_venue(**{**GOOD, "name": decomposed}, divisions=current)
    path, record = write_venue(venue, tmp_path, now_s=1.7e9)
    assert record["name"] == "Bến xe Mỹ Đình" == unicodedata.normalize("NFC", decomposed)
    again = json.loads(path.read_text(encoding="utf-8"))
    assert again["name"] == "Bến xe Mỹ Đình"
    assert again["registrant"] == {"name": "Nguyễn Văn A", "phone": "+84912345678"}
    assert "Bến xe Mỹ Đình" in path.read_text(encoding="utf-8"), "stored as UTF-8, not \\u escapes"


def test_venue_id_is_stable_across_runs_and_keeps_created_at(current, tmp_path):
    a = validate_venue(**GOOD, divisions=current)
    b = validate_venue(**{**GOOD, "name": "  bến xe  MỸ ĐÌNH ", "province": "ha noi"}, divisions=current)
    assert a.venue_id == b.venue_id
    assert re.fullmatch(r"v-[0-9a-f]{12}", a.venue_id)
    _, first = write_venue(a, tmp_path, now_s=1.7e9)
    _, second = write_venue(a, tmp_path, now_s=1.8e9)
    assert first == second
    other = validate_venue(**{**GOOD, "address": "Số 22 Phạm Hùng"}, divisions=current)
    assert other.venue_id != a.venue_id


def test_every_problem_is_reported_at_once_with_its_fix(current):
    with pytest.raises(ConfigError) as err:
        validate_venue(name="B", province="Ha Noii", ward="Tu Liem", address="", registrant="A1",
                       phone="0123456789", divisions=current)
    problems = err.value.problems
    assert len(problems) == 5, problems
    assert any(p.startswith("--name 'B'") for p in problems)
    assert any("--address is required" in p for p in problems)
    assert any("--registrant 'A1' contains digits" in p for p in problems)
    assert any("--phone '0123456789' is not a Vietnamese mobile number" in p for p in problems)
    assert any("--province 'Ha Noii'" in p and "did you mean 'Thành phố Hà Nội'" in p for p in problems)


def test_unknown_ward_is_refused_with_close_names(current):
    with pytest.raises(ConfigError) as err:
        validate_venue(**{**GOOD, "ward": "Phường Từ Liêmm"}, divisions=current)
    assert err.value.problems == [
        "--ward 'Phường Từ Liêmm' is not a known unit in Thành phố Hà Nội; did you mean 'Phường Từ Liêm' "
        "or 'Xã Thư Lâm'?"]


def test_a_pre_2025_ward_with_only_the_two_level_map_points_to_the_shipped_three_level_map(current):
    with pytest.raises(ConfigError) as err:
        validate_venue(**{**GOOD, "province": "Thanh Hóa", "district": "Thành phố Thanh Hóa",
                          "ward": "Phường Đông Thọ"}, divisions=current)
    assert len(err.value.problems) == 1
    assert "leave out --divisions to use the 2021 three-level map" in err.value.problems[0]


def test_three_level_2021_address_from_the_original_order(old, tmp_path):
    venue = validate_venue(name="Sở Lao động - Thương binh và Xã hội tỉnh Thanh Hóa", province="Thanh Hoá",
                           district="thanh pho thanh hoa", ward="Đông Thọ", address="Số 74 Tô Vĩnh Diện",
                           registrant="Vũ Thị Hương", phone="038 663 2627", divisions=old)
    _, record = write_venue(venue, tmp_path, now_s=1.7e9)
    assert record["province"] == {"name": "Tỉnh Thanh Hóa", "code": 38}
    assert record["district"] == {"name": "Thành phố Thanh Hóa", "code": 380}
    assert record["ward"] == {"name": "Phường Đông Thọ", "code": 14758}
    assert record["divisions"]["structure"] == "2021"
    assert record["full_address"] == "Số 74 Tô Vĩnh Diện, Phường Đông Thọ, Thành phố Thanh Hóa, Tỉnh Thanh Hóa"


def test_three_level_data_requires_the_district_and_checks_the_ward_inside_it(old):
    with pytest.raises(ConfigError) as err:
        validate_venue(**{**GOOD, "province": "Thanh Hóa", "ward": "Đông Thọ"}, divisions=old)
    assert any("--district is required" in p for p in err.value.problems)
    with pytest.raises(ConfigError) as err:
        validate_venue(**{**GOOD, "province": "Thanh Hóa", "district": "Huyện Đông Sơn", "ward": "Đông Thọ"},
                       divisions=old)
    assert err.value.problems[0].startswith("--ward 'Đông Thọ' is not a known unit in Huyện Đông Sơn")


def test_numbered_wards_match_with_leading_zeros(old):
    venue = validate_venue(**{**GOOD, "province": "Hồ Chí Minh", "district": "Quận 01",
                              "ward": "phuong 01"}, divisions=old)
    assert (venue.district.name, venue.ward.name) == ("Quận 1", "Phường 1")


@pytest.mark.parametrize("text,expected", [
    ("0912345678", "+84912345678"),
    ("0912 345 678", "+84912345678"),
    ("+84 912-345-678", "+84912345678"),
    ("84386632627", "+84386632627"),
    ("0386.632.627", "+84386632627"),
    ("0701234567", "+84701234567"),
    ("0123456789", None),      # old 11-digit era prefix, not a mobile today
    ("0241234567", None),      # Hà Nội landline
    ("091234567", None),       # too short
    ("09123456789", None),     # too long
    ("+1 912 345 678", None),
    ("09a2345678", None),
])
def test_phone_must_be_a_vietnamese_mobile_number(text, expected):
    assert normalise_phone(text) == expected


def test_poster_png_pdf_svg_have_a_qr_of_at_least_15_cm(current, tmp_path):
    venue = validate_venue(**GOOD, divisions=current)
    _, record = write_venue(venue, tmp_path, now_s=1.7e9)
    files = write_poster(record, tmp_path)
    assert files.qr_symbol_mm >= MIN_QR_MM
    with Image.open(files.png) as im:
        assert im.size == (2480, 3508)
        assert round(im.info["dpi"][0]) == 300
    pdf = files.pdf.read_bytes()
    box = re.search(rb"/MediaBox \[ ?0 0 ([\d.]+) ([\d.]+) ?\]", pdf)
    assert box, "the PDF has a page size"
    width_mm, height_mm = (float(v) / 72 * 25.4 for v in box.groups())
    assert abs(width_mm - 210) < 0.5 and abs(height_mm - 297) < 0.5
    svg = files.svg.read_text(encoding="utf-8")
    assert 'width="210mm"' in svg and "Bến xe Mỹ Đình" in svg
    assert "Phường Từ Liêm" in svg


def test_poster_qr_decodes_to_the_venue_id(current, tmp_path):
    import numpy as np

    from device.decoders import make_decoder
    from firmware.core.model import Frame

    venue = validate_venue(**GOOD, divisions=current)
    _, record = write_venue(venue, tmp_path, now_s=1.7e9)
    files = write_poster(record, tmp_path)
    with Image.open(files.png) as im:
        small = np.asarray(im.convert("L").resize((620, 877)))
    codes = make_decoder("zxing").decode(Frame(pixels=small, captured_mono_s=0.0))
    assert [c.payload for c in codes] == [f"QGV1:{record['venue_id']}".encode()]


def test_provision_venue_command_writes_record_and_poster(tmp_path, capsys):
    rc = main(["provision", "venue", "--name", "Nhà máy Dệt Nam Định", "--province", "Ninh Bình",
               "--ward", "Phường Nam Định", "--address", "Số 43 Tô Hiệu", "--registrant", "Trần Thị Bình",
               "--phone", "+84 987 654 321", "--out", str(tmp_path), "--no-pdf"])
    assert rc == 0
    venue_id = capsys.readouterr().out.strip()
    record = json.loads((tmp_path / f"{venue_id}.json").read_text(encoding="utf-8"))
    assert record["name"] == "Nhà máy Dệt Nam Định"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [f"{venue_id}.json", f"{venue_id}-poster.png", f"{venue_id}-poster.svg", f"{venue_id}.secret"])
    assert (tmp_path / f"{venue_id}.secret").stat().st_mode & 0o777 == 0o600  # the venue's HMAC secret


def test_provision_venue_command_bad_input_exits_78_listing_every_problem(tmp_path, capsys):
    rc = main(["provision", "venue", "--name", "Bến xe", "--province", "Hà Nội", "--ward", "Phường Không Có",
               "--address", "Số 1", "--registrant", "Nguyễn Văn A", "--phone", "0912", "--out", str(tmp_path)])
    assert rc == 78
    err = capsys.readouterr().err
    assert "--phone '0912' is not a Vietnamese mobile number" in err
    assert "--ward 'Phường Không Có' is not a known unit in Thành phố Hà Nội" in err
    assert list(tmp_path.iterdir()) == []

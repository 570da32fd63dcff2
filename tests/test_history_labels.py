"""Issue 11: the history reads as words (every reason and decision, exits as exits), venues by name."""

from __future__ import annotations

import io
import json
from datetime import timezone

from firmware.core.model import Reason
from firmware.core.passage import NOT_PASSED
from firmware.core.prov_code import ALREADY_PROVISIONED, REPLAYED, WRONG_DEVICE
from provisioning.history.export import EXPORT_COLUMNS, write_export, write_table
from provisioning.history.labels import REASONS, decision_label, reason_label
from tests.test_history_store import BASE_MS, HANOI, event


def test_every_reason_a_gate_records_has_vietnamese_words():
    codes = {r.value for r in Reason} | {NOT_PASSED, REPLAYED, WRONG_DEVICE, ALREADY_PROVISIONED}
    assert sorted(codes - set(REASONS["vi"])) == []
    for code in codes:
        assert reason_label(code, "vi") != code and reason_label(code, "en") != code


def test_a_granted_exit_is_shown_as_an_exit():
    assert decision_label("granted", "in", "vi") == "Cho vào"
    assert decision_label("granted", "out", "vi") == "Cho ra"
    assert decision_label("denied", "out", "vi") == "Từ chối ra"
    assert decision_label("granted", "out", "en") == "Let out"
    assert decision_label("provisioned", "in", "vi") == "Đã cài đặt thiết bị"
    assert decision_label("something_new", "in", "vi") == "something_new", "an unknown code is shown as it is"


def test_exports_keep_the_venue_id_and_add_its_name_and_the_table_shows_the_name(tmp_path):
    rows = [event(seq=1, venue="v-0123456789ab")]
    names = {"v-0123456789ab": "Bến xe Giáp Bát"}
    out = io.BytesIO()
    write_export("json", rows, out, HANOI, {}, names)
    record = json.loads(out.getvalue())["events"][0]
    assert (record["venue_id"], record["venue_name"]) == ("v-0123456789ab", "Bến xe Giáp Bát")
    assert "venue_name" in EXPORT_COLUMNS
    text = io.StringIO()
    write_table(rows, 1, text, timezone.utc, names)
    assert "Bến xe Giáp Bát" in text.getvalue() and "v-0123456789ab" not in text.getvalue()


def test_xlsx_has_date_time_cells_in_the_zone_fitted_columns_a_frozen_header_and_a_filter(tmp_path):
    from datetime import datetime

    from openpyxl import load_workbook

    rows = [event(seq=s, ts_ms=BASE_MS + s * 1000, display="NGUYỄN ĐÌNH *** 0966 323 ***") for s in (1, 2)]
    path = tmp_path / "h.xlsx"
    with open(path, "wb") as fh:
        write_export("xlsx", rows, fh, HANOI, {"venue": "v-1"})
    book = load_workbook(path)
    sheet = book["history"]
    first = sheet.cell(2, EXPORT_COLUMNS.index("local_time") + 1)
    assert isinstance(first.value, datetime) and first.is_date
    assert first.value == datetime.fromtimestamp((BASE_MS + 1000) / 1000, tz=HANOI).replace(tzinfo=None)
    assert sheet.freeze_panes == "A2"
    assert sheet.auto_filter.ref == f"A1:{sheet.cell(1, len(EXPORT_COLUMNS)).column_letter}3"
    display = sheet.column_dimensions[sheet.cell(1, EXPORT_COLUMNS.index("display") + 1).column_letter].width
    assert display >= len("NGUYỄN ĐÌNH *** 0966 323 ***")
    about = {row[0]: row[1] for row in book["about"].iter_rows(values_only=True)}
    assert about["local_time is in"] == "Asia/Ho_Chi_Minh" and about["filter venue"] == "v-1"

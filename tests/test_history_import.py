"""`qrgate history import` on a real SQLite file and a real PostgreSQL: idempotent by event_id, unsigned
events refused without --unverified, broken lines refused with their numbers, every imported event
marked, and a traced scenario loaded from a file. Signed events (`qrgate outbox export`): verified,
unverifiable and forged lines, in tests/test_history_import_signed.py."""

from __future__ import annotations

import json

import pytest

from firmware.cli import main
from provisioning.history.events import HistoryEvent, parse_scan
from provisioning.history.importer import marks
from provisioning.history.query import Filter
from provisioning.history.store import open_store
from provisioning.history.tracing import MINUTE_MS
from tests.history_support import BASE_MS, pg_server_url, pg_url, rfc3339, scan_dict  # noqa: F401


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    if request.param == "sqlite":
        return str(tmp_path / "history.sqlite")
    return request.getfixturevalue("pg_url")


def lines(*events: dict) -> bytes:
    return b"".join(json.dumps(e, ensure_ascii=False).encode() + b"\n" for e in events)


SCENARIO = [
    scan_dict("gate-1", 1, BASE_MS, subject="case", direction="in"),
    scan_dict("gate-2", 1, BASE_MS + 120 * MINUTE_MS, subject="case", direction="out"),
    scan_dict("gate-1", 2, BASE_MS + 30 * MINUTE_MS, subject="friend", direction="in"),
]


def stored_ids(url: str) -> list[str]:
    store = open_store(url)
    try:
        return sorted(e.event_id for e in store.rows(Filter()))
    finally:
        store.close()


def test_import_is_refused_without_unverified_then_idempotent_and_marked(db_url, tmp_path, capsys):
    path = tmp_path / "outbox.jsonl"
    path.write_bytes(lines(*SCENARIO))
    assert main(["history", "import", "--db", db_url, str(path)]) == 78
    assert "--unverified" in capsys.readouterr().err
    assert stored_ids(db_url) == []
    assert main(["history", "import", "--db", db_url, str(path), "--unverified", "--operator", "it-hcm"]) == 0
    assert "3 events read (0 verified, 3 unverified), 3 stored" in capsys.readouterr().out
    assert main(["history", "import", "--db", db_url, str(path), "--unverified"]) == 0
    assert "0 stored, 3 already stored" in capsys.readouterr().out
    assert stored_ids(db_url) == sorted(e["event_id"] for e in SCENARIO)
    store = open_store(db_url)
    try:
        found = marks(store)
    finally:
        store.close()
    assert set(found) == {e["event_id"] for e in SCENARIO}
    assert all(m[2] == "it-hcm" and m[3] is True for m in found.values())


def test_collected_events_are_not_marked_as_imported(tmp_path):
    url = str(tmp_path / "history.sqlite")
    collected = parse_scan("gate-1", json.dumps(SCENARIO[0]).encode(), BASE_MS)
    assert isinstance(collected, HistoryEvent)
    store = open_store(url)
    store.add([collected])
    store.close()
    path = tmp_path / "backup.jsonl"
    path.write_bytes(lines(*SCENARIO))
    assert main(["history", "import", "--db", url, str(path), "--unverified"]) == 0
    store = open_store(url)
    try:
        assert set(marks(store)) == {SCENARIO[1]["event_id"], SCENARIO[2]["event_id"]}
    finally:
        store.close()


def test_broken_lines_refuse_the_file_with_their_numbers(tmp_path, capsys):
    url = str(tmp_path / "history.sqlite")
    bad_device = dict(SCENARIO[2], device_id="bad device!")
    path = tmp_path / "damaged.jsonl"
    path.write_bytes(lines(SCENARIO[0]) + b"\n{not json\n" + lines(bad_device) + b"\xff\xfe\n"
                     + b"x" * 70_000 + b"\n" + lines(SCENARIO[1]))
    assert main(["history", "import", "--db", url, str(path), "--unverified"]) == 78
    err = capsys.readouterr().err
    assert "damaged.jsonl:3: not UTF-8 JSON" in err and ":4: field 'device_id' is not a device id" in err
    assert ":5: not UTF-8 JSON" in err and ":6: line longer than" in err and "nothing was imported" in err
    assert stored_ids(url) == []
    assert main(["history", "import", "--db", url, str(path), "--unverified", "--skip-bad-lines"]) == 0
    assert "2 events read (0 verified, 2 unverified), 2 stored" in capsys.readouterr().out
    assert stored_ids(url) == sorted([SCENARIO[0]["event_id"], SCENARIO[1]["event_id"]])


def test_an_imported_scenario_can_be_traced(tmp_path):
    url = str(tmp_path / "history.sqlite")
    path = tmp_path / "scenario.jsonl"
    path.write_bytes(lines(*SCENARIO))
    assert main(["history", "import", "--db", url, str(path), "--unverified"]) == 0
    out = tmp_path / "trace.json"
    assert main(["history", "trace", "--db", url, "--subject", "case", "--since", rfc3339(BASE_MS - 3600_000),
                 "--until", rfc3339(BASE_MS + 3 * 3600_000), "--format", "json", "--out", str(out)]) == 0
    report = json.loads(out.read_text(encoding="utf-8"))
    assert [(c["subject"], c["overlap_s"]) for c in report["contacts"]] == [("friend", 3600)]


def test_missing_file_is_a_clear_refusal(tmp_path, capsys):
    assert main(["history", "import", "--db", str(tmp_path / "h.sqlite"), str(tmp_path / "nope.jsonl"),
                 "--unverified"]) == 78
    assert "cannot be read" in capsys.readouterr().err

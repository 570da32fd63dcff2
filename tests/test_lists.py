"""Deny and allow lists: CSV import, list files, lookups, staleness, the `qrgate list` command."""

from __future__ import annotations

import io
import random
import time

import pytest

from firmware.adapters.list_files import ListStore, import_csv_file, open_lists
from firmware.alarms import Alarms
from firmware.cli import main
from firmware.core.lists import MemoryLists, parse_csv
from firmware.core.policy import Rules


def parse(text: str | bytes, block_bytes: int = 4 * 1024 * 1024):
    return parse_csv(io.BytesIO(text.encode("utf-8") if isinstance(text, str) else text), block_bytes)


# --------------------------------------------------------------------------- CSV parsing


def test_plain_csv_with_header_bom_crlf_and_duplicates():
    result = parse("\ufeffcccd,ho_ten\r\n001099012345,Nguyễn Văn A\r\n001099012346,Trần B\r\n001099012345,again\r\n")
    assert result.ids == [b"001099012345", b"001099012346"]
    assert (result.rows, result.duplicates, result.bad_rows) == (3, 1, 0)


def test_broken_rows_are_reported_with_their_line_numbers():
    data = (b"id,name\n"            # 1 header
            b"EMP-1,a\n"            # 2 good
            b"\n"                   # 3 blank: ignored
            b",no id\n"             # 4 empty id
            b'"EMP,2",quoted\n'     # 5 good, quoted comma
            b'"EMP-3,unterminated\n'  # 6 unbalanced quote
            b"EMP-\xff4,latin1\n"   # 7 not UTF-8
            b"EMP-\x015,ctrl\n"     # 8 control character
            + b"X" * 200 + b",long\n"  # 9 too long
            b"Nguy\xe1\xbb\x85n-6\n")  # 10 good, non-ASCII id
    result = parse(data)
    assert result.ids == [b"emp-1", b"emp,2", "nguyễn-6".encode()]  # the canonical form (case folded)
    assert result.problems == [
        (4, "the id (first column) is empty"),
        (6, "unbalanced double quote (a quoted field cannot span lines)"),
        (7, "is not UTF-8 text; save the file as UTF-8"),
        (8, "the id contains control or invisible characters (zero-width, bidi, format)"),
        (9, "the id is 200 characters, more than 128"),
    ]
    assert result.bad_rows == 5 and result.rows == 8
    assert result.report()[0] == "line 4: the id (first column) is empty"


@pytest.mark.parametrize("block_bytes", [4 * 1024 * 1024, 1000, 7])
def test_fast_and_careful_paths_agree_across_block_boundaries(block_bytes):
    """The same ids come out whether a block is plain (fast path) or holds a quote (line by line)."""
    rng = random.Random(3)
    ids = [f"{rng.randrange(10**11, 10**12):012d}" for _ in range(5000)]
    plain = ("id\n" + "\n".join(ids) + "\n").encode()
    quoted = ("id\n" + "\n".join(f'"{i}"' if n % 997 == 0 else i for n, i in enumerate(ids)) + "\n").encode()
    expected = [i.encode() for i in dict.fromkeys(ids)]
    assert parse(plain, block_bytes).ids == parse(quoted, block_bytes).ids == expected
    broken = plain.replace(ids[3000].encode() + b"\n", b",empty\n")
    assert parse(broken, block_bytes).problems == [(3002, "the id (first column) is empty")]


def test_vietnamese_ids_are_nfc_normalised():
    import unicodedata

    decomposed = unicodedata.normalize("NFD", "Nguyễn-7")
    result = parse(f"id\n{decomposed}\n")
    assert result.ids == ["nguyễn-7".encode()]  # NFKC and case folded


# --------------------------------------------------------------------------- list files


def write_csv(path, rows: list[str]) -> None:
    path.write_text("id,name\n" + "".join(f"{r},x\n" for r in rows), encoding="utf-8")


def test_import_replaces_the_list_atomically_with_a_new_version(tmp_path):
    store = ListStore(tmp_path / "lists")
    write_csv(tmp_path / "a.csv", ["A1", "A2"])
    snap, _ = import_csv_file(store, "deny", tmp_path / "a.csv", now_s=1000.0)
    assert (snap.info.version, snap.info.count, snap.info.updated_s) == (1, 2, 1000.0)
    write_csv(tmp_path / "b.csv", ["B1"])
    snap, _ = import_csv_file(store, "deny", tmp_path / "b.csv", now_s=2000.0)
    loaded = store.load("deny")
    assert loaded.info.version == 2
    assert loaded.contains("B1") and not loaded.contains("A1")
    assert sorted(p.name for p in (tmp_path / "lists").iterdir()) == ["deny.qgl"], "no temporary file left"
    raw = store.path("deny").read_bytes()
    assert b"B1" not in raw, "ids are stored hashed, not in clear"


def test_csv_with_broken_rows_is_refused_and_the_old_list_stays(tmp_path):
    store = ListStore(tmp_path / "lists")
    write_csv(tmp_path / "good.csv", ["G1"])
    import_csv_file(store, "deny", tmp_path / "good.csv", now_s=1000.0)
    before = store.path("deny").read_bytes()
    (tmp_path / "bad.csv").write_bytes(b"id\nN1\n,x\nN2\n")
    snap, result = import_csv_file(store, "deny", tmp_path / "bad.csv", now_s=2000.0)
    assert snap is None and result.problems == [(3, "the id (first column) is empty")]
    assert store.path("deny").read_bytes() == before
    snap, result = import_csv_file(store, "deny", tmp_path / "bad.csv", now_s=2000.0, skip_bad_rows=True)
    assert snap.info.count == 2 and snap.contains("N1") and snap.contains("N2")


def test_versions_only_go_up(tmp_path):
    store = ListStore(tmp_path / "lists")
    store.replace("allow", ["A"], updated_s=1.0, source="t", version=10)
    with pytest.raises(ValueError, match="not above the current allow list version 10"):
        store.replace("allow", ["B"], updated_s=2.0, source="t", version=10)
    snap = store.apply_delta("allow", add=["B"], remove=["A"], updated_s=3.0, source="t")
    assert snap.info.version == 11 and snap.contains("B") and not snap.contains("A")
    with pytest.raises(ValueError, match="based on version 3"):
        store.apply_delta("allow", add=["C"], remove=[], updated_s=3.0, source="t", base_version=3)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_damaged_list_file_is_quarantined_with_an_alarm_and_counts_as_stale(tmp_path, damage):
    store = ListStore(tmp_path / "lists")
    store.replace("deny", ["D1", "D2"], updated_s=time.time(), source="t")
    raw = store.path("deny").read_bytes()
    store.path("deny").write_bytes({"truncate": raw[:-5], "garbage": b"\x00" * 64, "empty": b""}[damage])
    alarms = Alarms()
    _store, lists = open_lists(tmp_path / "lists", alarms)
    assert "lists_damaged" in alarms.active()
    assert (tmp_path / "lists" / "deny.qgl.corrupt").exists()
    assert not lists.is_denied("D1")
    assert lists.stale(time.time(), 0.0) == ["deny"], "damaged is stale even without a max age"


def test_staleness_follows_max_age(tmp_path):
    now = 1_800_000_000.0
    store = ListStore(tmp_path / "lists")
    fresh = store.replace("deny", ["X"], updated_s=now - 3600, source="t")
    lists = MemoryLists(deny=fresh)
    assert lists.stale(now, 0.0) == []
    assert lists.stale(now, 2 * 3600.0) == []
    assert lists.stale(now, 1800.0) == ["deny"]
    assert MemoryLists().stale(now, 3600.0, ("deny", "allow")) == ["deny", "allow"], "never loaded = stale"
    assert lists.status(now)["deny"] == {"version": 1, "count": 1, "age_s": 3600, "damaged": False}


def test_deny_list_keeps_a_person_out_through_the_policy(tmp_path):
    from firmware.core.gatekeeper import Gatekeeper
    from firmware.core.model import Credential, CredentialType, DecodedCode, Moment

    store = ListStore(tmp_path / "lists")
    lists = MemoryLists(deny=store.replace("deny", ["079123456789"], updated_s=1.0, source="t"))

    def check(payload: bytes):
        return Credential(CredentialType.QG1, subject=payload.decode(), signed=True, expires_s=4.0e9)

    gate = Gatekeeper.fixed(rules=Rules(), check=check, lists=lists)
    now = Moment(10.0, 1.7e9)
    denied = gate.decide(DecodedCode(b"079123456789"), now, 10.0)
    allowed = gate.decide(DecodedCode(b"079000000000"), now, 10.0)
    assert (denied.verdict.value, denied.reason.value) == ("denied", "denied")
    assert allowed.granted


def test_import_is_fast_at_a_small_size(tmp_path):
    """100,000 rows import in well under the 1,000,000-row budget (full size: `qrgate bench lists`)."""
    from firmware.bench.lists import write_csv as bench_csv

    bench_csv(tmp_path / "d.csv", 100_000)
    store = ListStore(tmp_path / "lists")
    started = time.perf_counter()
    snap, result = import_csv_file(store, "deny", tmp_path / "d.csv", now_s=time.time())
    elapsed = time.perf_counter() - started
    assert snap is not None and snap.info.count + result.duplicates == 100_000
    assert elapsed < 5.0, f"100k rows took {elapsed:.2f} s"


# --------------------------------------------------------------------------- the command


@pytest.fixture
def gate_config(tmp_path):
    config = tmp_path / "qrgate.toml"
    config.write_text(f"""
[device]
id = "gate-1"
state_dir = "{tmp_path / 'state'}"

[lists]
max_age_h = 24
""")
    return config


def test_list_command_import_add_remove_show(tmp_path, gate_config, capsys):
    write_csv(tmp_path / "q.csv", ["079111111111", "079222222222"])
    assert main(["list", "deny", "import", str(tmp_path / "q.csv"), "--config", str(gate_config)]) == 0
    assert "deny list version 1: 2 ids from 2 rows" in capsys.readouterr().out
    assert main(["list", "deny", "add", "079333333333", "--config", str(gate_config)]) == 0
    assert main(["list", "deny", "remove", "079111111111", "--config", str(gate_config)]) == 0
    capsys.readouterr()
    assert main(["list", "deny", "show", "--check", "079333333333", "--config", str(gate_config)]) == 0
    out = capsys.readouterr().out
    assert "deny list: version 3, 2 ids" in out and out.strip().endswith("listed")
    assert main(["list", "deny", "show", "--check", "079111111111", "--config", str(gate_config)]) == 1
    assert capsys.readouterr().out.strip().endswith("not listed")


def test_list_command_refuses_a_csv_with_broken_rows(tmp_path, gate_config, capsys):
    (tmp_path / "bad.csv").write_bytes(b"id\n079111111111\n,broken\n")
    assert main(["list", "deny", "import", str(tmp_path / "bad.csv"), "--config", str(gate_config)]) == 1
    err = capsys.readouterr().err
    assert "line 3: the id (first column) is empty" in err and "unchanged" in err
    assert main(["list", "deny", "import", str(tmp_path / "bad.csv"), "--skip-bad-rows",
                 "--config", str(gate_config)]) == 0


def test_list_command_never_touches_the_files_of_a_running_daemon(tmp_path, gate_config, capsys):
    from firmware.adapters.process import hold_state_lock

    (tmp_path / "state").mkdir()
    lock = hold_state_lock(tmp_path / "state")
    try:
        write_csv(tmp_path / "q.csv", ["079111111111"])
        assert main(["list", "deny", "import", str(tmp_path / "q.csv"), "--config", str(gate_config)]) == 1
        err = capsys.readouterr().err
        assert "daemon is running" in err and "--remote" in err and "systemctl stop qrgate" in err
        assert not (tmp_path / "state" / "lists").exists()
    finally:
        lock.close()


def test_bench_lists_command_reports_its_figures(capsys):
    import json

    assert main(["bench", "lists", "--rows", "2000", "--lookups", "200", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["rows"] == 2000 and report["hits"] == 100
    assert report["import_s"] >= 0 and report["lookup_us"] > 0 and report["gate_lookup_us"] > 0

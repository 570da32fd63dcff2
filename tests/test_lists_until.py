"""Deny-list entries that end (``until``) and entries written as a person's subject at the venue:
the pure lookups and decisions, the QGL2 file (and the QGL1 files written before it), the CSV
``until`` column and the signed list message."""

from __future__ import annotations

import hashlib
import json
import shutil
import zlib
from datetime import timedelta, timezone
from functools import partial
from pathlib import Path

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from firmware.adapters.list_files import ListStore, import_csv_file, open_lists
from firmware.core.cose import sign1
from firmware.core.credentials.trust import TrustStore
from firmware.core.errors import StoreError
from firmware.core.events import protect_subject
from firmware.core.list_message import LIST_TYPE, LIST_TYPE_V1, ListMessageError, decode_message, encode_message
from firmware.core.lists import (
    MAGIC,
    ListInfo,
    ListSnapshot,
    MemoryLists,
    decode_list,
    encode_list,
    entry_keys,
    key_of,
    keys_of,
    parse_csv_bytes,
)
from firmware.core.model import Credential, CredentialType, DecodedCode, Moment, Reason, Verdict
from firmware.core.policy import GateMemory, Rules, decide

DATA = Path(__file__).resolve().parent / "data" / "lists"
WALL = 1_800_000_000.0  # 2027-01-15
DAY = 86400
SECRET = bytes(range(32))
SUBJECT_OF = partial(protect_subject, mode="hmac", secret=SECRET)
SALT = b"\x07" * 16
KEY = ed25519.Ed25519PrivateKey.generate()
TRUST = TrustStore.from_keys([KEY.public_key()])


def snapshot(ids, ends=None, kind="deny") -> ListSnapshot:
    keys, timed = entry_keys(ids, ends, SALT)
    return ListSnapshot(ListInfo(kind, 1, WALL, len(keys) + len(timed), timed=len(timed)), SALT, keys, timed)


# --- lookups -------------------------------------------------------------------------------------

@pytest.mark.parametrize(("now_s", "listed"), [
    (WALL, True),
    (WALL + 14 * DAY - 1, True),
    (WALL + 14 * DAY, False),  # the entry ends at until: not counted on or after it
    (WALL + 30 * DAY, False),
    (None, True),  # no trusted time: a quarantine never ends early
])
def test_a_deny_entry_counts_until_its_end(now_s, listed):
    lists = MemoryLists(deny=snapshot(["F1-7"], {"F1-7": int(WALL) + 14 * DAY}))
    assert lists.is_denied("F1-7", now_s) is listed
    assert lists.is_denied("f1-7", now_s) is listed, "canonical form, as for every entry"


@pytest.mark.parametrize(("now_s", "listed"), [(WALL, True), (WALL + DAY, False), (None, False)])
def test_an_allow_entry_that_ends_does_not_count_without_a_trusted_time(now_s, listed):
    lists = MemoryLists(allow=snapshot(["TEMP-1"], {"TEMP-1": int(WALL) + DAY}, kind="allow"))
    assert lists.is_allowed("TEMP-1", now_s) is listed


def test_an_entry_without_an_end_counts_whatever_the_time():
    lists = MemoryLists(deny=snapshot(["NV-1", "F1-7"], {"F1-7": int(WALL)}))
    assert lists.is_denied("NV-1", WALL + 1000 * DAY) and lists.is_denied("NV-1", None)
    assert not lists.is_denied("F1-7", WALL + 1)


def test_the_same_entry_with_and_without_an_end_has_none_and_two_ends_keep_the_later():
    keys, timed = entry_keys(["A", "a", "B", "b"], {"a": int(WALL), "B": int(WALL) + 5, "b": int(WALL) + 9}, SALT)
    assert keys == {key_of("A", SALT)} and timed == {key_of("B", SALT): int(WALL) + 9}


def test_an_entry_written_as_the_subject_keeps_the_person_out_and_nobody_else():
    contact_subject = SUBJECT_OF("079123456789")
    lists = MemoryLists(deny=snapshot([contact_subject], {contact_subject: int(WALL) + DAY}), subject_of=SUBJECT_OF)
    assert lists.is_denied("079123456789", WALL)
    assert not lists.is_denied("079123456789", WALL + DAY)
    assert not lists.is_denied("079123456780", WALL)
    # another venue's secret gives another subject: that venue's list does not match it
    other_venue = MemoryLists(deny=snapshot([contact_subject]), subject_of=partial(
        protect_subject, mode="hmac", secret=b"\x01" * 32))
    assert not other_venue.is_denied("079123456789", WALL)
    # without the venue's subject function only ids match (the old behaviour)
    assert not MemoryLists(deny=snapshot([contact_subject])).is_denied("079123456789", WALL)


def test_the_file_holds_no_readable_entry_ids_or_subjects(tmp_path):
    store = ListStore(tmp_path)
    subject = SUBJECT_OF("079123456789")
    store.replace("deny", ["079123456789", subject], updated_s=WALL, source="t", ends={subject: int(WALL) + DAY})
    raw = (tmp_path / "deny.qgl").read_bytes()
    assert b"079123456789" not in raw and subject.encode() not in raw and raw.startswith(MAGIC)


# --- decisions -----------------------------------------------------------------------------------

PASS = Credential(type=CredentialType.QG1, subject="F1-7", name="LÊ THỊ HOA", phone="0901111222",
                  issued_at_s=WALL - 3600, not_before_s=WALL - 3600, expires_s=WALL + 60 * DAY, signed=True)


@pytest.mark.parametrize(("wall_s", "trusted", "want"), [
    (WALL, True, (Verdict.DENIED, Reason.DENIED)),
    (WALL + 14 * DAY - 1, True, (Verdict.DENIED, Reason.DENIED)),
    (WALL + 14 * DAY, True, (Verdict.GRANTED, Reason.OK)),
    # an untrusted clock denies a pass with times anyway; the quarantine is not what lets it in
    (WALL + 14 * DAY, False, (Verdict.DENIED, Reason.DENIED)),
])
def test_the_policy_refuses_a_quarantined_contact_until_the_end_date(wall_s, trusted, want):
    subject = SUBJECT_OF("F1-7")
    lists = MemoryLists(deny=snapshot([subject], {subject: int(WALL) + 14 * DAY}), subject_of=SUBJECT_OF)
    now = Moment(mono_s=100.0, wall_s=wall_s, wall_trusted=trusted)
    decision = decide(DecodedCode(b"QG1:x"), now, 99.9, GateMemory(), Rules(), lambda p: PASS, lists)
    assert (decision.verdict, decision.reason) == want


def test_an_unsigned_id_card_on_the_list_by_subject_is_refused_with_an_untrusted_clock():
    card = Credential(type=CredentialType.CCCD, subject="001099012345", name="TRẦN THỊ MAI")
    subject = SUBJECT_OF("001099012345")
    lists = MemoryLists(deny=snapshot([subject], {subject: int(WALL) + DAY}), subject_of=SUBJECT_OF)
    rules = Rules(accept_unsigned_id=True)
    for wall_s, trusted, want in ((WALL + 2 * DAY, False, Verdict.DENIED), (WALL + 2 * DAY, True, Verdict.GRANTED)):
        decision = decide(DecodedCode(b"card"), Moment(1.0, wall_s, trusted), 0.9, GateMemory(), rules,
                          lambda p: card, lists)
        assert decision.verdict is want


# --- the file ------------------------------------------------------------------------------------

def test_a_qgl1_file_written_before_ends_existed_is_still_read(tmp_path):
    (tmp_path / "lists").mkdir()
    shutil.copy(DATA / "deny-qgl1.qgl", tmp_path / "lists" / "deny.qgl")
    store, lists = open_lists(tmp_path / "lists", subject_of=SUBJECT_OF)
    info = lists.snapshot("deny").info
    assert (info.version, info.count, info.timed, lists.damaged) == (3, 3, 0, set())
    assert lists.is_denied("NV-0042", WALL) and lists.is_denied("nv-0042", None)
    assert lists.is_denied("pass:00112233445566778899aabbccddeeff", WALL) and not lists.is_denied("NV-0043", WALL)
    # its next change writes the new format, keeping the salt and the entries
    snap = store.apply_delta("deny", add=["F1-7"], remove=[], updated_s=WALL, source="t",
                             ends={"F1-7": int(WALL) + DAY})
    assert (tmp_path / "lists" / "deny.qgl").read_bytes().startswith(b"QGL2\n")
    again = store.load("deny")
    assert again.salt == snap.salt == bytes(range(16)) and again.info.timed == 1 and again.info.count == 4
    assert again.contains("NV-0042", WALL) and again.contains("F1-7", WALL) and not again.contains("F1-7", WALL + DAY)


def test_qgl2_round_trip_and_the_body_layout():
    keys, timed = entry_keys(["A", "B", "C"], {"B": 1_900_000_000, "C": 1_850_000_000}, SALT)
    data, info = encode_list(ListInfo("deny", 4, WALL, 0, "t"), SALT, keys, timed)
    header = json.loads(data.split(b"\n")[1])
    assert (header["count"], header["timed"], info.count, info.timed) == (3, 2, 3, 2)
    body = data[data.index(b"\n", 5) + 1:]
    assert len(body) == 8 + 2 * 16 and hashlib.sha256(body).hexdigest() == header["sha256"]
    back = decode_list(data, "t")
    assert back.keys == keys and dict(back.ends) == timed and back.in_force(1_860_000_000) == 2


def _with_header(data: bytes, **changes) -> bytes:
    lines = data.split(b"\n", 2)
    header = {**json.loads(lines[1]), **changes}
    return b"\n".join([lines[0], json.dumps(header).encode(), lines[2]])


@pytest.mark.parametrize("damage", ["truncated", "timed_above_count", "end_after_2100", "repeated_timed_key",
                                    "unknown_magic"])
def test_a_damaged_qgl2_file_is_refused(damage):
    keys, timed = entry_keys(["A", "B"], {"B": 1_900_000_000}, SALT)
    data, _ = encode_list(ListInfo("deny", 4, WALL, 0, "t"), SALT, keys, timed)
    if damage == "truncated":
        data = data[:-3]
    elif damage == "timed_above_count":
        data = _with_header(data, timed=3)
    elif damage in ("end_after_2100", "repeated_timed_key"):
        pairs = ([(key_of("B", SALT), 5_000_000_000)] if damage == "end_after_2100"
                 else [(key_of("B", SALT), 1_900_000_000), (key_of("B", SALT), 1_900_000_001)])
        raw = key_of("A", SALT).to_bytes(8, "little") + b"".join(
            k.to_bytes(8, "little") + u.to_bytes(8, "little") for k, u in pairs)
        data = _with_header(data, count=1 + len(pairs), timed=len(pairs), sha256=hashlib.sha256(raw).hexdigest())
        data = data[:data.index(b"\n", 5) + 1] + raw
    else:
        data = b"QGL9" + data[4:]
    with pytest.raises(StoreError):
        decode_list(data, "t")


def test_a_delta_sets_an_added_entrys_end_anew_and_removes_timed_entries(tmp_path):
    store = ListStore(tmp_path)
    store.replace("deny", ["A", "B", "C"], updated_s=WALL, source="t", ends={"B": int(WALL) + DAY})
    snap = store.apply_delta("deny", add=["A", "B", "D"], remove=["C"], updated_s=WALL, source="t",
                             ends={"A": int(WALL) + 5, "D": int(WALL) + 7})
    assert snap.contains("A", WALL) and not snap.contains("A", WALL + 5), "a permanent entry given an end"
    assert snap.contains("B", WALL + 10 * DAY), "given without an end: permanent now"
    assert not snap.contains("C", None) and snap.contains("D", WALL + 6) and not snap.contains("D", WALL + 7)
    assert store.load("deny") == snap
    snap = store.apply_delta("deny", add=[], remove=["D"], updated_s=WALL, source="t")
    assert not snap.contains("D", None) and snap.info.timed == 1


# --- CSV -----------------------------------------------------------------------------------------

HANOI = timezone(timedelta(hours=7))


def test_a_csv_until_column_gives_ends_by_date_or_rfc3339():
    text = ("id,name,until\n"
            "079111111111,LÊ THỊ HOA,2027-01-29\n"  # ends when that day ends in Hanoi
            "079222222222,\"PHẠM, THỊ\",2027-01-20T08:00:00+07:00\n"
            "079333333333,TRẦN MINH,\n"  # no end
            "079444444444,LÊ VĂN,2027-01-30T01:00:00Z\r\n")
    result = parse_csv_bytes(text.encode("utf-8"), tz=HANOI, now_s=WALL)
    assert result.report() == []
    assert result.ids == [b"079111111111", b"079222222222", b"079333333333", b"079444444444"]
    assert result.ends == {b"079111111111": 1_801_242_000, b"079222222222": 1_800_406_800,
                           b"079444444444": 1_801_270_800}


def test_csv_until_problems_are_broken_rows_with_their_line_numbers():
    text = ("id,until\n"
            "A,soon\n"
            "B,2027-01-20T08:00:00\n"  # no zone
            "C,2027-01-01\n"  # already past
            "D,2150-01-01\n"
            "E,2027-02-01\n")
    result = parse_csv_bytes(text.encode(), tz=HANOI, now_s=WALL)
    assert [line for line, _ in result.problems] == [2, 3, 4, 5]
    assert "already past" in result.problems[2][1] and "give the time zone" in result.problems[1][1]
    assert result.ids == [b"e"] and set(result.ends) == {b"e"}


def test_without_an_until_header_the_other_columns_stay_ignored():
    result = parse_csv_bytes(b"079111111111,2027-01-29\n079222222222,LE\n")
    assert result.ids == [b"079111111111", b"079222222222"] and result.ends == {}
    assert parse_csv_bytes(b"id,until\nA,2027-01-29\nA,\n", now_s=WALL).ends == {}, "once without an end"


def test_import_of_a_csv_with_until_writes_the_ends(tmp_path):
    csv_file = tmp_path / "quarantine.csv"
    csv_file.write_text("cccd,until\n079111111111,2027-01-29\n079222222222,\n", encoding="utf-8")
    store = ListStore(tmp_path / "lists")
    snap, result = import_csv_file(store, "deny", csv_file, now_s=WALL, tz=HANOI)
    assert snap is not None and (snap.info.count, snap.info.timed) == (2, 1)
    lists = MemoryLists(deny=store.load("deny"))
    assert lists.is_denied("079111111111", 1_801_241_999) and not lists.is_denied("079111111111", 1_801_242_000)
    assert lists.is_denied("079222222222", 1_801_242_000)


# --- the signed message --------------------------------------------------------------------------

def decode(payload: bytes, now_s: float = WALL):
    return decode_message(payload, TRUST, topic_kind="deny", device_id="gate-1", now_s=now_s, venue_id="v-1",
                          venue_topic=True, prefix="qrgate")


def manifest_type(payload: bytes) -> str:
    from firmware.core.cose import parse1

    return cbor2.loads(parse1(cbor2.loads(payload)[0]).payload)["t"]


def test_a_list_with_ends_is_a_version_2_message_and_one_without_stays_version_1():
    subject = SUBJECT_OF("F1-7")
    with_ends = encode_message(KEY, kind="deny", version=9, now_s=WALL, ids=["NV-1", subject, "pass:ab"],
                               venue_id="v-1", ends={subject: int(WALL) + 14 * DAY})
    assert manifest_type(with_ends) == LIST_TYPE == "qrgate.list/2"
    msg = decode(with_ends)
    assert msg.ids == ["nv-1", subject, "pass:ab"] and msg.ends == {subject: int(WALL) + 14 * DAY}
    plain = encode_message(KEY, kind="deny", version=9, now_s=WALL, ids=["NV-1"], venue_id="v-1")
    assert manifest_type(plain) == LIST_TYPE_V1 and decode(plain).ends == {}


def test_a_delta_carries_ends_on_its_added_entries():
    message = encode_message(KEY, kind="deny", version=10, now_s=WALL, add=["A", "B"], remove=["C"], base_version=9,
                             device_id="gate-1", prefix="qrgate", ends={"B": int(WALL) + DAY})
    msg = decode_message(message, TRUST, topic_kind="deny", device_id="gate-1", now_s=WALL, prefix="qrgate")
    assert (msg.add, msg.remove, msg.ends) == (["a", "b"], ["c"], {"b": int(WALL) + DAY})


def _signed(claims_t: str, text: str, **extra) -> bytes:
    body = zlib.compress(text.encode())
    claims = {"t": claims_t, "kind": "deny", "mode": "full", "version": 5, "iat": int(WALL), "exp": int(WALL) + 600,
              "venue_id": "v-1", "sha256": hashlib.sha256(body).digest(), **extra}
    return cbor2.dumps([sign1(cbor2.dumps(claims), KEY), body])


@pytest.mark.parametrize("line", ["A\t5000000000", "A\tsoon", "A\t", "A\t-1", "A\t1.8e9", "A\t１８００００００００"])
def test_a_signed_list_with_an_end_out_of_bounds_is_refused_as_malformed(line):
    with pytest.raises(ListMessageError) as err:
        decode(_signed(LIST_TYPE, f"B\n{line}\n"))
    assert err.value.reason == "malformed"


def test_in_a_version_1_message_a_tab_is_part_of_the_id_as_before():
    msg = decode(_signed(LIST_TYPE_V1, "A\t1900000000\n"))
    assert msg.ends == {} and msg.ids == ["A\t1900000000"]


def test_an_entry_listed_with_and_without_an_end_has_none():
    msg = decode(_signed(LIST_TYPE, f"a\t{int(WALL) + 10}\na\nb\t{int(WALL) + 10}\nb\t{int(WALL) + 20}\n"))
    assert msg.ends == {"b": int(WALL) + 20}


def test_an_end_outside_2001_2100_is_not_encoded():
    with pytest.raises(ValueError):
        encode_message(KEY, kind="deny", version=1, now_s=WALL, ids=["A"], ends={"A": 5_000_000_000})


def test_keys_of_is_unchanged_by_the_new_format():
    # the keys of entries without an end are the same as the first format's: old files stay valid
    assert entry_keys(["A", "B"], None, SALT) == (keys_of(["A", "B"], SALT), {})


def test_list_command_add_until_and_show_check_follow_the_end(tmp_path, capsys):
    from firmware.cli import main

    config = tmp_path / "qrgate.toml"
    config.write_text(f'[device]\nid = "gate-1"\nstate_dir = "{tmp_path / "state"}"\nruntime_dir = "{tmp_path / "run"}"\n'
                      f'[camera]\nsource = "dir:{tmp_path}"\n', encoding="utf-8")
    assert main(["list", "deny", "add", "F1-7", "--until", "2099-12-30", "--config", str(config)]) == 0
    assert main(["list", "deny", "add", "NV-1", "--config", str(config)]) == 0
    capsys.readouterr()
    assert main(["list", "deny", "show", "--check", "F1-7", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "version 2, 2 ids (1 with an end, 2 in force now)" in out and out.strip().endswith("listed")
    assert main(["list", "deny", "add", "X", "--until", "2020-01-01", "--config", str(config)]) == 78
    assert "--until '2020-01-01' is already past" in capsys.readouterr().err


def test_a_name_column_in_another_encoding_stays_ignored_on_the_first_line():
    result = parse_csv_bytes("079111111111,Nguy\u1ec5n\n".encode("utf-8").replace(b"\xe1\xbb\x85", b"\xe9"))
    assert result.ids == [b"079111111111"] and result.report() == []

"""The tinydb state store: atomic writes, last good copy, corrupt files quarantined."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from firmware.adapters.state_store import StateStore, parse_state
from firmware.core.errors import StoreError


def test_values_round_trip_vietnamese_text_unchanged(tmp_path):
    store = StateStore(tmp_path / "state.json")
    store.put("provisioning", {"venue_name": "Bến xe Mỹ Đình", "direction": "in"})
    store.close()
    again = StateStore(tmp_path / "state.json")
    assert again.get("provisioning") == {"venue_name": "Bến xe Mỹ Đình", "direction": "in"}
    assert again.quarantined is None
    assert "Bến xe Mỹ Đình" in (tmp_path / "state.json").read_text(encoding="utf-8")


def test_each_write_keeps_a_last_good_copy_as_bak(tmp_path):
    store = StateStore(tmp_path / "state.json")
    store.put("k", 1)
    store.put("k", 2)
    bak = parse_state((tmp_path / "state.json.bak").read_bytes())
    assert bak is not None
    assert [d["value"] for d in bak["kv"].values()] == [2]
    assert (tmp_path / "state.json.bak").read_bytes() == (tmp_path / "state.json").read_bytes()


def test_batch_is_one_write_and_nothing_is_written_if_it_raises(tmp_path):
    store = StateStore(tmp_path / "state.json")
    store.put("a", "old")
    before = (tmp_path / "state.json").read_bytes()
    with pytest.raises(ValueError):
        with store.batch():
            store.put("a", "new")
            store.add_nonce("00ff", expires_s=2e9)
            raise ValueError("boom")
    assert (tmp_path / "state.json").read_bytes() == before
    assert store.get("a") == "old"
    assert not store.nonce_used("00ff")
    with store.batch():
        store.put("a", "new")
        store.add_nonce("00ff", expires_s=2e9)
    reopened = StateStore(tmp_path / "state.json")
    assert reopened.get("a") == "new"
    assert reopened.nonce_used("00ff")


@pytest.mark.parametrize("content", [
    b"",
    b"\x00" * 4096,
    b'{"kv": {"1": {"key": "provisioning", "value": {"venue',
    b"garbage \xff\xfe not json",
    b"[1, 2, 3]",
], ids=["empty", "nul-filled", "truncated", "garbage", "not-an-object"])
def test_corrupt_state_file_with_a_whole_copy_is_recovered_from_it_and_the_alarm_is_raised(tmp_path, content):
    good = StateStore(tmp_path / "state.json")
    good.add_nonce("aa11", expires_s=2e9)
    good.put("provisioning", {"venue_id": "v-1"})  # .bak now holds the record and the nonce
    good.close()
    (tmp_path / "state.json").write_bytes(content)

    store = StateStore(tmp_path / "state.json")

    assert store.quarantined is not None and store.quarantined.exists()
    assert store.quarantined.read_bytes() == content
    assert store.recovered, "the alarm is raised for this start"
    assert store.get("provisioning") == {"venue_id": "v-1"}, "the record comes back from the whole copy"
    assert store.nonce_used("aa11"), "and so do the used nonces"
    # the recovered file is valid: the next start neither quarantines nor loses anything
    again = StateStore(tmp_path / "state.json")
    assert again.quarantined is None and not again.recovered
    assert again.get("provisioning") == {"venue_id": "v-1"}


@pytest.mark.parametrize("content", [
    b"",
    b"\x00" * 4096,
    b'{"kv": {"1": {"key": "provisioning", "value": {"venue',
], ids=["empty", "nul-filled", "truncated"])
def test_corrupt_state_file_and_copy_leave_the_gate_unprovisioned_with_a_lasting_alarm(tmp_path, content):
    good = StateStore(tmp_path / "state.json")
    good.add_nonce("aa11", expires_s=2e9)
    good.put("provisioning", {"venue_id": "v-1"})
    good.close()
    (tmp_path / "state.json").write_bytes(content)
    (tmp_path / "state.json.bak").write_bytes(content)

    store = StateStore(tmp_path / "state.json")

    assert store.quarantined is not None and not store.recovered
    assert store.get("provisioning") is None
    assert store.alarm() == {"state_corrupt": store.quarantined.name, "bytes": len(content)}
    # the fresh file is valid, so the next start does not quarantine again, but the alarm stays
    again = StateStore(tmp_path / "state.json")
    assert again.quarantined is None
    assert again.alarm() is not None
    again.clear_alarm()
    assert StateStore(tmp_path / "state.json").alarm() is None


def test_peek_value_reads_the_copy_of_a_damaged_file_without_moving_anything(tmp_path):
    from firmware.adapters.state_store import peek_value

    good = StateStore(tmp_path / "state.json")
    good.put("provisioning", {"venue_id": "v-1"})
    good.close()
    assert peek_value(tmp_path / "state.json", "provisioning") == {"venue_id": "v-1"}
    (tmp_path / "state.json").write_bytes(b"\x00" * 64)
    assert peek_value(tmp_path / "state.json", "provisioning") == {"venue_id": "v-1"}
    assert (tmp_path / "state.json").read_bytes() == b"\x00" * 64, "a tool never moves the gate's files"
    assert peek_value(tmp_path / "nothing.json", "provisioning") is None


def test_write_to_a_vanished_directory_raises_store_error_with_the_fix(tmp_path):
    state_dir = tmp_path / "state"
    store = StateStore(state_dir / "state.json")
    store.put("x", 1)
    (state_dir / "state.json").unlink()
    (state_dir / "state.json.bak").unlink(missing_ok=True)
    state_dir.rmdir()
    with pytest.raises(StoreError, match="writable"):
        store.put("x", 2)
    assert store.get("x") == 1, "a failed write leaves the committed value"


def test_killed_writer_never_leaves_a_broken_state_file(tmp_path):
    """A child process writes in a loop and is SIGKILLed; the file is always valid."""
    script = textwrap.dedent(f"""
        import sys
        from firmware.adapters.state_store import StateStore
        s = StateStore({str(tmp_path / 'state.json')!r})
        i = 0
        while True:
            s.put("counter", {{"i": i, "pad": "x" * 2000}})
            if i == 5:
                print("ready", flush=True)
            i += 1
    """)
    for _ in range(3):
        with subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE) as proc:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == b"ready"
            proc.kill()
            proc.wait(timeout=10)
        raw = (tmp_path / "state.json").read_bytes()
        data = parse_state(raw)
        assert data is not None, raw[:200]
        store = StateStore(tmp_path / "state.json")
        assert store.quarantined is None
        assert store.get("counter")["i"] >= 5
        assert json.loads(raw)  # plain JSON, readable by any tool

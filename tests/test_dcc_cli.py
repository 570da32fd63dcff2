"""`qrgate dcc verify`, `qrgate keys dcc import|list` and `qrgate pass check` with HC1 codes."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from firmware.adapters.dcc_keystore import load_trust_list
from firmware.cli import main
from firmware.core.credentials import dcc_issue

DATA = Path(__file__).parent / "data" / "dcc-testdata"
NOW = 1_800_000_000.0
DAY = 86400.0


def _case(name: str) -> dict:
    return json.loads((DATA / name).read_text(encoding="utf-8"))


def _files(tmp_path: Path, case: dict) -> tuple[Path, Path]:
    payload = tmp_path / "code.txt"
    payload.write_text(case["PREFIX"] + "\n")
    dsc = tmp_path / "dsc.b64"
    dsc.write_text(case["TESTCTX"]["CERTIFICATE"] + "\n")
    return payload, dsc


def test_dcc_verify_prints_the_issue_json_for_a_valid_vector(tmp_path, capsys):
    case = _case("DE/2DCode/raw/1.json")
    payload, dsc = _files(tmp_path, case)
    status = main(["dcc", "verify", "--dsc", str(dsc), "--at", case["TESTCTX"]["VALIDATIONCLOCK"], "--json",
                   str(payload)])
    out = json.loads(capsys.readouterr().out)
    assert status == 0
    assert out["verified"] is True and out["reason"] == "ok" and out["kind"] == "v"
    assert out["country"] == "DE" and out["expires"] == "2022-01-28T07:47:53Z"
    # Spikevax 2/2 given on 2021-05-29: verified, but only 3 days before the clock, so not admitted.
    assert out["admitted"] is False and out["admitted_reason"] == "dcc_too_recent"
    assert "Mustermann" not in json.dumps(out) and case["PREFIX"] not in json.dumps(out)


@pytest.mark.parametrize(("name", "reason"), [
    ("common/2DCode/raw/CO5.json", "bad_signature"),
    ("common/2DCode/raw/CO8.json", "dcc_key_usage"),
    ("common/2DCode/raw/CO17.json", "expired"),
    ("common/2DCode/raw/Z2.json", "malformed"),
])
def test_dcc_verify_exits_non_zero_with_the_reason_when_not_verified(tmp_path, capsys, name, reason):
    case = _case(name)
    payload, dsc = _files(tmp_path, case)
    status = main(["dcc", "verify", "--dsc", str(dsc), "--at", case["TESTCTX"]["VALIDATIONCLOCK"], "--json",
                   str(payload)])
    out = json.loads(capsys.readouterr().out)
    assert status == 1 and out["verified"] is False and out["reason"] == reason


def test_dcc_verify_at_a_later_time_finds_the_certificate_expired(tmp_path, capsys):
    case = _case("DE/2DCode/raw/1.json")
    payload, dsc = _files(tmp_path, case)
    assert main(["dcc", "verify", "--dsc", str(dsc), "--at", "2022-02-01T00:00:00Z", str(payload)]) == 1
    assert "NOT verified: reason=expired" in capsys.readouterr().out


@pytest.fixture()
def chain():
    ca = dcc_issue.new_ca(not_before_s=NOW - 400 * DAY, not_after_s=NOW + 3000 * DAY)
    vn = dcc_issue.new_dsc(ca, not_before_s=NOW - 100 * DAY, not_after_s=NOW + 365 * DAY, kinds=("v",))
    de = dcc_issue.new_dsc(dcc_issue.new_ca("DE", not_before_s=NOW - 400 * DAY, not_after_s=NOW + 3000 * DAY),
                           not_before_s=NOW - 100 * DAY, not_after_s=NOW + 200 * DAY, country="DE", key_type="rsa")
    return vn, de


def _config(tmp_path: Path, **keys: str) -> Path:
    lines = ["[camera]", 'source = "picamera2"', "[keys]"] + [f'{k} = "{v}"' for k, v in keys.items()]
    path = tmp_path / "qrgate.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _json_list(*signers, countries=("VN", "DE")) -> bytes:
    return json.dumps([{"kid": base64.b64encode(s.kid).decode(), "country": c,
                        "rawData": base64.b64encode(s.der).decode()} for s, c in zip(signers, countries, strict=True)]).encode()


def test_keys_dcc_import_installs_a_json_list_and_shows_count_countries_expiry(tmp_path, capsys, chain):
    config = _config(tmp_path)
    src = tmp_path / "list.json"
    src.write_bytes(_json_list(*chain))
    assert main(["keys", "dcc", "import", str(src), "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "installed 2 DSC(s) from 2 countries (DE, VN)" in out
    assert dcc_issue.day(NOW + 200 * DAY) in out and dcc_issue.day(NOW + 365 * DAY) in out
    store = load_trust_list(tmp_path / "dcc-trust.json")
    assert len(store) == 2 and store.countries() == ["DE", "VN"] and store.installed_at_s is not None
    assert main(["keys", "dcc", "list", "--config", str(config)]) == 0
    listing = capsys.readouterr().out
    assert chain[0].kid.hex() in listing and "RSA 2048" in listing


def test_keys_dcc_import_reads_a_pem_bundle_and_a_folder(tmp_path, capsys, chain):
    config = _config(tmp_path)
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(chain[0].pem() + chain[1].pem())
    assert main(["keys", "dcc", "import", str(bundle), "--config", str(config)]) == 0
    assert len(load_trust_list(tmp_path / "dcc-trust.json")) == 2
    folder = tmp_path / "dscs"
    folder.mkdir()
    (folder / "vn.der").write_bytes(chain[0].der)
    (folder / "de.pem").write_bytes(chain[1].pem())
    (folder / "readme.txt").write_text("ignored")
    assert main(["keys", "dcc", "import", str(folder), "--config", str(config)]) == 0
    assert load_trust_list(tmp_path / "dcc-trust.json").countries() == ["DE", "VN"]
    capsys.readouterr()


def test_a_bad_entry_is_skipped_with_a_reason_and_an_empty_list_changes_nothing(tmp_path, capsys, chain):
    config = _config(tmp_path)
    src = tmp_path / "list.json"
    entries = json.loads(_json_list(*chain))
    entries[1]["kid"] = base64.b64encode(b"\x00" * 8).decode()
    src.write_text(json.dumps(entries))
    assert main(["keys", "dcc", "import", str(src), "--config", str(config)]) == 0
    err = capsys.readouterr().err
    assert "skipped: entry 1" in err and "does not match" in err
    assert len(load_trust_list(tmp_path / "dcc-trust.json")) == 1
    src.write_text("[]")
    assert main(["keys", "dcc", "import", str(src), "--config", str(config)]) == 1
    assert len(load_trust_list(tmp_path / "dcc-trust.json")) == 1


def test_a_configured_list_key_requires_a_valid_signature(tmp_path, capsys, chain):
    list_key = ec.generate_private_key(ec.SECP256R1())
    pub = tmp_path / "list.pub.pem"
    pub.write_bytes(list_key.public_key().public_bytes(serialization.Encoding.PEM,
                                                       serialization.PublicFormat.SubjectPublicKeyInfo))
    config = _config(tmp_path, dcc_list_key=str(pub))
    body = _json_list(*chain)
    unsigned = tmp_path / "list.json"
    unsigned.write_bytes(body)
    assert main(["keys", "dcc", "import", str(unsigned), "--config", str(config)]) == 1
    assert "is not signed" in capsys.readouterr().err
    sig = tmp_path / "list.sig"
    sig.write_text(base64.b64encode(list_key.sign(body, ec.ECDSA(hashes.SHA256()))).decode())
    assert main(["keys", "dcc", "import", str(unsigned), "--signature", str(sig), "--config", str(config)]) == 0
    # The national-backend form: the signature on the first line, the JSON after it.
    embedded = tmp_path / "signed.txt"
    embedded.write_bytes(base64.b64encode(list_key.sign(body, ec.ECDSA(hashes.SHA256()))) + b"\n" + body)
    assert main(["keys", "dcc", "import", str(embedded), "--config", str(config)]) == 0
    other = ec.generate_private_key(ec.SECP256R1())
    embedded.write_bytes(base64.b64encode(other.sign(body, ec.ECDSA(hashes.SHA256()))) + b"\n" + body)
    assert main(["keys", "dcc", "import", str(embedded), "--config", str(config)]) == 1
    assert "does not verify" in capsys.readouterr().err


def test_pass_check_recognises_hc1_with_the_device_trust_list(tmp_path, capsys, chain):
    import time

    config = _config(tmp_path)
    src = tmp_path / "list.json"
    src.write_bytes(_json_list(*chain))
    assert main(["keys", "dcc", "import", str(src), "--config", str(config)]) == 0
    now = time.time()
    ca = dcc_issue.new_ca(not_before_s=now - 10 * DAY, not_after_s=now + 10 * DAY)
    fresh = dcc_issue.new_dsc(ca, not_before_s=now - DAY, not_after_s=now + DAY)
    code = fresh.sign(dcc_issue.vaccination("Trần", "Thị Mai", "1985-01-02", date=dcc_issue.day(now - 30 * DAY)),
                      iat_s=now - 60, exp_s=now + 3600)
    capsys.readouterr()
    assert main(["pass", "check", code, "--config", str(config), "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["type"] == "dcc" and out["reason"] == "unknown_issuer" and out["stages"]["signature"] == "failed"
    pem = tmp_path / "fresh.pem"
    pem.write_bytes(fresh.pem())
    assert main(["pass", "check", code, "--dsc", str(pem), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["type"] == "dcc" and out["reason"] == "ok" and out["display"] == "Trần Thị *** 1985"
    assert out["certificate"].startswith("vaccination 2/2")

"""`qrgate pass issue` and `qrgate pass check`: claims, validity windows, QR images, masked output."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from PIL import Image

from firmware.cli import main
from firmware.core.credentials import TrustStore, check_payload
from firmware.core.model import Credential, Frame
from provisioning.keys import load_private_key, new_keypair
from provisioning.passes import PassError, Validity, issue, make_qr, parse_time, validity

DAY = 86400


@pytest.fixture
def issuer(tmp_path):
    made = new_keypair(tmp_path / "issuer.pem")
    trust = TrustStore.from_keys([load_private_key(made.private_path).public_key()])
    return made, trust


@pytest.fixture
def config(tmp_path, issuer, capsys) -> Path:
    path = tmp_path / "gate" / "qrgate.toml"
    path.parent.mkdir()
    path.write_text('[device]\nid = "gate-1"\n', encoding="utf-8")
    assert main(["keys", "trust", str(issuer[0].public_path), "--config", str(path)]) == 0
    capsys.readouterr()
    return path


def issue_cli(capsys, key: Path, *extra: str) -> tuple[int, str, str]:
    code = main(["pass", "issue", "--key", str(key), "--sub", "NV-0042", "--name", "NGUYỄN ĐÌNH HÙNG",
                 "--phone", "0966323123", *extra])
    out, err = capsys.readouterr()
    return code, out.strip(), err


def test_pass_issue_prints_a_pass_the_gate_accepts(capsys, issuer):
    made, trust = issuer
    code, text, err = issue_cli(capsys, made.private_path, "--iss", "Cty ABC", "--valid-days", "10",
                                "--health-declared", "2026-11-20T08:00:00+07:00")
    assert code == 0, err
    assert text.startswith("QG1:") and "\n" not in text
    result = check_payload(text.encode(), trust)
    assert isinstance(result, Credential)
    assert (result.subject, result.name, result.phone, result.issuer) == (
        "NV-0042", "NGUYỄN ĐÌNH HÙNG", "0966323123", "Cty ABC")
    assert result.expires_s - result.not_before_s == 10 * DAY
    assert result.issued_at_s == result.not_before_s
    assert result.health_declared_s == dt.datetime(2026, 11, 20, 1, tzinfo=dt.timezone.utc).timestamp()
    assert len(result.token_id) == 32
    assert "0966323123" not in err and "HÙNG" not in err  # stderr summary has no personal data


def test_explicit_window(capsys, issuer):
    made, trust = issuer
    code, text, _ = issue_cli(capsys, made.private_path, "--not-before", "2026-12-01", "--expires", "1798761600")
    assert code == 0
    result = check_payload(text.encode(), trust)
    assert (result.not_before_s, result.expires_s) == (1796083200.0, 1798761600.0)


def test_issuing_an_already_expired_pass_warns(capsys, issuer):
    made, trust = issuer
    code, text, err = issue_cli(capsys, made.private_path, "--not-before", "2026-01-01", "--expires", "2026-06-30")
    assert code == 0 and check_payload(text.encode(), trust).expires_s == 1782777600.0
    assert "warning: this pass expired at 2026-06-30T00:00:00Z, before it was issued" in err
    code, _, err = issue_cli(capsys, made.private_path, "--valid-days", "3")
    assert code == 0 and "warning" not in err


@pytest.mark.parametrize("extra, message", [
    (["--valid-days", "3", "--expires", "2027-01-01"], "not both"),
    (["--not-before", "2027-01-02", "--expires", "2027-01-01"], "after"),
    (["--expires", "next tuesday"], "not a time"),
    (["--valid-days", "0"], "more than 0"),
])
def test_bad_windows_are_refused(capsys, issuer, extra, message):
    code, out, err = issue_cli(capsys, issuer[0].private_path, *extra)
    assert code == 1 and out == "" and message in err


def test_two_passes_for_the_same_person_have_different_token_ids(issuer):
    key = load_private_key(issuer[0].private_path)
    window = Validity(1_780_000_000, 1_790_000_000)
    a, b = (issue(key, sub="S", name="A B", phone="", now_s=1_780_000_000, window=window) for _ in range(2))
    assert check_payload(a.encode(), issuer[1]).token_id != check_payload(b.encode(), issuer[1]).token_id


@pytest.mark.parametrize("text, seconds", [
    ("1780000000", 1780000000),
    ("2026-12-31", 1798675200),
    ("2026-12-31T07:00:00+07:00", 1798675200),
    ("2026-12-31T00:00:00Z", 1798675200),
    ("2026-12-31T00:00:00", 1798675200),
])
def test_parse_time(text, seconds):
    assert parse_time(text, "--x") == seconds


def test_default_validity_is_365_days_from_now():
    assert validity(1000.0) == Validity(1000, 1000 + 365 * DAY)
    with pytest.raises(PassError):
        validity(1000.0, valid_days=1, expires="2030-01-01")


def test_png_and_svg_are_full_qr_codes_the_decoder_reads(tmp_path, capsys, issuer):
    from device.decoders import make_decoder

    png, svg = tmp_path / "pass.png", tmp_path / "pass.svg"
    code, text, _ = issue_cli(capsys, issuer[0].private_path, "--png", str(png), "--svg", str(svg))
    assert code == 0
    qr = make_qr(text)
    assert not qr.is_micro and qr.error == "M"
    side = qr.symbol_size(scale=10, border=4)
    image = Image.open(png)
    assert image.size == side
    assert svg.read_text(encoding="utf-8").lstrip().startswith(("<?xml", "<svg"))
    import numpy as np
    frame = Frame(pixels=np.asarray(image.convert("L"), dtype=np.uint8), captured_mono_s=0.0)
    codes = make_decoder("zxing").decode(frame)
    assert [c.payload for c in codes] == [text.encode()]


def test_pass_check_shows_the_masked_holder_and_every_stage(capsys, issuer, config):
    code, text, _ = issue_cli(capsys, issuer[0].private_path)
    assert main(["pass", "check", text, "--config", str(config), "--json"]) == 0
    out = capsys.readouterr().out
    report = json.loads(out)
    assert report["reason"] == "ok" and report["display"] == "NGUYỄN ĐÌNH *** 0966 323 ***"
    assert set(report["stages"].values()) <= {"ok", "absent"}
    assert text not in out and "0966323123" not in out and "HÙNG" not in out


def test_pass_check_of_an_image(tmp_path, capsys, issuer, config):
    png = tmp_path / "p.png"
    issue_cli(capsys, issuer[0].private_path, "--png", str(png))
    assert main(["pass", "check", "--image", str(png), "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "reason=ok" in out and "display=NGUYỄN ĐÌNH *** 0966 323 ***" in out


def test_pass_check_of_an_unknown_issuer_fails_with_the_reason(tmp_path, capsys, config):
    stranger = new_keypair(tmp_path / "stranger.pem")
    _, text, _ = issue_cli(capsys, stranger.private_path)
    assert main(["pass", "check", text, "--config", str(config)]) == 1
    out = capsys.readouterr().out
    assert "reason=unknown_issuer" in out and "signature failed" in out


def test_pass_check_of_a_cccd_masks_the_id(capsys, config):
    row = "001099012345|123456789|Nguyễn Văn An|01011999|Nam|Hà Nội|15082021"
    assert main(["pass", "check", row, "--config", str(config), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["type"] == "cccd" and report["display"] == "Nguyễn Văn *** ***" and report["signed"] is False


def test_pass_check_against_a_bare_issuer_key_needs_no_device_config(capsys, issuer, tmp_path):
    made, _ = issuer
    code, text, _ = issue_cli(capsys, made.private_path)
    assert code == 0
    assert main(["pass", "check", text, "--issuer", str(made.public_path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["type"], report["reason"]) == ("qg1", "ok")
    other = new_keypair(tmp_path / "other.pem")
    assert main(["pass", "check", text, "--issuer", str(other.public_path), "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["reason"] == "unknown_issuer"

"""`qrgate keys` and the trust directory: file modes, kids, openssl interop, idempotent trust, bad files."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from firmware.adapters.config_file import load_config
from firmware.adapters.keystore import load_trust_dir, read_trust_dir
from firmware.cli import main
from firmware.core.credentials import check_payload, qg1
from firmware.core.errors import ConfigError
from provisioning.keys import load_private_key, new_keypair, public_path_for


def openssl() -> str:
    path = shutil.which("openssl")
    if not path:
        pytest.fail("openssl is not installed; install it with `sudo apt-get install -y openssl`")
    return path


def run_openssl(*args: str) -> bytes:
    return subprocess.run([openssl(), *args], check=True, capture_output=True, timeout=30).stdout


def kid_of_pub_pem(pem: bytes) -> str:
    key = serialization.load_pem_public_key(pem)
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).digest()[:8].hex()


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "gate" / "qrgate.toml"
    path.parent.mkdir()
    path.write_text('[device]\nid = "gate-1"\nstate_dir = "state"\n', encoding="utf-8")
    return path


def qrgate(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("alg, header", [("ed25519", "EdDSA"), ("es256", "ES256")])
def test_keys_new_writes_a_0600_private_key_and_a_public_key_and_prints_the_kid(tmp_path, capsys, alg, header):
    out_file = tmp_path / "keys" / "issuer.pem"
    old_umask = os.umask(0)  # the mode must not depend on the caller's umask
    try:
        code, out, err = qrgate(capsys, "keys", "new", "--out", str(out_file), "--alg", alg)
    finally:
        os.umask(old_umask)
    assert code == 0, err
    pub = tmp_path / "keys" / "issuer.pub.pem"
    assert stat.S_IMODE(out_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(pub.stat().st_mode) == 0o644
    assert out_file.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")  # PKCS#8
    assert pub.read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")  # SubjectPublicKeyInfo
    assert out.strip() == kid_of_pub_pem(pub.read_bytes())
    assert header in err and "keys trust" in err
    assert sorted(p.name for p in (tmp_path / "keys").iterdir()) == ["issuer.pem", "issuer.pub.pem"]


def test_keys_new_refuses_to_overwrite_without_force(tmp_path, capsys):
    out_file = tmp_path / "k.pem"
    assert qrgate(capsys, "keys", "new", "--out", str(out_file))[0] == 0
    first = out_file.read_bytes()
    code, out, err = qrgate(capsys, "keys", "new", "--out", str(out_file))
    assert code == 1 and "already exists" in err and "--force" in err
    assert out_file.read_bytes() == first
    assert qrgate(capsys, "keys", "new", "--out", str(out_file), "--force")[0] == 0
    assert out_file.read_bytes() != first


def test_public_path_is_beside_the_private_key():
    assert public_path_for("/x/issuer.pem") == Path("/x/issuer.pub.pem")
    assert public_path_for("/x/issuer.key") == Path("/x/issuer.key.pub.pem")


def test_keys_export_prints_the_public_pem(tmp_path, capsys):
    made = new_keypair(tmp_path / "a.pem")
    code, out, _ = qrgate(capsys, "keys", "export", str(made.private_path))
    assert code == 0 and out.encode() == made.public_path.read_bytes()


# ----------------------------------------------------------------------------- openssl interop

@pytest.mark.parametrize("genpkey", [
    ["-algorithm", "ed25519"],
    ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
], ids=["ed25519", "p256"])
def test_openssl_keys_sign_passes_that_qrgate_accepts(tmp_path, capsys, config, genpkey):
    priv = tmp_path / "openssl.pem"
    run_openssl("genpkey", *genpkey, "-out", str(priv))
    pub = tmp_path / "openssl.pub.pem"
    run_openssl("pkey", "-in", str(priv), "-pubout", "-out", str(pub))
    openssl_kid = hashlib.sha256(run_openssl("pkey", "-in", str(priv), "-pubout", "-outform", "DER")).digest()[:8]

    code, out, _ = qrgate(capsys, "keys", "export", str(priv))
    assert code == 0 and out.encode() == pub.read_bytes()
    assert qrgate(capsys, "keys", "trust", str(pub), "--config", str(config))[0] == 0
    code, out, err = qrgate(capsys, "pass", "issue", "--key", str(priv), "--sub", "P-1", "--name", "LÊ VĂN TÁM",
                            "--phone", "0912345678")
    assert code == 0, err
    trust = load_trust_dir(load_config(config).issuers_dir)
    result = check_payload(out.strip().encode(), trust)
    assert result.kid_hex == openssl_kid.hex() and result.subject == "P-1"


def test_openssl_reads_qrgate_keys(tmp_path):
    made = new_keypair(tmp_path / "q.pem", "es256")
    assert run_openssl("pkey", "-in", str(made.private_path), "-pubout") == made.public_path.read_bytes()
    text = run_openssl("pkey", "-pubin", "-in", str(made.public_path), "-text", "-noout")
    assert b"P-256" in text or b"prime256v1" in text


def test_openssl_sec1_ec_private_key_is_accepted(tmp_path):
    priv = tmp_path / "sec1.pem"
    run_openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(priv))
    assert priv.read_bytes().startswith(b"-----BEGIN EC PRIVATE KEY-----")
    key = load_private_key(priv)
    assert isinstance(key, ec.EllipticCurvePrivateKey)


# ----------------------------------------------------------------------------- trust directory

def test_trust_is_idempotent_and_untrust_removes_it(tmp_path, capsys, config):
    made = new_keypair(tmp_path / "i.pem")
    code, out, _ = qrgate(capsys, "keys", "trust", str(made.public_path), "--config", str(config))
    assert code == 0 and out.startswith("trusted:")
    issuers = config.parent / "issuers"
    assert sorted(p.name for p in issuers.iterdir()) == [f"{made.kid_hex}.pem"]
    code, out, _ = qrgate(capsys, "keys", "trust", str(made.public_path), "--config", str(config))
    assert code == 0 and out.startswith("already trusted:")
    assert sorted(p.name for p in issuers.iterdir()) == [f"{made.kid_hex}.pem"]

    code, out, _ = qrgate(capsys, "keys", "list", "--config", str(config))
    assert code == 0
    assert out.splitlines()[1].split() == [made.kid_hex, "issuer", "EdDSA", str(issuers / f"{made.kid_hex}.pem")]

    code, out, _ = qrgate(capsys, "keys", "untrust", made.kid_hex, "--config", str(config))
    assert code == 0 and list(issuers.iterdir()) == []
    code, _, err = qrgate(capsys, "keys", "untrust", made.kid_hex, "--config", str(config))
    assert code == 1 and "no trusted key" in err


def test_roles_go_to_their_own_directories(tmp_path, capsys, config):
    for role, folder in (("issuer", "issuers"), ("authority", "authority"), ("command", "commands")):
        made = new_keypair(tmp_path / f"{role}.pem", "es256")
        assert qrgate(capsys, "keys", "trust", str(made.public_path), "--config", str(config), "--role", role)[0] == 0
        assert (config.parent / folder / f"{made.kid_hex}.pem").is_file()
    code, out, _ = qrgate(capsys, "keys", "list", "--config", str(config))
    assert [line.split()[1] for line in out.splitlines()[1:]] == ["issuer", "authority", "command"]


def test_trusting_a_private_key_is_refused(tmp_path, capsys, config):
    made = new_keypair(tmp_path / "i.pem")
    code, _, err = qrgate(capsys, "keys", "trust", str(made.private_path), "--config", str(config))
    assert code == 1 and "PRIVATE" in err and "keys export" in err
    assert not (config.parent / "issuers").exists()


def test_unsupported_key_types_are_refused(tmp_path, capsys, config):
    rsa_pub = tmp_path / "rsa.pub.pem"
    rsa_pub.write_bytes(rsa.generate_private_key(65537, 2048).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    code, _, err = qrgate(capsys, "keys", "trust", str(rsa_pub), "--config", str(config))
    assert code == 1 and "not supported" in err and "Ed25519" in err


def test_a_bad_pem_in_the_trust_directory_is_reported_not_fatal_to_reading(tmp_path, capsys, config):
    made = new_keypair(tmp_path / "i.pem")
    qrgate(capsys, "keys", "trust", str(made.public_path), "--config", str(config))
    issuers = config.parent / "issuers"
    (issuers / "broken.pem").write_text("-----BEGIN PUBLIC KEY-----\nnot base64\n-----END PUBLIC KEY-----\n")
    (issuers / "README.txt").write_text("ignored: not a .pem")

    store, problems = read_trust_dir(issuers)
    assert store.kids() == [bytes.fromhex(made.kid_hex)]
    assert len(problems) == 1 and "broken.pem" in problems[0] and "fix or remove" in problems[0]
    with pytest.raises(ConfigError) as info:
        load_trust_dir(issuers)
    assert info.value.problems == problems

    code, out, _ = qrgate(capsys, "keys", "list", "--config", str(config))
    assert code == 1 and "BAD:" in out and made.kid_hex in out


def test_missing_trust_directory(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_trust_dir(tmp_path / "nope")
    assert len(load_trust_dir(tmp_path / "nope", missing_ok=True)) == 0


def test_trust_store_from_directory_verifies_passes(tmp_path, capsys, config):
    made = new_keypair(tmp_path / "i.pem")
    qrgate(capsys, "keys", "trust", str(made.public_path), "--config", str(config))
    key = load_private_key(made.private_path)
    text = qg1.encode(qg1.build_claims(sub="S"), key).encode()
    assert check_payload(text, load_trust_dir(config.parent / "issuers")).subject == "S"

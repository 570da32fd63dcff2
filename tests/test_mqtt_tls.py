"""MqttLink over TLS against a real Mosquitto: a private CA, a per-device client certificate."""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from firmware.adapters.mqtt_link import MqttLink, MqttSettings
from firmware.core.errors import ConfigError
from tests.conftest import free_port
from tests.mqtt_support import Collector

pytestmark = pytest.mark.broker


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write_key(key, path: Path) -> Path:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)
    return path


def make_ca(folder: Path, cn: str) -> tuple[object, x509.Certificate, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(cn))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    path = folder / f"{cn}.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key, cert, path


def make_leaf(folder: Path, name: str, ca_key, ca_cert, server: bool) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(_name(name)).issuer_name(ca_cert.subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=1)))
    if server:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    cert_path = folder / f"{name}.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, _write_key(key, folder / f"{name}.key")


@pytest.fixture
def tls_broker(broker, tmp_path):
    """The private broker with a second listener: TLS, client certificate required."""
    ca_key, ca_cert, ca_path = make_ca(tmp_path, "qrgate-test-ca")
    server_cert, server_key = make_leaf(tmp_path, "broker", ca_key, ca_cert, server=True)
    client_cert, client_key = make_leaf(tmp_path, "gate-1", ca_key, ca_cert, server=False)
    port = free_port()
    broker.extra_conf = (f"listener {port} 127.0.0.1\ncafile {ca_path}\ncertfile {server_cert}\n"
                         f"keyfile {server_key}\nrequire_certificate true\n")
    broker.stop()
    broker.start()
    return broker, port, ca_path, client_cert, client_key


def tls_link(port: int, prefix: str, ca: Path, cert: Path | None, key: Path | None) -> MqttLink:
    return MqttLink(MqttSettings(device_id="gate-1", host="127.0.0.1", port=port, prefix=prefix, tls=True,
                                 ca_file=str(ca), cert_file=str(cert or ""), key_file=str(key or "")),
                    reconnect_min_s=0.2, reconnect_max_s=0.5)


def test_tls_with_private_ca_and_client_certificate_connects_and_publishes(tls_broker, topic_prefix):
    broker, port, ca, cert, key = tls_broker
    collector = Collector(broker.host, broker.port, f"{topic_prefix}/#")
    link = tls_link(port, topic_prefix, ca, cert, key)
    try:
        link.start()
        assert link.wait_connected(10.0)
        assert link.publish("state", '{"ok":true}', retain=True)
        ok = collector.wait_until(
            lambda ms: sorted(m.payload for m in ms) == [b"online", b'{"ok":true}'], 10.0)
        assert ok, collector.messages
    finally:
        link.stop(timeout_s=1.0)
        collector.close()


# paho does not close the socket of a failed TLS handshake (it is closed when collected),
# which pytest reports as an unraisable ResourceWarning; that is all this filter hides.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_tls_refuses_a_broker_signed_by_another_ca(tls_broker, tmp_path, topic_prefix):
    broker, port, _ca, cert, key = tls_broker
    other = tmp_path / "other"
    other.mkdir()
    _, _, other_ca = make_ca(other, "someone-else")
    link = tls_link(port, topic_prefix, other_ca, cert, key)
    try:
        link.start()
        assert not link.wait_connected(3.0)
    finally:
        link.stop(timeout_s=1.0)


def test_tls_without_a_client_certificate_is_refused_by_the_broker(tls_broker, topic_prefix):
    broker, port, ca, _cert, _key = tls_broker
    link = tls_link(port, topic_prefix, ca, None, None)
    try:
        link.start()
        assert not link.wait_connected(3.0)
    finally:
        link.stop(timeout_s=1.0)


def test_unreadable_tls_files_are_a_config_error_naming_the_settings(tmp_path):
    bad = tmp_path / "ca.pem"
    bad.write_text("not a certificate")
    with pytest.raises(ConfigError) as info:
        tls_link(8883, "qrgate", bad, None, None)
    assert "mqtt.ca_file" in str(info.value)


def test_daemon_with_an_unusable_ca_file_exits_78_so_systemd_does_not_restart_it(tmp_path):
    from tests.daemon_support import qrgate
    from tests.fault_support import code_images, write_config

    (tmp_path / "ca.pem").write_text("not a certificate")
    config = write_config(tmp_path, code_images(tmp_path / "images", 1),
                          mqtt={"host": "127.0.0.1", "tls": True, "ca_file": tmp_path / "ca.pem"})
    result = qrgate("run", "--config", str(config), "--exit-at-end", timeout_s=60)
    assert result.returncode == 78, result.stderr
    assert "mqtt.ca_file" in result.stderr

"""DCC trust lists on disk (adapter: file I/O): read what an operator imports, write and load the gate's list.

Import formats (``read_import``):

- a PEM bundle: one or more ``-----BEGIN CERTIFICATE-----`` blocks;
- a folder of certificate files (``*.pem``, ``*.crt``, ``*.cer``, ``*.der``; PEM or DER);
- the JSON list of national DCC backends and the EU gateway:
  ``[{"kid": <base64>, "country": "VN", "rawData": <base64 DER>}, ...]``, also wrapped as
  ``{"certificates": [...]}`` (other keys of an entry are ignored; an entry whose
  ``certificateType`` is not ``DSC`` is skipped);
- that JSON preceded by one line holding the base64 signature of the rest, as some
  national backends serve it.

A signature over the list (that first line, or a detached ``--signature`` file of base64
or raw bytes) is checked with ``verify_list_signature`` against a configured key
(Ed25519, or ECDSA P-256 with SHA-256, DER or raw ``r || s``).

The gate's installed list (``keys.dcc_trust_list``) is JSON:
``{"format": "qrgate.dcc-trust/1", "version": <int>, "installed_at": <unix s>, "list_sha256": <hex>,
"certificates": [{"kid", "country", "rawData"}]}``; a bare JSON list is read too (version 0).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding

from firmware.adapters.atomic_files import write_atomic
from firmware.core.credentials.dcc_trust import DscError, DscStore, parse_dsc
from firmware.core.dcc_trust_message import ImportedList, json_entries, list_entries
from firmware.core.errors import ConfigError

log = logging.getLogger(__name__)

FORMAT = "qrgate.dcc-trust/1"
MAX_LIST_BYTES = 64 * 1024 * 1024
CERT_SUFFIXES = (".pem", ".crt", ".cer", ".der")
_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----[A-Za-z0-9+/=\s]+-----END CERTIFICATE-----")








def _pem_blocks(data: bytes, where: str, out: ImportedList) -> None:
    blocks = _PEM_CERT.findall(data)
    if not blocks:
        out.problems.append(f"{where}: no certificate found")
    for i, block in enumerate(blocks):
        try:
            der = x509.load_pem_x509_certificate(block).public_bytes(Encoding.DER)
            out.dscs.append(parse_dsc(der))
        except (ValueError, DscError) as err:
            out.problems.append(f"{where} certificate {i + 1}: {err}")


def _cert_file(data: bytes, where: str, out: ImportedList) -> None:
    if b"-----BEGIN" in data:
        _pem_blocks(data, where, out)
        return
    try:
        out.dscs.append(parse_dsc(data))
    except DscError as err:
        out.problems.append(f"{where}: {err}")


def read_import(path: str | Path) -> ImportedList:
    """Read a PEM bundle, a folder of certificates, or a (signed) JSON DSC list.

    Raises:
        ConfigError: the path does not exist, cannot be read, or is too large.
    """
    src = Path(path)
    out = ImportedList()
    if src.is_dir():
        files = sorted(p for p in src.iterdir() if p.is_file() and p.suffix.lower() in CERT_SUFFIXES)
        if not files:
            raise ConfigError(f"{src} holds no certificate files ({', '.join(CERT_SUFFIXES)})")
        for p in files:
            data = p.read_bytes()
            out.signed_body += data
            _cert_file(data, p.name, out)
        return out
    try:
        if src.stat().st_size > MAX_LIST_BYTES:
            raise ConfigError(f"{src} is larger than {MAX_LIST_BYTES} bytes; is it a DSC list?")
        data = src.read_bytes()
    except FileNotFoundError as err:
        raise ConfigError(f"{src} does not exist; give a PEM bundle, a folder of DER/PEM files or a JSON "
                          "DSC list") from err
    except OSError as err:
        raise ConfigError(f"{src} cannot be read ({err.strerror})") from err
    out.signed_body = data
    stripped = data.lstrip()
    if stripped.startswith(b"-----BEGIN"):
        _pem_blocks(data, src.name, out)
        return out
    if stripped[:1] in (b"[", b"{"):
        json_entries(_load_json(data, src), out)
        return out
    first, _, rest = data.partition(b"\n")
    if rest.lstrip()[:1] in (b"[", b"{"):
        try:
            out.embedded_signature = base64.b64decode(first.strip(), validate=True)
        except binascii.Error as err:
            raise ConfigError(f"{src}: the first line is not a base64 signature") from err
        out.signed_body = rest
        json_entries(_load_json(rest, src), out)
        return out
    _cert_file(data, src.name, out)
    return out


def _load_json(data: bytes, src: Path) -> Any:
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ConfigError(f"{src} is not valid JSON ({err})") from err


def verify_list_signature(body: bytes, signature: bytes, key: Any) -> bool:
    """True if key (Ed25519, or ECDSA P-256 over SHA-256, DER or raw r||s) signed body."""
    try:
        if isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(signature, body)
            return True
        if isinstance(key, ec.EllipticCurvePublicKey):
            if len(signature) == 64:
                signature = encode_dss_signature(int.from_bytes(signature[:32], "big"),
                                                 int.from_bytes(signature[32:], "big"))
            key.verify(signature, body, ec.ECDSA(hashes.SHA256()))
            return True
    except (InvalidSignature, ValueError):
        return False
    return False


def read_signature_file(path: str | Path) -> bytes:
    """A detached signature: base64 text, or raw bytes.

    Raises:
        ConfigError: the file cannot be read.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise ConfigError(f"signature file {path} cannot be read ({err.strerror})") from err
    try:
        return base64.b64decode(data.strip(), validate=True)
    except binascii.Error:
        return data




def write_trust_list(path: str | Path, store: DscStore, *, installed_at_s: float, list_sha256: str,
                     version: int | None = None) -> None:
    """Install a trust list for the gate, atomically (0644: certificates are public).

    Args:
        installed_at_s: its issue time (the import, or a signed update's ``iat``).
        version: default ``int(installed_at_s)``; remote updates must go above it.
    """
    doc = {"format": FORMAT, "version": int(installed_at_s) if version is None else int(version),
           "installed_at": installed_at_s, "list_sha256": list_sha256,
           "certificates": list_entries(list(store.all()))}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, (json.dumps(doc, indent=1) + "\n").encode("utf-8"), mode=0o644)


def load_trust_list(path: str | Path, *, missing_ok: bool = False) -> DscStore:
    """Load the gate's installed DCC trust list.

    Args:
        path: ``keys.dcc_trust_list``.
        missing_ok: a missing file gives an empty store (no DCC verifies: ``unknown_issuer``).

    Raises:
        ConfigError: the file is unreadable, not the format, or holds a bad entry
            (every problem is listed).
    """
    src = Path(path)
    if missing_ok and not src.exists():
        return DscStore()
    try:
        data = src.read_bytes()
    except OSError as err:
        raise ConfigError(f"DCC trust list {src} cannot be read ({err.strerror}); install one with "
                          "`qrgate keys dcc import FILE --config CONFIG`") from err
    doc = _load_json(data, src)
    out = ImportedList()
    json_entries(doc, out)
    if out.problems:
        raise ConfigError([f"DCC trust list {src}: {p}; import the list again" for p in out.problems])
    installed = doc.get("installed_at") if isinstance(doc, dict) else None
    if isinstance(installed, bool) or not isinstance(installed, (int, float)):
        installed = None
    version = doc.get("version") if isinstance(doc, dict) else None
    store = DscStore(out.dscs, installed_at_s=float(installed) if installed is not None else None,
                     version=version if type(version) is int and version >= 0 else 0)
    log.debug("DCC trust list %s: %d DSC(s) from %s", src, len(store), ", ".join(store.countries()))
    return store


class DccTrustListFile:
    """The installed DCC trust list file (``keys.dcc_trust_list``), the DccTrustFile port."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def write(self, store: DscStore, *, installed_at_s: float, list_sha256: str, version: int | None = None) -> None:
        """Install store atomically (see ``write_trust_list``)."""
        write_trust_list(self.path, store, installed_at_s=installed_at_s, list_sha256=list_sha256, version=version)

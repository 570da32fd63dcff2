"""The effective configuration: the config file plus the stored provisioning record. Pure.

The daemon and every tool that takes ``--config`` see the gate through ``effective_config``:
venue, venue name, direction and broker come from the provisioning record when one is
stored, otherwise from the config file (or its defaults); the trusted pass issuers are the
config's issuer directory plus the keys the record carries. Each value says where it came
from (``sources``), so ``config check``, ``keys list``, ``pass check`` and the daemon's
start line tell the same story. Reading the files is the adapter's job
(``firmware.adapters.effective_config``); this module only combines.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives import serialization

from firmware.core.config import Config
from firmware.core.credentials.trust import TrustStore
from firmware.core.identity import GateIdentity
from firmware.core.prov_code import parse_broker

log = logging.getLogger(__name__)

FROM_FILE = "config file"
FROM_DEFAULT = "default"
FROM_RECORD = "provisioning record"

# The settings a provisioning record may override, as "section.key".
RECORD_KEYS = ("device.venue_id", "device.direction", "mqtt.host", "mqtt.port")
# The settings every tool reports with their source.
REPORTED_KEYS = ("device.id", *RECORD_KEYS, "privacy.subject")


def issuer_ders(record: Mapping[str, Any] | None) -> list[bytes]:
    """The issuer public keys (DER) a record carries; entries that are not hex are skipped."""
    out = []
    for der_hex in (record or {}).get("issuer_keys_der_hex", []) or []:
        try:
            out.append(bytes.fromhex(der_hex))
        except (ValueError, TypeError):
            log.error("provisioning record holds an issuer key that is not hex; it is ignored")
    return out


def issuers_from(record: Mapping[str, Any] | None) -> TrustStore:
    """The issuer keys a provisioning record carries (bad entries are skipped with a log line)."""
    keys = []
    for der in issuer_ders(record):
        try:
            keys.append(serialization.load_der_public_key(der))
        except (ValueError, TypeError) as err:
            log.error("provisioning record holds an unreadable issuer key (%s); it is ignored", err)
    try:
        return TrustStore.from_keys(keys)
    except ValueError as err:
        log.error("provisioning record holds an unsupported issuer key (%s); they are ignored", err)
        return TrustStore()


def record_identity(base: GateIdentity, record: Mapping[str, Any] | None, config_trust: TrustStore) -> GateIdentity:
    """The identity in force with a provisioning record: its venue, name and direction, and the
    trusted issuers of the config plus those of the record (nothing of an earlier record)."""
    if not record:
        return dataclasses.replace(base, trust=config_trust)
    return dataclasses.replace(base, venue_id=str(record["venue_id"]), venue_name=str(record.get("venue_name", "")),
                               rules=dataclasses.replace(base.rules, direction=str(record["direction"])),
                               trust=config_trust.merged(issuers_from(record)), source="provisioning")


def apply_record(cfg: Config, record: Mapping[str, Any] | None) -> Config:
    """Return cfg with a provisioning record's venue, direction and broker in it."""
    if not record:
        return cfg
    device = dataclasses.replace(cfg.device, venue_id=str(record["venue_id"]), direction=str(record["direction"]))
    mqtt = cfg.mqtt
    broker = parse_broker(str(record.get("broker") or ""))
    if broker is not None:
        mqtt = dataclasses.replace(mqtt, host=broker[0], port=broker[1])
    return dataclasses.replace(cfg, device=device, mqtt=mqtt)


@dataclass(frozen=True)
class EffectiveConfig:
    """What the gate runs with, and where each value came from.

    Attributes:
        cfg: the config file's settings with the record's venue, direction and broker applied.
        file_cfg: the config file's settings alone.
        record: the stored provisioning record, or None.
        sources: ``"section.key"`` to ``config file``, ``default`` or ``provisioning record``
            for every key of ``REPORTED_KEYS``.
        venue_name: the venue's name (from the record; "" from a config file).
        record_issuer_ders: the issuer keys (DER) the record brought.
    """

    cfg: Config
    file_cfg: Config
    record: Mapping[str, Any] | None = None
    sources: Mapping[str, str] = field(default_factory=dict)
    venue_name: str = ""
    record_issuer_ders: tuple[bytes, ...] = ()

    @property
    def provisioned(self) -> bool:
        """True when the gate has a venue (from either source)."""
        return bool(self.cfg.device.venue_id)

    @property
    def issuers_dir_required(self) -> bool:
        """True when a missing issuer directory is an error: the venue comes from the config file.

        A gate waiting for a provisioning QR, or provisioned by one, may have none: the code
        brings its issuer keys."""
        return bool(self.file_cfg.device.venue_id) and self.record is None

    def value(self, dotted: str) -> Any:
        """The effective value of ``section.key``."""
        section, key = dotted.split(".", 1)
        return getattr(getattr(self.cfg, section), key)

    def identity(self, base: GateIdentity, config_trust: TrustStore) -> GateIdentity:
        """The gate identity in force: see ``record_identity``."""
        return record_identity(base, self.record, config_trust)

    def issuer_trust(self, config_trust: TrustStore) -> TrustStore:
        """The trusted pass issuers: the config's directory plus the record's keys."""
        return config_trust.merged(issuers_from(self.record)) if self.record else config_trust

    def describe(self) -> list[tuple[str, str, str]]:
        """(key, value, source) rows for the reported settings, for tools and the start line."""
        rows = []
        for dotted in REPORTED_KEYS:
            value = self.value(dotted)
            rows.append((dotted, str(value) if value != "" else "-", self.sources.get(dotted, FROM_DEFAULT)))
        if self.venue_name:
            rows.insert(2, ("venue name", self.venue_name, FROM_RECORD))
        return rows


def effective_config(file_cfg: Config, record: Mapping[str, Any] | None,
                     file_keys: Iterable[str] = ()) -> EffectiveConfig:
    """Combine the config file and the stored provisioning record; the one place that does it.

    Args:
        file_cfg: the parsed config file.
        record: the provisioning record from the gate's state, or None.
        file_keys: the ``section.key`` names the config file sets (the rest are defaults).
    """
    record = record if isinstance(record, Mapping) and record.get("venue_id") else None
    cfg = apply_record(file_cfg, record)
    present = set(file_keys)
    sources = {k: FROM_FILE if k in present else FROM_DEFAULT for k in REPORTED_KEYS}
    if record is not None:
        sources["device.venue_id"] = sources["device.direction"] = FROM_RECORD
        if parse_broker(str(record.get("broker") or "")) is not None:
            sources["mqtt.host"] = sources["mqtt.port"] = FROM_RECORD
    return EffectiveConfig(cfg=cfg, file_cfg=file_cfg, record=record, sources=sources,
                           venue_name=str(record.get("venue_name", "")) if record else "",
                           record_issuer_ders=tuple(issuer_ders(record)))

"""Wiring provisioning into the gate (used by the composition root, ``firmware.app``).

At start (``load_provisioning``): the state store is opened (a corrupt file is
quarantined and the ``state_corrupt`` alarm raised), and the persisted provisioning
record, if any, overrides the config's ``device.venue_id``, ``device.direction``,
``mqtt.host``/``mqtt.port`` and adds the issuer keys it carried to the trusted ones.

While running (``install_provisioning``): a ``ProvisioningIntake`` sees every code
before the policy. A new provisioning is applied in place: the event factory gets the
venue and direction, the rules the direction, the credential check the merged issuer
keys, and ``not_provisioned`` is cleared. The MQTT link cannot be re-pointed while it
runs, so when the broker changed the daemon stops cleanly with status ``EX_RESTART``
(75) and systemd (``Restart=on-failure``) starts it again with the new record; it does
not loop, because the next start already has that broker.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from cryptography.hazmat.primitives import serialization

from firmware.adapters.state_store import StateStore
from firmware.core.config import Config
from firmware.core.credentials import check_payload
from firmware.core.credentials.trust import TrustStore
from firmware.core.model import Reason
from firmware.core.prov_code import parse_broker
from firmware.features.provisioning_intake import PROVISIONING_KEY, ProvisioningIntake, confirm_on_outputs

log = logging.getLogger(__name__)

EX_RESTART = 75  # EX_TEMPFAIL: "start me again", distinct from 1 (failure) and 78 (config)
STATE_FILE = "state.json"


@dataclass
class Provisioning:
    """The provisioning state loaded at start.

    Attributes:
        store: the open state store (owned by the daemon).
        record: the persisted provisioning record, or None.
        cfg: the config with the record applied.
        issuers: issuer keys carried by the record (merged into the trusted ones).
        reprovision: re-provisioning allowed for this run (setting or pin held at boot).
    """

    store: StateStore
    record: dict[str, Any] | None
    cfg: Config
    issuers: TrustStore = field(default_factory=TrustStore)
    reprovision: bool = False


def apply_record(cfg: Config, record: dict[str, Any] | None) -> Config:
    """Return cfg with a provisioning record's venue, direction and broker in it."""
    if not record:
        return cfg
    device = dataclasses.replace(cfg.device, venue_id=record["venue_id"], direction=record["direction"])
    mqtt = cfg.mqtt
    broker = parse_broker(record.get("broker") or "")
    if broker is not None:
        mqtt = dataclasses.replace(mqtt, host=broker[0], port=broker[1])
    return dataclasses.replace(cfg, device=device, mqtt=mqtt)


def issuers_from(record: dict[str, Any] | None) -> TrustStore:
    """The issuer keys a provisioning record carries (bad entries are skipped with a log line)."""
    keys = []
    for der_hex in (record or {}).get("issuer_keys_der_hex", []):
        try:
            keys.append(serialization.load_der_public_key(bytes.fromhex(der_hex)))
        except (ValueError, TypeError) as err:
            log.error("provisioning record holds an unreadable issuer key (%s); it is ignored", err)
    try:
        return TrustStore.from_keys(keys)
    except ValueError as err:
        log.error("provisioning record holds an unsupported issuer key (%s); they are ignored", err)
        return TrustStore()


def load_provisioning(cfg: Config, alarms: Any) -> Provisioning:
    """Open the state store and apply the persisted provisioning record to cfg.

    Args:
        cfg: the validated config.
        alarms: the gate's alarms (``set(name, text)``); ``state_corrupt`` is raised here.

    Raises:
        StoreError: the state directory cannot be used at all.
    """
    store = StateStore(cfg.state_dir / STATE_FILE)
    alarm = store.alarm()
    if alarm:
        alarms.set("state_corrupt", f"state file was corrupt and moved to {alarm.get('state_corrupt')}; "
                   "the gate stays unprovisioned until it is provisioned again")
    record = store.get(PROVISIONING_KEY)
    if record is not None and not isinstance(record, dict):
        record = None
    effective = apply_record(cfg, record)
    if record:
        log.info("provisioned for venue %s (%s), direction %s", record["venue_id"], record.get("venue_name", ""),
                 record["direction"])
    return Provisioning(store, record, effective, issuers_from(record), cfg.provisioning.allow_reprovision)


def install_provisioning(app: Any, prov: Provisioning) -> ProvisioningIntake:
    """Add the provisioning intake to a built GateApp and keep the gate in step with it.

    Args:
        app: the GateApp after ``build`` created its service (uses ``service``, ``sink``,
            ``outputs``, ``cfg``, ``alarms``, ``state_fields``, ``stop_event``).
        prov: what ``load_provisioning`` returned.
    """
    from firmware.adapters.keystore import load_trust_dir

    service = app.service
    cfg: Config = app.cfg
    authority = load_trust_dir(cfg.authority_dir, missing_ok=True)
    # only worth a warning where a provisioning code could be applied at all
    if len(authority) == 0 and (not cfg.device.venue_id or prov.reprovision):
        log.warning("no provisioning authority key in %s: provisioning codes will be refused "
                    "(add one with `qrgate keys trust PUBFILE --role authority`)", cfg.authority_dir)
    config_trust = service.gatekeeper.check.keywords.get("trust") if isinstance(
        service.gatekeeper.check, partial) else None

    def applied(record: dict[str, Any]) -> None:
        new_cfg = apply_record(app.cfg, record)
        service.events = dataclasses.replace(service.events, venue_id=record["venue_id"],
                                             direction=record["direction"])
        gk = service.gatekeeper
        gk.rules = dataclasses.replace(gk.rules, direction=record["direction"])
        if isinstance(config_trust, TrustStore):
            gk.check = partial(check_payload, trust=config_trust.merged(issuers_from(record)))
        if gk.blocked is Reason.NOT_PROVISIONED:
            gk.blocked = None
        app.alarms.set("state_corrupt", None)
        broker_changed = (new_cfg.mqtt.host, new_cfg.mqtt.port) != (app.cfg.mqtt.host, app.cfg.mqtt.port) \
            and bool(record.get("broker"))
        app.cfg = new_cfg
        prov.record = record
        field_ops = getattr(app, "field", None)
        if field_ops is not None:
            field_ops.tick()  # the device state (and gatekeeper.blocked) follows at once
        if broker_changed:
            log.warning("provisioned with a new broker %s; restarting the daemon to connect to it",
                        record["broker"])
            app.exit_status = EX_RESTART
            stop = getattr(app, "stop_event", None)
            if stop is not None:
                stop.set()

    intake = ProvisioningIntake(
        authority=authority, store=prov.store, device_id=cfg.device.id, record=service.record,
        events=lambda: service.events, on_applied=applied, feedback=confirm_on_outputs(app.outputs),
        is_provisioned=lambda: bool(prov.record) or bool(app.cfg.device.venue_id),
        allow_reprovision=prov.reprovision,
        repeat_window_s=cfg.policy.repeat_window_s, clock_skew_s=cfg.policy.clock_skew_s)
    service.interceptors.append(intake)
    def fields() -> dict[str, Any]:
        record = prov.record or {}
        return {"provisioned": bool(record) or bool(app.cfg.device.venue_id),
                "venue_id": record.get("venue_id", app.cfg.device.venue_id),
                "venue_name": record.get("venue_name", ""), "direction": app.cfg.device.direction,
                "state_alarm": prov.store.alarm()}

    app.state_fields.append(fields)
    getattr(app, "status_fields", []).append(fields)
    # The device state (firmware.field) reads "provisioned" from here, not from the start-up config.
    getattr(app, "device_inputs", []).append(lambda: {"provisioned": bool(prov.record) or bool(
        app.cfg.device.venue_id)})
    return intake

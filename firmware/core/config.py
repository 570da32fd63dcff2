"""The configuration schema: one TOML file parsed once into frozen dataclasses.

Every field carries a description and an example (``doc`` and ``example`` in its
metadata), so the template, the provisioning tools and the error messages all
come from one place. ``load_config`` collects every problem and raises one
``ConfigError``; the composition root then exits with status 78 (EX_CONFIG).

Sections: [device] [camera] [decoder] [gpio] [policy] (with the table [policy.dcc])
[privacy] [keys] [mqtt] [outbox] [status] [commands] [provisioning] [lists].
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from firmware.core.dcc_status import VN_2022_VACCINE_PRODUCTS
from firmware.core.errors import ConfigError

DEFAULT_CONFIG_PATH = Path("/etc/qrgate/qrgate.toml")


DEVICE_ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


# BCM numbers of the 40-pin header's GPIOs.
VALID_BCM_PINS = range(0, 28)


def opt(default: Any, doc: str, example: Any = None, **extra: Any) -> Any:
    """Declare a config field with its description and an example value."""
    meta = {"doc": doc, "example": default if example is None else example, **extra}
    if isinstance(default, (list, dict, set)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class DeviceConfig:
    id: str = opt("gate-1", "Stable device id, a slug of [a-z0-9_-]. Used in topics and events.",
                  "busstation-3-gate-2")
    venue_id: str = opt("", "Venue id this gate belongs to (from `qrgate provision venue`). "
                        "Empty means not provisioned.", "v-7f3a9c2e")
    direction: str = opt("in", "Which way the gate lets people through: `in` or `out`.", "in",
                         choices=("in", "out"))
    state_dir: str = opt("/var/lib/qrgate", "Directory for the outbox, state and lists (writable).",
                         "/var/lib/qrgate")
    runtime_dir: str = opt("/run/qrgate", "Directory for the status file and control socket.",
                           "/run/qrgate")


@dataclass(frozen=True)
class CameraConfig:
    source: str = opt("picamera2", "Frame source: `picamera2`, `dir:PATH`, `file:PATH` or `v4l2:N`.",
                      "dir:/srv/qr-images")
    width: int = opt(640, "Frame width in pixels (picamera2 lores stream, v4l2).", 640, min=64, max=4096)
    height: int = opt(480, "Frame height in pixels.", 480, min=48, max=3072)
    fps: float = opt(15.0, "Frames per second requested from the camera, or replayed from files.",
                     15.0, min=0.1, max=240.0)
    frames_per_image: int = opt(3, "Replay sources: how many consecutive frames show each image.",
                                3, min=1, max=10000)
    lens_position: float = opt(-1.0, "Manual focus in dioptres for cameras with autofocus; "
                               "-1 leaves focus alone.", 4.0, min=-1.0, max=32.0)
    as_fast_as_possible: bool = opt(False, "Replay sources: ignore fps and deliver frames "
                                    "as fast as they are read (benchmarks).", False)
    max_frame_age_s: float = opt(3.0, "A camera that delivers no frame for this long is faulty.",
                                 3.0, min=0.5, max=60.0)


@dataclass(frozen=True)
class DecoderConfig:
    backend: str = opt("zxing", "QR decoder: `zxing` (zxing-cpp, default: faster and reads more) "
                       "or `zbar` (zbar-py).", "zxing", choices=("zxing", "zbar"))
    retry: bool = opt(True, "With `zxing`: search each frame at full and at half size (in place of "
                      "zxing-cpp's third-size layer, for the same work) and, where a code is located but "
                      "not read, try again on that region (other binarizers, upscaled, sharpened, "
                      "contrast-stretched, zbar-py if installed). Frames without a code cost about what "
                      "zxing-cpp alone costs. false: exactly zxing-cpp with its defaults. No effect with "
                      "`zbar`.",
                      True)


@dataclass(frozen=True)
class GpioConfig:
    pin_factory: str = opt("default", "gpiozero pin factory: `default` (lgpio on a Pi), `lgpio`, "
                           "`rpigpio`, `native`, or `mock` for simulated pins on a PC.", "mock",
                           choices=("default", "lgpio", "rpigpio", "pigpio", "native", "mock"))
    chip: int = opt(-1, "gpiochip number for lgpio (-1: let gpiozero choose; Pi 5 may need 0 or 4).",
                    0, min=-1, max=16)
    relay_pin: int = opt(17, "BCM pin driving the turnstile relay.", 17, pin=True)
    relay_active_high: bool = opt(False, "True if the relay board switches on a HIGH level "
                                  "(many cheap boards are active-low).", False)
    relay_pulse_ms: int = opt(1500, "How long one grant energises the relay, in milliseconds.",
                              1500, min=50, max=30000)
    green_led_pin: int = opt(27, "BCM pin of the green (granted) LED.", 27, pin=True)
    red_led_pin: int = opt(22, "BCM pin of the red (denied) LED.", 22, pin=True)
    buzzer_pin: int = opt(23, "BCM pin of the buzzer.", 23, pin=True)
    status_led_pin: int = opt(24, "BCM pin of the status LED (blink codes); -1 for none.", 24,
                              pin=True, optional_pin=True)
    fire_alarm_pin: int = opt(-1, "BCM input pin wired to the fire-alarm contact; -1 for none.", 5,
                              pin=True, optional_pin=True)
    fire_alarm_active_high: bool = opt(False, "True if the fire-alarm input reads HIGH when the "
                                       "alarm is active.", False)
    free_passage_relay: str = opt("hold", "In free passage (fire alarm or `mode free_passage`): `hold` "
                                  "keeps the relay energised (turnstile free); `release` keeps it off "
                                  "because the fire panel frees the lock in hardware.", "hold",
                                  choices=("hold", "release"))
    passage_sensor_pin: int = opt(-1, "BCM input pin of a rotation or door sensor; -1 for none.", 6,
                                  pin=True, optional_pin=True)
    reprovision_pin: int = opt(-1, "BCM input pin that, held active at boot, allows re-provisioning; "
                               "-1 for none.", 26, pin=True, optional_pin=True)


@dataclass(frozen=True)
class PolicyConfig:
    repeat_window_s: float = opt(5.0, "A code stays one decision while seen again within this many "
                                 "seconds; the same person is not decided again within it.", 5.0,
                                 min=0.0, max=3600.0)
    passback: str = opt("off", "Anti-passback: `off`, `soft` (grant but flag) or `hard` (deny).",
                        "hard", choices=("off", "soft", "hard"))
    passback_window_s: float = opt(3600.0, "With passback on: how long after an entry a second "
                                   "entry counts as passback if no exit was recorded.", 3600.0,
                                   min=0.0, max=7 * 86400.0)
    accept_unsigned_id: bool = opt(False, "Accept the unsigned CCCD citizen-ID QR for identity-only "
                                   "check-in.", True)
    require_synced_clock: bool = opt(False, "Refuse time-dependent passes until systemd reports the "
                                     "clock synchronised.", True)
    health_declaration_max_age_h: float = opt(0.0, "Deny passes whose health declaration (`hd`) "
                                              "is older than this many hours; 0 = not required.",
                                              24.0, min=0.0, max=8760.0)
    require_expiry: bool = opt(True, "Refuse `QG1:` passes without an `exp` claim (they would never "
                               "expire), reason `no_expiry`; false accepts them.", True)
    allow_list_required: bool = opt(False, "Employees-only mode: only people on the allow list "
                                    "are granted.", False)
    clock_skew_s: float = opt(0.0, "Tolerance applied to nbf/exp checks, in seconds.", 30.0,
                              min=0.0, max=600.0)


DCC_KINDS = ("vaccination", "recovery", "test")
DCC_TEST_TYPES = ("pcr", "rapid_antigen")


@dataclass(frozen=True)
class DccPolicyConfig:
    """``[policy.dcc]``: which EU Digital COVID Certificates (``HC1:``) open the gate."""

    kinds: tuple[str, ...] = opt(DCC_KINDS, "Certificate kinds admitted: any of `vaccination`, `recovery`, "
                                 "`test`.", ["vaccination", "test"], items=DCC_KINDS)
    min_days_after_last_dose: int = opt(14, "A vaccination counts this many days after the last dose "
                                        "(`dt`); earlier: `dcc_too_recent`.", 14, min=0, max=3650)
    max_days_after_last_dose: int = opt(0, "A vaccination older than this many days is refused "
                                        "(`dcc_vaccination_too_old`); 0 = no limit.", 270, min=0, max=36500)
    products: tuple[str, ...] = opt(VN_2022_VACCINE_PRODUCTS, "Accepted vaccine products, as DCC `mp` codes "
                                    "(default: the vaccines licensed in Vietnam in 2022).",
                                    ["EU/1/20/1528", "EU/1/20/1507"])
    max_test_age_h: dict[str, float] = opt({"pcr": 72.0, "rapid_antigen": 24.0}, "Maximum age of a negative test "
                               "(sample time `sc`), in hours, by type: `pcr` (NAAT) and `rapid_antigen`; "
                               "a type left out is not accepted.", {"pcr": 48.0, "rapid_antigen": 24.0},
                               table_keys=DCC_TEST_TYPES, min=0.0, max=8760.0)
    max_trust_list_age_h: float = opt(0.0, "Refuse DCCs (`dcc_trust_list_stale`) while the installed trust "
                                      "list is older than this many hours; 0 = never stale.", 168.0,
                                      min=0.0, max=87600.0)
    require_second_credential: bool = opt(False, "A DCC alone does not open the gate (`dcc_identity_required`): a "
                                           "CCCD card or qrgate pass whose name matches must follow within "
                                           "`second_credential_window_s` (else `dcc_identity_mismatch`).", True)
    second_credential_window_s: float = opt(10.0, "How long a DCC waits for the second credential, in seconds.",
                                            15.0, min=1.0, max=300.0)


@dataclass(frozen=True)
class PrivacyConfig:
    subject: str = opt("hmac", "How the person id appears in events: `raw`, `hmac` (keyed with "
                       "the venue secret) or `none`.", "hmac", choices=("raw", "hmac", "none"))
    hmac_secret_file: str = opt("", "File holding the per-venue HMAC secret (created 0600 if "
                                "missing). Empty: `<state_dir>/venue-secret`.", "/etc/qrgate/venue-secret")
    publish_codes: bool = opt(False, "Include the raw QR payload in events (off by default).", False)
    cccd_id_digits: int = opt(0, "How many trailing digits of a CCCD id an event's display shows "
                              "(0: none, the default; at most 3).", 0, min=0, max=3)
    escrow_key: str = opt("", "The health office's X25519 public key (PEM, from `qrgate keys escrow-new`): each "
                          "scan event of a person then carries their contact (name, full phone, id) sealed to it "
                          "(`contact_sealed`), which only `qrgate history trace --reveal` with the private key "
                          "opens. Relative to the config file. Empty: no sealed contact.", "health-office.pub.pem")


@dataclass(frozen=True)
class KeysConfig:
    issuers_dir: str = opt("", "Directory of trusted pass issuer public keys (PEM). Empty: "
                           "`issuers/` beside the config file.", "/etc/qrgate/issuers")
    dcc_trust_list: str = opt("", "Trusted EU DCC Document Signer Certificates, as written by "
                              "`qrgate keys dcc import`. Empty: `dcc-trust.json` beside the config file.",
                              "/etc/qrgate/dcc-trust.json")
    dcc_list_key: str = opt("", "Public key (PEM, Ed25519 or P-256) that must have signed a DCC trust list "
                            "before `qrgate keys dcc import` installs it; empty: no signature required.",
                            "/etc/qrgate/dcc-list-signer.pub.pem")
    authority_dir: str = opt("", "Directory of trusted provisioning authority keys (PEM). Empty: "
                             "`authority/` beside the config file.", "/etc/qrgate/authority")
    command_dir: str = opt("", "Directory of trusted remote command keys (PEM). Empty: "
                           "`commands/` beside the config file.", "/etc/qrgate/commands")


@dataclass(frozen=True)
class MqttConfig:
    host: str = opt("", "Broker host name or address; empty: no broker, events wait in the outbox.",
                    "mqtt.example.lan")
    port: int = opt(1883, "Broker port (8883 is usual with TLS).", 8883, min=1, max=65535)
    protocol: str = opt("5", "MQTT protocol version: `5` or `3.1.1`.", "5", choices=("5", "3.1.1"))
    prefix: str = opt("qrgate", "Topic prefix; topics are `<prefix>/<device_id>/...`.", "qrgate")
    keepalive_s: int = opt(30, "MQTT keepalive in seconds.", 30, min=5, max=3600)
    tls: bool = opt(False, "Use TLS.", True)
    ca_file: str = opt("", "CA certificate file for TLS (PEM).", "/etc/qrgate/ca.pem")
    cert_file: str = opt("", "Client certificate file for TLS (PEM).", "/etc/qrgate/client.pem")
    key_file: str = opt("", "Client key file for TLS (PEM).", "/etc/qrgate/client.key")
    username: str = opt("", "Username, if the broker wants one.", "gate-1")
    password_file: str = opt("", "File holding the password (keep it 0600).", "/etc/qrgate/mqtt-password")
    inflight_max: int = opt(100, "At most this many unacknowledged publishes at a time.", 100,
                            min=1, max=1000)
    discovery: bool = opt(True, "Publish Home Assistant discovery.", True)
    discovery_prefix: str = opt("homeassistant", "Home Assistant discovery prefix.", "homeassistant")
    discovery_bridge: bool = opt(False, "Point Home Assistant's open button and mode select at "
                                 "`<prefix>/<device_id>/dashboard/<name>`, where `qrgate cmd bridge` signs "
                                 "and forwards them; false: at `cmd/<name>`, where unsigned presses are refused.",
                                 True)
    state_interval_s: float = opt(60.0, "Refresh the retained state at least this often.", 60.0,
                                  min=1.0, max=3600.0)
    app_ack: bool = opt(False, "Application-level ack: an event counts as delivered only when the "
                        "consumer (the history collector) acknowledges it on the retained "
                        "`<prefix>/<device_id>/ack` topic, not when the broker PUBACKs it; until then it "
                        "stays in the outbox (counted in the backlog and the budget) and is published again "
                        "after `app_ack_timeout_s`. Needs a collector that publishes acks.", True)
    app_ack_timeout_s: float = opt(300.0, "With `app_ack`: publish an event again when the consumer has not "
                                   "acknowledged it this many seconds after the broker's PUBACK.", 300.0,
                                   min=1.0, max=86400.0)


@dataclass(frozen=True)
class OutboxConfig:
    max_events: int = opt(300_000, "Budget of stored events (sent and unsent); about 72 h at 1 scan/s.",
                          300_000, min=10, max=50_000_000)
    retention_days: float = opt(7.0, "Sent events older than this are pruned.", 7.0, min=0.0, max=3650.0)
    full_policy: str = opt("deny", "When the budget is reached: `deny` new scans with reason "
                           "`storage_full` and raise an alarm. Oldest unsent events are never dropped.",
                           "deny", choices=("deny",))


@dataclass(frozen=True)
class CommandsConfig:
    enabled: bool = opt(True, "Accept signed remote commands on `<prefix>/<device_id>/cmd/#`.", True)
    max_age_s: float = opt(30.0, "Reject a command whose expires_at is more than this after issued_at.",
                           30.0, min=1.0, max=30.0)
    rate_per_min: int = opt(30, "At most this many commands a minute; a burst beyond is rejected.",
                            30, min=1, max=6000)
    reset_required_after_fire: bool = opt(False, "After a fire alarm clears, stay in free passage "
                                          "until a signed `mode normal` command arrives.", False)
    pass_timeout_s: float = opt(10.0, "With a passage sensor: a grant not followed by a passage "
                                "within this time is recorded as `not_passed`.", 10.0, min=1.0, max=600.0)


@dataclass(frozen=True)
class ProvisioningConfig:
    allow_reprovision: bool = opt(False, "A provisioned gate accepts a new provisioning QR.", False)


@dataclass(frozen=True)
class ListsConfig:
    max_age_h: float = opt(0.0, "A deny/allow list older than this many hours is stale; 0 = never.",
                           24.0, min=0.0, max=8760.0)
    stale_policy: str = opt("fail_closed", "With a stale list (older than max_age_h) or one that cannot be "
                            "read: `fail_closed` denies every code (`lists_stale`, `lists_unavailable`) until a "
                            "valid list is installed; `keep` goes on deciding with what is loaded, which for a "
                            "damaged deny list is an empty one: the people on it get in.",
                            "fail_closed", choices=("keep", "fail_closed"))


@dataclass(frozen=True)
class Config:
    """The whole configuration. Built once by ``load_config``."""

    device: DeviceConfig = field(default_factory=DeviceConfig)
    camera: CameraConfig = field(default_factory=CameraConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    gpio: GpioConfig = field(default_factory=GpioConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    keys: KeysConfig = field(default_factory=KeysConfig)
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    outbox: OutboxConfig = field(default_factory=OutboxConfig)
    commands: CommandsConfig = field(default_factory=CommandsConfig)
    provisioning: ProvisioningConfig = field(default_factory=ProvisioningConfig)
    lists: ListsConfig = field(default_factory=ListsConfig)
    policy_dcc: DccPolicyConfig = field(default_factory=DccPolicyConfig)
    path: str = ""

    @property
    def config_dir(self) -> Path:
        """Directory of the config file (relative key paths are resolved against it)."""
        return Path(self.path).parent if self.path else Path.cwd()

    def resolve(self, value: str, default_name: str) -> Path:
        """Resolve a path setting: empty gives ``config_dir/default_name``; relative is config-relative."""
        p = Path(value) if value else Path(default_name)
        return p if p.is_absolute() else self.config_dir / p

    @property
    def issuers_dir(self) -> Path:
        return self.resolve(self.keys.issuers_dir, "issuers")

    @property
    def authority_dir(self) -> Path:
        return self.resolve(self.keys.authority_dir, "authority")

    @property
    def command_keys_dir(self) -> Path:
        return self.resolve(self.keys.command_dir, "commands")

    @property
    def escrow_key_path(self) -> Path | None:
        """The health office's public key file (privacy.escrow_key), or None when contacts are not sealed."""
        return self.resolve(self.privacy.escrow_key, self.privacy.escrow_key) if self.privacy.escrow_key else None

    @property
    def state_dir(self) -> Path:
        return self.resolve(self.device.state_dir, "state")

    @property
    def dcc_trust_list(self) -> Path:
        return self.resolve(self.keys.dcc_trust_list, "dcc-trust.json")


SECTIONS: dict[str, type] = {
    "device": DeviceConfig, "camera": CameraConfig, "decoder": DecoderConfig, "gpio": GpioConfig,
    "policy": PolicyConfig, "privacy": PrivacyConfig, "keys": KeysConfig, "mqtt": MqttConfig,
    "outbox": OutboxConfig, "commands": CommandsConfig, "provisioning": ProvisioningConfig,
    "lists": ListsConfig,
}
# Tables inside a section: [policy.dcc] is Config.policy_dcc.
SUBSECTIONS: dict[str, dict[str, tuple[str, type]]] = {"policy": {"dcc": ("policy_dcc", DccPolicyConfig)}}
SECRET_KEYS = {("mqtt", "password_file")}


def _field_type(section_cls: type, name: str) -> type:
    hints = typing.get_type_hints(section_cls)
    t = hints[name]
    if isinstance(t, types.UnionType):
        chosen: type = next(a for a in typing.get_args(t) if a is not type(None))
        return chosen
    found: type = t
    return found


# Deepest nesting a config value may have: the deepest real setting is a table of numbers
# in [policy.dcc]; anything much deeper is hostile and would exhaust the stack when shown.
MAX_VALUE_DEPTH = 4


def _value_depth(value: Any, limit: int = MAX_VALUE_DEPTH + 1) -> int:
    """How deeply lists and tables nest in value (0 for a scalar), counting at most up to limit.

    Iterative, so a hostile document cannot exhaust the stack here.
    """
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > deepest:
            deepest = depth
        if deepest >= limit:
            return deepest
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return deepest


def _shown(value: Any, limit: int = 60) -> str:
    """A short, safe repr of a config value for an error message."""
    if _value_depth(value) > MAX_VALUE_DEPTH:
        return "(a value nested too deeply)"
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _check_value(section: str, f: dataclasses.Field[Any], value: Any, section_cls: type) -> tuple[Any, str | None]:
    key = f"{section}.{f.name}"
    if _value_depth(value) > MAX_VALUE_DEPTH:
        return None, f"{key} is nested too deeply; give a plain value, for example {f.metadata.get('example')!r}"
    raw = value
    want = _field_type(section_cls, f.name)
    meta = f.metadata
    if f.metadata.get("pin") and isinstance(value, str):
        m = re.fullmatch(r"(?:GPIO|BCM)?(\d+)", value.strip(), re.IGNORECASE)
        if not m:
            return None, f"{key} = {_shown(value)} is not a pin; give a BCM number such as 17 or \"GPIO17\""
        value = int(m.group(1))
    if want is bool:
        if not isinstance(value, bool):
            return None, f"{key} = {_shown(value)} must be true or false"
    elif want is int:
        if isinstance(value, bool) or not isinstance(value, int):
            return None, f"{key} = {_shown(value)} must be a whole number, for example {meta.get('example')!r}"
    elif want is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None, f"{key} = {_shown(value)} must be a number, for example {meta.get('example')!r}"
        # NaN passes every `<` and `>` check, and an int beyond a float's range cannot be compared.
        try:
            value = float(value)
        except OverflowError:
            value = math.inf
        if not math.isfinite(value):
            return None, (f"{key} = {_shown(raw)} is not a finite number; give a number between "
                          f"{meta.get('min')} and {meta.get('max')}, for example {meta.get('example')!r}")
    elif want is str:
        if not isinstance(value, str):
            return None, f"{key} = {_shown(value)} must be a string, for example {str(meta.get('example'))!r}"
    if "choices" in meta and value not in meta["choices"]:
        return None, f"{key} = {_shown(value)} is not one of {', '.join(map(repr, meta['choices']))}"
    if meta.get("pin"):
        if not (meta.get("optional_pin") and value == -1) and value not in VALID_BCM_PINS:
            hint = " or -1 for none" if meta.get("optional_pin") else ""
            return None, f"{key} = {_shown(value)} is not a header GPIO; use a BCM number 0-27{hint}"
    else:
        if "min" in meta and value < meta["min"]:
            return None, f"{key} = {_shown(raw)} is below the minimum {meta['min']}"
        if "max" in meta and value > meta["max"]:
            return None, f"{key} = {_shown(raw)} is above the maximum {meta['max']}"
    return value, None


def _cross_checks(cfg: Config) -> list[str]:
    problems: list[str] = []
    if not DEVICE_ID_PATTERN.match(cfg.device.id):
        problems.append(f"device.id = {cfg.device.id!r} must be a slug of a-z, 0-9, '_' and '-' "
                        "(at most 64 characters), for example \"busstation-3-gate-2\"")
    elif cfg.device.id == "venues":
        problems.append("device.id = 'venues' is reserved (<prefix>/venues/ carries the venue-wide lists); "
                        "choose another id")
    used: dict[int, str] = {}
    for f in dataclasses.fields(GpioConfig):
        if not f.metadata.get("pin"):
            continue
        pin = getattr(cfg.gpio, f.name)
        if pin == -1:
            continue
        if pin in used:
            problems.append(f"gpio.{f.name} {pin} is also used by gpio.{used[pin]}; "
                            "give each role its own pin")
        else:
            used[pin] = f.name
    src = cfg.camera.source
    if not (src == "picamera2" or src.startswith(("dir:", "file:", "v4l2:"))):
        problems.append(f"camera.source = {src!r} is not a source; use \"picamera2\", \"dir:PATH\", "
                        "\"file:PATH\" or \"v4l2:N\"")
    elif src.startswith(("dir:", "file:")):
        p = Path(src.split(":", 1)[1])
        if not p.is_absolute() and cfg.path:
            p = cfg.config_dir / p
        if not p.exists():
            problems.append(f"camera.source = {src!r}: {p} does not exist; point it at a folder or "
                            "image file")
    elif src.startswith("v4l2:") and not src[5:].isdigit():
        problems.append(f"camera.source = {src!r}: give the video device number, e.g. \"v4l2:0\"")
    if cfg.mqtt.prefix != cfg.mqtt.prefix.strip("/") or not cfg.mqtt.prefix or any(
            c in cfg.mqtt.prefix for c in "#+"):
        problems.append(f"mqtt.prefix = {cfg.mqtt.prefix!r} must be a topic prefix without wildcards or "
                        "leading/trailing '/', for example \"qrgate\"")
    if cfg.escrow_key_path is not None and not cfg.escrow_key_path.is_file():
        problems.append(f"privacy.escrow_key = {cfg.privacy.escrow_key!r} does not exist or is not a file; copy the "
                        "health office's .pub.pem there (`qrgate keys escrow-new` makes one) or clear the setting")
    if cfg.mqtt.host:
        for key in ("ca_file", "cert_file", "key_file", "password_file"):
            value = getattr(cfg.mqtt, key)
            if value and not cfg.resolve(value, value).is_file():
                problems.append(f"mqtt.{key} = {value!r} does not exist or is not a file; "
                                "create it or clear the setting")
        if bool(cfg.mqtt.cert_file) != bool(cfg.mqtt.key_file):
            problems.append("mqtt.cert_file and mqtt.key_file go together; set both or neither")
    return problems


def parse_config(data: dict[str, Any], path: str = "") -> Config:
    """Validate a parsed TOML document and build the Config.

    Args:
        data: the TOML document as a dict.
        path: the file it came from (relative paths are resolved against its folder).

    Raises:
        ConfigError: with every problem found, one line each.
    """
    problems: list[str] = []
    sections: dict[str, Any] = {}
    for name in data:
        if name not in SECTIONS:
            problems.append(f"[{name}] is not a known section; known: "
                            + ", ".join(f"[{s}]" for s in SECTIONS))
    for name, cls in SECTIONS.items():
        raw = data.get(name, {})
        if not isinstance(raw, dict):
            problems.append(f"{name} must be a table ([{name}])")
            raw = {}
        for sub, (attr, sub_cls) in SUBSECTIONS.get(name, {}).items():
            raw = dict(raw)
            sections[attr] = _parse_subsection(f"{name}.{sub}", sub_cls, raw.pop(sub, {}), problems)
        known = {f.name: f for f in dataclasses.fields(cls)}
        values: dict[str, Any] = {}
        for key, value in raw.items():
            if key not in known:
                close = [k for k in known if k.split("_")[0] == key.split("_")[0]]
                hint = f"; did you mean {close[0]!r}?" if close else ""
                problems.append(f"{name}.{key} is not a known setting{hint}")
                continue
            checked, problem = _check_value(name, known[key], value, cls)
            if problem:
                problems.append(problem)
            else:
                values[key] = checked
        sections[name] = cls(**values)
    cfg = Config(**sections, path=str(path))
    problems.extend(_cross_checks(cfg))
    if problems:
        raise ConfigError(problems)
    return cfg


def _finite_between(value: int | float, low: float, high: float) -> bool:
    """True when value is a finite number within [low, high] (huge ints included, without overflow)."""
    if isinstance(value, float) and not math.isfinite(value):
        return False
    return low <= value <= high


def _parse_subsection(key: str, cls: type, raw: Any, problems: list[str]) -> Any:
    """Check a table such as [policy.dcc]: scalars as in a section, plus lists and number tables."""
    if isinstance(raw, dict) and _value_depth(raw) > MAX_VALUE_DEPTH + 1:
        problems.append(f"{key} is nested too deeply")
        return cls()
    if not isinstance(raw, dict):
        problems.append(f"{key} must be a table ([{key}])")
        return cls()
    known = {f.name: f for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    for name, value in raw.items():
        f = known.get(name)
        if f is None:
            problems.append(f"{key}.{name} is not a known setting; known: {', '.join(known)}")
            continue
        meta = f.metadata
        if _value_depth(value) > MAX_VALUE_DEPTH:
            problems.append(f"{key}.{name} is nested too deeply; for example {meta['example']!r}")
            continue
        if isinstance(f.default, tuple):
            allowed = meta.get("items")
            if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
                problems.append(f"{key}.{name} = {_shown(value)} must be a list of strings, for example "
                                f"{meta['example']!r}")
            elif allowed and any(v not in allowed for v in value):
                problems.append(f"{key}.{name} = {_shown(value)}: each item must be one of {', '.join(allowed)}")
            else:
                values[name] = tuple(dict.fromkeys(value))
        elif "table_keys" in meta:
            if not isinstance(value, dict) or any(k not in meta["table_keys"] for k in value) or any(
                    isinstance(v, bool) or not isinstance(v, (int, float)) or not _finite_between(v, meta["min"], meta["max"])
                    for v in value.values()):
                problems.append(f"{key}.{name} = {_shown(value)} must be a table of hours ({meta['min']} to "
                                f"{meta['max']}) with keys among {', '.join(meta['table_keys'])}, for example "
                                "{ pcr = 72, rapid_antigen = 24 }")
            else:
                values[name] = {k: float(v) for k, v in value.items()}
        else:
            checked, problem = _check_value(key, f, value, cls)
            if problem:
                problems.append(problem)
            else:
                values[name] = checked
    return cls(**values)



def _field_default(f: dataclasses.Field[Any]) -> Any:
    """A dataclass field's default value (from its factory where it has one)."""
    if f.default is not dataclasses.MISSING:
        return f.default
    factory: Any = f.default_factory
    return factory()


def render_template() -> str:
    """Return a commented TOML config with every setting, its description and default."""
    lines = ["## qrgate configuration (/etc/qrgate/qrgate.toml). Every setting is shown with its",
             "## default; uncomment and change what you need.", ""]
    for name, cls in SECTIONS.items():
        lines.append(f"[{name}]")
        for f in dataclasses.fields(cls):
            lines.append(f"## {f.metadata['doc']}")
            default = f.default
            lines.append(f"# {f.name} = {_toml_value(default)}    # example: {_toml_value(f.metadata['example'])}")
        lines.append("")
        for sub, (_attr, sub_cls) in SUBSECTIONS.get(name, {}).items():
            lines.append(f"[{name}.{sub}]")
            for f in dataclasses.fields(sub_cls):
                lines.append(f"## {f.metadata['doc']}")
                default = _field_default(f)
                lines.append(f"# {f.name} = {_toml_value(default)}    # example: "
                             f"{_toml_value(f.metadata['example'])}")
            lines.append("")
    return "\n".join(lines)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    return repr(value)


def to_toml(cfg: Config) -> str:
    """Serialise a Config to TOML (every section, every key). Used by provisioning tools."""
    out: list[str] = []
    for name in SECTIONS:
        section = getattr(cfg, name)
        out.append(f"[{name}]")
        for f in dataclasses.fields(section):
            out.append(f"{f.name} = {_toml_value(getattr(section, f.name))}")
        out.append("")
        for sub, (attr, _cls) in SUBSECTIONS.get(name, {}).items():
            table = getattr(cfg, attr)
            out.append(f"[{name}.{sub}]")
            for f in dataclasses.fields(table):
                out.append(f"{f.name} = {_toml_value(getattr(table, f.name))}")
            out.append("")
    return "\n".join(out)


def masked_dump(cfg: Config) -> dict[str, dict[str, Any]]:
    """Return the config as nested dicts with secret settings masked, for logs and `status`."""
    result: dict[str, dict[str, Any]] = {}
    for name in SECTIONS:
        section = dataclasses.asdict(getattr(cfg, name))
        for sec, key in SECRET_KEYS:
            if sec == name and section.get(key):
                section[key] = "***"
        result[name] = section
    return result

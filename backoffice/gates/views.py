"""Kiểm soát vào ra bằng máy: each venue's gates, live state, provisioning QR, signed commands, lists.

Signing reuses the CLI's code: ``provisioning.prov_qr.make_code`` (authority key),
``provisioning.commands.build_envelope``/``send_command`` (command key) and
``firmware.list_updates.encode_message`` on the venue-wide topic (command key). Every
command and list change is written to the audit log with who pressed and the answer.
"""

from __future__ import annotations

import base64
import io
import logging
import re
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django import forms
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy as _lazy
from django.views.decorators.http import require_POST

from backoffice import site
from backoffice.gates.models import Gate, QuarantineEntry, VenueList
from backoffice.venues import services
from backoffice.venues.models import Venue
from firmware.core.errors import ConfigError, QrGateError

log = logging.getLogger(__name__)

DEVICE_ID = re.compile(r"^[a-z0-9_-]{1,64}$")
# Page buttons -> (command, args) as the gate's remote control takes them.
ACTIONS: dict[str, tuple[str, dict[str, Any]]] = {
    "open": ("open", {}), "lockdown": ("mode", {"mode": "lockdown"}), "normal": ("mode", {"mode": "normal"}),
    "reload": ("reload", {}),
}
COMMAND_TTL_S = 20.0
ANSWER_TIMEOUT_S = 5.0


def _devices(venue: Venue) -> list[str]:
    """The venue's gates: those provisioned here and those whose scans were collected."""
    from backoffice.history.views import store

    known = set(venue.gates.values_list("device_id", flat=True))
    try:
        # "web" is the phone check-ins' device (backoffice.personal), not a gate.
        known.update(d for v, d in store().sources() if v == venue.venue_id and d != "web")
    except QrGateError as err:
        log.warning("history sources unavailable: %s", err)
    return sorted(known)


def _live(devices: list[str]) -> tuple[dict[str, Any], str]:
    from backoffice.gates.live import read_live

    cfg = site.current()
    if not cfg.mqtt.host:
        return {}, _("Chưa cấu hình máy chủ MQTT ([mqtt] host): không có trạng thái trực tiếp.")
    try:
        return read_live(cfg.mqtt, devices), ""
    except QrGateError as err:
        return {}, _("Không đọc được trạng thái từ máy chủ MQTT: %(e)s") % {"e": err}


def _local(ts: Any) -> str:
    """A gate's RFC 3339 timestamp in the site's time zone ("" if missing or unreadable)."""
    from provisioning.history.events import parse_ts_ms
    from provisioning.history.export import local_time

    if not isinstance(ts, str):
        return ""
    try:
        return local_time(parse_ts_ms(ts), site.current().tz)
    except (ValueError, OverflowError, OSError):  # a hostile or broken state document
        return ""


def _rows(venue: Venue) -> tuple[list[dict[str, Any]], str]:
    devices = _devices(venue)
    live, problem = _live(devices)
    rows = []
    for d in devices:
        g = live.get(d)
        state = g.state if g else {}
        health = state.get("health") if isinstance(state.get("health"), dict) else {}
        rows.append({"device": d, "availability": g.availability if g else "", "state": state.get("device_state", ""),
                     "mode": state.get("mode", ""), "backlog": state.get("broker_backlog", health.get("backlog", "")),
                     "alarms": ", ".join(g.alarms) if g else "", "seen": _local(state.get("ts")),
                     "version": state.get("version", "")})
    return rows, problem


@login_required
def gate_list(request: HttpRequest) -> HttpResponse:
    """Every managed venue with its gates."""
    venues = list(services.managed(request.user))
    return render(request, "gates/list.html", {"venues": venues})


@login_required
def venue_gates(request: HttpRequest, venue_id: str) -> HttpResponse:
    """One venue's gates with their live state, actions and the audit log."""
    from backoffice.people.models import AuditEntry

    venue = services.venue_of(request.user, venue_id)
    rows, problem = _rows(venue)
    audit = AuditEntry.objects.filter(venue_id=venue.venue_id).select_related("actor")[:20]
    return render(request, "gates/venue.html", {"venue": venue, "rows": rows, "problem": problem,
                                                "audit": audit, "actions": list(ACTIONS)})


class AddGateForm(forms.Form):
    direction = forms.ChoiceField(label=_lazy("Hướng"), choices=[("in", _lazy("Vào")), ("out", _lazy("Ra"))])
    device_id = forms.CharField(label=_lazy("Mã máy (tùy chọn)"), required=False, max_length=64,
                                help_text=_lazy("Chỉ máy có mã này dùng được mã QR; để trống cho máy bất kỳ"))
    valid_minutes = forms.IntegerField(label=_lazy("Hiệu lực (phút)"), min_value=1, max_value=1440, initial=30)

    def clean_device_id(self) -> str:
        value = (self.cleaned_data.get("device_id") or "").strip()
        if value and (not DEVICE_ID.match(value) or value == "venues"):
            raise forms.ValidationError(_lazy("Mã máy chỉ gồm a-z, 0-9, _ và -"))
        return value


@login_required
def add_gate(request: HttpRequest, venue_id: str) -> HttpResponse:
    """"Thêm máy": a signed provisioning QR for this venue, shown on screen for the new gate's camera."""
    from provisioning.keys import load_private_key, load_public_key, public_path_for
    from provisioning.prov_qr import make_code, make_qr

    venue = services.venue_of(request.user, venue_id)
    cfg = site.current()
    form = AddGateForm(request.POST or None)
    qr_data = ""
    if request.method == "POST" and form.is_valid():
        broker = f"{cfg.mqtt.host}:{cfg.mqtt.port}" if cfg.mqtt.host else ""
        try:
            key = load_private_key(cfg.keys.authority_key)
            issuers = [load_public_key(public_path_for(cfg.keys.issuer_key))]
            made = make_code(key, venue.record, direction=form.cleaned_data["direction"], broker=broker,
                             now_s=time.time(), valid_minutes=form.cleaned_data["valid_minutes"],
                             issuer_keys=issuers, device_id=form.cleaned_data["device_id"] or None)
        except (ConfigError, QrGateError) as err:
            form.add_error(None, str(err))
        else:
            _register_enrolment(cfg.database_url, made.claims["nonce"].hex(), form.cleaned_data["device_id"] or "",
                                venue.venue_id)
            buffer = io.BytesIO()
            make_qr(made.text).save(buffer, kind="png", scale=8, border=4)
            qr_data = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
            device = form.cleaned_data["device_id"]
            if device:
                Gate.objects.get_or_create(device_id=device, defaults={
                    "venue": venue, "direction": form.cleaned_data["direction"]})
            services.audit(request.user, "gate_provisioning_qr", venue.venue_id, device,
                           detail=f"direction {form.cleaned_data['direction']}, "
                                  f"{form.cleaned_data['valid_minutes']} min")
            _first_deny_list(request.user, venue)
    return render(request, "gates/add.html", {"venue": venue, "form": form, "qr": qr_data})


def _first_deny_list(actor: Any, venue: Venue) -> None:
    """A venue registered after personal passes were revoked has no deny list yet: publish one
    (retained) with the revoked passes before its first gate comes, so that gate refuses them."""
    from backoffice.personal.revocations import revoked_ids

    deny, _ = VenueList.objects.get_or_create(venue=venue, kind=VenueList.DENY)
    if deny.version == 0 and revoked_ids(time.time()):
        publish_venue_list(actor, venue, deny, list(deny.ids), wait_for_gates=False, action="list_deny_revocations")


def _register_enrolment(database_url: str, nonce_hex: str, device_id: str, venue_id: str) -> None:
    """Record the code's nonce in the scan history (the back office's own database), as
    `qrgate provision qr --register` does: the collector then registers the key of the gate
    that applies this code first (its ``provisioned`` event, signed with that key)."""
    from provisioning.history.store import open_store

    store = open_store(database_url)
    try:
        store.add_enrolment(nonce_hex, device_id, venue_id, int(time.time() * 1000))
    finally:
        store.close()


@require_POST
@login_required
def command(request: HttpRequest, venue_id: str, device_id: str) -> HttpResponse:
    """Send one signed command to a gate of the venue and record the answer."""
    from backoffice.gates.live import broker_of
    from provisioning.commands import build_envelope, send_command
    from provisioning.keys import load_private_key
    from provisioning.mqtt_request import Target

    venue = services.venue_of(request.user, venue_id)
    if device_id not in _devices(venue):
        raise Http404("no such gate")
    action = request.POST.get("action", "")
    if action not in ACTIONS:
        raise Http404("no such action")
    cfg = site.current()
    name, args = ACTIONS[action]
    if not cfg.mqtt.host:
        answer = "no broker configured"
    else:
        try:
            key = load_private_key(cfg.keys.command_key)
            envelope, tx = build_envelope(key, device_id=device_id, command=name, args=args, ttl_s=COMMAND_TTL_S,
                                          transaction=f"qrgate-bo-{secrets.token_hex(6)}",
                                          venue_id=venue.venue_id, prefix=cfg.mqtt.prefix)
            reply = send_command(Target(broker_of(cfg.mqtt), device_id, cfg.mqtt.prefix), name, envelope, tx,
                                 ttl_s=COMMAND_TTL_S, timeout_s=ANSWER_TIMEOUT_S)
            if reply is None:
                answer = f"no answer within {ANSWER_TIMEOUT_S:g} s"
            elif reply.get("status") == "ok":
                answer = "ok"
            else:
                answer = f"refused: {reply.get('error') or reply.get('reason') or reply.get('status')}"
        except (ConfigError, QrGateError) as err:
            answer = f"not sent: {err}"
    services.audit(request.user, f"command_{action}", venue.venue_id, device_id, answer=answer)
    return redirect("venue-gates", venue_id=venue.venue_id)


class ListForm(forms.Form):
    kind = forms.ChoiceField(choices=[(VenueList.DENY, VenueList.DENY), (VenueList.ALLOW, VenueList.ALLOW)])
    ident = forms.CharField(required=False, max_length=256)
    csv = forms.FileField(required=False)


@login_required
def venue_lists(request: HttpRequest, venue_id: str) -> HttpResponse:
    """The venue's deny and allow lists: upload a CSV, add, remove; each change is published signed."""
    from firmware.core.lists import display_id, normalise_id, parse_csv_bytes

    venue = services.venue_of(request.user, venue_id)
    lists = {k: VenueList.objects.get_or_create(venue=venue, kind=k)[0] for k in (VenueList.DENY, VenueList.ALLOW)}
    message, problems = "", []
    if request.method == "POST":
        form = ListForm(request.POST, request.FILES)
        action = request.POST.get("action", "")
        if not form.is_valid() or action not in ("add", "remove", "upload"):
            raise Http404("bad list request")
        current = lists[form.cleaned_data["kind"]]
        ids = list(current.ids)
        ident = display_id(form.cleaned_data.get("ident") or "")  # shown as typed; compared canonically
        if action == "upload":
            upload = form.cleaned_data.get("csv")
            if upload is None or upload.size > site.MAX_UPLOAD_BYTES:
                problems = [_("Tệp CSV trống hoặc lớn hơn 1 MB")]
            else:
                result = parse_csv_bytes(upload.read())
                if result.bad_rows:
                    problems = result.report()
                else:
                    ids = [i.decode("utf-8") if isinstance(i, bytes) else i for i in result.ids]
        elif not ident:
            problems = [_("Bạn vui lòng nhập mã")]
        elif action == "add" and normalise_id(ident) not in {normalise_id(i) for i in ids}:
            ids.append(ident)
        elif action == "remove":
            ids = [i for i in ids if normalise_id(i) != normalise_id(ident)]
        if not problems:
            message = _publish(request, venue, current, ids)
    return render(request, "gates/lists.html", {"venue": venue, "lists": lists, "message": message,
                                                "problems": problems, "quarantine": _quarantine(venue)})


def _quarantine(venue: Venue) -> dict[str, Any]:
    """How many people the venue's quarantines keep out now and until when, by end (local
    time, to the minute, as the quarantine's own page shows it); never an entry or an id."""
    from provisioning.history.export import local_time

    tz = site.current().tz
    ends = [{"people": n, "until": local_time(until_s * 1000, tz)[:16]}
            for until_s, n in QuarantineEntry.people_in_force(venue, time.time()).items()]
    return {"people": sum(e["people"] for e in ends), "until": ends[-1]["until"] if ends else "", "ends": ends}


def _publish(request: HttpRequest, venue: Venue, current: VenueList, ids: list[str]) -> str:
    """Store the new list and publish it, signed and retained, on the venue-wide topic."""
    return publish_venue_list(request.user, venue, current, ids)


@dataclass(frozen=True)
class Publication:
    """What publishing a venue list did.

    Attributes:
        version: the list version sent.
        answer: the one-line outcome written to the audit log.
        gates: (device_id, the gate's answer on ``response/lists``) in the order they came.
        quarantined: quarantine entries in force that went out with the list.
        known: the venue's gates whose answers were awaited (none when not waiting).
    """

    version: int
    answer: str
    gates: tuple[tuple[str, dict[str, Any]], ...] = ()
    quarantined: int = 0
    known: tuple[str, ...] = ()

    @property
    def published(self) -> bool:
        """Whether the broker took the list (retained: a gate that is away gets it when it connects)."""
        return self.answer.startswith("published")

    @property
    def silent(self) -> tuple[str, ...]:
        """The awaited gates that did not answer; none when the list was not published, since
        then there was nothing to answer and no retained list will reach them."""
        answered = {device_id for device_id, _ in self.gates}
        return tuple(d for d in self.known if d not in answered) if self.published else ()


def publish_venue_list(actor: Any, venue: Venue, current: VenueList, ids: list[str], *,
                       wait_for_gates: bool = True, action: str = "") -> str:
    """Store the venue's list and publish it (``publish_list``); returns the answer for the audit log."""
    return publish_list(actor, venue, current, ids, wait_for_gates=wait_for_gates, action=action).answer


def publish_list(actor: Any, venue: Venue, current: VenueList, ids: list[str], *,
                 wait_for_gates: bool = True, action: str = "", now_s: float | None = None) -> Publication:
    """Store the venue's list (``ids``, the managers' entries) and publish it signed and retained.

    A deny list goes out with the revoked personal passes (``pass:<cti hex>``, until they
    expire) and the venue's quarantine entries still in force (each with its ``until``;
    ``backoffice.gates.quarantine``) added to the managers' ids; an id a manager listed keeps
    no end. With ``wait_for_gates`` the answers of the venue's gates are awaited (up to a few
    seconds); without, it returns once the broker took it. The list's ``published`` becomes
    now_s only once the broker took it, so a list that could not be sent counts as old for
    ``qrgate backoffice publish-lists --if-older-than-h``.

    Returns:
        The version, the answer for the audit log and each gate's answer.
    """
    from backoffice.gates.live import broker_of
    from firmware.core.list_message import MAX_VALIDITY_S, encode_message, venue_list_topic
    from firmware.core.lists import normalise_id
    from provisioning.keys import load_private_key
    from provisioning.mqtt_request import exchange

    cfg = site.current()
    now_s = time.time() if now_s is None else now_s
    version = max(int(now_s), current.version + 1)
    current.ids, current.version = ids, version
    current.save()
    published = list(ids)
    ends: dict[str, int] = {}
    revoked = 0
    if current.kind == VenueList.DENY:
        from backoffice.personal.revocations import revoked_ids

        passes = [i for i in revoked_ids(now_s) if i not in ids]
        revoked = len(passes)
        published += passes
        listed = {normalise_id(i) for i in published}
        ends = {e: u for e, u in QuarantineEntry.in_force(venue, now_s).items() if normalise_id(e) not in listed}
        published += list(ends)
    answer = "stored; no broker configured"
    known = tuple(_devices(venue)) if wait_for_gates else ()
    gates = len(known)
    answers: list[tuple[str, dict[str, Any]]] = []
    if cfg.mqtt.host:
        try:
            key = load_private_key(cfg.keys.command_key)
            tx = secrets.token_hex(6)
            payload = encode_message(key, kind=current.kind, version=version, now_s=now_s, ids=published,
                                     venue_id=venue.venue_id, transaction=tx, valid_s=MAX_VALIDITY_S,
                                     prefix=cfg.mqtt.prefix, ends=ends)
            got = exchange(broker_of(cfg.mqtt), request_topic=venue_list_topic(cfg.mqtt.prefix, venue.venue_id,
                                                                                 current.kind),
                           response_filter=f"{cfg.mqtt.prefix}/+/response/lists", payload=payload,
                           transaction=tx, timeout_s=ANSWER_TIMEOUT_S, what="the list",
                           client_id_prefix="qrgate-bo-list-", retain=True,
                           # a venue without a known gate has nobody to wait for (a quarantine publishes
                           # many venues' lists in a row)
                           enough=lambda got: not wait_for_gates or len(got) >= gates)
            # when the broker last took the list: the re-publish (publish-lists) counts its age from it
            current.published = datetime.fromtimestamp(now_s, tz=UTC)
            current.save(update_fields=["published"])
            answers = [(topic.split("/")[-3], a) for topic, a in got]
            ok = sum(1 for _d, a in answers if a.get("status") == "ok")
            answer = f"published; {ok} of {len(answers)} gate(s) took it" if wait_for_gates else "published"
        except (ConfigError, QrGateError) as err:
            answer = f"stored, not published: {err}"
    detail = f"version {version}, {len(ids)} ids, {revoked} revoked passes"
    if ends:
        detail += f", {len(ends)} quarantine entries"
    services.audit(actor, action or f"list_{current.kind}_published", venue.venue_id, detail=detail, answer=answer)
    return Publication(version, answer, tuple(answers), len(ends), known)

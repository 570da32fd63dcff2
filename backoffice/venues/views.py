"""Đăng ký địa điểm (three steps; two when logged in) and Quản lý địa điểm."""

from __future__ import annotations

import functools
import logging
import tempfile
import time
from typing import Any

from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET

from backoffice import site
from backoffice.people import codes, otp
from backoffice.people.views import client_address, otp_countdown, outcome_text, refusal_text
from backoffice.sms import SmsError, make_sender
from backoffice.venues import services
from backoffice.venues.forms import InviteForm, LabelForm, OtpForm, RegistrationForm, VenueCodeForm
from backoffice.venues.models import AccessRequest, Management, Venue
from firmware.core.masking import mask_phone
from provisioning.venues import DivisionMaps, display_phone, fold, validate_venue

log = logging.getLogger(__name__)

REGISTER_SMS = "qrgate: ma OTP dang ky dia diem cua ban la {code}. Ma het han sau 5 phut."
PENDING = "pending_registration"
POSTER_TYPES = {"png": "image/png", "pdf": "application/pdf", "svg": "image/svg+xml"}


@functools.cache
def _province_names() -> list[str]:
    maps = DivisionMaps.default()
    return sorted({p.name for p in maps.current.provinces} | {p.name for p in maps.former.provinces})


def _choices_for(province: str, district: str) -> tuple[list[str], list[str]]:
    """District and ward names for the datalists, from the province (and district) typed so far."""
    if not province:
        return [], []
    maps = DivisionMaps.default()
    key = fold(province)
    districts: list[str] = []
    wards: set[str] = set()
    for p in maps.former.provinces:
        if fold(p.name).endswith(key) or key.endswith(fold(p.name)):
            districts = [d.name for d in p.children]
            for d in p.children:
                if not district or fold(d.name) == fold(district):
                    wards.update(w.name for w in d.children)
    if not district:
        for p in maps.current.provinces:
            if fold(p.name).endswith(key) or key.endswith(fold(p.name)):
                wards.update(w.name for w in p.children)
    return districts, sorted(wards)


@require_GET
def divisions(request: HttpRequest) -> JsonResponse:
    """The district and ward names for the typed province (and district): the datalists' choices.

    Progressive enhancement only: the page's script refreshes its datalists from here; without
    it, the lists narrow after a submit and the names are checked the same way.
    """
    province = request.GET.get("province", "")[:120]
    district = request.GET.get("district", "")[:120]
    districts, wards = _choices_for(province, district)
    return JsonResponse({"districts": districts, "wards": wards})


def _steps(logged_in: bool, at: int) -> list[dict[str, Any]]:
    names = [_("Đăng ký thông tin"), _("Hoàn thành")] if logged_in else \
        [_("Đăng ký thông tin"), _("Nhập mã OTP"), _("Hoàn thành")]
    last = len(names)
    return [{"n": i + 1, "name": n, "current": i + 1 == min(at, last)} for i, n in enumerate(names)]


def register(request: HttpRequest) -> HttpResponse:
    """Step 1, "Thông tin của địa điểm". Logged in, the venue is created at once (no code)."""
    user = request.user if request.user.is_authenticated else None
    parents = [(v.venue_id, v.name) for v in Venue.objects.filter(registrant=user)] if user else []
    fixed_phone = display_phone(user.username) if user and user.username.startswith("+84") else ""
    initial = dict(request.session.get(PENDING, {}).get("fields", {}))
    if user:
        initial.setdefault("registrant", user.first_name)
    if request.method == "POST" and "clear" in request.POST:
        request.session.pop(PENDING, None)
        return redirect("register")
    form = RegistrationForm(request.POST or None, initial=initial, parents=parents, fixed_phone=fixed_phone)
    error = ""
    if request.method == "POST" and form.is_valid() and form.venue is not None:
        record = form.venue
        if Venue.objects.filter(venue_id=record.venue_id).exists():
            form.add_error("name", _("Địa điểm này đã được đăng ký (mã %(id)s). Dùng “+ Thêm địa điểm của "
                                     "người khác” để xin quản lý cùng.") % {"id": record.venue_id})
        else:
            fields = {k: form.cleaned_data.get(k, "") for k in form.fields if k != "phone"}
            fields["phone"] = form.cleaned_data.get("phone") or fixed_phone
            parent_id = form.cleaned_data.get("parent") or ""
            if user:
                parent = Venue.objects.filter(venue_id=parent_id, registrant=user).first()
                venue = services.register(record, user, parent)
                request.session["registered_with_otp"] = False
                return redirect("register-done", venue_id=venue.venue_id)
            cfg = site.current()
            try:
                issued = codes.issue(record.phone, "register", client_address(request), send=True,
                                     sender=make_sender(cfg.sms), rules=cfg.otp, now_s=time.time(),
                                     text=REGISTER_SMS)
            except SmsError as err:
                log.error("registration code not sent: %s", err)
                error = _("Không gửi được tin nhắn SMS. Bạn vui lòng thử lại sau.")
            else:
                if issued.refusal is not None and issued.refusal is not otp.Refusal.TOO_SOON:
                    error = refusal_text(issued.refusal, issued.wait_s)
                else:
                    request.session[PENDING] = {"fields": fields, "phone": record.phone}
                    return redirect("register-otp")
    districts, wards = _choices_for(form.data.get("province", "") or initial.get("province", ""),
                                    form.data.get("district", "") or initial.get("district", ""))
    return render(request, "venues/register.html", {
        "form": form, "error": error, "steps": _steps(bool(user), 1), "logged_in": bool(user),
        "provinces": _province_names(), "districts": districts, "wards": wards})


def register_otp(request: HttpRequest) -> HttpResponse:
    """Step 2, "Nhập mã OTP": the code sent to the registrant's phone."""
    pending = request.session.get(PENDING)
    if not pending or "phone" not in pending:
        return redirect("register")
    phone = pending["phone"]
    cfg = site.current()
    form = OtpForm(request.POST or None)
    error = ""
    if request.method == "POST" and "back" in request.POST:
        return redirect("register")
    if request.method == "POST" and "resend" in request.POST:
        try:
            issued = codes.issue(phone, "register", client_address(request), send=True,
                                 sender=make_sender(cfg.sms), rules=cfg.otp, now_s=time.time(), text=REGISTER_SMS)
            if issued.refusal is not None:
                error = refusal_text(issued.refusal, issued.wait_s)
        except SmsError:
            error = _("Không gửi được tin nhắn SMS. Bạn vui lòng thử lại sau.")
        form = OtpForm()
    elif request.method == "POST" and form.is_valid():
        outcome = codes.verify(phone, "register", form.cleaned_data["code"], rules=cfg.otp, now_s=time.time())
        if outcome is otp.Outcome.OK:
            f = pending["fields"]
            try:
                record = validate_venue(name=f.get("name"), province=f.get("province"),
                                        district=f.get("district") or None, ward=f.get("ward"),
                                        address=f.get("address"), registrant=f.get("registrant"), phone=phone,
                                        divisions=DivisionMaps.default())
                user = services.user_for_phone(phone, record.registrant)
                parent = Venue.objects.filter(venue_id=f.get("parent") or "", registrant=user).first()
                venue = services.register(record, user, parent)
            except services.AlreadyRegistered:
                error = _("Địa điểm này đã được đăng ký.")
            else:
                request.session.pop(PENDING, None)
                login(request, user, backend="django.contrib.auth.backends.ModelBackend")
                request.session["registered_with_otp"] = True
                return redirect("register-done", venue_id=venue.venue_id)
        else:
            error = outcome_text(outcome)
    expires = codes.live_expiry(phone, "register") or 0.0
    return render(request, "venues/register_otp.html", {
        "form": form, "error": error, "steps": _steps(False, 2), "phone": display_phone(phone).replace(" ", ""),
        **otp_countdown(otp.seconds_left(expires, time.time()))})


@login_required
def register_done(request: HttpRequest, venue_id: str) -> HttpResponse:
    """Step 3, "Hoàn thành": the poster as PNG, PDF and SVG."""
    venue = services.venue_of(request.user, venue_id)
    return render(request, "venues/register_done.html", {"venue": venue, "steps": _steps(
        not request.session.get("registered_with_otp", False), 3)})


@login_required
def poster(request: HttpRequest, venue_id: str, fmt: str) -> HttpResponse:
    """The venue's QR poster, made by ``provisioning.poster.write_poster``."""
    from provisioning.poster import venue_url, write_poster

    if fmt not in POSTER_TYPES:
        raise Http404("no such format")
    venue = services.venue_of(request.user, venue_id)
    with tempfile.TemporaryDirectory(prefix="qrgate-poster-") as tmp:
        # The QR opens the venue's page on a phone ("Check in"); a gate refuses it (unknown_format).
        files = write_poster(venue.record, tmp, pdf=fmt == "pdf",
                             payload=venue_url(site.current().site.base_url, venue.venue_id))
        path = {"png": files.png, "svg": files.svg, "pdf": files.pdf}[fmt]
        assert path is not None
        data = path.read_bytes()
    response = HttpResponse(data, content_type=POSTER_TYPES[fmt])
    response["Content-Disposition"] = f'attachment; filename="{venue.venue_id}-poster.{fmt}"'
    return response


@login_required
def venue_list(request: HttpRequest) -> HttpResponse:
    """"Danh sách các địa điểm của Bạn: N địa điểm"."""
    mine = (Management.objects.filter(user=request.user).select_related("venue", "venue__registrant")
            .order_by("venue__name", "venue__venue_id"))
    rows = [{"n": i + 1, "venue": m.venue, "label": m.label, "registrant": m.venue.registrant_name,
             "phone": mask_phone(m.venue.registrant.username), "role": m.role} for i, m in enumerate(mine)]
    invites = AccessRequest.objects.filter(venue__registrant=request.user, status=AccessRequest.PENDING,
                                           kind=AccessRequest.REQUEST).count()
    return render(request, "venues/list.html", {"rows": rows, "count": len(rows), "pending": invites})


@login_required
def request_access(request: HttpRequest) -> HttpResponse:
    """"+ Thêm địa điểm của người khác": ask the venue's registrant to approve."""
    form = VenueCodeForm(request.POST or None)
    done = None
    if request.method == "POST" and form.is_valid():
        vid = form.cleaned_data["venue_id"]
        if Management.objects.filter(venue__venue_id=vid, user=request.user).exists():
            form.add_error("venue_id", _("Bạn đã quản lý địa điểm này."))
        else:
            done = services.request_access(request.user, vid)
            if done is None:
                form.add_error("venue_id", _("Không tìm thấy địa điểm có mã này."))
    return render(request, "venues/request.html", {"form": form, "done": done})


@login_required
def venue_detail(request: HttpRequest, venue_id: str) -> HttpResponse:
    """One venue: its label, poster, co-managers, requests, and (for the registrant) invitations."""
    venue = services.venue_of(request.user, venue_id)
    mine = Management.objects.get(venue=venue, user=request.user)
    owner = services.is_registrant(request.user, venue)
    label_form = LabelForm(initial={"label": mine.label})
    invite_form = InviteForm()
    if request.method == "POST":
        action = request.POST.get("action", "")
        if action == "label":
            label_form = LabelForm(request.POST)
            if label_form.is_valid():
                mine.label = label_form.cleaned_data["label"].strip()
                mine.save(update_fields=["label"])
                return redirect("venue", venue_id=venue.venue_id)
        elif not owner:
            raise Http404("only the registrant does this")
        elif action == "invite":
            invite_form = InviteForm(request.POST)
            if invite_form.is_valid():
                services.invite(request.user, venue, invite_form.cleaned_data["phone"])
                return redirect("venue", venue_id=venue.venue_id)
        elif action in ("approve", "refuse"):
            services.decide(request.user, venue, _int(request.POST.get("request")), action == "approve")
            return redirect("venue", venue_id=venue.venue_id)
        elif action == "remove":
            services.remove_co_manager(request.user, venue, _int(request.POST.get("management")))
            return redirect("venue", venue_id=venue.venue_id)
        else:
            raise Http404("no such action")
    managers = [{"id": m.pk, "name": m.user.first_name, "phone": mask_phone(m.user.username), "role": m.role}
                for m in venue.managements.select_related("user").order_by("id")]
    pending = [{"id": r.pk, "name": r.name, "phone": mask_phone(r.phone)}
               for r in venue.access_requests.filter(status=AccessRequest.PENDING)] if owner else []
    return render(request, "venues/detail.html", {
        "venue": venue, "mine": mine, "owner": owner, "label_form": label_form, "invite_form": invite_form,
        "managers": managers, "pending": pending})


def _int(text: str | None) -> int:
    try:
        value = int(text or "")
    except ValueError as err:
        raise Http404("bad id") from err
    if not 0 < value < 2 ** 62:
        raise Http404("bad id")
    return value

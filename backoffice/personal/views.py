"""The people's pages: Mã QR cá nhân của tôi, Khai báo y tế, Lịch sử tôi đến các địa điểm,
the venue page a poster's QR opens (``/v/<venue_id>``) with "Check in", and the person's login.

A person logs in like a manager (phone, then a code by SMS), but here a code goes to any
valid phone: self-service is for the public. Every page shows the logged-in person's own
data only; another person's pass or declaration id answers 404, like an unknown one.
"""

from __future__ import annotations

import base64
import functools
import io
import logging
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from django.contrib.auth import login
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy as _lazy
from django.views.decorators.http import require_POST

from backoffice import site
from backoffice.people import codes, otp
from backoffice.people.views import client_address, otp_countdown, outcome_text, refusal_text, safe_next
from backoffice.personal import services
from backoffice.personal.forms import QUESTION_TEXT, DeclarationForm, ProfileForm
from backoffice.personal.models import HealthDeclaration, PersonalPass, PersonProfile
from backoffice.sms import SmsError, make_sender
from backoffice.venues.forms import OtpForm, PhoneForm
from backoffice.venues.models import Venue
from firmware.core.errors import QrGateError
from firmware.core.masking import display, mask_phone
from provisioning.history.export import local_time
from provisioning.venues import display_phone

log = logging.getLogger(__name__)

PERSON_SMS = "qrgate: ma dang nhap cua ban la {code}. Ma het han sau 5 phut. Khong chia se ma nay."
PASS_PNG_SCALE = 10
SCREEN_SCALE = 8

# A scan's reason, in words, for "Lịch sử tôi đến các địa điểm".
REASON_WORDS: dict[str, Any] = {
    "ok": _lazy("Hợp lệ"),
    "denied": _lazy("Có tên trong danh sách cấm, hoặc mã QR đã bị thu hồi"),
    "expired": _lazy("Mã QR đã hết hạn"),
    "not_yet_valid": _lazy("Mã QR chưa có hiệu lực"),
    "no_health_declaration": _lazy("Chưa khai báo y tế (hoặc khai báo đã cũ)"),
    "no_expiry": _lazy("Mã QR không có hạn dùng"),
    "bad_signature": _lazy("Chữ ký của mã QR không đúng"),
    "unknown_issuer": _lazy("Mã QR do nơi không được tin cậy cấp"),
    "malformed": _lazy("Mã QR bị hỏng"),
    "unknown_format": _lazy("Không phải mã QR ra vào"),
    "unsigned_not_allowed": _lazy("Địa điểm không nhận CCCD"),
    "not_allowed": _lazy("Không có tên trong danh sách được vào"),
    "repeat": _lazy("Vừa quét xong, quét lại quá sớm"),
    "passback": _lazy("Chưa quét khi ra (chống quay vòng)"),
    "clock_unsynced": _lazy("Đồng hồ của máy chưa đúng giờ"),
    "lockdown": _lazy("Cổng đang khóa"),
    "not_provisioned": _lazy("Máy chưa được cài đặt"),
    "free_passage": _lazy("Cổng đang mở tự do"),
    "storage_full": _lazy("Bộ nhớ của máy đầy"),
    "lists_stale": _lazy("Danh sách của máy đã cũ"),
    "fail_closed": _lazy("Máy đang tạm khóa"),
}


def person_required(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Log in first (the person's login, which sends a code to any phone), then come back."""

    @functools.wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not request.user.is_authenticated:
            return redirect(f"/me/login/?next={quote(request.get_full_path())}")
        return view(request, *args, **kwargs)

    return wrapped


def _profile(request: HttpRequest) -> PersonProfile | None:
    return PersonProfile.objects.filter(user=request.user).first()


def login_phone(request: HttpRequest) -> HttpResponse:
    """The person's login, step 1: any valid mobile phone gets a code."""
    form = PhoneForm(request.POST or None)
    error = ""
    if request.method == "POST" and form.is_valid():
        phone = form.cleaned_data["phone"]
        cfg = site.current()
        try:
            issued = codes.issue(phone, "person", client_address(request), send=True, sender=make_sender(cfg.sms),
                                 rules=cfg.otp, now_s=time.time(), text=PERSON_SMS)
        except SmsError as err:
            log.error("person login code not sent: %s", err)
            error = _("Không gửi được tin nhắn SMS. Bạn vui lòng thử lại sau.")
        else:
            if issued.refusal is not None and issued.refusal is not otp.Refusal.TOO_SOON:
                error = refusal_text(issued.refusal, issued.wait_s)
            else:
                request.session["person_phone"] = phone
                request.session["person_next"] = safe_next(request, "/me/")
                return redirect("me-login-otp")
    return render(request, "personal/login.html", {"form": form, "error": error,
                                                    "next": request.GET.get("next", ""), "active": "me"})


def login_code(request: HttpRequest) -> HttpResponse:
    """The person's login, step 2: the code; the person's account is made on first login."""
    from backoffice.venues.services import user_for_phone

    phone = request.session.get("person_phone")
    if not phone:
        return redirect("me-login")
    cfg = site.current()
    form = OtpForm(request.POST or None)
    error = ""
    if request.method == "POST" and "resend" in request.POST:
        try:
            issued = codes.issue(phone, "person", client_address(request), send=True, sender=make_sender(cfg.sms),
                                 rules=cfg.otp, now_s=time.time(), text=PERSON_SMS)
            if issued.refusal is not None:
                error = refusal_text(issued.refusal, issued.wait_s)
        except SmsError:
            error = _("Không gửi được tin nhắn SMS. Bạn vui lòng thử lại sau.")
        form = OtpForm()
    elif request.method == "POST" and form.is_valid():
        outcome = codes.verify(phone, "person", form.cleaned_data["code"], rules=cfg.otp, now_s=time.time())
        if outcome is otp.Outcome.OK:
            where = request.session.get("person_next") or "/me/"
            user = user_for_phone(phone)
            login(request, user, backend="django.contrib.auth.backends.ModelBackend")
            log.info("person logged in")
            return redirect(where)
        error = outcome_text(outcome)
    expires = codes.live_expiry(phone, "person") or 0.0
    return render(request, "personal/login_otp.html", {
        "form": form, "error": error, "phone": display_phone(phone), "active": "me",
        **otp_countdown(otp.seconds_left(expires, time.time()))})


def _qr_png(text: str, scale: int) -> bytes:
    from provisioning.passes import QR_BORDER, make_qr

    buffer = io.BytesIO()
    make_qr(text).save(buffer, kind="png", scale=scale, border=QR_BORDER)
    return buffer.getvalue()


@person_required
def my_pass(request: HttpRequest) -> HttpResponse:
    """Mã QR cá nhân của tôi: the profile form first, then the pass, large, with its downloads."""
    cfg = site.current()
    profile = _profile(request)
    now_s = time.time()
    if profile is None or request.GET.get("edit") == "1" or request.method == "POST":
        initial = {"full_name": profile.full_name if profile else request.user.first_name,
                   "cccd": profile.cccd if profile else ""}
        form = ProfileForm(request.POST or None, initial=initial)
        if request.method == "POST" and form.is_valid():
            name, number = form.cleaned_data["full_name"], form.cleaned_data["cccd"]
            if profile is None:
                profile = PersonProfile.objects.create(user=request.user, subject=services.new_subject(),
                                                       full_name=name, cccd=number)
                services.issue_pass(profile, now_s)
            else:
                changed = profile.full_name != name
                profile.full_name, profile.cccd = name, number
                profile.save(update_fields=["full_name", "cccd"])
                if changed:  # the name is in the pass: the old one goes
                    _new, revoked = services.replace_pass(profile, now_s, "reissue")
                    if revoked:
                        services.publish_revocations(request.user)
            return redirect(safe_next(request, "/me/"))
        return render(request, "personal/profile.html", {"form": form, "active": "me", "new": profile is None,
                                                         "next": request.GET.get("next", "")})
    current = services.live_pass(profile)
    if current is None:
        current = services.issue_pass(profile, now_s)
    latest = services.latest_declaration(profile)
    return render(request, "personal/pass.html", {
        "active": "me", "profile": profile, "pass": current,
        "qr": "data:image/png;base64," + base64.b64encode(_qr_png(current.text, SCREEN_SCALE)).decode(),
        "holder": display(profile.full_name, None), "phone": display_phone(request.user.get_username()),
        "expires": local_time(int(current.expires_s * 1000), cfg.tz),
        "declared": local_time(int(current.health_declared_s * 1000), cfg.tz) if current.health_declared_s else "",
        "fresh": services.fresh_declaration(profile, now_s), "latest": latest,
        "risky": latest is not None and latest.risky, "hotline": cfg.people.health_hotline,
        "expired": current.expires_s <= now_s})


def _own_pass(request: HttpRequest, token_id: str) -> PersonalPass:
    found = PersonalPass.objects.filter(token_id=token_id, profile__user=request.user).first()
    if found is None:
        raise Http404("no such pass")
    return found


@person_required
def pass_file(request: HttpRequest, token_id: str, fmt: str) -> HttpResponse:
    """"Tải xuống Mã QR cá nhân của tôi": the pass as PNG, or as a one-page PDF with the name."""
    found = _own_pass(request, token_id)
    if fmt == "png":
        data, kind = _qr_png(found.text, PASS_PNG_SCALE), "image/png"
    elif fmt == "pdf":
        data, kind = _pass_pdf(found), "application/pdf"
    else:
        raise Http404("no such format")
    response = HttpResponse(data, content_type=kind)
    response["Content-Disposition"] = f'attachment; filename="ma-qr-ca-nhan-{found.token_id[:8]}.{fmt}"'
    return response


def _pass_pdf(found: PersonalPass) -> bytes:
    """An A6-ish page at 200 dpi: the QR, the holder's name and masked phone, the expiry."""
    from PIL import Image, ImageDraw, ImageFont

    from provisioning.poster import find_font

    cfg = site.current()
    qr = Image.open(io.BytesIO(_qr_png(found.text, 8))).convert("L")
    width = max(qr.width + 160, 900)
    page = Image.new("L", (width, qr.height + 420), 255)
    page.paste(qr, ((width - qr.width) // 2, 60))
    draw = ImageDraw.Draw(page)
    bold = ImageFont.truetype(find_font(True), 44)
    regular = ImageFont.truetype(find_font(False), 30)
    y = qr.height + 90
    for text, font in ((_("Mã QR cá nhân của tôi"), regular), (found.profile.full_name, bold),
                       (mask_phone(found.profile.user.get_username()), regular),
                       (_("Hết hạn: %(t)s") % {"t": local_time(int(found.expires_s * 1000), cfg.tz)}, regular)):
        draw.text((width // 2, y), text, font=font, fill=0, anchor="ma")
        y += 70
    buffer = io.BytesIO()
    page.save(buffer, "PDF", resolution=200.0, title="qrgate")
    return buffer.getvalue()


@require_POST
@person_required
def replace(request: HttpRequest) -> HttpResponse:
    """"Cấp lại mã QR" or "Báo mất mã QR": the old pass is revoked at every venue, a new one issued."""
    profile = _profile(request)
    if profile is None:
        return redirect("me")
    why = "lost" if request.POST.get("action") == "lost" else "reissue"
    _new, revoked = services.replace_pass(profile, time.time(), why)
    if revoked:
        services.publish_revocations(request.user)
    request.session["pass_notice"] = why
    return redirect("me")


@person_required
def declare(request: HttpRequest) -> HttpResponse:
    """Khai báo y tế: the 2021 questions; a clear declaration puts ``hd`` into the pass."""
    cfg = site.current()
    profile = _profile(request)
    if profile is None:
        return redirect(f"/me/?next={quote('/me/declare/')}")
    form = DeclarationForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        done = services.declare(profile, form.answers(), time.time())
        if done.revoked:
            services.publish_revocations(request.user)
        return redirect("me-declaration", declaration_id=done.declaration.pk)
    return render(request, "personal/declare.html", {"form": form, "active": "declare", "hotline":
                                                     cfg.people.health_hotline})


@person_required
def declaration(request: HttpRequest, declaration_id: int) -> HttpResponse:
    """One of the person's own declarations (another person's id is 404)."""
    cfg = site.current()
    found = HealthDeclaration.objects.filter(pk=declaration_id, profile__user=request.user).first()
    if found is None:
        raise Http404("no such declaration")
    answers = [(text, bool(found.answers.get(name))) for name, text in QUESTION_TEXT]
    mine = found.profile.declarations.order_by("-declared_s", "-id")[:20]
    return render(request, "personal/declaration.html", {
        "active": "declare", "declaration": found, "answers": answers, "hotline": cfg.people.health_hotline,
        "at": local_time(int(found.declared_s * 1000), cfg.tz),
        "mine": [{"id": d.pk, "at": local_time(int(d.declared_s * 1000), cfg.tz), "risky": d.risky} for d in mine]})


@person_required
def visits(request: HttpRequest) -> HttpResponse:
    """Lịch sử tôi đến các địa điểm: the person's scans and check-ins at every venue."""
    cfg = site.current()
    profile = _profile(request)
    rows = []
    if profile is not None:
        for ev, venue in services.my_scans(profile):
            rows.append({"time": local_time(ev.ts_ms, cfg.tz), "venue": venue.name if venue else ev.venue_id,
                         "address": venue.full_address if venue else "", "direction": ev.direction,
                         "decision": ev.decision, "reason": REASON_WORDS.get(ev.reason, ev.reason),
                         "web": ev.device_id == services.WEB_DEVICE})
    return render(request, "personal/visits.html", {"rows": rows, "count": len(rows), "active": "visits"})


def venue_page(request: HttpRequest, venue_id: str) -> HttpResponse:
    """What a venue poster's QR opens: the venue's name and address, and "Check in"."""
    venue = Venue.objects.filter(venue_id=venue_id).first()
    if venue is None:
        raise Http404("no such venue")
    now_s = time.time()
    profile = _profile(request) if request.user.is_authenticated else None
    result = request.session.pop("checkin_result", None)
    return render(request, "personal/venue.html", {
        "venue": venue, "profile": profile, "exits": services.records_exits(venue), "result": result,
        "fresh": profile is not None and services.fresh_declaration(profile, now_s), "active": ""})


@require_POST
@person_required
def check_in(request: HttpRequest, venue_id: str) -> HttpResponse:
    """Record the check-in (or check-out) and come back to the venue page with the outcome."""
    venue = Venue.objects.filter(venue_id=venue_id).first()
    if venue is None:
        raise Http404("no such venue")
    profile = _profile(request)
    if profile is None:
        return redirect(f"/me/?next={quote(f'/v/{venue.venue_id}')}")
    direction = "out" if request.POST.get("direction") == "out" and services.records_exits(venue) else "in"
    try:
        done = services.check_in(profile, venue, direction, time.time())
    except QrGateError as err:
        log.error("check-in not stored: %s", err)
        return render(request, "refused.html", {"title": _("Check in"), "reason": str(err)}, status=503)
    request.session["checkin_result"] = {"recorded": done.recorded, "wait_s": done.wait_s, "direction": direction}
    return redirect("venue-public", venue_id=venue.venue_id)

"""Đăng nhập (phone, then a one-time code) and Thoát; the CSRF failure page; /healthz."""

from __future__ import annotations

import logging
import time

from django.contrib.auth import get_user_model, login, logout
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect, render
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_POST

from backoffice import site
from backoffice.people import codes, otp
from backoffice.sms import DetachedSms, SmsError, SmsSender, make_sender
from backoffice.venues.forms import OtpForm, PhoneForm
from provisioning.venues import display_phone

log = logging.getLogger(__name__)

LOGIN_SMS = "qrgate: ma dang nhap cua ban la {code}. Ma het han sau 5 phut. Khong chia se ma nay."


def client_address(request: HttpRequest) -> str:
    """The asking client: the proxy's X-Forwarded-For (last hop) with ``behind_proxy``, else the peer."""
    if site.current().site.behind_proxy:
        forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
        if forwarded:
            return forwarded.split(",")[-1].strip()[:64]
    return str(request.META.get("REMOTE_ADDR", ""))[:64]


def login_sender() -> SmsSender:
    """The SMS sender for login codes: detached from the request for a network gateway, so the
    time a page takes does not tell a registered phone from an unknown one. The console adapter
    (development, tests) writes a line at once and stays in line."""
    cfg = site.current()
    sender = make_sender(cfg.sms)
    return DetachedSms(sender) if cfg.sms.backend == "http" else sender


def otp_countdown(seconds_left: int) -> dict[str, int]:
    """The template values of the OTP countdown."""
    return {"seconds_left": seconds_left, "minutes": seconds_left // 60, "seconds": seconds_left % 60}


def refusal_text(refusal: otp.Refusal, wait_s: int) -> str:
    if refusal is otp.Refusal.TOO_SOON:
        return _("Mã OTP vừa được gửi. Bạn vui lòng đợi %(s)d giây trước khi xin mã mới.") % {"s": wait_s}
    return _("Đã gửi quá nhiều mã OTP trong một giờ. Bạn vui lòng thử lại sau.")


def outcome_text(outcome: otp.Outcome) -> str:
    if outcome is otp.Outcome.EXPIRED:
        return _("Mã OTP đã hết hạn. Bạn vui lòng xin mã mới.")
    if outcome in (otp.Outcome.EXHAUSTED, otp.Outcome.USED):
        return _("Mã OTP không còn dùng được (nhập sai quá 5 lần hoặc đã dùng). Bạn vui lòng xin mã mới.")
    return _("Mã OTP không đúng.")


def safe_next(request: HttpRequest, fallback: str = "/venues/") -> str:
    wanted = request.POST.get("next") or request.GET.get("next") or ""
    if wanted and url_has_allowed_host_and_scheme(wanted, allowed_hosts={request.get_host()},
                                                  require_https=request.is_secure()):
        return wanted
    return fallback


def login_phone(request: HttpRequest) -> HttpResponse:
    """Đăng nhập, step 1: the phone. The answer is the same whether anyone registered it or not."""
    form = PhoneForm(request.POST or None)
    error = ""
    if request.method == "POST" and form.is_valid():
        phone = form.cleaned_data["phone"]
        known = get_user_model().objects.filter(username=phone, is_active=True).exists()
        cfg = site.current()
        try:
            issued = codes.issue(phone, "login", client_address(request), send=known,
                                 sender=login_sender(), rules=cfg.otp, now_s=time.time(), text=LOGIN_SMS)
        except SmsError as err:
            log.error("login code not sent: %s", err)
            error = _("Không gửi được tin nhắn SMS. Bạn vui lòng thử lại sau.")
        else:
            if issued.refusal is not None and issued.refusal is not otp.Refusal.TOO_SOON:
                error = refusal_text(issued.refusal, issued.wait_s)
            else:
                request.session["login_phone"] = phone
                request.session["login_next"] = safe_next(request)
                return redirect("login-otp")
    return render(request, "people/login.html", {"form": form, "error": error,
                                                  "next": request.GET.get("next", "")})


def login_code(request: HttpRequest) -> HttpResponse:
    """Đăng nhập, step 2: the code sent to the phone."""
    phone = request.session.get("login_phone")
    if not phone:
        return redirect("login")
    cfg = site.current()
    form = OtpForm(request.POST or None)
    error = ""
    if request.method == "POST" and "resend" in request.POST:
        known = get_user_model().objects.filter(username=phone, is_active=True).exists()
        try:
            issued = codes.issue(phone, "login", client_address(request), send=known,
                                 sender=login_sender(), rules=cfg.otp, now_s=time.time(), text=LOGIN_SMS)
            if issued.refusal is not None:
                error = refusal_text(issued.refusal, issued.wait_s)
        except SmsError:
            error = _("Không gửi được tin nhắn SMS. Bạn vui lòng thử lại sau.")
        form = OtpForm()
    elif request.method == "POST" and form.is_valid():
        outcome = codes.verify(phone, "login", form.cleaned_data["code"], rules=cfg.otp, now_s=time.time())
        user = get_user_model().objects.filter(username=phone, is_active=True).first()
        if outcome is otp.Outcome.OK and user is not None:
            where = request.session.get("login_next") or "/venues/"
            login(request, user, backend="django.contrib.auth.backends.ModelBackend")
            log.info("manager logged in")
            return HttpResponseRedirect(where)
        error = outcome_text(outcome)
    expires = codes.live_expiry(phone, "login") or 0.0
    return render(request, "people/login_otp.html", {
        "form": form, "error": error, "phone": display_phone(phone),
        **otp_countdown(otp.seconds_left(expires, time.time()))})


@require_POST
def logout_view(request: HttpRequest) -> HttpResponse:
    """Thoát: ends the session."""
    logout(request)
    return redirect("login")


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    """A form sent without its CSRF token (or from another site): refused, with the reason."""
    log.warning("CSRF refusal on %s: %s", request.path, reason)
    return render(request, "refused.html", {"title": _("Yêu cầu bị từ chối"),
                                            "reason": _("Biểu mẫu đã hết hạn hoặc không gửi từ trang này. "
                                                        "Bạn vui lòng tải lại trang và thử lại.")}, status=403)


@require_GET
def healthz(request: HttpRequest) -> HttpResponse:
    return HttpResponse("ok\n", content_type="text/plain")

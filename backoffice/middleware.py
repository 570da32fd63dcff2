"""Small middleware: security headers (CSP) and the language choice; the page context."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.utils import translation

from backoffice.site import CSP

LANGUAGE_CODES = ("vi", "en")


def security_headers(get_response: Callable[[HttpRequest], HttpResponse]) -> Callable[[HttpRequest], HttpResponse]:
    """Add a strict Content-Security-Policy and keep pages out of shared caches."""

    def middleware(request: HttpRequest) -> HttpResponse:
        response = get_response(request)
        response.headers.setdefault("Content-Security-Policy", CSP)
        response.headers.setdefault("Permissions-Policy", "camera=(), microphone=(), geolocation=()")
        if response.get("Content-Type", "").startswith("text/html"):
            response.headers.setdefault("Cache-Control", "no-store")
        return response

    return middleware


def chosen_language(request: HttpRequest) -> tuple[str, bool]:
    """The page language: ``?lang=`` (then remembered), the cookie, else Vietnamese.

    Returns:
        The code and whether it came from ``?lang=`` (so the cookie must be set).
    """
    asked = request.GET.get("lang", "")
    if asked in LANGUAGE_CODES:
        return asked, True
    remembered = request.COOKIES.get(settings.LANGUAGE_COOKIE_NAME, "")
    return (remembered if remembered in LANGUAGE_CODES else "vi"), False


def language(get_response: Callable[[HttpRequest], HttpResponse]) -> Callable[[HttpRequest], HttpResponse]:
    """Activate the page language. Vietnamese is the default whatever the browser asks for."""

    def middleware(request: HttpRequest) -> HttpResponse:
        code, asked = chosen_language(request)
        translation.activate(code)
        request.LANGUAGE_CODE = code  # type: ignore[attr-defined]
        response = get_response(request)
        response.headers.setdefault("Content-Language", code)
        if asked:
            response.set_cookie(settings.LANGUAGE_COOKIE_NAME, code, max_age=365 * 86400,
                                samesite="Lax", secure=settings.LANGUAGE_COOKIE_SECURE, httponly=True)
        translation.deactivate()
        return response

    return middleware


def site_context(request: HttpRequest) -> dict[str, Any]:
    """What every page's frame shows: the language switch and the logged-in phone (masked)."""
    from firmware.core.masking import mask_phone

    code = getattr(request, "LANGUAGE_CODE", "vi")
    user = getattr(request, "user", None)
    phone = ""
    manages = traces = False
    if user is not None and user.is_authenticated:
        from backoffice.people.roles import is_health_office

        phone = mask_phone(user.get_username())
        # A person who manages no venue (the people's side) gets a shorter menu on their phone.
        has_venues = user.managements.exists()
        manages = user.is_staff or has_venues
        traces = has_venues or is_health_office(user)
    return {"lang": code, "other_lang": "en" if code == "vi" else "vi",
            "other_lang_name": "English" if code == "vi" else "Tiếng Việt", "my_phone": phone,
            "manages": manages, "traces": traces}

"""The health office's actions on a trace shown on "Truy vết" (issue 14, items 3 and 4).

Both are for the health office's staff only (``backoffice.people.roles.is_health_office``, the
one rule: ``TraceScope.may_reveal``, ``may_quarantine``); anyone else logged in who POSTs to them
gets 403, and the attempt is appended to ``trace_audit`` (``reveal_refused``,
``quarantine_refused``). Both trace again from the trace token the answer page carries
(``case_token.seal_trace``: the case's id, the window, the settings and the venue the page
traced with, bound to the person, 30 minutes), as "Xuất file" does, so they act on the trace the
page showed and never on a typed id.

* **Cách ly** (``quarantine``): days (1 to 60, 14 by default) and the reason; a confirmation step
  (the first POST shows what will happen, the second, with ``confirm=yes``, does it); then
  ``backoffice.gates.quarantine.quarantine_contacts`` with the logged-in person as actor and
  operator, which audits first, stores the entries and publishes the venues' deny lists. The
  answer shows each venue's publication and each gate's answer (took the list, refused it with
  its reason, no answer).
* **Reveal** (``reveal``): the health office uploads its private key (PEM) with a reason for this
  one request. The key is kept in memory only (``key_upload``), never written, logged, stored or
  put in the session. ``provisioning.history.reveal.reveal`` appends the audit row (with the
  events it opens) before opening anything; the page shows the case's and the contacts' names,
  full phones and ids with ``Cache-Control: no-store``, or a CSV of them for the callers (each
  download is a reveal of its own, audited, ``no-store``).
"""

from __future__ import annotations

import io
import logging
import time
from datetime import datetime
from typing import Any

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils.translation import gettext as _
from django.views.decorators.csrf import csrf_exempt, csrf_protect
from django.views.decorators.http import require_POST

from backoffice import site
from backoffice.gates.quarantine import MAX_DAYS, QuarantineRefused, may_quarantine, quarantine_contacts
from backoffice.tracing.access import TraceScope, scope_of
from backoffice.tracing.case_token import open_trace
from backoffice.tracing.inputs import BY_PERSON_ID, TraceRequest, parse_days, parse_reason, request_of
from backoffice.tracing.key_upload import (KEY_FIELD, MAX_REVEAL_REQUEST_BYTES, KeyRefused, KeyUploadHandler,
                                           read_uploaded_key)
from backoffice.tracing.opened import (CASE, CONTACT, DOES_NOT_OPEN, NOT_SEALED, group_opened,
                                       write_opened_csv)
from backoffice.tracing.views import audit_result, audit_searched, auditor, operator_of, traced, venue_names
from firmware.core.errors import QrGateError
from provisioning.history.export import local_time
from provisioning.history.reveal import reveal as open_sealed
from provisioning.history.trace_store import append_audit

log = logging.getLogger(__name__)

# The web server ends a request after 30 s (backoffice.server.TIMEOUT_S): stop waiting for the
# gates' answers after this, and publish the remaining venues' lists without waiting.
QUARANTINE_WAIT_BUDGET_S = 12.0
NO_STORE = "no-store, private"


def _refused(request: HttpRequest, scope: TraceScope | None, action: str, reason: str) -> HttpResponse:
    """403 for someone who is not on the health office's staff; the attempt goes to trace_audit."""
    reason = "".join(ch for ch in " ".join(reason.split()) if ch.isprintable())[:300]
    try:
        append_audit(auditor(), at_ms=int(time.time() * 1000), operator=operator_of(request.user),
                     action=f"{action}_refused", reason=reason,
                     searched={"role": scope.role if scope else "none", "via": "backoffice"},
                     result={"refused": "not on the health office's staff"})
    except QrGateError as err:
        log.error("%s refusal not audited: %s", action, err)
    log.warning("%s refused: user %s is not on the health office's staff", action, request.user.pk)
    return render(request, "refused.html", {
        "title": _("Truy vết"), "active": "trace",
        "reason": _("Chỉ cơ quan y tế được cách ly và mở thông tin liên lạc.")}, status=403)


def _stale(request: HttpRequest) -> HttpResponse:
    return render(request, "refused.html", {
        "title": _("Truy vết"), "active": "trace",
        "reason": _("Kết quả truy vết đã hết hạn (sau 30 phút) hoặc không đúng; bạn vui lòng truy vết lại.")},
        status=400)


def _unavailable(request: HttpRequest, what: str) -> HttpResponse:
    return render(request, "refused.html", {"title": _("Truy vết"), "active": "trace", "reason": what}, status=503)


def _sealed_trace(request: HttpRequest) -> tuple[TraceRequest, dict[str, Any]] | None:
    """The trace the answer page carried, or None if its token is missing, forged, another person's or old."""
    fields = open_trace(settings.SECRET_KEY, request.POST.get("trace_token", ""), request.user.pk, time.time())
    if fields is None:
        return None
    try:
        asked = request_of(fields)
    except ValueError:
        return None
    shown = fields.get("shown") if isinstance(fields.get("shown"), dict) else {}
    return asked, shown


# --------------------------------------------------------------------------- Cách ly

@login_required
@require_POST
def quarantine(request: HttpRequest) -> HttpResponse:
    """Cách ly: confirm (first POST), then put the case and the contacts on the deny lists (``confirm=yes``)."""
    scope = scope_of(request.user)
    if scope is None or not may_quarantine(request.user):
        return _refused(request, scope, "quarantine", request.POST.get("reason", ""))
    sealed = _sealed_trace(request)
    if sealed is None:
        return _stale(request)
    asked, shown = sealed
    cfg = site.current()
    days, days_problem = parse_days(request.POST.get("days"), MAX_DAYS)
    reason, reason_problem = parse_reason(request.POST.get("reason"))
    context: dict[str, Any] = {
        "active": "trace", "trace_token": request.POST.get("trace_token", ""), "days": days, "reason": reason,
        "max_days": MAX_DAYS, "case_display": str(shown.get("display") or "***"), "people": shown.get("people", 0),
        "visits": shown.get("visits", 0),
        "until": local_time(int((time.time() + days * 86400) * 1000), cfg.tz)[:16]}
    problems = [p for p in (days_problem, reason_problem) if p]
    if problems:
        return render(request, "tracing/quarantine.html", {**context, "step": "confirm", "errors": problems},
                      status=400)
    if request.POST.get("confirm") != "yes":
        return render(request, "tracing/quarantine.html", {**context, "step": "confirm"})
    try:
        venues = scope.narrowed(asked.venue_id)
        _subjects, found, _report = traced(asked, venues)
        outcome = quarantine_contacts(request.user, found.result, days, reason,
                                      person_id=asked.case if asked.by == BY_PERSON_ID else "",
                                      operator=operator_of(request.user), wait_budget_s=QUARANTINE_WAIT_BUDGET_S)
    except QuarantineRefused:
        return render(request, "tracing/quarantine.html", {
            **context, "step": "confirm",
            "errors": [_("Truy vết không tìm thấy lần đến nào và không có người tiếp xúc: không có ai để cách ly.")]},
            status=400)
    except (QrGateError, PermissionError) as err:
        log.error("quarantine failed: %s", err)
        return _unavailable(request, _("Không cách ly được (cơ sở dữ liệu không trả lời); không có gì được lưu "
                                       "hay gửi tới các cổng."))
    log.info("quarantine by user %s: %d venues, %d contacts, until %d", request.user.pk, len(outcome.venues),
             outcome.contacts, outcome.until_s)
    return render(request, "tracing/quarantine.html", {
        **context, "step": "done", "outcome": outcome, "ok": outcome.ok,
        "until": local_time(outcome.until_s * 1000, cfg.tz)[:16],
        "venue_rows": [_venue_row(v) for v in outcome.venues]})


def _venue_row(venue: Any) -> dict[str, Any]:
    """One venue of a quarantine as the page shows it: the publication and each gate's answer."""
    gates = [{"device": g.device_id, "state": "took" if g.ok else "refused", "text": g.text} for g in venue.gates]
    gates += [{"device": d, "state": "silent", "text": ""} for d in venue.silent]
    return {"venue_id": venue.venue_id, "name": venue.name, "added": venue.added, "in_force": venue.in_force,
            "version": venue.version, "published": venue.published, "answer": venue.answer, "gates": gates,
            "awaited": venue.awaited}


# --------------------------------------------------------------------------- the reveal

@csrf_exempt  # checked by csrf_protect below, once the in-memory upload handler is in place
@login_required
def reveal(request: HttpRequest) -> HttpResponse:
    """Open the trace's sealed contacts with the uploaded key: the page, or a CSV (``export=csv``).

    The body is refused unread when it is over ``MAX_REVEAL_REQUEST_BYTES``; otherwise it is read
    with ``KeyUploadHandler`` only, so no part of it is written to a temporary file.
    """
    if request.method != "POST":
        return HttpResponse(status=405, headers={"Allow": "POST"})
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = MAX_REVEAL_REQUEST_BYTES + 1
    if length > MAX_REVEAL_REQUEST_BYTES:
        log.warning("reveal refused: a request body of %d bytes from user %s", length, request.user.pk)
        return render(request, "refused.html", {
            "title": _("Mở thông tin liên lạc"), "active": "trace",
            "reason": _("Tệp gửi lên quá lớn: khóa bí mật của cơ quan y tế chỉ vài trăm byte.")}, status=413)
    request.upload_handlers = [KeyUploadHandler(request=request)]
    return _reveal(request)


@csrf_protect
def _reveal(request: HttpRequest) -> HttpResponse:
    scope = scope_of(request.user)
    if scope is None or not scope.may_reveal:
        return _refused(request, scope, "reveal", request.POST.get("reason", ""))
    sealed = _sealed_trace(request)
    if sealed is None:
        return _stale(request)
    asked, shown = sealed
    fmt = request.POST.get("export", "") or "page"
    reason, reason_problem = parse_reason(request.POST.get("reason"))
    problems = [reason_problem] if reason_problem else []
    if fmt not in ("page", "csv"):
        problems.append(_("Định dạng tệp không đúng; chọn CSV"))
    key = None
    try:
        key = read_uploaded_key(request.FILES.get(KEY_FIELD))
    except KeyRefused as err:
        problems.append(str(err))
    context: dict[str, Any] = {"active": "trace", "trace_token": request.POST.get("trace_token", ""),
                               "action_reason": reason, "case_display": str(shown.get("display") or "***")}
    if problems or key is None:
        return _no_store(render(request, "tracing/revealed.html", {**context, "errors": problems}, status=400))
    cfg = site.current()
    now_ms = int(time.time() * 1000)
    try:
        venues = scope.narrowed(asked.venue_id)
        subjects, found, report = traced(asked, venues)
        opened = open_sealed(auditor(), found, subjects, asked.rules, [key], at_ms=now_ms,
                             operator=operator_of(request.user), reason=reason,
                             searched=audit_searched(asked, subjects, venues, scope, report, fmt),
                             result=audit_result(report))
    except (QrGateError, PermissionError) as err:
        log.error("reveal failed: %s", err)
        return _unavailable(request, _("Không mở được (cơ sở dữ liệu không trả lời); không có thông tin nào "
                                       "được hiển thị."))
    rows = group_opened(opened)
    names = venue_names({r.venue_id for r in rows})
    opened_people = sum(1 for r in rows if r.opened)
    sealed_rows = sum(1 for r in rows if r.problem != NOT_SEALED)
    log.info("reveal by user %s: %d events, %d rows opened", request.user.pk, len(opened), opened_people)
    if sealed_rows and not opened_people:
        return _no_store(render(request, "tracing/revealed.html", {
            **context, "rows": _shown_rows(rows, names, cfg.tz), "errors": [
                _("Khóa này không mở được thông tin liên lạc nào của truy vết: đây không phải là khóa bí mật mà "
                  "các cổng dùng để niêm phong (lần mở đã được ghi vào nhật ký truy vết).")]}, status=400))
    if fmt == "csv":
        return _no_store(_contacts_csv(rows, names, cfg.tz))
    return _no_store(render(request, "tracing/revealed.html", {
        **context, "revealed": True, "rows": _shown_rows(rows, names, cfg.tz), "opened_people": opened_people}))


def _no_store(response: HttpResponse) -> HttpResponse:
    """Full phones and ids: never kept by the browser or a proxy."""
    response["Cache-Control"] = NO_STORE
    response["Pragma"] = "no-cache"
    return response


def _problem_words() -> dict[str, str]:
    return {NOT_SEALED: _("Không có thông tin liên lạc được niêm phong (cổng lúc đó chưa có khóa của cơ quan y tế)"),
            DOES_NOT_OPEN: _("Không mở được bằng khóa này (khóa khác, hoặc dữ liệu đã bị chuyển hay sửa)")}


def _role_words() -> dict[str, str]:
    return {CASE: _("Người nhiễm"), CONTACT: _("Người tiếp xúc")}


def _shown_rows(rows: list[Any], names: dict[str, str], tz: Any) -> list[dict[str, Any]]:
    problems, roles = _problem_words(), _role_words()
    return [{"role": roles[r.role], "display": r.display or "***", "venue": names.get(r.venue_id, r.venue_id),
             "first": local_time(r.first_ms, tz)[:16], "last": local_time(r.last_ms, tz)[:16], "scans": r.scans,
             "name": r.name, "phone": r.phone, "id": r.id, "opened": r.opened,
             "problem": problems.get(r.problem or "", "")} for r in rows]


def _contacts_csv(rows: list[Any], names: dict[str, str], tz: Any) -> HttpResponse:
    headings = {"role": _("Vai trò"), "name": _("Họ và tên"), "phone": _("Số điện thoại"), "id": _("Số định danh"),
                "venue": _("Địa điểm"), "first_scan": _("Lần quét đầu"), "last_scan": _("Lần quét cuối"),
                "scans": _("Số lượt quét"), "display": _("Hiển thị (đã che)"), "problem": _("Ghi chú")}
    buffer = io.BytesIO()
    write_opened_csv(rows, buffer, tz, headings=headings, roles=_role_words(), problems=_problem_words(),
                     venue_names=names)
    stamp = datetime.now(tz).strftime("%Y%m%d-%H%M%S")
    response = HttpResponse(buffer.getvalue(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="qrgate-contacts-{stamp}.csv"'
    return response

"""Truy vết: a confirmed case's visits and the people who overlapped them (issue 14, items 2 and 6).

The rules, the reading and the report are `qrgate history trace`'s
(``provisioning.history.tracing``, ``trace_store.run_trace``, ``trace_report``), on the
events the collector stores in this database. Who may trace, and where, is
``backoffice.tracing.access``: the health office everywhere, a venue manager within their own
venues (only those venues' events are read). Every trace, on the page or as a file, appends
one row to ``trace_audit`` (operator: the logged-in person) **before** anything is shown; if
the row cannot be written, nothing is shown. The form is sent by POST only, so a person id
never lands in a URL or a proxy log, and the answer never holds the typed id: its form carries
it sealed (``case_token``) so that "Xuất file" can trace again, and shows only its last three
characters. The id is never in the results, the audit, a log or a file. For the health office,
the answer also carries the whole trace sealed (``case_token.seal_trace``) to its actions,
"Cách ly" and the reveal (``backoffice.tracing.actions``), which trace again from it.
"""

from __future__ import annotations

import functools
import io
import logging
import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils.translation import gettext as _

from backoffice import site
from backoffice.tracing.access import HEALTH_OFFICE, TraceScope, scope_of
from backoffice.tracing.case_token import open_case, seal_case, seal_trace
from backoffice.tracing.inputs import (BY_PERSON_ID, BY_SUBJECT, DEFAULT_QUARANTINE_DAYS, EXPORT_FORMATS,
                                       MAX_ACTION_REASON_CHARS, TraceRequest, parse_trace_form, trace_fields)
from backoffice.venues.models import Venue
from firmware.core.errors import ConfigError, QrGateError
from firmware.core.events import protect_subject
from firmware.core.masking import mask_id, mask_phone
from provisioning.history.export import CONTENT_TYPES, clean_text, local_time
from provisioning.history.sql_store import SqlHistoryStore
from provisioning.history.trace_report import trace_report, write_trace
from provisioning.history.trace_store import TraceFound, append_audit, run_trace, venue_secrets
from provisioning.history.tracing import DEFAULT_DWELL_MIN, DEFAULT_MAX_DWELL_H, DEFAULT_MIN_OVERLAP_MIN

log = logging.getLogger(__name__)

_HMAC_SUBJECT_CHARS = 32  # protect_subject's "hmac" form: 32 lowercase hex digits
_HEX = frozenset("0123456789abcdef")


@functools.cache
def reader() -> SqlHistoryStore:
    """The history store on the back office's database, read-only, once per process."""
    from provisioning.history.store import open_store

    return open_store(site.current().database_url, readonly=True)


@functools.cache
def auditor() -> SqlHistoryStore:
    """The same database opened for writing, once per process: only ``trace_audit`` is written."""
    from provisioning.history.store import open_store

    return open_store(site.current().database_url)


def operator_of(user: Any) -> str:
    """Who traced, for the audit: the account's id and its masked phone (never the full phone)."""
    return f"backoffice:{user.pk} {mask_phone(user.get_username())}"


def case_subjects(request: TraceRequest, venues: frozenset[str] | None, store: SqlHistoryStore) -> frozenset[str]:
    """The subjects the case is stored under, as `qrgate history trace --config` finds them.

    ``subject``: as typed. ``person_id``: the id as is (venues with ``privacy.subject = "raw"``)
    and its HMAC with the secret of every venue the trace may read.
    """
    if request.by == BY_SUBJECT:
        return frozenset({request.case})
    secrets = venue_secrets(store)
    hashed = {protect_subject(request.case, "hmac", secret) or ""
              for venue_id, secret in secrets.items() if venues is None or venue_id in venues}
    return frozenset({request.case, *hashed} - {""})


def _pseudonym(subject: str) -> str:
    """A subject fit for the health office's file: an HMAC as is, anything else (a raw id) masked."""
    if len(subject) == _HMAC_SUBJECT_CHARS and set(subject) <= _HEX:
        return subject
    return mask_id(subject)


def shared_report(report: dict[str, Any], scope: TraceScope) -> dict[str, Any]:
    """The report as this person may take it away: the health office keeps hashed subjects (to
    trace a contact in turn) with raw ids masked; a venue manager gets no subjects at all."""
    keep = _pseudonym if scope.role == HEALTH_OFFICE else (lambda _subject: "")
    case = dict(report["case"])
    case["subjects"] = sorted({keep(s) for s in case["subjects"]} - {""})
    return {**report, "case": case, "contacts": [{**c, "subject": keep(c["subject"])} for c in report["contacts"]]}


def _venue_choices(scope: TraceScope) -> list[tuple[str, str]]:
    venues = Venue.objects.all() if scope.venue_ids is None else Venue.objects.filter(venue_id__in=scope.venue_ids)
    return [(v.venue_id, v.name) for v in venues.order_by("name", "venue_id")]


def _form_echo(form: Mapping[str, str]) -> dict[str, str]:
    """The form's values to put back in its fields (escaped by the template); never the case's id."""
    return {k: str(form.get(k, "")) for k in ("by", "since", "until", "venue", "min_overlap_min",
                                              "default_dwell_min", "max_dwell_h", "reason")}


def _page(request: HttpRequest, scope: TraceScope, form: Mapping[str, str], status: int = 200,
          case: tuple[str, str] | None = None, **extra: Any) -> HttpResponse:
    """The page; ``case`` (by, id) goes into the form sealed, with only its last characters shown."""
    defaults = {"by": BY_PERSON_ID, "min_overlap_min": f"{DEFAULT_MIN_OVERLAP_MIN:g}",
                "default_dwell_min": f"{DEFAULT_DWELL_MIN:g}", "max_dwell_h": f"{DEFAULT_MAX_DWELL_H:g}"}
    echo = {**defaults, **{k: v for k, v in _form_echo(form).items() if v or k not in defaults}}
    if case is not None:
        echo["by"] = case[0]
        extra["case_token"] = seal_case(settings.SECRET_KEY, case[0], case[1], request.user.pk, time.time())
        extra["case_hint"] = mask_id(case[1])
    context = {"active": "trace", "form": echo, "scope": scope, "venues": _venue_choices(scope),
               "formats": EXPORT_FORMATS, "by_subject": BY_SUBJECT, "by_person_id": BY_PERSON_ID,
               "health_office": scope.role == HEALTH_OFFICE, **extra}
    return render(request, "tracing/trace.html", context, status=status)


def _with_sealed_case(request: HttpRequest, now_s: float) -> tuple[Mapping[str, str], tuple[str, str] | None]:
    """The submitted form, with the case's id from ``case_token`` when its field was left empty.

    Returns:
        The form to check, and the (by, id) the token held if it opened (for the next answer).
    """
    form = request.POST.copy()
    if (form.get("case") or "").strip():
        return form, None
    opened = open_case(settings.SECRET_KEY, form.get("case_token", ""), request.user.pk, now_s)
    if opened is None or opened[0] != form.get("by", BY_PERSON_ID):
        return form, None  # then "Bạn vui lòng nhập thông tin Mã định danh..."
    form["case"] = opened[1]
    return form, opened


def audit_searched(request: TraceRequest, subjects: frozenset[str], venues: frozenset[str] | None,
                   scope: TraceScope, report: dict[str, Any] | None, fmt: str) -> dict[str, Any]:
    """The ``searched`` field of a trace's audit row: how, where, which window and settings, the
    subjects searched (never a typed person id), the format and ``via: "backoffice"``."""
    searched: dict[str, Any] = {
        "by": request.by, "role": scope.role, "venues": sorted(venues) if venues is not None else "all",
        "venue": request.venue_id or None, "format": fmt, "via": "backoffice",
        "subjects": sorted(subjects - {request.case}) if request.by == BY_PERSON_ID else sorted(subjects)}
    if report is not None:
        for key in ("since", "until", "min_overlap_min", "default_dwell_min", "max_dwell_h"):
            searched[key] = report["case"][key]
    return searched


@login_required
def trace_page(request: HttpRequest) -> HttpResponse:
    """The form (GET), or a trace (POST): the case's visits and the contacts, or a CSV/XLSX file.

    Anyone logged in who is neither on the health office's staff nor a venue manager gets 403;
    a manager asking for a venue they do not manage gets 403 too (and the refusal is audited).
    """
    scope = scope_of(request.user)
    if scope is None:  # rendered here, not raised: a refusal is one log line, not a traceback
        log.warning("trace refused: user %s is neither on the health office's staff nor a venue manager",
                    request.user.pk)
        return render(request, "403.html", {"active": "trace"}, status=403)
    if request.method != "POST":
        return _page(request, scope, {})
    cfg = site.current()
    now_ms = int(time.time() * 1000)
    form, sealed = _with_sealed_case(request, now_ms / 1000)
    fmt = form.get("export", "") or "page"
    try:
        if fmt != "page" and fmt not in EXPORT_FORMATS:
            raise ConfigError(_("Định dạng tệp không đúng; chọn CSV hoặc XLSX"))
        asked = parse_trace_form(form, now_ms, cfg.tz)
    except ConfigError as err:
        return _page(request, scope, form, status=400, case=sealed, errors=err.problems)
    try:
        venues = scope.narrowed(asked.venue_id)
    except PermissionError:
        return _refuse_venue(request, scope, asked, now_ms)
    try:
        subjects, found, report = traced(asked, venues)
        append_audit(auditor(), at_ms=now_ms, operator=operator_of(request.user), action="trace",
                     reason=asked.reason, searched=audit_searched(asked, subjects, venues, scope, report, fmt),
                     result=audit_result(report))
    except QrGateError as err:
        log.error("trace failed: %s", err)
        return render(request, "refused.html", {"title": _("Truy vết"), "active": "trace",
                                                "reason": _("Không truy vết được (cơ sở dữ liệu không trả lời); "
                                                            "không có kết quả nào được hiển thị.")}, status=503)
    log.info("trace by user %s (%s): %d visits, %d contacts", request.user.pk, scope.role, len(report["visits"]),
             report["people"])
    names = venue_names({v["venue_id"] for v in report["visits"]} | {c["venue_id"] for c in report["contacts"]})
    if fmt in EXPORT_FORMATS:
        return _export(fmt, shared_report(report, scope), cfg)
    context = _result_context(found, report, names, cfg.tz)
    if scope.may_reveal or scope.may_quarantine:
        shown = {"display": context["case_display"], "people": report["people"], "visits": len(report["visits"])}
        context.update(trace_token=seal_trace(settings.SECRET_KEY, trace_fields(asked, shown), request.user.pk,
                                              now_ms / 1000),
                       action_reason=asked.reason[:MAX_ACTION_REASON_CHARS], days=DEFAULT_QUARANTINE_DAYS)
    return _page(request, scope, form, case=(asked.by, asked.case), **context)


def traced(asked: TraceRequest, venues: frozenset[str] | None) -> tuple[frozenset[str], TraceFound, dict[str, Any]]:
    """Run a checked trace on the history (read-only), as the page shows it.

    Returns:
        The subjects searched, the trace, and its report (a typed person id left out of it).

    Raises:
        QrGateError: the database did not answer.
    """
    subjects = case_subjects(asked, venues, reader())
    found = run_trace(reader(), subjects, asked.since_ms, asked.until_ms, asked.rules, venues)
    shown = subjects - {asked.case} if asked.by == BY_PERSON_ID else subjects
    return subjects, found, trace_report(found, shown, asked.since_ms, asked.until_ms, asked.rules)


def venue_names(venue_ids: set[str]) -> dict[str, str]:
    """venue_id -> the venue's name, for the venues the back office knows."""
    return dict(Venue.objects.filter(venue_id__in=venue_ids).values_list("venue_id", "name"))


def audit_result(report: dict[str, Any]) -> dict[str, Any]:
    """The ``result`` field of a trace's audit row: counts and the contacts' subjects."""
    return {"visits": len(report["visits"]), "contacts": report["people"],
            "contact_subjects": sorted({c["subject"] for c in report["contacts"]})}


def _refuse_venue(request: HttpRequest, scope: TraceScope, asked: TraceRequest, now_ms: int) -> HttpResponse:
    """A venue outside the person's scope (an edited form): 403, and the attempt goes to the audit."""
    try:
        append_audit(auditor(), at_ms=now_ms, operator=operator_of(request.user), action="trace_refused",
                     reason=asked.reason, searched={"by": asked.by, "role": scope.role, "venue": asked.venue_id,
                                                    "via": "backoffice"},
                     result={"refused": "venue outside the person's venues"})
    except QrGateError as err:
        log.error("trace refusal not audited: %s", err)
    log.warning("trace refused: user %s asked for a venue they do not manage", request.user.pk)
    return render(request, "refused.html", {
        "title": _("Truy vết"), "active": "trace",
        "reason": _("Bạn chỉ được truy vết tại các địa điểm mà Bạn quản lý.")}, status=403)


def _result_context(found: TraceFound, report: dict[str, Any], names: Mapping[str, str], tz: Any) -> dict[str, Any]:
    """The rows the page shows: venues by name, local times, masked displays, minutes."""
    visits = [{"venue": names.get(v.venue_id, v.venue_id), "from": local_time(v.from_ms, tz)[:16],
               "to": local_time(v.to_ms, tz)[:16], "started_by": v.started_by, "ended_by": v.ended_by}
              for v in found.result.visits]
    contacts = [{"person": clean_text(row["display"]) or "***", "venue": names.get(c.venue_id, c.venue_id),
                 "from": local_time(c.from_ms, tz)[:16], "to": local_time(c.to_ms, tz)[:16],
                 "minutes": f"{row['overlap_s'] / 60:.0f}", "overlaps": row["overlaps"]}
                for c, row in zip(found.result.contacts, report["contacts"], strict=True)]
    return {"traced": True, "case_display": clean_text(report["case"]["display"]), "visits": visits,
            "contacts": contacts, "people": report["people"], "count": report["count"]}


def _export(fmt: str, report: dict[str, Any], cfg: Any) -> HttpResponse:
    buffer = io.BytesIO()
    write_trace(fmt, report, buffer, cfg.tz)
    stamp = datetime.now(cfg.tz).strftime("%Y%m%d-%H%M%S")
    response = HttpResponse(buffer.getvalue(), content_type=CONTENT_TYPES[fmt])
    response["Content-Disposition"] = f'attachment; filename="qrgate-trace-{stamp}.{fmt}"'
    return response

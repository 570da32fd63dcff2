"""Lịch sử quét Mã QR: the scans at the venues the logged-in person manages.

The query, paging, masking and export are ``provisioning.history``'s (the same as
`qrgate history query`), on the events the collector stores in this database. The form
is sent by POST so a person's name or phone never lands in a URL or a proxy log.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import logging
import time
from datetime import datetime

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils.translation import gettext as _

from backoffice import site
from backoffice.venues.services import managed
from firmware.core.errors import ConfigError, QrGateError
from provisioning.history.export import CONTENT_TYPES, clean_text, local_time, write_export
from provisioning.history.labels import decision_label, reason_label
from provisioning.history.query import DECISIONS, Filter, make_filter
from provisioning.history.sql_store import SqlHistoryStore

log = logging.getLogger(__name__)

EXPORT_FORMATS = ("csv", "xlsx", "json")
MAX_PAGE = 1_000_000


@functools.cache
def store() -> SqlHistoryStore:
    """The history store on the back office's database, opened read-only once per process."""
    from provisioning.history.store import open_store

    return open_store(site.current().database_url, readonly=True)


@login_required
def history(request: HttpRequest) -> HttpResponse:
    """Filters (time, person, venue, gate, decision), the count, one page, and "Xuất file"."""
    cfg = site.current()
    venues = {v.venue_id: v.name for v in managed(request.user)}
    form = request.POST if request.method == "POST" else request.GET.copy()
    errors: list[str] = []
    try:
        flt = make_filter(since=form.get("since", ""), until=form.get("until", ""), person=form.get("person", ""),
                          venue=form.get("venue", ""), device=form.get("device", ""),
                          decision=form.get("decision", ""), now_ms=int(time.time() * 1000), tz=cfg.tz)
    except ConfigError as err:
        errors = err.problems
        flt = Filter()
    # Only the venues this person manages, whatever the form asked for.
    flt = dataclasses.replace(flt, venues=tuple(sorted(venues)))
    export = form.get("export", "")
    if request.method == "POST" and export in EXPORT_FORMATS and not errors:
        return _export(export, flt, request)
    try:
        page_no = min(MAX_PAGE, max(1, int(form.get("page") or 1)))
    except ValueError:
        page_no = 1
    try:
        page = store().page(flt, page_no, cfg.site.page_size)
        devices = sorted({d for v, d in store().sources() if v in venues})
    except QrGateError as err:
        log.error("history page failed: %s", err)
        return render(request, "refused.html", {"title": _("Lịch sử quét Mã QR"), "reason": str(err)}, status=503)
    lang = getattr(request, "LANGUAGE_CODE", "vi")
    rows = [{"time": local_time(ev.ts_ms, cfg.tz), "person": clean_text(ev.display),
             "venue": venues.get(ev.venue_id, ev.venue_id), "device": clean_text(ev.device_id),
             "direction": ev.direction, "decision": ev.decision,
             "decision_label": decision_label(ev.decision, ev.direction, lang),
             "reason": clean_text(reason_label(ev.reason, lang))}
            for ev in page.rows]
    return render(request, "history/history.html", {
        "form": form, "errors": errors, "page": page, "rows": rows, "venues": sorted(venues.items(), key=lambda x: x[1]),
        "devices": devices, "decisions": DECISIONS, "formats": EXPORT_FORMATS,
        "prev_page": page.page - 1 if page.page > 1 else None,
        "next_page": page.page + 1 if page.page < page.pages else None})


def _export(fmt: str, flt: Filter, request: HttpRequest) -> HttpResponse:
    cfg = site.current()
    buffer = io.BytesIO()
    try:
        venue_names = {v.venue_id: v.name for v in managed(request.user)}
        count = write_export(fmt, store().rows(flt), buffer, cfg.tz, flt.describe(), venue_names=venue_names)
    except QrGateError as err:
        log.error("history export failed: %s", err)
        return render(request, "refused.html", {"title": _("Xuất file"), "reason": str(err)}, status=503)
    stamp = datetime.now(cfg.tz).strftime("%Y%m%d-%H%M%S")
    response = HttpResponse(buffer.getvalue(), content_type=CONTENT_TYPES[fmt])
    response["Content-Disposition"] = f'attachment; filename="qrgate-history-{stamp}.{fmt}"'
    log.info("exported %d events as %s", count, fmt)
    return response

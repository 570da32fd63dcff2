"""The status file's format and its text rendering for `qrgate status`. Pure.

The daemon writes the file (``firmware.adapters.status_file``); this module names its
schema and turns a snapshot into the table an operator reads.
"""

from __future__ import annotations

from typing import Any

STATUS_SCHEMA = "qrgate.status/1"  # the status file format, checked by `qrgate status`


def _fmt_age(seconds: Any) -> str:
    if not isinstance(seconds, (int, float)):
        return "-"
    s = float(seconds)
    if s < 120:
        return f"{s:.1f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    if s < 172800:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.1f} d"


def _get(d: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(d, dict):
            return None
        d = d.get(key)
    return d


def _num(value: Any, fmt: str) -> str:
    return format(value, fmt) if isinstance(value, (int, float)) and not isinstance(value, bool) else "-"


def render_table(snapshot: dict[str, Any], running: bool) -> str:
    """A readable two-column table of a snapshot for `qrgate status`."""
    s = snapshot
    broker = s.get("broker") or {}
    if not broker.get("configured"):
        broker_text = "not configured (events stay in the outbox)"
    else:
        link = "connected" if broker.get("connected") else "DISCONNECTED"
        broker_text = f"{link} ({broker.get('address', '')})"
    clock = s.get("clock") or {}
    last = s.get("last_decision")
    if isinstance(last, dict):
        last_text = " ".join(str(x) for x in (last.get("ts"), last.get("decision"), last.get("reason"),
                                               last.get("credential"), last.get("display"),
                                               f"code {last.get('code_sha256_prefix', '')}") if x)
    else:
        last_text = "-"
    rows = [
        ("state", f"{s.get('state', '?')}" + ("" if running else "  (daemon NOT running; last known)")),
        ("device", f"{s.get('device_id', '-')}  venue {s.get('venue_id') or '-'}  direction "
                   f"{s.get('direction', '-')}"),
        ("version", f"{s.get('version', '-')}  pid {s.get('pid', '-')}  boot {s.get('boot_id', '-')}"),
        ("uptime", _fmt_age(s.get("uptime_s"))),
        ("mode", f"{s.get('mode', '-')}  fire alarm {'ACTIVE' if s.get('fire_alarm') else 'clear'}  "
                 f"relay {s.get('relay', '-')}"),
        ("camera", f"{_num(_get(s, 'camera', 'fps'), '.1f')} fps, last frame "
                   f"{_fmt_age(_get(s, 'camera', 'last_frame_age_s'))} ago"),
        ("decode", f"p50 {_num(_get(s, 'decode', 'p50_ms'), '.1f')} ms, p99 "
                   f"{_num(_get(s, 'decode', 'p99_ms'), '.1f')} ms"),
        ("outbox", f"{_num(_get(s, 'outbox', 'backlog'), 'd')} unsent, oldest "
                   f"{_fmt_age(_get(s, 'outbox', 'oldest_unsent_age_s'))}"),
        ("broker", broker_text),
    ]
    lists = s.get("lists")
    if isinstance(lists, dict) and lists:
        for name, info in sorted(lists.items()):
            if isinstance(info, dict):
                stale = info.get("stale") or name in (s.get("lists_stale") or ())
                rows.append((f"list {name}", f"version {info.get('version', '-')}, "
                                             + (f"{info['count']} entries, " if "count" in info else "")
                                             + f"age {_fmt_age(info.get('age_s'))}"
                                             + ("  STALE" if stale else "")
                                             + ("  DAMAGED" if info.get("damaged") else "")))
            else:
                rows.append((f"list {name}", str(info)))
    else:
        rows.append(("lists", "-"))
    rows += [
        ("clock", f"{'trusted' if clock.get('trusted') else 'NOT trusted'}, "
                  f"{'synced' if clock.get('synced') else 'not synced'}"),
        ("decisions", f"{s.get('decisions', 0)} ({s.get('granted', 0)} granted)"),
        ("last decision", last_text),
        ("cpu temp", f"{_num(_get(s, 'health', 'cpu_temp_c'), '.1f')} °C"),
        ("written", str(s.get("written_at", "-"))),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)

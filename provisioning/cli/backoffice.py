"""`qrgate backoffice init|serve|createstaff|healthoffice|publish-lists --config F`: the back office (Django).

Only the parser lives here; the work is in ``backoffice.cli``, imported when the command
runs, so the gate's own commands never import Django.
"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("backoffice", help="the back office web application (needs pip install '.[backoffice]')",
                       description="Venue registration with SMS codes, venue management, scan history and "
                       "gates, on Django under gunicorn.")
    ps = p.add_subparsers(dest="backoffice_command", metavar="ACTION", required=True)
    i = ps.add_parser("init", help="create the database tables, the secret key and missing key files")
    s = ps.add_parser("serve", help="run the site under gunicorn (static files through whitenoise)")
    c = ps.add_parser("createstaff", help="make a health office staff account (Django admin)")
    c.add_argument("--phone", required=True, help="the staff member's mobile number; they log in by SMS code")
    c.add_argument("--name", default="", help="their full name")
    h = ps.add_parser("healthoffice", help="grant (or revoke) the health office role: tracing across every venue",
                      description="The health office's staff trace contacts across every venue on the "
                      "back office's \"Truy vết\" page; venue managers trace only within their own venues.")
    h.add_argument("--phone", required=True, help="the staff member's mobile number; they log in by SMS code")
    h.add_argument("--name", default="", help="their full name (for a new account)")
    h.add_argument("--revoke", action="store_true", help="take the role back")
    pl = ps.add_parser("publish-lists", help="publish the venues' deny and allow lists again; delete ended "
                       "quarantines past privacy.quarantine_keep_days",
                       description="Each venue's deny list (the managers' ids, the revoked passes and the "
                       "quarantine entries in force) and allow list, if it has one, published again signed and "
                       "retained, so that ended quarantines drop out and the retained lists never expire (a "
                       "list message is valid for 7 days). Prints each venue's result and its gates' answers; "
                       "exits 1 when a list could not be published or a gate refused it. Run daily by "
                       "systemd/qrgate-backoffice-lists.timer.")
    pl.add_argument("--venue", default="", metavar="V", help="only this venue (its lists and its quarantine entries)")
    pl.add_argument("--if-older-than-h", type=float, default=None, metavar="H",
                    help="publish only the lists last published more than H hours ago, never published, or "
                    "holding a quarantine entry that has ended since (default: every list)")
    for a in (i, s, c, h, pl):
        a.add_argument("--config", required=True, help="the back office TOML config")
        a.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    try:
        from backoffice.cli import run
    except ImportError as err:
        from firmware.core.errors import ConfigError

        raise ConfigError(f"the back office is not installed ({err}); pip install '.[backoffice]'") from err
    return run(args)

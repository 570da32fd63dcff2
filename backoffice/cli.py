"""`qrgate backoffice init|serve|createstaff|healthoffice|publish-lists --config F`: the back office's
composition root.

Imported only when one of these subcommands runs (``firmware/commands/backoffice.py``
imports it lazily), so the gate never loads Django.
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import sys
from pathlib import Path

from backoffice.config import BackofficeConfig, load_config
from firmware.core.errors import ConfigError

log = logging.getLogger(__name__)


def write_secret(path: Path, text: str) -> None:
    """Create a secret file 0600 (its folder 0700 if new); never overwrites.

    Raises:
        ConfigError: it cannot be written.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
    except OSError as err:
        raise ConfigError(f"cannot write {path} ({err.strerror}); check the folder's owner and mode") from err


def ensure_keys(cfg: BackofficeConfig, announce=print) -> list[Path]:
    """Make every ``[keys]`` file that is missing (Ed25519, 0600, with its .pub.pem). Returns the new ones."""
    from provisioning.keys import new_keypair

    made = []
    for role in ("issuer_key", "authority_key", "command_key"):
        path = getattr(cfg.keys, role)
        if path.exists():
            continue
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        new = new_keypair(path)
        made.append(path)
        announce(f"made keys.{role} {path} (kid {new.kid_hex}); give its .pub.pem to the gates "
                 f"(qrgate keys trust ... --role {role.split('_')[0]})")
    return made


def init(cfg: BackofficeConfig, announce=print) -> None:
    """Create the secret key and missing keys, the database tables (migrations) and the history tables."""
    if not cfg.site.secret_key_file.exists():
        write_secret(cfg.site.secret_key_file, secrets.token_urlsafe(50) + "\n")
        announce(f"made the secret key {cfg.site.secret_key_file} (0600)")
    ensure_keys(cfg, announce)
    if not cfg.is_postgres:
        Path(cfg.database_url).parent.mkdir(parents=True, exist_ok=True)
    from backoffice.site import configure

    configure(cfg)
    from django.core.management import call_command

    call_command("migrate", interactive=False, verbosity=0)
    from backoffice.people.roles import ensure_groups

    ensure_groups()
    from provisioning.history.store import open_store

    open_store(cfg.database_url).close()  # the scan history's tables, beside Django's
    if not cfg.is_postgres:
        os.chmod(cfg.database_url, 0o600)
    announce(f"database ready: {'PostgreSQL' if cfg.is_postgres else cfg.database_url}")


def createstaff(cfg: BackofficeConfig, phone_text: str, name: str, announce=print) -> None:
    """Make (or promote) a health office staff account: admin access, logging in by SMS code.

    Raises:
        ConfigError: the phone is not a Vietnamese mobile number.
    """
    from provisioning.venues import normalise_phone

    phone = normalise_phone(phone_text)
    if phone is None:
        raise ConfigError(f"--phone {phone_text!r} is not a Vietnamese mobile number, e.g. 0912 345 678")
    from backoffice.site import configure

    configure(cfg)
    from backoffice.venues.services import audit, user_for_phone

    from backoffice.people.roles import set_health_office

    user = user_for_phone(phone, name)
    user.is_staff = True
    user.is_superuser = True
    user.save(update_fields=["is_staff", "is_superuser"])
    set_health_office(user, True)
    audit(None, "staff_created", detail=f"user {user.pk}")
    announce(f"staff account {phone[:6]}*** ready; log in at {cfg.site.base_url}/login/ with an SMS code, "
             "then open /admin/ or /trace/")


def healthoffice(cfg: BackofficeConfig, phone_text: str, name: str, revoke: bool, announce=print) -> None:
    """Grant (or with ``revoke`` take back) the health office role: tracing across every venue
    on the "Truy vết" page, without the admin rights of ``createstaff``.

    Raises:
        ConfigError: the phone is not a Vietnamese mobile number, or (revoke) nobody has it.
    """
    from provisioning.venues import normalise_phone

    phone = normalise_phone(phone_text)
    if phone is None:
        raise ConfigError(f"--phone {phone_text!r} is not a Vietnamese mobile number, e.g. 0912 345 678")
    from backoffice.site import configure

    configure(cfg)
    from django.contrib.auth import get_user_model

    from backoffice.people.roles import set_health_office
    from backoffice.venues.services import audit, user_for_phone

    if revoke:
        user = get_user_model().objects.filter(username=phone).first()
        if user is None:
            raise ConfigError(f"nobody logs in with {phone[:6]}***; nothing to revoke")
    else:
        user = user_for_phone(phone, name)
    changed = set_health_office(user, not revoke)
    action = "health_office_revoked" if revoke else "health_office_granted"
    if changed:
        audit(None, action, detail=f"user {user.pk}")
    state = "no longer has" if revoke else "has"
    announce(f"{phone[:6]}*** {state} the health office role{'' if changed else ' (unchanged)'}"
             + ("" if revoke else f"; they log in at {cfg.site.base_url}/login/ and open /trace/"))


def publish_lists(cfg: BackofficeConfig, venue_id: str, older_than_h: float | None, announce=print) -> int:
    """Delete ended quarantines past their keeping and publish the venues' lists again
    (``backoffice.gates.republish``); print each list's result and its gates' answers.

    Returns:
        0 when every due list was published and no gate refused one, else 1.

    Raises:
        ConfigError: an unknown venue or a bad ``--if-older-than-h`` (checked before anything is done).
    """
    import time

    from backoffice.site import configure

    configure(cfg)
    from backoffice.gates.republish import republish_lists

    outcome = republish_lists(now_s=time.time(), database_url=cfg.database_url,
                              keep_days=cfg.privacy.quarantine_keep_days, venue_id=venue_id,
                              older_than_h=older_than_h)
    for line in outcome.lines():
        announce(line)
    return 0 if outcome.ok else 1


def run(args: argparse.Namespace) -> int:
    """Dispatch ``qrgate backoffice ACTION``. Returns the exit status.

    Raises:
        ConfigError: a bad config (the CLI exits 78, every problem listed).
    """
    cfg = load_config(args.config)
    if args.backoffice_command == "init":
        init(cfg)
        return 0
    if args.backoffice_command == "createstaff":
        createstaff(cfg, args.phone, args.name)
        return 0
    if args.backoffice_command == "healthoffice":
        healthoffice(cfg, args.phone, args.name, args.revoke)
        return 0
    if args.backoffice_command == "publish-lists":
        return publish_lists(cfg, args.venue.strip(), args.if_older_than_h)
    if args.backoffice_command == "serve":
        from backoffice.server import serve
        from backoffice.site import read_secret_key

        read_secret_key(cfg)  # a clear "run init first" before gunicorn starts
        print(f"back office on {cfg.site.base_url} (listening on {cfg.site.listen})", file=sys.stderr, flush=True)
        return serve(cfg)
    raise ConfigError(f"unknown action {args.backoffice_command!r}")

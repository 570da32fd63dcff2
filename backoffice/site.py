"""Django's settings, built from the back office config, and ``configure(cfg)`` to apply them.

There is no settings module: the composition root (``backoffice.cli``, or the gunicorn
application in ``backoffice.server``) parses the TOML once and calls ``configure``. The
running config is kept in ``current()`` for views that need the SMS port, the keys and
the broker.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from backoffice.config import BackofficeConfig
from firmware.core.errors import ConfigError

log = logging.getLogger(__name__)

PACKAGE_DIR = Path(__file__).resolve().parent
# Request size limits: forms are small; the one upload (a deny/allow list CSV) is capped apart.
MAX_FORM_BYTES = 64 * 1024
MAX_UPLOAD_BYTES = 1024 * 1024
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'")

_current: BackofficeConfig | None = None


def current() -> BackofficeConfig:
    """The config ``configure`` was called with.

    Raises:
        ConfigError: ``configure`` was not called in this process.
    """
    if _current is None:
        raise ConfigError("the back office is not configured; start it with `qrgate backoffice serve --config F`")
    return _current


def database_settings(url: str) -> dict[str, Any]:
    """Django's DATABASES["default"] for a SQLite path or a ``postgresql://`` URL.

    Query parameters of a PostgreSQL URL (``options=-csearch_path=...``, ``sslmode``...) go
    to libpq unchanged.
    """
    if url.startswith(("postgresql://", "postgres://")):
        parts = urlsplit(url)
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": unquote(parts.path.lstrip("/")),
            "USER": unquote(parts.username or ""),
            "PASSWORD": unquote(parts.password or ""),
            "HOST": parts.hostname or "",
            "PORT": str(parts.port or ""),
            "OPTIONS": dict(parse_qsl(parts.query)),
            "CONN_MAX_AGE": 60,
        }
    return {"ENGINE": "django.db.backends.sqlite3", "NAME": url,
            "OPTIONS": {"timeout": 20, "transaction_mode": "IMMEDIATE",
                        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"}}


def read_secret_key(cfg: BackofficeConfig) -> str:
    """The Django secret key from ``site.secret_key_file``.

    Raises:
        ConfigError: the file is missing (run init) or too short.
    """
    path = cfg.site.secret_key_file
    try:
        key = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError as err:
        raise ConfigError(f"site.secret_key_file {path} does not exist; run `qrgate backoffice init "
                          f"--config {cfg.path}` first") from err
    except OSError as err:
        raise ConfigError(f"site.secret_key_file {path} cannot be read ({err.strerror})") from err
    if len(key) < 32:
        raise ConfigError(f"site.secret_key_file {path} holds fewer than 32 characters; delete it and "
                          "run `qrgate backoffice init` to make a new one")
    return key


def django_settings(cfg: BackofficeConfig, secret_key: str) -> dict[str, Any]:
    """Every Django setting the back office uses, from the config."""
    origin = cfg.site.base_url
    settings: dict[str, Any] = {
        "DEBUG": False,
        "SECRET_KEY": secret_key,
        "ALLOWED_HOSTS": list(cfg.site.allowed_hosts),
        "ROOT_URLCONF": "backoffice.urls",
        "WSGI_APPLICATION": None,
        "INSTALLED_APPS": [
            "django.contrib.admin", "django.contrib.auth", "django.contrib.contenttypes",
            "django.contrib.sessions", "django.contrib.messages", "django.contrib.staticfiles",
            "backoffice.people", "backoffice.venues", "backoffice.history", "backoffice.gates",
            "backoffice.personal", "backoffice.tracing",
        ],
        "MIDDLEWARE": [
            "django.middleware.security.SecurityMiddleware",
            "whitenoise.middleware.WhiteNoiseMiddleware",
            "backoffice.middleware.security_headers",
            "django.contrib.sessions.middleware.SessionMiddleware",
            "backoffice.middleware.language",
            "django.middleware.common.CommonMiddleware",
            "django.middleware.csrf.CsrfViewMiddleware",
            "django.contrib.auth.middleware.AuthenticationMiddleware",
            "django.contrib.messages.middleware.MessageMiddleware",
            "django.middleware.clickjacking.XFrameOptionsMiddleware",
        ],
        "TEMPLATES": [{
            "BACKEND": "django.template.backends.django.DjangoTemplates",
            "DIRS": [str(PACKAGE_DIR / "templates")],
            "APP_DIRS": True,
            "OPTIONS": {"context_processors": [
                "django.template.context_processors.request",
                "django.template.context_processors.csrf",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "backoffice.middleware.site_context",
            ]},
        }],
        "DATABASES": {"default": database_settings(cfg.database_url)},
        "DEFAULT_AUTO_FIELD": "django.db.models.BigAutoField",
        "AUTH_PASSWORD_VALIDATORS": [],
        "LANGUAGE_CODE": "vi",
        "LANGUAGES": [("vi", "Tiếng Việt"), ("en", "English")],
        "LOCALE_PATHS": [str(PACKAGE_DIR / "locale")],
        "USE_I18N": True,
        "USE_TZ": True,
        "TIME_ZONE": cfg.site.time_zone,
        "STATIC_URL": "/static/",
        "STATIC_ROOT": None,
        "STATICFILES_DIRS": [str(PACKAGE_DIR / "static")],
        # Static files come from the installed package, served by whitenoise; no collectstatic step.
        "WHITENOISE_USE_FINDERS": True,
        "WHITENOISE_AUTOREFRESH": False,
        "SESSION_ENGINE": "django.contrib.sessions.backends.db",
        "SESSION_COOKIE_AGE": cfg.site.session_age_s,
        "SESSION_EXPIRE_AT_BROWSER_CLOSE": True,
        "SESSION_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_SAMESITE": "Lax",
        "SESSION_COOKIE_SECURE": cfg.site.secure,
        "SESSION_COOKIE_NAME": "qrgate_session",
        "CSRF_COOKIE_SECURE": cfg.site.secure,
        "CSRF_COOKIE_HTTPONLY": True,
        "CSRF_COOKIE_SAMESITE": "Strict",
        "CSRF_TRUSTED_ORIGINS": [origin],
        "CSRF_FAILURE_VIEW": "backoffice.people.views.csrf_failure",
        "LANGUAGE_COOKIE_NAME": "qrgate_lang",
        "LANGUAGE_COOKIE_SAMESITE": "Lax",
        "LANGUAGE_COOKIE_SECURE": cfg.site.secure,
        "X_FRAME_OPTIONS": "DENY",
        "SECURE_CONTENT_TYPE_NOSNIFF": True,
        "SECURE_REFERRER_POLICY": "same-origin",
        "DATA_UPLOAD_MAX_MEMORY_SIZE": MAX_FORM_BYTES,
        "FILE_UPLOAD_MAX_MEMORY_SIZE": MAX_UPLOAD_BYTES,
        "DATA_UPLOAD_MAX_NUMBER_FIELDS": 200,
        "DATA_UPLOAD_MAX_NUMBER_FILES": 2,
        "LOGIN_URL": "/login/",
        "AUTHENTICATION_BACKENDS": ["django.contrib.auth.backends.ModelBackend"],
        "LOGGING_CONFIG": None,
        "MESSAGE_STORAGE": "django.contrib.messages.storage.session.SessionStorage",
    }
    if cfg.site.behind_proxy:
        settings["SECURE_PROXY_SSL_HEADER"] = ("HTTP_X_FORWARDED_PROTO", "https")
        settings["USE_X_FORWARDED_HOST"] = False
    if cfg.site.secure:
        settings["SECURE_HSTS_SECONDS"] = 31536000
    return settings


# Django logs these refusals (each a 400) on django.security.<name>, with a traceback.
_EXPECTED_REFUSALS = ("DisallowedHost", "RequestDataTooBig", "TooManyFieldsSent", "TooManyFilesSent",
                      "SuspiciousMultipartForm", "SuspiciousFileOperation", "SuspiciousOperation",
                      "DisallowedRedirect")


class _OneLine(logging.Filter):
    """Drop the traceback Django attaches to expected refusals (a bad Host header, an oversized
    form), so a stream of hostile requests costs one log line each."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.exc_info, record.exc_text = None, None
        return True


def configure(cfg: BackofficeConfig) -> None:
    """Apply the config to Django (once per process) and set up the apps.

    Raises:
        ConfigError: the secret key is missing, or Django was configured with another config.
    """
    global _current
    import django
    from django.conf import settings

    if settings.configured:
        if _current is not None and _current.path == cfg.path:
            return
        raise ConfigError("Django is already configured in this process with another config")
    settings.configure(**django_settings(cfg, read_secret_key(cfg)))
    for refusal in _EXPECTED_REFUSALS:
        logging.getLogger(f"django.security.{refusal}").addFilter(_OneLine())
    _current = cfg
    django.setup()

"""Running the back office under gunicorn (never Django's runserver); whitenoise serves static files."""

from __future__ import annotations

import logging
from typing import Any

from backoffice.config import BackofficeConfig

log = logging.getLogger(__name__)

# Request limits, on top of Django's form size caps (backoffice.site).
LIMIT_REQUEST_LINE = 4094
LIMIT_REQUEST_FIELDS = 60
LIMIT_REQUEST_FIELD_SIZE = 8190
TIMEOUT_S = 30


def gunicorn_options(cfg: BackofficeConfig) -> dict[str, Any]:
    """gunicorn's settings for the config: bind, workers, limits, an access log without query strings."""
    host, port = cfg.site.listen_host_port
    bind = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return {
        "bind": [bind], "workers": cfg.site.workers, "worker_class": "sync", "timeout": TIMEOUT_S,
        "graceful_timeout": 10, "limit_request_line": LIMIT_REQUEST_LINE,
        "limit_request_fields": LIMIT_REQUEST_FIELDS, "limit_request_field_size": LIMIT_REQUEST_FIELD_SIZE,
        "accesslog": "-", "errorlog": "-", "loglevel": "info",
        # %(U)s is the path without the query string: nothing personal in the log.
        "access_log_format": '%(h)s "%(m)s %(U)s" %(s)s %(B)s %(L)ss',
        "forwarded_allow_ips": "127.0.0.1,::1" if cfg.site.behind_proxy else "",
        "proc_name": "qrgate-backoffice", "preload_app": True,
        # gunicorn 24+ opens a control socket in $HOME by default; the service has no use for it.
        "control_socket_disable": True,
    }


def serve(cfg: BackofficeConfig) -> int:
    """Configure Django and run gunicorn in the foreground until SIGTERM/SIGINT. Returns the exit status."""
    from gunicorn.app.base import BaseApplication

    from backoffice.site import configure

    configure(cfg)
    from django.core.wsgi import get_wsgi_application

    wsgi = get_wsgi_application()
    options = gunicorn_options(cfg)

    class Application(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            for key, value in options.items():
                if key in self.cfg.settings:  # older gunicorn lacks some settings
                    self.cfg.set(key, value)

        def load(self) -> Any:
            return wsgi

    Application().run()
    return 0

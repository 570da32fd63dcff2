"""qrgate's back office: the venue system of the 2021 order on Django.

Venue registration with an SMS one-time code, login with a code, venue management,
the scan history and the gates of each venue. Installed with ``pip install '.[backoffice]'``;
the gate (``firmware``, ``device``) never imports it. Django is configured by
``backoffice.site.configure`` from the TOML config (``backoffice.config``), never from
an environment variable or a settings module read at import time.
"""

"""Logging set-up: journald priority prefixes under systemd, a human format on a terminal."""

from __future__ import annotations

import logging
import os
import sys

# Loggers whose INFO lines a person needs without -v: one line each at start, stop and reconnect,
# the gate's provisioning (once in its life, with the venue and broker it got) and each gate key
# the history registers (enrolment or `history device add`).
LIFECYCLE_LOGGERS = ("firmware.commands.run", "firmware.features.provisioning",
                     "provisioning.history.collector.lifecycle", "provisioning.history.registry")

_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}


class JournalFormatter(logging.Formatter):
    """Prefix each line with ``<N>`` so journald records its priority; no timestamp."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        prio = _PRIORITY.get(record.levelno, 6)
        return "\n".join(f"<{prio}>{line}" for line in text.splitlines())


def setup_logging(verbosity: int = 0) -> None:
    """Send logs to stderr: journald format when JOURNAL_STREAM is set, else a human one.

    Args:
        verbosity: 0 warnings and the lifecycle lines (``LIFECYCLE_LOGGERS``), 1 info, 2 debug.
    """
    level = logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    handler = logging.StreamHandler(sys.stderr)
    if os.environ.get("JOURNAL_STREAM"):
        handler.setFormatter(JournalFormatter("%(name)s: %(message)s"))
        level = min(level, logging.INFO)
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    if verbosity <= 0:
        # the lifecycle lines (the daemon's "ready", the collector's start and reconnect) at INFO
        for announcer in LIFECYCLE_LOGGERS:
            logging.getLogger(announcer).setLevel(logging.INFO)
    for noisy in ("PIL",):
        logging.getLogger(noisy).setLevel(logging.WARNING)

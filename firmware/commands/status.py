"""`qrgate status`: the running daemon's live status, read from its status file.

Opens no camera, GPIO or database: it reads ``<runtime_dir>/status.json`` and checks
that the daemon which wrote it still runs (its pid, and the state directory's lock).

Exit status: 0 running and ``ready``; 1 running but in another state; 3 not running
(no status file, or one left behind by a daemon that is gone) or unknown (the file is
another gate's: two gates on one machine share ``device.runtime_dir``).
"""

from __future__ import annotations

import argparse
import json
import sys

from firmware.adapters.config_file import load_config
from firmware.adapters.status_file import (
    EXIT_NOT_READY,
    EXIT_NOT_RUNNING,
    EXIT_READY,
    daemon_running,
    read_status,
    status_path,
)
from firmware.core.config import DEFAULT_CONFIG_PATH
from firmware.core.status_view import render_table


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("status", help="show the running gate's state (exit 0 only when ready)",
                       description="Show the running daemon's live status: state, ids, version, uptime, "
                       "camera fps, decode times, outbox backlog, broker, lists, clock and the last "
                       "decision (masked). Exit status: 0 ready, 1 running but not ready, 3 not running.")
    p.add_argument("--config", default=str(DEFAULT_CONFIG_PATH), help="TOML config file (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print the status as JSON (adds a `running` field)")
    p.set_defaults(func=status_command)


def status_command(args: argparse.Namespace) -> int:
    from firmware.adapters.process import state_dir_in_use

    cfg = load_config(args.config)
    path = status_path(cfg.resolve(cfg.device.runtime_dir, "run"))
    snapshot = read_status(path)
    running = daemon_running(snapshot, cfg.state_dir, state_dir_in_use)
    if snapshot is None:
        if args.json:
            print(json.dumps({"running": False, "state": None, "status_file": str(path)}))
        else:
            print(f"qrgate is not running (no status file at {path}); start it with "
                  "`systemctl start qrgate`", file=sys.stderr)
        return EXIT_NOT_RUNNING
    writer_id = snapshot.get("device_id")
    if writer_id != cfg.device.id:
        # never show another gate's state as this one's
        problem = (f"the status file {path} is gate {writer_id}'s (pid {snapshot.get('pid')}), not "
                   f"{cfg.device.id}'s: gates on one machine need their own device.runtime_dir "
                   "(`qrgate provision device --runtime-dir DIR`)")
        if args.json:
            print(json.dumps({"running": False, "state": None, "status_file": str(path), "error": problem}))
        else:
            print(f"qrgate status: {problem}", file=sys.stderr)
        return EXIT_NOT_RUNNING
    if args.json:
        print(json.dumps({**snapshot, "running": running}, ensure_ascii=False, sort_keys=True, indent=1))
    else:
        print(render_table(snapshot, running))
    if not running:
        return EXIT_NOT_RUNNING
    return EXIT_READY if snapshot.get("state") == "ready" else EXIT_NOT_READY

"""The operator mode and fire latch on disk (``<state_dir>/mode.json``), so lockdown survives a restart."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

from firmware.adapters.atomic_files import write_atomic
from firmware.core.device_state import Mode, ModeControl

log = logging.getLogger(__name__)

MODE_FILE = "mode.json"


class ModeFile:
    """The ModeStore port on one JSON file, written atomically.

    Args:
        path: the mode file.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self, reset_required_after_fire: bool) -> ModeControl:
        """The persisted operator mode and fire latch (normal if missing or unreadable)."""
        control = ModeControl(reset_required_after_fire=reset_required_after_fire)
        try:
            data = json.loads(self.path.read_text())
            return replace(control, mode=Mode.parse(str(data.get("mode", "normal"))),
                           fire_latched=bool(data.get("fire_latched", False)) and reset_required_after_fire)
        except FileNotFoundError:
            return control
        except (OSError, ValueError, AttributeError) as err:
            log.warning("mode file %s is unreadable (%s); starting in normal mode", self.path, err)
            return control

    def save(self, control: ModeControl) -> None:
        """Persist mode and fire latch atomically.

        Raises:
            OSError: the file cannot be written.
        """
        data = json.dumps({"mode": control.mode.value, "fire_latched": control.fire_latched})
        write_atomic(self.path, data.encode("utf-8"))

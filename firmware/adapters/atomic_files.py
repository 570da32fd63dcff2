"""Atomic file replacement (adapter: file I/O), the one implementation every writer uses.

``write_atomic`` writes a temporary file in the same directory, then renames it over
the target with ``os.replace``: a reader sees the old file or the new one, never half
of one. The temporary file is created with its final mode (``O_CREAT | O_EXCL`` and an
``fchmod`` against the umask), so a secret is never readable by others, not even for a
moment, and a stale temporary file of the same name is never reused.

``durable=True`` (the default) also fsyncs the file before the rename and the
directory after it, so the new content survives a power cut. ``durable=False`` skips
both: for tmpfs files such as ``/run/qrgate/status.json`` and for files rewritten often
where losing the last write is harmless (no SD-card wear).

Usage::

    write_atomic(state_dir / "outbox.seq", b"4096\\n", mode=0o600)
    write_atomic(runtime_dir / "status.json", data, durable=False)
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

_TEMP_ATTEMPTS = 16


def fsync_dir(directory: str | Path) -> None:
    """fsync a directory so that a rename inside it survives a power cut.

    Raises:
        OSError: the directory cannot be opened or synced.
    """
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _create_temp(path: Path, mode: int) -> tuple[Path, int]:
    """Create a new, empty temporary file beside path with exactly mode; return it and its fd."""
    for _ in range(_TEMP_ATTEMPTS):
        tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        except FileExistsError:
            continue  # a leftover of a crashed writer, or a race: pick another name
        return tmp, fd
    raise FileExistsError(f"no free temporary file name beside {path} after {_TEMP_ATTEMPTS} tries")


def write_atomic(path: str | Path, data: bytes, *, mode: int = 0o644, durable: bool = True) -> None:
    """Replace the file at path with data, atomically, with permission bits exactly mode.

    Args:
        path: the file to create or replace; its directory must exist.
        data: the whole new content.
        mode: the file's permission bits, whatever the process umask (0o600 for secrets).
        durable: fsync the file before and the directory after the rename.

    Raises:
        OSError: the file could not be written (callers translate it into their own
            error). Before the rename the old file is left as it was and the temporary
            file is removed; a failure of the final directory fsync comes after the rename.
    """
    path = Path(path)
    tmp, fd = _create_temp(path, mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), mode)  # the umask may have narrowed it; make it exact
            fh.write(data)
            fh.flush()
            if durable:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    if durable:
        fsync_dir(path.parent)


def move_aside(path: str | Path, tag: str, sidecars: tuple[str, ...] = ()) -> Path:
    """Move a damaged file (and its sidecars, e.g. SQLite's ``-wal`` and ``-shm``) out of the way.

    The file becomes ``<name>.corrupt-<tag>`` (with ``-2``, ``-3``... if taken); each sidecar
    keeps its suffix after that name, so a stale write-ahead log is never replayed into the
    fresh file that replaces it. The directory is fsynced afterwards.

    Returns:
        The new path of the main file.

    Raises:
        OSError: a file could not be moved (callers translate it into their own error).
    """
    path = Path(path)
    target = path.with_name(f"{path.name}.corrupt-{tag}")
    n = 1
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}.corrupt-{tag}-{n}")
    for suffix in sidecars:
        side = Path(str(path) + suffix)
        if side.exists():
            os.replace(side, Path(str(target) + suffix))
    if path.exists():
        os.replace(path, target)
    fsync_dir(path.parent)
    return target

"""Power-cut replay (RELIABILITY.md D4, the CI variant): log every write and fsync of a real
process with the tests/powercut/writelog.c shim, then rebuild its files as they would be after
a power cut just before each flush point: data not fsynced dropped, names not made durable by
a directory fsync undone (the LazyFS model, pessimistic).

Usage::

    shim = build_shim(tmp_dir)                       # gcc, once per session
    run_traced(shim, state_dir, log, [sys.executable, "-m", "tests.powercut.workload", ...])
    for cut in replay(log):                          # one Cut per flush point, in order
        cut.materialize(into_dir, keep=("outbox",))  # the durable files at that moment
        cut.markers                                  # marker lines written before it
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

SHIM_SOURCE = Path(__file__).parent / "powercut" / "writelog.c"


def build_shim(out_dir: Path) -> Path:
    """Compile writelog.so into out_dir and return its path.

    Raises:
        AssertionError: no C compiler, with how to install one.
    """
    compiler = shutil.which("cc") or shutil.which("gcc")
    assert compiler, "the power-cut test needs a C compiler: sudo apt-get install -y build-essential"
    out = out_dir / "writelog.so"
    subprocess.run([compiler, "-shared", "-fPIC", "-O2", "-Wall", "-o", str(out), str(SHIM_SOURCE), "-ldl",
                    "-lpthread"], check=True, capture_output=True, text=True)
    return out


def run_traced(shim: Path, trace_dir: Path, log: Path, argv: list[str], timeout_s: float = 600.0) -> None:
    """Run argv with the shim preloaded, logging writes under trace_dir into log."""
    env = dict(os.environ, LD_PRELOAD=str(shim), QRGATE_TRACE_DIR=str(trace_dir), QRGATE_TRACE_LOG=str(log))
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout_s)
    assert done.returncode == 0, done.stderr[-3000:]


@dataclass(frozen=True)
class Record:
    """One logged call: op is W, T, C, S, U or R (see writelog.c)."""

    op: str
    path: str
    arg: int
    data: bytes


def read_log(log: Path) -> Iterator[Record]:
    """Yield the records of a writelog file in call order."""
    raw = log.read_bytes()
    at = 0
    while at < len(raw):
        op = chr(raw[at])
        (path_len,) = struct.unpack_from("<I", raw, at + 1)
        path = raw[at + 5:at + 5 + path_len].decode()
        arg, data_len = struct.unpack_from("<qI", raw, at + 5 + path_len)
        start = at + 17 + path_len
        yield Record(op, path, arg, raw[start:start + data_len])
        at = start + data_len


@dataclass
class Cut:
    """The durable state at one flush point: what a power cut right after it leaves on disk."""

    index: int
    durable: dict[str, bytes]
    markers: list[str]

    def materialize(self, into: Path, keep: tuple[str, ...]) -> None:
        """Write the durable files whose names start with one of keep into an empty directory,
        never an SQLite ``-shm`` (shared memory that SQLite rebuilds from the WAL)."""
        shutil.rmtree(into, ignore_errors=True)
        into.mkdir(parents=True)
        for path, content in self.durable.items():
            name = Path(path).name
            if name.startswith(keep) and not name.endswith("-shm"):
                (into / name).write_bytes(content)


def replay(log: Path, markers_name: str = "markers") -> Iterator[Cut]:
    """Yield a Cut just before every fsync (of a file or a directory), and one at the end.

    Model (pessimistic, like LazyFS): after a cut, a file holds exactly what it held at its own
    last fsync, and a name (a creation, a rename, an unlink) survives only if its directory was
    fsynced after it; a name made durable before its file was ever fsynced gives an empty file.
    The -shm file is never kept (``Cut.materialize`` callers leave it out): SQLite rebuilds it
    from the WAL, as after a real crash.
    """
    names: dict[str, int] = {}          # current name -> inode
    durable_names: dict[str, int] = {}  # name -> inode as of its directory's last fsync
    content: dict[int, bytearray] = {}
    synced: dict[int, bytes] = {}
    markers: list[str] = []
    index = 0
    inodes = iter(range(1, 1 << 62))

    def inode_of(path: str) -> int:
        if path not in names:  # a file that existed before tracing: its name is durable
            names[path] = durable_names[path] = next(inodes)
            content[names[path]] = bytearray()
        return names[path]

    def cut() -> Cut:
        return Cut(index, {name: synced.get(ino, b"") for name, ino in durable_names.items()}, list(markers))

    for rec in read_log(log):
        if rec.op == "W":
            buf = content[inode_of(rec.path)]
            end = rec.arg + len(rec.data)
            if len(buf) < end:
                buf.extend(bytes(end - len(buf)))
            buf[rec.arg:end] = rec.data
            if Path(rec.path).name == markers_name:
                # The shim logs the marker file too; a marker is "returned before", never durable state.
                markers.extend(line for line in rec.data.decode().splitlines() if line)
        elif rec.op == "T":
            buf = content[inode_of(rec.path)]
            del buf[rec.arg:]
            buf.extend(bytes(max(0, rec.arg - len(buf))))
        elif rec.op == "C":
            names[rec.path] = next(inodes)
            content[names[rec.path]] = bytearray()
        elif rec.op == "U":
            names.pop(rec.path, None)
        elif rec.op == "R":
            old, new = rec.path.split("\0")
            if old in names:
                names[new] = names.pop(old)
        elif rec.op == "S":
            # The cut just before this fsync: everything returned so far, nothing new durable yet.
            # (A cut just after it is no worse: the same files minus this one's pending writes.)
            index += 1
            yield cut()
            if rec.path in names:
                synced[names[rec.path]] = bytes(content[names[rec.path]])
            else:  # a directory: its entries as they are now become durable
                directory = rec.path.rstrip("/")
                durable_names = {n: i for n, i in durable_names.items() if os.path.dirname(n) != directory}
                durable_names.update({n: i for n, i in names.items() if os.path.dirname(n) == directory})
    index += 1
    yield cut()

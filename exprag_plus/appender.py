"""The one way a record reaches a run file: a whole line, one `write`, on an O_APPEND descriptor.

Two kinds of writers share it: the `Experiment` that owns a run (a `LineWriter` it keeps open) and the
writers after the fact (`append_record`: notes, tags, action runs, a joined or resumed run). A short
write (disk full, a file size limit) leaves a torn line; the next line then starts with a newline, so
the torn part is one corrupt line the reader skips and never glues to a whole record.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from typing import Any, Dict, Iterator, Optional, Tuple

from . import files, ids, records, store

_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


def encode_line(record: Dict[str, Any]) -> bytes:
    """One record as one strict UTF-8 JSON line."""
    return (records.encode(record) + "\n").encode("utf-8", "surrogatepass")


class LineWriter:
    """Whole lines on one append-only descriptor; `torn` says the file may end mid-line."""

    __slots__ = ("fd", "torn", "written")

    def __init__(self, fd: int, torn: bool = False) -> None:
        self.fd = fd
        self.torn = torn
        self.written = 0

    @classmethod
    def open(cls, path: str, create: bool = False) -> "LineWriter":
        flags = os.O_RDWR | os.O_APPEND | _O_CLOEXEC | (os.O_CREAT | os.O_EXCL if create else 0)
        fd = files.open_fd(path, flags)
        return cls(fd, torn=False if create else not _ends_with_newline(fd))

    def write(self, line: bytes) -> None:
        """Write the line whole or raise OSError; a partial write marks the file torn for the next line."""
        data = b"\n" + line if self.torn else line
        view = memoryview(data)
        done = 0
        try:
            while done < len(data):
                n = os.write(self.fd, view[done:])
                self.written += n
                if n <= 0:
                    raise OSError(28, "no space written")
                done += n
        except BaseException:
            if done:
                self.torn = True
            raise
        self.torn = False

    def close(self, sync: bool = True) -> None:
        fd, self.fd = self.fd, -1
        if fd < 0:
            return
        try:
            if sync:
                os.fsync(fd)
        finally:
            os.close(fd)


def _ends_with_newline(fd: int) -> bool:
    size = os.fstat(fd).st_size
    return size == 0 or os.pread(fd, 1, size - 1) == b"\n"


def _lock(fd: int) -> None:
    try:
        import fcntl

        fcntl.flock(fd, fcntl.LOCK_EX)
    except (ImportError, OSError):
        pass


def tail_position(path: str) -> Tuple[Optional[Dict[str, Any]], int]:
    """run_start and the seq of the file's last record: where an after-the-fact record continues."""
    return store.start_and_last_seq(path)


def append_record(path: str, rtype: str, fields: Dict[str, Any], *, pid: Optional[int] = None) -> Dict[str, Any]:
    """Append one record after the fact and return it.

    `seq` continues from the file's last record and `elapsed_ms` counts from run_start's time, so readers
    see one ordered history; `pid` says which process wrote it. An exclusive lock keeps two such writers
    from taking the same seq; the line is fsynced before this returns.
    """
    fd = files.open_fd(path, os.O_RDWR | os.O_APPEND | _O_CLOEXEC)
    try:
        _lock(fd)
        start, last_seq = tail_position(path)
        run_id = (start or {}).get("run_id") or os.path.basename(path)[: -len(ids.SUFFIX)]
        started = records.parse_time(str((start or {}).get("time", "")))
        record: Dict[str, Any] = {
            "type": rtype, "run_id": run_id, "seq": last_seq + 1, "time": records.Clock().now(),
            "elapsed_ms": round((time.time() - started) * 1000.0, 3) if started is not None else None,
            "pid": os.getpid() if pid is None else pid,
        }
        record.update(fields)
        LineWriter(fd, torn=not _ends_with_newline(fd)).write(encode_line(record))
        os.fsync(fd)
        return record
    finally:
        os.close(fd)


class NewRunRefused(RuntimeError):
    """Starting a run is refused here (importing an action's module must not start the script's run)."""


_guard = threading.local()


@contextlib.contextmanager
def refusing_new_runs(reason: str) -> Iterator[None]:
    """While active on this thread, `Experiment(...)` raises NewRunRefused with `reason`."""
    previous = getattr(_guard, "reason", None)
    _guard.reason = reason
    try:
        yield
    finally:
        _guard.reason = previous


def new_run_guard() -> None:
    reason = getattr(_guard, "reason", None)
    if reason:
        raise NewRunRefused(reason)

"""Writing the files users keep (plots, reports, skills, client configs): all or nothing.

A reader, an editor or a crash never sees half a file: the text goes to a temporary file beside the
target, which then replaces it. An existing file keeps its permissions; a new one gets the umask's.
A target that is no regular file (`-o /dev/null`, `-o /dev/stdout`, a named pipe) is written into, never
replaced: replacing /dev/null as root would put a regular file in its place for every program.
"""

from __future__ import annotations

import os
import stat
from typing import Union


def open_fd(path: str, flags: int, mode: int = 0o644) -> int:
    """os.open, but never onto fd 0, 1 or 2: in a process started with stdout closed, the file would
    take its place and every print would land in it (a run's records were corrupted so)."""
    fd = os.open(path, flags, mode)
    if fd > 2:
        return fd
    try:
        import fcntl

        high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC if flags & getattr(os, "O_CLOEXEC", 0) else fcntl.F_DUPFD, 3)
    finally:
        os.close(fd)
    return high


def write_atomic(path: str, text: Union[str, bytes]) -> str:
    """Write `text` (UTF-8, newlines as given; bytes as they are) to `path`, creating parent folders;
    returns the real path (for a device or pipe, `path` as given)."""
    import tempfile  # here: listing commands import this module and rarely write
    data = text.encode("utf-8") if isinstance(text, str) else text
    path = os.path.expanduser(path)
    try:
        kind = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        kind = stat.S_IFREG
    if (not stat.S_ISREG(kind) and not stat.S_ISDIR(kind)) or path.startswith("/dev/"):
        with open(path, "wb") as out:
            out.write(data)
        return path
    real = os.path.realpath(path)
    folder = os.path.dirname(real)
    os.makedirs(folder, exist_ok=True)
    try:
        mode = os.stat(real).st_mode & 0o7777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    fd, tmp = tempfile.mkstemp(prefix=".exprag-plus-", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, mode)
        os.replace(tmp, real)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return real

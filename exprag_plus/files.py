"""Writing the files users keep (plots, reports, skills, client configs): all or nothing.

A reader, an editor or a crash never sees half a file: the text goes to a temporary file beside the
target, which then replaces it. An existing file keeps its permissions; a new one gets the umask's.
"""

from __future__ import annotations

import os
import tempfile


def write_atomic(path: str, text: "str | bytes") -> str:
    """Write `text` (UTF-8, newlines as given; bytes as they are) to `path`, creating parent folders;
    returns the real path."""
    real = os.path.realpath(os.path.expanduser(path))
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
            f.write(text if isinstance(text, bytes) else text.encode("utf-8"))
        os.chmod(tmp, mode)
        os.replace(tmp, real)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return real

"""Artifacts: the files a run wrote (checkpoints, predictions, plots), and whether they are still there.

Writing side: `describe` computes an `artifact` record's fields for one file (the sha256 only up to a
size limit, so a 10 GB checkpoint is never read a second time: its size and mtime identify it), and
`Scan` finds the files a wrapped command created or modified under its working folder.

Reading side: `listing` reports every recorded artifact with its status against the filesystem now:
`ok` (same size and mtime, or same sha256), `changed`, `missing`. A file that has since changed or
vanished is always reported as such. This module imports only the reader, never the writer.
"""

from __future__ import annotations

import gc
import os
import struct
import time
from stat import S_ISDIR as _S_ISDIR
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from . import store

HASH_LIMIT = 256 * 1024 * 1024
MAX_RECORDED = 1000
KINDS = ("model", "data", "figure", "log", "other")
STATUSES = ("ok", "changed", "missing")
_EXTENSIONS = {
    "model": (".pt", ".pth", ".ckpt", ".safetensors", ".bin", ".h5", ".keras", ".onnx", ".pkl", ".joblib",
              ".gguf"),
    "data": (".csv", ".parquet", ".jsonl", ".npy", ".npz", ".arrow", ".tfrecord"),
    "figure": (".png", ".jpg", ".svg", ".pdf"),
    "log": (".log", ".txt"),
}
KIND_OF = {ext: kind for kind, exts in _EXTENSIONS.items() for ext in exts}
# Folders no command's results live in: version control, caches and environments.
EXCLUDED_DIRS = frozenset({".git", "__pycache__", ".venv", "venv", "node_modules", ".mypy_cache", ".pytest_cache",
                           ".ruff_cache"})
_CHUNK = 1 << 20


def guess_kind(path: str) -> str:
    return KIND_OF.get(os.path.splitext(path)[1].lower(), "other")


def iso_time(ns: int) -> str:
    """A file time as records write times: ISO-8601 UTC with microseconds."""
    sec, rest = divmod(int(ns), 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)) + ".%06dZ" % (rest // 1000)


def sha256(path: str) -> str:
    import hashlib  # loads OpenSSL: only when a file is hashed

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def shown_path(path: str, toplevel: Optional[str]) -> str:
    """Relative to the git top level when the file is inside it, else absolute."""
    full = os.path.abspath(path)
    if toplevel:
        top = os.path.abspath(toplevel)
        for a, b in ((full, top), (os.path.realpath(full), os.path.realpath(top))):
            if a.startswith(b.rstrip(os.sep) + os.sep):
                return os.path.relpath(a, b)
    return full


def describe(path: str, *, kind: Optional[str] = None, note: Optional[str] = None, hash_limit: int = HASH_LIMIT,
             toplevel: Optional[str] = None, st: Optional[os.stat_result] = None) -> Dict[str, Any]:
    """An artifact record's fields for one file; OSError when it cannot be read (missing, a folder...)."""
    st = os.stat(path) if st is None else st
    if not os.path.isfile(path):
        raise IsADirectoryError(21, "not a regular file", path)
    hashed = st.st_size <= hash_limit
    digest = sha256(path) if hashed else None
    if hashed:
        after = os.stat(path)
        if (after.st_size, after.st_mtime_ns) != (st.st_size, st.st_mtime_ns):  # written while hashed
            st, digest = after, None
            hashed = False
    return {"path": shown_path(path, toplevel), "bytes": st.st_size, "mtime": iso_time(st.st_mtime_ns),
            "sha256": digest, "hashed": hashed, "kind": str(kind) if kind else guess_kind(path),
            "note": None if note is None else str(note)}


# --- finding what a command wrote ----------------------------------------------------------------------


def _walk(top: str, skip: Sequence[str], stat: bool, dirs: Optional[List[str]] = None) -> Dict[str, Any]:
    """path -> (inode, ctime_ns, size, mtime_ns) with `stat`, else path -> inode (free from the entry);
    the folders walked are appended to `dirs` when given.

    os.scandir recursion; folders are told apart by the entry's type (no stat), symlinked folders are
    not followed, unreadable folders are passed over. The garbage collector waits meanwhile: tens of
    thousands of fresh tuples would make it scan them again and again."""
    paused = gc.isenabled()
    gc.disable()
    try:
        return _walk_into({}, top, skip, stat, dirs)
    finally:
        if paused:
            gc.enable()


def _walk_into(out: Dict[str, Any], top: str, skip: Sequence[str], stat: bool,
               dirs: Optional[List[str]] = None) -> Dict[str, Any]:
    skipped = set(skip)
    stack = [top]
    excluded = EXCLUDED_DIRS
    while stack:
        folder = stack.pop()
        try:
            it = os.scandir(folder)
        except OSError:
            continue
        if dirs is not None:
            dirs.append(folder)
        with it:
            for e in it:
                try:
                    if e.is_dir(follow_symlinks=False):
                        if e.name not in excluded and e.path not in skipped:
                            stack.append(e.path)
                    elif stat:
                        s = e.stat(follow_symlinks=False)
                        out[e.path] = (e.inode(), s.st_ctime_ns, s.st_size, s.st_mtime_ns)
                    else:
                        out[e.path] = e.inode()
                except OSError:
                    continue
    return out


def walk_files(folder: str) -> List[str]:
    """Every file under a folder (caches and environments left out)."""
    return list(_walk(os.path.abspath(folder), (), False))


# inotify (Linux): <sys/inotify.h>
_IN_MODIFY, _IN_ATTRIB, _IN_CLOSE_WRITE = 0x2, 0x4, 0x8
_IN_MOVED_TO, _IN_CREATE, _IN_Q_OVERFLOW, _IN_ISDIR = 0x80, 0x100, 0x4000, 0x40000000
_IN_NONBLOCK, _IN_CLOEXEC = 0o4000, 0o2000000
_WATCH_MASK = _IN_MODIFY | _IN_ATTRIB | _IN_CLOSE_WRITE | _IN_MOVED_TO | _IN_CREATE
# Under this many files a full stat pass costs less than loading ctypes and placing the watches.
WATCH_FROM = 2000


class _Watch:
    """Which names in the listed folders saw a write, a change of attributes, a creation or a rename in,
    from inotify watches placed before the command starts: afterwards only those names (and the folders
    created or moved in, walked whole) are stat'ed instead of every file. Any doubt (no inotify, a watch
    that cannot be placed, a queue overflow) makes `ok` false and the caller stats everything.

    inotify sees a write to a watched folder's file whatever process made it and even when the file was
    mmap'ed (IN_CLOSE_WRITE comes when the last writer lets go); what it cannot see is a write through a
    hard link living outside the watched folders."""

    def __init__(self, dirs: Sequence[str]) -> None:
        import ctypes

        self.ok = False
        self.files: "set[str]" = set()
        self.dirs: "set[str]" = set()
        self._paths: Dict[int, str] = {}
        self._fd = -1
        libc = ctypes.CDLL(None, use_errno=True)
        init, add = libc.inotify_init1, libc.inotify_add_watch
        init.argtypes, init.restype = [ctypes.c_int], ctypes.c_int
        add.argtypes, add.restype = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32], ctypes.c_int
        fd = init(_IN_NONBLOCK | _IN_CLOEXEC)
        if fd < 0:
            return
        self._fd = fd
        for d in dirs:
            wd = add(fd, os.fsencode(d), _WATCH_MASK)
            if wd < 0:
                self.close()
                return
            self._paths[wd] = d
        self.ok = True

    def fileno(self) -> int:
        return self._fd

    def drain(self) -> None:
        """Read the events queued so far (the command's loop calls this whenever the fd is readable)."""
        if self._fd < 0:
            return
        while True:
            try:
                data = os.read(self._fd, 1 << 16)
            except BlockingIOError:
                return
            except OSError:
                self.close()
                return
            if not data:
                return
            i, n = 0, len(data)
            paths, files, dirs = self._paths, self.files, self.dirs
            while i + 16 <= n:
                wd, mask, _cookie, size = _EVENT.unpack_from(data, i)
                name = data[i + 16:i + 16 + size].rstrip(b"\0")
                i += 16 + size
                if mask & _IN_Q_OVERFLOW:
                    self.close()
                    return
                folder = paths.get(wd)
                if folder is None or not name:
                    continue
                path = os.path.join(folder, os.fsdecode(name))
                if mask & _IN_ISDIR:
                    if mask & (_IN_CREATE | _IN_MOVED_TO):
                        dirs.add(path)
                else:
                    files.add(path)

    def close(self) -> None:
        if self._fd >= 0:
            try:
                os.close(self._fd)
            except OSError:
                pass
        self._fd = -1
        self.ok = False


_EVENT = struct.Struct("iIII")


class Scan:
    """The files created or modified under `top` between `start()` and `changed()`.

    `start()` lists names and inodes (no stat: the directory entries carry them) and marks the time with
    a file of the runs folder; afterwards a file is changed when it is new, has another inode (replaced by
    a rename) or its ctime is not older than the mark (ctime, which no tool can set back, unlike mtime).
    With many files, inotify watches on the listed folders (see `_Watch`) tell which few to stat
    afterwards; without them every file is stat'ed.
    When the runs folder lies on another filesystem (its clock granularity may differ) `start()` takes
    the full (size, mtime_ns, inode) of every file instead and the two snapshots are diffed.

    `start()` is `prepare()` (the listing and the watches: slow, may run in a thread while the code
    snapshot is taken, since neither writes under `top`) then `mark(marker)` (right before the command
    starts, and only after `prepare()` has returned).
    """

    def __init__(self, top: str, runs_root: str, marker: Optional[str] = None) -> None:
        self.top = os.path.abspath(top)
        self.marker = marker
        self.skip = [os.path.abspath(runs_root), os.path.realpath(runs_root)]
        self.before: Dict[str, Any] = {}
        self.mark_ns = 0
        self.watch: Optional[_Watch] = None
        try:
            self.full = os.stat(self.top).st_dev != os.stat(
                os.path.dirname(marker) if marker else runs_root).st_dev
        except OSError:
            self.full = True

    def start(self) -> None:
        self.prepare()
        self.mark()

    def prepare(self) -> None:
        if self.full:
            self.before = _walk(self.top, self.skip, True)
            return
        dirs: List[str] = []
        self.before = _walk(self.top, self.skip, False, dirs)
        if len(self.before) >= WATCH_FROM and hasattr(os, "O_NONBLOCK"):
            try:
                self.watch = _Watch(dirs)
            except (OSError, AttributeError, ImportError, ValueError):
                self.watch = None
            if self.watch is not None and not self.watch.ok:
                self.watch = None

    def mark(self, marker: Optional[str] = None) -> None:
        self.marker = marker or self.marker
        if self.full:
            return
        try:
            if not self.marker:
                raise OSError("no marker")
            os.utime(self.marker)
            self.mark_ns = os.stat(self.marker).st_ctime_ns
            if os.stat(os.path.dirname(self.marker)).st_dev != os.stat(self.top).st_dev:
                raise OSError("another filesystem")
        except OSError:
            self.close()
            self.full = True
            self.before = _walk(self.top, self.skip, True)

    def _after(self) -> Dict[str, Any]:
        watch, self.watch = self.watch, None
        if self.full or watch is None:
            if watch is not None:
                watch.close()
            return _walk(self.top, self.skip, True)
        watch.drain()
        ok = watch.ok
        watch.close()
        if not ok:
            return _walk(self.top, self.skip, True)
        after: Dict[str, Any] = {}
        walk = sorted(watch.dirs)
        for path in watch.files:
            try:
                s = os.lstat(path)
            except OSError:
                continue
            if _S_ISDIR(s.st_mode):
                walk.append(path)
            else:
                after[path] = (s.st_ino, s.st_ctime_ns, s.st_size, s.st_mtime_ns)
        skipped = set(self.skip)
        for folder in walk:
            if os.path.basename(folder) in EXCLUDED_DIRS or folder in skipped or os.path.islink(folder):
                continue
            _walk_into(after, folder, self.skip, True)
        return after

    def changed(self) -> List[Tuple[str, int, bool]]:
        """(path, size, created) of every created or modified file, in path order."""
        after = self._after()
        before, mark, full = self.before, self.mark_ns, self.full
        out = []
        for path, now in after.items():
            old = before.get(path)
            if old is None:
                out.append((path, now[2], True))
            elif (old != now) if full else (old != now[0] or now[1] >= mark):
                out.append((path, now[2], False))
        out.sort(key=lambda t: t[0])
        return out

    def close(self) -> None:
        if self.watch is not None:
            self.watch.close()
            self.watch = None


def choose(found: Sequence[Tuple[str, int, bool]], cap: int, top: str) -> Tuple[list, Dict[str, Any]]:
    """At most `cap` files (models first, then data, figures, other, logs; in path order within a kind),
    and what was left out: how many, and in which folders (the first folder under `top`)."""
    cap = cap if cap > 0 else len(found)
    rank = {"model": 0, "data": 1, "figure": 2, "other": 3, "log": 4}
    ordered = sorted(found, key=lambda t: (rank[guess_kind(t[0])], t[0]))
    kept, rest = ordered[:cap], ordered[cap:]
    info: Dict[str, Any] = {"found": len(found), "recorded": len(kept), "omitted": len(rest)}
    if rest:
        folders: Dict[str, int] = {}
        for path, _, _ in rest:
            rel = os.path.relpath(path, top)
            folder = rel.split(os.sep, 1)[0] if os.sep in rel else "."
            folders[folder] = folders.get(folder, 0) + 1
        info["omitted_folders"] = dict(sorted(folders.items(), key=lambda kv: -kv[1])[:20])
    return kept, info


# --- reading: what a run recorded, checked against the files now ----------------------------------------


def _base(run: store.Run) -> str:
    """Where a relative artifact path starts: the run's git top level when it is this project (its
    folder, or one of its worktrees), else the project the runs folder is in. A project copied or
    moved, or runs pulled from another machine, must not check the files of the place they came from."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(run.path)))
    top = (run.git or {}).get("toplevel")
    if not isinstance(top, str) or not os.path.isdir(top):
        return here
    if not os.path.exists(os.path.join(here, ".git")) or os.path.realpath(top) == os.path.realpath(here):
        return top  # (runs kept outside a repository: the recorded place is all there is)
    try:
        with open(os.path.join(top, ".git"), encoding="utf-8") as f:
            gitdir = f.read().strip()
    except OSError:  # a folder .git: another repository (a copy of this one, or another checkout)
        return here
    worktrees = os.path.realpath(os.path.join(here, ".git", "worktrees"))
    linked = gitdir.startswith("gitdir:") and os.path.realpath(gitdir[7:].strip()).startswith(worktrees + os.sep)
    return top if linked else here


def check(rec: Dict[str, Any], base: str) -> Dict[str, Any]:
    """The record's status against the file now, with the current size and mtime when it changed."""
    path = str(rec.get("path") or "")
    full = path if os.path.isabs(path) else os.path.join(base, path)
    try:
        st = os.stat(full)
    except OSError:
        return {"status": "missing", "location": full}
    if not os.path.isfile(full):
        return {"status": "missing", "location": full}
    now = {"bytes": st.st_size, "mtime": iso_time(st.st_mtime_ns)}
    if st.st_size == rec.get("bytes") and now["mtime"] == rec.get("mtime"):
        return {"status": "ok", "location": full}
    if st.st_size == rec.get("bytes") and isinstance(rec.get("sha256"), str):
        try:
            if sha256(full) == rec["sha256"]:
                return {"status": "ok", "location": full, "now": now}
        except OSError:
            pass
    return {"status": "changed", "location": full, "now": now}


def of_run(run: store.Run) -> List[Dict[str, Any]]:
    """A run's artifact records, one per path (the latest record of a path wins), in record order."""
    latest: Dict[str, Dict[str, Any]] = {}
    for rec in run.of_type("artifact"):
        if isinstance(rec.get("path"), str):
            latest.pop(rec["path"], None)
            latest[rec["path"]] = rec
    return list(latest.values())


def rows(run: store.Run, kind: Optional[str] = None) -> List[Dict[str, Any]]:
    base = _base(run)
    out = []
    for rec in of_run(run):
        if kind and rec.get("kind") != kind:
            continue
        row = {"run_id": run.run_id, "short_id": run.short_id, "run_name": run.name, "path": rec["path"],
               "kind": rec.get("kind"), "bytes": rec.get("bytes"), "mtime": rec.get("mtime"),
               "sha256": rec.get("sha256"), "hashed": rec.get("hashed"), "note": rec.get("note")}
        row.update(check(rec, base))
        out.append(row)
    return out


def scan_info(run: store.Run) -> Optional[Dict[str, Any]]:
    info = (run.end or {}).get("artifact_scan")
    return info if isinstance(info, dict) else None


def listing(runs: Iterable[store.Run], kind: Optional[str] = None) -> Dict[str, Any]:
    """Every artifact of these runs (newest run first), with its status now; `omitted` counts files a
    wrapped run found but did not record (over its cap)."""
    if kind is not None and kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; use one of {', '.join(KINDS)}")
    out: List[Dict[str, Any]] = []
    count = omitted = 0
    for run in sorted(runs, key=store.Run.order, reverse=True):
        count += 1
        out.extend(rows(run, kind))
        info = scan_info(run)
        if info and isinstance(info.get("omitted"), int):
            omitted += info["omitted"]
    totals = {s: sum(1 for r in out if r["status"] == s) for s in STATUSES}
    return {"runs": count, "artifacts": out, "counts": totals, "omitted": omitted}

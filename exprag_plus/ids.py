"""Run ids, the runs folder, and run references.

Ids are UUIDv7 so that file names sort by start time and folders from many machines merge by copy.
References are resolved only to files inside the runs folder: a run id is never a path to follow.
"""

from __future__ import annotations

import json
import os
import re
import time
TYPE_CHECKING = False  # typing costs start-up; annotations here are never evaluated
if TYPE_CHECKING:
    from typing import Dict, List, Optional, Tuple

from . import records
from .errors import RunNotFound

ENV_DIR = "EXPRAG_PLUS_DIR"
RUNS_DIRNAME = ".runs"
SUFFIX = ".jsonl"
_ID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
_REF_CHARS = re.compile(r"^[0-9a-fA-F-]+$")


def new_run_id() -> str:
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")  # what secrets.token_bytes does, without its import
    rand_a = rand >> 68 & 0xFFF
    rand_b = rand & ((1 << 62) - 1)
    n = (ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | rand_a << 64 | 0b10 << 62 | rand_b
    h = f"{n:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def is_run_id(text: str) -> bool:
    return bool(_ID_RE.match(text))


def short_id(run_id: str) -> str:
    """The random tail: ids started close together share their leading (time) digits."""
    return run_id.replace("-", "")[-8:]


def runs_dir(root: Optional[str] = None, cwd: Optional[str] = None) -> str:
    """The folder holding the .jsonl files: explicit root, else $EXPRAG_PLUS_DIR, else <git top>/.runs."""
    if root:
        return os.path.abspath(os.path.expanduser(os.fspath(root)))
    env = os.environ.get(ENV_DIR)
    if env:
        return os.path.abspath(os.path.expanduser(env))
    cwd = cwd or os.getcwd()
    from . import git  # only here: listing with --root or $EXPRAG_PLUS_DIR never loads the git module
    main = git.main_worktree(cwd)
    folder = os.path.join(main or cwd, RUNS_DIRNAME)
    if main:
        _SHARED[folder] = main
    return folder


# The default runs folder of a repository -> its main worktree. Runs recorded before the folder moved
# to the main worktree live in `<linked worktree>/.runs`: listings and references still read them.
_SHARED: Dict[str, str] = {}
_LINKED: Dict[str, List[str]] = {}


def linked_runs_dirs(root: str) -> List[str]:
    """The `.runs` folders of the other worktrees, when `root` is a repository's default runs folder."""
    main = _SHARED.get(root)
    if main is None:
        return []
    if root not in _LINKED:
        from . import git
        found = []
        try:
            listed = git.worktrees(main)
        except git.GitError:
            listed = []
        for wt in listed:
            folder = os.path.join(wt["path"], RUNS_DIRNAME)
            if wt["path"] and not wt.get("bare") and os.path.realpath(folder) != os.path.realpath(root) and os.path.isdir(folder):
                found.append(folder)
        _LINKED[root] = found
    return _LINKED[root]


def ensure_runs_dir(path: str) -> None:
    """Create the folder with a `.gitignore` of `*`, so runs never dirty the tree nor enter a snapshot.

    Raises PermissionError with a message saying what to do when the folder cannot be written.
    """
    try:
        os.makedirs(path, exist_ok=True)
        if not os.access(path, os.W_OK | os.X_OK):
            raise PermissionError(13, "permission denied")
        ignore = os.path.join(path, ".gitignore")
        if not os.path.exists(ignore):
            try:
                with open(ignore, "x", encoding="utf-8") as f:
                    f.write("# written by exprag-plus: run files stay out of git\n*\n")
            except FileExistsError:
                pass
    except OSError as exc:
        raise PermissionError(f"exprag-plus: cannot write run files in {path} ({exc.strerror or exc}); choose "
                              "another folder with Experiment(root=...), --root or $EXPRAG_PLUS_DIR") from None


def run_files(root: str) -> List[str]:
    """Run file paths sorted by name (the id's start time; `by_start` orders by run_start); a symlink
    leading out of the folder is not a run.

    For a repository's default runs folder this includes the old `.runs` folders of its linked
    worktrees (a run id present in both is read from `root`)."""
    by_name: Dict[str, str] = {}
    for folder in linked_runs_dirs(root)[::-1] + [root]:
        by_name.update((n, os.path.join(folder, n)) for n in run_names(folder))
    return [by_name[n] for n in sorted(by_name)]


def run_names(folder: str) -> List[str]:
    """The names of the folder's own run files, unsorted (see `run_files`)."""
    try:
        entries = [e for e in os.scandir(folder) if e.name.endswith(SUFFIX) and e.is_file()]
    except (FileNotFoundError, NotADirectoryError):
        return []
    if any(e.is_symlink() for e in entries):
        real_root = os.path.realpath(folder)
        entries = [e for e in entries if not e.is_symlink() or os.path.dirname(os.path.realpath(e.path)) == real_root]
    return [e.name for e in entries]


def id_time(run_id: str) -> Optional[float]:
    """The start time (epoch seconds) a UUIDv7 id carries, or None."""
    if not is_run_id(run_id):
        return None
    return int(run_id.replace("-", "")[:12], 16) / 1000.0


def order_key(path: str, start_time: Optional[str], mtime: Optional[float] = None) -> Tuple[float, float, str]:
    """Runs in start order: run_start's time, else the id's time, else the file time; then file time, id.

    An id is only as right as the clock that made it (a clock stepped back makes an older-looking id).
    `mtime` is the file's, when the caller has just read it.
    """
    if mtime is None:
        try:
            mtime = os.stat(path).st_mtime
        except OSError:
            mtime = 0.0
    name = os.path.basename(path)[: -len(SUFFIX)]
    t = records.parse_time(start_time) if isinstance(start_time, str) else None
    if t is None:
        t = id_time(name)
    return (mtime if t is None else t, mtime, name)


_HEAD = 64 * 1024
_TIME = re.compile(rb'"time"\s*:\s*"([^"]{1,64})"')


def _start_time(path: str) -> Optional[str]:
    """run_start's `time`, from at most the first 64 KB of the file."""
    try:
        with open(path, "rb") as f:
            head = f.readline(_HEAD)
    except OSError:
        return None
    if head.endswith(b"\n"):
        try:
            rec = json.loads(head)
            t = rec.get("time") if isinstance(rec, dict) and rec.get("type") == "run_start" else None
            return t if isinstance(t, str) else None
        except (ValueError, RecursionError):
            return None
    m = _TIME.search(head)  # a first line too long to parse here: its first `time`
    return m[1].decode("ascii", "replace") if m and b'"run_start"' in head[:m.start()] else None


def by_start(files: List[str]) -> List[str]:
    """Run files oldest first (see `order_key`)."""
    return sorted(files, key=lambda p: order_key(p, _start_time(p)))


def resolve(ref: str, root: str) -> str:
    """The file of a run reference: full id, unique prefix, unique suffix (>= 6), latest, latest~N, or a path.

    Raises RunNotFound (ValueError-like message) for anything unknown, ambiguous or outside `root`.
    """
    ref = (ref or "").strip()
    if not ref:
        raise RunNotFound("empty run reference: give a run id, a unique prefix, 'latest' or 'latest~N'")
    if ref.endswith(SUFFIX) and os.sep not in ref and "/" not in ref:
        ref = ref[: -len(SUFFIX)]  # a file name as `ls .runs` prints it: the run of that id in the runs folder
    if os.sep in ref or "/" in ref:
        allowed = {os.path.realpath(f) for f in [root] + linked_runs_dirs(root)}
        real = os.path.realpath(ref if os.path.isabs(ref) else os.path.join(os.getcwd(), ref))
        if os.path.dirname(real) not in allowed or not real.endswith(SUFFIX):
            raise RunNotFound(f"{ref!r} is not a run file inside the runs folder {root}: runs are read only from there")
        if not os.path.isfile(real):
            raise RunNotFound(f"no run file {ref!r}")
        return real
    files = run_files(root)
    if ref == "latest" or ref.startswith("latest~"):
        n_text = ref[len("latest~"):] if ref != "latest" else "0"
        if not n_text.isdigit():
            raise RunNotFound(f"bad run reference {ref!r}: use 'latest' or 'latest~N' with N a whole number")
        n = int(n_text)
        if n >= len(files):
            raise RunNotFound(f"{ref!r}: there are only {len(files)} runs in {root}")
        return by_start(files)[-1 - n]
    if not _REF_CHARS.match(ref):
        raise RunNotFound(f"bad run reference {ref!r}: use a run id (or unique part of one), 'latest' or 'latest~N'")
    key = ref.lower()
    ids = [os.path.basename(f)[: -len(SUFFIX)] for f in files]
    exact = [i for i, rid in enumerate(ids) if rid == key]
    if exact:
        return files[exact[0]]
    compact = key.replace("-", "")
    hits = [i for i, rid in enumerate(ids) if rid.startswith(key) or rid.replace("-", "").startswith(compact)]
    if not hits and len(compact) >= 6:
        hits = [i for i, rid in enumerate(ids) if rid.replace("-", "").endswith(compact)]
    if len(hits) == 1:
        return files[hits[0]]
    if not hits:
        raise RunNotFound(f"no run matches {ref!r} in {root} (see `exprag-plus runs`; a run recorded elsewhere "
                          "arrives with `exprag-plus pull`)")
    shown = ", ".join(short_id(ids[i]) for i in hits[:5])
    raise RunNotFound(f"{ref!r} matches {len(hits)} runs ({shown}{', ...' if len(hits) > 5 else ''}): give more characters")

"""The listing cache: one file in the runs folder that only saves re-reading unchanged run files.

Each entry is keyed by its run file's identity (name, size, mtime_ns, inode): a run appended to, copied in
or replaced no longer matches and is read again. The file is replaced atomically, so a reader sees one
whole version; two writers racing just leave one of their files. A missing, truncated or corrupt cache is
rebuilt silently (a CRC guards the whole file), and a run whose reading warned is never cached, so the
warning comes again. Status is never cached: an unfinished run's status depends on its process now.

Line format (bytes, tab-separated; raw JSON lines never hold a tab, else they are re-encoded):
KEY, start time and mtime, started (JSON), flags, summary (JSON, runs without run_end only), notes and
tags (JSON), run_start line, tail lines.
"""

from __future__ import annotations

import gc
import json
import os
import warnings
import zlib
from typing import Dict, List, Optional

from . import ids
from .files import write_atomic
from .store import CorruptLineWarning, Run, _head_and_tail, scan_end, summarize

NAME = ".index"
_HEADER = b"exprag-plus-index/3\n"
_NO_END = b"n"
_SCANNED = b"s"  # run_end found by reading the whole file: what follows it is not in the entry


def _key(name: str, st: os.stat_result) -> bytes:
    return b"%s|%d|%d|%d" % (name.encode("utf-8", "surrogateescape"), st.st_size, st.st_mtime_ns, st.st_ino)


def read_cache(folder: str) -> Dict[bytes, List[bytes]]:
    """KEY -> fields; empty when the file is missing, of another version, or fails its CRC."""
    try:
        with open(os.path.join(folder, NAME), "rb") as f:
            data = f.read()
    except OSError:
        return {}
    cut = data.rfind(b"\n", 0, len(data) - 1)
    if not data.startswith(_HEADER) or cut < 0 or not data.endswith(b"\n"):
        return {}
    body, trailer = data[:cut + 1], data[cut + 1:-1]
    if trailer != b"%08x" % zlib.crc32(body):
        return {}
    out = {}
    for line in body[len(_HEADER):].split(b"\n"):
        fields = line.split(b"\t")
        if len(fields) >= 7:
            out[fields[0]] = fields
    return out


def _clean(raw: bytes, rec: object) -> bytes:
    return raw if b"\t" not in raw else json.dumps(rec).encode("ascii")


def _entry(key: bytes, run: Run, start_raw: bytes, tail: List[dict], tail_raw: List[bytes],
           complete: bool) -> List[bytes]:
    """The cache fields of a run just read (and the run completed as its status would complete it)."""
    flags, summary = b"", b""
    ends = [i for i, r in enumerate(tail) if r.get("type") == "run_end"]
    if ends:
        keep = [_clean(r, rec) for r, rec in zip(tail_raw[ends[-1]:], tail[ends[-1]:])]
    elif complete:
        run._no_end = True
        run._summary = summarize(tail)
        keep, flags = [], _NO_END
    else:
        end, summ = scan_end(run.path)
        if end is not None:
            run._set_end(end)
            run._tail_end = False
            keep, flags = [json.dumps(end).encode("ascii")], _SCANNED
        else:
            run._no_end, run._summary = True, summ
            keep, flags = [], _NO_END
    if flags == _NO_END:
        summary = json.dumps(run._summary).encode("ascii")
    memo = run._memory()
    return [key, b"%r %r" % run.order()[:2], json.dumps(run.started).encode("ascii"), flags, summary,
            json.dumps(memo).encode("ascii") if memo else b"", _clean(start_raw, run.start) if start_raw else b""] + keep


def _cached(path: str, name: str, fields: List[bytes]) -> Run:
    started = fields[2]
    text = started[1:-1].decode("ascii", "replace") if b"\\" not in started else json.loads(started)
    t, mtime = fields[1].split(b" ")
    summary = json.loads(fields[4]) if fields[4] else None
    return Run.cached(path, (float(t), float(mtime), name[:-len(ids.SUFFIX)]), text, fields[6], fields[7:], summary,
                      fields[3] == _NO_END, fields[3] == _SCANNED, fields[5])


def load_runs(root: Optional[str] = None) -> List[Run]:
    """Every run of the folder, oldest first (by run_start time, see `ids.order_key`), read lightly (first
    line and tail of each file, or the cache's copy of them)."""
    return load(ids.runs_dir(root))


def load(folder: str, use_cache: bool = True) -> List[Run]:
    """Every run of the folder, oldest first, from the cache where a file is unchanged (see module doc)."""
    enabled = gc.isenabled()
    gc.disable()  # listing builds many small objects and frees none: collecting would only cost time
    try:
        return _load(folder, use_cache)
    finally:
        if enabled:
            gc.enable()


def _load(folder: str, use_cache: bool) -> List[Run]:
    paths = ids.run_files(folder)
    cache = read_cache(folder) if use_cache else {}
    out: List[Run] = []
    fresh: List[List[bytes]] = []
    changed = False
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        prefix = os.path.join(folder, "")
        cut = len(prefix)
        for path in paths:
            name = path[cut:]
            here = path.startswith(prefix) and os.sep not in name  # else a linked worktree's old folder
            try:
                st = os.stat(path)
            except OSError as exc:
                warnings.warn(f"{path}: unreadable ({exc.strerror or exc})", CorruptLineWarning)
                continue
            key = _key(name, st)
            fields = cache.get(key) if here else None
            if fields is not None:
                out.append(_cached(path, name, fields))
                fresh.append(fields)
                continue
            changed = changed or here
            before = len(caught)
            raw: List[bytes] = []
            data: List[bytes] = []
            try:
                start, tail, complete = _head_and_tail(path, raw, data)
                run = Run(path, start, tail, tail if complete else None)
                if data and run._records is None:
                    run._memo_data = data[0]
                run._mtime = st.st_mtime
                entry = _entry(key, run, raw[0] if raw else b"", tail, raw[1:], complete)
            except OSError as exc:
                warnings.warn(f"{path}: unreadable ({exc.strerror or exc})", CorruptLineWarning)
                continue
            out.append(run)
            if here and len(caught) == before and b"\n" not in key and b"\t" not in key:
                fresh.append(entry)
    for w in caught:
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if use_cache and (changed or len(fresh) != len(cache)):
        _write(folder, fresh)
    out.sort(key=Run.order)
    return out


def _write(folder: str, entries: List[List[bytes]]) -> None:
    body = _HEADER + b"".join(b"\t".join(e) + b"\n" for e in entries)
    try:
        write_atomic(os.path.join(folder, NAME), body + b"%08x\n" % zlib.crc32(body))
    except OSError:
        pass  # a read-only folder lists from the files every time

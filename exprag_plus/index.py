"""The listing cache: one file in the runs folder that only saves re-reading unchanged run files.

Each entry is keyed by its run file's identity (name, size, mtime_ns, inode): a run appended to, copied in
or replaced no longer matches and is read again. The file is replaced atomically, so a reader sees one
whole version; two writers racing just leave one of their files. A missing, truncated or corrupt cache is
rebuilt silently, and a run whose reading warned is never cached, so the warning comes again. An
unfinished run's status is never cached: it depends on its process now.

Layout: a header line (version, the index's length and CRC); the index, as columns so that loading is a
few splits, not a loop: the KEYs, the start times, the file times (one line per run each), then per run
what the listing commands read, precomputed (see `store.Run.cached`); then the blobs (each run's
run_start line and tail lines), read one at a time, only for a run whose other fields a command asks
for. A blob that fails its CRC (the file was replaced meanwhile) is read from the run file itself.
"""

from __future__ import annotations

import gc
import json
import os
import warnings
import zlib
from json.encoder import c_make_encoder, encode_basestring_ascii  # type: ignore[attr-defined]
from typing import Dict, List, Optional, Tuple

from . import ids
from .files import write_atomic
from .store import CorruptLineWarning, Run, _head_and_tail, scan_end, summarize

NAME = ".index"
_MAGIC = b"exprag-plus-index/8 "
_NO_END = b"n"
_SCANNED = b"s"  # run_end found by reading the whole file: what follows it is not in the entry
_NESTED = b"!"  # the summary holds a list or object value: no decoding of one entry alone
_COLUMNS = 4  # of the listing section: KEY, time, file time, fields (see `store.Run.cached`)
# KEY, time, file time, summary, key facts, fields, blob
Entry = Tuple[bytes, bytes, bytes, bytes, bytes, bytes, bytes]


def _key(name: str, st: os.stat_result) -> bytes:
    return b"%s|%d|%d|%d" % (name.encode("utf-8", "surrogateescape"), st.st_size, st.st_mtime_ns, st.st_ino)


class _Source:
    """The cache file version the index came from, held open (a writer replacing the file meanwhile does
    not change it): the summaries and key facts sections, read and split when first asked for, and each
    run's raw lines, read one at a time; what fails its CRC (damaged in place) comes from the run file."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.sections: List[Tuple[int, int, bytes]] = []  # (offset, length, crc): listing, summaries, facts, blobs
        self.loaded: Dict[int, Optional[List[bytes]]] = {}

    def __del__(self) -> None:
        os.close(self.fd)

    def section(self, k: int) -> Optional[bytes]:
        off, size, crc = self.sections[k]
        try:
            data = os.pread(self.fd, size, off)
        except OSError:
            return None
        return data if len(data) == size and b"%08x" % zlib.crc32(data) == crc else None

    def column(self, k: int, row: int) -> Optional[bytes]:
        if k not in self.loaded:
            data = self.section(k)
            self.loaded[k] = None if data is None else data.split(b"\n")
        col = self.loaded[k]
        return None if col is None or row >= len(col) else col[row]

    def read(self, ref: bytes) -> Optional[List[bytes]]:
        try:
            off, size, crc = ref.split(b" ")
            data = os.pread(self.fd, int(size), self.sections[3][0] + int(off))
        except (OSError, ValueError):
            return None
        if b"%08x" % zlib.crc32(data) != crc:
            return None
        return data.split(b"\t")

    def lines(self, ref: bytes, path: str) -> Tuple[bytes, List[bytes]]:
        parts = self.read(ref)
        if parts is None:
            raw: List[bytes] = []
            try:
                _head_and_tail(path, raw)
            except OSError:
                pass
            parts = raw or [b""]
        return parts[0], parts[1:]


def read_cache(folder: str) -> Tuple[Dict[bytes, int], List[List[bytes]], Optional[_Source]]:
    """(KEY -> row, the listing columns, the file for the rest); empty when the file is missing, of
    another version, or fails its CRC."""
    try:
        fd = os.open(os.path.join(folder, NAME), os.O_RDONLY)
    except OSError:
        return {}, [], None
    src = _Source(fd)  # closes the file when the last run listed from it is gone
    try:
        head = os.pread(fd, 400, 0)
        cut = head.find(b"\n")
        if not head.startswith(_MAGIC) or cut < 0:
            return {}, [], None
        nums = head[len(_MAGIC):cut].split(b" ")
        off = cut + 1
        for k in range(0, len(nums), 2):
            size = int(nums[k])
            src.sections.append((off, size, nums[k + 1]))
            off += size
        src.sections.append((off, 0, b""))
    except (OSError, ValueError, IndexError):
        return {}, [], None
    body = src.section(0) if len(src.sections) == 4 else None
    if not body:
        return {}, [], None
    columns = [c.split(b"\n") for c in body.split(b"\0")]
    n = len(columns[0])
    if len(columns) != _COLUMNS or any(len(c) != n for c in columns):
        return {}, [], None
    return dict(zip(columns[0], range(n))), columns, src


def _clean(raw: bytes, rec: object) -> bytes:
    return raw if b"\t" not in raw else json.dumps(rec).encode("ascii")


# json.dumps's own encoder, made once (json.dumps makes one per call: most of its cost on small values)
_encode = c_make_encoder(None, None, encode_basestring_ascii, None, ": ", ", ", False, False, True) \
    if c_make_encoder is not None else None


def _dumps(value: object) -> bytes:
    """json.dumps(value) as ASCII bytes (the data came from JSON: no cycles, nothing to convert)."""
    if type(value) is str:
        return encode_basestring_ascii(value).encode("ascii")
    if _encode is None:
        return json.dumps(value).encode("ascii")
    return "".join(_encode(value, 0)).encode("ascii")


def _entry(key: bytes, run: Run, start_raw: bytes, tail: List[dict], tail_raw: List[bytes],
           complete: bool) -> Entry:
    """The cache entry of a run just read (and completed as its status would complete it)."""
    from .query import key_facts

    flags = b""
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
    summary = _dumps(run.summary)
    if b"[" in summary or summary.count(b"{") != len(run.summary) + 1:  # (or a brace in a text: no harm)
        summary = _NESTED + summary
    memo = run._memory()
    status = _dumps(run.status) if run.end is not None else b""
    md = run.end.get("metadata") if run.end is not None else None
    md = md if isinstance(md, dict) else run.start.get("metadata")
    t, mtime = run.order()[:2]
    fields = b"\t".join([_dumps(run.started), flags, status, _dumps(run.run_id), _dumps(run.name),
                         _dumps(md) if isinstance(md, dict) and md else b"", _dumps(memo) if memo else b""])
    blob = b"\t".join([_clean(start_raw, run.start) if start_raw else b""] + keep)
    return key, b"%r" % t, b"%r" % mtime, summary, key_facts(run, _dumps), fields, blob


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
    rows, columns, src = read_cache(folder) if use_cache else ({}, [], None)
    if rows:
        fields = columns[3]
        times = list(map(float, columns[1]))
        mtimes = list(map(float, columns[2]))
    out: List[Run] = []
    kept: List[int] = []
    fresh: List[Entry] = []
    later: List[Tuple[int, bytes, str, os.stat_result]] = []
    defer = use_cache and os.access(folder, os.W_OK)
    changed = False
    stat, get, cached, keep = os.stat, rows.get, Run.cached, kept.append
    suffix = len(ids.SUFFIX)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        prefix = os.path.join(folder, "")
        cut = len(prefix)
        for path in paths:
            name = path[cut:]
            here = path.startswith(prefix) and os.sep not in name  # else a linked worktree's old folder
            try:
                st = stat(path)
            except OSError as exc:
                warnings.warn(f"{path}: unreadable ({exc.strerror or exc})", CorruptLineWarning)
                continue
            key = _key(name, st)
            i = get(key) if here else None
            if i is not None:
                out.append(cached(path, (times[i], mtimes[i], name[:-suffix]), fields[i], src, i))
                keep(i)
                continue
            changed = changed or here
            before = len(caught)
            try:
                run, entry = _read(path, st, key)
            except OSError as exc:
                warnings.warn(f"{path}: unreadable ({exc.strerror or exc})", CorruptLineWarning)
                continue
            if here and len(caught) == before and b"\n" not in key and b"\t" not in key and b"\0" not in key:
                fresh.append(entry)
                if defer:  # listed from the cache once written: a parsed run weighs ~10x its entry
                    later.append((len(out), key, path, st))
                    run = None  # type: ignore[assignment]
            out.append(run)
    for w in caught:
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if use_cache and (changed or len(kept) != len(rows)):
        _write(folder, kept, columns, src, fresh)
    if later:
        _from_new_cache(folder, out, later)
    out.sort(key=Run.order)
    return out


def _read(path: str, st: os.stat_result, key: bytes) -> Tuple[Run, Entry]:
    """A run read lightly from its file (first line and tail), and its cache entry."""
    raw: List[bytes] = []
    data: List[bytes] = []
    start, tail, complete = _head_and_tail(path, raw, data)
    run = Run(path, start, tail, tail if complete else None)
    if data and run._records is None:
        run._memo_data = data[0]
    run._mtime = st.st_mtime
    return run, _entry(key, run, raw[0] if raw else b"", tail, raw[1:], complete)


def _from_new_cache(folder: str, out: List[Run], later: List[Tuple[int, bytes, str, os.stat_result]]) -> None:
    """Fill `out`'s places of runs just read with their entries in the cache just written (or, when it
    could not be written or another process replaced it meanwhile, by reading the files again)."""
    rows, columns, src = read_cache(folder)
    suffix = len(ids.SUFFIX)
    for pos, key, path, st in later:
        i = rows.get(key)
        if i is not None:
            out[pos] = Run.cached(path, (float(columns[1][i]), float(columns[2][i]),
                                         os.path.basename(path)[:-suffix]), columns[3][i], src, i)
            continue
        try:
            out[pos] = _read(path, st, key)[0]
        except OSError as exc:
            warnings.warn(f"{path}: unreadable ({exc.strerror or exc})", CorruptLineWarning)
            out[pos] = None  # type: ignore[call-overload]
    out[:] = [r for r in out if r is not None]


def _write(folder: str, kept: List[int], columns: List[List[bytes]], src: Optional[_Source],
           fresh: List[Entry]) -> None:
    """One atomic write: the kept rows' parts come from the old file (each section read once, whole)."""
    entries: List[Entry] = []
    if kept and src is not None:
        summaries, facts = src.section(1), src.section(2)
        try:
            old = os.pread(src.fd, os.fstat(src.fd).st_size, src.sections[3][0])
        except OSError:
            old = None
        if summaries is not None and facts is not None and old is not None:
            summaries_l, facts_l = summaries.split(b"\n"), facts.split(b"\n")
            for i in kept:
                fields, _, ref = columns[3][i].rpartition(b"\t")
                off, size, crc = ref.split(b" ")
                blob = old[int(off):int(off) + int(size)]
                if b"%08x" % zlib.crc32(blob) == crc and i < len(summaries_l) and i < len(facts_l):
                    entries.append((columns[0][i], columns[1][i], columns[2][i], summaries_l[i], facts_l[i], fields, blob))
    entries += fresh
    cols: List[List[bytes]] = [[] for _ in range(_COLUMNS)]
    summary_col, facts_col, parts = [], [], []
    pos = 0
    for key, t, mtime, summary, facts_raw, fields, blob in entries:
        for col, value in zip(cols, (key, t, mtime, b"%s\t%d %d %08x" % (fields, pos, len(blob), zlib.crc32(blob)))):
            col.append(value)
        summary_col.append(summary)
        facts_col.append(facts_raw)
        parts.append(blob)
        pos += len(blob)
    sections = [b"\0".join(b"\n".join(c) for c in cols) if entries else b"", b"\n".join(summary_col),
                b"\n".join(facts_col)]
    head = _MAGIC + b" ".join(b"%d %08x" % (len(x), zlib.crc32(x)) for x in sections) + b"\n"
    try:
        write_atomic(os.path.join(folder, NAME), head + b"".join(sections) + b"".join(parts))
    except OSError:
        pass  # a read-only folder lists from the files every time

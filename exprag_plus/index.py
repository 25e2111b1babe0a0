"""The listing cache: one file in the runs folder that only saves re-reading unchanged run files.

Each entry is keyed by its run file's name and identity (size, mtime_ns, inode): a run appended to, copied in
or replaced no longer matches and is read again. The file is replaced atomically, so a reader sees one
whole version; two writers racing just leave one of their files. A missing, truncated or corrupt cache is
rebuilt silently, and a run whose reading warned is never cached, so the warning comes again. An
unfinished run's status is never cached: it depends on its process now.

Layout: a header line (version, each section's length and CRC), then sections whose rows are in listing
order (`store.Run.order`), so that loading is a split and two array reads, not a loop: the names (one
line per run); each run's size, mtime_ns and inode, then its start time and file time (little-endian
int64 and float64 arrays); then, one line per run each, what the listing commands read, precomputed
(see `store.Run.cached`): the fields, the summaries, the key facts; where each of those lines ends and
its CRC (so that printing 20 runs of 100,000 reads 20 lines, not the section); then the blobs (each
run's run_start line and tail lines), read one at a time, only for a run whose other fields a command
asks for. A blob that fails its CRC (damaged in place) is read from the run file itself.
"""

from __future__ import annotations

import array
import gc
import json
import os
import struct
import sys
import warnings
import zlib
from json.encoder import c_make_encoder, encode_basestring_ascii  # type: ignore[attr-defined]
from typing import Any, Callable, Dict, List, Optional, Tuple

from . import ids
from .files import write_atomic
from .store import _COLUMNS, _FIELDS, CorruptLineWarning, Run, _head_and_tail, scan_end, summarize

NAME = ".index"
_MAGIC = b"exprag-plus-index/12 "
_NO_END = b"n"
_SCANNED = b"s"  # run_end found by reading the whole file: what follows it is not in the entry
_CLEAN = b"c"  # its run_start passed `store._checked` whole: no need to check it again
_NESTED = b"!"  # the summary holds a list or object value: no decoding of one entry alone
_IDENTS = 1  # size, mtime_ns, inode (int64), then time, file time (float64), per run
_ROWS = (_FIELDS, _COLUMNS["_summary_raw"], _COLUMNS["_keys_raw"])  # read per line (`store.Run.cached`)
_ROW_INDEX = 5  # where each of their lines ends, and its CRC
_BLOBS = 6
_SPARSE = 64  # lines of a section read one by one; then the section is read whole
_END = struct.Struct("<QI")
_INT64 = 2**63
# name, (size, mtime_ns, inode), (time, file time), summary, key facts, fields, blob
Entry = Tuple[bytes, Tuple[int, int, int], Tuple[float, float], bytes, bytes, bytes, bytes]


def _array(kind: str, data: bytes) -> "array.array[Any]":
    a = array.array(kind, data)
    if sys.byteorder == "big":
        a.byteswap()
    return a


class _Source:
    """The cache file version the index came from, held open (a writer replacing the file meanwhile does
    not change it): its per-run sections, read a line at a time for a few runs and whole for many, and
    each run's raw lines, read one at a time; what fails its CRC (damaged in place) comes from the run file."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.rows = 0
        self.names: List[str] = []
        self.times: "array.array[float]" = array.array("d")
        self.sections: List[Tuple[int, int, bytes]] = []  # (offset, length, crc), as the header lists them
        self.loaded: Dict[int, Optional[List[bytes]]] = {}
        self.sparse: Dict[Any, int] = {}
        self.ends: Optional[bytes] = None
        self.whole: Dict[int, Optional[bytes]] = {}
        self.found: Dict[Any, Optional[Dict[int, Any]]] = {}

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
            n = self.sparse[k] = self.sparse.get(k, 0) + 1
            if n <= _SPARSE:
                return self._line(k, row)
        col = self.lines_of(k)
        return None if col is None or row >= len(col) else col[row]

    def lines_of(self, k: int) -> Optional[List[bytes]]:
        """Every line of a per-run section (None: damaged)."""
        if k not in self.loaded:
            data = self._whole(k)
            self.loaded[k] = None if data is None else data.split(b"\n")
        return self.loaded[k]

    def _whole(self, k: int) -> Optional[bytes]:
        if k not in self.whole:
            self.whole[k] = self.section(k)
        return self.whole[k]

    def table(self, k: int, key: Any, build: Callable[[bytes], Dict[int, Any]],
              coming: int = 0) -> Optional[Dict[int, Any]]:
        """`build(section)` (row -> what it found there: one pass over a whole section answers every run),
        kept under `key`; None while few runs asked or are `coming` (`_SPARSE`), or when the section is
        damaged."""
        if key not in self.found:
            n = self.sparse[key] = self.sparse.get(key, 0) + 1
            if n <= _SPARSE and coming <= _SPARSE:
                return None
            data = self._whole(k)
            self.found[key] = None if data is None else build(data)
        return self.found[key]

    def _line(self, k: int, row: int) -> Optional[bytes]:
        if self.ends is None:
            self.ends = self.section(_ROW_INDEX) or b""
        at = ((k - _ROWS[0]) * self.rows + row) * _END.size
        if row >= self.rows or at + _END.size > len(self.ends):
            return None
        end, crc = _END.unpack_from(self.ends, at)
        start = _END.unpack_from(self.ends, at - _END.size)[0] + 1 if row else 0
        off, size = self.sections[k][:2]
        if not 0 <= start <= end <= size:
            return None
        try:
            data = os.pread(self.fd, end - start, off + start)
        except OSError:
            return None
        return data if zlib.crc32(data) == crc else None

    def order(self, row: int) -> Tuple[float, float, str]:
        return self.times[2 * row], self.times[2 * row + 1], self.names[row][:-len(ids.SUFFIX)]

    def read(self, ref: bytes) -> Optional[List[bytes]]:
        try:
            off, size, crc = ref.split(b" ")
            data = os.pread(self.fd, int(size), self.sections[_BLOBS][0] + int(off))
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


class Cache:
    """A cache file as read: row by name, each row's file identity (3 per row: size, mtime_ns, inode)."""

    def __init__(self, names: List[str], idents: "array.array[int]", src: Optional[_Source]) -> None:
        self.names = names
        self.rows: Dict[str, int] = dict(zip(names, range(len(names))))
        self.idents = idents
        self.src = src

    def row(self, name: str, st: os.stat_result) -> Optional[int]:
        i = self.rows.get(name)
        if i is None:
            return None
        q = self.idents
        return i if q[3 * i] == st.st_size and q[3 * i + 1] == st.st_mtime_ns and q[3 * i + 2] == st.st_ino else None

    def run(self, i: int, path: str) -> Run:
        return Run.cached(path, self.src, i)


_EMPTY = Cache([], array.array("q"), None)


def read_cache(folder: str) -> Cache:
    """The folder's cache; empty when the file is missing, of another version, or fails its CRC."""
    try:
        fd = os.open(os.path.join(folder, NAME), os.O_RDONLY)
    except OSError:
        return _EMPTY
    src = _Source(fd)  # closes the file when the last run listed from it is gone
    try:
        head = os.pread(fd, 400, 0)
        cut = head.find(b"\n")
        if not head.startswith(_MAGIC) or cut < 0:
            return _EMPTY
        nums = head[len(_MAGIC):cut].split(b" ")
        off = cut + 1
        for k in range(0, len(nums), 2):
            size = int(nums[k])
            src.sections.append((off, size, nums[k + 1]))
            off += size
        src.sections.append((off, 0, b""))
    except (OSError, ValueError, IndexError):
        return _EMPTY
    names_raw = src.section(0) if len(src.sections) == _BLOBS + 1 else None
    idents_raw = src.section(_IDENTS) if names_raw else None
    if not names_raw or idents_raw is None:
        return _EMPTY
    try:
        names = names_raw.decode("utf-8", "surrogateescape").split("\n")
    except ValueError:
        return _EMPTY
    n = src.rows = len(names)
    if len(idents_raw) != 40 * n:
        return _EMPTY
    src.names, src.times = names, _array("d", idents_raw[24 * n:])
    return Cache(names, _array("q", idents_raw[:24 * n]), src)


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


def _entry(name: bytes, st: os.stat_result, run: Run, start_raw: bytes, tail: List[dict], tail_raw: List[bytes],
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
    if not run._bad:
        flags += _CLEAN
    summary = _dumps(run.summary)
    if b"[" in summary or summary.count(b"{") != len(run.summary) + 1:  # (or a brace in a text: no harm)
        summary = _NESTED + summary
    memo = run._memory()
    status = _dumps(run.status) if run.end is not None else b""
    md = run.end.get("metadata") if run.end is not None else None
    md = md if isinstance(md, dict) else run.start.get("metadata")
    t, mtime = run.order()[:2]
    fields = b"\t".join([_dumps(run.started), flags, status, _dumps(run.run_id), _dumps(run.name),
                         _dumps(md) if isinstance(md, dict) and md else b"", _dumps(memo) if memo else b"",
                         _dumps(run.code)])
    blob = b"\t".join([_clean(start_raw, run.start) if start_raw else b""] + keep)
    ino = st.st_ino if st.st_ino < _INT64 else -1  # (never matches: such a run is read every time)
    return name, (st.st_size, st.st_mtime_ns, ino), (t, mtime), summary, key_facts(run, _dumps), fields, blob


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
    cache = read_cache(folder) if use_cache else _EMPTY
    names = ids.run_names(folder)
    elsewhere: Dict[str, str] = {}  # a linked worktree's old folder: read, never cached
    for other in ids.linked_runs_dirs(folder)[::-1]:
        elsewhere.update((n, os.path.join(other, n)) for n in ids.run_names(other))
    if elsewhere:
        for n in names:
            elsewhere.pop(n, None)
    prefix = os.path.join(folder, "")
    kept: List[int] = []
    out: List[Run] = []
    fresh: List[Entry] = []
    later: List[Tuple[str, os.stat_result]] = []
    defer = use_cache and os.access(folder, os.W_OK)
    changed = False
    stat, get, q, keep = os.stat, cache.rows.get, cache.idents, kept.append
    with warnings.catch_warnings(record=True) as caught, _Dir(folder) as dir_fd:
        warnings.simplefilter("always")
        for name in names:
            try:
                st = stat(name, dir_fd=dir_fd) if dir_fd is not None else stat(prefix + name)
            except OSError as exc:
                warnings.warn(f"{prefix + name}: unreadable ({exc.strerror or exc})", CorruptLineWarning)
                continue
            i = get(name)
            if i is not None and q[3 * i] == st.st_size and q[3 * i + 1] == st.st_mtime_ns \
                    and q[3 * i + 2] == st.st_ino:  # `Cache.row`, inline
                keep(i)
                continue
            changed = True
            before = len(caught)
            try:
                run, entry = _read(prefix + name, st)
            except OSError as exc:
                warnings.warn(f"{prefix + name}: unreadable ({exc.strerror or exc})", CorruptLineWarning)
                continue
            if len(caught) == before and "\n" not in name and "\t" not in name and "\0" not in name:
                fresh.append(entry)
                if defer:  # listed from the cache once written: a parsed run weighs ~10x its entry
                    later.append((name, st))
                    continue
            out.append(run)
        for name, path in elsewhere.items():
            try:
                out.append(_read(path, os.stat(path))[0])
            except OSError as exc:
                warnings.warn(f"{path}: unreadable ({exc.strerror or exc})", CorruptLineWarning)
    for w in caught:
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if use_cache and (changed or len(kept) != len(cache.rows)):
        _write(folder, kept, cache, fresh)
    kept.sort()  # the cache's rows are in listing order
    names_c, cached, src = cache.names, Run.cached, cache.src
    listed = [cached(prefix + names_c[i], src, i) for i in kept]  # `Cache.run`, inline
    if later:
        out += _from_new_cache(folder, later)
    if out:
        listed += out
        listed.sort(key=Run.order)
    return listed


class _Dir:
    """The folder open for `os.stat(name, dir_fd=...)` (no path walk per file), or None where that is
    not supported."""

    def __init__(self, folder: str) -> None:
        self.fd: Optional[int] = None
        if os.stat in os.supports_dir_fd:
            try:
                self.fd = os.open(folder, os.O_RDONLY)
            except OSError:
                pass

    def __enter__(self) -> Optional[int]:
        return self.fd

    def __exit__(self, *exc: Any) -> None:
        if self.fd is not None:
            os.close(self.fd)


def _read(path: str, st: os.stat_result) -> Tuple[Run, Entry]:
    """A run read lightly from its file (first line and tail), and its cache entry."""
    raw: List[bytes] = []
    data: List[bytes] = []
    start, tail, complete = _head_and_tail(path, raw, data)
    run = Run(path, start, tail, tail if complete else None)
    if data and run._records is None:
        run._memo_data = data[0]
    run._mtime = st.st_mtime
    name = os.path.basename(path).encode("utf-8", "surrogateescape")
    return run, _entry(name, st, run, raw[0] if raw else b"", tail, raw[1:], complete)


def _from_new_cache(folder: str, later: List[Tuple[str, os.stat_result]]) -> List[Run]:
    """Runs just read, listed from their entries in the cache just written (or, when it could not be
    written or another process replaced it meanwhile, read from their files again)."""
    cache = read_cache(folder)
    prefix = os.path.join(folder, "")
    out: List[Run] = []
    for name, st in later:
        i = cache.row(name, st)
        if i is not None:
            out.append(cache.run(i, prefix + name))
            continue
        try:
            out.append(_read(prefix + name, st)[0])
        except OSError as exc:
            warnings.warn(f"{prefix + name}: unreadable ({exc.strerror or exc})", CorruptLineWarning)
    return out


def _write(folder: str, kept: List[int], cache: Cache, fresh: List[Entry]) -> None:
    """One atomic write, rows in listing order: the kept rows' parts come from the old file (each section
    read once, whole)."""
    entries: List[Entry] = []
    src, q = cache.src, cache.idents
    if kept and src is not None:
        old_rows = [src.section(k) for k in _ROWS]
        try:
            old = os.pread(src.fd, os.fstat(src.fd).st_size, src.sections[_BLOBS][0])
        except OSError:
            old = None
        if all(x is not None for x in old_rows) and old is not None:
            fields_l, summaries_l, facts_l = (x.split(b"\n") for x in old_rows)  # type: ignore[union-attr]
            for i in kept:
                if i >= len(fields_l) or i >= len(summaries_l) or i >= len(facts_l):
                    continue
                fields, _, ref = fields_l[i].rpartition(b"\t")
                off, size, crc = ref.split(b" ")
                blob = old[int(off):int(off) + int(size)]
                if b"%08x" % zlib.crc32(blob) == crc:
                    entries.append((cache.names[i].encode("utf-8", "surrogateescape"), (q[3 * i], q[3 * i + 1], q[3 * i + 2]),
                                    src.order(i)[:2], summaries_l[i], facts_l[i], fields, blob))
    entries += fresh
    cut = len(ids.SUFFIX)
    entries.sort(key=lambda e: (e[2], e[0][:-cut].decode("utf-8", "surrogateescape")))
    names: List[bytes] = []
    idents = array.array("q")
    times = array.array("d")
    per_run: List[List[bytes]] = [[], [], []]  # fields, summaries, key facts
    parts = []
    pos = 0
    for name, ident, order, summary, facts, fields, blob in entries:
        names.append(name)
        idents.extend(ident)
        times.extend(order)
        per_run[0].append(b"%s\t%d %d %08x" % (fields, pos, len(blob), zlib.crc32(blob)))
        per_run[1].append(summary)
        per_run[2].append(facts)
        parts.append(blob)
        pos += len(blob)
    if sys.byteorder == "big":
        idents.byteswap()
        times.byteswap()
    ends: List[int] = []
    for lines in per_run:
        end = -1
        for line in lines:
            end += 1 + len(line)
            ends += (end, zlib.crc32(line))
    sections = [b"\n".join(names), idents.tobytes() + times.tobytes()] + [b"\n".join(x) for x in per_run]
    sections.append(struct.pack("<" + "QI" * (len(ends) // 2), *ends))
    head = _MAGIC + b" ".join(b"%d %08x" % (len(x), zlib.crc32(x)) for x in sections) + b"\n"
    try:
        write_atomic(os.path.join(folder, NAME), head + b"".join(sections) + b"".join(parts))
    except OSError:
        pass  # a read-only folder lists from the files every time

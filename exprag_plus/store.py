"""Reading runs: a tolerant JSONL reader and Run objects.

A run file may end in a torn line (the writer was killed mid-way: skipped quietly), hold a corrupt
line (skipped with a warning naming file and line), or lack run_end (the run is `running` if its
process is alive on this host, else `crashed`). Listing reads only each file's first line and tail.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

from . import ids, records

_TAIL = 64 * 1024
_MEMORY_LINE = re.compile(rb'"type"\s*:\s*"(?:note|tag)"')
_BLOCK = 1024 * 1024
_SCAN = json.JSONDecoder().scan_once  # what json.loads runs, called directly: (value, end) of a str at 0
LINE_CAP = 16 * 1024 * 1024  # no record is this long (a run_start with 100k changed paths is ~5 MB)
OFFSET_TYPES = ("note", "tag", "artifact")  # run_end.offsets says where these start (the body is never scanned)
OFFSETS_CAP = 256  # more of a type than this: run_end leaves its offsets out and readers search the bytes
STATUSES = ("completed", "failed", "interrupted", "running", "crashed")


_entry_keys: Dict[str, bytes] = {}  # metric path -> its key in a cached summary's JSON
_stat_patterns: Dict[Tuple[str, str], "re.Pattern[bytes]"] = {}
_MISSING = object()
_FIELDS = 2  # the listing cache's section of a cached run's fields (see `Run.cached`)
_FIELD_COUNT, _FIELD_METADATA = 9, 5  # a fields line's parts, and where its metadata is (`Run._unpack`)
_COLUMNS = {"_summary_raw": 3, "_keys_raw": 4}  # a cached run's attributes its source reads per section
_RAW_DEFAULTS = {"_started_raw": None, "_status_raw": b"", "_id_raw": None, "_name_raw": None, "_md_raw": None,
                 "_code_raw": b"", "_summary_raw": None, "_keys_raw": None, "_lines_ref": None}
_LITERALS = {b"true": True, b"false": False, b"null": None, b"NaN": float("nan"), b"Infinity": float("inf"),
             b"-Infinity": float("-inf")}


def _stat_pattern(path: str, stat: str) -> "re.Pattern[bytes]":
    """The number of `stat` in `path`'s entry of a summary as the cache wrote it (json.dumps, numbers
    only), matched from the entry's key."""
    pattern = _stat_patterns.get((path, stat))
    if pattern is None:
        pattern = _stat_patterns[(path, stat)] = re.compile(
            re.escape(_entry_key(path)) + rb"(?:\"\w+\": [^,\"{}\[\]\n]+, )*?"
            + re.escape(json.dumps(stat).encode("ascii")) + rb": ([^,\"{}\[\]\n]+)[,}]")
    return pattern


def _stat_table(data: bytes, path: str, stat: str) -> Dict[int, Any]:
    """line number -> `stat` of `path` in the summaries section's lines (one summary each) that hold it at
    their top level and are not flagged nested (`!`); the rest are for `Run.summary_stat` to read alone."""
    nested = set()
    i = 0 if data[:1] == b"!" else data.find(b"\n!")
    while i >= 0:
        nested.add(data.count(b"\n", 0, i + 1))
        i = data.find(b"\n!", i + 1)
    rows: List[int] = []
    toks: List[bytes] = []
    row = pos = 0
    count = data.count
    for m in _stat_pattern(path, stat).finditer(data):
        i = m.start()
        before = data[i - 3:i] if i >= 3 else data[:i]
        if before == b"}, " or (before[-1:] == b"{" and (i == 1 or before[1:2] == b"\n")):
            row += count(b"\n", pos, i)
            pos = i
            if row not in nested:
                rows.append(row)
                toks.append(m.group(1))
    try:
        values = json.loads(b"[" + b",".join(toks) + b"]")
    except ValueError:
        values = [_number(t) for t in toks]
    return {r: v for r, v in zip(rows, values) if v is not _MISSING}


def summary_stats(runs: Sequence["Run"], path: str, stat: str) -> List[Tuple[bool, Any]]:
    """`Run.summary_stat` of each run: runs listed from one cache share one pass over its summaries."""
    out: List[Tuple[bool, Any]] = []
    tables: Dict[int, Optional[Dict[int, Any]]] = {}
    k = _COLUMNS["_summary_raw"]
    for r in runs:
        d = r.__dict__
        src = d.get("_source")
        if src is not None and "_summary_raw" not in d and d.get("_summary") is None:
            table = tables.get(id(src), _MISSING)
            if table is _MISSING:
                table = tables[id(src)] = src.table(k, (path, stat), lambda data: _stat_table(data, path, stat), len(runs))
            v = _MISSING if table is None else table.get(d["_row"], _MISSING)
            if v is not _MISSING:
                out.append((True, v))
                continue
        out.append(r.summary_stat(path, stat))
    return out


def _status_table(data: bytes) -> Dict[int, str]:
    """line number -> the status a fields section's line holds (a finished run's; an unfinished run's is
    asked of its process), each distinct value decoded once."""
    out: Dict[int, str] = {}
    known: Dict[bytes, str] = {}
    for row, line in enumerate(data.split(b"\n")):
        parts = line.split(b"\t", 3)
        raw = parts[2] if len(parts) == 4 else b""
        if raw:
            s = known.get(raw)
            if s is None:
                s = known[raw] = _cached_json(raw)
            out[row] = s
    return out


def cached_lines(runs: Sequence["Run"], name: str) -> List[Optional[bytes]]:
    """Each run's `name` (`_summary_raw` or `_keys_raw`): the runs of one cache share one read of its
    section (else each would fetch its own line)."""
    k = _COLUMNS[name]
    out: List[Optional[bytes]] = []
    columns: Dict[int, Optional[List[bytes]]] = {}
    for r in runs:
        d = r.__dict__
        src = d.get("_source")
        if src is not None and name not in d:
            col = columns.get(id(src), _MISSING)
            if col is _MISSING:
                col = columns[id(src)] = src.lines_of(k)
            if col is not None and d["_row"] < len(col):
                out.append(col[d["_row"]])
                continue
        out.append(getattr(r, name))
    return out


def metadatas(runs: Sequence["Run"]) -> List[Dict[str, Any]]:
    """Each run's `metadata`: the runs of one cache not yet unpacked decode theirs in one call."""
    pending: List[Tuple[Run, bytes]] = []
    columns: Dict[int, Optional[List[bytes]]] = {}
    for r in runs:
        d = r.__dict__
        src = d.get("_source")
        if src is not None and "_packed" in d and d.get("_metadata") is None:
            col = columns.get(id(src), _MISSING)
            if col is _MISSING:
                col = columns[id(src)] = src.lines_of(_FIELDS)
            parts = col[d["_row"]].split(b"\t") if col is not None and d["_row"] < len(col) else ()
            if len(parts) == _FIELD_COUNT:
                pending.append((r, parts[_FIELD_METADATA]))
    try:
        decoded = json.loads(b"[" + b",".join(raw or b"{}" for _, raw in pending) + b"]") if pending else []
    except ValueError:
        decoded = []
    for (r, raw), md in zip(pending, decoded):
        if isinstance(md, dict):
            r.__dict__["_metadata"] = md if b'NaN"' not in raw and b'Infinity"' not in raw else records.from_json(md)
    return [r.metadata for r in runs]


_scan = json.JSONDecoder().scan_once


def _cached_json(raw: bytes) -> Any:
    """json.loads of a value or line the listing cache holds, by the decoder's C scanner alone: its
    wrappers cost more than decoding a short value, 100,000 times over."""
    try:
        text = raw.decode("utf-8")
        value, end = _scan(text, 0)
    except (UnicodeDecodeError, StopIteration):
        return json.loads(raw)
    return value if end == len(text) else json.loads(raw)


def _number(tok: bytes) -> Any:
    """A JSON number or literal's value, or _MISSING."""
    v = _LITERALS.get(tok, _MISSING)
    if v is not _MISSING:
        return v
    try:
        return float(tok) if b"." in tok or b"e" in tok or b"E" in tok else int(tok)
    except ValueError:
        return _MISSING


def _entry_key(path: str) -> bytes:
    key = _entry_keys.get(path)
    if key is None:
        key = _entry_keys[path] = json.dumps(path).encode("ascii") + b": {"
    return key


class CorruptLineWarning(UserWarning):
    """A line of a run file was not a JSON record; it was skipped."""


def _warn_corrupt(path: str, lineno: int, reason: str) -> None:
    where = f"{path}:{lineno}" if lineno else f"{path} (near the end)"
    warnings.warn(f"{where}: skipped a corrupt line ({reason})", CorruptLineWarning, stacklevel=2)


def parse_line(line: bytes, path: str, lineno: Union[int, Callable[[], int]], last: bool) -> Optional[Dict[str, Any]]:
    """One record, or None; a bad last line without its newline is a torn write, not worth a warning."""
    if not line.strip():
        return None
    try:
        rec = json.loads(line)
    except (ValueError, RecursionError) as exc:  # bad UTF-8 is a ValueError without .msg; deep nesting recurses
        if not last:
            reason = (f"not JSON: {exc.msg} at column {exc.colno}" if isinstance(exc, json.JSONDecodeError)
                      else "not UTF-8" if isinstance(exc, UnicodeDecodeError) else "nested too deeply")
            _warn_corrupt(path, lineno() if callable(lineno) else lineno, reason)
        return None
    if not isinstance(rec, dict) or not isinstance(rec.get("type"), str):
        _warn_corrupt(path, lineno() if callable(lineno) else lineno, "not a record: no 'type'")
        return None
    return rec


def iter_lines(path: str, start: int = 0, lineno: int = 0) -> Iterator[Tuple[int, bytes, bool]]:
    """(line number, line without its newline, whether it is an unfinished last line), in bounded memory:
    a line longer than LINE_CAP is skipped with a warning (a corrupt file, not a record). `start` and
    `lineno` resume at a line boundary that `line_offsets` reported."""
    for lineno, line, last, _ in line_offsets(path, start, lineno):
        yield lineno, line, last


def line_offsets(path: str, start: int = 0, lineno: int = 0) -> Iterator[Tuple[int, bytes, bool, int]]:
    """`iter_lines` with each line's byte offset in the file."""
    cap = LINE_CAP + 1
    with open(path, "rb", buffering=_BLOCK) as f:
        if start:
            f.seek(start)
        readline = f.readline
        pos = start
        while True:
            line = readline(cap)
            if not line:
                return
            n = len(line)
            lineno += 1
            if line[-1] == 10:  # b"\n"
                yield lineno, line[:-1], False, pos
            elif n < cap:
                yield lineno, line, True, pos
            else:
                _warn_corrupt(path, lineno, f"a line longer than {LINE_CAP // 2**20} MB")
                while line and line[-1] != 10:
                    line = readline(cap)
                    n += len(line)
            pos += n


def _lines_matching(path: str, pattern: "re.Pattern[bytes]") -> Iterator[Tuple[bytes, bool]]:
    """(line, whether it is an unfinished last line) for lines where `pattern` matches, in bounded memory;
    the bytes are searched block by block and only matching lines are cut out (no per-line loop)."""
    with open(path, "rb") as f:
        carry = b""
        while True:
            block = f.read(_BLOCK)
            if not block:
                break
            data = carry + block if carry else block
            cut = data.rfind(b"\n") + 1
            done, carry = data[:cut], data[cut:]
            if len(carry) > LINE_CAP:
                carry = b""
            for line in _matching(done, pattern):
                yield line, False
        if carry and pattern.search(carry):
            yield carry, True


def _matching(done: bytes, pattern: "re.Pattern[bytes]") -> Iterator[bytes]:
    """The lines of `done` (whole lines, each ending in a newline) where `pattern` matches."""
    pos = 0
    while True:
        m = pattern.search(done, pos)
        if m is None:
            return
        begin = done.rfind(b"\n", 0, m.start()) + 1
        end = done.find(b"\n", m.end())
        yield done[begin:end]
        pos = end + 1


def quick_record(line: bytes) -> Optional[Dict[str, Any]]:
    """The record on a line (with or without its newline) by json's own scanner, or None when anything is
    unusual (then `parse_line` gives the answer and the warning): the common case of a long stream."""
    try:
        text = line.decode("utf-8", "surrogatepass")
        rec, end = _SCAN(text, 0)
    except (StopIteration, ValueError, RecursionError):
        return None
    if end != len(text) and text[end:] != "\n":
        return None
    return rec if type(rec) is dict and type(rec.get("type")) is str else None


def iter_records(path: str) -> Iterator[Dict[str, Any]]:
    """Every readable record of a file, in file order (`iter_lines` and `parse_line` inlined for the common
    whole line: a million-record stream costs little more than its `json.loads`)."""
    cap = LINE_CAP + 1
    scan = _SCAN
    with open(path, "rb", buffering=_BLOCK) as f:
        readline = f.readline
        lineno = 0
        while True:
            line = readline(cap)
            if not line:
                return
            lineno += 1
            if line[-1] == 10:  # b"\n"
                try:  # json.loads without its wrappers; anything unusual goes to parse_line
                    text = line.decode("utf-8", "surrogatepass")
                    rec, end = scan(text, 0)
                    if end != len(text) - 1:
                        rec = None
                except (StopIteration, ValueError, RecursionError):
                    rec = None
                if type(rec) is dict and type(rec.get("type")) is str:
                    yield rec
                    continue
                rec = parse_line(line[:-1], path, lineno, False)  # warns as every reader does
            elif len(line) < cap:
                rec = parse_line(line, path, lineno, True)
            else:
                _warn_corrupt(path, lineno, f"a line longer than {LINE_CAP // 2**20} MB")
                while line and line[-1] != 10:
                    line = readline(cap)
                continue
            if rec is not None:
                yield rec


def _head_and_tail(path: str, raw: Optional[List[bytes]] = None, whole_out: Optional[List[bytes]] = None) -> Tuple[Optional[Dict[str, Any]], List[Dict[str, Any]], bool]:
    """run_start, and the tail's records parsed backwards as far as the last run_end (file order).

    The flag says whether every line of the file was parsed (then the tail is the whole file). Parsing
    stops at run_end because listing 10,000 runs must not parse a million track lines. `raw`, when
    given, receives run_start's line then each tail record's line (file order), for the listing cache.
    """
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        head_line = None
        if size > 2 * _TAIL:
            head_line = f.readline(LINE_CAP + 1)
            if len(head_line) > LINE_CAP:
                _warn_corrupt(path, 1, f"a first line longer than {LINE_CAP // 2**20} MB: not a run")
                return None, [], True
            f.seek(max(size - _TAIL, f.tell()))
        data = f.read()
    whole = head_line is None
    if whole and whole_out is not None:
        whole_out.append(data)
    if whole:
        nl = data.find(b"\n")
        head_line = data if nl < 0 else data[: nl + 1]
        floor = len(head_line)
    else:
        floor = data.find(b"\n") + 1  # the chunk begins mid-line
    start = parse_line(head_line.rstrip(b"\n"), path, 1, not head_line.endswith(b"\n"))
    tail: List[Dict[str, Any]] = []
    end = len(data)
    complete = whole
    last = True
    while end > floor:
        cut = data.rfind(b"\n", floor, end - 1 if data[end - 1:end] == b"\n" else end)
        begin = floor if cut < 0 else cut + 1
        line = data[begin:end]
        torn = last and not line.endswith(b"\n")
        rec = parse_line(line, path, (lambda b=begin: data.count(b"\n", 0, b) + 1) if whole else 0, torn)
        last = False
        end = begin
        if rec is not None:
            tail.append(rec)
            if raw is not None:
                raw.append(line.rstrip(b"\n"))
            if rec.get("type") == "run_end":
                complete = complete and end <= floor
                break
    tail.reverse()
    if raw is not None:
        raw.reverse()
        raw.insert(0, head_line.rstrip(b"\n") if start is not None else b"")
    if complete and start is not None:
        tail.insert(0, start)
        if raw is not None:
            raw.insert(1, raw[0])
    return start, tail, complete


def start_and_last_seq(path: str) -> Tuple[Optional[Dict[str, Any]], int]:
    """run_start and the seq of the file's last record (for appending after the fact)."""
    start, tail, _ = _head_and_tail(path)
    seqs = [r["seq"] for r in tail if isinstance(r.get("seq"), int)]
    first = (start or {}).get("seq")
    return start, max(seqs) if seqs else first if type(first) is int else -1


def host_name() -> str:
    """This machine's name as run_start records it: the kernel's node name, which is what
    socket.gethostname returns, without loading socket (a few ms at every start-up)."""
    if hasattr(os, "uname"):
        return os.uname().nodename
    import socket

    return socket.gethostname()


def pid_alive(pid: Any, hostname: Any, started: Optional[float]) -> bool:
    """Whether the run's process still runs here (and is the same process, not a reused pid)."""
    if not isinstance(pid, int) or pid <= 0 or hostname != host_name():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    if started is None:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        fields = stat[stat.rindex(b")") + 2:].split()
        if fields[0] == b"Z":
            return False
        with open("/proc/stat", "rb") as f:
            btime = next(int(l.split()[1]) for l in f if l.startswith(b"btime"))
        began = btime + int(fields[19]) / os.sysconf("SC_CLK_TCK")
        return began <= started + 2.0
    except (OSError, ValueError, StopIteration, IndexError):
        return True


_STR, _INT, _BOOL, _LIST, _DICT, _NONE = str, int, bool, list, dict, type(None)
# Field -> accepted types, and for an object the same for its fields: a record that breaks this contract
# loses only that field (with one warning per file), never the run nor the folder.
_GIT_FIELDS = {"commit": (_STR, _NONE), "branch": (_STR, _NONE), "dirty": (_BOOL, _NONE), "status": (_LIST,),
               "base_commit": (_STR, _NONE), "snapshot_branch": (_STR, _NONE), "skipped": (_LIST,),
               "subdir": (_STR, _NONE), "toplevel": (_STR, _NONE)}
_START_FIELDS: Dict[str, Any] = {
    "run_id": (_STR,), "name": (_STR,), "time": (_STR,), "seq": (_INT,), "elapsed_ms": (int, float),
    "format": (_STR,), "metadata": (_DICT,), "git_error": (_STR, _NONE), "replay_of": (_STR, _NONE),
    "process": {"pid": (_INT,), "argv": (_LIST,), "cwd": (_STR,), "executable": (_STR,), "python": (_STR,)},
    "host": {"hostname": (_STR,), "platform": (_STR,)},
    "git": _GIT_FIELDS,
}
_END_FIELDS: Dict[str, Any] = {
    "status": (_STR,), "time": (_STR,), "elapsed_ms": (int, float), "summary": (_DICT,), "error": None,
}
_NULLABLE = ("git",)
_warned_fields: set = set()


def _kind(value: Any) -> str:
    return {str: "text", list: "a list", dict: "an object", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number" if isinstance(value, (int, float)) else type(value).__name__)


def _checked(rec: Dict[str, Any], spec: Dict[str, Any], where: str, bad: List[str]) -> Dict[str, Any]:
    """A copy of `rec` without the fields whose type breaks `spec` (their names appended to `bad`)."""
    out = None
    for key, want in spec.items():
        if key not in rec or want is None:
            continue
        value = rec[key]
        if isinstance(want, dict):
            if value is None and key in _NULLABLE:
                continue
            ok = isinstance(value, dict)
            fixed = _checked(value, want, f"{where}.{key}", bad) if ok else None
        else:
            ok = type(value) in want
            fixed = value
        if not ok:
            bad.append(f"{where}.{key} ({_kind(value)})")
        if not ok or fixed is not value:
            out = dict(rec) if out is None else out
            if ok:
                out[key] = fixed
            else:
                del out[key]
    return rec if out is None else out


def _warn_fields(path: str, bad: List[str]) -> None:
    fresh = [b for b in bad if (path, b) not in _warned_fields]
    if fresh:
        _warned_fields.update((path, b) for b in fresh)
        warnings.warn(f"{path}: ignored field(s) not of the expected type: {', '.join(fresh)}",
                      CorruptLineWarning, stacklevel=3)


class Run:
    """One run as read from its file. Light when listed (first line and tail); `records` reads the rest."""

    def __init__(self, path: str, start: Optional[Dict[str, Any]], tail: List[Dict[str, Any]],
                 all_records: Optional[List[Dict[str, Any]]] = None) -> None:
        self.path = path
        self._bad: List[str] = []
        self._lazy_start: Optional[bytes] = None
        self._lazy_tail: Optional[List[bytes]] = None
        self._started: Optional[str] = None
        self._mtime: Optional[float] = None
        self._no_end = False
        self._order: Optional[Tuple[float, float, str]] = None
        self._start: Dict[str, Any] = _checked(start or {}, _START_FIELDS, "run_start", self._bad)
        self._records = all_records
        self._end: Optional[Dict[str, Any]] = None
        self._after: List[Dict[str, Any]] = []
        self._take_tail(tail)
        self._summary: Optional[Dict[str, Dict[str, Any]]] = None
        self._metadata: Optional[Dict[str, Any]] = None
        self._memo: Optional[List[Dict[str, Any]]] = None
        self._memo_raw = b""
        self._memo_data: Optional[bytes] = None

    # a run from the listing cache holds only these until another attribute is asked for (`__getattr__`)
    _lines: Any = None  # an object whose .lines(ref, path) gives (run_start line, tail lines)
    _scanned: Optional[Dict[str, Any]] = None  # what a whole-file pass for run_end saw (`scan_end`'s `seen`)

    @classmethod
    def cached(cls, path: str, source: Any, row: int) -> "Run":
        """A run as the listing cache holds it: listing 100,000 runs must not build a million dicts it never
        looks at, so each part is read and decoded when first asked for. Its fields (tab-separated:
        run_start time, flags (n: no run_end, s: run_end found by a whole-file scan), status, run id, name,
        metadata, notes and tags, what a row shows of its code, where its lines are) are `source.column(2, row)`, split on first use;
        its summary (JSON, after a `!` when an entry holds a list or object) and key facts
        (`query.key_facts`) are `source.column(3 or 4, row)`; its first line and tail come from
        `source.lines(ref, path)`, its sort key from `source.order(row)`. A part the source cannot give
        (None) comes from the file. Every part is what the properties gave when it was cached."""
        run = cls.__new__(cls)
        run.path = path
        run._summary = None
        run._lines = run._source = source
        run._row = row
        run._packed = True
        return run

    def __getattr__(self, name: str) -> Any:
        d = self.__dict__
        if name in _COLUMNS and "_source" in d:
            value = d[name] = d["_source"].column(_COLUMNS[name], d["_row"])
            return value
        if name == "_order" and "_source" in d:
            value = d[name] = d["_source"].order(d["_row"])
            return value
        if d.pop("_packed", False):
            fields = d["_source"].column(_FIELDS, d["_row"])
            if fields is not None:
                self._unpack(fields)
            else:
                self._reread()
            return getattr(self, name)
        if name in _RAW_DEFAULTS:  # a run read from its file
            return _RAW_DEFAULTS[name]
        raise AttributeError(name)

    def _reread(self) -> None:
        """Become the run its file gives (the cache's copy was damaged after it was opened)."""
        path, order = self.path, self._order
        self.__dict__.clear()
        try:
            start, tail, complete = _head_and_tail(path)
        except OSError:
            start, tail, complete = None, [], True
        Run.__init__(self, path, start, tail, tail if complete else None)
        self._order = order

    def _unpack(self, fields: bytes) -> None:
        """The cached fields as attributes; the rest of a run's state starts as the class attributes
        below (which `__init__` sets on a run read from its file: it never sees them)."""
        d = self.__dict__
        (d["_started_raw"], flags, d["_status_raw"], d["_id_raw"], d["_name_raw"], d["_md_raw"],
         memo, d["_code_raw"], d["_lines_ref"]) = fields.split(b"\t")
        d["_memo_raw"] = memo
        d["_no_end"] = b"n" in flags
        d["_tail_end"] = b"s" not in flags
        d["_start_ok"] = b"c" in flags
        d["_bad"] = []
        d["_after"] = []
        d["_memo"] = None if memo else []

    # a cached run's state once unpacked, until it changes (see `_unpack`)
    _lazy_start = _lazy_tail = _started = _mtime = _records = _end = _metadata = _memo_data = None
    _start_ok = False

    def summary_entry(self, path: str) -> Optional[Dict[str, Any]]:
        """`summary.get(path)`, decoding only that entry of a cached summary (`best` over 100,000 runs).

        The cache wrote the summary with json.dumps: a top-level key is the only place `}, "PATH": {` can
        occur when no entry holds a list or object (quotes inside strings are escaped); a cut that is no
        JSON falls back to decoding it all."""
        raw = self._summary_raw
        if self._summary is None and raw is not None and raw[:1] != b"!":
            key = _entry_key(path)
            if raw.startswith(key, 1):
                i = len(key)
            else:
                i = raw.find(b"}, " + key)
                if i < 0:
                    return None
                i += len(key) + 2
            try:
                return json.loads(raw[i:raw.find(b"}", i) + 1])
            except ValueError:
                pass
        return self.summary.get(path)

    def summary_stat(self, path: str, stat: str) -> Tuple[bool, Any]:
        """(whether the summary has `path`, its `stat` or None), reading only that number's bytes when the
        cached entry holds numbers only (else as `summary_entry`). Past a few runs, the cache's summaries
        section is read once for every run's number (`_stat_table`)."""
        d = self.__dict__
        if "_source" in d and "_summary_raw" not in d and self._summary is None:
            found = d["_source"].table(_COLUMNS["_summary_raw"], (path, stat),
                                       lambda data: _stat_table(data, path, stat))
            if found is not None:
                v = found.get(d["_row"], _MISSING)
                if v is not _MISSING:
                    return True, v
        raw = self._summary_raw
        if self._summary is None and raw is not None and raw[:1] != b"!":
            m = _stat_pattern(path, stat).search(raw)
            if m is not None and (m.start() == 1 or raw[m.start() - 3:m.start()] == b"}, "):
                v = _number(m.group(1))
                if v is not _MISSING:
                    return True, v
        s = self.summary_entry(path)
        return (False, None) if s is None else (True, s.get(stat))

    def _parse(self) -> None:
        _ = self.start, self.end

    def _fill(self) -> None:
        ref = self._lines_ref  # unpacks the fields, or re-reads the run from its file: then nothing to fill
        lines, self._lines = self._lines, None
        if lines is not None:
            self._lazy_start, self._lazy_tail = lines.lines(ref, self.path)

    @property
    def start(self) -> Dict[str, Any]:
        if self._lines is not None:
            self._fill()
        raw = self._lazy_start
        if raw is not None:
            self._lazy_start = None
            rec = _cached_json(raw) if raw else {}
            self._start = rec if self._start_ok else _checked(rec, _START_FIELDS, "run_start", self._bad)
        return self._start

    @property
    def end(self) -> Optional[Dict[str, Any]]:
        if self._lines is not None:
            self._fill()
        raw = self._lazy_tail
        if raw is not None:
            self._lazy_tail = None
            tail_end = self._tail_end
            self._take_tail([_cached_json(r) for r in raw])
            self._tail_end = self._tail_end and tail_end
        return self._end

    def _take_tail(self, tail: List[Dict[str, Any]]) -> None:
        """run_end is the tail's last one; what follows it (notes, tags, action runs) is kept for counting."""
        at = next((i for i in range(len(tail) - 1, -1, -1) if tail[i].get("type") == "run_end"), None)
        self._after = [] if at is None else tail[at + 1:]
        self._tail_end = at is not None
        self._set_end(None if at is None else tail[at])

    @property
    def run_id(self) -> str:
        if self._id_raw is not None:
            return _cached_json(self._id_raw)
        return self.start.get("run_id") or os.path.basename(self.path)[: -len(ids.SUFFIX)]

    def _set_end(self, end: Optional[Dict[str, Any]]) -> None:
        if end is not None:
            end = _checked(end, _END_FIELDS, "run_end", self._bad)
            if end.get("error") is not None and not isinstance(end["error"], dict):
                end["error"] = {"type": None, "message": end["error"] if isinstance(end["error"], str)
                                else records.dumps(records.to_json(end["error"]))}
        self._end = end
        _warn_fields(self.path, self._bad)

    @classmethod
    def read(cls, path: str, full: bool = False) -> "Run":
        if full:
            recs = list(iter_records(path))
            start = recs[0] if recs and recs[0].get("type") == "run_start" else None
            return cls(path, start, recs, recs)
        start, tail, complete = _head_and_tail(path)
        return cls(path, start, tail, tail if complete else None)

    # --- identity and start info ---------------------------------------------------------------
    @property
    def short_id(self) -> str:
        return ids.short_id(self.run_id)

    @property
    def name(self) -> str:
        if self._name_raw is not None:
            return _cached_json(self._name_raw)
        end_name = (self.end or {}).get("name")
        return end_name if isinstance(end_name, str) and end_name else self.start.get("name", "")

    @property
    def metadata(self) -> Dict[str, Any]:
        """run_start's metadata, or the final one run_end carries when more arrived during the run (a joined
        script's, a framework's late hyperparameters)."""
        if self._metadata is None and self._md_raw is not None:
            raw = self._md_raw
            md = _cached_json(raw) if raw else {}
            self._metadata = md if b'NaN"' not in raw and b'Infinity"' not in raw else records.from_json(md)
        if self._metadata is None:
            m = (self.end or {}).get("metadata")
            if not isinstance(m, dict):
                m = self.start.get("metadata")
            self._metadata = records.from_json(m) if isinstance(m, dict) else {}
        return self._metadata

    def order(self) -> Tuple[float, float, str]:
        """Sort key of start order (run_start's time, then file time and id; see `ids.order_key`)."""
        if self._order is None:
            self._order = ids.order_key(self.path, self.started, self._mtime)
        return self._order

    @property
    def started(self) -> str:
        raw = self._started_raw
        if raw is not None:
            self._started, self._started_raw = _cached_json(raw), None
        if self._started is not None:
            return self._started
        return self.start.get("time", "")

    @property
    def process(self) -> Dict[str, Any]:
        return self.start.get("process") or {}

    @property
    def host(self) -> Dict[str, Any]:
        return self.start.get("host") or {}

    @property
    def git(self) -> Optional[Dict[str, Any]]:
        return self.start.get("git")

    @property
    def code(self) -> Dict[str, Any]:
        """What a listing row shows of the run's code: run_start's git commit, branch and dirty, and its
        replay_of; from the listing cache when it holds them (100,000 rows decode no run_start)."""
        raw = self._code_raw
        if raw:
            return _cached_json(raw)
        git = self.git
        git = git if isinstance(git, dict) else {}
        return {"commit": git.get("commit"), "branch": git.get("branch"), "dirty": git.get("dirty"),
                "replay_of": self.replay_of}

    @property
    def git_error(self) -> Optional[str]:
        return self.start.get("git_error")

    @property
    def replay_of(self) -> Optional[str]:
        return self.start.get("replay_of")

    # --- end info ------------------------------------------------------------------------------
    def _find_end(self) -> Optional[Dict[str, Any]]:
        """run_end from the tail, else from the whole file (records appended later may push it back),
        streamed: a crashed run of a million records is never held whole for its status."""
        if self.end is None and self._records is None and not self._no_end:
            seen: Dict[str, Any] = {}
            end, summary = scan_end(self.path, seen)
            self._scanned = seen
            if end is not None:
                self._set_end(end)
                self._tail_end = False  # what follows it is not in the tail: counting reads the file
            else:
                self._no_end = True
                if self._summary is None:
                    self._summary = summary
        return self.end

    @property
    def status(self) -> str:
        d = self.__dict__
        if "_packed" in d:  # past a few runs, one pass over the cache's fields answers every run's
            found = d["_source"].table(_FIELDS, "status", _status_table)
            s = None if found is None else found.get(d["_row"])
            if s is not None:
                return s
        if self._status_raw:
            return _cached_json(self._status_raw)
        if self._find_end() is not None:
            return str(self.end.get("status", "completed"))  # type: ignore[union-attr]
        if not self.start:
            return "crashed"
        alive = pid_alive(self.process.get("pid"), self.host.get("hostname"), records.parse_time(self.started))
        return "running" if alive else "crashed"

    @property
    def error(self) -> Optional[Dict[str, Any]]:
        return (self.end or {}).get("error")

    @property
    def ended(self) -> Optional[str]:
        return (self.end or {}).get("time")

    @property
    def duration_s(self) -> Optional[float]:
        if self.end is None:
            return None
        ms = self.end.get("elapsed_ms")
        return round(ms / 1000.0, 3) if isinstance(ms, (int, float)) else None

    @property
    def summary(self) -> Dict[str, Dict[str, Any]]:
        """Per metric path: last, min, max, count, nonfinite (and steps). Computed from tracks without run_end."""
        raw = self._summary_raw
        if self._summary is None and raw is not None:
            self._summary = _cached_json(raw[1:] if raw[:1] == b"!" else raw)
        if self._summary is None:
            s = (self._find_end() or {}).get("summary")
            if isinstance(s, dict):
                nf = records.NONFINITE
                self._summary = {k: {f: nf.get(x, x) if type(x) is str else x for f, x in v.items()}
                                 if str in map(type, v.values()) else v for k, v in s.items() if type(v) is dict}
            elif self._summary is None:
                self._summary = summarize(self._records if self._records is not None else iter_records(self.path))
        return self._summary

    def record_counts(self) -> Dict[str, int]:
        """Records per type: from run_end's count (plus what follows it) without reading the body, or from
        the pass that looked for run_end; else one streamed pass."""
        if self._records is None:
            self._find_end()
            if self._scanned is not None:
                return dict(self._scanned["counts"])
            counts = (self._end or {}).get("records") if self._tail_end else None
            if isinstance(counts, dict) and all(type(v) is int for v in counts.values()):
                counts = dict(counts)
                for r in self._after:
                    t = r.get("type", "?")
                    counts[t] = counts.get(t, 0) + 1
                return counts
        counts = {}
        for r in self._records if self._records is not None else iter_records(self.path):
            t = r.get("type", "?")
            counts[t] = counts.get(t, 0) + 1
        return counts

    def final(self) -> Dict[str, Any]:
        """The last value of every metric path."""
        return {k: v.get("last") for k, v in self.summary.items()}

    # --- the whole file ------------------------------------------------------------------------
    @property
    def records(self) -> List[Dict[str, Any]]:
        self._parse()
        if self._records is None:
            self._records = list(iter_records(self.path))
            ends = [r for r in self._records if r.get("type") == "run_end"]
            if ends:
                self._set_end(ends[-1])
        return self._records

    def stream(self) -> Iterator[Dict[str, Any]]:
        """Every record in file order, without holding them (the list when it is already read)."""
        return iter(self._records) if self._records is not None else iter_records(self.path)

    @property
    def tracks(self) -> List[Dict[str, Any]]:
        return [r for r in self.records if r.get("type") == "track"]

    def of_type(self, rtype: str) -> List[Dict[str, Any]]:
        """The records of one type in file order; a file not read whole is searched for the type's bytes
        and only those lines are parsed (artifacts of a million-track run cost no million parses)."""
        if self._records is not None:
            return [r for r in self._records if r.get("type") == rtype]
        if self._scanned is not None and rtype in OFFSET_TYPES:
            return [r for r in self._scanned["kept"] if r.get("type") == rtype]
        known = self._placed((rtype,))
        if known is not None:
            return known
        pattern = re.compile(rb'"type"\s*:\s*"' + re.escape(rtype.encode("utf-8")) + rb'"')
        out = []
        for line, last in _lines_matching(self.path, pattern):
            rec = parse_line(line, self.path, 0, last)
            if rec is not None and rec.get("type") == rtype:
                out.append(rec)
        return out

    def _placed(self, types: Tuple[str, ...]) -> Optional[List[Dict[str, Any]]]:
        """The records of these types in file order without reading the body, or None when that cannot be
        known: the tail must hold the file's last run_end and all that follows it, and run_end must count
        the types before it and say where each one starts (`offsets`); every line found there is checked."""
        end = self.end
        if end is None or not self._tail_end:
            return None
        counts, offsets = end.get("records"), end.get("offsets")
        if not isinstance(counts, dict):
            return None
        wanted: List[Tuple[int, str]] = []
        for t in types:
            n = counts.get(t, 0)
            at = offsets.get(t) if isinstance(offsets, dict) else None
            if type(n) is not int or n < 0 or (n and not (isinstance(at, list) and len(at) == n)):
                return None
            wanted.extend((o, t) for o in at or ())
        found: List[Dict[str, Any]] = []
        if wanted:
            if not all(type(o) is int and o > 0 for o, _ in wanted) or len({o for o, _ in wanted}) < len(wanted):
                return None
            try:
                with open(self.path, "rb") as f:
                    for o, t in sorted(wanted):
                        f.seek(o - 1)
                        if f.read(1) != b"\n":  # not where a line starts
                            return None
                        line = f.readline(LINE_CAP + 1)
                        try:
                            rec = json.loads(line) if line.endswith(b"\n") else None
                        except (ValueError, RecursionError):
                            rec = None
                        if type(rec) is not dict or rec.get("type") != t:
                            return None
                        found.append(rec)
            except OSError:
                return None
        found.extend(r for r in self._after if r.get("type") in types)
        return found

    def history(self, metric: str) -> List[Dict[str, Any]]:
        """Every tracked value of a metric path: {seq, step, value, elapsed_ms}."""
        return [point(r, v) for r, v in metric_values(self.stream(), metric)]

    # --- notes and tags (the memory of why) ----------------------------------------------------
    def _memory(self) -> List[Dict[str, Any]]:
        """note and tag records in file order, from anywhere in the file.

        A listing has only the tail, and a note written during the run may sit among a million tracks:
        the bytes are searched for the record type and only those lines are parsed, which gives what
        reading every line gives at a fraction of the cost.
        """
        if self._memo is None:
            if self._memo_data is not None:  # the whole (small) file, as the listing just read it
                data, self._memo_data = self._memo_data, None
                cut = data.rfind(b"\n") + 1
                found = [rec for rec in (parse_line(line, self.path, 0, False) for line in _matching(data[:cut], _MEMORY_LINE))
                         if rec is not None and rec.get("type") in ("note", "tag")]
                last = data[cut:]
                if last and _MEMORY_LINE.search(last):
                    rec = parse_line(last, self.path, 0, True)
                    if rec is not None and rec.get("type") in ("note", "tag"):
                        found.append(rec)
                self._memo = found
            elif self._memo_raw:
                self._memo = json.loads(self._memo_raw)  # the listing cache's copy
            elif self._records is not None:
                self._memo = [r for r in self._records if r.get("type") in ("note", "tag")]
            elif self._scanned is not None:
                self._memo = [r for r in self._scanned["kept"] if r.get("type") in ("note", "tag")]
            elif (placed := self._placed(("note", "tag"))) is not None:
                self._memo = placed
            else:
                found: List[Dict[str, Any]] = []
                try:
                    for line, last in _lines_matching(self.path, _MEMORY_LINE):
                        rec = parse_line(line, self.path, 0, last)
                        if rec is not None and rec.get("type") in ("note", "tag"):
                            found.append(rec)
                except OSError:
                    pass
                self._memo = found
        return self._memo

    @property
    def notes(self) -> List[Dict[str, Any]]:
        """The run's note records, in file order (append-only: a correction is a later note)."""
        return [r for r in self._memory() if r.get("type") == "note" and isinstance(r.get("text"), str)]

    @property
    def tags(self) -> List[str]:
        """The fold of the run's tag records in file order: added, then removed, in the order first added."""
        out: List[str] = []
        for r in self._memory():
            if r.get("type") != "tag":
                continue
            add, remove = r.get("add"), r.get("remove")
            for t in add if isinstance(add, list) else []:
                if isinstance(t, str) and t not in out:
                    out.append(t)
            for t in remove if isinstance(remove, list) else []:
                if t in out:
                    out.remove(t)
        return out

    def __repr__(self) -> str:
        return f"<Run {self.short_id} {self.name!r} {self.status}>"


def track_value(rec: Dict[str, Any], parts: List[str], metric: str) -> Any:
    """`metric`'s value in a track record (None when absent): plain nested keys walked here, the common
    case over a million records; anything else by `metric_values` (list indexes, dotted keys, a bare value)."""
    cur = rec.get("value")
    for part in parts:
        if type(cur) is dict and part in cur:
            cur = cur[part]
        else:
            found = [v for _, v in metric_values((rec,), metric)]
            return found[0] if found else None
    return cur


def metric_values(recs: Iterable[Dict[str, Any]], metric: str) -> Iterator[Tuple[Dict[str, Any], Any]]:
    """(track record, raw value at `metric`) for each track holding the path (a None value is no point)."""
    get = records.get_path
    parts = records.split_path(metric)
    for r in recs:
        if r.get("type") != "track":
            continue
        value = r.get("value")
        if type(value) is dict:
            v = value
            for part in parts:  # plain nested keys inline; anything else as get_path reads it
                if type(v) is dict and part in v:
                    v = v[part]
                else:
                    try:
                        v = get(value, metric)
                    except KeyError:
                        v = None
                    break
        elif isinstance(value, dict):
            try:
                v = get(value, metric)
            except KeyError:
                continue
        elif metric == "value":
            v = value
        else:
            continue
        if v is not None:
            yield r, v


_OTHER_AXES = tuple(a for a in records.AXES if a != "step")


def point(r: Dict[str, Any], v: Any) -> Dict[str, Any]:
    """A history point: seq, step, value, elapsed_ms, and any other axis the record holds (epoch...)."""
    value = r.get("value")
    step = value.get("step") if isinstance(value, dict) else None
    out = {"seq": r.get("seq"), "step": step, "value": records.from_json(v), "elapsed_ms": r.get("elapsed_ms")}
    if isinstance(value, dict):
        for axis in _OTHER_AXES:
            if axis in value:
                out[axis] = value[axis]
    return out


def summarize(recs: Iterable[Dict[str, Any]]) -> Dict[str, Dict[str, Any]]:
    """What run_end.summary would hold, from the tracks of a run that has none."""
    acc = records.Summary()
    for r in recs:
        if r.get("type") == "track":
            acc.add(records.from_json(r.get("value")))
    return acc.to_dict()


def scan_end(path: str, seen: Optional[Dict[str, Any]] = None) -> Tuple[Optional[Dict[str, Any]], Optional[Dict[str, Dict[str, Any]]]]:
    """The file's last run_end in one streamed pass; without one, the summary of its tracks instead.
    `seen`, when given, receives what else that pass saw: `counts` per type and, in file order, the
    records of OFFSET_TYPES as `kept` (a crashed run's `show` reads its file once)."""
    end = None
    acc = records.Summary()
    counts: Dict[str, int] = {}
    kept: List[Dict[str, Any]] = []
    for rec in iter_records(path):
        t = rec.get("type")
        counts[t] = counts.get(t, 0) + 1
        if t == "track":
            acc.add(records.from_json(rec.get("value")))
        elif t == "run_end":
            end = rec
        elif t in OFFSET_TYPES:
            kept.append(rec)
    if seen is not None:
        seen.update(counts=counts, kept=kept)
    return end, (None if end is not None else acc.to_dict())


def load_run(ref: str = "latest", root: Optional[str] = None) -> Run:
    """One run, read whole: `ref` is a run id, unique prefix/suffix, `latest`, `latest~N` or a .jsonl path."""
    folder = ids.runs_dir(root)
    return Run.read(ids.resolve(ref, folder), full=True)


OUTPUT_LOG = "output.log"


class LogError(ValueError):
    """A bad --grep pattern."""


def output_log(run: Run) -> Optional[str]:
    """The file holding what a wrapped command printed (`exprag-plus run`), if the run has one (never a
    symlink planted there: it would read a file outside the runs folder)."""
    path = _log_path(run)
    return path if os.path.isfile(path) and not os.path.islink(path) else None


def _log_path(run: Run) -> str:
    return os.path.join(os.path.dirname(run.path), run.run_id, OUTPUT_LOG)


def no_output(run: Run) -> str:
    """Why a run has no output to show: never captured, or captured and since deleted (`read_log` None)."""
    if isinstance(run.start.get("command"), dict):
        return f"run {run.short_id}'s output.log is gone: {_log_path(run)} was deleted or moved"
    return f"run {run.short_id} has no captured output (only `exprag-plus run -- CMD` captures a command's output)"


def read_log(run: Run, tail: Optional[int] = None, grep: Optional[str] = None) -> Optional[List[bytes]]:
    """The lines of a run's captured output, or None when it has none; `tail` reads only the file's end."""
    path = output_log(run)
    if path is None:
        return None
    pat = None
    if grep is not None:
        try:
            pat = re.compile(grep.encode("utf-8", "surrogateescape"))
        except re.error as exc:
            raise LogError(f"--grep {grep!r} is not a regular expression: {exc}") from None
    if tail and pat is None:
        with open(path, "rb") as f:
            pos = os.fstat(f.fileno()).st_size
            data = b""
            while pos > 0 and data.count(b"\n") <= tail:
                step = min(1 << 16, pos)
                pos -= step
                f.seek(pos)
                data = f.read(step) + data
        return _shown(data.splitlines(keepends=True)[-tail:])
    hits: List[bytes] = []
    with open(path, "rb") as f:
        for line in f:
            if pat is None or pat.search(line):
                hits.append(line)
                if tail and len(hits) > tail:
                    del hits[0]
    return _shown(hits)


def _shown(lines: List[bytes]) -> List[bytes]:
    """Lines as `log` shows them: a credential the program printed (a config dump) is hidden."""
    from .redact import redact_text

    return [redact_text(l.decode("utf-8", "surrogateescape")).encode("utf-8", "surrogateescape") for l in lines]

"""Record construction and strict-JSON encoding.

The JSONL files are the product's real API, so everything that goes into them passes through here:
odd Python values become plain JSON, non-finite floats become the strings "NaN"/"Infinity"/"-Infinity"
(never JSON literals), and readers turn those strings back into floats.
"""

from __future__ import annotations

import enum
import json
import math
import os
import re
import sys
import time
import warnings
TYPE_CHECKING = False  # typing costs start-up; annotations here are never evaluated
if TYPE_CHECKING:
    from typing import Any, Dict, Iterator, List, Optional, Tuple

FORMAT = "exprag-plus/1"
RECORD_TYPES = ("run_start", "track", "action", "action_run", "task", "run_end", "note", "tag")

NONFINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
_SMALL_ARRAY = 10_000
# What every reader can load back: Python's json parser recurses per level (about 1,000 at most, fewer
# when called deep in a stack) and refuses integers over 4,300 digits (the default of Python 3.11+).
MAX_DEPTH = 100
MAX_INT_DIGITS = 4300
_INT_TEXT_DIGITS = 100_000  # beyond this an integer is stored as its size only

# One shared C encoder: `json.dumps(..., allow_nan=False)` would build a new encoder on every call.
_encoder = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))
_raw_dumps = _encoder.encode
_SURROGATE = re.compile("[\ud800-\udfff]")
_LONG_DIGITS = re.compile(r"\d{%d}" % (MAX_INT_DIGITS + 1))


def dumps(value: Any) -> str:
    """Strict JSON text that encodes as strict UTF-8 and that every reader can load.

    The fast C encoder first. Text holding lone surrogates (undecodable bytes of an argv, a path, a
    name) is re-encoded with them escaped. A value nested deeper than MAX_DEPTH or holding an integer
    over MAX_INT_DIGITS digits raises ValueError, like any non-JSON value: callers fall back to
    `to_json`, which flattens it.
    """
    text = _raw_dumps(value)
    if (text.count("[") + text.count("{") > MAX_DEPTH
            or (len(text) > MAX_INT_DIGITS and not _int_limit_active() and _LONG_DIGITS.search(text))):
        problem = _unreadable(value)
        if problem:
            raise ValueError(problem)
    if not text.isascii() and _SURROGATE.search(text):
        return _raw_dumps(to_json(value))
    return text


def _int_limit_active() -> bool:
    """True when the C encoder itself refuses integers too long for default readers."""
    get = getattr(sys, "get_int_max_str_digits", None)
    return get is not None and 0 < get() <= MAX_INT_DIGITS


def _unreadable(value: Any) -> str:
    """Why plain JSON data would fail a reader (too deep, too long an integer), or ''."""
    stack = [(value, 1)]
    while stack:
        v, depth = stack.pop()
        if isinstance(v, dict):
            if depth > MAX_DEPTH:
                return f"nested deeper than {MAX_DEPTH} levels"
            stack.extend((x, depth + 1) for x in v.values())
        elif isinstance(v, (list, tuple)):
            if depth > MAX_DEPTH:
                return f"nested deeper than {MAX_DEPTH} levels"
            stack.extend((x, depth + 1) for x in v)
        elif isinstance(v, int) and v.bit_length() > 14_000 and _too_long(v):
            return f"an integer over {MAX_INT_DIGITS} digits"
    return ""


def _too_long(n: int) -> bool:
    return n.bit_length() > 14_300 or len(_int_digits(n)) > MAX_INT_DIGITS


def _int_digits(n: int) -> str:
    """Decimal digits of any int, even past the interpreter's str() limit."""
    sign, n = ("-", -n) if n < 0 else ("", n)
    chunk = 10 ** 4000
    parts = []
    while n >= chunk:
        n, r = divmod(n, chunk)
        parts.append(str(r).zfill(4000))
    parts.append(str(n))
    return sign + "".join(reversed(parts))


def escape_surrogates(text: str) -> str:
    """Text that encodes as strict UTF-8: a lone surrogate becomes the literal text `\\xff` when it stands
    for an undecodable byte (Python's surrogateescape), else `\\udXXX`; git paths read the same way."""
    if text.isascii() or not _SURROGATE.search(text):
        return text
    return _SURROGATE.sub(_escape_one, text)


def _escape_one(m: "re.Match[str]") -> str:
    c = ord(m.group())
    return "\\x%02x" % (c - 0xDC00) if 0xDC80 <= c <= 0xDCFF else "\\u%04x" % c


class OddValueWarning(UserWarning):
    """A tracked value could not be encoded as JSON and was stored as its repr."""


def nonfinite_text(x: float) -> str:
    if x != x:
        return "NaN"
    return "Infinity" if x > 0 else "-Infinity"


def to_json(value: Any, _depth: int = 0) -> Any:
    """Turn any value into strict-JSON-able data; never raises."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return escape_surrogates(value)
    if isinstance(value, int):
        return value if value.bit_length() <= 14_000 or not _too_long(value) else _long_int(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else nonfinite_text(value)
    if _depth >= MAX_DEPTH - 1:  # the marker below is itself one level
        return _repr(value, f"nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, dict):
        return {escape_surrogates(k if isinstance(k, str) else str(k)): to_json(v, _depth + 1)
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v, _depth + 1) for v in value]
    if isinstance(value, enum.Enum):
        return to_json(value.value, _depth + 1)
    if isinstance(value, (set, frozenset)):
        items = [to_json(v, _depth + 1) for v in value]
        try:
            return sorted(items)
        except TypeError:
            return sorted(items, key=repr)
    dt = sys.modules.get("datetime")  # (not imported: no value can be one)
    if dt is not None and isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if dt is not None and isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    dataclasses = sys.modules.get("dataclasses")  # not loaded: no value can be a dataclass (start-up stays light)
    if dataclasses is not None and dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_json({f.name: getattr(value, f.name, None) for f in dataclasses.fields(value)}, _depth + 1)
    if isinstance(value, (bytes, bytearray)):
        return value.decode("utf-8", "backslashreplace")
    # numpy / torch / jax scalars and small arrays, without importing any of them
    try:
        size = getattr(value, "size", None)
        if callable(size):
            size = size()
        if size == 1 and hasattr(value, "item"):
            return to_json(value.item(), _depth + 1)
        if hasattr(value, "tolist") and isinstance(size, int) and size <= _SMALL_ARRAY:
            if hasattr(value, "detach"):
                value = value.detach().cpu()
            return to_json(value.tolist(), _depth + 1)
    except Exception:
        pass
    try:  # even hasattr raises when __getattr__ raises something other than AttributeError
        if hasattr(value, "__float__") and not isinstance(value, complex):
            return to_json(float(value), _depth + 1)
    except Exception:
        pass
    return _repr(value)


_warned_types = set()


def _repr(value: Any, why: str = "") -> Dict[str, str]:
    name = type(value).__qualname__
    if (why or name) not in _warned_types:
        _warned_types.add(why or name)
        warnings.warn(
            f"exprag-plus: a value {why or f'of type {name} is not JSON-able'}; stored as {{'__repr__': ...}}",
            OddValueWarning,
            stacklevel=4,
        )
    try:
        text = repr(value)
    except Exception as exc:  # a broken (or too deep) __repr__ must not break tracking either
        text = f"<{name} (repr failed: {type(exc).__name__})>"
    return {"__repr__": escape_surrogates(text[:2000])}


def _long_int(n: int) -> Dict[str, Any]:
    """An integer too long for JSON readers, as text: `{"__int__": "<decimal digits>"}`."""
    if "int" not in _warned_types:
        _warned_types.add("int")
        warnings.warn(f"exprag-plus: an integer over {MAX_INT_DIGITS} digits is stored as {{'__int__': '<digits>'}}",
                      OddValueWarning, stacklevel=4)
    if n.bit_length() > _INT_TEXT_DIGITS * 3.33:
        return {"__int__": None, "bits": n.bit_length()}
    return {"__int__": _int_digits(n)}


def encode(value: Any) -> str:
    """JSON text for a value: the fast C path when it is plain, the careful path otherwise."""
    try:
        return dumps(value)
    except (TypeError, ValueError, OverflowError, RecursionError):
        return _raw_dumps(to_json(value))


def from_json(value: Any) -> Any:
    """Undo the non-finite encoding in parsed data."""
    if isinstance(value, str):
        return NONFINITE.get(value, value)
    if isinstance(value, dict):
        return {k: from_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [from_json(v) for v in value]
    return value


def jsonable(value: Any) -> Any:
    """Strict-JSON-able output data (the inverse of from_json, plus odd values)."""
    return to_json(value)


class Clock:
    """ISO-8601 UTC timestamps with microseconds; the per-second prefix is cached because track() is hot."""

    __slots__ = ("_second", "_prefix")

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def now(self) -> str:
        t = time.time()
        second = int(t)
        if second != self._second:
            self._second = second
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return "%s.%06dZ" % (self._prefix, int((t - second) * 1_000_000))


_ISO = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})\.([0-9]{6})Z")


def _datetime() -> Any:
    """The datetime module, imported on first use (`--help` and most writes never need it)."""
    mod = sys.modules.get("datetime")
    if mod is None:
        import datetime as mod
    return mod


def parse_time(text: str) -> Optional[float]:
    """Epoch seconds from a record's `time`, or None (the writer's own form without strptime: listing
    100,000 runs sorts by it)."""
    m = _ISO.fullmatch(text) if type(text) is str else None
    _dt = _datetime()
    try:
        if m:
            return _dt.datetime(*map(int, m.groups()), tzinfo=_dt.timezone.utc).timestamp()
        return _dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=_dt.timezone.utc).timestamp()
    except (TypeError, ValueError):
        return None


# --- metric paths --------------------------------------------------------------------------------


# Names of the x-axis of histories: reported as axes, never ranked nor listed among metrics.
AXES = ("step", "epoch", "iteration", "iter", "global_step")


def is_axis(path: str) -> bool:
    """Whether a metric path names a step counter (its last part is one of AXES)."""
    return path.rsplit(".", 1)[-1] in AXES


def is_text_entry(entry: Any) -> bool:
    """A summary entry of a text or boolean path (no min/max, and its last value is not a number)."""
    if not isinstance(entry, dict) or "min" in entry or "max" in entry:
        return False
    last = entry.get("last")
    return not is_number(NONFINITE.get(last, last) if isinstance(last, str) else last)


def is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def escape_key(key: Any) -> str:
    """A dict key as one path segment: `.` and `\\` inside it are backslash-escaped, so `{"val.acc": x}`
    is `val\\.acc` and never collides with `{"val": {"acc": x}}` (`val.acc`)."""
    key = key if isinstance(key, str) else str(key)
    if "." in key or "\\" in key:
        return key.replace("\\", "\\\\").replace(".", "\\.")
    return key


def split_path(path: str) -> List[str]:
    """The keys of a path: split at unescaped dots; a backslash keeps the next character as it is."""
    if "\\" not in path:
        return path.split(".")
    parts, cur, i = [], [], 0
    while i < len(path):
        c = path[i]
        if c == "\\" and i + 1 < len(path):
            cur.append(path[i + 1])
            i += 2
            continue
        if c == ".":
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(c)
        i += 1
    parts.append("".join(cur))
    return parts


def normal_path(path: str) -> str:
    """A path as `flatten` writes it: a backslash is kept only before `.` and `\\` (so `eval\\:loss`, typed
    to keep a `:` from reading as `:STAT`, is the listed `eval:loss`)."""
    if "\\" not in path:
        return path
    return ".".join(escape_key(k) for k in split_path(path))


def flatten(value: Any, prefix: str = "") -> Iterator[Tuple[str, Any]]:
    """(path, leaf) pairs; a non-dict value tracked alone is under the path `value`."""
    if not isinstance(value, dict):
        yield (prefix or "value"), value
        return
    for k, v in value.items():
        path = f"{prefix}.{escape_key(k)}" if prefix else escape_key(k)
        if isinstance(v, dict):
            yield from flatten(v, path)
        else:
            yield path, v


def get_path(data: Any, path: str) -> Any:
    """The value at a path (dict keys, list indexes; see `split_path`), or KeyError.

    A path without escapes that names no nested value also matches a key holding those dots, as files
    written before escaping listed it."""
    cur = data
    for part in split_path(path):
        if isinstance(cur, dict) and part in cur:
            cur = cur[part]
        elif isinstance(cur, list) and part.lstrip("-").isdigit() and -len(cur) <= int(part) < len(cur):
            cur = cur[int(part)]
        else:
            if isinstance(data, dict) and "\\" not in path and path in data:
                return data[path]
            raise KeyError(path)
    return cur


def _summary_key(key: Any) -> str:
    """A key's path segment as readers will see it: undecodable bytes as the text written for them."""
    return escape_key(escape_surrogates(key) if type(key) is str and not key.isascii() else key)


class Summary:
    """Running per-path statistics: what run_end.summary holds.

    Numeric leaves get last/min/max/count/nonfinite; text and boolean leaves are data too ("decision":
    "kept") and get only last/count. A path tracked both ways reports its numbers.
    """

    __slots__ = ("stats", "texts")

    def __init__(self) -> None:
        # path -> [last, min, max, count, nonfinite, last_step, min_step, max_step]
        self.stats: Dict[str, list] = {}
        # path -> [last, count, last_step]
        self.texts: Dict[str, list] = {}

    def _text(self, path: str, v: Any, step: Any) -> None:
        t = self.texts.get(path)
        if t is None:
            self.texts[path] = [v, 1, step]
        else:
            t[0] = v
            t[1] += 1
            t[2] = step

    def add(self, value: Any) -> None:
        step = value.get("step") if isinstance(value, dict) else None
        if not is_number(step):
            step = None
        if isinstance(value, dict):
            self._walk(value, "", step)
        elif is_number(value):
            self._one("value", value, None)
        elif isinstance(value, (str, bool)):
            self._text("value", value, None)

    def _walk(self, d: dict, prefix: str, step: Any) -> None:
        for k, v in d.items():
            if isinstance(v, float) or (isinstance(v, int) and not isinstance(v, bool)):
                self._one(prefix + (k if type(k) is str and k.isascii() and "." not in k and "\\" not in k
                                    else _summary_key(k)), v, step)
            elif isinstance(v, dict):
                self._walk(v, prefix + _summary_key(k) + ".", step)
            elif isinstance(v, (str, bool)):
                self._text(prefix + _summary_key(k), v, step)

    def _one(self, path: str, v: Any, step: Any) -> None:
        s = self.stats.get(path)
        finite = v == v and v not in (math.inf, -math.inf)
        if s is None:
            self.stats[path] = [v, v if finite else None, v if finite else None, 1, 0 if finite else 1,
                                step, step if finite else None, step if finite else None]
            return
        s[0] = v
        s[3] += 1
        s[5] = step
        if not finite:
            s[4] += 1
            return
        if s[1] is None or v < s[1]:
            s[1] = v
            s[6] = step
        if s[2] is None or v > s[2]:
            s[2] = v
            s[7] = step

    def to_dict(self) -> Dict[str, Dict[str, Any]]:
        out = {}
        for path, (last, lo, hi, count, nonfinite, last_step, lo_step, hi_step) in self.stats.items():
            entry: Dict[str, Any] = {"last": last, "min": lo, "max": hi, "count": count, "nonfinite": nonfinite}
            if last_step is not None or lo_step is not None or hi_step is not None:
                entry.update(last_step=last_step, min_step=lo_step, max_step=hi_step)
            out[path] = entry
        for path, (last, count, last_step) in self.texts.items():
            if path not in out:
                out[path] = {"last": last, "count": count} if last_step is None else \
                    {"last": last, "count": count, "last_step": last_step}
        return out


# --- secrets: the rules live in redact.py; these names stay for existing callers --------------------

def __getattr__(name: str) -> Any:
    if name in ("REDACTED", "redact_argv"):
        from . import redact
        return getattr(redact, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

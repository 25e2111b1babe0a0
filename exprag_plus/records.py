"""Record construction and strict-JSON encoding.

The JSONL files are the product's real API, so everything that goes into them passes through here:
odd Python values become plain JSON, non-finite floats become the strings "NaN"/"Infinity"/"-Infinity"
(never JSON literals), and readers turn those strings back into floats.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import enum
import json
import math
import os
import re
import time
import warnings
from typing import Any, Dict, Iterator, List, Optional, Tuple

FORMAT = "exprag-plus/1"
RECORD_TYPES = ("run_start", "track", "action", "action_run", "task", "run_end", "note", "tag")

NONFINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
_SMALL_ARRAY = 10_000

# One shared C encoder: `json.dumps(..., allow_nan=False)` would build a new encoder on every call.
_encoder = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))
dumps = _encoder.encode


class OddValueWarning(UserWarning):
    """A tracked value could not be encoded as JSON and was stored as its repr."""


def nonfinite_text(x: float) -> str:
    if x != x:
        return "NaN"
    return "Infinity" if x > 0 else "-Infinity"


def to_json(value: Any, _depth: int = 0) -> Any:
    """Turn any value into strict-JSON-able data; never raises."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else nonfinite_text(value)
    if _depth > 64:
        return _repr(value)
    if isinstance(value, dict):
        return {str(k) if not isinstance(k, str) else k: to_json(v, _depth + 1) for k, v in value.items()}
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
    if isinstance(value, (_dt.datetime, _dt.date, _dt.time)):
        return value.isoformat()
    if isinstance(value, _dt.timedelta):
        return value.total_seconds()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
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


def _repr(value: Any) -> Dict[str, str]:
    name = type(value).__qualname__
    if name not in _warned_types:
        _warned_types.add(name)
        warnings.warn(
            f"exprag-plus: a value of type {name} is not JSON-able; stored as {{'__repr__': ...}}",
            OddValueWarning,
            stacklevel=4,
        )
    try:
        text = repr(value)
    except Exception as exc:  # a broken __repr__ must not break tracking either
        text = f"<{name} (repr failed: {type(exc).__name__})>"
    return {"__repr__": text[:2000]}


def encode(value: Any) -> str:
    """JSON text for a value: the fast C path when it is plain, the careful path otherwise."""
    try:
        return dumps(value)
    except (TypeError, ValueError, OverflowError, RecursionError):
        return dumps(to_json(value))


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


def parse_time(text: str) -> Optional[float]:
    """Epoch seconds from a record's `time`, or None."""
    try:
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


def flatten(value: Any, prefix: str = "") -> Iterator[Tuple[str, Any]]:
    """(dotted path, leaf) pairs; a non-dict value tracked alone is under the path `value`."""
    if not isinstance(value, dict):
        yield (prefix or "value"), value
        return
    for k, v in value.items():
        path = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict):
            yield from flatten(v, path)
        else:
            yield path, v


def get_path(data: Any, path: str) -> Any:
    """The value at a dotted path (dict keys, list indexes), or KeyError."""
    if isinstance(data, dict) and path in data:
        return data[path]
    cur = data
    for part in path.split("."):
        if isinstance(cur, dict) and part in cur:
            cur = cur[part]
        elif isinstance(cur, list) and part.lstrip("-").isdigit() and -len(cur) <= int(part) < len(cur):
            cur = cur[int(part)]
        else:
            raise KeyError(path)
    return cur


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
                self._one(prefix + str(k), v, step)
            elif isinstance(v, dict):
                self._walk(v, prefix + str(k) + ".", step)
            elif isinstance(v, (str, bool)):
                self._text(prefix + str(k), v, step)

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


# --- secrets ---------------------------------------------------------------------------------------

_SECRET_NAME = re.compile(r"(pass(word|wd)?|secret|token|api[_-]?key|apikey|auth|credential|private[_-]?key|access[_-]?key)",
                          re.IGNORECASE)
_SECRET_VALUE = re.compile(
    r"^(sk-[A-Za-z0-9_-]{16,}|gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}|xox[abpr]-[A-Za-z0-9-]{10,}"
    r"|AKIA[0-9A-Z]{16}|hf_[A-Za-z0-9]{20,}|glpat-[A-Za-z0-9_-]{16,}|eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\..*)$"
)
# The same shapes inside a longer argument (`--header "Authorization: token ghp_..."`, `HF_TOKEN:hf_...`).
_EMBEDDED_SECRET = re.compile(
    r"(?<![A-Za-z0-9_-])(sk-[A-Za-z0-9_-]{16,}|gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}"
    r"|xox[abpr]-[A-Za-z0-9-]{10,}|AKIA[0-9A-Z]{16}|hf_[A-Za-z0-9]{20,}|glpat-[A-Za-z0-9_-]{16,}"
    r"|eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]*)"
)
_AUTH_HEADER = re.compile(r"(?i)(\b(?:proxy-)?authorization\s*[:=]\s*)\S.*")
_URL_CREDENTIALS = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<cred>[^/@\s]+)@")
REDACTED = "***"


def redact_argv(argv: List[str]) -> List[str]:
    """Hide credential-looking argv values: `--token X`, `--password=X`, `KEY=secret`, tokens, URL passwords."""
    out: List[str] = []
    hide_next = False
    for arg in argv:
        arg = str(arg)
        if hide_next:
            hide_next = False
            if not arg.startswith("-"):
                out.append(REDACTED)
                continue
        name, eq, val = arg.partition("=")
        if eq and _SECRET_NAME.search(name) and val:
            out.append(f"{name}={REDACTED}")
            continue
        if arg.startswith("-") and not eq and _SECRET_NAME.search(arg):
            hide_next = True
            out.append(arg)
            continue
        if _SECRET_VALUE.match(val if eq else arg):
            out.append(f"{name}={REDACTED}" if eq else REDACTED)
            continue
        arg = _AUTH_HEADER.sub(lambda m: m[1] + REDACTED, _EMBEDDED_SECRET.sub(REDACTED, arg))
        out.append(_URL_CREDENTIALS.sub(lambda m: f"{m['scheme']}{REDACTED}@", arg))
    return out

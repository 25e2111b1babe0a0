"""The query layer: what `runs`, `keys`, `best`, `history`, `compare` and `show` answer, as JSON-able data.

The CLI and the MCP server only format these results. A path that no run has is an error listing the
nearest known paths, so a typo never looks like "no run matches".
"""

from __future__ import annotations

import difflib
import functools
import gc
import heapq
import json
import math
import os
import re
from json.encoder import encode_basestring_ascii  # type: ignore[attr-defined]
from typing import Any, Callable, Dict, Iterable, List, NamedTuple, Optional, Sequence, Tuple, TypeVar

from . import artifacts, records, store
from .errors import NoResult, QueryError  # noqa: F401  (raised here, caught by the front ends)
from .store import Run, cached_lines, metadatas, summary_stats

FIELDS = ("id", "name", "status", "started", "ended", "duration_s", "commit", "branch", "dirty", "host",
          "replay_of")
# run_start fields a --where can name; a metadata path of the same name comes first (it was there before)
START_FIELDS = ("sweep",)
STATS = ("last", "min", "max", "count", "nonfinite")
# --where paths over a run's memory: any tag / any note text matches (`tag=keep`, `note~regex`)
MEMORY_FIELDS = {"tag": "tags", "tags": "tags", "note": "notes", "notes": "notes"}
OPS = ("<=", ">=", "!=", "=", "<", ">", "~")
STATUSES = ("completed", "failed", "interrupted", "running", "crashed")
_MISSING = object()
F = TypeVar("F", bound=Callable[..., Any])


def _paused_gc(fn: F) -> F:
    """Answers over many runs free nothing while they work: collecting meanwhile only costs time."""
    @functools.wraps(fn)
    def paused(*args: Any, **kwargs: Any) -> Any:
        enabled = gc.isenabled()
        gc.disable()
        try:
            return fn(*args, **kwargs)
        finally:
            if enabled:
                gc.enable()
    return paused  # type: ignore[return-value]


# --- looking values up -----------------------------------------------------------------------------


def _flat(d: Any, prefix: str = "") -> Iterable[Tuple[str, Any]]:
    if isinstance(d, dict) and d:
        for k, v in d.items():
            key = records.escape_key(k)
            yield from _flat(v, f"{prefix}.{key}" if prefix else key)
    elif prefix:
        yield prefix, d


def metadata_paths(run: Run) -> Dict[str, Any]:
    return dict(_flat(run.metadata))


def _stat_split(path: str) -> Tuple[str, str]:
    """(base, STAT) of `PATH:STAT` when the text after the last unescaped `:` is a word; else (path, "")."""
    cut = path.rfind(":")
    if cut <= 0 or path[cut - 1] == "\\" or not re.fullmatch(r"[A-Za-z_]+", path[cut + 1:]):
        return path, ""
    return path[:cut], path[cut + 1:]


def field(run: Run, path: str) -> Any:
    """A run's value at PATH: a run field, a metadata path, or a metric path (its last value; `PATH:STAT`).

    A metric whose own name has `:WORD` in it is found whole first (`eval:loss`)."""
    if path in FIELDS:
        return _run_field(run, path)
    md = run.metadata
    try:
        return records.get_path(md, path)
    except KeyError:
        pass
    if path in START_FIELDS and path in run.start:
        return run.start[path]
    path = records.normal_path(path)
    entry = run.summary_entry(path)
    if entry is not None:
        return entry.get("last", _MISSING)
    metric, stat = _stat_split(path)
    entry = run.summary_entry(records.normal_path(metric)) if stat else None
    if entry is None:
        return _MISSING
    return entry.get(stat, _MISSING)


_RUN_FIELDS: Dict[str, Callable[[Run], Any]] = {
    "id": lambda r: r.run_id, "name": lambda r: r.name, "status": lambda r: r.status,
    "started": lambda r: r.started, "ended": lambda r: r.ended, "duration_s": lambda r: r.duration_s,
    "commit": lambda r: r.code["commit"], "branch": lambda r: r.code["branch"], "dirty": lambda r: r.code["dirty"],
    "host": lambda r: r.host.get("hostname"), "replay_of": lambda r: r.code["replay_of"],
}


def _run_field(run: Run, name: str) -> Any:
    return _RUN_FIELDS[name](run)  # only what is asked: `status` of a cached run decodes no run_start


def known_paths(runs: Sequence[Run]) -> Tuple[List[str], List[str]]:
    """(metadata paths, metric paths) present in any of the runs, sorted."""
    md, mt = set(), set()
    for r in runs:
        md.update(metadata_paths(r))
        mt.update(r.summary)
    return sorted(md), sorted(mt)


def _has(run: Run, path: str, metric_only: bool) -> bool:
    if run.summary_entry(records.normal_path(path)) is not None:
        return True
    if metric_only:
        return False
    if path in START_FIELDS and path in run.start:
        return True
    try:
        records.get_path(run.metadata, path)
        return True
    except KeyError:
        return False


def _known(path: str, runs: Sequence[Run], metric_only: bool) -> bool:
    return (not metric_only and (path in FIELDS or path in MEMORY_FIELDS)) or any(_has(r, path, metric_only) for r in runs)


def check_path(path: str, runs: Sequence[Run], what: str, metric_only: bool = False) -> None:
    """A path some run has (whole, else as `BASE:STAT`), else QueryError naming the nearest known paths."""
    if _known(path, runs, metric_only):
        return
    base, stat = _stat_split(path)
    if stat and stat not in STATS and _known(base, runs, metric_only):
        raise QueryError(f"{what}: unknown statistic ':{stat}' in {path!r}; use one of {', '.join(STATS)}")
    if stat and _known(base, runs, metric_only):
        return
    md, mt = known_paths(runs)
    candidates = mt if metric_only else list(FIELDS) + md + mt
    if not runs:
        raise NoResult(f"{what}: there are no runs to look in")
    shown = base if stat in STATS else path
    near = difflib.get_close_matches(shown, candidates, n=4, cutoff=0.5) or sorted(candidates)[:4]
    kind = "metric" if metric_only else "field, metadata or metric"
    hint = f"; nearest: {', '.join(near)}" if near else ""
    raise QueryError(f"{what}: no run has the {kind} path {shown!r}{hint} (see `exprag-plus keys`)")


# --- --where ---------------------------------------------------------------------------------------


class Condition(NamedTuple):
    path: str
    op: str
    value: Any
    text: str

    def __call__(self, run: Run) -> bool:
        if self.path in MEMORY_FIELDS:
            values = run.tags if MEMORY_FIELDS[self.path] == "tags" else [n.get("text") for n in run.notes]
            hit = any(_compare(v, "~" if self.op == "~" else "=", self.value) for v in values if isinstance(v, str))
            return not hit if self.op == "!=" else hit
        return self.holds(field(run, self.path))

    def holds(self, got: Any) -> bool:
        """Whether a run whose value at the path is `got` (`field`'s answer) matches."""
        if got is _MISSING or got is None and self.op != "=":
            return False
        return _compare(got, self.op, self.value)


def _splits(expr: str) -> List[Tuple[str, str, str]]:
    """Every (path, op, value) reading of `expr`: at each operator not escaped by a backslash."""
    out = []
    i = 0
    while i < len(expr):
        if expr[i] == "\\":
            i += 2
            continue
        for op in ("<=", ">=", "!=", "==", "=", "<", ">", "~"):
            if expr.startswith(op, i):
                path = expr[:i].strip()
                if path:
                    out.append((path, op, expr[i + len(op):].strip()))
        i += 1
    return out


def parse_where(expr: str, runs: Optional[Sequence[Run]] = None) -> Condition:
    """`PATH OP VALUE` with OP one of = != < <= > >= ~ (regex search). VALUE is JSON if it parses, else text.

    A path may itself hold operator characters (`eval=loss<2`): the reading whose path a run has wins
    (the longest such path); a backslash before a character makes it part of the path (`a\\=b<2`)."""
    readings = _splits(expr or "")
    if not readings:
        raise QueryError(f"bad --where {expr!r}: write PATH OP VALUE with OP one of {' '.join(OPS)}, e.g. 'hparams.lr<0.01'")
    path, op, raw = readings[0]
    if runs is not None and len(readings) > 1:
        known = [r for r in readings if _known(r[0], runs, False) or _known(_stat_split(r[0])[0], runs, False)]
        if known:
            path, op, raw = max(known, key=lambda r: len(r[0]))
    op = "=" if op == "==" else op
    if path in MEMORY_FIELDS and op not in ("=", "!=", "~"):
        raise QueryError(f"bad --where {expr!r}: {path} takes = != or ~ (regex), e.g. 'tag=keep' or 'note~lr'")
    if raw == "":
        raise QueryError(f"bad --where {expr!r}: nothing after {op!r}; give a value")
    glued = op + raw.lstrip()[:1]
    if glued in ("=>", "=<", "!>", "!<", "<>", "=~", "=!"):
        raise QueryError(f"bad --where {expr!r}: {glued!r} is no operator; use one of {' '.join(OPS)} "
                         f"(e.g. '{path}>=VALUE')")
    if op == "~":
        try:
            value: Any = re.compile(raw)
        except re.error as exc:
            raise QueryError(f"bad --where {expr!r}: invalid regular expression ({exc})") from None
    else:
        try:
            value = records.from_json(json.loads(raw))
        except ValueError:
            value = raw
    return Condition(path, op, value, expr)


def _compare(got: Any, op: str, want: Any) -> bool:
    if op == "~":
        text = got if isinstance(got, str) else json.dumps(records.to_json(got))
        return want.search(text) is not None
    if records.is_number(got) and records.is_number(want):
        a, b = got, want  # Python orders ints and floats exactly: no float() to overflow on huge ints
    elif isinstance(got, bool) or isinstance(want, bool):
        a, b = got, want
        if op not in ("=", "!="):
            return False
    elif op not in ("=", "!=") and (records.is_number(got) or records.is_number(want)):
        return False  # text is neither above nor below a number ("x" > 2 must not hold by spelling)
    else:  # lists and dicts compare as JSON text; sorted keys, since metadata keeps the script's key order
        a = got if isinstance(got, str) else json.dumps(records.to_json(got), sort_keys=True)
        b = want if isinstance(want, str) else json.dumps(records.to_json(want), sort_keys=True)
    if op in ("=", "!="):
        same = a == b or (a != a and b != b)  # NaN = NaN here: `loss!=NaN` must drop diverged runs
        return same if op == "=" else not same
    if type(a) is not type(b) and not (records.is_number(a) and records.is_number(b)):
        return False
    if a != a or b != b:  # NaN is neither above nor below anything
        return False
    return {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[op]


def select(runs: Sequence[Run], where: Sequence[str]) -> List[Run]:
    if not where:
        return list(runs)
    conds = [parse_where(w, runs) for w in where]
    for c in conds:
        check_path(c.path, runs, f"--where {c.text!r}")
    columns = [None if c.path in MEMORY_FIELDS else _fields(runs, c.path) for c in conds]  # read in bulk
    for c, col in zip(conds, columns):
        if col is None or not isinstance(c.value, str) or c.op == "~":
            continue
        held = [v for v in col if v is not _MISSING and v is not None]
        if c.path == "status" and c.op in ("=", "!=") and c.value not in STATUSES and c.value not in held:
            raise QueryError(f"bad --where {c.text!r}: a status is one of {', '.join(STATUSES)}")
        if held and (any(records.is_number(v) for v in held) if c.op not in ("=", "!=")  # text is no bound;
                     else all(records.is_number(v) for v in held)):  # nor equal to any number ('0.1 and x=2')
            raise QueryError(f"bad --where {c.text!r}: {c.path} holds numbers, and {c.value!r} is not one")
    return [r for i, r in enumerate(runs)
            if all(c(r) if col is None else c.holds(col[i]) for c, col in zip(conds, columns))]


def sort_runs(runs: Sequence[Run], key: Optional[str]) -> List[Run]:
    """Newest first by default (`runs` come oldest first, as `index.load` lists them); `KEY` ascending,
    `-KEY` descending; runs without KEY go last."""
    if not key:
        return list(reversed(runs))
    desc = key.startswith("-")
    path = key[1:] if desc else key
    check_path(path, runs, f"--sort {key!r}")
    have, missing = [], []
    for r, v in zip(runs, _fields(runs, path)):
        (missing if v is _MISSING or v is None or (isinstance(v, float) and math.isnan(v)) else have).append((v, r))
    numeric = all(records.is_number(v) for v, _ in have)
    have.sort(key=(lambda p: p[0]) if numeric else (lambda p: str(p[0])), reverse=desc)
    return [r for _, r in have] + [r for _, r in missing]


def _fields(runs: Sequence[Run], path: str) -> List[Any]:
    """`field(run, path)` of each run (None or _MISSING alike where it has none), with metadata decoded in
    one call and metric values read in one pass over a listing cache (`store.summary_stats`)."""
    if path in FIELDS or path in START_FIELDS:
        return [field(r, path) for r in runs]
    out: List[Any] = []
    rest: List[int] = []
    for i, md in enumerate(metadatas(runs)):
        try:
            out.append(records.get_path(md, path))
        except KeyError:
            out.append(_MISSING)
            rest.append(i)
    stats = summary_stats([runs[i] for i in rest], records.normal_path(path), "last")
    for i, (has, v) in zip(rest, stats):
        out[i] = v if has and v is not None else field(runs[i], path)  # (PATH:STAT, text)
    return out


# --- answers ---------------------------------------------------------------------------------------


def run_row(run: Run) -> Dict[str, Any]:
    code = run.code
    return {
        "id": run.run_id, "short_id": run.short_id, "started": run.started, "name": run.name,
        "status": run.status, "commit": code["commit"], "branch": code["branch"],
        "dirty": code["dirty"], "replay_of": code["replay_of"], "metadata": run.metadata, "metrics": run.final(),
        "tags": run.tags, "latest_note": note_row(run.notes[-1]) if run.notes else None,
    }


def note_row(rec: Dict[str, Any]) -> Dict[str, Any]:
    return {"time": rec.get("time"), "kind": rec.get("kind"), "text": rec.get("text"), "seq": rec.get("seq")}


def notes(runs: Sequence[Run], where: Sequence[str] = (), kind: Optional[str] = None,
          limit: Optional[int] = None) -> Dict[str, Any]:
    """Every note of the matching runs, oldest first (what was tried, why, what was decided, across
    runs); the latest `limit` of them (0 or None: all)."""
    chosen = select(runs, where)
    found = [(rec.get("time") if isinstance(rec.get("time"), str) else "", i, rec)
             for i, r in enumerate(chosen) for rec in r.notes if kind is None or rec.get("kind") == kind]
    found.sort(key=lambda t: (t[0], t[1]))
    shown = found if not limit or limit <= 0 else found[-limit:]
    return {"runs": len(chosen), "matched": len(found), "shown": len(shown),
            "notes": [dict(note_row(rec), run={"id": chosen[i].run_id, "short_id": chosen[i].short_id,
                                               "name": chosen[i].name, "status": chosen[i].status})
                      for _, i, rec in shown]}


@_paused_gc
def list_runs(runs: Sequence[Run], where: Sequence[str] = (), sort: Optional[str] = None,
              limit: Optional[int] = None) -> Dict[str, Any]:
    chosen = sort_runs(select(runs, where), sort)
    shown = chosen if not limit or limit <= 0 else chosen[:limit]
    return {"total": len(runs), "matched": len(chosen), "shown": len(shown), "runs": [run_row(r) for r in shown]}


def key_facts(run: Run, dumps: Callable[[Any], bytes] = lambda v: json.dumps(v).encode("ascii")) -> bytes:
    """What `keys` reads of a run (the listing cache keeps it per run): its shape, `[metadata paths,
    [[metric path, 1 for numbers or 0 for text], ...]]`, a tab, then its values: the canonical JSON of each
    metadata value, then per metric path its min and max (None where not a number) or its last text."""
    md = metadata_paths(run)
    values: List[Any] = [_canonical(v) for v in md.values()]
    shape: List[List[Any]] = []
    for path, s in run.summary.items():
        if records.is_text_entry(s):
            shape.append([path, 0])
            values.append(s.get("last"))
        else:
            lo, hi = s.get("min"), s.get("max")
            shape.append([path, 1])
            values += [lo if records.is_number(lo) else None, hi if records.is_number(hi) else None]
    return dumps([list(md), shape]) + b"\t" + dumps(values)


def _canonical(v: Any) -> str:
    """json.dumps(records.to_json(v), sort_keys=True), without its cost for a plain number or text."""
    t = type(v)
    if t is int and v.bit_length() <= 14_000:
        return int.__repr__(v)
    if t is float and math.isfinite(v):
        return float.__repr__(v)
    if t is str and v.isascii():
        return encode_basestring_ascii(v)
    return json.dumps(records.to_json(v), sort_keys=True)


def _metric_entry(into: Dict[str, Dict[str, Any]], path: str) -> Dict[str, Any]:
    e = into.get(path)
    if e is None:
        e = into[path] = {"runs": 0, "kind": "number", "min": None, "max": None}
    return e


@_paused_gc
def keys(runs: Sequence[Run], examples: int = 5) -> Dict[str, Any]:
    """Every metadata and metric path, with how many runs have it and a few values (to discover names).

    Runs are grouped by shape (their paths): a folder of one shape is summed up column by column."""
    md: Dict[str, List[Any]] = {}  # path -> [runs, distinct values' JSON, runs holding the first examples]
    mt: Dict[str, Dict[str, Any]] = {}
    ax: Dict[str, Dict[str, Any]] = {}
    groups: Dict[bytes, Tuple[List[int], List[bytes]]] = {}
    for n, (r, raw) in enumerate(zip(runs, cached_lines(runs, "_keys_raw"))):
        raw = raw or key_facts(r)
        shape, _, values = raw.partition(b"\t")
        g = groups.get(shape)
        if g is None:
            g = groups[shape] = ([], [])
        g[0].append(n)
        g[1].append(values)
    decoded = [(json.loads(shape), idx, json.loads(b"[" + b",".join(vals) + b"]"))  # one call, not 100,000
               for shape, (idx, vals) in groups.items()]
    if len(decoded) == 1:
        (md_paths, mt_shape), idx, rows = decoded[0]
        cols = list(zip(*rows)) if rows and rows[0] else []
        for j, path in enumerate(md_paths):
            col = cols[j]
            firsts = list(dict.fromkeys(col))[:examples]
            md[path] = [len(col), set(col), [runs[idx[col.index(k)]] for k in firsts]]
        j = len(md_paths)
        for path, numeric in mt_shape:
            e = _metric_entry(ax if records.is_axis(path) else mt, path)
            e["runs"] += len(rows)
            if not numeric:
                text = e.setdefault("values", [])
                for v in cols[j]:
                    if len(text) >= examples:
                        break
                    if v not in text:
                        text.append(v)
                j += 1
                continue
            los = [x for x in cols[j] if x is not None]
            his = [x for x in cols[j + 1] if x is not None]
            e["min"] = min(los) if los else None
            e["max"] = max(his) if his else None
            j += 2
    else:  # several shapes: run by run, in order (which values come first, and NaN's place in min/max)
        at: List[Any] = [None] * len(runs)
        for (md_paths, mt_shape), idx, rows in decoded:
            for n, row in zip(idx, rows):
                at[n] = (md_paths, mt_shape, row)
        for r, (md_paths, mt_shape, row) in zip(runs, at):
            for path, key in zip(md_paths, row):
                e = md.get(path)
                if e is None:
                    e = md[path] = [0, set(), []]
                e[0] += 1
                if key not in e[1]:
                    e[1].add(key)
                    if len(e[2]) < examples:
                        e[2].append(r)
            j = len(md_paths)
            for path, numeric in mt_shape:
                e = _metric_entry(ax if records.is_axis(path) else mt, path)
                e["runs"] += 1
                if not numeric:
                    text = e.setdefault("values", [])
                    if len(text) < examples and row[j] not in text:
                        text.append(row[j])
                    j += 1
                    continue
                lo, hi = row[j], row[j + 1]
                j += 2
                if lo is not None:
                    e["min"] = lo if e["min"] is None else min(e["min"], lo)
                if hi is not None:
                    e["max"] = hi if e["max"] is None else max(e["max"], hi)
    metadata = {p: {"runs": n, "distinct": len(seen), "values": [metadata_paths(r)[p] for r in held]}
                for p, (n, seen, held) in sorted(md.items())}
    for e in mt.values():
        if "values" in e and e["min"] is None and e["max"] is None:
            e.update(kind="text")
            del e["min"], e["max"]
    return {"runs": len(runs), "fields": list(FIELDS) + sorted(set(MEMORY_FIELDS) - {"tags", "notes"}),
            "metadata": metadata, "metrics": dict(sorted(mt.items())), "axes": dict(sorted(ax.items()))}


def ranks_every_status(where: Sequence[str], all_runs: bool) -> bool:
    """Whether runs that did not complete may win a ranking: only when asked (`all_runs`, or a --where on
    `status`). By default a failed, crashed, interrupted or running run's numbers (a loss that looked low
    before it diverged) are no result."""
    return all_runs or any(re.match(r"\s*status\s*(?:[!<>=~]|$)", w) for w in where)


@_paused_gc
def best(runs: Sequence[Run], metric: str, minimize: bool = False, final: bool = False,
         where: Sequence[str] = (), all_runs: bool = False) -> Dict[str, Any]:
    """The winning run by each run's best value of METRIC (max, or min), or by its last value with `final`;
    among completed runs unless `all_runs` (see `ranks_every_status`)."""
    check_path(metric, runs, f"metric {metric!r}", metric_only=True)
    metric = records.normal_path(metric)
    check_rankable(metric, runs)
    total = len(runs)
    runs = select(runs, where)
    every = ranks_every_status(where, all_runs)
    stat = "last" if final else ("min" if minimize else "max")
    scored, nonfinite = [], 0
    left_out: Dict[str, int] = {}
    for r, (has, v) in zip(runs, summary_stats(runs, metric, stat)):
        if records.is_number(v) and math.isfinite(v):
            scored.append((v, r))
        elif has:
            nonfinite += 1
    if not every:
        found, scored = scored, []
        for v, r in found:
            status = r.status  # (past a few runs, one pass over the cache's fields answers all)
            if status == "completed":
                scored.append((v, r))
            else:
                left_out[status] = left_out.get(status, 0) + 1
    direction = "lowest" if minimize else "highest"
    rule = (f"{direction} final (last tracked) value" if final
            else f"{direction} best value over each run's history ({stat} of all tracked values)")
    rule += "" if every else ", among completed runs"
    if not scored:
        others = sum(left_out.values())
        raise NoResult(f"no {'' if every else 'completed '}run has a finite value of {metric!r} to rank "
                       f"({len(runs)} of {total} runs matched{' the --where' if where else ''}"
                       + (f"; {others} run(s) that did not complete have one: add --all to rank them too)"
                          if others else ")"))
    top = (heapq.nsmallest if minimize else heapq.nlargest)(5, scored, key=lambda t: t[0])  # = sorted(...)[:5]
    v, winner = top[0]
    tied = [r for x, r in scored if x == v and r is not winner]  # the earliest-started of equals wins
    s = winner.summary_entry(metric) or {}
    best_stat = "min" if minimize else "max"
    last = records.from_json(s.get("last"))
    bad = s.get("nonfinite") if isinstance(s.get("nonfinite"), int) else 0
    warning = None
    if bad or (isinstance(last, float) and not math.isfinite(last)):  # a loss that looked low before it diverged
        x = records.to_json(last)
        warning = (f"the winner's {metric} " + (f"has {bad} non-finite value(s), last {x}" if bad else f"ends {x}")
                   + f": it may have diverged; --where '{metric}!=NaN' leaves such runs out"
                   + ("" if final else ", --final ranks by the last value"))
    return {
        "metric": metric, "rule": rule, "minimize": minimize, "final": final,
        "run": run_row(winner), "artifacts": artifacts.rows(winner),
        "best": s.get(best_stat), "best_step": s.get(f"{best_stat}_step"),
        "last": s.get("last"), "last_step": s.get("last_step"),
        "considered": len(scored), "nonfinite": nonfinite,
        "without_metric": len(runs) - len(scored) - nonfinite - sum(left_out.values()), "left_out": left_out,
        "tied": len(tied), "tied_with": [{"id": r.run_id, "short_id": r.short_id, "name": r.name,
                                          "replay_of": r.replay_of} for r in tied[:20]],
        "warning": warning, "ranking": [{"id": r.run_id, "short_id": r.short_id, "name": r.name, "value": x} for x, r in top],
    }


def check_rankable(metric: str, runs: Sequence[Run], axis_ok: bool = False) -> None:
    """A step counter or a text path cannot be ranked (nor a text path plotted): say why and what to do."""
    base = metric.rpartition(":")[0] if ":" in metric else metric
    if records.is_axis(base) and not axis_ok:
        raise QueryError(f"{base!r} is an axis (the x of histories: {', '.join(records.AXES)}), not a metric; "
                         "rank by a metric (see `exprag-plus keys`)")
    entries = []
    for r in runs:
        e = r.summary_entry(base)
        if e is not None:
            if not records.is_text_entry(e):
                return  # one run holding numbers makes it rankable: the rest need not be read
            entries.append(e)
    if entries:
        shown = ", ".join(sorted({json.dumps(records.to_json(e.get("last"))) for e in entries})[:4])
        raise QueryError(f"{base!r} holds text or booleans ({shown}), not numbers: it cannot be ranked or "
                         f"plotted; filter on it instead, e.g. --where '{base}={records.to_json(entries[-1].get('last'))}'")


def history(run: Run, metric: str, max_points: Optional[int] = 100, step: Optional[int] = None) -> Dict[str, Any]:
    """A metric's tracked values; sampled evenly down to `max_points` (first, last, min and max kept).

    The file is streamed: a sampled history of a million points holds only the points it returns."""
    if step is None and max_points is not None and 0 < max_points < 4:
        raise QueryError(f"max points {max_points}: give 0 (every point) or at least 4 (the first, last, min and max "
                         "points are always kept)")
    metric = records.normal_path(metric)
    sampling = step is None and bool(max_points and max_points > 0)
    steps: List[Any] = []
    if sampling and run._records is None:
        total, points = _sampled_from_file(run, metric, max_points)  # type: ignore[arg-type]
    elif step is not None:  # only the points at that step are kept (and the span of steps, for the error)
        total, points = 0, []
        for r, v in store.metric_values(run.stream(), metric):
            total += 1
            s = r["value"].get("step") if isinstance(r.get("value"), dict) else None
            if s is not None:
                steps = [s, s] if not steps else [min(steps[0], s), max(steps[1], s)]
            if s == step:
                points.append(store.point(r, v))
    else:
        points = run.history(metric)
        total = len(points)
    if not total:
        paths = sorted(run.summary) or sorted({p for t in run.stream() if t.get("type") == "track"
                                               for p, _ in records.flatten(t.get("value"))})
        near = difflib.get_close_matches(metric, paths, n=4, cutoff=0.5) or paths[:4]
        hint = f"; nearest: {', '.join(near)}" if near else "; this run tracked nothing"
        raise QueryError(f"run {run.short_id} has no metric {metric!r}{hint} (see `exprag-plus keys {run.short_id}`)")
    if step is not None:
        at = points
        if not at:
            span = f"steps {steps[0]}..{steps[1]}" if steps else "no step field"
            raise NoResult(f"run {run.short_id} has no {metric!r} point at step {step} ({span})")
        points = at
    sampled = bool(max_points and max_points > 0 and total > max_points)
    if sampled and len(points) > max_points:  # type: ignore[operator]
        points = _sample(points, max_points)  # type: ignore[arg-type]
    return {"run": run.run_id, "short_id": run.short_id, "metric": metric, "count": total, "shown": len(points),
            "sampled": sampled, "summary": run.summary.get(metric), "points": points}


def _finite(v: Any) -> bool:
    return records.is_number(v) and math.isfinite(v)


_CHECKPOINT = 256  # points between two remembered file offsets (the second pass reads only near its points)


def _sampled_from_file(run: Run, metric: str, n: int) -> Tuple[int, List[Dict[str, Any]]]:
    """(point count, the sampled points) in one streamed pass: it finds the count and the min and max,
    marks which lines hold points and remembers the offset of every 256th; then only the chosen points'
    neighbourhoods are read again."""
    marks = bytearray()
    checkpoints: List[Tuple[int, int]] = []  # (line number - 1, offset) of points 0, 256, 512...
    total, lo, hi, lo_v, hi_v = 0, -1, -1, None, None
    path = run.path
    parse, lookup, from_json, quick = store.parse_line, store.track_value, records.from_json, store.quick_record
    parts = records.split_path(metric)
    for lineno, line, last, offset in store.line_offsets(path):
        rec = quick(line)  # the common case (a million lines): a dict record with plain nested keys
        if rec is None:
            rec = parse(line, path, lineno, last)  # warns as every reader does
            if rec is None:
                continue
        if rec["type"] != "track":
            continue
        cur = lookup(rec, parts, metric)
        if cur is None:
            continue
        v = cur if type(cur) is float or type(cur) is int else from_json(cur)
        if (-math.inf < v < math.inf) if type(v) is float else _finite(v):
            if lo < 0 or v < lo_v:
                lo, lo_v = total, v
            if hi < 0 or v > hi_v:
                hi, hi_v = total, v
        if lineno >= len(marks):
            marks.extend(bytes(lineno - len(marks) + 1 + (1 << 16)))
        marks[lineno] = 1
        if total % _CHECKPOINT == 0:
            checkpoints.append((lineno - 1, offset))
        total += 1
    if not total:
        return 0, []
    keep = sorted(_sample_indices(total, lo, hi, n))
    points: List[Dict[str, Any]] = []
    with open(path, "rb") as f:
        i = 0
        while i < len(keep):
            group = keep[i] // _CHECKPOINT
            lineno, offset = checkpoints[group]
            f.seek(offset)
            k = group * _CHECKPOINT - 1
            while i < len(keep) and keep[i] // _CHECKPOINT == group:
                line = f.readline(store.LINE_CAP + 1)
                if not line:
                    i = len(keep)  # the file shrank since: what was found stays
                    break
                lineno += 1
                while len(line) > store.LINE_CAP and not line.endswith(b"\n"):
                    line = f.readline(store.LINE_CAP + 1)  # a skipped giant line: one line number
                    if not line:
                        break
                    line = b"x" * (store.LINE_CAP + 1) if not line.endswith(b"\n") else b"\n"
                if lineno >= len(marks) or not marks[lineno]:
                    continue
                k += 1
                if k == keep[i]:
                    rec = parse(line.rstrip(b"\n"), path, lineno, not line.endswith(b"\n"))
                    points.extend(store.point(r, v) for r, v in store.metric_values((rec,) if rec else (), metric))
                    i += 1
    return total, points


def _sample_indices(total: int, lo: int, hi: int, n: int) -> set:
    """Which of `total` points a sample of `n` keeps: first, last, min and max (lo/hi, -1 for none), then
    evenly spaced ones on finer grids until the budget is used."""
    if total <= n:
        return set(range(total))
    keep = {0, total - 1}
    if lo >= 0 and n >= 4:
        keep.add(lo)
        keep.add(hi)
    grid = max(n, 2)
    while len(keep) < n:
        for k in range(grid):
            keep.add(round(k * (total - 1) / (grid - 1)))
            if len(keep) >= n:
                break
        grid *= 2
    return keep


def _sample(points: List[Dict[str, Any]], n: int) -> List[Dict[str, Any]]:
    finite = [i for i, p in enumerate(points) if _finite(p["value"])]
    lo = min(finite, key=lambda i: points[i]["value"]) if finite else -1
    hi = max(finite, key=lambda i: points[i]["value"]) if finite else -1
    return [points[i] for i in sorted(_sample_indices(len(points), lo, hi, n))]


def compare(a: Run, b: Run) -> Dict[str, Any]:
    """What differs between two runs: metadata, final metrics (with deltas), code state."""
    ma, mb = metadata_paths(a), metadata_paths(b)
    changed = []
    for path in sorted(set(ma) | set(mb)):
        va, vb = ma.get(path, _MISSING), mb.get(path, _MISSING)
        if va != vb:
            changed.append({"path": path, "a": None if va is _MISSING else va, "b": None if vb is _MISSING else vb,
                            "only_in": "a" if vb is _MISSING else "b" if va is _MISSING else None})
    fa, fb = a.final(), b.final()
    metrics, axes = [], []
    for path in sorted(set(fa) | set(fb)):
        va, vb = fa.get(path), fb.get(path)
        delta = vb - va if records.is_number(va) and records.is_number(vb) else None
        (axes if records.is_axis(path) else metrics).append({"path": path, "a": va, "b": vb, "delta": delta})

    def code(r: Run) -> Dict[str, Any]:
        g = r.git or {}
        return {k: g.get(k) for k in ("commit", "branch", "dirty", "base_commit")} | {"git_error": r.git_error}

    ca, cb = code(a), code(b)
    return {"a": run_row(a), "b": run_row(b), "metadata": changed, "metrics": metrics, "axes": axes,
            "code": {"a": ca, "b": cb, "same_commit": bool(ca["commit"]) and ca["commit"] == cb["commit"]}}


def show(run: Run) -> Dict[str, Any]:
    """Everything about one run."""
    counts = run.record_counts()
    out = run_row(run)
    out.update({
        "ended": run.ended, "duration_s": run.duration_s, "metadata": run.metadata, "process": run.process,
        "host": run.host, "git": run.git, "git_error": run.git_error, "replay_of": run.replay_of,
        "error": run.error, "summary": run.summary, "records": counts, "path": run.path,
        "notes": [note_row(n) for n in run.notes],
        "artifacts": artifacts.rows(run), "artifact_scan": artifacts.scan_info(run),
    })
    out.update(wrapped(run))
    return out


def wrapped(run: Run, tail: int = 20) -> Dict[str, Any]:
    """What `exprag-plus run` adds: the command, its exit code or signal, its output (tail read from the log
    while no run_end holds it, so a crashed wrapper still says what the command printed)."""
    command = run.start.get("command")
    end = run.end or {}
    output = end.get("output") if isinstance(end.get("output"), dict) else None
    if output is None and store.output_log(run):
        lines = store.read_log(run, tail) or []
        output = {"file": os.path.relpath(store.output_log(run) or "", os.path.dirname(run.path)),
                  "tail": [l.decode("utf-8", "replace").rstrip("\r\n") for l in lines]}
    return {"command": command if isinstance(command, dict) else None,
            "exit_code": end.get("exit_code") if isinstance(end.get("exit_code"), int) else None,
            "signal": end.get("signal") if isinstance(end.get("signal"), str) else None,
            "output": output}

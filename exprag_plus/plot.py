"""Dependency-free SVG line plots of tracked metrics: pure functions from numbers to SVG text.

Three levels, all returning text you can write to a file or show in a notebook (the returned `SvgText`
is a `str` with `_repr_svg_`, so Jupyter draws it):

    from exprag_plus import load_runs
    from exprag_plus.plot import svg, svg_lines
    svg(load_runs()[-3:], "metrics.loss", x="step", log=True)          # Run objects + a metric path
    svg_lines([("a", [0, 1, 2], [1.0, 0.5, 0.2])], y_label="loss")       # plain (label, xs, ys) lines
    d = draw([Series("a", xs, ys)]); d.svg, d.points_drawn                # the same, with what was drawn

What the drawing guarantees:
- one polyline per series, broken into segments where a value (or an x) is NaN/Infinity; such points
  are also marked by short ticks on the plot's top edge, and counted in the legend;
- with `log=True` the y axis is log10, ticks at powers of ten (1-2-5 in between when the range is
  narrow), and values <= 0 are gaps too (counted in `Drawing.series[i]["nonpositive"]`);
- at most two points (the min and the max, in their original order) per pixel column and per finite
  stretch, so a 1,000,000-point history draws at most a few thousand points and stays a small file;
- a run's series comes from one streamed pass over its file; past 131,072 points each group of consecutive
  points keeps only what a drawing can use (first and last, the extremes, the first gap), so ten million
  steps take a few MB: the axes and the legend's counts are those of every point, and a column's extremes
  can differ only where a group straddles the column's edge;
- "nice" 1-2-5 linear ticks with compact labels (`200k`, `1.5M`, `0.05`, `2e-5`), thinned so labels
  never overlap; the legend sits outside the plot area, so it never covers a line.
"""

from __future__ import annotations

import bisect
import html
import math
import re
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

from . import records, store

__all__ = ["Series", "Drawing", "SvgText", "draw", "svg", "svg_lines", "run_series", "nice_ticks", "log_ticks",
           "tick_labels", "reduce_points", "PALETTE"]

# matplotlib's tab10: distinct, readable on white; series beyond 10 reuse it with dashes.
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf")
_DASHES = ("", "6 3", "2 2", "8 3 2 3")
_FONT = "system-ui, -apple-system, 'Segoe UI', 'DejaVu Sans', Helvetica, Arial, sans-serif"
from .sizes import HEIGHT_RANGE, WIDTH_RANGE  # noqa: E402  (pixels; the drawing's cost grows with the size)
_CHAR_W = 0.62  # average glyph width per font-size unit, to keep labels apart without measuring text
_NAN = float("nan")
_SVG_NS = "http://www.w3.org/2000/svg"
_BAD_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


class SvgText(str):
    """SVG markup; a plain `str` that Jupyter/IPython displays as a picture."""

    def _repr_svg_(self) -> str:
        return str(self)


@dataclass
class Series:
    """One line: `label` (legend text), `xs` and `ys` (same length; NaN/inf are gaps), optional colour.

    `title` is the full text shown as a tooltip (the legend label is shortened to fit).
    """

    label: str
    xs: Sequence[float]
    ys: Sequence[float]
    color: Optional[str] = None
    title: str = ""
    x_kind: str = "x"  # what xs are: step, index, elapsed, or a metric path (run_series sets it)
    points: Optional[int] = None  # of a thinned series (run_series of a long run): its points before thinning,
    nonfinite: Optional[int] = None  # its NaN/inf values (or x)
    nonpositive: Optional[int] = None  # and its values <= 0


@dataclass
class Drawing:
    """A rendered plot: the SVG text, how many points it holds, and per-series counts."""

    svg: SvgText
    points_drawn: int
    series: List[Dict[str, Any]] = field(default_factory=list)


# --- ticks ----------------------------------------------------------------------------------------


def _nice_step(lo: float, hi: float, n: int) -> float:
    """The 1, 2 or 5 x 10^k step putting the number of ticks in [lo, hi] closest to n (ties: more ticks)."""
    raw = (hi - lo) / max(n, 1)
    mag = 10.0 ** math.floor(math.log10(raw))

    def count(st: float) -> int:
        return math.floor(hi / st + 1e-9) - math.ceil(lo / st - 1e-9) + 1

    return min((m * mag for m in (1.0, 2.0, 5.0, 10.0)), key=lambda st: (abs(count(st) - n), st))


def nice_ticks(lo: float, hi: float, n: int = 6) -> List[float]:
    """Ticks at multiples of 1, 2 or 5 x 10^k inside [lo, hi], about `n` of them."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return []
    if hi < lo:
        lo, hi = hi, lo
    if hi == lo:
        return [lo]
    step = _nice_step(lo, hi, n)
    first, last = math.ceil(lo / step - 1e-9), math.floor(hi / step + 1e-9)
    return [_clean(k * step, step) for k in range(first, last + 1)]


def _clean(v: float, step: float) -> float:
    """k*step without float noise (0.30000000000000004 -> 0.3)."""
    digits = max(0, -math.floor(math.log10(step)) + 2)
    v = round(v, digits)
    return 0.0 if v == 0 else v


def log_ticks(lo: float, hi: float, max_ticks: int = 8) -> List[float]:
    """Ticks for a log10 axis over [lo, hi] (both > 0): powers of ten, with 2 and 5 when that gives too few."""
    if not (lo > 0 and hi > 0 and math.isfinite(lo) and math.isfinite(hi)):
        return []
    if hi < lo:
        lo, hi = hi, lo
    a, b = math.floor(math.log10(lo) + 1e-9), math.ceil(math.log10(hi) - 1e-9)
    inside = lambda t: lo * (1 - 1e-9) <= t <= hi * (1 + 1e-9)
    decades = [e for e in range(a, b + 1) if inside(10.0 ** e)]
    if len(decades) >= 3:
        every = max(1, math.ceil(len(decades) / max(max_ticks, 1)))
        return [float(10.0 ** e) for e in decades if e % every == 0] or [float(10.0 ** decades[0])]
    for mults, enough in (((1, 2, 5), 4), ((1, 2, 3, 4, 5, 6, 7, 8, 9), 3)):
        ticks = sorted({_clean(m * 10.0 ** e, 10.0 ** e) for e in range(a - 1, b + 1) for m in mults})
        ticks = [t for t in ticks if inside(t)]
        if len(ticks) >= enough:
            return ticks[:: max(1, math.ceil(len(ticks) / max(max_ticks, 1)))]
    # a range narrower than one 1-2-5 step: plain linear ticks read fine
    return [t for t in nice_ticks(lo, hi, 4) if t > 0]


_SI = ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"))


def tick_labels(ticks: Sequence[float], log: bool = False) -> List[str]:
    """Compact labels for a tick set: SI suffixes from 1000 up (`200k`, `1.5M`), `2e-5` style below 0.001,
    with just enough decimals to tell neighbours apart. `log=True` labels each tick on its own."""
    if not ticks:
        return []
    if log:  # each tick on its own scale: as many decimals as the gap to its nearest neighbour needs
        gaps = [min([abs(t - u) for u in ticks if u != t] or [abs(t) or 1.0]) for t in ticks]
        return [_label(t, g, abs(t) < 1e-3) for t, g in zip(ticks, gaps)]
    diffs = [abs(b - a) for a, b in zip(ticks, ticks[1:]) if b != a]
    step = min(diffs) if diffs else (abs(ticks[0]) or 1.0)
    sci = max(abs(t) for t in ticks) < 1e-3
    return [_label(t, step, sci) for t in ticks]


def _label(t: float, step: float, sci: bool) -> str:
    if t == 0:
        return "0"
    a = abs(t)
    if a >= 1e3:
        for scale, suffix in _SI:
            if a >= scale:
                return _fixed(t / scale, step / scale) + suffix
    if sci:
        e = math.floor(math.log10(a) + 1e-12)
        return _fixed(t / 10.0 ** e, step / 10.0 ** e) + f"e{e}"
    return _fixed(t, step)


def _fixed(v: float, step: float) -> str:
    """v with as many decimals as `step` needs (none for whole steps), trailing zeros dropped."""
    decimals = 0 if step >= 1 else min(12, max(0, -math.floor(math.log10(step) + 1e-9)))
    # a 2.5-style step or a sub-step value still needs one more digit to stay exact
    text = f"{v:.{decimals}f}"
    if decimals == 0 and abs(float(text) - v) > 1e-9 * max(1.0, abs(v)):
        text = f"{v:.2f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


# --- reduction ------------------------------------------------------------------------------------


_INF = math.inf


def _finite(v: float) -> bool:
    return -_INF < v < _INF


def _bucket_bounds(xs: Sequence[float], x0: float, x1: float, cols: int) -> List[Tuple[int, int]]:
    """Index ranges of consecutive points falling in one pixel column (or equal index chunks)."""
    n = len(xs)
    if n == 0:
        return []
    monotonic = all(a <= b for a, b in zip(xs, xs[1:])) if n < 4096 else list(xs) == sorted(xs)
    bounds = []
    if monotonic and x1 > x0:
        start = 0
        span = x1 - x0
        for c in range(1, cols + 1):
            edge = x0 + span * c / cols if c < cols else math.inf
            end = bisect.bisect_left(xs, edge, start)
            if end > start:
                bounds.append((start, end))
                start = end
            if start >= n:
                break
        if start < n:
            bounds.append((start, n))
        return bounds
    # x goes back and forth (another metric as x): equal chunks by order keep the count bounded
    chunks = min(n, cols)
    edges = [i * n // chunks for i in range(chunks + 1)]
    return [(a, b) for a, b in zip(edges, edges[1:]) if b > a]


def _extrema(ys: Sequence[float], a: int, b: int) -> List[int]:
    """Indexes of the min and the max of ys[a:b] (all finite), in order."""
    seg = ys[a:b]
    lo, hi = min(seg), max(seg)
    i, j = a + seg.index(lo), a + seg.index(hi)
    return [i] if i == j else [min(i, j), max(i, j)]


def reduce_points(xs: Sequence[float], ys: Sequence[float], x0: float, x1: float,
                  cols: int) -> List[Optional[int]]:
    """Indexes of the points to draw, `None` marking a gap (a NaN/inf in between).

    xs must hold finite values (put the gap in ys). Per pixel column (or per index chunk when xs are not
    sorted) keeps the min and the max of each finite stretch in their original order, at most two
    stretches per column (the first one, and the rest merged: the break is still drawn), so the result
    has at most ~6 entries per column whatever the input size.
    """
    out: List[Optional[int]] = []
    for a, b in _bucket_bounds(xs, x0, x1, max(1, cols)):
        seg = ys[a:b]
        if _all_finite(seg):
            out.extend(_extrema(ys, a, b))
            continue
        stretches: List[Tuple[int, int]] = []
        start = None
        for i in range(a, b):
            if -_INF < ys[i] < _INF:
                if start is None:
                    start = i
            elif start is not None:
                stretches.append((start, i))
                start = None
        if start is not None:
            stretches.append((start, b))
        if not stretches:
            if out and out[-1] is not None:
                out.append(None)
            continue
        if stretches[0][0] > a and out and out[-1] is not None:
            out.append(None)
        out.extend(_extrema(ys, *stretches[0]))
        if len(stretches) > 1:
            out.append(None)
            rest = [i for s, e in stretches[1:] for i in range(s, e)]
            lo = min(rest, key=lambda i: ys[i])
            hi = max(rest, key=lambda i: ys[i])
            out.extend(sorted({lo, hi}))
        if stretches[-1][1] < b:
            out.append(None)
    while out and out[-1] is None:
        out.pop()
    return out


# --- series from runs -----------------------------------------------------------------------------


def _number(v: Any) -> Optional[float]:
    if isinstance(v, str):
        v = records.NONFINITE.get(v, v)
    if records.is_number(v):
        try:
            return float(v)
        except OverflowError:
            return math.inf if v > 0 else -math.inf
    return None


_RAW = 1 << 17  # points a series holds as they are; beyond, groups of consecutive points are thinned
_GROUPS = 8192  # thinned groups a series holds at most (two neighbours merge when there would be more)


def _keep(cands: List[Tuple[int, float, float]]) -> List[Tuple[int, float, float]]:
    """Of consecutive points (index, x, y), those a drawing can need: the first and the last, the extremes of
    x and of finite y, the smallest positive y (a log axis), the first gap and the first y <= 0 (a log gap)."""
    finite = [c for c in cands if -_INF < c[2] < _INF]
    xfin = [c for c in cands if -_INF < c[1] < _INF]
    pos = [c for c in finite if c[2] > 0]
    picks = {cands[0], cands[-1]}
    if finite:
        picks.add(min(finite, key=_y))
        picks.add(max(finite, key=_y))
    if xfin:
        picks.add(min(xfin, key=_x))
        picks.add(max(xfin, key=_x))
    if pos:
        picks.add(min(pos, key=_y))
    bad = next((c for c in cands if not (-_INF < c[2] < _INF and -_INF < c[1] < _INF)), None)
    if bad is not None:
        picks.add(bad)
    bad_y = next((c for c in cands if not -_INF < c[2] < _INF), None)
    if bad_y is not None:
        picks.add(bad_y)
    low = next((c for c in finite if c[2] <= 0), None)
    if low is not None:
        picks.add(low)
    return sorted(picks)


def _y(c: Tuple[int, float, float]) -> float:
    return c[2]


def _x(c: Tuple[int, float, float]) -> float:
    return c[1]


class _Points:
    """A series' points in bounded memory: all of them up to _RAW, then what each group of consecutive
    points can add to a drawing (`_keep`); counts of all points, gaps and values <= 0 are kept exactly."""

    __slots__ = ("xs", "ys", "n", "groups", "size", "limit", "bad", "bad_y", "low")

    def __init__(self) -> None:
        self.xs: List[float] = []
        self.ys: List[float] = []
        self.n = 0
        self.groups: Optional[List[List[Tuple[int, float, float]]]] = None
        self.size = 0
        self.limit = _RAW + 1  # pending points that make a fold
        self.bad = self.bad_y = self.low = 0

    def _fold(self) -> None:
        xs, ys, base = self.xs, self.ys, self.n
        n = len(xs)
        self.n += n
        self.xs, self.ys = [], []
        clean = _all_finite(ys) and _all_finite(xs)
        if clean:
            if min(ys) <= 0:
                self.low += sum(1 for y in ys if y <= 0)
        else:
            for x, y in zip(xs, ys):
                if not -_INF < y < _INF:
                    self.bad_y += 1
                    self.bad += 1
                    continue
                if not -_INF < x < _INF:
                    self.bad += 1
                if y <= 0:
                    self.low += 1
        if self.groups is None:
            self.groups, self.size = [], 64
        size, groups = self.size, self.groups
        for k in range(0, n, size):
            xg, yg = xs[k:k + size], ys[k:k + size]
            if clean or (_all_finite(yg) and _all_finite(xg)):
                lo, hi = min(yg), max(yg)
                picks = {0, len(yg) - 1, yg.index(lo), yg.index(hi), xg.index(min(xg)), xg.index(max(xg))}
                if lo <= 0:
                    pos = [j for j, y in enumerate(yg) if y > 0]
                    if pos:
                        picks.add(min(pos, key=yg.__getitem__))
                    picks.add(next(j for j, y in enumerate(yg) if y <= 0))
                groups.append([(base + k + j, xg[j], yg[j]) for j in sorted(picks)])
            else:
                groups.append(_keep([(base + k + j, x, y) for j, (x, y) in enumerate(zip(xg, yg))]))
        while len(self.groups) > _GROUPS:
            g = self.groups
            self.groups = [_keep(g[k] + g[k + 1]) if k + 1 < len(g) else g[k] for k in range(0, len(g), 2)]
            self.size *= 2
        self.limit = self.size * max(1, 8192 // self.size)

    def series(self, label: str, index_x: bool, **fields: Any) -> "Series":
        """The Series to draw; `index_x`: x is each point's index (a run without steps)."""
        if self.groups is None:
            xs = [float(i) for i in range(len(self.ys))] if index_x else self.xs
            return Series(label, xs, self.ys, **fields)
        if self.xs:
            self._fold()
        kept = [c for g in self.groups for c in g]
        xs = [float(c[0]) if index_x else c[1] for c in kept]
        return Series(label, xs, [c[2] for c in kept], points=self.n,
                      nonfinite=self.bad_y if index_x else self.bad, nonpositive=self.low, **fields)


def run_series(run: Any, metric: str, x: str = "step", color: Optional[str] = None) -> Series:
    """A run's history of `metric` as a Series labelled "<short id> <name>".

    x: "step" (the tracked value's `step` field; the point's index 0,1,2... for a run whose points lack
    one), "elapsed" (seconds since the run started, from `elapsed_ms`), or another metric path tracked
    in the same records (points without it are skipped; a NaN x is a gap).
    """
    return runs_series(run, [metric], x, color)[0]


def runs_series(run: Any, metrics: Sequence[str], x: str = "step", color: Optional[str] = None) -> List[Series]:
    """`run_series` of several metrics in one streamed pass over the run's file, each series holding at
    most a few points per pixel column's worth of its points (a run of ten million steps fits in memory)."""
    if not metrics:
        return []
    acc = [_Points() for _ in metrics]
    steps_ok = [True] * len(metrics)
    get = records.get_path
    recs = run.stream() if hasattr(run, "stream") else run.records
    lookup = store.track_value
    paths = [records.split_path(m) for m in metrics]
    jobs = list(zip(paths, metrics, acc, range(len(metrics))))
    nonfinite = records.NONFINITE
    for r in recs:
        if r.get("type") != "track":
            continue
        value = r.get("value")
        xv: Any = _UNSET
        for parts, metric, p, k in jobs:
            cur = lookup(r, parts, metric)
            if type(cur) is float:
                y = cur
            elif cur is None or (type(cur) is str and cur not in nonfinite):
                continue
            else:
                y = _number(cur)
                if y is None:
                    continue
            if xv is _UNSET:
                if x == "step":
                    st = value.get("step") if type(value) is dict else None
                    xv = float(st) if type(st) is int or type(st) is float else _x_of(r, value, x, get)
                else:
                    xv = _x_of(r, value, x, get)
            if xv is None:
                if x != "step":
                    continue
                steps_ok[k] = False
                p.xs.append(_NAN)
            else:
                p.xs.append(xv)
            p.ys.append(y)
            if len(p.ys) >= p.limit:
                p._fold()
    out = []
    for k, metric in enumerate(metrics):
        index_x = x == "step" and not steps_ok[k]
        kind = x if x != "step" else ("index" if index_x else "step")
        out.append(acc[k].series(f"{run.short_id} {run.name}".strip(), index_x, color=color,
                                 title=f"{run.run_id} {run.name}".strip(), x_kind=kind))
    return out


_UNSET = object()


def _x_of(r: Dict[str, Any], value: Any, x: str, get: Any) -> Optional[float]:
    if x == "step":
        s = value.get("step") if isinstance(value, dict) else None
        return float(s) if records.is_number(s) else None
    if x == "elapsed":
        ms = r.get("elapsed_ms")
        return ms / 1000.0 if records.is_number(ms) else None
    try:
        return _number(get(value, x)) if isinstance(value, dict) else None
    except KeyError:
        return None


# --- drawing --------------------------------------------------------------------------------------


def _floats(values: Sequence[Any], n: int) -> List[float]:
    try:
        out = list(map(float, values[:n] if isinstance(values, (list, tuple)) else list(values)[:n]))
    except TypeError:  # None among them: a gap
        out = [_NAN if v is None else float(v) for v in list(values)[:n]]
    return out


def _all_finite(values: List[float]) -> bool:
    try:
        return _finite(math.fsum(values))
    except (OverflowError, ValueError):
        return all(map(_finite, values))


def _count(n: int) -> str:
    return str(n) if n < 1000 else f"{n / 1000:.0f}k" if n < 999_500 else f"{n / 1e6:.1f}M"


def _esc(text: Any) -> str:
    s = str(text).encode("utf-8", "replace").decode("utf-8")
    return html.escape(_BAD_XML.sub("\ufffd", s), quote=True)


def _f(v: float) -> str:
    s = f"{v:.1f}"
    return s[:-2] if s.endswith(".0") else s


def _shorten(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "\u2026"


def _text_w(text: str, size: float) -> float:
    return len(text) * size * _CHAR_W


def draw(series: Sequence[Series], *, title: str = "", x_label: str = "", y_label: str = "", log: bool = False,
         width: int = 900, height: int = 460, standalone: bool = True, legend_chars: int = 34) -> Drawing:
    """Render line series to SVG; see the module docstring for what is guaranteed.

    standalone=True gives a file-ready SVG (XML declaration, xmlns); False gives an <svg> element to
    inline in HTML (no namespace URL at all). Colours default to PALETTE in order.
    """
    width = min(max(int(width), WIDTH_RANGE[0]), WIDTH_RANGE[1])
    height = min(max(int(height), HEIGHT_RANGE[0]), HEIGHT_RANGE[1])
    # 1. values, with the log transform; gaps are NaN in ys
    prepared = []
    x_ranges: List[Tuple[float, float]] = []
    y_ranges: List[Tuple[float, float]] = []
    for s in series:
        n = min(len(s.xs), len(s.ys))
        xs, ys = _floats(s.xs, n), _floats(s.ys, n)
        x_ok = _all_finite(xs)
        if _all_finite(ys) and x_ok:
            bad: List[int] = []
        else:
            bad = [i for i, v in enumerate(ys) if not -_INF < v < _INF]
            if not x_ok:
                bad = sorted(set(bad).union(i for i, v in enumerate(xs) if not -_INF < v < _INF))
        nonpositive = 0
        if log:
            nonpositive = sum(1 for v in ys if -_INF < v <= 0) if s.nonpositive is None else s.nonpositive
            log10 = math.log10
            ys = [log10(v) if 0 < v < _INF else _NAN for v in ys]
        clean = not bad and not nonpositive
        # an x that is not finite cannot be placed: the point becomes a gap at the previous x
        last_x = next((v for v in xs if _finite(v)), None)
        if last_x is None:
            xs, ys, bad = [], [], []
        elif not x_ok:
            for i, v in enumerate(xs):
                if _finite(v):
                    last_x = v
                else:
                    xs[i], ys[i] = last_x, _NAN
        prepared.append((s, xs, ys, bad, nonpositive))
        finite = ys if clean else [v for v in ys if -_INF < v < _INF]
        if xs:
            x_ranges.append((min(xs), max(xs)))
        if finite:
            y_ranges.append((min(finite), max(finite)))

    has_data = bool(y_ranges)
    x0, x1 = (min(a for a, _ in x_ranges), max(b for _, b in x_ranges)) if x_ranges else (0.0, 1.0)
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    y0, y1 = (min(a for a, _ in y_ranges), max(b for _, b in y_ranges)) if has_data else (0.0, 1.0)
    if y1 == y0:
        pad = 0.5 if log else (abs(y0) * 0.1 or 1.0)
    else:
        pad = (y1 - y0) * 0.05
    y0, y1 = y0 - pad, y1 + pad

    # 2. layout: legend outside the plot on the right, the left margin sized to the y labels
    top, bottom_m = (40 if title else 16), 48
    plot_h = height - top - bottom_m
    if log:
        yt = log_ticks(10.0 ** max(y0, -307), 10.0 ** min(y1, 308), max(3, plot_h // 28))  # padded: may pass 1e308
        ytv = [math.log10(t) for t in yt]
    else:
        yt = nice_ticks(y0, y1, max(4, plot_h // 48))
        ytv = list(yt)
    ylab = tick_labels(yt, log)
    left = int(max([_text_w(t, 11) for t in ylab] + [10]) + 14 + (20 if y_label else 4))
    nbad = [len(bad) if s.nonfinite is None or not xs else s.nonfinite for s, xs, _, bad, _ in prepared]
    counts = [f"{_count(n)} NaN/Inf" if n else "" for n in nbad]  # a 2nd legend line
    fit = int((width * 0.33 - 34) / (12 * _CHAR_W))  # characters that fit in a legend of 1/3 of the width
    labels = [_shorten(s.label, max(8, min(legend_chars, fit))) for s in series]
    legend_w = int(min(width * 0.33, max([_text_w(t, 12) for t in labels + counts] + [40]) + 34))
    right = width - legend_w - 12
    if right - left < 120:  # tiny canvas: no legend
        legend_w, right = 0, width - 12
    plot_w = right - left
    bottom = top + plot_h
    cols = max(1, int(plot_w))

    n_x = max(2, plot_w // 80)  # x ticks: as many as fit without their labels touching
    while True:
        xt = nice_ticks(x0, x1, n_x)
        xlab = tick_labels(xt)
        need = max([_text_w(t, 11) for t in xlab] + [0]) + 16
        if n_x <= 2 or need * len(xt) <= plot_w:
            break
        n_x -= 1

    def sx(v: float) -> float:
        return left + (v - x0) / (x1 - x0) * plot_w

    def sy(v: float) -> float:
        return bottom - (v - y0) / (y1 - y0) * plot_h

    label_text = title or y_label or "plot"
    ns = f' xmlns="{_SVG_NS}"' if standalone else ""
    out: List[str] = [
        f'<svg{ns} width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{_esc(label_text)}" font-family="{_esc(_FONT)}" font-size="11" class="exprag-plot">',
        f"<title>{_esc(label_text)}</title>",
        f'<rect width="{width}" height="{height}" fill="#ffffff"/>',
    ]
    if title:
        scale = '<tspan fill="#777" font-weight="400" font-size="12"> (log scale)</tspan>' if log else ""
        out.append(f'<text x="{left}" y="24" font-size="15" font-weight="600" fill="#222">{_esc(title)}{scale}</text>')
    grid, ticks = [], []
    for v, t in zip(ytv, ylab):
        py = sy(v)
        if top - 0.5 <= py <= bottom + 0.5:
            grid.append(f'<line x1="{left}" x2="{right}" y1="{_f(py)}" y2="{_f(py)}"/>')
            ticks.append(f'<text x="{left - 7}" y="{_f(py + 4)}" text-anchor="end">{_esc(t)}</text>')
    for v, t in zip(xt, xlab):
        px = sx(v)
        if left - 0.5 <= px <= right + 0.5:
            grid.append(f'<line x1="{_f(px)}" x2="{_f(px)}" y1="{top}" y2="{bottom}"/>')
            ticks.append(f'<text x="{_f(px)}" y="{bottom + 17}" text-anchor="middle">{_esc(t)}</text>')
    out.append(f'<g class="grid" stroke="#e6e6e6" stroke-width="1">{"".join(grid)}</g>')
    out.append(f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#999"/>')
    out.append(f'<g class="ticks" fill="#444">{"".join(ticks)}</g>')
    if x_label:
        out.append(f'<text class="x-title" x="{_f(left + plot_w / 2)}" y="{bottom + 38}" text-anchor="middle" '
                   f'font-size="12" fill="#222">{_esc(x_label)}</text>')
    if y_label:
        cy = _f(top + plot_h / 2)
        out.append(f'<text class="y-title" x="16" y="{cy}" text-anchor="middle" font-size="12" fill="#222" '
                   f'transform="rotate(-90 16 {cy})">{_esc(y_label + (" (log)" if log else ""))}</text>')
    if not has_data:
        out.append(f'<text x="{_f(left + plot_w / 2)}" y="{_f(top + plot_h / 2)}" text-anchor="middle" '
                   f'font-size="13" fill="#777">no finite values to draw</text>')

    # 3. lines: one path per series, a new subpath after each gap, a dot for a lone point
    total = 0
    info = []
    for k, (s, xs, ys, bad, nonpositive) in enumerate(prepared):
        color = s.color or PALETTE[k % len(PALETTE)]
        dash = _DASHES[(k // len(PALETTE)) % len(_DASHES)]
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        parts: List[str] = []
        pts: List[str] = []
        drawn = 0
        for i in reduce_points(xs, ys, x0, x1, cols) + [None]:
            if i is None:
                if pts:
                    parts.append("M" + (" ".join(pts) if len(pts) > 1 else pts[0] + "h0"))
                pts = []
                continue
            pt = f"{_f(sx(xs[i]))},{_f(sy(ys[i]))}"
            if not pts or pts[-1] != pt:
                pts.append(pt)
                drawn += 1
        total += drawn
        if parts:
            out.append(f'<path class="series" d="{"".join(parts)}" fill="none" stroke="{_esc(color)}" '
                       f'stroke-width="1.6" stroke-linejoin="round" stroke-linecap="round"{dash_attr}>'
                       f"<title>{_esc(s.title or s.label)}</title></path>")
        if bad and xs:  # where values were NaN/inf: short ticks on the top edge, one per pixel column
            hit = sorted({int(sx(xs[i])) for i in bad})
            marks = "".join(f"M{c},{top}v7" for c in hit)
            out.append(f'<path class="nonfinite" d="{marks}" stroke="{_esc(color)}" stroke-width="2">'
                       f"<title>{nbad[k]} NaN/Inf value(s): {_esc(s.label)}</title></path>")
        info.append({"label": s.label, "points": len(s.ys) if s.points is None else s.points, "drawn": drawn,
                     "nonfinite": nbad[k],
                     "nonpositive": nonpositive, "color": color})

    # 4. legend, outside the plot area
    if legend_w:
        lx, ly, k = right + 14, top + 10, 0
        for k in range(len(series)):
            row = 18 + (13 if counts[k] else 0)
            if ly + row + (0 if k == len(series) - 1 else 18) > bottom + 8:  # keep room for "+N more"
                break
            dash = _DASHES[(k // len(PALETTE)) % len(_DASHES)]
            dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
            extra = (f'<tspan x="{lx + 26}" dy="13" font-size="11" fill="#b00">{_esc(counts[k])}</tspan>'
                     if counts[k] else "")
            tip = series[k].title or series[k].label
            if counts[k]:
                tip += f" ({info[k]['nonfinite']} NaN/Inf values: gaps in the line, ticked on the top edge)"
            out.append(f'<g class="legend"><title>{_esc(tip)}</title>'
                       f'<line x1="{lx}" x2="{lx + 20}" y1="{ly}" y2="{ly}" stroke="{_esc(info[k]["color"])}" '
                       f'stroke-width="2.5"{dash_attr}/><text x="{lx + 26}" y="{ly + 4}" font-size="12" '
                       f'fill="#222">{_esc(labels[k])}{extra}</text></g>')
            ly += row
        else:
            k = len(series)
        if k < len(series):
            out.append(f'<text x="{lx}" y="{ly + 4}" font-size="12" fill="#777">'
                       f"+{len(series) - k} more (not listed)</text>")
    out.append("</svg>")
    text = "\n".join(out) + "\n"
    if standalone:
        text = '<?xml version="1.0" encoding="UTF-8"?>\n' + text
    return Drawing(SvgText(text), total, info)


def svg_lines(lines: Iterable[Tuple[str, Sequence[float], Sequence[float]]], **options: Any) -> SvgText:
    """SVG text for plain lines `[(label, xs, ys), ...]`; options as for `draw` (title, x_label, y_label,
    log, width, height, standalone)."""
    return draw([Series(label, xs, ys) for label, xs, ys in lines], **options).svg


_X_TITLES = {"step": "step", "index": "point index", "elapsed": "elapsed (s)"}


def x_title(kinds: Iterable[str]) -> str:
    ks = sorted(set(kinds))
    if not ks:
        return "step"
    if len(ks) == 1:
        return _X_TITLES.get(ks[0], ks[0])
    return " / ".join(_X_TITLES.get(k, k) for k in ks)


def svg(runs: Union[Any, Sequence[Any]], metric: str, *, x: str = "step", log: bool = False,
        title: Optional[str] = None, width: int = 900, height: int = 460, standalone: bool = True) -> SvgText:
    """SVG text plotting `metric` for one Run or a list of Runs (one line each, legend "short id + name").

    x: "step" (the `step` field; point index when a run has none), "elapsed" (seconds) or another metric
    path. log: log10 y axis (values <= 0 become gaps). title defaults to the metric path. standalone=False
    returns an <svg> element to inline in HTML. Runs without the metric get a legend entry and no line.
    """
    if not isinstance(runs, (list, tuple)):
        runs = [runs]
    series = [run_series(r, metric, x) for r in runs]
    return draw(series, title=metric if title is None else title, x_label=x_title(s.x_kind for s in series),
                y_label=metric, log=log, width=width, height=height, standalone=standalone).svg

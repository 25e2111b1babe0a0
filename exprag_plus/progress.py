"""Progress across runs: each run's best value in start order, the best so far, and the chart of it.

The loop an agent runs (try, measure, keep or discard) needs one view: did anything improve lately? The
answer is data (`progress`) and an SVG in plot.py's style with no dependencies: every run a dot, runs that
moved the frontier highlighted, the best-so-far as a step line, crashed and failed runs marked.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Sequence, Tuple

from . import plot, query, records
from .store import Run, summary_stats

_FAILED = ("crashed", "failed", "interrupted")


def progress(runs: Sequence[Run], metric: str, minimize: bool = False, where: Sequence[str] = (),
             limit: int = 0, all_runs: bool = False) -> Dict[str, Any]:
    """Runs (matching `where`) in start order with their best value of METRIC and the best so far; the
    rows are every improvement and the latest `limit` runs (0: all), and only those rows are built. A run
    that did not complete shows its value but moves no frontier unless `all_runs` (`query.best`'s rule)."""
    query.check_path(metric, runs, f"metric {metric!r}", metric_only=True)
    metric = records.normal_path(metric)
    query.check_rankable(metric, runs)
    chosen = sorted(query.select(runs, where), key=Run.order)  # start order, as listings give it
    stat = "min" if minimize else "max"
    points: List[Tuple[Optional[float], Optional[float], bool]] = []  # value, best so far, improved
    best: Optional[float] = None
    last_improvement = -1
    every = query.ranks_every_status(where, all_runs)
    for i, (_, v) in enumerate(summary_stats(chosen, metric, stat)):
        value = v if records.is_number(v) and math.isfinite(v) else None
        improved = value is not None and (best is None or (value < best if minimize else value > best)) and (
            every or chosen[i].status == "completed")
        if improved:
            best, last_improvement = value, i
        points.append((value, best, improved))
    n = len(points)
    rows = [_row(i, chosen[i], *points[i]) for i in _kept([p[2] for p in points], limit)]
    w = chosen[last_improvement] if last_improvement >= 0 else None
    return {"metric": metric, "minimize": minimize,
            "rule": f"each run's {'lowest' if minimize else 'highest'} value ({stat} over its history), in start order"
                    + ("" if every else "; only completed runs move the best so far"),
            "total": len(runs), "matched": n, "with_value": sum(p[0] is not None for p in points),
            "improvements": sum(p[2] for p in points), "since_improvement": n - 1 - last_improvement if last_improvement >= 0 else n,
            "best": None if w is None else {"id": w.run_id, "short_id": w.short_id, "name": w.name, "value": best},
            "shown": len(rows), "runs": rows}


def cut(res: Dict[str, Any], limit: int) -> Dict[str, Any]:
    """A whole `progress` answer (limit 0, as its chart needs) with the rows `limit` would have kept."""
    rows = res["runs"]
    kept = [rows[i] for i in _kept([r["improved"] for r in rows], limit)]
    return dict(res, shown=len(kept), runs=kept)


def _kept(improved: List[bool], limit: int) -> List[int]:
    """Every improvement and the latest `limit` runs (0: every run): what an agent reads of 100,000."""
    n = len(improved)
    if not limit or limit <= 0 or n <= limit:
        return list(range(n))
    return [i for i in range(n - limit) if improved[i]] + list(range(n - limit, n))


def _row(i: int, r: Run, value: Optional[float], best: Optional[float], improved: bool) -> Dict[str, Any]:
    note = r.notes[-1] if r.notes else None
    return {"index": i, "id": r.run_id, "short_id": r.short_id, "name": r.name, "started": r.started,
            "status": r.status, "value": value, "best_so_far": best, "improved": improved, "tags": r.tags,
            "latest_note": query.note_row(note) if note else None}


def svg(res: Dict[str, Any], *, width: int = 900, height: int = 420, standalone: bool = True) -> str:
    """The progress chart of a `progress` result."""
    width = min(max(int(width), plot.WIDTH_RANGE[0]), plot.WIDTH_RANGE[1])
    height = min(max(int(height), plot.HEIGHT_RANGE[0]), plot.HEIGHT_RANGE[1])
    rows = res["runs"]
    vals = [r["value"] for r in rows if r["value"] is not None]
    y0, y1 = (min(vals), max(vals)) if vals else (0.0, 1.0)
    if y0 == y1:
        y0, y1 = y0 - (abs(y0) * 0.05 or 0.5), y1 + (abs(y1) * 0.05 or 0.5)
    pad = (y1 - y0) * 0.06
    yt = plot.nice_ticks(y0 - pad, y1 + pad, 6)
    y0, y1 = min([y0 - pad] + yt), max([y1 + pad] + yt)
    ylab = plot.tick_labels(yt)
    n = len(rows)
    x0, x1 = -0.5, max(n - 0.5, 0.5)
    top, bottom_m, right_m = 44, 58, 20
    left = int(max([plot._text_w(t, 11) for t in ylab] + [10]) + 40)
    plot_w, plot_h = width - left - right_m, height - top - bottom_m
    bottom = top + plot_h

    def sx(v: float) -> float:
        return left + (v - x0) / (x1 - x0) * plot_w

    def sy(v: float) -> float:
        return bottom - (v - y0) / (y1 - y0) * plot_h

    f, esc = plot._f, plot._esc
    better = "lower" if res["minimize"] else "higher"
    title = (f"{res['metric']}: {n} run(s), {res['improvements']} improvement(s), "
             f"{res['since_improvement']} since the last ({better} is better)")
    ns = ' xmlns="http://www.w3.org/2000/svg"' if standalone else ""
    out = [f'<svg{ns} width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
           f'aria-label="{esc(title)}" font-family="{esc(plot._FONT)}" font-size="11" class="exprag-progress">',
           f"<title>{esc(title)}</title>", f'<rect width="{width}" height="{height}" fill="#ffffff"/>',
           f'<text x="{left}" y="24" font-size="15" font-weight="600" fill="#222">{esc(title)}</text>']
    grid, ticks = [], []
    for v, t in zip(yt, ylab):
        grid.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{f(sy(v))}" y2="{f(sy(v))}"/>')
        ticks.append(f'<text x="{left - 7}" y="{f(sy(v) + 4)}" text-anchor="end">{esc(t)}</text>')
    step = max(1, math.ceil(n / max(1, plot_w // 40)))
    for i in range(0, n, step):
        ticks.append(f'<text x="{f(sx(i))}" y="{bottom + 17}" text-anchor="middle">{i + 1}</text>')
    out.append(f'<g class="grid" stroke="#e6e6e6" stroke-width="1">{"".join(grid)}</g>')
    out.append(f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#999"/>')
    out.append(f'<g class="ticks" fill="#444">{"".join(ticks)}</g>')
    out.append(f'<text class="x-title" x="{f(left + plot_w / 2)}" y="{bottom + 36}" text-anchor="middle" '
               f'font-size="12" fill="#222">run, in start order</text>')
    cy = f(top + plot_h / 2)
    out.append(f'<text class="y-title" x="14" y="{cy}" text-anchor="middle" font-size="12" fill="#222" '
               f'transform="rotate(-90 14 {cy})">{esc(res["metric"])} (best per run)</text>')
    # the frontier: best so far as a step line, from the first improvement to the last run
    pts: List[str] = []
    for r in rows:
        if r["best_so_far"] is None:
            continue
        x, y = sx(r["index"]), sy(r["best_so_far"])
        if pts:
            pts.append(f"H{f(x)}V{f(y)}")
        else:
            pts.append(f"M{f(x)},{f(y)}")
    if pts:
        pts.append(f"H{f(sx(n - 1) + 6)}")
        out.append(f'<path class="frontier" d="{"".join(pts)}" fill="none" stroke="#2ca02c" stroke-width="2"/>')
    dots = []
    for r in rows:
        note = (r["latest_note"] or {}).get("text") or ""
        tip = (f"{r['index'] + 1}. {r['short_id']} {r['name']} ({r['status']}): "
               f"{'no value' if r['value'] is None else records.to_json(r['value'])}"
               + (f" [{', '.join(r['tags'])}]" if r["tags"] else "") + (f" \u2014 {note[:200]}" if note else ""))
        x = sx(r["index"])
        if r["value"] is None:
            if r["status"] in _FAILED:  # no value to show: a red cross on the bottom edge
                d = f"M{f(x - 5)},{f(bottom - 11)}l10,10m0,-10l-10,10"
                dots.append(f'<path class="crashed" d="{d}" stroke="#d62728" stroke-width="2.2"><title>{esc(tip)}</title></path>')
            continue
        y = sy(r["value"])
        if r["improved"]:
            dots.append(f'<circle class="improved" cx="{f(x)}" cy="{f(y)}" r="6" fill="#2ca02c" stroke="#1a5e1a" '
                        f'stroke-width="1"><title>{esc(tip)}</title></circle>')
            dots.append(f'<text x="{f(x + 8)}" y="{f(y - 8)}" font-size="10" fill="#1a5e1a">{esc(r["short_id"])}</text>')
        else:
            dots.append(f'<circle class="run" cx="{f(x)}" cy="{f(y)}" r="4" fill="#9aa5b1" fill-opacity="0.8">'
                        f"<title>{esc(tip)}</title></circle>")
        if r["status"] in _FAILED:
            d = f"M{f(x - 5)},{f(y - 5)}l10,10m0,-10l-10,10"
            dots.append(f'<path class="crashed" d="{d}" stroke="#d62728" stroke-width="2.2"><title>{esc(tip)}</title></path>')
    out.extend(dots)
    lx = left + plot_w - 330
    out.append(f'<g class="legend" font-size="11" fill="#222"><circle cx="{lx}" cy="{height - 12}" r="5" fill="#2ca02c"/>'
               f'<text x="{lx + 9}" y="{height - 8}">improved</text>'
               f'<circle cx="{lx + 80}" cy="{height - 12}" r="4" fill="#9aa5b1"/><text x="{lx + 88}" y="{height - 8}">other</text>'
               f'<line x1="{lx + 130}" x2="{lx + 150}" y1="{height - 12}" y2="{height - 12}" stroke="#2ca02c" stroke-width="2"/>'
               f'<text x="{lx + 155}" y="{height - 8}">best so far</text>'
               f'<path d="M{lx + 230},{height - 17}l10,10m0,-10l-10,10" stroke="#d62728" stroke-width="2"/>'
               f'<text x="{lx + 245}" y="{height - 8}">crashed/failed</text></g>')
    if not vals:
        out.append(f'<text x="{f(left + plot_w / 2)}" y="{f(top + plot_h / 2)}" text-anchor="middle" font-size="13" '
                   f'fill="#777">no run has a finite value</text>')
    out.append("</svg>")
    text = "\n".join(out) + "\n"
    return ('<?xml version="1.0" encoding="UTF-8"?>\n' + text) if standalone else text

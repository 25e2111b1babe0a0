"""A static, self-contained HTML report of runs: one file, inline CSS and SVG, no script, nothing fetched.

    from exprag_plus import load_runs
    from exprag_plus.report import html_report
    open("report.html", "w", encoding="utf-8").write(html_report(load_runs()[-5:]))

The page holds: a runs table (status, start, duration, code state), the final value of every metric
across runs with the best one marked, one plot per metric (at most `max_metrics`, with a note when some
are left out), and per run its metadata, command, error and code state (commit, snapshot branch, the
changed files). Every piece of user text is HTML-escaped, and a Content-Security-Policy forbids scripts
and remote loads, so the file is inert whatever the runs hold.

Which value is "best": the metric's last value, lowest when the last segment of its path names a cost
(see LOWER_IS_BETTER: loss, error, mse, perplexity, ...), highest otherwise; counters (step, epoch...),
settings (lr, learning_rate, ...) and non-finite values are never marked.
"""

from __future__ import annotations

import datetime as _dt
import math
import re
from typing import Any, Dict, List, Optional, Sequence, Tuple

from . import plot, progress, records

__all__ = ["html_report", "lower_is_better", "is_counter", "is_ranked", "best_rule", "report_metrics",
           "LOWER_IS_BETTER"]

LOWER_IS_BETTER = ("loss", "losses", "error", "errors", "err", "mse", "mae", "rmse", "mape", "nll", "perplexity",
                   "ppl", "wer", "cer", "fid", "regret", "cost", "latency", "time", "duration")
COUNTERS = ("step", "steps", "epoch", "epochs", "iteration", "iterations", "iter", "global_step", "batch", "seq")
SETTINGS = ("lr", "learning_rate", "momentum", "weight_decay", "temperature")  # plotted, never ranked
_STATUS_COLORS = {"completed": "#1a7f37", "failed": "#cf222e", "interrupted": "#bc4c00", "running": "#0969da",
                  "crashed": "#8250df"}
_MAX_STATUS_LINES = 40


def _words(path: str) -> List[str]:
    last = path.rsplit(".", 1)[-1]
    last = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", last)
    return [w for w in re.split(r"[^A-Za-z0-9]+", last.lower()) if w]


def is_counter(path: str) -> bool:
    """A progress counter (step, epoch, ...): tabled, but neither ranked nor plotted."""
    last = path.rsplit(".", 1)[-1].lower()
    return last in COUNTERS


def is_ranked(path: str) -> bool:
    """Whether a best value makes sense: not for counters nor for settings such as a learning-rate schedule."""
    return not is_counter(path) and path.rsplit(".", 1)[-1].lower() not in SETTINGS


def lower_is_better(path: str) -> bool:
    """True when a word of the path's last segment names a cost: `val_loss`, `errorRate`, `test.mse`."""
    return any(w in LOWER_IS_BETTER for w in _words(path))


def best_rule() -> str:
    return ("\u2605 marks the best final value of each metric across these runs' completed ones: the lowest for metrics whose "
            "last name segment contains one of the words " + ", ".join(LOWER_IS_BETTER) + "; the highest "
            "for every other metric. Counters (" + ", ".join(COUNTERS[:4]) + ", ...), settings ("
            + ", ".join(SETTINGS) + ") and NaN/Infinity are never marked.")


def _esc(x: Any) -> str:
    return plot._esc(x)


def _num(x: Any) -> str:
    if isinstance(x, bool) or x is None:
        return {True: "true", False: "false", None: "\u2014"}[x]
    if isinstance(x, float):
        return records.nonfinite_text(x) if not math.isfinite(x) else f"{x:.6g}"
    if isinstance(x, (int, str)):
        return str(x)
    return records.dumps(records.to_json(x))


def _when(iso: Optional[str]) -> str:
    return (iso or "")[:19].replace("T", " ") or "\u2014"


def _duration(s: Optional[float]) -> str:
    if s is None:
        return "\u2014"
    if s < 60:
        return f"{s:.1f} s"
    if s < 3600:
        return f"{int(s // 60)} min {int(s % 60)} s"
    return f"{int(s // 3600)} h {int(s % 3600 // 60)} min"


def _flat(d: Any, prefix: str = "") -> List[Tuple[str, Any]]:
    if isinstance(d, dict) and d:
        out: List[Tuple[str, Any]] = []
        for k, v in d.items():
            out.extend(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return [(prefix, d)] if prefix else []


def report_metrics(runs: Sequence[Any]) -> List[str]:
    """Metric paths to plot, most shared first (then by name); counters left out."""
    counts: Dict[str, int] = {}
    for r in runs:
        for p in r.summary:
            if not is_counter(p):
                counts[p] = counts.get(p, 0) + 1
    return sorted(counts, key=lambda p: (-counts[p], p))


def _best_runs(runs: Sequence[Any], path: str, lower: bool) -> List[int]:
    if not is_ranked(path):
        return []
    vals = []
    for i, r in enumerate(runs):
        if r.status != "completed":
            continue  # a run that failed or still runs holds no result (as `best`)
        v = (r.summary.get(path) or {}).get("last")
        if records.is_number(v) and math.isfinite(v):
            vals.append((v, i))
    if len(vals) < 2:
        return []
    target = min(v for v, _ in vals) if lower else max(v for v, _ in vals)
    return [i for v, i in vals if v == target]


_CSS = """
:root { color-scheme: light; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", "DejaVu Sans", Helvetica, Arial, sans-serif;
       color: #1f2328; background: #f6f8fa; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 20px 48px; }
h1 { font-size: 24px; margin: 0 0 4px; }
h2 { font-size: 18px; margin: 32px 0 10px; padding-bottom: 4px; border-bottom: 1px solid #d0d7de; }
h3 { font-size: 16px; margin: 0 0 8px; }
.sub { color: #59636e; margin: 0; }
.note { color: #59636e; font-size: 13px; margin: 6px 0; }
table { border-collapse: collapse; background: #fff; border: 1px solid #d0d7de; }
th, td { padding: 5px 10px; border-bottom: 1px solid #eaeef2; text-align: left; vertical-align: top; }
th { background: #f6f8fa; font-weight: 600; font-size: 13px; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.best { font-weight: 700; background: #dafbe1; }
td.bad { color: #cf222e; }
code, .mono { font-family: ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: 12.5px; }
.wrap { overflow-x: auto; }
.swatch { display: inline-block; width: 12px; height: 12px; border-radius: 2px; vertical-align: -1px;
          margin-right: 6px; }
.status { display: inline-block; padding: 0 8px; border-radius: 10px; color: #fff; font-size: 12px; font-weight: 600; }
.plots { display: grid; grid-template-columns: repeat(auto-fill, minmax(560px, 1fr)); gap: 14px; }
figure { margin: 0; background: #fff; border: 1px solid #d0d7de; border-radius: 6px; padding: 6px; }
figure svg { width: 100%; height: auto; display: block; }
article { background: #fff; border: 1px solid #d0d7de; border-radius: 6px; padding: 14px 16px; margin: 0 0 14px; }
dl { display: grid; grid-template-columns: 150px 1fr; gap: 3px 12px; margin: 0 0 8px; }
dt { color: #59636e; }
dd { margin: 0; overflow-wrap: anywhere; }
ul.files { margin: 4px 0; padding-left: 18px; }
.err { color: #cf222e; }
footer { margin-top: 32px; color: #59636e; font-size: 12px; }
"""

_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'"


def _status(s: str) -> str:
    return f'<span class="status" style="background:{_STATUS_COLORS.get(s, "#59636e")}">{_esc(s)}</span>'


def _code_cell(run: Any) -> str:
    g = run.git or {}
    if not g:
        return '<span class="note">no git state</span>'
    c = (g.get("commit") or "")[:10]
    if not c:
        return '<span class="err">no commit</span>' + (" (dirty)" if g.get("dirty") else "")
    return f'<code>{_esc(c)}</code>' + (" <span class=\"note\">dirty snapshot</span>" if g.get("dirty") else "")


def _code_state(run: Any) -> str:
    g = run.git
    rows: List[Tuple[str, str]] = []
    if not g:
        rows.append(("code", f'<span class="err">no git state</span> ({_esc(run.git_error or "unknown")})'))
        return _dl(rows)
    rows.append(("commit", f"<code>{_esc(g.get('commit') or 'none')}</code>"))
    if g.get("dirty"):
        rows.append(("snapshot branch", f"<code>{_esc(g.get('snapshot_branch') or g.get('branch') or 'none')}</code>"))
        rows.append(("base commit", f"<code>{_esc(g.get('base_commit') or 'none')}</code>"))
    else:
        rows.append(("branch", f"<code>{_esc(g.get('branch') or '(detached)')}</code> (clean tree)"))
    if run.git_error:
        rows.append(("git error", f'<span class="err">{_esc(run.git_error)}</span>'))
    status = [str(s) for s in g.get("status") or []]
    if status:
        items = "".join(f"<li><code>{_esc(s)}</code></li>" for s in status[:_MAX_STATUS_LINES])
        extra = len(status) - _MAX_STATUS_LINES
        more = f'<li class="note">and {extra} more</li>' if extra > 0 else ""
        rows.append((f"dirty files ({len(status)})", f'<ul class="files">{items}{more}</ul>'))
    skipped = g.get("skipped") or []
    if skipped:
        items = "".join(f"<li><code>{_esc(s.get('path') if isinstance(s, dict) else s)}</code> "
                        f"{_esc(s.get('reason', '') if isinstance(s, dict) else '')}</li>"
                        for s in skipped[:_MAX_STATUS_LINES])
        rows.append((f"left out of snapshot ({len(skipped)})", f'<ul class="files">{items}</ul>'))
    return _dl(rows)


def _dl(rows: Sequence[Tuple[str, str]]) -> str:
    return "<dl>" + "".join(f"<dt>{_esc(k)}</dt><dd>{v}</dd>" for k, v in rows) + "</dl>"


def html_report(runs: Sequence[Any], *, title: str = "Experiment report", max_metrics: int = 12,
                x: str = "step", source: str = "", generated: Optional[str] = None,
                lower: Sequence[str] = (), higher: Sequence[str] = ()) -> str:
    """The report page for these Run objects (in the order given) as one HTML string.

    max_metrics bounds the plots (a note says how many were left out; the table lists every metric).
    x is the plots' x axis as for `plot.run_series`. source (e.g. the runs folder) is shown in the header.
    `lower` and `higher` name metrics whose direction the name does not tell (`best_val`): they win over
    `lower_is_better`.
    """
    runs = list(runs)
    lower_set, higher_set = {records.normal_path(p) for p in lower}, {records.normal_path(p) for p in higher}

    def lower_better(path: str) -> bool:
        return path in lower_set or (path not in higher_set and lower_is_better(path))

    colors = {r.run_id: plot.PALETTE[i % len(plot.PALETTE)] for i, r in enumerate(runs)}
    when = generated or _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    parts: List[str] = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<meta name="referrer" content="no-referrer">',
        f"<title>{_esc(title)}: {len(runs)} run(s)</title>",
        f"<style>{_CSS}</style></head><body><main>",
        f"<h1>{_esc(title)}</h1>",
        f'<p class="sub">{len(runs)} run(s) \u00b7 generated {_esc(when)} by exprag-plus'
        + (f" from <code>{_esc(source)}</code>" if source else "") + "</p>",
    ]

    # runs table
    parts.append("<h2>Runs</h2><div class=\"wrap\"><table><thead><tr><th>run</th><th>name</th><th>status</th>"
                 "<th>started (UTC)</th><th>duration</th><th>code</th><th>host</th></tr></thead><tbody>")
    for r in runs:
        parts.append(
            f'<tr><td><a href="#run-{_esc(r.run_id)}"><span class="swatch" style="background:{colors[r.run_id]}">'
            f'</span><code>{_esc(r.short_id)}</code></a></td><td>{_esc(r.name)}</td><td>{_status(r.status)}</td>'
            f"<td>{_esc(_when(r.started))}</td><td class=\"num\">{_esc(_duration(r.duration_s))}</td>"
            f"<td>{_code_cell(r)}</td><td>{_esc(r.host.get('hostname') or '')}</td></tr>")
    parts.append("</tbody></table></div>")

    # progress across runs, in start order: the first metric given a direction, else the first plotted
    ranked = [m for m in report_metrics(runs) if is_ranked(m) and not records.is_axis(m)]
    if ranked and len(runs) > 1:
        m = next((p for p in map(records.normal_path, [*lower, *higher]) if p in ranked), ranked[0])
        try:
            res = progress.progress(runs, m, minimize=lower_better(m))
        except ValueError:
            res = None
        if res is not None:
            parts.append("<h2>Progress</h2>")
            parts.append(f'<p class="note"><b>{_esc(m)}</b>: {_esc(res["rule"])}: {res["improvements"]} improvement(s), '
                         f'{res["since_improvement"]} run(s) since the last. Other metrics: '
                         f"<code>exprag-plus progress METRIC -o progress.svg</code>.</p>")
            parts.append(f'<figure class="progress">{progress.svg(res, standalone=False)}</figure>')

    # final metrics
    all_paths = sorted({p for r in runs for p in r.summary})
    parts.append("<h2>Final metrics</h2>")
    if all_paths:
        parts.append(f'<p class="note">{_esc(best_rule())} Hover a value for its min, max and count.</p>')
        head = "".join(f'<th><span class="swatch" style="background:{colors[r.run_id]}"></span>'
                       f"<code>{_esc(r.short_id)}</code></th>" for r in runs)
        parts.append(f'<div class="wrap"><table><thead><tr><th>metric</th><th>better</th>{head}</tr></thead><tbody>')
        for p in all_paths:
            best = set(_best_runs(runs, p, lower_better(p)))
            better = "\u2014" if not is_ranked(p) else ("lower" if lower_better(p) else "higher")
            cells = []
            for i, r in enumerate(runs):
                s = r.summary.get(p)
                if s is None:
                    cells.append('<td class="num note">\u2014</td>')
                    continue
                v = s.get("last")
                cls = "num" + (" best" if i in best else "")
                cls += " bad" if records.is_number(v) and not math.isfinite(v) else ""
                tip = f"min {_num(s.get('min'))} \u00b7 max {_num(s.get('max'))} \u00b7 {_num(s.get('count'))} values"
                if s.get("nonfinite"):
                    tip += f" \u00b7 {s.get('nonfinite')} NaN/Inf"
                star = "&#9733; " if i in best else ""
                cells.append(f'<td class="{cls}" title="{_esc(tip)}">{star}{_esc(_num(v))}</td>')
            parts.append(f"<tr><td><code>{_esc(p)}</code></td><td>{better}</td>{''.join(cells)}</tr>")
        parts.append("</tbody></table></div>")
    else:
        parts.append('<p class="note">No run tracked a numeric metric.</p>')

    # plots
    metrics = report_metrics(runs)
    shown = metrics[: max(0, max_metrics)]
    parts.append("<h2>Curves</h2>")
    if len(metrics) > len(shown):
        parts.append(f'<p class="note">Showing {len(shown)} of {len(metrics)} metrics (those most runs share); '
                     f"draw any other with <code>exprag-plus plot METRIC</code>.</p>")
    if shown:
        parts.append('<div class="plots">')
        curves: List[Dict[str, Any]] = []  # per run, metric -> series: each file is read once
        for r in runs:
            had = [m for m in shown if m in r.summary]
            curves.append(dict(zip(had, plot.runs_series(r, had, x, color=colors[r.run_id]))))
        for m in shown:
            series = [c[m] for c in curves if m in c]
            for s in series:  # the short id is the key: the tables above pair it with the name and colour
                s.label = s.label.split(" ", 1)[0]
            d = plot.draw(series, title=m, x_label=plot.x_title(s.x_kind for s in series), y_label=m,
                          width=580, height=320, standalone=False, legend_chars=22)
            parts.append(f"<figure>{d.svg}</figure>")
        parts.append("</div>")
    else:
        parts.append('<p class="note">Nothing to plot.</p>')

    # per run
    parts.append("<h2>Run details</h2>")
    for r in runs:
        proc = r.process
        rows = [("id", f"<code>{_esc(r.run_id)}</code>"), ("status", _status(r.status)),
                ("started", _esc(_when(r.started)) + " UTC"),
                ("ended", _esc(_when(r.ended)) + (" UTC" if r.ended else "")),
                ("duration", _esc(_duration(r.duration_s))),
                ("host", _esc(f"{r.host.get('hostname') or '?'} ({r.host.get('platform') or '?'})")),
                ("command", f"<code>{_esc(' '.join(str(a) for a in proc.get('argv') or []))}</code>"),
                ("cwd", f"<code>{_esc(proc.get('cwd') or '')}</code>")]
        if r.replay_of:
            rows.append(("replay of", f"<code>{_esc(r.replay_of)}</code>"))
        err = r.error
        if err:
            rows.append(("error", f'<span class="err">{_esc(err.get("type"))}: {_esc(err.get("message"))}</span>'))
        md = _flat(r.metadata)
        parts.append(f'<article id="run-{_esc(r.run_id)}"><h3><span class="swatch" style="background:'
                     f'{colors[r.run_id]}"></span><code>{_esc(r.short_id)}</code> {_esc(r.name)}</h3>{_dl(rows)}')
        if r.tags:
            parts.append("<p>tags: " + ", ".join(f"<code>{_esc(t)}</code>" for t in r.tags) + "</p>")
        if r.notes:
            parts.append("<h3>Notes</h3><ol class=\"notes\">" + "".join(
                f"<li><span class=\"note\">{_esc(_when(n.get('time')))}</span> <b>{_esc(n.get('kind') or 'note')}</b>: "
                f"{_esc(n.get('text'))}</li>" for n in r.notes) + "</ol>")
        parts.append("<h3>Code</h3>" + _code_state(r))
        if md:
            parts.append("<h3>Metadata</h3><table><tbody>" + "".join(
                f'<tr><td><code>{_esc(k)}</code></td><td class="mono">{_esc(_num(v))}</td></tr>' for k, v in md)
                + "</tbody></table>")
        parts.append("</article>")
    parts.append("<footer>Static page written by exprag-plus: no scripts, nothing loaded from elsewhere. "
                 "Query the same runs with <code>exprag-plus runs</code>, <code>show RUN</code>, "
                 "<code>compare RUN RUN</code>.</footer>")
    parts.append("</main></body></html>")
    return "\n".join(parts) + "\n"

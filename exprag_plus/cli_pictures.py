"""`plot` and `report`: pictures of runs (drawing in plot.py and report.py; this module picks runs and writes).

Output files are replaced when they exist (like any plotting tool), with a note on stderr saying so;
`-o -` writes to stdout instead.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from typing import Any, Dict, List, Optional

from . import ids, index, query, records, store
from . import sizes
from .lazy import lazy
plot = lazy(f"{__package__}.plot")
report = lazy(f"{__package__}.report")
from .cli import Commands, UsageError, _root, count, emit_json, note
from .files import write_atomic
from .errors import NoResult

DEFAULT_LIMIT = 10
WHERE_HELP = "PATH OP VALUE, OP one of = != < <= > >= ~ (regex); repeat to AND"


def pixels(lo: int, hi: int) -> Any:
    """An argparse type: a whole number of pixels in lo..hi (a huge picture would take minutes to draw)."""
    def parse(text: str) -> int:
        try:
            n = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid size {text!r}: give a whole number of pixels, {lo} to {hi}") from None
        if not lo <= n <= hi:
            raise argparse.ArgumentTypeError(f"size {n} is out of range: give {lo} to {hi} pixels")
        return n
    return parse


def default_svg_name(metric: str) -> str:
    """`metrics.loss` -> `metrics.loss.svg`: letters, digits, dot, dash and underscore kept, the rest `_`."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", metric).strip("._") or "plot"
    return name[:120] + ".svg"


def _pick(args: argparse.Namespace) -> List[store.Run]:
    """The runs named on the command line (in that order, read whole), else every run (read lightly)."""
    root = _root(args)
    if args.runs:
        seen, runs = set(), []
        for ref in args.runs:
            r = store.Run.read(ids.resolve(ref, root))
            if r.run_id not in seen:
                seen.add(r.run_id)
                runs.append(r)
        return runs
    return index.load(root)


_KINDS = {".svg": "SVG", ".html": "HTML", ".htm": "HTML"}
_OTHER = {".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp", ".tif", ".tiff", ".pdf", ".eps", ".ps", ".json", ".csv",
          ".txt", ".md"}  # names promising another format (any other suffix is the user's naming)


def _target(path: str, suffix: str) -> str:
    """The absolute output path, checked before any work (a bad -o is an input error, exit 2): a name with
    another format's suffix (chart.png) would hold `suffix`'s format under a name that promises another."""
    full = os.path.abspath(os.path.expanduser(path))
    folder = os.path.dirname(full)
    ext = os.path.splitext(full)[1].lower()
    if (ext in _OTHER or ext in _KINDS) and _KINDS.get(ext) != _KINDS[suffix] and not _special(full):
        raise UsageError(f"-o {path!r}: this writes {_KINDS[suffix]}, not {ext[1:].upper()}; name it "
                         f"{os.path.splitext(path)[0] + suffix!r} (or -o - for stdout)")
    if os.path.islink(full) and not _special(full):
        raise UsageError(f"-o {path!r} is a symlink: give the file itself (writing through it would replace "
                         "whatever it points at)")
    if os.path.isfile(full) and _KINDS.get(ext) != _KINDS[suffix] and ext:
        raise UsageError(f"-o {path!r} exists and is no {_KINDS[suffix]} file this wrote: give a new name, e.g. "
                         f"{os.path.splitext(path)[0] + suffix!r}")
    if os.path.isdir(full):
        raise UsageError(f"-o {path!r} is a folder; give a file name")
    if not os.path.isdir(folder):
        raise UsageError(f"-o {path!r}: there is no folder {folder}")
    return full


def _special(full: str) -> bool:
    """A device or pipe (/dev/stdout, a FIFO): written into whatever its name. /dev/stdout is a symlink,
    to a terminal, a pipe, or the file a shell redirects into."""
    return full.startswith("/dev/") or (os.path.exists(full) and not os.path.isfile(full))


def _write(path: str, text: str, suffix: str) -> str:
    """Write atomically; returns the absolute path. Replacing an existing file is said on stderr."""
    if path == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return "-"
    full = _target(path, suffix)
    existed = os.path.isfile(full)  # /dev/stdout or a pipe is written into, not replaced (write_atomic)
    write_atomic(full, text)
    if existed:
        note(f"replaced {path}")
    return full


def _ordered(runs: List[store.Run], explicit: bool, limit: int, what: str) -> List[store.Run]:
    """Named runs as named; else the latest `limit` of the listing (already in start order)."""
    if explicit:
        return runs
    if limit > 0 and len(runs) > limit:
        note(f"{what} the latest {limit} of {len(runs)} runs; name runs, narrow with --where, or use --limit 0 for all")
        runs = runs[-limit:]
    return runs


def stdout_alias(path: Optional[str]) -> Optional[str]:
    """`-` for a name of this process's own stdout (/dev/stdout): opened again by name, a file the shell
    redirects into would be truncated, and what we print after it would overwrite its start."""
    return "-" if path in ("/dev/stdout", "/dev/fd/1", "/proc/self/fd/1") else path


def cmd_plot(args: argparse.Namespace) -> None:
    args.output = stdout_alias(args.output)
    if args.output == "-" and args.json:
        raise UsageError("-o - writes the SVG to stdout, which --json needs for itself; give a file name")
    metric = args.metric
    if args.output != "-":
        _target(args.output or default_svg_name(metric), ".svg")
    runs = _pick(args)
    query.check_path(metric, runs, f"metric {metric!r}", metric_only=True)
    metric = records.normal_path(metric)
    query.check_rankable(metric, runs, axis_ok=True)
    if args.x not in (None, "step", "elapsed"):
        query.check_path(args.x, runs, f"--x {args.x!r}", metric_only=True)
        args.x = records.normal_path(args.x)
    runs = query.select(runs, args.where)
    missing = [r for r in runs if metric not in r.summary]
    runs = [r for r in runs if metric in r.summary]
    if args.runs and missing:
        note(f"left out {len(missing)} run(s) without {metric!r}: {', '.join(r.short_id for r in missing)}")
    if not runs:
        raise NoResult(f"no run{' matching the --where' if args.where else ''} has {metric!r} to plot")
    runs = _ordered(runs, bool(args.runs), args.limit, "plotting")
    if args.x is None:  # step; else an axis the runs count (a script printing epochs has no step)
        args.x = next((a for a in records.AXES if any(a in r.summary for r in runs)), "step")
        if args.x != "step":
            note(f"x is {args.x} (no run tracks step; --x names another axis)")
    series = [plot.run_series(r, metric, args.x) for r in runs]
    if args.x == "step":
        no_step = [r.short_id for r, s in zip(runs, series) if s.x_kind == "index"]
        if no_step:
            note(f"no step field in {', '.join(no_step)}: x is the point index (0, 1, 2...) there")
    d = plot.draw(series, title=metric, x_label=plot.x_title(s.x_kind for s in series), y_label=metric, log=args.log,
                  width=args.width, height=args.height)
    nonpositive = sum(i["nonpositive"] for i in d.series)
    if nonpositive:
        note(f"--log: {nonpositive} value(s) <= 0 left out as gaps")
    empty = [r.short_id for r, i in zip(runs, d.series) if i["drawn"] == 0]
    if empty:
        note(f"nothing to draw for {', '.join(empty)} (no finite{' positive' if args.log else ''} values"
             f"{'' if args.x in ('step', 'elapsed') else ' with ' + repr(args.x)})")
    path = _write(args.output or default_svg_name(metric), d.svg, ".svg")
    rows: List[Dict[str, Any]] = [
        {"id": r.run_id, "short_id": r.short_id, "name": r.name, "points": i["points"], "drawn": i["drawn"],
         "nonfinite": i["nonfinite"], "nonpositive": i["nonpositive"], "color": i["color"]}
        for r, i in zip(runs, d.series)]
    if args.json:
        return emit_json({"path": path, "metric": metric, "x": args.x, "log": args.log, "runs": rows,
                          "points_drawn": d.points_drawn, "bytes": len(d.svg.encode("utf-8"))})
    if path != "-":
        total = sum(r["points"] for r in rows)
        print(f"wrote {path}: {metric} for {len(rows)} run(s), {d.points_drawn} of {total} points drawn")


def cmd_report(args: argparse.Namespace) -> None:
    args.output = stdout_alias(args.output)
    if args.output == "-" and args.json:
        raise UsageError("-o - writes the page to stdout, which --json needs for itself; give a file name")
    if args.output != "-":
        _target(args.output, ".html")
    runs = _pick(args)
    if not runs:
        raise NoResult(f"no runs in {_root(args)}")
    total = len(runs)
    runs = query.select(runs, args.where)
    if not runs:
        raise NoResult(f"no run matches the --where ({total} runs)")
    runs = _ordered(runs, bool(args.runs), args.limit, "reporting")
    for p in args.min + args.max:
        query.check_path(p, runs, f"--{'min' if p in args.min else 'max'} {p!r}", metric_only=True)
    page = report.html_report(runs, max_metrics=args.max_metrics, source=_root(args), lower=args.min,
                              higher=args.max)
    path = _write(args.output, page, ".html")
    metrics = report.report_metrics(runs)
    plotted = metrics[: max(0, args.max_metrics)]
    if len(plotted) < len(metrics):
        note(f"plotted {len(plotted)} of {len(metrics)} metrics; raise --max-metrics for more")
    if args.json:
        return emit_json({"path": path, "runs": [{"id": r.run_id, "short_id": r.short_id, "name": r.name,
                                                  "status": r.status} for r in runs],
                          "metrics": len(metrics), "plotted": plotted, "bytes": len(page.encode("utf-8"))})
    if path != "-":
        print(f"wrote {path}: {len(runs)} run(s), {len(plotted)} plot(s)")


def register(commands: Commands) -> None:
    sp = commands.add("plot", cmd_plot, "draw a metric as a self-contained SVG, one line per run "
                                        "(default: the latest 10 runs having it)")
    sp.add_argument("metric", metavar="METRIC", help="a metric path, e.g. metrics.loss (see `exprag-plus keys`)")
    sp.add_argument("runs", metavar="RUN", nargs="*",
                    help="runs to draw (default: the latest --limit runs with METRIC)")
    sp.add_argument("--where", action="append", default=[], metavar="EXPR", help=WHERE_HELP)
    sp.add_argument("--x", metavar="step|elapsed|PATH",
                    help="x axis: the step field (default; else epoch or another axis the runs track, else the "
                         "point index), elapsed seconds, or another metric path tracked with METRIC")
    sp.add_argument("--log", action="store_true", help="log10 y axis (values <= 0 become gaps)")
    sp.add_argument("-o", "--output", metavar="FILE.svg",
                    help="where to write (default: METRIC.svg here, replaced if it exists; - for stdout)")
    sp.add_argument("--limit", type=count, default=DEFAULT_LIMIT, metavar="N",
                    help=f"without RUN: the latest N runs (default {DEFAULT_LIMIT}; 0 for all)")
    sp.add_argument("--width", type=pixels(*sizes.WIDTH_RANGE), default=900, metavar="PX",
                    help=f"picture width, {sizes.WIDTH_RANGE[0]} to {sizes.WIDTH_RANGE[1]} (default 900)")
    sp.add_argument("--height", type=pixels(*sizes.HEIGHT_RANGE), default=460, metavar="PX",
                    help=f"picture height, {sizes.HEIGHT_RANGE[0]} to {sizes.HEIGHT_RANGE[1]} (default 460)")
    sp = commands.add("report", cmd_report, "write one static HTML page of runs: metadata, code state, final "
                                            "metrics with the best marked, a plot per metric")
    sp.add_argument("runs", metavar="RUN", nargs="*", help="runs to include (default: the latest --limit runs)")
    sp.add_argument("--where", action="append", default=[], metavar="EXPR", help=WHERE_HELP)
    sp.add_argument("-o", "--output", default="report.html", metavar="FILE.html",
                    help="where to write (default report.html here, replaced if it exists; - for stdout)")
    sp.add_argument("--limit", type=count, default=DEFAULT_LIMIT, metavar="N",
                    help=f"without RUN: the latest N runs (default {DEFAULT_LIMIT}; 0 for all)")
    sp.add_argument("--max-metrics", type=count, default=12, metavar="N", help="plot at most N metrics (default 12)")
    sp.add_argument("--min", action="append", default=[], metavar="METRIC",
                    help="lower is better for METRIC, whatever its name says (names with loss, error... already are)")
    sp.add_argument("--max", action="append", default=[], metavar="METRIC", help="higher is better for METRIC")

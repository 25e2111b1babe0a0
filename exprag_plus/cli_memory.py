"""`note`, `notes`, `tag` and `progress`: the research memory on the command line (formatting only)."""

from __future__ import annotations

import argparse
from typing import Any, Dict

from . import ids, memory
from .lazy import lazy
from .cli import Commands, UsageError, _cut, _root, _runs, count, emit_json, inert, note, num, table, when
from .cli_pictures import _target, _write, stdout_alias

progress = lazy(f"{__package__}.progress")
query = lazy(f"{__package__}.query")


def _path(args: argparse.Namespace) -> str:
    return ids.resolve(args.run, _root(args))


def cmd_note(args: argparse.Namespace) -> None:
    rec = memory.add_note(_path(args), args.text, args.kind)
    if args.json:
        return emit_json(rec)
    print(f"noted on run {ids.short_id(rec['run_id'])}" + (f" ({rec['kind']})" if rec.get("kind") else ""))


def cmd_tag(args: argparse.Namespace) -> None:
    fields: Dict[str, Any] = {"remove": args.tags} if args.remove else {"add": args.tags}
    rec = memory.tag_run(_path(args), **fields)
    if args.json:
        return emit_json(rec)
    verb = "removed" if args.remove else "tagged"
    print(f"{verb} {' '.join(args.tags)} {'from' if args.remove else 'on'} run {ids.short_id(rec['run_id'])}")


def cmd_progress(args: argparse.Namespace) -> None:
    args.output = stdout_alias(args.output)
    if args.output == "-" and args.json:
        raise UsageError("-o - writes the SVG to stdout, which --json needs for itself; give a file name")
    if args.output and args.output != "-":
        _target(args.output, ".svg")
    res = progress.progress(_runs(args), args.metric, args.min, args.where, 0 if args.output else args.limit,
                            args.all)
    if args.output:  # the chart draws every run; the rows are cut as without it
        chart = _write(args.output, progress.svg(res), ".svg")
        res = progress.cut(res, args.limit)
        res["svg"] = chart
    if res["shown"] < res["matched"]:
        note(f"showing {res['shown']} of {res['matched']} runs: every new best and the latest {args.limit} "
             "(--limit 0 for all)")
    if args.json:
        return emit_json(res)
    if args.output == "-":
        return
    rows = [[str(r["index"] + 1), r["short_id"], when(r["started"]), r["status"], num(r["value"]),
             num(r["best_so_far"]), "*" if r["improved"] else "", ",".join(r["tags"]),
             _cut((r["latest_note"] or {}).get("text"), 40)] for r in res["runs"]]
    print(table(rows, ["#", "ID", "STARTED (UTC)", "STATUS", res["metric"], "BEST SO FAR", "NEW BEST", "TAGS", "LATEST NOTE"]))
    b = res["best"]
    print(f"{res['rule']}; {'lower' if res['minimize'] else 'higher'} is better")
    if b:
        print(f"best {num(b['value'])} by {b['short_id']} {b['name']!r}; {res['improvements']} improvement(s); "
              f"{res['since_improvement']} run(s) since the last improvement")
    else:
        print(f"no run has a finite {res['metric']} yet")
    if args.output:
        print(f"wrote {res['svg']}")


def cmd_notes(args: argparse.Namespace) -> None:
    res = query.notes(_runs(args), args.where, args.kind, args.limit)
    if res["shown"] < res["matched"]:
        note(f"showing the latest {res['shown']} of {res['matched']} notes (--limit 0 for all)")
    if args.json:
        return emit_json(res)
    if not res["notes"]:
        print(f"no notes in {res['runs']} run(s) (`exprag-plus note RUN TEXT` adds one)")
        return
    for n in res["notes"]:
        r = n["run"]
        print(f"{when(n['time'])}  {r['short_id']}  {r['name']!r} ({r['status']})"
              + (f"  [{n['kind']}]" if n["kind"] else ""))
        print("\n".join("  " + inert(line) for line in str(n["text"]).splitlines() or [""]))


def register(commands: Commands) -> None:
    sp = commands.add("note", cmd_note, "append a note to a run (why it was run, what it showed, what was decided)")
    sp.add_argument("run", metavar="RUN")
    sp.add_argument("text", metavar="TEXT")
    sp.add_argument("--kind", metavar="K", help=f"one word, e.g. {', '.join(memory.KINDS)}")
    sp = commands.add("tag", cmd_tag, "add tags to a run (--remove to take them off); e.g. keep, discard")
    sp.add_argument("run", metavar="RUN")
    sp.add_argument("tags", metavar="TAG", nargs="+")
    sp.add_argument("--remove", action="store_true", help="remove these tags instead")
    sp = commands.add("notes", cmd_notes, "every note of the runs, oldest first: what was tried, why, and what was decided")
    sp.add_argument("--where", action="append", default=[], metavar="EXPR", help="only runs matching (see runs --help)")
    sp.add_argument("--kind", metavar="K", help=f"only notes of this kind, e.g. {', '.join(memory.KINDS)}")
    sp.add_argument("--limit", type=count, default=50, metavar="N", help="the latest N notes (default 50; 0 for all)")
    sp = commands.add("progress", cmd_progress, "runs in start order: each run's best METRIC, the best so far, "
                                                "which runs improved it, and how many runs since the last improvement")
    sp.add_argument("metric", metavar="METRIC")
    sp.add_argument("--min", action="store_true", help="lower is better")
    sp.add_argument("--where", action="append", default=[], metavar="EXPR", help="only runs matching (see runs --help)")
    sp.add_argument("--limit", type=count, default=50, metavar="N",
                    help="rows: every new best and the latest N runs (default 50; 0 for all; the chart has all)")
    sp.add_argument("--all", action="store_true",
                    help="let runs that did not complete (failed, crashed, running) move the best so far")
    sp.add_argument("-o", "--output", metavar="FILE.svg", help="also draw the chart (every run a dot, improvements "
                                                               "highlighted, best so far as a step line; - for stdout)")

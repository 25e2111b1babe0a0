"""The `exprag-plus` command: argparse in front, the library behind; this module only formats.

Exit codes: 0 ok, 1 a well-formed request that failed or found nothing, 2 bad input (one line on
stderr, never a traceback). With `--json`, stdout carries only JSON; notes and warnings go to stderr.
"""

from __future__ import annotations

import argparse
import importlib
import math
import os
import sys
import warnings
TYPE_CHECKING = False  # typing costs start-up; annotations here are never evaluated
if TYPE_CHECKING:
    from typing import Any, Callable, Dict, List, NoReturn, Optional, Sequence, Tuple

from . import __version__
from .errors import NoResult, QueryError, RunNotFound
from .lazy import lazy

# `--help` builds a parser and prints it: it needs none of these
json = lazy("json")
ids = lazy(f"{__package__}.ids")
records = lazy(f"{__package__}.records")
index = lazy(f"{__package__}.index")
query = lazy(f"{__package__}.query")
store = lazy(f"{__package__}.store")

PROG = "exprag-plus"
SPARKS = "▁▂▃▄▅▆▇█"


class UsageError(ValueError):
    """Bad command-line input (exit 2)."""


class Failure(RuntimeError):
    """The request was understood but did not succeed (exit 1)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see `{self.prog} --help`)")

    def _get_formatter(self) -> argparse.HelpFormatter:
        return self.formatter_class(prog=self.prog, width=_columns())  # type: ignore[call-arg]


def _columns() -> int:
    """shutil.get_terminal_size().columns - 2, as argparse computes its width, without importing shutil
    (with its archive modules: a tenth of `--help`'s start-up)."""
    try:
        cols = int(os.environ.get("COLUMNS", "0"))
    except ValueError:
        cols = 0
    if cols <= 0:
        try:
            cols = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            cols = 0
    return (cols or 80) - 2


# --- output helpers --------------------------------------------------------------------------------


def seconds(text: str) -> float:
    """An argparse type: a time limit, > 0 and at most 10^9 s (inf or 1e300 overflowed after the run began)."""
    try:
        s = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid seconds {text!r}: give a number, e.g. 600") from None
    if not 0 < s <= 1e9:
        raise argparse.ArgumentTypeError(f"invalid seconds {text!r}: give a number of seconds > 0 and at most 1e9")
    return s


def count(text: str) -> int:
    """An argparse type: a whole number >= 0 (0 meaning "no limit" where a limit is meant)."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid count {text!r}: give a whole number (0 for no limit)") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"invalid count {text!r}: it cannot be negative (0 for no limit)")
    return n


_held_notes: Optional[List[str]] = None


def note(text: str) -> None:
    """A line on stderr; while `main` runs a command it is held until the end, so that an input error
    (exit 2) stays one line instead of following notes about work that then did not happen."""
    line = f"{PROG}: {text}"
    if _held_notes is None:
        print(line, file=sys.stderr)
    else:
        _held_notes.append(line)


def emit_json(data: Any) -> None:
    """Indented for people, unless large: json's C encoder works only without indent (10x faster). Data
    that strict JSON takes as it is (no NaN, no odd type, no lone surrogate) skips `records.jsonable`."""
    try:
        text = json.dumps(data, ensure_ascii=False, allow_nan=False)
        text.encode("utf-8")
    except (TypeError, ValueError, RecursionError):
        data = records.jsonable(data)
        text = json.dumps(data, ensure_ascii=False)
    if len(text) < 256 * 1024:
        text = json.dumps(data, indent=2, ensure_ascii=False)
    _emitted.append(True)
    sys.stdout.write(text + "\n")


_emitted: List[bool] = []  # stdout already holds this call's JSON document (an error must not add a second)


_asked_json = False  # --json among the options, for an error before they are parsed (`--timeout abc`)


def _error(args: Any, rc: int, kind: str, line: str, message: str) -> int:
    """One line on stderr; with --json, also `{"error": {kind, message, exit_code}}` on stdout, so a
    script parsing stdout always gets one JSON document."""
    print(line, file=sys.stderr)
    if getattr(args, "json", _asked_json) and not _emitted:
        sys.stdout.write(json.dumps({"error": {"kind": kind, "message": message, "exit_code": rc}}) + "\n")
    return rc


def num(x: Any) -> str:
    if isinstance(x, bool) or x is None:
        return {True: "true", False: "false", None: "-"}[x]
    if isinstance(x, float):
        if not math.isfinite(x):
            return records.nonfinite_text(x)
        return f"{x:.6g}"
    if isinstance(x, (int, str)):
        return str(x)
    return json.dumps(records.jsonable(x), ensure_ascii=False)


def signed(x: float) -> str:
    return f"{x:+.6g}" if math.isfinite(x) else num(x)


def when(iso: Optional[str]) -> str:
    return (iso or "")[:19].replace("T", " ")


_CONTROL = None


def _control() -> Any:
    global _CONTROL
    if _CONTROL is None:
        import re

        _CONTROL = re.compile("[\\x00-\\x1f\\x7f-\\x9f]")
    return _CONTROL


def inert(text: str) -> str:
    """Text with its control characters shown escaped (`\\x1b`): a run name or note from a pulled file
    must not drive the terminal (clear it, retitle it, hide lines)."""
    return _control().sub(lambda m: repr(m.group())[1:-1], text) if _control().search(text) else text


def table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> str:
    cols = [list(header)] + [list(r) for r in rows]
    if _control().search("".join(c for r in rows for c in r)):  # one search for the whole table, as a rule
        cols[1:] = [[inert(c) for c in r] for r in cols[1:]]
    widths = [max(len(c[i]) for c in cols) for i in range(len(header))]
    return "\n".join("  ".join(c[i].ljust(widths[i]) for i in range(len(header))).rstrip() for c in cols)


def sparkline(values: Sequence[Any]) -> str:
    finite = [v for v in values if records.is_number(v) and math.isfinite(v)]
    if not finite:
        return ""
    lo, hi = min(finite), max(finite)
    out = []
    for v in values:
        if not (records.is_number(v) and math.isfinite(v)):
            out.append(" ")
        elif hi == lo:
            out.append(SPARKS[3])
        else:
            out.append(SPARKS[round((v - lo) / (hi - lo) * (len(SPARKS) - 1))])
    return "".join(out)


def human_size(n: Any) -> str:
    if not isinstance(n, int):
        return "-"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def status_text(row: Dict[str, Any]) -> str:
    now = row.get("now")
    if row["status"] == "changed" and now:
        return f"changed (now {human_size(now['bytes'])}, {when(now['mtime'])})"
    return row["status"]


def artifact_table(rows: List[Dict[str, Any]], with_run: bool = True) -> str:
    head = (["RUN"] if with_run else []) + ["PATH", "KIND", "SIZE", "STATUS"]
    body = [([r["short_id"]] if with_run else []) + [r["path"], str(r.get("kind")), human_size(r.get("bytes")), status_text(r)]
            for r in rows]
    return table(body, head)


def short_commit(git: Optional[Dict[str, Any]]) -> str:
    if not git:
        return "-"
    c = (git.get("commit") or "")[:7] or "none"
    return c + ("*" if git.get("dirty") else "")


_PREFERRED = ("loss", "acc", "score", "error", "err", "f1", "auc", "bpb", "ppl", "perplexity", "reward")


def _key_metrics(rows: List[Dict[str, Any]], n: int = 4) -> List[str]:
    """The metric columns of a runs table: the paths most runs share, names like loss/acc/score first
    (validation before training), numbers before text; step counters are axes, never columns."""
    counts: Dict[str, int] = {}
    for r in rows:
        for p in r["metrics"]:
            if not records.is_axis(p):
                counts[p] = counts.get(p, 0) + 1

    def rank(p: str) -> Tuple[int, int, int, str]:
        name = p.lower()
        preferred = any(w in name for w in _PREFERRED)
        text = any(isinstance(r["metrics"].get(p), (str, bool)) for r in rows)
        return (-counts[p], 0 if preferred else 1, (0 if "val" in name or "test" in name else 1) + 2 * text, p)

    return sorted(sorted(counts, key=rank)[:n], key=lambda p: rank(p)[1:])


def _cut(text: Any, width: int) -> str:
    t = " ".join(str(text or "").split())
    return t if len(t) <= width else t[: width - 1] + "…"


def parse_assignments(items: List[str], flag: str) -> Dict[str, Any]:
    """`NAME=VALUE` pairs; VALUE is JSON when it parses, else text."""
    out: Dict[str, Any] = {}
    for item in items:
        name, eq, raw = item.partition("=")
        if not eq or not name.strip():
            raise UsageError(f"{flag} {item!r}: write NAME=VALUE (VALUE is JSON, else text)")
        try:
            out[name.strip()] = json.loads(raw)
        except ValueError:
            out[name.strip()] = raw
    return out


# --- commands ----------------------------------------------------------------------------------------


def _root(args: argparse.Namespace) -> str:
    return ids.runs_dir(getattr(args, "root", None))


def _runs(args: argparse.Namespace) -> List[store.Run]:
    return index.load(_root(args))


def _run(args: argparse.Namespace, ref: str) -> store.Run:
    return store.Run.read(ids.resolve(ref, _root(args)))  # light: commands stream the body when they need it


def cmd_runs(args: argparse.Namespace) -> None:
    runs = _runs(args)
    for path in args.metric or []:
        query.check_path(path, runs, f"--metric {path!r}", metric_only=True)
    res = query.list_runs(runs, args.where, args.sort, args.limit)
    limited = res["shown"] < res["matched"]
    if args.json:
        if limited:
            note(f"showing {res['shown']} of {res['matched']} matching runs; use --limit 0 for all")
        return emit_json(res)
    if not res["runs"]:
        print(f"no runs yet in {_root(args)} (`exprag-plus run -- CMD` or Experiment(...) records them; --root or $EXPRAG_PLUS_DIR to look elsewhere)"
              if not res["total"] else f"no run matches ({res['total']} runs)")
        return
    keys = list(dict.fromkeys(args.metric)) if args.metric else _key_metrics(res["runs"])
    tags = any(r["tags"] for r in res["runs"])
    notes = any(r["latest_note"] for r in res["runs"])
    rows = [[r["short_id"], when(r["started"]), r["name"][:40], r["status"], short_commit(r)]
            + [num(r["metrics"].get(k)) for k in keys]
            + ([",".join(r["tags"])] if tags else []) + ([_cut((r["latest_note"] or {}).get("text"), 50)] if notes else [])
            for r in res["runs"]]
    print(table(rows, ["ID", "STARTED (UTC)", "NAME", "STATUS", "COMMIT"] + keys
                + (["TAGS"] if tags else []) + (["LATEST NOTE"] if notes else [])))
    if any(r.get("dirty") for r in res["runs"]):
        print("* dirty tree: the commit is the run's snapshot on run/<id>")
    if limited:
        print(f"{res['shown']} of {res['matched']} runs (--limit 0 for all)")


def cmd_show(args: argparse.Namespace) -> None:
    from .codestate import show  # runs git: loaded only when asked

    res = show(_run(args, args.run))
    if args.json:
        return emit_json(res)
    proc, git = res["process"], res["git"] or {}
    lines = [f"run       {res['id']} ({res['short_id']})  {res['name']!r}",
             f"status    {res['status']}" + (f" after {res['duration_s']} s" if res["duration_s"] is not None else ""),
             f"started   {when(res['started'])} UTC on {res['host'].get('hostname', '?')}",
             f"command   {' '.join(map(str, proc.get('argv') or []))}  (cwd {proc.get('cwd', '?')})"]
    cmd = res.get("command")
    if cmd:
        exit_text = "" if res["exit_code"] is None else f"  exit {res['exit_code']}" + (f" ({res['signal']})" if res["signal"] else "")
        lines[-1] = (f"command   {' '.join(map(str, cmd.get('argv') or []))}  (cwd {cmd.get('cwd', '?')}, "
                     f"recorded by exprag-plus run){exit_text}")
    if res["replay_of"]:
        lines.append(f"replay of {res['replay_of']}")
    if not res["git"]:
        lines.append(f"code      no git state ({res['git_error'] or 'unknown'})")
    elif git.get("dirty"):
        where = f"snapshot {git.get('commit')} on {git.get('branch')}" if git.get("commit") else "no snapshot"
        lines.append(f"code      dirty tree: {where}, base {git.get('base_commit')}, {len(git.get('status') or [])} changed paths")
        if res.get("same_code"):
            lines.append(f"          same code as {res['same_code']['commit'][:7]} on {res['same_code']['branch']} "
                         "(committed later)")
    else:
        lines.append(f"code      {git.get('commit')} on {git.get('branch') or '(detached)'} (clean)")
    if res["git_error"] and res["git"]:
        lines.append(f"git error {res['git_error']}")
    if res["error"]:
        err = res["error"]
        lines.append(f"error     {err.get('type') + ': ' if isinstance(err.get('type'), str) else ''}{err.get('message')}")
    md = dict(query._flat(res["metadata"]))
    if md:
        lines.append("metadata  " + "\n          ".join(f"{k} = {num(v)}" for k, v in md.items()))
    lines.append("records   " + ", ".join(f"{k} {v}" for k, v in res["records"].items()))
    if res["tags"]:
        lines.append("tags      " + ", ".join(res["tags"]))
    print("\n".join(lines))
    if res["summary"]:
        ordered = sorted(res["summary"].items(), key=lambda kv: records.is_axis(kv[0]))
        rows = [[p + (" (axis)" if records.is_axis(p) else ""), num(s.get("last")),
                 "" if records.is_text_entry(s) else num(s.get("min")),
                 "" if records.is_text_entry(s) else num(s.get("max")), str(s.get("count")),
                 str(s.get("nonfinite") or "")] for p, s in ordered]
        print()
        print(table(rows, ["METRIC", "LAST", "MIN", "MAX", "COUNT", "NONFINITE"]))
    if res.get("artifacts"):
        print()
        print(artifact_table(res["artifacts"], with_run=False))
    scan = res.get("artifact_scan") or {}
    if scan.get("omitted"):
        print(f"({scan['omitted']} more written file(s) not recorded: over the cap)")
    out = res.get("output")
    if out and out.get("tail") and res["status"] != "completed":
        print()
        print(f"output (last {len(out['tail'])} lines; all of it: exprag-plus log {res['short_id']})")
        print("\n".join("  " + str(l) for l in out["tail"]))
    if res["notes"]:
        print()
        print(f"notes ({len(res['notes'])}, oldest first)")
        for n in res["notes"]:
            print(f"  {when(n['time'])}  {n['kind'] or 'note'}: {n['text']}")


def cmd_keys(args: argparse.Namespace) -> None:
    runs = [_run(args, args.run)] if args.run else _runs(args)
    res = query.keys(runs)
    if args.json:
        return emit_json(res)
    print(f"{res['runs']} run(s).  Fields: {', '.join(res['fields'])}")
    if res["metadata"]:
        print()
        print(table([[p, str(e["runs"]), ", ".join(num(v) for v in e["values"])
                      + (f" (+{e['distinct'] - len(e['values'])} more)" if e["distinct"] > len(e["values"]) else "")]
                     for p, e in res["metadata"].items()], ["METADATA PATH", "RUNS", "VALUES"]))
    numeric = {p: e for p, e in res["metrics"].items() if e["kind"] == "number"}
    text = {p: e for p, e in res["metrics"].items() if e["kind"] == "text"}
    if numeric:
        print()
        print(table([[p, str(e["runs"]), num(e["min"]), num(e["max"])] for p, e in numeric.items()],
                    ["METRIC PATH", "RUNS", "MIN", "MAX"]))
    if text:
        print()
        print(table([[p, str(e["runs"]), ", ".join(num(v) for v in e["values"])] for p, e in text.items()],
                    ["TEXT PATH", "RUNS", "LAST VALUES"]))
    if res["axes"]:
        print()
        print(table([[p, str(e["runs"]), num(e.get("max"))] for p, e in res["axes"].items()],
                    ["AXIS (x of histories)", "RUNS", "MAX"]))


def cmd_best(args: argparse.Namespace) -> None:
    res = query.best(_runs(args), args.metric, args.min, args.final, args.where, args.all)
    if args.json:
        return emit_json(res)
    r = res["run"]
    step = lambda s: f" at step {num(s)}" if s is not None else ""
    print(f"best run by {res['metric']} ({res['rule']}):")
    print(f"  {r['short_id']}  {r['name']!r}  {r['status']}  commit {short_commit(r)}"
          + (" (* a snapshot of its dirty tree on run/<id>)" if r.get("dirty") else ""))
    print(f"  best {num(res['best'])}{step(res['best_step'])}, final {num(res['last'])}{step(res['last_step'])}")
    out = res["left_out"]
    stat = "last" if res["final"] else "min" if res["minimize"] else "max"
    print(f"  ranked {res['considered']} run(s); {res['nonfinite']} with a non-finite {stat}, "
          f"{res['without_metric']} without the metric"
          + (f"; left out {sum(out.values())} that did not complete ("
             + ", ".join(f"{n} {s}" for s, n in sorted(out.items())) + "; --all ranks them too)" if out else ""))
    if res["warning"]:
        print(f"  warning: {res['warning']}")
    if res["tied"]:
        names = ", ".join(t["short_id"] + (" (a replay of it: reproduced)" if t["replay_of"] == r["id"] else "")
                          for t in res["tied_with"]) + (", ..." if res["tied"] > len(res["tied_with"]) else "")
        print(f"  tied: {res['tied']} other run(s) have the same value ({names}); the earliest-started is shown")
    if len(res["ranking"]) > 1:
        print(table([[x["short_id"], x["name"][:40], num(x["value"])] for x in res["ranking"]], ["ID", "NAME", "VALUE"]))
    for a in res.get("artifacts") or []:
        print(f"  artifact {a['path']}  {a.get('kind')}  {a['status']}")


def cmd_history(args: argparse.Namespace) -> None:
    res = query.history(_run(args, args.run), args.metric, args.max_points, args.step)
    if res["sampled"]:
        note(f"showing {res['shown']} of {res['count']} points (first, last, min and max kept); use --max-points 0 for all")
    if args.json:
        return emit_json(res)
    values = [p["value"] for p in res["points"]]
    s = res["summary"] or {}
    print(f"{res['metric']} in {res['short_id']}: {res['count']} points, last {num(s.get('last'))}, "
          f"min {num(s.get('min'))}, max {num(s.get('max'))}")
    if args.step is None:
        print(sparkline(values))
    axis = next((a for a in records.AXES if any(p.get(a) is not None for p in res["points"])), "seq")
    print(table([[num(p.get(axis)), num(p["value"])] for p in res["points"]], [axis.upper(), "VALUE"]))


def cmd_compare(args: argparse.Namespace) -> None:
    res = query.compare(_run(args, args.run_a), _run(args, args.run_b))
    if args.json:
        return emit_json(res)
    a, b = res["a"], res["b"]
    print(f"a = {a['short_id']} {a['name']!r} ({a['status']}, {when(a['started'])})")
    print(f"b = {b['short_id']} {b['name']!r} ({b['status']}, {when(b['started'])})")
    print()
    if res["metadata"]:
        print(table([[m["path"], num(m["a"]), num(m["b"])] for m in res["metadata"]], ["METADATA CHANGED", "A", "B"]))
    else:
        print("metadata: identical")
    if res["metrics"]:
        print()
        print(table([[m["path"], num(m["a"]), num(m["b"]), "" if m["delta"] is None else signed(m["delta"])]
                     for m in res["metrics"]], ["FINAL METRIC", "A", "B", "B-A"]))
    if res["axes"]:
        print("axes (last): " + "; ".join(f"{m['path']} {num(m['a'])} vs {num(m['b'])}" for m in res["axes"]))
    print()
    ca, cb = res["code"]["a"], res["code"]["b"]
    for label, c in (("a", ca), ("b", cb)):
        desc = f"{c['commit'] or 'none'}" + (f" on {c['branch']}" if c["branch"] else "") + (" (dirty snapshot)" if c["dirty"] else "")
        print(f"code {label}: {desc}")
    if res["code"]["same_commit"]:
        print("same code")


# --- parser ------------------------------------------------------------------------------------------


class Commands:
    """Where a feature's CLI module adds its subcommands (`add`), or a group of them (`group`: `actions list`).

    With `only`, the other commands of a module are not built (`runs --help` need not build `show`)."""

    def __init__(self, sub: Any, common: argparse.ArgumentParser, only: Optional[str] = None) -> None:
        self._sub = sub
        self._common = common
        self._only = only

    def add(self, name: str, fn: Callable[[argparse.Namespace], None], help: str) -> Any:
        if self._only is not None and name != self._only:
            return _UNBUILT
        sp = self._sub.add_parser(name, parents=[self._common], help=help, description=help)
        sp.set_defaults(func=fn)
        return sp

    def group(self, name: str, help: str) -> "Commands":
        if self._only is not None and name != self._only:
            return Commands(None, self._common, only="")
        gp = self._sub.add_parser(name, help=help, description=help)
        inner = gp.add_subparsers(dest=f"{name}_command", metavar="COMMAND", parser_class=_Parser)
        inner.required = True
        return Commands(inner, self._common)


class _Unbuilt:
    """A command `Commands.add` skipped: its arguments go nowhere."""

    def add_argument(self, *args: Any, **kwargs: Any) -> None:
        pass


_UNBUILT = _Unbuilt()


# Where each command is registered ("" for this module), so that a call builds and imports only its own
# command: a listing should not pay for plots, schemas and git. tests/test_cli_startup.py keeps it true.
COMMANDS: Dict[str, str] = {
    "runs": "", "show": "", "keys": "", "best": "", "history": "", "compare": "",
    "run": "cli_run", "log": "cli_run", "note": "cli_memory", "notes": "cli_memory", "tag": "cli_memory",
    "progress": "cli_memory",
    "diff": "cli_code", "restore": "cli_code", "replay": "cli_code", "gc": "cli_code", "task": "cli_task",
    "skill": "cli_skill", "plot": "cli_pictures", "report": "cli_pictures", "mcp": "cli_mcp",
    "actions": "cli_actions", "push": "cli_share", "pull": "cli_share", "sweep": "cli_slurm",
    "artifacts": "cli_artifacts",
}


def command_of(argv: Sequence[str]) -> Optional[str]:
    """The command an argument list names (the first word that is not a top-level option), if known; None
    after a top-level -h (`exprag-plus -h runs` shows every command)."""
    skip = False
    for a in argv:
        if skip:
            skip = False
        elif a in ("-h", "--help"):
            return None
        elif a == "--root":
            skip = True
        elif a == "--" or not a.startswith("-"):
            return a if a in COMMANDS else None
    return None


def build_parser(command: Optional[str] = None) -> argparse.ArgumentParser:
    """The whole parser, or with `command` only that command's module registered (see COMMANDS)."""
    common = _Parser(add_help=False)
    common.add_argument("--json", action="store_true", help="machine output (strict JSON) on stdout")
    common.add_argument("--root", metavar="DIR", default=argparse.SUPPRESS,
                        help="the runs folder (default: $EXPRAG_PLUS_DIR, else .runs at the top of the main worktree)")
    p = _Parser(prog=PROG, description="Query, compare, restore and replay recorded experiment runs.",
                epilog="RUN is a run id, a unique prefix or suffix (>= 6), latest, latest~N, or a .jsonl path in the runs folder.")
    p.add_argument("--root", metavar="DIR", help=argparse.SUPPRESS)
    p.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    known = command in COMMANDS
    commands = Commands(sub, common, command if known else None)
    modules = [COMMANDS[command]] if known else list(dict.fromkeys(COMMANDS.values()))
    for name in modules:
        register = importlib.import_module(f"{__package__}.{name}").register if name else _register
        register(commands)
    return p


def _register(commands: Commands) -> None:
    add = commands.add
    where_help = "PATH OP VALUE, OP one of = != < <= > >= ~ (regex); PATH a field, metadata path or metric path (PATH:min|max|last|count)"
    sp = add("runs", cmd_runs, "list runs, newest first")
    sp.add_argument("--where", action="append", default=[], metavar="EXPR", help=where_help)
    sp.add_argument("--sort", metavar="KEY", help="sort by KEY ascending (-KEY descending)")
    sp.add_argument("--limit", type=count, default=20, metavar="N", help="at most N runs (default 20; 0 for all)")
    sp.add_argument("--metric", "--columns", dest="metric", nargs="+", action="extend", metavar="PATH",
                    help="the metric columns to show (default: those most runs share, loss/acc/score first)")
    sp = add("show", cmd_show, "everything about one run")
    sp.add_argument("run", metavar="RUN")
    sp = add("keys", cmd_keys, "every metadata and metric path (discover names before querying)")
    sp.add_argument("run", metavar="RUN", nargs="?")
    sp = add("best", cmd_best, "the best run by a metric (by each run's best value; --final for its last value)")
    sp.add_argument("metric", metavar="METRIC")
    sp.add_argument("--min", action="store_true", help="lower is better")
    sp.add_argument("--final", action="store_true", help="rank by the last tracked value instead of the best")
    sp.add_argument("--all", action="store_true",
                    help="rank runs that did not complete too (failed, crashed, interrupted, running); "
                         "by default only completed runs win")
    sp.add_argument("--where", action="append", default=[], metavar="EXPR", help=where_help)
    sp = add("history", cmd_history, "a metric's values in one run")
    sp.add_argument("run", metavar="RUN")
    sp.add_argument("metric", metavar="METRIC")
    sp.add_argument("--max-points", type=count, default=100, metavar="N", help="sample down to N points (default 100; 0 for all)")
    sp.add_argument("--step", type=int, metavar="N", help="only the point(s) at step N")
    sp = add("compare", cmd_compare, "metadata differences, final metrics with deltas, and code of two runs")
    sp.add_argument("run_a", metavar="RUN")
    sp.add_argument("run_b", metavar="RUN")


def _warning_line(message: Any, category: Any, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
    text = str(message)
    print(text if text.startswith(PROG) else f"{PROG}: warning: {text}", file=sys.stderr)


def _standard_streams() -> None:
    """Started with stdin, stdout or stderr closed, the files we open would take those numbers (and the
    prints would go into them), and sys.stderr is None: /dev/null fills the gap, as a shell's `>&-` user expects
    output to vanish, not the command to fail."""
    for fd, name, mode in ((0, "stdin", "r"), (1, "stdout", "w"), (2, "stderr", "w")):
        try:
            os.fstat(fd)
            continue
        except OSError:
            pass
        try:
            got = os.open(os.devnull, os.O_RDWR)
        except OSError:
            return
        if got != fd:
            os.dup2(got, fd)
            os.close(got)
        if getattr(sys, name) is None:
            setattr(sys, name, open(fd, mode, closefd=False))


def say(line: str) -> None:
    """A line on stderr that may be gone (`2>&-`, a reader that quit): `run` records on regardless."""
    try:
        print(line, file=sys.stderr, flush=True)
    except (OSError, ValueError):
        pass


def main(argv: Optional[Sequence[str]] = None) -> int:
    global _held_notes
    _standard_streams()
    _held_notes = []
    try:
        rc = _main(argv)
    finally:
        held, _held_notes = _held_notes, None
        if f"{__package__}.git" in sys.modules:
            sys.modules[f"{__package__}.git"].drop_prefetch()  # a `run` that ended before its snapshot
    if rc != 2:
        for line in held:
            print(line, file=sys.stderr)
    if rc < 0:  # a wrapped command's signal: a program dies of it too; a caller of main(argv) gets 128+N
        return _die_of(-rc) if argv is None else 128 - rc
    return rc


def _die_of(sig: int) -> int:
    """End by the signal that ended the wrapped command, as GNU timeout does: a shell loop stops at Ctrl-C
    only when its child died of SIGINT (an exit code of 130 reads as "the child handled it, go on")."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError, AttributeError):
            pass
    import signal

    try:
        import resource

        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a core of the wrapper helps no one
    except (ImportError, OSError, ValueError):
        pass
    try:
        signal.signal(sig, signal.SIG_DFL)  # SIGKILL has no handler to reset
    except (OSError, ValueError):
        pass
    try:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, [sig])
        os.kill(os.getpid(), sig)
    except (OSError, ValueError):
        pass
    return 128 + sig


def _unknown(parser: argparse.ArgumentParser, command: Optional[str], extra: List[str]) -> NoReturn:
    """Unrecognized arguments, with the nearest option of the command and where its options are listed."""
    sub = next((a.choices[command] for a in parser._actions  # noqa: SLF001 (argparse keeps subparsers here)
                if isinstance(a, argparse._SubParsersAction) and command in a.choices), None)
    hint, prog = "", parser.prog
    if sub is not None:
        prog = sub.prog
        options = [o for a in sub._actions for o in a.option_strings if o.startswith("--")]
        import difflib

        near = difflib.get_close_matches(extra[0].split("=", 1)[0], options, n=1, cutoff=0.6)
        hint = f"; did you mean {near[0]}?" if near and extra[0].startswith("-") else ""
    raise UsageError(f"unrecognized arguments: {' '.join(extra)}{hint} (see `{prog} --help`)")


def _main(argv: Optional[Sequence[str]]) -> int:
    global _asked_json
    warnings.showwarning = _warning_line
    _emitted.clear()
    argv = list(sys.argv[1:] if argv is None else argv)
    _asked_json = "--json" in (argv[:argv.index("--")] if "--" in argv else argv)
    command = command_of(argv)
    if command == "run":
        from . import git

        try:
            git.prefetch(os.getcwd())  # git reads the code's state while the rest of `run` loads (see main)
        except OSError:
            pass  # a working folder deleted under us: `run` says so below, in one line
    parser = build_parser(command)
    for i, a in enumerate(argv[:-1]):
        if a == "--" or a == "run":
            break  # what follows is a wrapped command's own arguments
        if a == "--sort" and argv[i + 1].startswith("-") and len(argv[i + 1]) > 1:
            argv[i: i + 2] = [f"--sort={argv[i + 1]}"]  # `--sort -KEY` reads as an option otherwise
            break
    try:
        args, extra = parser.parse_known_args(argv)
        if extra:
            _unknown(parser, getattr(args, "command", None), extra)
        rc = args.func(args)
        return rc if isinstance(rc, int) else 0
    except (UsageError, QueryError, RunNotFound, ValueError) as exc:  # store.LogError, WrapperError too
        args = locals().get("args")
        cmd = getattr(args, "command", None)
        return _error(args, 2, "usage", f"{PROG}{' ' + cmd if cmd else ''}: error: {exc}", str(exc))
    except (NoResult, Failure) as exc:
        return _error(locals().get("args"), 1, "no_result" if isinstance(exc, NoResult) else "failure",
                      f"{PROG}: {exc}", str(exc))
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return 0
    except OSError as exc:
        text = f"{exc.strerror or exc}{': ' + exc.filename if exc.filename else ''}"
        return _error(locals().get("args"), 1, "os", f"{PROG}: error: {text}", text)
    except Exception as exc:  # pragma: no cover - a bug: still one line, with how to see more
        if os.environ.get("EXPRAG_PLUS_DEBUG"):
            raise
        return _error(locals().get("args"), 1, "internal", f"{PROG}: internal error: {type(exc).__name__}: {exc} "
                      "(set EXPRAG_PLUS_DEBUG=1 for a traceback)", f"{type(exc).__name__}: {exc}")


if __name__ == "__main__":
    sys.exit(main())

"""`actions list|run|show`: post-run actions from the command line (formatting only; logic in actions.py).

Exit codes: 0 ok; 1 the action itself raised (its error is recorded) or its code could not be restored;
2 bad input: an unknown action, a class that cannot be imported, a malformed `--set`, a missing, invalid
or never-asked answer (one line on stderr, never a traceback). With `--json`, an execution that was
recorded prints its outcome on stdout whatever the exit code.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from typing import Any, Dict, Iterator, Optional

from . import records, store
from .lazy import lazy
actions = lazy(f"{__package__}.actions")
git = lazy(f"{__package__}.git")
from .cli import Commands, Failure, UsageError, _root, _run, emit_json, note, num, table, when


def cmd_list(args: argparse.Namespace) -> None:
    run = _run(args, args.run) if args.run else None
    res = actions.listing(_root(args), run)
    rows, scanned = res["actions"], res["runs"]
    where = f"run {run.short_id}" if run is not None else f"{scanned} run(s)"
    if args.json:
        return emit_json(res)
    if not rows:
        print(f"no actions registered in {where} (register them with exp.add_action(...))")
        return
    body = [[r["short_id"], r["run_name"][:24], r["name"], r["description"][:60], str(r["times_run"]),
             r["last_status"] or "-"] for r in rows]
    print(table(body, ["RUN", "RUN NAME", "ACTION", "DESCRIPTION", "RUNS", "LAST"]))


def _answers_text(answers: Any) -> str:
    if not isinstance(answers, dict) or not answers:
        return "-"
    return ", ".join(f"{k}={num(records.from_json(v))}" for k, v in answers.items())


def cmd_show(args: argparse.Namespace) -> None:
    run = _run(args, args.run)
    acts = actions.Actions(run)
    try:
        rec = acts.record(args.name)
    except actions.ActionNotFound as exc:
        raise UsageError(str(exc)) from None
    runs = acts.executions(args.name)
    params = records.from_json(rec.get("params") or {})
    res = {"run_id": run.run_id, "short_id": run.short_id, "run_name": run.name, "name": args.name,
           "class": rec.get("class"), "file": rec.get("file"), "description": rec.get("description") or "",
           "params": params, "registered": rec.get("time"),
           "executions": [{k: r.get(k) for k in ("time", "status", "answers", "result", "error", "duration_ms", "code")}
                          for r in runs]}
    if args.json:
        return emit_json(res)
    lines = [f"action      {args.name}  (run {run.short_id} {run.name!r})",
             f"class       {rec.get('class')}" + (f"  (file {rec['file']})" if rec.get("file") else ""),
             f"description {res['description'] or '-'}",
             f"registered  {when(rec.get('time'))} UTC"]
    flat = list(params.items()) if isinstance(params, dict) else []
    lines.append("params      " + ("\n            ".join(f"{k} = {num(v)}" for k, v in flat) if flat else "-"))
    print("\n".join(lines))
    print()
    if not runs:
        print("never run")
    else:
        print(table([[when(r.get("time")), str(r.get("status")), num(r.get("duration_ms")) + " ms",
                      _answers_text(r.get("answers")),
                      (f"{r['error'].get('type')}: {r['error'].get('message')}" if isinstance(r.get("error"), dict)
                       else num(records.from_json(r.get("result"))))[:80]]
                     for r in runs], ["RAN (UTC)", "STATUS", "TOOK", "ANSWERS", "RESULT / ERROR"]))
        last = runs[-1]
        tb = (last.get("error") or {}).get("traceback") if isinstance(last.get("error"), dict) else None
        if tb:
            print()
            print("last error:")
            print(tb.rstrip())
    print()
    print(f"run it: exprag-plus actions run {run.short_id} {args.name}" + (" --set KEY=VALUE ..." if runs else ""))


def _outcome(run: store.Run, name: str, record: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    r = record or {}
    return {"run_id": run.run_id, "name": name, "status": r.get("status"), "answers": r.get("answers", {}),
            "result": r.get("result"), "error": r.get("error")}


@contextlib.contextmanager
def _guarded_streams(close_stdin: bool, stdout_to_stderr: bool) -> Iterator[None]:
    """Without a terminal the action reads end-of-file (an agent's open pipe must never hang it); with
    --json, what it prints goes to stderr, so stdout stays one JSON document."""
    moves = ([(0, os.open(os.devnull, os.O_RDONLY))] if close_stdin else []) + ([(1, 2)] if stdout_to_stderr else [])
    sys.stdout.flush()
    saved = [(fd, os.dup(fd)) for fd, _ in moves]
    for fd, src in moves:
        os.dup2(src, fd)
    if close_stdin:
        os.close(moves[0][1])
    old_in, old_out = sys.stdin, sys.stdout
    if close_stdin:
        sys.stdin = open(os.devnull, encoding="utf-8")
    if stdout_to_stderr:
        sys.stdout = sys.stderr
    try:
        yield
    finally:
        if close_stdin:
            sys.stdin.close()
        sys.stdin, sys.stdout = old_in, old_out
        for fd, copy in saved:
            os.dup2(copy, fd)
            os.close(copy)


def cmd_run(args: argparse.Namespace) -> None:
    try:
        answers = actions.parse_set(args.set)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if args.keep and args.code != "run":
        raise UsageError("--keep keeps the worktree of --code run; it means nothing with --code current")
    run = _run(args, args.run)
    interactive = not args.no_input and sys.stdin is not None and sys.stdin.isatty()
    if interactive:
        interaction: actions.Interaction = actions.TerminalInteraction(answers, source="--set")
    else:
        reason = "--no-input" if args.no_input else "stdin is not a terminal"
        interaction = actions.PrefilledInteraction(answers, source="--set", reason=reason)
    record: Optional[Dict[str, Any]] = None
    failure: Optional[BaseException] = None
    try:
        with _guarded_streams(close_stdin=not interactive, stdout_to_stderr=args.json):
            record = actions.run_action(run, args.name, interaction, code=args.code, keep=args.keep)
    except (actions.ActionNotFound, actions.ActionLoadError) as exc:
        raise UsageError(str(exc)) from None
    except actions.AnswerError as exc:
        if exc.record is None:
            raise UsageError(str(exc)) from None
        record, failure = exc.record, UsageError(str(exc))
    except actions.ActionFailed as exc:
        record, failure = exc.record, Failure(f"{exc} (recorded in run {run.short_id}; "
                                              f"see `exprag-plus actions show {run.short_id} {args.name}`)")
    except git.GitError as exc:
        raise Failure(f"cannot restore the code of run {run.short_id}: {exc}") from None
    out = _outcome(run, args.name, record)
    if args.json:
        emit_json(out)
    elif out["status"] == "ok" and out["result"] is not None:
        result = records.from_json(out["result"])
        print(result if isinstance(result, str) else json.dumps(out["result"], indent=2, ensure_ascii=False))
    if failure is not None:
        raise failure
    skipped = interaction.unused()
    if skipped:
        note(f"--set {', '.join(skipped)} not asked this time (the action asks {'it' if len(skipped) == 1 else 'them'} "
             "only in some cases)")
    if args.code == "run" and args.keep and record is not None:
        note("the run's code was kept in a git worktree (`git worktree list`; remove it with `git worktree remove`)")
    if not args.json:
        took = (record or {}).get("duration_ms")
        note(f"action {args.name!r} ok in {num(took)} ms; recorded in run {run.short_id} "
             f"(answers: {_answers_text(out['answers'])})")


def register(commands: Commands) -> None:
    grp = commands.group("actions", "post-run actions: list them, run them (asking or with --set), show their past runs")
    sp = grp.add("list", cmd_list, "the actions registered in one run, or in every run (run, name, description, "
                                   "times run, last status)")
    sp.add_argument("run", metavar="RUN", nargs="?", help="default: every run")
    sp = grp.add("run", cmd_run, "execute an action: asks on a terminal, else uses --set answers and defaults; "
                                 "records an action_run")
    sp.add_argument("run", metavar="RUN")
    sp.add_argument("name", metavar="NAME", help="the action's name, exactly (see `actions list`)")
    sp.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="prefill the question KEY (booleans: true/false, yes/no, y/n, 1/0; choices: the text)")
    sp.add_argument("--no-input", action="store_true",
                    help="never ask: a question with no --set answer and no default is an error")
    sp.add_argument("--code", choices=("current", "run"), default="current",
                    help="import the action's class from the current code (default) or from the run's own "
                         "commit, restored in a temporary git worktree")
    sp.add_argument("--keep", action="store_true", help="with --code run: keep the worktree afterwards")
    sp = grp.add("show", cmd_show, "one action: class, params, description and its past executions")
    sp.add_argument("run", metavar="RUN")
    sp.add_argument("name", metavar="NAME")

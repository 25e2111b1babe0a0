"""`diff`, `restore`, `replay`, `gc`: the code-state commands (formatting only; logic in codestate.py)."""

from __future__ import annotations

import argparse
import shlex
import sys
from typing import Any

from . import query
from .lazy import lazy
codestate = lazy(f"{__package__}.codestate")
git = lazy(f"{__package__}.git")
from .cli import Commands, Failure, UsageError, count, _root, _run, emit_json, note, num, signed, table


def _guard(fn: Any) -> Any:
    """Code-state failures are failures (exit 1), with their one-line reason."""

    def wrapped(args: argparse.Namespace) -> None:
        try:
            fn(args)
        except (codestate.CodeStateError, git.GitError) as exc:
            raise Failure(str(exc)) from None

    return wrapped


def cmd_diff(args: argparse.Namespace) -> None:
    a = _run(args, args.run)
    b = _run(args, args.run2) if args.run2 else None
    if args.base and b is not None:
        raise UsageError("diff --base shows one run's change against the commit it started from: give one RUN")
    res = codestate.diff(a, b, stat=args.stat, max_lines=args.max_lines, runs_dir=_root(args), base=args.base)
    if res["truncated"]:
        note(f"showing {args.max_lines} of {res['lines']} diff lines; use --max-lines 0 for all")
    if args.json:
        return emit_json(res)
    sys.stdout.write(res["diff"])
    if not res["diff"]:
        other = f"run {b.short_id}" if b is not None else "its base commit" if args.base else "the working tree"
        note(f"no code difference between run {a.short_id} and {other}")


def cmd_restore(args: argparse.Namespace) -> None:
    if args.force and not args.checkout:
        raise ValueError("--force only applies to --checkout (a new worktree never overwrites anything)")
    res = codestate.restore(_run(args, args.run), args.into, args.checkout, force=args.force)
    if args.json:
        return emit_json(res)
    if res["checked_out"]:
        print(f"checked out {res['commit']} (detached HEAD) in {res['path']}")
    else:
        print(res["cwd"] if res["cwd"] != res["path"] else res["path"])
        note(f"run code at {res['commit'][:12]} in a new worktree; remove it with `git worktree remove {res['path']}`")


def cmd_replay(args: argparse.Namespace) -> None:
    run = _run(args, args.run)
    res = codestate.replay(run, _root(args), dry_run=args.dry_run, stdout=sys.stderr if args.json else None,
                           into=args.into)
    if args.dry_run:
        if args.json:
            return emit_json(res)
        print(f"would restore {res['commit'][:12]} into {args.into or 'a new worktree'} and run in {res['cwd']}:")
        print("  " + shlex.join(res["command"]))  # pasted into a shell, it runs as shown
        return
    new = res.pop("new_run")
    res["compare"] = query.compare(run, new) if new is not None else None
    if args.json:
        emit_json(res)
    else:
        print(f"replayed run {run.short_id} in {res['cwd']} (exit code {res['exit_code']})")
        if res.get("worktree"):
            note(f"the replay's worktree stays for a look; remove it with `git worktree remove {res['worktree']}`")
        if new is None:
            print("the replay recorded no run")
        else:
            rows = [[m["path"], num(m["a"]), num(m["b"]), "" if m["delta"] is None else signed(m["delta"])]
                    for m in res["compare"]["metrics"]]
            print(f"original {run.short_id}  vs  replay {new.short_id} ({new.status})")
            if rows:
                print(table(rows, ["FINAL METRIC", "ORIGINAL", "REPLAY", "DELTA"]))
    if res["exit_code"] != 0:
        raise Failure(f"the replayed command exited with {res['exit_code']}")


def cmd_gc(args: argparse.Namespace) -> None:
    res = codestate.gc(_root(args), dry_run=args.dry_run)
    if args.json:
        return emit_json(res)
    verb = "would delete" if args.dry_run else "deleted"
    for ref in res["deleted"]:
        print(f"{verb} {ref}")
    for f in res["failed"]:
        note(f"could not delete {f['ref']}: {f['error']}")
    for r in res["not_ours"]:
        print(f"left alone {r['ref']}: {r['reason']}")
    print(f"{verb} {len(res['deleted'])} snapshot branch(es); kept {res['kept']} of runs that still exist "
          f"(looked in {', '.join(res['searched']) or 'no runs folder'})")
    if res["failed"]:
        raise Failure(f"{len(res['failed'])} branch(es) could not be deleted")


def register(commands: Commands) -> None:
    sp = commands.add("diff", _guard(cmd_diff), "the code diff between two runs, or a run and the current tree")
    sp.add_argument("run", metavar="RUN")
    sp.add_argument("run2", metavar="RUN2", nargs="?", help="default: the current working tree")
    sp.add_argument("--base", action="store_true",
                    help="the run's own change: from the commit it started from to the code that ran")
    sp.add_argument("--stat", action="store_true", help="a summary of changed files instead of the patch")
    sp.add_argument("--max-lines", type=count, default=2000, metavar="N", help="at most N lines (default 2000; 0 for all)")
    sp = commands.add("restore", _guard(cmd_restore), "a run's exact code in a new git worktree (prints its path)")
    sp.add_argument("run", metavar="RUN")
    sp.add_argument("--into", metavar="DIR", help="where the worktree goes (must not exist or be empty)")
    sp.add_argument("--checkout", action="store_true",
                    help="switch the current checkout to the run's commit instead (refused unless the tree is clean, "
                         "and when it would overwrite untracked or ignored files)")
    sp.add_argument("--force", action="store_true",
                    help="with --checkout: overwrite untracked or ignored files the run's commit holds")
    sp = commands.add("replay", _guard(cmd_replay), "re-run a run's command on its own code, in a new worktree")
    sp.add_argument("run", metavar="RUN")
    sp.add_argument("--into", metavar="DIR", help="where the worktree goes (must not exist or be empty; default: "
                                                  "a new folder under the repository's .git)")
    sp.add_argument("--dry-run", action="store_true", help="print what would run")
    sp = commands.add("gc", _guard(cmd_gc), "delete the run/<id> snapshot branches exprag-plus made whose runs are gone")
    sp.add_argument("--dry-run", action="store_true", help="list them without deleting")

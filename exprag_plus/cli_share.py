"""`push` and `pull`: sharing runs through git remotes (formatting only; logic in share.py)."""

from __future__ import annotations

import argparse
import os
from typing import Any, Dict, List, Tuple

from . import ids
from .lazy import lazy
share = lazy(f"{__package__}.share")
from .cli import Commands, Failure, UsageError, _root, emit_json, note


def _split(words: List[str], pull: bool) -> Tuple[str, List[str]]:
    """REMOTE is the first word when it names a remote, a URL or a path; else every word is a RUN."""
    if words and (share.looks_like_remote(None, words[0]) or (pull and os.path.isdir(words[0]))):
        return words[0], words[1:]
    if words and (os.sep in words[0] or "/" in words[0]) and not words[0].endswith(ids.SUFFIX):
        raise UsageError(f"{words[0]!r} is not a git remote, a URL, nor an existing path "
                         "(`git remote -v` lists the remotes)")
    return "origin", words


def _report(res: Dict[str, Any], verb: str, args: argparse.Namespace) -> None:
    for w in res.get("warnings", []):
        note(f"warning: {share.redact(w)}")
    for s in res["skipped"]:
        note(f"warning: {s['reason']}")
    for r in res["refused"]:
        note(f"error: {r['reason']}")
    done = res[verb]
    if verb == "pulled" and not (done or res["unchanged"] or res["refused"] or res["skipped"]):
        note(f"{res['remote']} holds no runs: they reach it when the machine that recorded them runs "
             "`exprag-plus push`")
    if args.json:
        emit_json({k: v for k, v in res.items() if k != "warnings"})
    else:
        would = "would have " if res["dry_run"] else ""
        where = "to" if verb == "pushed" else "from"
        line = f"{would}{verb} {len(done)} run(s) {where} {res['remote']}; {res['unchanged']} unchanged"
        if res["merged"]:
            line += f"; merged {len(res['merged'])} with records from elsewhere: " + ", ".join(
                ids.short_id(r) for r in res["merged"][:10]) + (" ..." if len(res["merged"]) > 10 else "")
        print(line)
        if done and len(done) <= 20:
            print("  " + " ".join(ids.short_id(r) for r in done))
    if res["refused"]:
        raise Failure(f"{len(res['refused'])} run(s) refused (see above); the others were {verb}")


def _guard(fn: Any) -> Any:
    def wrapped(args: argparse.Namespace) -> None:
        try:
            fn(args)
        except share.ShareError as exc:
            raise Failure(share.redact(str(exc))) from None

    return wrapped


def cmd_push(args: argparse.Namespace) -> None:
    remote, runs = _split(args.words, pull=False)
    if runs and remote == "origin" and runs == args.words:
        try:
            ids.resolve(runs[0], _root(args))
        except ids.RunNotFound as exc:
            raise UsageError(f"{runs[0]!r} is neither a git remote (`git remote -v` lists them), a URL or a "
                             f"path, nor a run ({exc})") from None
    res = share.push(_root(args), remote, runs or None, dry_run=args.dry_run, everything=args.all)
    _report(res, "pushed", args)


def cmd_pull(args: argparse.Namespace) -> None:
    remote, runs = _split(args.words, pull=True)
    res = share.pull(_root(args), remote, runs or None, dry_run=args.dry_run)
    _report(res, "pulled", args)


def register(commands: Commands) -> None:
    sp = commands.add("push", _guard(cmd_push),
                      "send runs (records and their code) to a git remote as refs/exprag-plus/runs/<id>")
    sp.add_argument("words", nargs="*", metavar="[REMOTE] [RUN...]",
                    help="a remote name, URL or path (default origin), then runs (default: every changed run)")
    sp.add_argument("--dry-run", action="store_true", help="list what would be pushed, build and send nothing")
    sp.add_argument("--all", action="store_true",
                    help="also send runs already pushed elsewhere (filling a new remote)")
    sp = commands.add("pull", _guard(cmd_pull),
                      "fetch runs from a git remote, or merge a runs folder copied from elsewhere")
    sp.add_argument("words", nargs="*", metavar="[REMOTE|PATH] [RUN...]",
                    help="a remote name, URL, git path or copied runs folder (default origin), then runs")
    sp.add_argument("--dry-run", action="store_true",
                    help="fetch (objects and refs/exprag-plus/remotes/* only) and list what would change; write no run file")

"""`note`, `tag` and `progress`: the research memory on the command line (formatting only)."""

from __future__ import annotations

import argparse
from typing import Any, Dict

from . import ids, memory
from .cli import Commands, _root, emit_json


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


def register(commands: Commands) -> None:
    sp = commands.add("note", cmd_note, "append a note to a run (why it was run, what it showed, what was decided)")
    sp.add_argument("run", metavar="RUN")
    sp.add_argument("text", metavar="TEXT")
    sp.add_argument("--kind", metavar="K", help=f"one word, e.g. {', '.join(memory.KINDS)}")
    sp = commands.add("tag", cmd_tag, "add tags to a run (--remove to take them off); e.g. keep, discard")
    sp.add_argument("run", metavar="RUN")
    sp.add_argument("tags", metavar="TAG", nargs="+")
    sp.add_argument("--remove", action="store_true", help="remove these tags instead")

"""`artifacts [RUN]`: the files runs wrote and whether they still exist and match (formatting only)."""

from __future__ import annotations

import argparse

from . import artifacts
from .cli import Commands, _run, _runs, artifact_table, emit_json, note


def cmd_artifacts(args: argparse.Namespace) -> None:
    runs = [_run(args, args.run)] if args.run else _runs(args)
    res = artifacts.listing(runs, args.kind)
    if res["omitted"]:
        note(f"{res['omitted']} more file(s) were written but not recorded (over a run's --max-artifacts cap; "
             "see artifact_scan in `show --json`)")
    if args.json:
        return emit_json(res)
    if not res["artifacts"]:
        what = f" of kind {args.kind}" if args.kind else ""
        print(f"no artifacts{what} recorded in {res['runs']} run(s) (exp.artifact(path) or `exprag-plus run -- CMD` "
              "records them)")
        return
    print(artifact_table(res["artifacts"]))
    bad = {k: v for k, v in res["counts"].items() if k != "ok" and v}
    if bad:
        print("; ".join(f"{v} {k}" for k, v in bad.items()) + " since recorded: the file is not the one the run wrote")


def register(commands: Commands) -> None:
    sp = commands.add("artifacts", cmd_artifacts,
                      "the files runs wrote (checkpoints, data, plots) and whether each is still there, unchanged")
    sp.add_argument("run", metavar="RUN", nargs="?", help="one run (default: every run, newest first)")
    sp.add_argument("--kind", choices=artifacts.KINDS, help="only this kind")

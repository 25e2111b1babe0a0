"""`run -- CMD` and `log RUN`: record any command; read what it printed (formatting only; see wrapper.py)."""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys
from typing import Any, Dict, List

from . import cmdline, git, ids, records, store
from .lazy import lazy
artifacts = lazy(f"{__package__}.artifacts")
wrapper = lazy(f"{__package__}.wrapper")
from .cli import Commands, Failure, UsageError, _root, _run, count, emit_json, num, parse_assignments, say, seconds



def _meta(items: List[str]) -> Dict[str, Any]:
    """--meta KEY=VALUE pairs (see parse_assignments); a dotted KEY nests: a.b=1 is {"a": {"b": 1}}."""
    out, clashes = cmdline.nest(parse_assignments(items, "--meta"))
    if clashes:
        raise UsageError(f"--meta {clashes[0]}: {clashes[0].rsplit('.', 1)[0]!r} already holds a value, not a group")
    return out


def _metrics_text(metrics: Dict[str, Any], n: int = 8) -> str:
    """The last value of each metric, the first `n` in the order they were tracked, then how many more."""
    shown = [(k, v) for k, v in metrics.items() if k.rsplit(".", 1)[-1] not in records.AXES and records.is_number(v)]
    more = f", {len(shown) - n} more (show)" if len(shown) > n else ""
    return ", ".join(f"{k} {num(v)}" for k, v in shown[:n]) + more


def cmd_run(args: argparse.Namespace) -> int:
    argv = list(args.cmd)
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        raise ValueError("no command to run: give it after `--`, e.g. exprag-plus run -- python train.py")
    patterns = wrapper.compile_patterns(args.parse)
    metadata = _meta(args.meta)
    if args.sbatch_arg and not args.slurm:
        raise ValueError("--sbatch-arg goes with --slurm")
    if args.slurm or args.resume or wrapper.nested():
        git.drop_prefetch()  # no snapshot of the code as it is now follows at once (see cli._main)
    if args.slurm:
        return _submit(args, argv)
    if wrapper.nested():
        say(f"exprag-plus: already recording (an enclosing `exprag-plus run`); running {argv[0]} as is")
        wrapper.exec_plain(argv)
    stated = cmdline.settings(argv)
    given = metadata.get("args", {})
    if stated and isinstance(given, dict):
        for k in sorted(k for k in given if k in stated and given[k] != stated[k]):  # a misread flag, or a mistake
            say(f"exprag-plus: --meta args.{k}={records.dumps(given[k])} replaces the command's own {k} = "
                f"{records.dumps(stated[k])} in the record")
        metadata = {**metadata, "args": {**stated, **given}}  # --meta args.NAME=V adds a default or overrides
    cmd_text = " ".join(records.redact_argv(argv))

    def announce(exp: Any) -> None:
        out = os.path.join(exp.root, exp.run_id, wrapper.OUTPUT_LOG)
        near = os.path.relpath(out)
        out = out if near.startswith(os.pardir) else near  # "../../.." from a replay's worktree says nothing
        say(f"run {ids.short_id(exp.run_id)} recording: {cmd_text}  (output also in {out})")

    res = wrapper.run_command(argv, name=args.name, metadata=metadata, note=args.note,
                              root=getattr(args, "root", None), timeout=args.timeout, parse=not args.no_parse,
                              patterns=patterns, resume=args.resume, announce=announce,
                              record_artifacts=not args.no_artifacts, max_artifacts=args.max_artifacts,
                              hash_limit=args.hash_limit, stdout_fd=2 if args.json else 1)
    if res.get("error"):
        say(f"exprag-plus: {res['error']['message']}")
    metrics = _metrics_text(res["metrics"])
    how = f"exit {res['exit_code']}" + (f", {res['signal']}" if res["signal"] else "")
    say(f"run {ids.short_id(res['run_id'])} {res['status']} in {res['duration_s']:.1f} s"
        + (f": {metrics}, {how}" if metrics else f": {how}"))
    if res.get("unread"):
        line, pattern = res["unread"]
        say(f"exprag-plus: lines such as {line!r} were not read as metrics; to read them, add --parse "
            f"{shlex.quote(pattern)}")
    if res.get("left_open"):
        say("exprag-plus: the command exited, leaving processes that still hold its output; what they print "
            "from now on is not recorded, and printing there ends them (SIGPIPE)")
    scan = res.get("artifacts") or {}
    if scan.get("note"):
        say(f"exprag-plus: {scan['note']}")
    if args.json:
        sys.stdout.flush()
        emit_json({"run_id": res["run_id"], "short_id": ids.short_id(res["run_id"]),
                   **{k: res[k] for k in ("status", "exit_code", "signal", "duration_s", "metrics", "output", "artifacts")}})
    code = int(res["exit_code"])
    if res["signal"] and code > 128:
        sig = code - 128
        if res.get("terminal") and sig in (signal.SIGINT, signal.SIGQUIT):
            # the terminal's Ctrl-C reached the command alone (it held the terminal): the rest of our job,
            # a script looping over runs among it, gets it now, as it would have without us
            before = signal.signal(sig, signal.SIG_IGN)
            try:
                os.killpg(os.getpgrp(), sig)
            except OSError:
                pass
            signal.signal(sig, before)
        return -sig  # main dies of it (see cli._die_of)
    return code if 0 <= code < 256 else 1


def _submit(args: argparse.Namespace, argv: List[str]) -> int:
    """`run --slurm`: one job running `exprag-plus run -- CMD` on the code frozen now."""
    from . import slurm

    if args.resume:
        raise ValueError("--resume and --slurm do not mix: a requeued job continues its run by itself")
    run_args: List[str] = []
    for flag, value in (("--name", args.name), ("--note", args.note)):
        if value:
            run_args += [flag, value]
    for item in args.meta:
        run_args += ["--meta", item]
    for pat in args.parse:
        run_args += ["--parse", pat]
    run_args += (["--timeout", repr(args.timeout)] if args.timeout else []) + (["--no-parse"] if args.no_parse else [])
    try:
        out = slurm.submit_command(argv, run_args, runs_dir=_root(args), sbatch_args=args.sbatch_arg,
                                   name=args.name)
    except slurm.SubmitError as exc:
        raise Failure(str(exc)) from None
    if args.json:
        emit_json({"job_id": out["job_id"], "sweep_id": out["sweep_id"], "tasks": out["tasks"], "commit": out["commit"]})
    else:
        print(f"submitted job {out['job_id']}: sweep {out['sweep_id']}")
        print(f"exprag-plus: code frozen at {out['commit'][:12]} in {out['code']}; follow with "
              f"`exprag-plus sweep status {out['sweep_id']}`", file=sys.stderr)
    return 0


def cmd_log(args: argparse.Namespace) -> None:
    run = _run(args, args.run)
    lines = store.read_log(run, args.tail or None, args.grep)
    if lines is None:
        raise Failure(store.no_output(run))
    out = sys.stdout.buffer
    if args.json:
        emit_json({"run_id": run.run_id, "lines": [l.decode("utf-8", "replace").rstrip("\n") for l in lines]})
        return
    for line in lines:
        out.write(line)
    out.flush()


def register(commands: Commands) -> None:
    sp = commands.add("run", cmd_run, "record any command as a run: its code, output, exit code and metrics")
    sp.add_argument("--name", metavar="NAME", help="the run's name (default: the program's name)")
    sp.add_argument("--meta", action="append", default=[], metavar="KEY=VALUE",
                    help="metadata (VALUE as JSON when it parses, else text; a.b=1 nests)")
    sp.add_argument("--note", metavar="TEXT", help="why this run: a note of kind hypothesis recorded with it")
    sp.add_argument("--timeout", type=seconds, metavar="SECONDS", help="kill the command's process group after this long")
    sp.add_argument("--no-parse", action="store_true", help="do not read metrics from the output")
    sp.add_argument("--parse", action="append", default=[], metavar="REGEX",
                    help="also track what this pattern's named groups capture (a group named step is the step)")
    sp.add_argument("--resume", metavar="RUN", help="continue this run instead of starting a new one")
    sp.add_argument("--slurm", action="store_true",
                    help="submit it as a Slurm job running the code as it is now (a frozen checkout)")
    sp.add_argument("--sbatch-arg", action="append", default=[], metavar="ARG",
                    help="an sbatch option for --slurm, e.g. --sbatch-arg=--time=10; repeatable")
    sp.add_argument("--no-artifacts", action="store_true",
                    help="do not record the files the command created or modified under the working folder")
    sp.add_argument("--max-artifacts", type=count, default=artifacts.MAX_RECORDED, metavar="N",
                    help=f"record at most N files (default {artifacts.MAX_RECORDED}; 0 for all; run_end counts the rest)")
    sp.add_argument("--hash-limit", type=count, default=artifacts.HASH_LIMIT, metavar="BYTES",
                    help="sha256 only files up to this size (default 256 MiB); larger ones: size and mtime")
    sp.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- CMD [ARGS...]")
    sp = commands.add("log", cmd_log, "a run's captured output (runs recorded with `run -- CMD`)")
    sp.add_argument("run", metavar="RUN")
    sp.add_argument("--tail", type=count, metavar="N", help="only the last N lines")
    sp.add_argument("--grep", metavar="REGEX", help="only lines matching REGEX")

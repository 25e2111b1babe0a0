"""`task info` and `task run`: task schemas from the command line (formatting only; logic in schema.py)."""

from __future__ import annotations

import argparse
import json
import os
from typing import TYPE_CHECKING, Any, Dict, List, Tuple

from .cli import Commands, Failure, UsageError, count, emit_json, note, parse_assignments
from .lazy import lazy

experiment = lazy(f"{__package__}.experiment")
redact = lazy(f"{__package__}.redact")

if TYPE_CHECKING:
    from .schema import TaskSchema


def _plan(schema: "TaskSchema", args: argparse.Namespace) -> Tuple[Dict[str, Any], List[Dict[str, Any]]]:
    """The given inputs and the input set of every element (sequences from the file, then --each)."""
    given = parse_assignments(args.input, "--input")
    sequences = [dict(s) for s in schema.sequences]
    top = max([s.get("nesting_order", 0) for s in sequences] + [-1])
    for i, name in enumerate(args.each):
        if name not in given:
            raise UsageError(f"--each {name}: give its values with --input {name}=[...]")
        values = given.pop(name)
        if not isinstance(values, list) or not values:
            raise UsageError(f"--each {name}: its --input value must be a non-empty JSON list, e.g. {name}=[1,2,3]")
        sequences.append({"path": f"inputs.{name}", "values": values, "nesting_order": top + 1 + i})
    from .schema import expand_sequences  # schema parsing is imported only by the commands that use it

    return given, expand_sequences(given, sequences)


def cmd_info(args: argparse.Namespace) -> None:
    from .schema import TaskSchema

    schema = TaskSchema.from_file(args.file)
    if args.json:
        return emit_json(schema.info_dict())
    print(schema.info)


def cmd_run(args: argparse.Namespace) -> None:
    from .schema import TaskFailed, TaskSchema

    schema = TaskSchema.from_file(args.file)
    given, elements = _plan(schema, args)
    if args.dry_run:
        plans = [{"inputs": schema.resolve_inputs(e), "commands": schema.resolve_commands(e)} for e in elements]
        if args.json:
            return emit_json({"objective": schema.objective, "elements": plans})
        for i, p in enumerate(plans):
            if len(plans) > 1:
                print(f"# element {i}: {json.dumps(p['inputs'])}")
            for c in p["commands"]:
                print(c)
        return
    for e in elements:
        schema.resolve_commands(e)  # every element's inputs are checked before anything runs
    if args.slurm:
        return _submit(args, len(elements))
    if args.parallel:
        raise UsageError("--parallel throttles a Slurm array: use it with --slurm")
    if args.element is not None:  # one task of a Slurm array (see slurm.py)
        if not 0 <= args.element < len(elements):
            raise UsageError(f"--element {args.element}: this task has elements 0..{len(elements) - 1}")
        elements = [elements[args.element]]
    known = redact.secret_values({"inputs": given, "elements": [schema.resolve_inputs(e) for e in elements]})
    meta = {"task": {"file": os.path.abspath(args.file), "objective": schema.objective,
                     "inputs": redact.redact_mapping(given, known), "each": args.each}}
    results: List[Dict[str, Any]] = []
    with experiment.Experiment(args.name or f"task {schema.objective}", metadata=meta, root=getattr(args, "root", None)) as exp:
        for e in elements:
            try:
                outputs = exp.run_task(schema, e, timeout=args.timeout)
                results.append({"inputs": redact.redact_mapping(schema.resolve_inputs(e), known), "outputs": outputs,
                                "status": "ok"})
            except TaskFailed as exc:
                results.append({"inputs": redact.redact_mapping(exc.result.inputs, known), "outputs": exc.result.outputs,
                                "status": "failed", "error": redact.redact_text(str(exc), known)})
                if not args.keep_going:
                    break
        failed = [r for r in results if r["status"] != "ok"]
        if failed:  # the run failed with its task (a run that "completed" would rank among the results)
            exp.end("failed", {"type": "TaskFailed", "message": failed[0]["error"] + (
                f" ({len(failed)} of {len(elements)} elements failed)" if len(elements) > 1 else "")})
    if args.json:
        out: Dict[str, Any] = {"run_id": exp.run_id}
        if len(elements) == 1:
            out["outputs"] = results[0]["outputs"]
            out["status"] = results[0]["status"]
        else:
            out["elements"] = results
        emit_json(out)
    else:
        for i, r in enumerate(results):
            prefix = f"[{i}] {json.dumps(r['inputs'])} -> " if len(elements) > 1 else ""
            print(prefix + (json.dumps(r["outputs"]) if r["status"] == "ok" else "failed"))
        note(f"recorded run {exp.run_id[-8:]} ({exp.path})")
    if failed:
        raise Failure(failed[0]["error"] + (f" ({len(failed)} elements failed)" if len(failed) > 1 else ""))


def _submit(args: argparse.Namespace, n_tasks: int) -> None:
    """`task run --slurm`: one job (an array for several elements) running the code frozen now."""
    from . import ids, slurm

    task_args: List[str] = []
    for item in args.input:
        task_args += ["--input", item]
    for name in args.each:
        task_args += ["--each", name]
    task_args += ["--timeout", repr(args.timeout)] + (["--keep-going"] if args.keep_going else [])
    task_args += ["--name", args.name] if args.name else []
    try:
        out = slurm.submit_task_sweep(args.file, task_args, n_tasks, runs_dir=ids.runs_dir(getattr(args, "root", None)),
                                      parallel=args.parallel, sbatch_args=args.sbatch_arg)
    except slurm.SubmitError as exc:
        raise Failure(str(exc)) from None
    if args.json:
        return emit_json({"job_id": out["job_id"], "sweep_id": out["sweep_id"], "tasks": out["tasks"],
                          "commit": out["commit"]})
    print(f"submitted job {out['job_id']}: {out['tasks']} task(s), sweep {out['sweep_id']}")
    note(f"code frozen at {out['commit'][:12]} in {out['code']}; "
         f"follow with `exprag-plus sweep status {out['sweep_id']}`")


def register(commands: Commands) -> None:
    group = commands.group("task", "task schemas (after hpcflow): inspect and run them as recorded runs")
    sp = group.add("info", cmd_info, "a schema's inputs (with defaults), outputs and actions")
    sp.add_argument("file", metavar="FILE", help="a schema file: .yaml/.yml, .json or .toml")
    sp = group.add("run", cmd_run, "run a schema as a recorded run and print its outputs")
    sp.add_argument("file", metavar="FILE", help="a schema file: .yaml/.yml, .json or .toml")
    sp.add_argument("--input", action="append", default=[], metavar="NAME=VALUE",
                    help="an input value (JSON, else text); repeatable")
    sp.add_argument("--each", action="append", default=[], metavar="NAME",
                    help="run once per element of the list input NAME; several --each multiply")
    sp.add_argument("--dry-run", action="store_true", help="print the resolved commands without running them")
    sp.add_argument("--timeout", type=float, default=600, metavar="S", help="seconds for each element (default 600)")
    sp.add_argument("--keep-going", action="store_true", help="run the remaining elements after a failure")
    sp.add_argument("--name", help="the run's name (default: 'task <objective>')")
    sp.add_argument("--slurm", action="store_true",
                    help="submit to Slurm instead: one job (an array, one task per element), code frozen now")
    sp.add_argument("--sbatch-arg", action="append", default=[], metavar="ARG",
                    help="an sbatch option for --slurm, e.g. --sbatch-arg=--time=10; repeatable")
    sp.add_argument("--parallel", type=count, default=0, metavar="K",
                    help="with --slurm: at most K array tasks at once (0: no limit)")
    sp.add_argument("--element", type=int, default=None, help=argparse.SUPPRESS)

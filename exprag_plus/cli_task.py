"""`task info` and `task run`: task schemas from the command line (formatting only; logic in schema.py)."""

from __future__ import annotations

import argparse
import json
import os
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

from .cli import Commands, Failure, UsageError, count, emit_json, note, parse_assignments, seconds
from .lazy import lazy

experiment = lazy(f"{__package__}.experiment")
ids = lazy(f"{__package__}.ids")
records = lazy(f"{__package__}.records")
redact = lazy(f"{__package__}.redact")

if TYPE_CHECKING:
    from .schema import TaskSchema


def _plan(schema: "TaskSchema", args: argparse.Namespace) -> Tuple[Dict[str, Any], List[Dict[str, Any]]]:
    """The given inputs and the input set of every element (sequences from the file, then --each)."""
    given = parse_assignments(args.input, "--input")
    fixed = dict(given)
    sequences = [dict(s) for s in schema.sequences]
    top = max([s.get("nesting_order", 0) for s in sequences] + [-1])
    for i, name in enumerate(args.each):
        if name not in given:
            raise UsageError(f"--each {name}: give its values with --input {name}=[...]")
        values = fixed.pop(name)
        if not isinstance(values, list) or not values:
            raise UsageError(f"--each {name}: its --input value must be a non-empty JSON list, e.g. {name}=[1,2,3]")
        sequences.append({"path": f"inputs.{name}", "values": values, "nesting_order": top + 1 + i})
    from .schema import expand_sequences  # schema parsing is imported only by the commands that use it

    return given, expand_sequences(fixed, sequences)


def cmd_info(args: argparse.Namespace) -> None:
    from .schema import TaskSchema

    schema = TaskSchema.from_file(args.file)
    if args.json:
        return emit_json(schema.info_dict())
    print(schema.info)


def cmd_run(args: argparse.Namespace) -> None:
    from .schema import TaskSchema

    schema = TaskSchema.from_file(args.file)
    given, elements = _plan(schema, args)
    if args.dry_run:  # what it prints hides secret-named inputs, as the records do
        known = redact.secret_values({"inputs": given, "elements": [schema.resolve_inputs(e) for e in elements]})
        plans = [{"inputs": redact.redact_mapping(schema.resolve_inputs(e), known),
                  "commands": [redact.redact_text(c, known) for c in schema.resolve_commands(e)]} for e in elements]
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
    sweep = ids.new_run_id() if len(elements) > 1 else None  # a local sweep: one run per element, as under Slurm
    results: List[Dict[str, Any]] = []
    for i, e in enumerate(elements):
        results.append(_run_element(schema, e, args, known, sweep, i))
        if results[-1]["status"] != "ok" and not args.keep_going:
            break
    failed = [r for r in results if r["status"] != "ok"]
    if args.json:
        if sweep is None:
            emit_json({k: results[0][k] for k in ("run_id", "outputs", "status")})
        else:
            emit_json({"sweep_id": sweep, "elements": results})
    else:
        for i, r in enumerate(results):
            prefix = f"[{i}] {json.dumps(r['inputs'])} -> " if sweep else ""
            print(prefix + (json.dumps(r["outputs"]) if r["status"] == "ok" else "failed")
                  + (f"  (run {r['run_id'][-8:]})" if sweep else ""))
        numbers = [k for r in results for k, v in r["outputs"].items() if records.is_number(v)]
        if sweep:
            note(f"recorded {len(results)} runs of sweep {sweep}"
                 + (f"; rank them: exprag-plus best {numbers[0]} [--min] --where sweep={sweep}" if numbers else ""))
        else:
            note(f"recorded run {results[0]['run_id'][-8:]}")
    if failed:
        raise Failure(failed[0]["error"] + (f" ({len(failed)} of {len(elements)} elements failed)" if sweep else ""))


def _run_element(schema: "TaskSchema", inputs: Dict[str, Any], args: argparse.Namespace, known: Any,
                 sweep: Optional[str], index: int) -> Dict[str, Any]:
    """One element as a run of its own: its inputs in metadata, its number outputs tracked (so `best`,
    `progress` and `report` rank a sweep's elements), failed when its commands fail."""
    from .schema import TaskFailed

    shown = redact.redact_mapping(schema.resolve_inputs(inputs), known)
    task: Dict[str, Any] = {"file": os.path.abspath(args.file), "objective": schema.objective, "inputs": shown,
                            "each": args.each}
    if sweep:
        task["element"] = index
    with experiment.Experiment(args.name or f"task {schema.objective}", metadata={"task": task},
                               root=getattr(args, "root", None), _start_fields={"sweep": sweep} if sweep else None) as exp:
        try:
            outputs = exp.run_task(schema, inputs, timeout=args.timeout)
        except TaskFailed as exc:
            error = redact.redact_text(str(exc), known)
            exp.end("failed", {"type": "TaskFailed", "message": error})  # it would rank among results otherwise
            return {"run_id": exp.run_id, "inputs": shown, "outputs": redact.redact_mapping(exc.result.outputs, known),
                    "status": "failed", "error": error}
        numbers = {k: v for k, v in outputs.items() if records.is_number(v)}
        if numbers:
            exp.track(numbers)
    return {"run_id": exp.run_id, "inputs": shown, "outputs": redact.redact_mapping(outputs, known), "status": "ok"}


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
    sp.add_argument("--timeout", type=seconds, default=600, metavar="S", help="seconds for each element (default 600)")
    sp.add_argument("--keep-going", action="store_true", help="run the remaining elements after a failure")
    sp.add_argument("--name", help="the run's name (default: 'task <objective>')")
    sp.add_argument("--slurm", action="store_true",
                    help="submit to Slurm instead: one job (an array, one task per element), code frozen now")
    sp.add_argument("--sbatch-arg", action="append", default=[], metavar="ARG",
                    help="an sbatch option for --slurm, e.g. --sbatch-arg=--time=10; repeatable")
    sp.add_argument("--parallel", type=count, default=0, metavar="K",
                    help="with --slurm: at most K array tasks at once (0: no limit)")
    sp.add_argument("--element", type=int, default=None, help=argparse.SUPPRESS)

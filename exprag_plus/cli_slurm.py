"""`sweep status`: a Slurm sweep's tasks counted by state (formatting only; logic in slurm.py)."""

from __future__ import annotations

import argparse

from .cli import Commands, emit_json, table
from . import ids, slurm


def cmd_status(args: argparse.Namespace) -> None:
    status = slurm.sweep_status(ids.runs_dir(getattr(args, "root", None)), args.sweep_id.strip())
    if args.json:
        return emit_json(status)
    print(f"sweep {status['sweep_id']}: job {status['job_id']}, {status['tasks']} task(s), "
          f"commit {(status['commit'] or '-')[:12]}")
    print(", ".join(f"{status[k]} {k}" for k in ("pending", "running", "done", "failed", "unknown")
                    if status[k] or k != "unknown"))
    rows = [[str(t["task"]), t["state"], t["slurm_state"] or "-", ids.short_id(t["run_id"]) if t["run_id"] else "-"]
            for t in status["per_task"]]
    print(table(rows, ["task", "state", "slurm", "run"]))


def register(commands: Commands) -> None:
    group = commands.group("sweep", "sweeps submitted with `task run --slurm`: their tasks' states")
    sp = group.add("status", cmd_status, "how many tasks are pending, running, done, failed (squeue, scontrol, runs)")
    sp.add_argument("sweep_id", metavar="SWEEP_ID", help="the id `task run --slurm` printed")

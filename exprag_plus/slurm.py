"""Slurm: what a run records about its job, sweeps submitted as job arrays, and their status.

A sweep freezes the code once, at submission: the working tree is snapshotted (a commit on the sweep's own
ref) and checked out detached into `<runs>/sweeps/<sweep_id>/code`, a folder every node sees when the runs
folder is on the shared filesystem. Every array task runs `exprag-plus task run` from that checkout, so
edits made while the job waits never reach it, and the user's working tree, index and HEAD are untouched.
Only the allowlisted `SLURM_*` variables below are ever read into a record.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from typing import Any, Dict, List, Mapping, Optional, Sequence

from . import git, ids, records

ENV_SWEEP = "EXPRAG_PLUS_SWEEP"
SWEEPS_DIRNAME = "sweeps"
SWEEP_FILE = "sweep.json"

# run_start.scheduler field -> the one variable it is read from; nothing else leaves the environment
_ALLOWLIST = (
    ("job_id", "SLURM_JOB_ID"),
    ("array_job_id", "SLURM_ARRAY_JOB_ID"),
    ("array_task_id", "SLURM_ARRAY_TASK_ID"),
    ("partition", "SLURM_JOB_PARTITION"),
    ("nodes", "SLURM_JOB_NODELIST"),
    ("restart_count", "SLURM_RESTART_COUNT"),
)
_INTS = ("job_id", "array_job_id", "array_task_id", "restart_count")


class SlurmMissing(ValueError):
    """`sbatch` (or another Slurm client) is not on PATH: the request cannot be made here (exit 2)."""


class SubmitError(RuntimeError):
    """sbatch refused or failed the submission (exit 1); nothing of it was kept."""


def scheduler_info(environ: Mapping[str, str]) -> Optional[Dict[str, Any]]:
    """run_start.scheduler under Slurm (None elsewhere), from the allowlisted variables only."""
    if not environ.get("SLURM_JOB_ID"):
        return None
    info: Dict[str, Any] = {"kind": "slurm"}
    for key, var in _ALLOWLIST:
        raw = environ.get(var)
        value: Any = raw if raw not in ("", None) else None
        if value is not None and key in _INTS:
            value = int(value) if value.isdigit() else None
        info[key] = value
    info["restart_count"] = info["restart_count"] or 0
    return info


def run_start_fields(environ: Mapping[str, str]) -> Dict[str, Any]:
    """The run_start fields this module adds: `scheduler` under Slurm, `sweep` inside a sweep's task."""
    out: Dict[str, Any] = {}
    info = scheduler_info(environ)
    if info is not None:
        out["scheduler"] = info
    sweep = environ.get(ENV_SWEEP, "")
    if ids.is_run_id(sweep):
        out["sweep"] = sweep
    return out


def resume_fields(environ: Mapping[str, str]) -> Dict[str, Any]:
    """What a `resume` record adds under Slurm: which attempt this is, and where it runs now."""
    info = scheduler_info(environ)
    return {} if info is None else {"restart_count": info["restart_count"], "scheduler": info}


def requeued_run(runs_dir: str, name: str, environ: Mapping[str, str]) -> Optional[str]:
    """The run an earlier attempt of this requeued job started (same job, array task and run name), if any.

    Only asked when SLURM_RESTART_COUNT > 0, so a first attempt never reads the runs folder.
    """
    info = scheduler_info(environ)
    if not info or not info["restart_count"] or info["job_id"] is None:
        return None
    from .store import Run

    same = ("job_id", "array_job_id", "array_task_id")
    for path in reversed(ids.run_files(runs_dir)):
        run = Run.read(path)
        sched = run.start.get("scheduler") or {}
        if sched.get("kind") == "slurm" and all(sched.get(k) == info[k] for k in same) and run.name == name:
            return run.run_id
    return None


# --- submission --------------------------------------------------------------------------------------


def sweep_dir(runs_dir: str, sweep_id: str) -> str:
    if not ids.is_run_id(sweep_id):
        raise ValueError(f"bad sweep id {sweep_id!r}: give the full id `task run --slurm` printed")
    return os.path.join(runs_dir, SWEEPS_DIRNAME, sweep_id)


def _sbatch() -> str:
    import shutil

    found = shutil.which("sbatch")
    if not found:
        raise SlurmMissing("sbatch is not on PATH: run this on a Slurm login node (or install slurm-client)")
    return found


def _job_script(sweep_id: str, commit: str, code_cwd: str, runs_dir: str, command: Sequence[str],
                element: bool = True) -> str:
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    q = shlex.quote
    return "\n".join([
        "#!/bin/bash",
        f"# exprag-plus sweep {sweep_id}: every task runs commit {commit} from the checkout below",
        f"cd {q(code_cwd)} || exit 1",
        f"export {ids.ENV_DIR}={q(runs_dir)} {ENV_SWEEP}={q(sweep_id)}",
        f"export PYTHONPATH={q(package_parent)}${{PYTHONPATH:+:$PYTHONPATH}}",
        "exec " + " ".join(q(c) for c in command) + (' --element "${SLURM_ARRAY_TASK_ID:-0}"' if element else ""),
        "",
    ])


def submit_task_sweep(file: str, task_args: Sequence[str], n_tasks: int, *, runs_dir: str,
                      cwd: Optional[str] = None, parallel: int = 0, sbatch_args: Sequence[str] = (),
                      name: Optional[str] = None) -> Dict[str, Any]:
    """Submit `exprag-plus task run FILE TASK_ARGS` as one job: an array of `n_tasks` (`%parallel` at once).

    Returns {job_id, sweep_id, tasks, commit, code}. Missing sbatch raises SlurmMissing, a refused
    submission SubmitError; either way the sweep's folder, checkout and snapshot ref are gone again.
    """
    cwd = os.path.abspath(cwd or os.getcwd())
    top = git.toplevel(cwd)
    if not top:
        raise ValueError(f"{cwd} is not in a git repository: a Slurm sweep freezes the code as a commit")
    path = os.path.realpath(os.path.join(cwd, file))
    rel_file = os.path.relpath(path, os.path.realpath(top))
    if rel_file.startswith(os.pardir):
        raise ValueError(f"{file} is outside the repository {top}: put the schema in the repository so it is "
                         "frozen with the code")

    def command(code: str) -> List[str]:
        code_file = os.path.join(code, rel_file)
        if not os.path.isfile(code_file):
            raise ValueError(f"{file} is not in the frozen code (ignored by git?): commit it or un-ignore it")
        return [sys.executable, "-m", "exprag_plus", "task", "run", code_file, *task_args]

    return _submit(command, n_tasks, runs_dir=runs_dir, cwd=cwd, parallel=parallel, sbatch_args=sbatch_args,
                   name=name, element=True, extra={"file": rel_file})


def submit_command(argv: Sequence[str], run_args: Sequence[str], *, runs_dir: str, cwd: Optional[str] = None,
                   sbatch_args: Sequence[str] = (), name: Optional[str] = None) -> Dict[str, Any]:
    """Submit `exprag-plus run RUN_ARGS -- ARGV` as one job running the code frozen now (see submit_task_sweep)."""
    return _submit(lambda code: [sys.executable, "-m", "exprag_plus", "run", *run_args, "--", *argv], 1,
                   runs_dir=runs_dir, cwd=os.path.abspath(cwd or os.getcwd()), parallel=0, sbatch_args=sbatch_args,
                   name=name, element=False, extra={"command": list(argv)})


def _submit(command: Any, n_tasks: int, *, runs_dir: str, cwd: str, parallel: int, sbatch_args: Sequence[str],
            name: Optional[str], element: bool, extra: Dict[str, Any]) -> Dict[str, Any]:
    sbatch = _sbatch()
    top = git.toplevel(cwd)
    if not top:
        raise ValueError(f"{cwd} is not in a git repository: a Slurm submission freezes the code as a commit")
    sweep_id = ids.new_run_id()
    ids.ensure_runs_dir(runs_dir)
    state, error = git.capture_state(cwd, sweep_id, runs_dir)
    if not state or not state.get("commit"):
        raise ValueError(f"cannot freeze the code for the sweep: {error or 'no commit'}")
    commit = state["commit"]
    folder = sweep_dir(runs_dir, sweep_id)
    code = os.path.join(folder, "code")
    made_ref = state.get("snapshot_branch")
    try:
        os.makedirs(folder)
        git.add_worktree(top, commit, into=code)
        code_cwd = os.path.join(code, os.path.relpath(os.path.realpath(cwd), os.path.realpath(top)))
        argv_in_job = command(code)
        script = os.path.join(folder, "job.sh")
        # owner-only: the script repeats the task's --input values, which may hold a secret
        fd = os.open(script, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o700)
        with open(fd, "w", encoding="utf-8") as f:
            f.write(_job_script(sweep_id, commit, code_cwd, runs_dir, argv_in_job, element))
        argv = [sbatch, "--parsable", f"--job-name={name or 'exprag-' + ids.short_id(sweep_id)}",
                "--output=" + os.path.join(folder, "slurm-%A_%a.out" if n_tasks > 1 else "slurm-%j.out")]
        if n_tasks > 1:
            argv.append(f"--array=0-{n_tasks - 1}" + (f"%{parallel}" if parallel else ""))
        argv += [*sbatch_args, script]
        try:
            p = subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=code_cwd)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise SubmitError(f"sbatch did not run: {exc}") from None
        job_id = p.stdout.strip().split(";")[0]
        if p.returncode != 0 or not job_id.isdigit():
            why = " ".join((p.stderr or p.stdout).split()) or f"exit code {p.returncode}"
            raise SubmitError(f"sbatch failed: {why}")
    except BaseException:
        _discard(top, folder, code, made_ref)
        raise
    sweep = {"sweep_id": sweep_id, "job_id": job_id, "tasks": n_tasks, "parallel": parallel or None,
             "commit": commit, "snapshot_branch": made_ref, "code": code, **extra,
             "submitted": records.Clock().now(), "sbatch_args": list(sbatch_args)}
    with open(os.path.join(folder, SWEEP_FILE), "w", encoding="utf-8") as f:
        json.dump(sweep, f, indent=2)
    return {"job_id": job_id, "sweep_id": sweep_id, "tasks": n_tasks, "commit": commit, "code": code}


def _discard(top: str, folder: str, code: str, ref: Optional[str]) -> None:
    """Undo a submission that did not happen: its checkout, its folder, the snapshot ref it created."""
    if os.path.isdir(code):
        try:
            git.remove_worktree(top, code)
        except git.GitError:
            pass
    import shutil

    shutil.rmtree(folder, ignore_errors=True)
    if ref:
        try:
            git.delete_ref(top, ref)
        except git.GitError:
            pass


# --- status ------------------------------------------------------------------------------------------

_LIVE = {"PENDING": "pending", "REQUEUED": "pending", "REQUEUE_HOLD": "pending", "REQUEUE_FED": "pending",
         "RESV_DEL_HOLD": "pending", "CONFIGURING": "running", "RUNNING": "running", "COMPLETING": "running",
         "RESIZING": "running", "SUSPENDED": "running", "STAGE_OUT": "running", "SIGNALING": "running"}
_RUN_STATE = {"completed": "done", "running": "running"}


def _squeue(job_id: str) -> Dict[int, str]:
    """array task (0 for a plain job) -> live Slurm state, for the tasks still in the queue."""
    try:
        p = subprocess.run(["squeue", "-h", "-r", "-j", job_id, "-o", "%K %T"], capture_output=True, text=True,
                           timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return {}
    out: Dict[int, str] = {}
    for line in p.stdout.splitlines() if p.returncode == 0 else []:
        task, _, state = line.strip().partition(" ")
        out[int(task) if task.isdigit() else 0] = state.strip()
    return out


def _scontrol(job_id: str) -> Dict[int, str]:
    """array task -> final Slurm state, for the tasks the controller still remembers (MinJobAge)."""
    try:
        p = subprocess.run(["scontrol", "-o", "show", "job", job_id], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return {}
    out: Dict[int, str] = {}
    for line in p.stdout.splitlines() if p.returncode == 0 else []:
        fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
        task = fields.get("ArrayTaskId", "0")
        if task.isdigit():
            out[int(task)] = fields.get("JobState", "")
    return out


def load_sweep(runs_dir: str, sweep_id: str) -> Dict[str, Any]:
    path = os.path.join(sweep_dir(runs_dir, sweep_id), SWEEP_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise ids.RunNotFound(f"no sweep {sweep_id} in {runs_dir} (see `exprag-plus runs --where sweep=ID`)") from None


def sweep_status(runs_dir: str, sweep_id: str) -> Dict[str, Any]:
    """How many of a sweep's tasks are pending, running, done and failed, and each task's state.

    A task still in the queue has squeue's state; else its run's (failed when a task record failed); else
    what scontrol remembers.
    """
    from .store import Run

    sweep = load_sweep(runs_dir, sweep_id)
    runs: Dict[int, Run] = {}
    for path in ids.run_files(runs_dir):
        run = Run.read(path)
        if run.start.get("sweep") != sweep_id:
            continue
        sched = run.start.get("scheduler") or {}
        task = sched.get("array_task_id")
        runs[task if isinstance(task, int) else 0] = run
    queued = _squeue(str(sweep["job_id"]))
    remembered = _scontrol(str(sweep["job_id"])) if len(queued) < sweep["tasks"] else {}
    counts = {"pending": 0, "running": 0, "done": 0, "failed": 0, "unknown": 0}
    tasks: List[Dict[str, Any]] = []
    for i in range(int(sweep["tasks"])):
        run = runs.get(i)
        slurm_state = queued.get(i) or remembered.get(i)
        if i in queued and queued[i] in _LIVE:
            state = _LIVE[queued[i]]
        elif run is not None:
            state = _RUN_STATE.get(run.status, "failed")
            if state == "done" and any(r.get("type") == "task" and r.get("status") == "failed" for r in run.records):
                state = "failed"  # `task run` ends its run completed and exits 1 when a command failed
        elif slurm_state in _LIVE:
            state = _LIVE[slurm_state]
        elif slurm_state:
            state = "failed"  # the job ended without recording a run
        else:
            state = "unknown"
        counts[state] += 1
        tasks.append({"task": i, "state": state, "slurm_state": slurm_state or None,
                      "run_id": run.run_id if run is not None else None,
                      "run_status": run.status if run is not None else None})
    return {"sweep_id": sweep_id, "job_id": sweep["job_id"], "commit": sweep.get("commit"),
            "tasks": int(sweep["tasks"]), **counts, "per_task": tasks}


"""Sweeps as Slurm job arrays, on a real single-node cluster (see conftest.py)."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any, Dict, List

import pytest

from conftest import cli, git, read_lines  # tests/conftest.py (the core helpers)

SCHEMA = """\
objective: times
inputs:
  - parameter: x
outputs:
  - y
actions:
  - commands:
      - command: echo $((<<parameter:x>> * 10))
        stdout: <<int(parameter:y)>>
"""


@pytest.fixture
def project(repo: Path) -> Path:
    (repo / "task.yaml").write_text(SCHEMA)
    git(repo, "add", "task.yaml")
    git(repo, "commit", "-q", "-m", "task")
    return repo


def runs_of(repo: Path) -> List[List[Dict[str, Any]]]:
    """Each run's records; a run file just created, before its first line is written, is not one yet."""
    return [recs for recs in (read_lines(p) for p in sorted((repo / ".runs").glob("*.jsonl"))) if recs]


def submit(repo: Path, *extra: str) -> subprocess.CompletedProcess:
    return cli("task", "run", "task.yaml", "--slurm", "--json", *extra, cwd=repo)


def test_a_four_task_array_gives_four_runs_with_outputs_and_the_sweep_id(slurm_env, project: Path) -> None:
    (project / "notes.txt").write_text("uncommitted, still frozen with the code\n")
    head, status = git(project, "rev-parse", "HEAD"), git(project, "status", "--porcelain")
    p = submit(project, "--each", "x", "--input", "x=[1,2,3,4]", "--parallel", "2")
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["tasks"] == 4 and out["job_id"].isdigit()
    sweep = out["sweep_id"]
    assert slurm_env.wait_job(out["job_id"], timeout=120) in ("COMPLETED", "")
    runs = runs_of(project)
    assert len(runs) == 4
    starts = sorted((r[0] for r in runs), key=lambda s: s["scheduler"]["array_task_id"])
    assert [s["sweep"] for s in starts] == [sweep] * 4
    assert [s["scheduler"]["array_task_id"] for s in starts] == [0, 1, 2, 3]
    assert {s["scheduler"]["array_job_id"] for s in starts} == {int(out["job_id"])}
    assert all(s["scheduler"]["partition"] == "debug" and s["scheduler"]["restart_count"] == 0 for s in starts)
    assert {s["git"]["commit"] for s in starts} == {out["commit"]} and not any(s["git"]["dirty"] for s in starts)
    by_task = {r[0]["scheduler"]["array_task_id"]: r for r in runs}
    outputs = [next(x for x in by_task[i] if x["type"] == "task")["outputs"] for i in range(4)]
    assert outputs == [{"y": 10}, {"y": 20}, {"y": 30}, {"y": 40}]
    assert all(r[-1]["type"] == "run_end" and r[-1]["status"] == "completed" for r in runs)
    # the snapshot held the uncommitted file; the user's checkout was not touched
    assert git(project, "show", f"{out['commit']}:notes.txt").startswith("uncommitted")
    assert (project / ".runs" / "sweeps" / sweep / "job.sh").stat().st_mode & 0o077 == 0  # may hold inputs
    assert git(project, "rev-parse", "HEAD") == head and git(project, "status", "--porcelain") == status

    p = cli("runs", "--where", f"sweep={sweep}", "--json", "--limit", "0", cwd=project)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["matched"] == 4
    p = cli("sweep", "status", sweep, "--json", cwd=project)
    assert p.returncode == 0, p.stderr
    st = json.loads(p.stdout)
    assert (st["tasks"], st["done"], st["pending"], st["running"], st["failed"]) == (4, 4, 0, 0, 0)
    p = cli("sweep", "status", sweep, cwd=project)
    assert p.returncode == 0 and "4 done" in p.stdout


def test_an_edit_made_after_submission_never_reaches_a_queued_task(slurm_env, project: Path) -> None:
    p = submit(project, "--each", "x", "--input", "x=[1,2]", "--sbatch-arg=--hold")
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    st = json.loads(cli("sweep", "status", out["sweep_id"], "--json", cwd=project).stdout)
    assert (st["pending"], st["done"]) == (2, 0)
    # edited and even committed while the job waits in the queue
    (project / "task.yaml").write_text(SCHEMA.replace("* 10", "* 1000"))
    git(project, "commit", "-q", "-am", "later edit")
    assert slurm_env.run("scontrol", "release", out["job_id"]).returncode == 0
    slurm_env.wait_job(out["job_id"], timeout=120)
    runs = runs_of(project)
    outputs = sorted(next(x for x in r if x["type"] == "task")["outputs"]["y"] for r in runs)
    assert outputs == [10, 20]
    assert {r[0]["git"]["commit"] for r in runs} == {out["commit"]} != {git(project, "rev-parse", "HEAD").strip()}
    st = json.loads(cli("sweep", "status", out["sweep_id"], "--json", cwd=project).stdout)
    assert (st["pending"], st["done"]) == (0, 2)


def test_a_failing_sbatch_exits_1_and_records_nothing(slurm_env, project: Path) -> None:
    refs = git(project, "for-each-ref")
    (project / "dirty.txt").write_text("would need a snapshot ref\n")
    p = submit(project, "--each", "x", "--input", "x=[1,2]", "--sbatch-arg=--partition=nosuchpartition")
    assert p.returncode == 1 and json.loads(p.stdout)["error"]["kind"] == "failure"  # --json: the error on stdout too
    assert len(p.stderr.strip().splitlines()) == 1 and "sbatch failed" in p.stderr and "partition" in p.stderr.lower()
    assert not list((project / ".runs").glob("*.jsonl"))
    assert not list((project / ".runs" / "sweeps").iterdir())
    assert git(project, "for-each-ref") == refs  # the sweep's snapshot ref went with it
    assert git(project, "worktree", "list", "--porcelain").count("worktree ") == 1


def test_sweep_status_counts_running_done_and_failed(slurm_env, project: Path, tmp_path: Path) -> None:
    flag = tmp_path / "go"
    (project / "task.yaml").write_text(SCHEMA.replace(
        "command: echo $((<<parameter:x>> * 10))",
        f"command: if [ <<parameter:x>> -eq 0 ]; then exit 3; fi; while [ <<parameter:x>> -eq 2 ] && "
        f"[ ! -e {flag} ]; do sleep 0.2; done; echo $((<<parameter:x>> * 10))"))
    p = submit(project, "--each", "x", "--input", "x=[1,0,2]")
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)

    def status() -> Dict[str, Any]:
        q = cli("sweep", "status", out["sweep_id"], "--json", cwd=project)
        assert q.returncode == 0, q.stderr
        return json.loads(q.stdout)

    deadline = time.monotonic() + 90
    while True:
        st = status()
        if (st["done"], st["failed"], st["running"]) == (1, 1, 1) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert (st["done"], st["failed"], st["running"], st["pending"]) == (1, 1, 1, 0), st
    assert [t["state"] for t in st["per_task"]] == ["done", "failed", "running"]
    flag.write_text("")
    slurm_env.wait_job(out["job_id"], timeout=60)
    st = status()
    assert (st["done"], st["failed"], st["running"], st["pending"]) == (2, 1, 0, 0), st


def test_a_schema_git_does_not_hold_is_refused_and_nothing_is_kept(slurm_env, project: Path) -> None:
    (project / ".gitignore").write_text("local.yaml\n")
    (project / "local.yaml").write_text(SCHEMA)
    p = cli("task", "run", "local.yaml", "--slurm", "--each", "x", "--input", "x=[1]", cwd=project)
    assert p.returncode == 2 and "not in the frozen code" in p.stderr and len(p.stderr.strip().splitlines()) == 1
    assert not list((project / ".runs" / "sweeps").iterdir())
    assert git(project, "worktree", "list", "--porcelain").count("worktree ") == 1
    assert "refs/heads/run/" not in git(project, "for-each-ref")


def test_scontrol_requeue_of_a_task_continues_its_run(slurm_env, project: Path) -> None:
    # the first attempt of each task waits (SLURM_RESTART_COUNT is unset then); a requeued one goes on
    (project / "task.yaml").write_text(SCHEMA.replace(
        "command: echo $((<<parameter:x>> * 10))",
        'command: if [ -z "$SLURM_RESTART_COUNT" ] || [ "$SLURM_RESTART_COUNT" = 0 ]; then sleep 300; fi; '
        "echo $((<<parameter:x>> * 10))"))
    git(project, "commit", "-q", "-am", "waits on its first attempt")
    p = submit(project, "--each", "x", "--input", "x=[1,2]")
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    task = f"{out['job_id']}_1"

    def started() -> List[List[Dict[str, Any]]]:
        return [r for r in runs_of(project) if r[0]["scheduler"]["array_task_id"] == 1]

    deadline = time.monotonic() + 60
    while not started() and time.monotonic() < deadline:
        time.sleep(0.2)
    (first,) = started()
    time.sleep(0.5)  # let the task's command start
    slurm_env.requeue(task)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        recs = started()[0]
        if recs[-1]["type"] == "run_end":
            break
        time.sleep(0.3)
    assert len(started()) == 1, "the requeued task started a second run"
    recs = started()[0]
    types = [r["type"] for r in recs]
    assert types[0] == "run_start" and "resume" in types and types[-1] == "run_end", types
    resume = recs[types.index("resume")]
    assert resume["restart_count"] == 1 and resume["scheduler"]["array_task_id"] == 1
    assert [r["seq"] for r in recs] == list(range(len(recs)))
    assert next(r for r in recs if r["type"] == "task")["outputs"] == {"y": 20}
    assert recs[-1]["status"] == "completed"
    # task 0 is still in its first attempt: end it the same way and the sweep finishes
    slurm_env.requeue(f"{out['job_id']}_0")
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        st = json.loads(cli("sweep", "status", out["sweep_id"], "--json", cwd=project).stdout)
        if st["done"] == 2:
            break
        time.sleep(0.5)
    detail = [st["per_task"], [[(r["type"], r.get("status"), r.get("error")) for r in run] for run in runs_of(project)]]
    assert (st["done"], st["failed"], st["pending"], st["running"]) == (2, 0, 0, 0), detail
    assert len(runs_of(project)) == 2


def test_run_slurm_wraps_a_command_on_the_code_frozen_at_submission(slurm_env, project: Path) -> None:
    (project / "train.sh").write_text("echo 'val_loss: 0.5'\n")
    p = cli("run", "--slurm", "--json", "--name", "frozen", "--meta", "lr=0.1", "--sbatch-arg=--hold", "--",
            "bash", "train.sh", cwd=project)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    (project / "train.sh").write_text("echo 'val_loss: 9.9'\n")  # an edit while the job waits
    assert slurm_env.run("scontrol", "release", out["job_id"]).returncode == 0
    assert slurm_env.wait_job(out["job_id"], timeout=120) in ("COMPLETED", "")
    (run,) = runs_of(project)
    start, end = run[0], run[-1]
    assert start["name"] == "frozen" and start["metadata"] == {"lr": 0.1} and start["sweep"] == out["sweep_id"]
    assert start["command"]["argv"] == ["bash", "train.sh"] and start["scheduler"]["job_id"] == int(out["job_id"])
    assert end["status"] == "completed" and end["summary"]["val_loss"]["last"] == 0.5
    assert cli("log", start["run_id"], cwd=project).stdout == "val_loss: 0.5\n"

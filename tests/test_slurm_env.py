"""Slurm without a cluster: what a run records from the environment, and sbatch missing."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from conftest import cli, git, read_lines, run_python

SLURM_ENV = {
    "SLURM_JOB_ID": "4242", "SLURM_ARRAY_JOB_ID": "4240", "SLURM_ARRAY_TASK_ID": "2",
    "SLURM_JOB_PARTITION": "gpu", "SLURM_JOB_NODELIST": "node[01-02]", "SLURM_RESTART_COUNT": "0",
    "SLURM_JOB_ACCOUNT": "secret-project", "SLURM_SUBMIT_DIR": "/home/someone", "SLURM_MYTOKEN": "hunter2",
    "UNRELATED_SECRET": "hunter3",
}


def test_run_start_records_the_allowlisted_slurm_variables_and_nothing_else(repo: Path, runs_dir: Path) -> None:
    run_python(f"""
        from exprag_plus import Experiment
        Experiment('under slurm', root={str(runs_dir)!r}).close()
    """, cwd=repo, env=SLURM_ENV)
    (path,) = runs_dir.glob("*.jsonl")
    start = read_lines(path)[0]
    assert start["scheduler"] == {"kind": "slurm", "job_id": 4242, "array_job_id": 4240, "array_task_id": 2,
                                  "partition": "gpu", "nodes": "node[01-02]", "restart_count": 0}
    text = path.read_text()
    for leaked in ("secret-project", "/home/someone", "hunter2", "hunter3", "SLURM_"):
        assert leaked not in text
    assert "sweep" not in start


def test_no_scheduler_field_outside_slurm_and_a_sweep_id_only_when_well_formed(repo: Path, runs_dir: Path) -> None:
    env = {k: "" for k in SLURM_ENV}
    env["EXPRAG_PLUS_SWEEP"] = "not-an-id; rm -rf /"
    run_python(f"""
        from exprag_plus import Experiment
        Experiment('plain', root={str(runs_dir)!r}).close()
    """, cwd=repo, env=env)
    start = read_lines(next(runs_dir.glob("*.jsonl")))[0]
    assert "scheduler" not in start and "sweep" not in start


def test_task_run_slurm_without_sbatch_exits_2_and_leaves_nothing(repo: Path, tmp_path: Path) -> None:
    (repo / "task.yaml").write_text("objective: t\ninputs: [x]\noutputs: []\nactions:\n  - commands:\n"
                                    "      - command: echo <<parameter:x>>\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    os.symlink(shutil.which("git"), bin_dir / "git")
    refs = git(repo, "for-each-ref")
    p = cli("task", "run", "task.yaml", "--slurm", "--each", "x", "--input", "x=[1,2]", cwd=repo,
            env={"PATH": str(bin_dir)})
    assert p.returncode == 2 and p.stdout == ""
    assert len(p.stderr.strip().splitlines()) == 1 and "sbatch is not on PATH" in p.stderr
    assert not (repo / ".runs").exists() or not list((repo / ".runs").rglob("*.jsonl"))
    assert git(repo, "for-each-ref") == refs


def test_parallel_without_slurm_is_a_usage_error(repo: Path) -> None:
    (repo / "task.yaml").write_text("objective: t\ninputs: [x]\noutputs: []\nactions:\n  - commands:\n"
                                    "      - command: echo <<parameter:x>>\n")
    p = cli("task", "run", "task.yaml", "--parallel", "2", "--input", "x=1", cwd=repo)
    assert p.returncode == 2 and "--parallel" in p.stderr and not (repo / ".runs").exists()


def test_sweep_status_of_an_unknown_sweep_is_one_line(repo: Path) -> None:
    p = cli("sweep", "status", "0190a000-0000-7000-8000-000000000000", cwd=repo)
    assert p.returncode == 2 and "no sweep" in p.stderr and len(p.stderr.strip().splitlines()) == 1
    p = cli("sweep", "status", "../../etc", "--json", cwd=repo)
    assert p.returncode == 2 and "bad sweep id" in p.stderr


def test_where_sweep_finds_a_sweeps_runs_and_metadata_named_sweep_still_wins(repo: Path, runs_dir: Path) -> None:
    sweep = "0190a000-0000-7000-8000-0000000000aa"
    code = f"""
        import sys
        from exprag_plus import Experiment
        Experiment(sys.argv[0] if len(sys.argv) > 1 else 'run', metadata=%s, root={str(runs_dir)!r}).close()
    """
    run_python(code % "{}", cwd=repo, env={"EXPRAG_PLUS_SWEEP": sweep})
    run_python(code % "{}", cwd=repo, env={"EXPRAG_PLUS_SWEEP": sweep})
    run_python(code % "{'sweep': 'lr'}", cwd=repo)
    run_python(code % "{}", cwd=repo)
    rows = lambda *w: json.loads(cli("runs", *w, "--json", "--root", str(runs_dir), cwd=repo).stdout)["matched"]
    assert rows("--where", f"sweep={sweep}") == 2
    assert rows("--where", "sweep=lr") == 1


def test_a_requeued_job_continues_its_run(repo: Path, runs_dir: Path) -> None:
    job = {"SLURM_JOB_ID": "77", "SLURM_ARRAY_JOB_ID": "70", "SLURM_ARRAY_TASK_ID": "3", "SLURM_JOB_PARTITION": "debug"}
    script = f"""
        import os, signal
        from exprag_plus import Experiment
        exp = Experiment('train', root={str(runs_dir)!r})
        attempt = int(os.environ.get('SLURM_RESTART_COUNT') or 0)
        exp.track({{'step': attempt, 'loss': 1.0 / (attempt + 1)}})
        if attempt == 0:
            os.kill(os.getpid(), signal.SIGKILL)  # preempted
        exp.close()
    """
    p = run_python(script, cwd=repo, env=job, check=False)
    assert p.returncode == -9
    (path,) = runs_dir.glob("*.jsonl")
    run_python(script, cwd=repo, env=dict(job, SLURM_RESTART_COUNT="1"))
    assert list(runs_dir.glob("*.jsonl")) == [path]  # the same run, not a second one
    recs = read_lines(path)
    assert [r["type"] for r in recs] == ["run_start", "track", "resume", "track", "run_end"]
    assert [r["seq"] for r in recs] == [0, 1, 2, 3, 4] and len({r["run_id"] for r in recs}) == 1
    resume = recs[2]
    assert resume["restart_count"] == 1 and resume["scheduler"]["job_id"] == 77
    assert resume["process"]["pid"] != recs[0]["process"]["pid"] and resume["host"]["hostname"]
    assert recs[-1]["status"] == "completed" and recs[-1]["summary"]["loss"]["count"] == 2
    # another array task, or another run name in the same job, starts its own run
    run_python(script, cwd=repo, env=dict(job, SLURM_ARRAY_TASK_ID="4", SLURM_JOB_ID="78", SLURM_RESTART_COUNT="1"))
    run_python(script.replace("'train'", "'eval'"), cwd=repo, env=dict(job, SLURM_RESTART_COUNT="1"))
    assert len(list(runs_dir.glob("*.jsonl"))) == 3

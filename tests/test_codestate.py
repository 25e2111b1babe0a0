"""diff, restore, replay and gc through the real CLI, on real repositories: the user's state never moves."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Dict

import pytest

from conftest import ROOT, cli, git, read_lines

TRAIN = """\
import sys
from exprag_plus import Experiment
lr = float(sys.argv[1])
with Experiment("train", metadata={"lr": lr}) as exp:
    for step in range(3):
        exp.track({"step": step, "loss": 1.0 / (step + 1) * lr * SCALE})
"""


def user_state(repo: Path) -> Dict[str, object]:
    g = repo / ".git"
    return {"index": (g / "index").read_bytes(), "head": git(repo, "rev-parse", "HEAD"),
            "branch": git(repo, "symbolic-ref", "-q", "HEAD"), "stash": git(repo, "stash", "list"),
            "status": git(repo, "--no-optional-locks", "status", "--porcelain", "-uall"),
            "files": {p.name: p.read_bytes() for p in repo.rglob("*") if p.is_file() and ".git" not in p.parts
                      and ".runs" not in p.parts}}


def train(repo: Path, lr: float, cwd: Path = None) -> str:
    env = {"PYTHONPATH": str(ROOT)}
    p = subprocess.run(["python", "src/train.py" if cwd is None else "train.py", str(lr)], cwd=cwd or repo,
                       env={**os.environ, **env}, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    return read_lines(sorted((repo / ".runs").glob("*.jsonl"))[-1])[0]["run_id"]


@pytest.fixture
def project(repo: Path) -> Path:
    (repo / "src").mkdir()
    (repo / "src" / "train.py").write_text(TRAIN.replace("SCALE", "1.0"))
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "train script")
    return repo


def run_cli(repo: Path, *args: str) -> subprocess.CompletedProcess:
    return cli(*args, cwd=repo, env={"PYTHONPATH": str(ROOT)})


def test_diff_between_runs_and_against_the_tree(project: Path) -> None:
    clean = train(project, 0.1)
    (project / "src" / "train.py").write_text(TRAIN.replace("SCALE", "2.0"))
    (project / "src" / "extra data.txt").write_text("new file\n")
    dirty = train(project, 0.1)
    before = user_state(project)
    p = run_cli(project, "diff", clean, dirty)
    assert p.returncode == 0 and p.stderr == ""
    assert "-        exp.track({\"step\": step, \"loss\": 1.0 / (step + 1) * lr * 1.0})" in p.stdout
    assert "+        exp.track({\"step\": step, \"loss\": 1.0 / (step + 1) * lr * 2.0})" in p.stdout
    assert "+++ b/src/extra data.txt" in p.stdout
    p = run_cli(project, "diff", clean, dirty, "--stat")
    assert "src/train.py" in p.stdout and "2 files changed" in p.stdout
    p = run_cli(project, "diff", dirty, "--json")
    d = json.loads(p.stdout)
    assert d["diff"] == "" and d["b"] == "worktree" and d["a"]["dirty"] is True
    assert run_cli(project, "diff", dirty).stderr.endswith("and the working tree\n")
    (project / "src" / "train.py").write_text("changed again\n")
    p = run_cli(project, "diff", clean)
    assert "+changed again" in p.stdout
    p = run_cli(project, "diff", clean, "--max-lines", "3")
    assert len(p.stdout.splitlines()) == 3 and "use --max-lines 0 for all" in p.stderr
    after = user_state(project)
    assert before["index"] == after["index"] and before["head"] == after["head"] and before["stash"] == after["stash"]


def test_restore_into_worktree_leaves_checkout_alone(project: Path, tmp_path: Path) -> None:
    (project / "src" / "train.py").write_text(TRAIN.replace("SCALE", "3.0"))
    run = train(project, 0.5, cwd=project / "src")  # started from a subdirectory
    before = user_state(project)
    p = run_cli(project, "restore", run[-8:], "--json")
    d = json.loads(p.stdout)
    assert p.returncode == 0 and d["checked_out"] is False and d["cwd"] == os.path.join(d["path"], "src")
    assert "* 3.0" in Path(d["cwd"], "train.py").read_text()
    assert user_state(project) == before
    into = tmp_path / "here"
    p = run_cli(project, "restore", run, "--into", str(into))
    assert p.returncode == 0 and p.stdout.strip() == str(into / "src")
    p = run_cli(project, "restore", run, "--into", str(into))
    assert p.returncode == 1 and "not empty" in p.stderr and p.stderr.count("\n") == 1
    p = run_cli(project, "restore", run, "--checkout")
    assert p.returncode == 1 and "working tree is not clean (M src/train.py)" in p.stderr
    assert user_state(project) == before


def test_restore_checkout_of_a_clean_run_is_the_recorded_commit(project: Path) -> None:
    run = train(project, 0.2)
    recorded = git(project, "rev-parse", "HEAD").strip()
    (project / "new.txt").write_text("later work\n")
    git(project, "add", "new.txt")
    git(project, "commit", "-qm", "later")  # main moves on
    p = run_cli(project, "restore", run, "--checkout")
    assert p.returncode == 0 and git(project, "rev-parse", "HEAD").strip() == recorded
    assert git(project, "status", "--porcelain") == ""
    assert not (project / "new.txt").exists()


def test_replay_dry_run_prints_a_command_a_shell_runs_as_recorded(project: Path) -> None:
    """Trial 7 pasted `replay --dry-run`'s line into a shell: `--parse=loss\\s+(?P<loss>...)` and a JSON
    `--meta` were printed bare, so the shell split and globbed them."""
    p = run_cli(project, "run", "--parse", r"loss\s+(?P<loss>\S+)", "--meta", 'args={"lr": 0.1}', "--",
                sys.executable, "-c", "print('loss 0.5')")
    assert p.returncode == 0, p.stderr
    rid = sorted((project / ".runs").glob("*.jsonl"))[-1].stem
    d = json.loads(run_cli(project, "replay", rid, "--dry-run", "--json").stdout)
    p = run_cli(project, "replay", rid, "--dry-run")
    line = p.stdout.splitlines()[1]
    assert shlex.split(line) == d["command"] and any(" " in a for a in d["command"]), line


def test_replay_into_a_folder_runs_there(project: Path, tmp_path: Path) -> None:
    """Trial 9 had to replay blind to learn where the worktree went (under .git), and needed it in its own
    folder; `restore` had --into, `replay` did not."""
    original = train(project, 0.25)
    into = tmp_path / "replayed"
    d = json.loads(run_cli(project, "replay", original, "--into", str(into), "--dry-run", "--json").stdout)
    assert d["cwd"].startswith(str(into))
    p = run_cli(project, "replay", original, "--into", str(into))
    assert p.returncode == 0, p.stderr
    assert (into / "src" / "train.py").exists() and f"git worktree remove {into}" in p.stderr
    new = read_lines(sorted((project / ".runs").glob("*.jsonl"))[-1])
    assert new[0]["replay_of"] == original and new[0]["process"]["cwd"].startswith(str(into))


def test_replay_reruns_in_the_restored_code_and_compares(project: Path) -> None:
    (project / "src" / "train.py").write_text(TRAIN.replace("SCALE", "4.0"))
    original = train(project, 0.25)
    (project / "src" / "train.py").write_text(TRAIN.replace("SCALE", "100.0"))  # the code moved on
    before = user_state(project)
    p = run_cli(project, "replay", original, "--dry-run", "--json")
    d = json.loads(p.stdout)
    assert d["dry_run"] and d["command"][1:] == ["src/train.py", "0.25"]
    p = run_cli(project, "replay", original)
    assert p.returncode == 0, p.stderr
    assert "original" in p.stdout and "FINAL METRIC" in p.stdout
    kept = p.stderr.split("remove it with `git worktree remove ")[1].split("`")[0]
    assert os.path.isdir(kept) and kept in p.stdout  # the folder the replay ran in, named with how to remove it
    runs = sorted((project / ".runs").glob("*.jsonl"))
    new = read_lines(runs[-1])
    assert new[0]["replay_of"] == original and new[-1]["status"] == "completed"
    old = read_lines(runs[-2])
    assert new[-1]["summary"]["loss"] == old[-1]["summary"]["loss"]  # same code, same numbers (not 100x)
    assert user_state(project)["index"] == before["index"] and user_state(project)["files"] == before["files"]
    p = run_cli(project, "replay", original, "--json")
    d = json.loads(p.stdout)
    assert d["exit_code"] == 0 and d["compare"]["metrics"][0]["delta"] == 0


def test_replay_refuses_redacted_and_inline_commands(project: Path) -> None:
    subprocess.run(["python", "-c", "from exprag_plus import Experiment; Experiment('inline').close()"],
                   cwd=project, env={**os.environ, "PYTHONPATH": str(ROOT)}, check=True)
    p = run_cli(project, "replay", "latest")
    assert p.returncode == 2 and "python -c" in p.stderr
    subprocess.run(["python", "src/train.py", "0.1", "--token", "abc"], cwd=project,
                   env={**os.environ, "PYTHONPATH": str(ROOT)}, check=True)
    p = run_cli(project, "replay", "latest")
    assert p.returncode == 2 and "redacted" in p.stderr and p.stderr.count("\n") == 1


def test_gc_deletes_only_orphaned_snapshot_branches(project: Path) -> None:
    (project / "src" / "train.py").write_text(TRAIN.replace("SCALE", "5.0"))
    keep = train(project, 0.1)
    gone = train(project, 0.2)
    branches = git(project, "branch", "--list", "run/*").split()
    assert sorted(branches) == sorted([f"run/{keep}", f"run/{gone}"])
    (project / ".runs" / f"{gone}.jsonl").unlink()
    p = run_cli(project, "gc", "--dry-run")
    assert p.stdout.splitlines()[0] == f"would delete refs/heads/run/{gone}"
    assert len(git(project, "branch", "--list", "run/*").split()) == 2
    p = run_cli(project, "gc", "--json")
    d = json.loads(p.stdout)
    assert d["deleted"] == [f"refs/heads/run/{gone}"] and d["kept"] == 1
    assert git(project, "branch", "--list", "run/*").split() == [f"run/{keep}"]
    p = run_cli(project, "gc", "--root", str(project / "empty"), "--json")  # the main .runs still holds `keep`
    assert p.returncode == 0 and json.loads(p.stdout)["deleted"] == []
    (project / ".runs" / f"{keep}.jsonl").rename(project / "moved.jsonl")
    p = run_cli(project, "gc", "--root", str(project / "empty"))
    assert p.returncode == 2 and "no run files in" in p.stderr and "refusing to delete 1 snapshot ref(s)" in p.stderr
    assert git(project, "branch", "--list", "run/*").split() == [f"run/{keep}"]


def test_runs_without_code_state_fail_clearly(tmp_path: Path) -> None:
    subprocess.run(["python", "-c", "from exprag_plus import Experiment; Experiment('nogit').close()"],
                   cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT),
                                      "GIT_CEILING_DIRECTORIES": str(tmp_path.parent)}, check=True)
    p = cli("diff", "latest", cwd=tmp_path, env={"GIT_CEILING_DIRECTORIES": str(tmp_path.parent)})
    assert p.returncode == 1 and "has no git state" in p.stderr and p.stderr.count("\n") == 1


def test_gc_keeps_a_snapshot_that_a_replay_still_records(project: Path) -> None:
    (project / "src" / "train.py").write_text(TRAIN.replace("SCALE", "6.0"))
    original = train(project, 0.3)
    assert run_cli(project, "replay", original).returncode == 0
    (project / ".runs" / f"{original}.jsonl").unlink()
    p = run_cli(project, "gc", "--json")
    assert json.loads(p.stdout)["deleted"] == []
    assert git(project, "branch", "--list", "run/*").split() == [f"run/{original}"]
    p = run_cli(project, "restore", "latest")  # the replay's code is still reachable
    assert p.returncode == 0, p.stderr


def test_a_run_file_never_exists_without_its_run_start(project: Path, tmp_path: Path) -> None:
    """The code state is captured before the file is created, so a listing never sees a nameless run."""
    real_git = subprocess.run(["which", "git"], capture_output=True, text=True, check=True).stdout.strip()
    spy = tmp_path / "spy"
    spy.mkdir()
    log = tmp_path / "seen.log"
    (spy / "git").write_text(f"#!/bin/sh\nls {project}/.runs/*.jsonl >> {log} 2>/dev/null\nexec {real_git} \"$@\"\n")
    (spy / "git").chmod(0o755)
    (project / "src" / "train.py").write_text(TRAIN.replace("SCALE", "7.0"))  # dirty: a snapshot is made
    p = subprocess.run(["python", "src/train.py", "0.1"], cwd=project, capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(ROOT), "PATH": f"{spy}:{os.environ['PATH']}"})
    assert p.returncode == 0, p.stderr
    assert log.exists() is False or log.read_text() == ""  # git ran, and no run file existed meanwhile
    assert len(list((project / ".runs").glob("*.jsonl"))) == 1


def run_into(cwd: Path, runs: Path, lr: float) -> str:
    """A dirty-tree run recorded in the runs folder `runs` (as `--root`/$EXPRAG_PLUS_DIR would put it)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "EXPRAG_PLUS_DIR": str(runs)}
    before = set(runs.glob("*.jsonl"))
    p = subprocess.run(["python", "src/train.py", str(lr)], cwd=cwd, env=env, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    (new,) = set(runs.glob("*.jsonl")) - before
    rec = read_lines(new)[0]
    assert rec["git"]["branch"] == f"run/{rec['run_id']}"  # a snapshot was made
    return rec["run_id"]


def test_gc_deletes_only_its_own_snapshots_of_runs_that_exist_nowhere(project: Path, tmp_path: Path) -> None:
    (project / "src" / "train.py").write_text(TRAIN.replace("SCALE", "8.0"))  # dirty: every run snapshots
    gone = run_into(project, project / ".runs", 0.1)
    moved_on = run_into(project, project / ".runs", 0.2)
    other_root = run_into(project, tmp_path / "elsewhere", 0.3)  # another --root: gc is not told of it
    wt = tmp_path / "linked"
    git(project, "worktree", "add", "-q", "--detach", str(wt))
    (wt / "src" / "train.py").write_text(TRAIN.replace("SCALE", "9.0"))
    in_worktree = run_into(wt, wt / ".runs", 0.4)  # a linked worktree's default runs folder
    for rid in (gone, moved_on, other_root, in_worktree):
        (project / ".runs" / f"{rid}.jsonl").unlink(missing_ok=True)
    # a user's branches under run/: one named like an idea, one named like a run id, one built on a snapshot
    git(project, "branch", "run/lr-sweep-ideas")
    user_id = "0190f5d2-7c3a-7b4e-9a51-3c2d1e0f4a5b"
    git(project, "branch", f"run/{user_id}")
    mine = git(project, "commit-tree", "-p", f"run/{moved_on}", "-m", "my work on top of the snapshot",
               f"run/{moved_on}^{{tree}}").strip()
    git(project, "update-ref", f"refs/heads/run/{moved_on}", mine)
    gone_commit = git(project, "rev-parse", f"run/{gone}").strip()
    git(project, "update-ref", f"refs/exprag-plus/run/{gone}", gone_commit)  # the fallback namespace
    keep_id = run_into(project, project / ".runs", 0.5)
    pushed = run_into(project, project / ".runs", 0.6)
    (project / ".runs" / f"{pushed}.jsonl").unlink()
    git(project, "update-ref", f"refs/exprag-plus/runs/{pushed}", f"run/{pushed}")  # shared: its code stays
    refs_before = git(project, "for-each-ref", "--format=%(refname) %(objectname)")
    reflog = git(project, "reflog", "show", "run/lr-sweep-ideas")

    p = run_cli(project, "gc", "--dry-run", "--json")
    assert p.returncode == 0, p.stderr
    planned = json.loads(p.stdout)
    assert sorted(planned["deleted"]) == sorted([f"refs/heads/run/{gone}", f"refs/exprag-plus/run/{gone}"])
    assert {r["ref"] for r in planned["not_ours"]} == {"refs/heads/run/lr-sweep-ideas", f"refs/heads/run/{user_id}",
                                                      f"refs/heads/run/{moved_on}"}
    assert git(project, "for-each-ref", "--format=%(refname) %(objectname)") == refs_before
    p = run_cli(project, "gc", "--json")
    done = json.loads(p.stdout)
    assert done["deleted"] == planned["deleted"] and done["failed"] == [] and done["kept"] == 4
    after = set(git(project, "for-each-ref", "--format=%(refname) %(objectname)").splitlines())
    assert after == set(refs_before.splitlines()) - {f"refs/heads/run/{gone} {gone_commit}",
                                                     f"refs/exprag-plus/run/{gone} {gone_commit}"}
    assert git(project, "reflog", "show", "run/lr-sweep-ideas") == reflog
    for rid in (other_root, in_worktree, keep_id):
        assert run_cli(project, "diff", rid, "--root", str(tmp_path / "elsewhere" if rid == other_root else
                                                            wt / ".runs" if rid == in_worktree else project / ".runs"),
                       "--stat").returncode == 0
    p = run_cli(project, "gc")
    assert p.returncode == 0 and "deleted 0 snapshot branch(es)" in p.stdout
    assert "left alone refs/heads/run/lr-sweep-ideas: not a snapshot exprag-plus made" in p.stdout


def test_restore_checkout_refuses_to_overwrite_untracked_or_ignored_files(project: Path) -> None:
    (project / "config.yaml").write_text("lr: 0.1\n")
    (project / "same.yaml").write_text("kept as is\n")
    (project / "notes.txt").write_text("v1\n")
    git(project, "add", "-A")
    git(project, "commit", "-qm", "config committed")
    run = train(project, 0.1)  # clean: its code is this commit
    git(project, "rm", "-q", "--cached", "config.yaml", "same.yaml", "notes.txt")
    (project / ".gitignore").write_text("*.yaml\n")
    git(project, "add", ".gitignore")
    git(project, "commit", "-qm", "config is local now")
    (project / "config.yaml").write_text("lr: 0.5  # my local edit\n")  # ignored, edited
    (project / "notes.txt").write_text("my notes\n")  # untracked, not ignored
    head = git(project, "rev-parse", "HEAD")
    p = run_cli(project, "restore", run, "--checkout")
    assert p.returncode == 2 and p.stdout == "" and p.stderr.count("\n") == 1
    assert "config.yaml" in p.stderr and "notes.txt" in p.stderr and "same.yaml" not in p.stderr
    assert "--force" in p.stderr
    assert (project / "config.yaml").read_text() == "lr: 0.5  # my local edit\n"
    assert git(project, "rev-parse", "HEAD") == head
    (project / "notes.txt").unlink()
    p = run_cli(project, "restore", run, "--checkout")
    assert p.returncode == 2 and "1 path(s)" in p.stderr and "config.yaml" in p.stderr
    p = run_cli(project, "restore", run, "--force")
    assert p.returncode == 2 and "--force only applies to --checkout" in p.stderr
    p = run_cli(project, "restore", run, "--checkout", "--force")
    assert p.returncode == 0, p.stderr
    assert (project / "config.yaml").read_text() == "lr: 0.1\n" and git(project, "rev-parse", "HEAD") != head

"""One memory for all worktrees: the default runs folder is the main worktree's `.runs`, with real git
worktrees and real processes."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from conftest import cli, git, run_python

TRAIN = """
from exprag_plus import Experiment
with Experiment({name!r}) as exp:
    exp.track({{"step": 0, "loss": {loss}}})
print(exp.path)
"""


def record(cwd: Path, name: str, loss: float) -> Path:
    return Path(run_python(TRAIN.format(name=name, loss=loss), cwd).stdout.strip())


def listed(cwd: Path, *extra: str) -> list:
    p = cli("runs", "--json", "--limit", "0", *extra, cwd=cwd)
    assert p.returncode == 0, p.stderr
    return sorted(r["name"] for r in json.loads(p.stdout)["runs"])


def test_parallel_linked_worktrees_share_the_main_worktrees_runs(repo: Path, tmp_path: Path) -> None:
    a, b = tmp_path / "agent-a", tmp_path / "agent-b"
    git(repo, "worktree", "add", "-q", "-b", "exp-a", str(a))
    git(repo, "worktree", "add", "-q", "-b", "exp-b", str(b))
    (a / "sub").mkdir()
    paths = [record(a / "sub", "from a", 1.0), record(b, "from b", 0.5), record(repo, "from main", 2.0)]
    assert {p.parent for p in paths} == {repo / ".runs"}
    assert not (a / ".runs").exists() and not (b / ".runs").exists()
    for where in (a, b / ".", repo, a / "sub"):
        assert listed(where) == ["from a", "from b", "from main"]
    # each run still knows its own worktree's code
    ran_in_b = json.loads(paths[1].read_text().splitlines()[0])
    assert ran_in_b["git"]["branch"] == "exp-b"
    # a note written from one worktree is seen from the other
    assert cli("note", paths[1].stem[-8:], "b wins", "--kind", "decision", cwd=a).returncode == 0
    shown = json.loads(cli("show", paths[1].stem[-8:], "--json", cwd=b).stdout)
    assert [n["text"] for n in shown["notes"]] == ["b wins"]
    # the runs folder is ignored in every worktree: no worktree turns dirty
    assert git(a, "status", "--porcelain") == "" and git(repo, "status", "--porcelain") == ""


def test_old_runs_folders_in_linked_worktrees_are_still_read(repo: Path, tmp_path: Path) -> None:
    wt = tmp_path / "old-wt"
    git(repo, "worktree", "add", "-q", "-b", "old", str(wt))
    # a run recorded before the change: in the linked worktree's own .runs
    old = record(wt, "old run", 3.0)
    legacy = wt / ".runs"
    legacy.mkdir()
    shutil.move(str(old), legacy / old.name)
    new = record(wt, "new run", 1.0)
    assert new.parent == repo / ".runs"
    assert listed(repo) == listed(wt) == ["new run", "old run"]
    short = old.stem[-8:]
    assert json.loads(cli("show", short, "--json", cwd=repo).stdout)["name"] == "old run"
    assert cli("tag", short, "keep", cwd=repo).returncode == 0  # appended where the file lives
    assert "keep" in (legacy / old.name).read_text()
    assert cli("show", str(legacy / old.name), cwd=repo).returncode == 0  # a path into it is allowed
    p = cli("best", "loss", "--min", "--json", cwd=wt)
    assert json.loads(p.stdout)["run"]["name"] == "new run"
    # --root and $EXPRAG_PLUS_DIR still name exactly one folder
    assert listed(repo, "--root", str(legacy)) == ["old run"]
    p = cli("runs", "--json", cwd=repo, env={"EXPRAG_PLUS_DIR": str(repo / ".runs")})
    assert [r["name"] for r in json.loads(p.stdout)["runs"]] == ["new run"]


def test_bare_repository_worktrees_share_a_folder_beside_it(tmp_path: Path, repo: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    subprocess.run(["git", "clone", "-q", "--bare", str(repo), str(project / ".bare")], check=True)
    git(project / ".bare", "worktree", "add", "-q", str(project / "main"), "main")
    git(project / ".bare", "worktree", "add", "-q", "-b", "feat", str(project / "feat"))
    p1, p2 = record(project / "main", "m", 1.0), record(project / "feat", "f", 2.0)
    assert p1.parent == p2.parent == project / ".runs"
    assert listed(project / "feat") == ["f", "m"]
    assert ".bare" not in str(p1)


def test_restore_worktree_runs_land_in_the_main_folder(repo: Path) -> None:
    first = record(repo, "first", 1.0)
    p = cli("restore", first.stem[-8:], cwd=repo)
    assert p.returncode == 0, p.stderr
    restored = Path(p.stdout.strip())
    assert ".git" in restored.parts  # restore worktrees live under .git/...
    second = record(restored, "from restored", 1.0)
    assert second.parent == repo / ".runs"  # never inside .git

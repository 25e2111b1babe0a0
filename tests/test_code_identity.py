"""Code identity: a dirty run's snapshot found again as a later commit; `diff --base` shows a run's change."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import cli, git, run_python
from test_mcp import Raw, structured

TRAIN = """
from exprag_plus import Experiment
with Experiment("try") as exp:
    exp.track({"loss": 1.0})
print(exp.run_id)
"""


def test_a_kept_change_committed_later_is_named_in_show(repo: Path, tmp_path: Path) -> None:
    (repo / "train.py").write_text("print('hello')\nlr = 0.03\n")  # the change being tried: dirty
    dirty = run_python(TRAIN, repo).stdout.strip()
    (repo / "train.py").write_text("print('hello')\nlr = 0.5\n")
    other = run_python(TRAIN, repo).stdout.strip()  # another try, not kept
    out = cli("show", dirty, cwd=repo).stdout
    assert "same code as" not in out  # nothing committed yet
    # the agent keeps the first change: commits it on a branch of its own
    git(repo, "checkout", "-q", "-b", "research")
    (repo / "train.py").write_text("print('hello')\nlr = 0.03\n")
    git(repo, "commit", "-qam", "keep lr 0.03")
    kept = git(repo, "rev-parse", "HEAD").strip()
    git(repo, "checkout", "-q", "main")
    out = cli("show", dirty, cwd=repo).stdout
    assert f"same code as {kept[:7]} on research (committed later)" in out
    shown = json.loads(cli("show", dirty, "--json", cwd=repo).stdout)
    assert shown["same_code"] == {"commit": kept, "branch": "research"}
    assert json.loads(cli("show", other, "--json", cwd=repo).stdout)["same_code"] is None
    # diff --base: the run's own change against the commit it started from
    p = cli("diff", dirty, "--base", cwd=repo)
    assert p.returncode == 0 and "+lr = 0.03" in p.stdout and "0.5" not in p.stdout
    data = json.loads(cli("diff", other, "--base", "--json", cwd=repo).stdout)
    assert data["b"] == "base" and "+lr = 0.5" in data["diff"]
    p = cli("diff", dirty, other, "--base", cwd=repo)
    assert p.returncode == 2 and "give one RUN" in p.stderr
    # the MCP server answers the same
    gitconfig = tmp_path / "gitconfig-global"
    srv = Raw({"runs": repo / ".runs", "repo": repo, "gitconfig": gitconfig})
    try:
        srv.initialize("2025-06-18")
        res = srv.request("tools/call", {"name": "show_run", "arguments": {"run": dirty}})
        assert structured(res["result"])["same_code"]["branch"] == "research"
        res = srv.request("tools/call", {"name": "code_diff", "arguments": {"a": dirty, "base": True}})
        assert "+lr = 0.03" in structured(res["result"])["diff"]
    finally:
        srv.close()


def test_a_clean_run_has_no_change_against_its_base(repo: Path) -> None:
    clean = run_python(TRAIN, repo).stdout.strip()
    p = cli("diff", clean, "--base", cwd=repo)
    assert p.returncode == 0 and p.stdout == "" and "no code difference" in p.stderr
    assert json.loads(cli("show", clean, "--json", cwd=repo).stdout)["same_code"] is None

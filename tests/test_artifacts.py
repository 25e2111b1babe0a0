"""Artifacts: the files a run wrote, recorded from Python and from `exprag-plus run -- CMD`, and asked about
through the real CLI and the real MCP server."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, Dict, List

import pytest

from conftest import cli, git, read_lines, run_python


def artifact_records(runs: Path) -> List[Dict[str, Any]]:
    return [r for f in sorted(runs.glob("*.jsonl")) for r in read_lines(f) if r["type"] == "artifact"]


@pytest.fixture
def project(repo: Path) -> Path:
    (repo / ".gitignore").write_text("checkpoints/\n")
    git(repo, "add", ".gitignore")
    git(repo, "commit", "-qm", "ignore checkpoints")
    return repo


def listing(repo: Path, *args: str) -> Dict[str, Any]:
    p = cli("artifacts", *args, "--json", cwd=repo)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def test_python_run_records_an_ignored_checkpoint_then_change_and_vanish_are_reported(project: Path) -> None:
    p = run_python("""
        import os, warnings
        from exprag_plus import Experiment
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with Experiment("train") as exp:
                exp.track({"step": 0, "val_loss": 0.5})
                os.makedirs("checkpoints", exist_ok=True)
                with open("checkpoints/model.pt", "wb") as f:
                    f.write(b"weights" * 100)
                with open("preds.csv", "w") as f:
                    f.write("a,b\\n1,2\\n")
                exp.artifact("checkpoints/model.pt", note="final weights")
                exp.artifact("preds.csv", kind="predictions")
                exp.artifact("no/such/file.pt")          # a warning, never an exception
                exp.track({"step": 1, "val_loss": 0.4})
        print(len([w for w in caught if "no/such/file.pt" in str(w.message)]))
    """, cwd=project)
    assert p.stdout.strip() == "1"
    recs = artifact_records(project / ".runs")
    assert [r["path"] for r in recs] == ["checkpoints/model.pt", "preds.csv"]
    model = recs[0]
    assert model["bytes"] == 700 and model["kind"] == "model" and model["note"] == "final weights"
    assert model["sha256"] == hashlib.sha256(b"weights" * 100).hexdigest() and model["hashed"] is True
    assert model["mtime"].endswith("Z") and recs[1]["kind"] == "predictions"
    res = listing(project)
    assert [(a["path"], a["status"]) for a in res["artifacts"]] == [("checkpoints/model.pt", "ok"), ("preds.csv", "ok")]
    assert res["artifacts"][0]["location"] == str(project / "checkpoints" / "model.pt")

    # same bytes rewritten later: mtime differs, sha256 matches -> still ok; other bytes -> changed
    time.sleep(0.01)
    (project / "checkpoints" / "model.pt").write_bytes(b"weights" * 100)
    assert listing(project, "latest")["artifacts"][0]["status"] == "ok"
    (project / "checkpoints" / "model.pt").write_bytes(b"other" * 140)
    (project / "preds.csv").unlink()
    res = listing(project, "latest")
    by_path = {a["path"]: a for a in res["artifacts"]}
    assert by_path["checkpoints/model.pt"]["status"] == "changed" and by_path["checkpoints/model.pt"]["now"]["bytes"] == 700
    assert by_path["preds.csv"]["status"] == "missing" and res["counts"] == {"ok": 0, "changed": 1, "missing": 1}
    table = cli("artifacts", cwd=project).stdout
    assert "changed (now" in table and "missing" in table and "1 changed; 1 missing since recorded" in table
    assert listing(project, "--kind", "model")["artifacts"][0]["path"] == "checkpoints/model.pt"
    bad = cli("artifacts", "--kind", "weights", cwd=project)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "invalid choice" in bad.stderr


def test_wrapped_run_records_what_the_command_wrote_and_nothing_else(project: Path) -> None:
    (project / "old.txt").write_text("untouched\n")
    (project / "edited.txt").write_text("v1\n")
    for skipped in ("__pycache__", ".venv/lib", "node_modules/x"):
        (project / skipped).mkdir(parents=True)
    script = ("mkdir -p checkpoints sub && printf w > checkpoints/epoch1.pt && printf 'a,b' > sub/out.csv && "
              "echo v2 >> edited.txt && printf t > tmp.bin && mv tmp.bin renamed.bin && "
              "printf c > __pycache__/m.pyc && printf c > .venv/lib/x.py && printf c > node_modules/x/i.js && "
              "printf g > .git/scratch && echo 'val_loss: 0.25'")
    p = cli("run", "--json", "--", "bash", "-c", script, cwd=project)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout[p.stdout.index("{\n"):])  # after what the command printed
    assert out["artifacts"]["found"] == 4 and out["artifacts"]["omitted"] == 0
    recs = artifact_records(project / ".runs")
    assert {(r["path"], r["change"], r["kind"]) for r in recs} == {
        ("checkpoints/epoch1.pt", "created", "model"), ("sub/out.csv", "created", "data"),
        ("edited.txt", "modified", "log"), ("renamed.bin", "created", "model")}
    lines = read_lines(next((project / ".runs").glob("*.jsonl")))
    assert lines[-1]["type"] == "run_end" and lines[-1]["artifact_scan"]["recorded"] == 4
    assert all(r["seq"] < lines[-1]["seq"] for r in recs)
    shown = cli("show", "latest", cwd=project).stdout
    assert "checkpoints/epoch1.pt" in shown and "model" in shown

    p = cli("run", "--no-artifacts", "--", "bash", "-c", "printf x > checkpoints/epoch2.pt", cwd=project)
    assert p.returncode == 0 and len(artifact_records(project / ".runs")) == 4


def test_a_mtime_set_back_and_a_wrapped_python_script_that_records_itself(project: Path) -> None:
    (project / "data.npy").write_bytes(b"x" * 10)
    os.utime(project / "data.npy", (1_000_000, 1_000_000))
    (project / "train.py").write_text(
        "import os\nfrom exprag_plus import Experiment\n"
        "with Experiment('inner') as exp:\n"
        "    open('checkpoints/best.pt', 'wb').write(b'best')\n"
        "    exp.artifact('checkpoints/best.pt', note='by the script')\n"
        "with open('data.npy', 'wb') as f:\n"
        "    f.write(b'y' * 10)\n"
        "os.utime('data.npy', (1_000_000, 1_000_000))\n")  # same size, same old mtime: only ctime tells
    (project / "checkpoints").mkdir()
    p = cli("run", "--", "python", "train.py", cwd=project,
            env={"PYTHONPATH": str(Path(__file__).resolve().parent.parent)})
    assert p.returncode == 0, p.stderr
    recs = artifact_records(project / ".runs")
    assert sorted((r["path"], r.get("note"), r.get("change")) for r in recs) == [
        ("checkpoints/best.pt", "by the script", None), ("data.npy", None, "modified")]


def test_a_sparse_gigabyte_over_the_hash_limit_is_never_read(project: Path) -> None:
    script = "import sys\nwith open('checkpoints/huge.safetensors', 'wb') as f:\n    f.truncate(1 << 30)\n"
    (project / "checkpoints").mkdir()
    (project / "mk.py").write_text(script)
    t0 = time.monotonic()
    p = cli("run", "--hash-limit", "1048576", "--", "python", "mk.py", cwd=project)
    took = time.monotonic() - t0
    assert p.returncode == 0, p.stderr
    (rec,) = [r for r in artifact_records(project / ".runs") if r["path"].endswith("huge.safetensors")]
    assert rec["bytes"] == 1 << 30 and rec["sha256"] is None and rec["hashed"] is False and rec["kind"] == "model"
    assert took < 20
    # the default limit (256 MB) from Python too; the check afterwards uses size and mtime only
    run_python("""
        from exprag_plus import Experiment
        with Experiment("x") as exp:
            assert exp.artifact("checkpoints/huge.safetensors")["sha256"] is None
    """, cwd=project)
    assert all(a["status"] == "ok" for a in listing(project)["artifacts"])


def test_the_cap_records_models_first_and_counts_the_rest(project: Path) -> None:
    script = "mkdir -p checkpoints logs && for i in $(seq 1 30); do printf x > logs/$i.log; done && printf m > checkpoints/z.pt"
    p = cli("run", "--max-artifacts", "5", "--json", "--", "bash", "-c", script, cwd=project)
    assert p.returncode == 0, p.stderr
    scan = json.loads(p.stdout)["artifacts"]
    assert scan["found"] == 31 and scan["recorded"] == 5 and scan["omitted"] == 26
    assert scan["omitted_folders"] == {"logs": 26} and "--max-artifacts" in scan["note"]
    assert "--max-artifacts" in p.stderr
    paths = [r["path"] for r in artifact_records(project / ".runs")]
    assert len(paths) == 5 and paths[0] == "checkpoints/z.pt"
    q = cli("artifacts", "--json", cwd=project)
    assert json.loads(q.stdout)["omitted"] == 26 and "26 more file(s)" in q.stderr
    assert json.loads(cli("show", "latest", "--json", cwd=project).stdout)["artifact_scan"]["omitted"] == 26


def test_best_json_gives_the_winners_model(project: Path) -> None:
    for lr, loss in (("a", 0.5), ("b", 0.2), ("c", 0.9)):
        p = cli("run", "--", "bash", "-c", f"mkdir -p checkpoints && printf {lr} > checkpoints/{lr}.pt && "
                f"echo 'val_loss: {loss}'", cwd=project)
        assert p.returncode == 0, p.stderr
    res = json.loads(cli("best", "val_loss", "--min", "--json", cwd=project).stdout)
    assert [(a["path"], a["kind"], a["status"]) for a in res["artifacts"]] == [("checkpoints/b.pt", "model", "ok")]
    assert res["artifacts"][0]["location"] == str(project / "checkpoints" / "b.pt")
    assert "artifact checkpoints/b.pt" in cli("best", "val_loss", "--min", cwd=project).stdout


def test_mcp_list_artifacts(project: Path, tmp_path: Path) -> None:
    from test_mcp import Raw

    p = cli("run", "--", "bash", "-c", "mkdir -p checkpoints && printf w > checkpoints/m.ckpt && printf p > plot.png",
            cwd=project)
    assert p.returncode == 0, p.stderr
    (project / "plot.png").unlink()
    gitconfig = tmp_path / "gitconfig-mcp"
    gitconfig.write_text("")
    c = Raw({"runs": project / ".runs", "repo": project, "gitconfig": gitconfig})
    try:
        c.initialize("2025-11-25")
        tools = {t["name"]: t for t in c.request("tools/list")["result"]["tools"]}
        assert tools["list_artifacts"]["annotations"]["readOnlyHint"] is True
        res = c.request("tools/call", {"name": "list_artifacts", "arguments": {}})["result"]
        got = res["structuredContent"]
        assert {(a["path"], a["status"]) for a in got["artifacts"]} == {("checkpoints/m.ckpt", "ok"), ("plot.png", "missing")}
        res = c.request("tools/call", {"name": "list_artifacts", "arguments": {"kind": "model", "run": "latest"}})["result"]
        assert [a["path"] for a in res["structuredContent"]["artifacts"]] == ["checkpoints/m.ckpt"]
        bad = c.request("tools/call", {"name": "list_artifacts", "arguments": {"kind": "weights"}})["result"]
        assert bad["isError"] is True
    finally:
        c.close()


# --- many files: inotify tells which few to stat afterwards; it must find exactly what a full pass finds --


_WRITER = r"""
import mmap, os, subprocess, sys
os.chdir(sys.argv[1])
with open('bulk/d1/f10.txt', 'r+b') as f:          # in place, same size, same inode
    f.write(b'Z')
with open('bulk/d2/f20.txt', 'r+b') as f:          # through mmap
    m = mmap.mmap(f.fileno(), 0)
    m[0:1] = b'M'
    m.flush()
    m.close()
os.chmod('bulk/d3/f30.txt', 0o600)                  # attributes only
os.utime('bulk/d4/f40.txt', (1_000_000, 1_000_000))  # mtime set back
open('bulk/d5/tmp', 'wb').write(b'new')
os.replace('bulk/d5/tmp', 'bulk/d5/f50.txt')        # renamed over an existing file
os.rename('bulk/d6', 'bulk/moved')                   # a whole folder moved
os.makedirs('bulk/new/deeper')
open('bulk/new/deeper/x.pt', 'wb').write(b'x')
os.makedirs('bulk/d7/__pycache__')
open('bulk/d7/__pycache__/c.pyc', 'wb').write(b'c')  # left out
open('bulk/d8/f80.txt', 'rb').read()                 # read only: unchanged
subprocess.run(['bash', '-c', 'printf late >> bulk/d9/f90.txt'], check=True)  # a grandchild's write
"""


def _bulk(root: Path, folders: int = 10, per: int = 250) -> None:
    for d in range(folders):
        (root / "bulk" / f"d{d}").mkdir(parents=True)
        for i in range(per):
            (root / "bulk" / f"d{d}" / f"f{d * 10 + i}.txt").write_text(f"{i}\n")


def test_many_files_inotify_finds_what_a_full_stat_pass_finds(tmp_path: Path) -> None:
    from exprag_plus import artifacts

    top = tmp_path / "top"
    _bulk(top)
    runs = top / ".runs"
    runs.mkdir()
    marker = runs / "output.log"
    marker.write_text("")
    watched, full = artifacts.Scan(str(top), str(runs)), artifacts.Scan(str(top), str(runs))
    for scan in (watched, full):
        scan.prepare()
        scan.mark(str(marker))
    assert watched.watch is not None and watched.watch.ok, "2,500 files: the watch should be on"
    full.close()  # this one stats every file afterwards
    script = tmp_path / "w.py"
    script.write_text(_WRITER)
    import subprocess
    import sys
    subprocess.run([sys.executable, str(script), str(top)], check=True)
    got, expected = watched.changed(), full.changed()
    rel = {(os.path.relpath(p, top), created) for p, _, created in got}
    assert got == expected
    moved = {(f"bulk/moved/f{60 + i}.txt", True) for i in range(250)}
    assert rel == moved | {("bulk/d1/f10.txt", False), ("bulk/d2/f20.txt", False), ("bulk/d3/f30.txt", False),
                           ("bulk/d4/f40.txt", False), ("bulk/d5/f50.txt", False), ("bulk/new/deeper/x.pt", True),
                           ("bulk/d9/f90.txt", False)}


def test_an_overflowed_inotify_queue_falls_back_to_stating_every_file(tmp_path: Path) -> None:
    from exprag_plus import artifacts

    top = tmp_path / "top"
    _bulk(top, 8)
    runs = top / ".runs"
    runs.mkdir()
    (runs / "m").write_text("")
    scan = artifacts.Scan(str(top), str(runs))
    scan.prepare()
    scan.mark(str(runs / "m"))
    assert scan.watch is not None and scan.watch.ok
    limit = int(Path("/proc/sys/fs/inotify/max_queued_events").read_text())
    run_python(f"import os\nos.chdir({str(top)!r})\n"
               f"for i in range({limit} + 100):\n    open(f'bulk/d0/n{{i}}', 'wb').close()\n", cwd=tmp_path)
    scan.watch.drain()
    assert not scan.watch.ok  # never drained meanwhile: the queue overflowed
    found = scan.changed()
    assert len(found) == limit + 100 and all(created for _, _, created in found)


def test_a_wrapped_command_in_a_tree_of_many_files_records_what_it_wrote(project: Path) -> None:
    (project / ".gitignore").write_text("checkpoints/\nbulk/\n")
    _bulk(project)
    (project / "w.py").write_text(_WRITER)
    p = cli("run", "--json", "--", "python", "w.py", str(project), cwd=project)
    assert p.returncode == 0, p.stderr
    recs = artifact_records(project / ".runs")
    assert len(recs) == 250 + 7
    assert {r["path"] for r in recs if r["change"] == "modified"} == {
        "bulk/d1/f10.txt", "bulk/d2/f20.txt", "bulk/d3/f30.txt", "bulk/d4/f40.txt", "bulk/d5/f50.txt",
        "bulk/d9/f90.txt"}


def test_a_storm_of_small_writes_in_a_tree_of_many_files_is_recorded(project: Path) -> None:
    (project / ".gitignore").write_text("checkpoints/\nbulk/\n")
    _bulk(project)
    (project / "storm.py").write_text(
        "a, b = open('bulk/d0/f0.txt', 'a'), open('bulk/new.log', 'w')\n"
        "for i in range(100_000):\n"
        "    a.write('x\\n'); a.flush(); b.write('y\\n'); b.flush()\n"
        "print('loss: 1.5')\n")
    p = cli("run", "--json", "--", "python", "storm.py", cwd=project)
    assert p.returncode == 0, p.stderr
    assert {(r["path"], r["change"]) for r in artifact_records(project / ".runs")} == {
        ("bulk/d0/f0.txt", "modified"), ("bulk/new.log", "created")}


def test_a_copied_project_checks_its_own_files_and_a_linked_worktree_its_own(project: Path, tmp_path: Path) -> None:
    """Trial 9 worked in a copy of a project: every artifact's `location` and status were those of the original
    folder (the run's recorded git top level, which still existed), so an overwritten file there decided
    whether the copy's weights were the run's."""
    p = cli("run", "--", "bash", "-c", "mkdir -p ck && printf w1 > ck/m.pt", cwd=project)
    assert p.returncode == 0, p.stderr
    copy = tmp_path / "copy"
    shutil.copytree(project, copy, symlinks=True)
    (project / "ck" / "m.pt").write_bytes(b"changed in the original")
    res = listing(copy)["artifacts"][0]
    assert (res["location"], res["status"]) == (str(copy / "ck" / "m.pt"), "ok")
    assert listing(project)["artifacts"][0]["status"] == "changed"
    wt = tmp_path / "wt"
    git(project, "worktree", "add", "-q", "--detach", str(wt))
    p = cli("run", "--", "bash", "-c", "mkdir -p ck && printf w2 > ck/m.pt", cwd=wt)  # its runs go to the main .runs
    assert p.returncode == 0, p.stderr
    res = listing(project, "latest")["artifacts"][0]
    assert (res["location"], res["status"]) == (str(wt / "ck" / "m.pt"), "ok")

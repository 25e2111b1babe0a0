"""push / pull through real remotes (a bare repository by path, and `git daemon` over git://), with two
clones acting as two machines, each with its own runs folder; everything through the real CLI."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Dict, Iterator, List

import pytest

from exprag_plus import share

from conftest import ROOT, cli, git, read_lines, run_python

TRAIN = """\
from exprag_plus import Experiment
with Experiment("train") as exp:
    for step in range(3):
        exp.track({"step": step, "loss": 1.0 / (step + 1)})
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def bare(tmp_path: Path) -> str:
    path = tmp_path / "remote.git"
    git(tmp_path, "init", "-q", "--bare", str(path))
    return str(path)


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[str]:
    """`git daemon` serving a bare repository on 127.0.0.1 (receive-pack enabled), killed at teardown."""
    base = tmp_path / "served"
    base.mkdir()
    git(base, "init", "-q", "--bare", "shared.git")
    port = free_port()
    proc = subprocess.Popen(["git", "daemon", "--export-all", "--enable=receive-pack", f"--base-path={base}",
                             "--listen=127.0.0.1", f"--port={port}", "--reuseaddr", str(base)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 20
        while True:
            assert proc.poll() is None, f"git daemon exited: {proc.stderr.read().decode() if proc.stderr else ''}"
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "git daemon never accepted connections"
                time.sleep(0.05)
        yield f"git://127.0.0.1:{port}/shared.git"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # `git daemon` runs git-daemon as a child: killing git alone left it
        proc.wait(timeout=10)
        if proc.stderr:
            proc.stderr.close()


class Machine:
    """A clone with its own runs folder."""

    def __init__(self, path: Path, runs: Path) -> None:
        self.path, self.runs = path, runs
        self.env = {"PYTHONPATH": str(ROOT), "EXPRAG_PLUS_DIR": str(runs)}

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return cli(*args, cwd=self.path, env=self.env)

    def json(self, *args: str) -> Dict:
        p = self.cli(*args, "--json")
        assert p.returncode == 0, p.stderr
        return json.loads(p.stdout)

    def train(self) -> str:
        before = set(self.runs.glob("*.jsonl"))
        p = subprocess.run(["python", "train.py"], cwd=self.path, env={**os.environ, **self.env},
                           capture_output=True, text=True)
        assert p.returncode == 0, p.stderr
        (new,) = set(self.runs.glob("*.jsonl")) - before
        return new.stem

    def note(self, run_id: str, text: str) -> None:
        run_python(f"""
            from exprag_plus.experiment import append_record
            append_record({str(self.runs / (run_id + '.jsonl'))!r}, "note", {{"text": {text!r}}})
        """, cwd=self.path)

    def file(self, run_id: str) -> bytes:
        return (self.runs / f"{run_id}.jsonl").read_bytes()

    def user_state(self) -> Dict[str, object]:
        g = self.path / ".git"
        refs = git(self.path, "for-each-ref", "--format=%(refname) %(objectname)").splitlines()
        return {"index": (g / "index").read_bytes(), "HEAD": (g / "HEAD").read_bytes(),
                "config": (g / "config").read_bytes(), "fetch_head": (g / "FETCH_HEAD").exists(),
                "refs": [r for r in refs if not r.startswith("refs/exprag-plus/")],
                "status": git(self.path, "--no-optional-locks", "status", "--porcelain", "-uall"),
                "files": {p.name: p.read_bytes() for p in self.path.iterdir() if p.is_file()}}


def machines(tmp_path: Path, url: str) -> List[Machine]:
    a = tmp_path / "A"
    a.mkdir()
    git(a, "init", "-q", "-b", "main")
    (a / "train.py").write_text(TRAIN)
    git(a, "add", "-A")
    git(a, "commit", "-qm", "train script")
    git(a, "remote", "add", "origin", url)
    git(a, "push", "-q", "origin", "main")
    git(tmp_path, "clone", "-q", url, "B")
    return [Machine(a, tmp_path / "runs-A"), Machine(tmp_path / "B", tmp_path / "runs-B")]


@pytest.fixture(params=["path", "daemon"])
def remote(request: pytest.FixtureRequest) -> str:
    return request.getfixturevalue("bare" if request.param == "path" else "daemon")


def test_two_machines_end_to_end(tmp_path: Path, remote: str) -> None:
    a, b = machines(tmp_path, remote)
    dirty = TRAIN + "# tuned on machine A, never committed\n"
    (a.path / "train.py").write_text(dirty)
    rid = a.train()
    before_a = a.user_state()
    assert a.json("push") == {"remote": "origin", "dry_run": False, "pushed": [rid], "unchanged": 0, "merged": [],
                              "refused": [], "skipped": []}
    assert a.user_state() == before_a

    before_b = b.user_state()
    res = b.json("pull")
    assert res["pulled"] == [rid] and res["unchanged"] == 0 and not res["refused"]
    assert b.user_state() == before_b
    assert b.file(rid) == a.file(rid)
    assert b.json("show", rid)["status"] == "completed"

    # the dirty code came with the run: restore it on B while A's repository is out of reach
    hidden = tmp_path / "A-away"
    a.path.rename(hidden)
    try:
        p = b.cli("restore", rid)
        assert p.returncode == 0, p.stderr
        assert (Path(p.stdout.strip()) / "train.py").read_text() == dirty
    finally:
        hidden.rename(a.path)

    b.note(rid, "checked on B: the loss curve is fine")
    assert b.json("push")["pushed"] == [rid]
    res = a.json("pull")
    assert res["pulled"] == [rid] and not res["merged"]
    assert a.file(rid) == b.file(rid)
    assert read_lines(a.runs / f"{rid}.jsonl")[-1]["text"] == "checked on B: the loss curve is fine"

    # nothing changed: a second push contacts no remote at all (an unreachable URL still succeeds)
    for m in (a, b):
        git(m.path, "remote", "set-url", "origin", str(tmp_path / "nowhere.git"))
        assert m.json("push") == {"remote": "origin", "dry_run": False, "pushed": [], "unchanged": 1,
                                  "merged": [], "refused": [], "skipped": []}


def test_concurrent_pushes_of_one_run_lose_nothing(tmp_path: Path, daemon: str) -> None:
    a, b = machines(tmp_path, daemon)
    rid = a.train()
    a.json("push")
    b.json("pull")
    for round_ in range(3):
        a.note(rid, f"A{round_}")
        b.note(rid, f"B{round_}")
        procs = [subprocess.Popen([os.sys.executable, "-m", "exprag_plus", "push", "--json"], cwd=m.path,
                                  env={**os.environ, **m.env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True) for m in (a, b)]
        outs = [p.communicate(timeout=120) for p in procs]
        for p, (out, err) in zip(procs, outs):
            assert p.returncode == 0, err
            assert json.loads(out)["pushed"] == [rid]
    a.json("pull")
    b.json("pull")
    assert a.file(rid) == b.file(rid)
    texts = [r.get("text") for r in read_lines(a.runs / f"{rid}.jsonl") if r["type"] == "note"]
    assert sorted(texts) == sorted(f"{m}{i}" for m in "AB" for i in range(3))
    types = [r["type"] for r in read_lines(a.runs / f"{rid}.jsonl")]
    assert types[:5] == ["run_start", "track", "track", "track", "run_end"]


def test_a_rejected_push_fetches_merges_and_retries(tmp_path: Path, bare: str) -> None:
    a, b = machines(tmp_path, bare)
    rid = a.train()
    a.json("push")
    b.json("pull")
    a.note(rid, "from A")
    b.note(rid, "from B")
    a.json("push")
    res = b.json("push")
    assert res["pushed"] == [rid] and res["merged"] == [rid]
    assert [r.get("text") for r in read_lines(b.runs / f"{rid}.jsonl")][-2:] == ["from A", "from B"]
    a.json("pull")
    assert a.file(rid) == b.file(rid)
    log = git(b.path, "log", "--format=%P", "-1", f"refs/exprag-plus/runs/{rid}").split()
    assert len(log) == 2  # the merge commit has both machines' commits as parents
    pushed = subprocess.run(["git", "--git-dir", bare, "for-each-ref", "--format=%(refname)"],
                            capture_output=True, text=True).stdout.split()
    assert pushed == ["refs/exprag-plus/runs/" + rid, "refs/heads/main"]


def _craft(tmp_path: Path, remote: str, entries: Dict[str, bytes]) -> None:
    """Push hand-made run refs {ref id: file content} to the remote from a scratch repository."""
    scratch = tmp_path / "scratch"
    git(tmp_path, "init", "-q", str(scratch))
    for ref_id, data in entries.items():
        blob = subprocess.run(["git", "hash-object", "-w", "--stdin"], cwd=scratch, input=data,
                              capture_output=True, check=True).stdout.decode().strip()
        tree = subprocess.run(["git", "mktree"], cwd=scratch, input=f"100644 blob {blob}\t{ref_id}.jsonl\n",
                              capture_output=True, text=True, check=True).stdout.strip()
        commit = git(scratch, "commit-tree", tree, "-m", "crafted").strip()
        git(scratch, "push", "-q", remote, f"{commit}:refs/exprag-plus/runs/{ref_id}")


def test_malformed_or_mismatched_runs_are_refused_and_the_rest_come(tmp_path: Path, bare: str) -> None:
    a, b = machines(tmp_path, bare)
    rid = a.train()
    a.json("push")
    good = a.file(rid)
    other = "01900000-0000-7000-8000-000000000001"
    junk = "01900000-0000-7000-8000-000000000002"
    _craft(tmp_path, bare, {other: good, junk: b"this is not json\n", "not-a-run-id": good})
    p = b.cli("pull", "--json")
    assert p.returncode == 1
    res = json.loads(p.stdout)
    assert res["pulled"] == [rid]
    assert sorted(r["run_id"] for r in res["refused"]) == sorted([other, junk, "not-a-run-id"])
    errors = [l for l in p.stderr.splitlines() if "error" in l]
    assert len(errors) == 3 and any("names run" in l and other in l for l in errors)
    assert len(p.stderr.splitlines()) == 4  # one line each, and the summary
    assert b.file(rid) == good
    assert sorted(x.name for x in b.runs.glob("*.jsonl")) == [f"{rid}.jsonl"]
    # red team (trial 10): an empty file crashed pull (IndexError), and refused refs stayed in the local
    # namespace, so B's next push handed them on and everyone's pull broke
    empty = "01900000-0000-7000-8000-000000000003"
    _craft(tmp_path, bare, {empty: b"x"})
    p = b.cli("pull", "--json")
    assert p.returncode == 1 and "internal error" not in p.stderr
    assert any(r["run_id"] == empty and "holds no complete record" in r["reason"] for r in json.loads(p.stdout)["refused"])
    assert git(b.path, "for-each-ref", "--format=%(refname)", "refs/exprag-plus/runs/").split() == \
        [f"refs/exprag-plus/runs/{rid}"]


def test_pull_path_merges_a_copied_runs_folder(tmp_path: Path, bare: str) -> None:
    a, b = machines(tmp_path, bare)
    rid = a.train()
    copied = tmp_path / "from-cluster"
    shutil.copytree(a.runs, copied)
    a.note(rid, "written on A after the copy")
    Machine(a.path, copied).note(rid, "written on the cluster after the copy")
    (copied / "bad.jsonl").write_text("{}\n")
    p = a.cli("pull", str(copied), "--json")
    assert p.returncode == 1 and "bad.jsonl" in p.stderr
    res = json.loads(p.stdout)
    assert res["merged"] == [rid] and res["pulled"] == []
    notes = [r["text"] for r in read_lines(a.runs / f"{rid}.jsonl") if r["type"] == "note"]
    assert notes == ["written on A after the copy", "written on the cluster after the copy"]
    merged = a.file(rid)
    (copied / "bad.jsonl").unlink()
    assert a.json("pull", str(copied))["unchanged"] == 1 and a.file(rid) == merged
    # into an empty folder: the run arrives as is
    assert b.json("pull", str(copied))["pulled"] == [rid]
    assert b.file(rid) == (copied / f"{rid}.jsonl").read_bytes()


def test_a_live_run_is_not_replaced(tmp_path: Path, bare: str) -> None:
    a, b = machines(tmp_path, bare)
    live = subprocess.Popen([os.sys.executable, "-c", "import sys, time\nfrom exprag_plus import Experiment\n"
                             "exp = Experiment('live'); exp.track({'x': 1}); print(exp.run_id, flush=True)\n"
                             "sys.stdin.readline()"], cwd=a.path, env={**os.environ, **a.env},
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        rid = live.stdout.readline().strip()
        assert a.json("push")["pushed"] == [rid]
        b.json("pull")
        b.note(rid, "a remark while it runs")
        b.json("push")
        before = a.file(rid)
        p = a.cli("pull", "--json")
        assert p.returncode == 0 and "is running here" in p.stderr
        assert json.loads(p.stdout)["skipped"][0]["run_id"] == rid
        assert a.file(rid) == before
    finally:
        live.stdin.write("\n")
        live.stdin.close()
        live.wait(timeout=30)
    res = a.json("pull")
    assert res["merged"] == [rid]
    assert "a remark while it runs" in a.file(rid).decode()


def test_a_password_in_the_url_is_never_shown(tmp_path: Path, bare: str) -> None:
    a, _ = machines(tmp_path, bare)
    a.train()
    url = f"http://alice:s3cr3tpw@127.0.0.1:{free_port()}/repo.git"
    git(a.path, "remote", "add", "secret", url)
    for args in (("push", url), ("pull", url), ("push", "secret"), ("pull", "secret"), ("push", url, "--json")):
        p = a.cli(*args)
        assert p.returncode == 1, (args, p.stderr)
        assert "s3cr3tpw" not in p.stdout + p.stderr, args
        assert len(p.stderr.strip().splitlines()) == 1, p.stderr
    p = a.cli("push", url, "--dry-run", "--json")  # contacts nothing, so only our own output could leak it
    assert p.returncode == 0 and "s3cr3tpw" not in p.stdout + p.stderr
    assert json.loads(p.stdout)["remote"] == "http://***@127.0.0.1:" + url.rsplit(":", 1)[1]


def test_dry_runs_write_nothing(tmp_path: Path, bare: str) -> None:
    a, b = machines(tmp_path, bare)
    rid = a.train()
    p = b.cli("pull", "--dry-run")
    assert (p.returncode, p.stdout) == (0, "would have pulled 0 run(s) from origin; 0 unchanged\n")
    assert p.stderr == ("exprag-plus: origin holds no runs: they reach it when the machine that recorded them runs "
                        "`exprag-plus push`\n")
    refs = git(a.path, "for-each-ref")
    assert a.json("push", "--dry-run")["pushed"] == [rid]
    assert git(a.path, "for-each-ref") == refs
    assert subprocess.run(["git", "--git-dir", bare, "for-each-ref", "refs/exprag-plus"], capture_output=True,
                          text=True).stdout == ""
    a.json("push")
    assert b.json("pull", "--dry-run")["pulled"] == [rid]
    assert not b.runs.exists() or not list(b.runs.glob("*.jsonl"))


def test_gc_keeps_the_code_of_a_pushed_run(tmp_path: Path, bare: str) -> None:
    a, _ = machines(tmp_path, bare)
    (a.path / "train.py").write_text(TRAIN + "# dirty\n")
    rid = a.train()
    a.json("push", rid)
    (a.runs / f"{rid}.jsonl").unlink()
    a.train()  # gc refuses an empty runs folder: give it one unrelated run
    res = a.json("gc")
    assert res["deleted"] == []
    assert git(a.path, "for-each-ref", "--format=%(refname)", f"refs/exprag-plus/runs/{rid}").strip()
    assert git(a.path, "for-each-ref", "--format=%(refname)", f"refs/heads/run/{rid}").strip()


def test_merge_lines_is_a_union_in_time_order_and_keeps_supersets_byte_for_byte() -> None:
    def rec(seq: int, t: str, text: str = "") -> bytes:
        return json.dumps({"type": "note", "seq": seq, "time": t, "text": text}).encode() + b"\n"

    base = rec(0, "2026-01-01T00:00:00.000000Z") + rec(1, "2026-01-01T00:00:01.000000Z")
    left = base + rec(2, "2026-01-01T00:00:03.000000Z", "left")
    right = base + rec(2, "2026-01-01T00:00:02.000000Z", "right")
    merged = share.merge_lines(left, right)
    assert merged == share.merge_lines(right, left) == base + rec(2, "2026-01-01T00:00:02.000000Z", "right") \
        + rec(2, "2026-01-01T00:00:03.000000Z", "left")
    odd = rec(5, "2026-01-01T00:00:09.000000Z") + base  # out of order, but holds everything: kept as is
    assert share.merge_lines(odd, base) == odd == share.merge_lines(base, odd)
    assert share.split_torn(base + b'{"type":"tr') == (base, b'{"type":"tr')


def test_chosen_runs_and_a_second_remote(tmp_path: Path, bare: str) -> None:
    a, _ = machines(tmp_path, bare)
    first, second = a.train(), a.train()
    assert a.json("push", "origin", first[-8:])["pushed"] == [first]
    res = a.json("push")
    assert res["pushed"] == [second] and res["unchanged"] == 1
    other = tmp_path / "other.git"
    git(tmp_path, "init", "-q", "--bare", str(other))
    assert a.json("push", str(other))["pushed"] == []  # nothing changed since the last push
    assert a.json("push", str(other), "--all")["pushed"] == sorted([first, second])
    p = a.cli("push", "no-such-remote")
    assert p.returncode == 2 and "neither a git remote" in p.stderr


def test_the_tree_a_push_commits_is_known_without_git(tmp_path: Path, bare: str) -> None:
    """A push decides "unchanged" by computing the tree it would commit; it must be git's own tree id."""
    a, _ = machines(tmp_path, bare)
    plain, logged = a.train(), a.train()
    (a.runs / logged).mkdir(exist_ok=True)
    (a.runs / logged / "output.log").write_bytes(b"epoch 1\nepoch 2\n")
    assert sorted(a.json("push")["pushed"]) == sorted([plain, logged])
    algo = git(a.path, "rev-parse", "--show-object-format").strip()
    for rid, log in ((plain, None), (logged, b"epoch 1\nepoch 2\n")):
        tree = git(a.path, "rev-parse", f"refs/exprag-plus/runs/{rid}^{{tree}}").strip()
        assert share._tree_id(rid, a.file(rid), log, algo) == tree
        assert share._tree_id(rid, a.file(rid) + b"{}\n", log, algo) != tree


def test_a_push_with_nothing_changed_runs_three_git_commands(tmp_path: Path, bare: str) -> None:
    """No remote contact and no object reads: rev-parse, remote and one for-each-ref (a `git` on PATH
    that logs each command, then runs the real one)."""
    a, _ = machines(tmp_path, bare)
    for _ in range(3):
        a.train()
    a.json("push")
    log = tmp_path / "git.log"
    wrapper = tmp_path / "bin" / "git"
    wrapper.parent.mkdir()
    real = shutil.which("git")
    wrapper.write_text(f'#!/bin/sh\necho "$*" >> "{log}"\nexec "{real}" "$@"\n')
    wrapper.chmod(0o755)
    env = {**a.env, "PATH": f"{wrapper.parent}{os.pathsep}{os.environ['PATH']}"}
    p = cli("push", "--json", cwd=a.path, env=env)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["unchanged"] == 3
    commands = [next(w for w in line.split() if not w.startswith("-") and "=" not in w and "/" not in w)
                for line in log.read_text().splitlines()]
    assert commands[0] == "rev-parse" and sorted(commands[1:]) == ["for-each-ref", "remote"], log.read_text()


def test_a_push_writes_only_run_refs(tmp_path: Path, bare: str) -> None:
    """Commits are built on a scratch branch that fast-import never writes; the run refs move in one
    transaction from the commits they were built on."""
    a, _ = machines(tmp_path, bare)
    first = a.train()
    a.json("push")
    a.note(first, "more")
    second = a.train()
    before = git(a.path, "rev-parse", f"refs/exprag-plus/runs/{first}").strip()
    assert sorted(a.json("push")["pushed"]) == sorted([first, second])
    refs = git(a.path, "for-each-ref", "--format=%(refname)", "refs/exprag-plus/").split()
    assert refs == sorted(f"refs/exprag-plus/runs/{r}" for r in (first, second))
    assert git(a.path, "rev-parse", f"refs/exprag-plus/runs/{first}^1").strip() == before
    remote_refs = subprocess.run(["git", "--git-dir", bare, "for-each-ref", "--format=%(refname)"],
                                 capture_output=True, text=True).stdout.split()
    assert [r for r in remote_refs if r.startswith("refs/exprag-plus/")] == refs


def test_a_run_file_whose_identity_is_unchanged_is_not_read(tmp_path: Path, bare: str) -> None:
    """A push stamps each run commit with the identity (size, mtime, inode, device) its files had; the
    same identity and ref tree later mean nothing to send, without reading. Any change of identity
    (an append, an atomic replace, a rewrite) reads the file again and sends what changed."""
    a, _ = machines(tmp_path, bare)
    rid = a.train()
    a.json("push")
    assert "(stamp " in git(a.path, "log", "-1", "--format=%s", f"refs/exprag-plus/runs/{rid}")
    path = a.runs / f"{rid}.jsonl"
    st = path.stat()
    data = path.read_bytes()
    forged = data.replace(b'"loss"', b'"LOSS"')
    assert len(forged) == len(data) and forged != data
    with open(path, "r+b") as f:  # same size, same inode, and the old time put back: the same identity
        f.write(forged)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert a.json("push")["unchanged"] == 1
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1000))  # now it differs: read, and sent
    assert a.json("push")["pushed"] == [rid]
    pushed = git(a.path, "show", f"refs/exprag-plus/runs/{rid}:{rid}.jsonl").encode()
    assert set(forged.splitlines()) <= set(pushed.splitlines())  # the union with what the ref held
    a.note(rid, "after")  # an append changes the size
    assert a.json("push")["pushed"] == [rid]
    assert a.json("push")["unchanged"] == 1


def test_restore_and_replay_on_a_pulled_run_use_the_clone_asked_from(tmp_path: Path, bare: str) -> None:
    """Two clones on one disk (a shared home on a cluster): B pulled A's run; restoring or replaying it
    from B makes a worktree of B, never of A, whose path the run recorded and which still exists."""
    a, b = machines(tmp_path, bare)
    (a.path / "train.py").write_text(TRAIN + "# tuned on A, never committed\n")
    rid = a.train()
    assert a.json("push")["pushed"] == [rid]
    assert b.json("pull")["pulled"] == [rid]
    a_worktrees = git(a.path, "worktree", "list", "--porcelain")

    p = b.cli("restore", rid)
    assert p.returncode == 0, p.stderr
    path = Path(p.stdout.strip())
    assert str(path).startswith(str(b.path / ".git")), path
    assert str(path) in git(b.path, "worktree", "list", "--porcelain")
    res = b.json("replay", rid)
    assert res["exit_code"] == 0 and res["worktree"].startswith(str(b.path / ".git"))
    assert git(a.path, "worktree", "list", "--porcelain") == a_worktrees


def test_a_symlinked_output_log_is_never_pushed_or_pulled_through(tmp_path: Path, bare: str) -> None:
    """Red team (trial 10): an output.log replaced by a symlink sent its target's content to the remote on
    push, and `pull <folder>` copied a linked file's content in."""
    a, b = machines(tmp_path, bare)
    victim = tmp_path / "victim.txt"
    victim.write_text("private to this machine\n")
    p = a.cli("run", "--", "echo", "hello")
    assert p.returncode == 0, p.stderr
    (rid,) = [x.stem for x in a.runs.glob("*.jsonl")]
    log = a.runs / rid / "output.log"
    log.unlink()
    log.symlink_to(victim)
    assert a.cli("push").returncode == 0
    assert b.cli("pull").returncode == 0
    assert not (b.runs / rid / "output.log").exists() or "private" not in (b.runs / rid / "output.log").read_text()
    everything = subprocess.run(["git", "log", "--all", "-p", "--format=%H"], cwd=bare, capture_output=True).stdout
    assert b"private to this machine" not in everything
    c = tmp_path / "runs-C"
    assert a.cli("pull", str(a.runs), "--root", str(c)).returncode in (0, 1)
    assert not (c / rid / "output.log").exists() or "private" not in (c / rid / "output.log").read_text()

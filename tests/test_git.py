"""exprag_plus.git against real git in temporary repositories (no mocks).

Every test runs with an isolated git configuration (HOME and GIT_CONFIG_GLOBAL at an empty file,
GIT_CONFIG_NOSYSTEM=1, no identity in the environment), so nothing depends on the machine's config.
Set-up commands pass their identity with ``-c`` and never run hooks; the library must not run them either.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess

import pytest

from exprag_plus import git as G

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")

SETUP = [
    "--no-optional-locks",  # our own status calls must not refresh the index we compare
    "-c", "user.name=Setup", "-c", "user.email=setup@example.invalid",
    "-c", "commit.gpgsign=false", "-c", "init.defaultBranch=main",
    "-c", "core.hooksPath=/dev/null", "-c", "protocol.file.allow=always",
    "-c", "advice.detachedHead=false",
]
HOOKS = ("pre-commit", "post-commit", "reference-transaction", "post-checkout", "post-index-change",
         "pre-auto-gc", "commit-msg", "prepare-commit-msg")
FALLBACK = "exprag-plus <exprag-plus@localhost>"
RUN = "0190f5d2-7c3a-7b4e-9a51-3c2d1e0f4a5b"


@pytest.fixture(autouse=True)
def isolated_git(tmp_path_factory, monkeypatch):
    home = tmp_path_factory.mktemp("home")
    empty = home / "empty-gitconfig"
    empty.write_text("")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / "xdg"))
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(empty))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path_factory.getbasetemp()))
    for var in ("GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL",
                "EMAIL", "GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_CONFIG_PARAMETERS",
                "GIT_CONFIG_COUNT", "GIT_OBJECT_DIRECTORY", "GIT_COMMON_DIR", "GIT_NAMESPACE"):
        monkeypatch.delenv(var, raising=False)


def git(cwd, *args, check=True, input=None) -> str:
    p = subprocess.run(["git", *SETUP, *args], cwd=str(cwd), input=input, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, check=False)
    if check and p.returncode:
        raise AssertionError(f"git {args} failed: {p.stderr.decode()}")
    return p.stdout.decode("utf-8", "surrogateescape").rstrip("\n")


def gitb(cwd, *args) -> bytes:
    return subprocess.run(["git", *SETUP, *args], cwd=str(cwd), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, check=True).stdout


def read(path, binary=False):
    with open(str(path), "rb" if binary else "r") as fh:
        return fh.read()


def write(path, data, mode=None):
    path = str(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb" if isinstance(data, bytes) else "w") as fh:
        fh.write(data)
    if mode is not None:
        os.chmod(path, mode)


def make_repo(path, files=None) -> str:
    os.makedirs(str(path), exist_ok=True)
    git(path, "init", "-q")
    for name, data in (files or {"README.md": "hello\n"}).items():
        write(os.path.join(str(path), name), data)
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "initial")
    return str(path)


def install_hooks(repo) -> str:
    common = os.path.join(str(repo), git(repo, "rev-parse", "--git-common-dir"))
    canary = os.path.join(os.path.dirname(os.path.abspath(common)), "HOOK-CANARY")
    hooks = os.path.join(common, "hooks")
    os.makedirs(hooks, exist_ok=True)
    for name in HOOKS:
        write(os.path.join(hooks, name), f"#!/bin/sh\necho {name} >> '{canary}'\nexit 1\n", 0o755)
    return canary


def tree_files(root, skip=()) -> dict:
    """{relative path: (kind, content, executable)} for every file under root (no .git, no skip)."""
    out = {}
    root = str(root)
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        dirnames[:] = [d for d in dirnames if d != ".git"
                       and os.path.normpath(os.path.join(rel_dir, d)) not in skip]
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            rel = os.path.normpath(os.path.join(rel_dir, name))
            if rel in skip or name == ".git":
                continue
            full = os.path.join(dirpath, name)
            st = os.lstat(full)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(full), False)
            else:
                out[rel] = ("file", read(full, True), bool(st.st_mode & 0o100))
    return out


def user_state(repo) -> dict:
    """Everything a snapshot must leave alone."""
    repo = str(repo)
    git_dir = git(repo, "rev-parse", "--absolute-git-dir")
    common = os.path.abspath(os.path.join(repo, git(repo, "rev-parse", "--git-common-dir")))
    index = os.path.join(repo, git(repo, "rev-parse", "--git-path", "index"))
    hooks = os.path.join(common, "hooks")
    files = {}
    for dirpath, dirnames, filenames in os.walk(repo):
        dirnames[:] = [d for d in dirnames if d != ".git"]
        for name in filenames + dirnames:
            full = os.path.join(dirpath, name)
            st = os.lstat(full)
            files[os.path.relpath(full, repo)] = (st.st_mode, st.st_size, st.st_mtime_ns, st.st_ino)
    refs = [r for r in git(repo, "for-each-ref", "--format=%(refname) %(objectname)").splitlines()
            if not r.startswith((G.RUN_REF_PREFIX, "refs/exprag-plus/"))]
    return {
        "index": read(index, True) if os.path.exists(index) else None,
        "HEAD file": read(os.path.join(git_dir, "HEAD"), True),
        "HEAD": git(repo, "rev-parse", "-q", "--verify", "HEAD", check=False),
        "symref": git(repo, "symbolic-ref", "-q", "HEAD", check=False),
        "refs": refs,
        "stash": git(repo, "stash", "list"),
        "config": git(repo, "config", "--list", "--local"),
        "hooks": {n: read(os.path.join(hooks, n), True) for n in sorted(os.listdir(hooks))}
        if os.path.isdir(hooks) else None,
        "status": gitb(repo, "status", "--porcelain=v1", "-z", "--untracked-files=all", "--ignored"),
        "files": files,
        # (a first ref update may create logs/ for the snapshot ref's reflog)
        "git dir": sorted(set(os.listdir(git_dir)) - {"logs"}),
        "common dir": sorted(set(os.listdir(common)) - {"logs"}),
    }


def has_object(repo, oid) -> bool:
    return subprocess.run(["git", "cat-file", "-e", oid], cwd=str(repo), stderr=subprocess.DEVNULL
                          ).returncode == 0


def parents(repo, commit) -> list:
    return git(repo, "rev-list", "--parents", "-n", "1", commit).split()[1:]


def author(repo, commit) -> str:
    return git(repo, "log", "-1", "--format=%an <%ae>|%cn <%ce>", commit)


def ls_tree(repo, rev) -> dict:
    out = {}
    for rec in gitb(repo, "ls-tree", "-r", "-z", rev).split(b"\0"):
        if rec:
            meta, _, path = rec.partition(b"\t")
            mode, typ, oid = meta.decode().split()
            out[os.fsdecode(path)] = (mode, typ, oid)
    return out


def capture(cwd, run_id=RUN, runs_dir=None, **kw):
    if runs_dir is None:
        runs_dir = os.path.join(str(cwd), ".runs")
    rec, err = G.capture_state(str(cwd), run_id, str(runs_dir), **kw)
    return rec, err


# ------------------------------------------------------------------------------------------------
# the full dirty-tree case


@pytest.fixture
def messy(tmp_path):
    """A repository with one of every kind of change, hooks that must not run, and a small size cap."""
    repo = make_repo(tmp_path / "repo", {
        ".gitignore": "*.log\nbuild/\n",
        ".gitattributes": "*.crlf text\n",
        "keep.txt": "unchanged\n",
        "mod.txt": "v1\n",
        "del.txt": "to delete\n",
        "staged_del.txt": "staged deletion\n",
        "rm_cached.txt": "untracked again\n",
        "old_name.txt": "renamed content that is long enough for rename detection\n",
        "exec.sh": "#!/bin/sh\necho hi\n",
        "staged_mod.txt": "v1\n",
        "dir with space/ünïcødé файл.txt": "uni v1\n",
        "file_to_link": "was a file\n",
        "file_to_dir": "was a file\n",
        "dir_to_file/inner.txt": "was in a dir\n",
        "added_deleted_base.txt": "x\n",
        "deep/a/b/c/d.txt": "deep v1\n",
        "norm.crlf": "line1\nline2\n",
    })
    os.symlink("keep.txt", os.path.join(repo, "link_changed"))
    write(os.path.join(repo, "tracked.log"), "tracked though ignored v1\n")
    git(repo, "add", "-f", "tracked.log", "link_changed")
    git(repo, "commit", "-q", "-m", "more")
    r = lambda *p: os.path.join(repo, *p)  # noqa: E731
    write(r("mod.txt"), "v2\n")
    os.unlink(r("del.txt"))
    git(repo, "rm", "-q", "staged_del.txt")
    git(repo, "rm", "-q", "--cached", "rm_cached.txt")
    git(repo, "mv", "old_name.txt", "new_name.txt")
    os.chmod(r("exec.sh"), 0o755)
    write(r("staged_mod.txt"), "v2 staged\n")
    git(repo, "add", "staged_mod.txt")
    write(r("staged_mod.txt"), "v3 on disk\n")
    write(r("dir with space/ünïcødé файл.txt"), "uni v2\n")
    write(r("new dir/ný file.txt"), "new unicode file\n")
    write(r('"quoted.txt'), "starts with a quote\n")
    write(r("line\nbreak.txt"), "newline in the name\n")
    write(r("tab\tname.txt"), "tab in the name\n")
    os.symlink("mod.txt", r("link_new"))
    os.unlink(r("link_changed"))
    os.symlink("mod.txt", r("link_changed"))
    os.unlink(r("file_to_link"))
    os.symlink("keep.txt", r("file_to_link"))
    os.unlink(r("file_to_dir"))
    write(r("file_to_dir/now.txt"), "now a dir\n")
    shutil.rmtree(r("dir_to_file"))
    write(r("dir_to_file"), "now a file\n")
    write(r("added_then_deleted.txt"), "gone\n")
    git(repo, "add", "added_then_deleted.txt")
    os.unlink(r("added_then_deleted.txt"))
    write(r("deep/a/b/c/d.txt"), "deep v2\n")
    write(r("deep/a/b/new/e.txt"), "deep new\n")
    write(r("tracked.log"), "tracked though ignored v2\n")
    write(r("debug.log"), "ignored\n")
    write(r("build/out.bin"), b"\0ignored")
    write(r("big.bin"), b"B" * 200)
    write(r("small.bin"), b"S" * 100)
    write(r("run.sh"), "#!/bin/sh\n", 0o755)
    write(r("crlf.crlf"), b"a\r\nb\r\n")
    write(r("norm.crlf"), b"line1\r\nline2\r\nline3\r\n")
    write(r(".runs/0190.jsonl"), '{"type": "run_start"}\n')  # no .gitignore inside: must still stay out
    return repo


EXCLUDED = {"debug.log", "build", "big.bin", ".runs"}


def test_dirty_snapshot_holds_disk_content_and_touches_nothing(messy):
    repo = messy
    canary = install_hooks(repo)
    head = git(repo, "rev-parse", "HEAD")
    before = user_state(repo)
    rec, err = capture(repo, size_cap=100)
    after = user_state(repo)
    assert err is None, err
    assert before == after
    assert not os.path.exists(canary)

    assert rec["dirty"] is True
    assert rec["branch"] == rec["snapshot_branch"] == "run/" + RUN
    assert rec["base_commit"] == head
    assert rec["toplevel"] == os.path.realpath(repo) and rec["subdir"] == ""
    commit = rec["commit"]
    assert git(repo, "rev-parse", "refs/heads/run/" + RUN) == commit
    assert parents(repo, commit) == [head]
    assert author(repo, commit) == f"{FALLBACK}|{FALLBACK}"
    msg = git(repo, "log", "-1", "--format=%B", commit)
    assert RUN in msg and head in msg and "main" in msg

    status = rec["status"]
    for line in (" M mod.txt", " D del.txt", "D  staged_del.txt", "D  rm_cached.txt",
                 "?? rm_cached.txt", "R  old_name.txt -> new_name.txt", " M exec.sh",
                 "MM staged_mod.txt", " M dir with space/ünïcødé файл.txt",
                 "?? new dir/ný file.txt", '?? "quoted.txt', "?? line\nbreak.txt",
                 " T file_to_link", "AD added_then_deleted.txt", "?? big.bin", "?? link_new"):
        assert line in status, (line, status)
    assert not any(".runs" in s or "debug.log" in s or "build/" in s for s in status)
    assert rec["skipped"] == [{"path": "big.bin",
                               "reason": "untracked file of 200 bytes is over the size cap of 100 "
                                         "bytes; not included"}]

    tree = ls_tree(repo, commit)
    assert tree["exec.sh"][0] == "100755" and tree["run.sh"][0] == "100755"
    assert tree["mod.txt"][0] == "100644"
    for link in ("link_new", "link_changed", "file_to_link"):
        assert tree[link][0] == "120000"
    assert git(repo, "cat-file", "blob", tree["link_new"][2]) == "mod.txt"
    assert git(repo, "cat-file", "blob", tree["staged_mod.txt"][2]) == "v3 on disk"
    # filters apply as with `git add`: the CRLF files are stored normalized
    assert gitb(repo, "cat-file", "blob", tree["crlf.crlf"][2]) == b"a\nb\n"
    assert gitb(repo, "cat-file", "blob", tree["norm.crlf"][2]) == b"line1\nline2\nline3\n"
    for gone in ("del.txt", "staged_del.txt", "old_name.txt", "added_then_deleted.txt",
                 "dir_to_file/inner.txt", "big.bin", "debug.log", "build/out.bin", ".runs/0190.jsonl"):
        assert gone not in tree
    # never hashed: the big untracked file and the run file
    for data in (b"B" * 200, b'{"type": "run_start"}\n'):
        oid = subprocess.run(["git", "hash-object", "--stdin"], input=data, cwd=repo,
                             stdout=subprocess.PIPE, check=True).stdout.decode().strip()
        assert not has_object(repo, oid)

    # the snapshot's files, checked out elsewhere, equal the disk byte for byte (CRLF files aside:
    # they are stored normalized, as `git add` stores them)
    wt = G.add_worktree(repo, commit)
    assert not os.path.exists(canary)
    skip = EXCLUDED | {"crlf.crlf", "norm.crlf"}
    assert tree_files(wt, skip) == tree_files(repo, skip)
    assert user_state(repo)["index"] == before["index"]

    # the temporary-index and `git add -A` reference methods build the same tree
    for k, method in enumerate(("index", "add")):
        rec2, err2 = G._capture_state(repo, f"{RUN}-{k}", os.path.join(repo, ".runs"),
                                      size_cap=100, snapshot=True, method=method)
        assert err2 is None, err2
        assert git(repo, "rev-parse", rec2["commit"] + "^{tree}") == git(repo, "rev-parse",
                                                                          commit + "^{tree}")
    left = set(user_state(repo)["git dir"]) - set(before["git dir"])
    assert left == {G.WORKTREES_DIRNAME, "worktrees"}  # from add_worktree; no temporary index
    assert not os.path.exists(canary)


def test_clean_tree_records_head_and_branch(tmp_path):
    repo = make_repo(tmp_path / "r", {".gitignore": "*.ckpt\n", "train.py": "print()\n"})
    write(os.path.join(repo, ".runs", "x.jsonl"), "{}\n")  # run files never make a tree dirty
    write(os.path.join(repo, "model.ckpt"), b"ignored")
    head = git(repo, "rev-parse", "HEAD")
    before = user_state(repo)
    rec, err = capture(repo)
    assert err is None
    assert rec == {"commit": head, "branch": "main", "dirty": False, "status": [], "base_commit": head,
                   "snapshot_branch": None, "skipped": [], "toplevel": os.path.realpath(repo),
                   "subdir": ""}
    assert user_state(repo) == before
    assert G.run_branches(repo) == []


def test_unborn_head(tmp_path):
    repo = str(tmp_path / "r")
    os.makedirs(repo)
    git(repo, "init", "-q")
    rec, err = capture(repo)
    assert err is None
    assert rec["commit"] is None and rec["base_commit"] is None and rec["dirty"] is False
    assert rec["branch"] == "main"

    write(os.path.join(repo, "staged.py"), "print(1)\n")
    git(repo, "add", "staged.py")
    write(os.path.join(repo, "sub", "untracked.py"), "print(2)\n")
    before = user_state(repo)
    rec, err = capture(repo)
    assert err is None
    assert user_state(repo) == before
    assert rec["base_commit"] is None and rec["dirty"] is True
    assert rec["branch"] == "run/" + RUN
    assert parents(repo, rec["commit"]) == []
    assert set(ls_tree(repo, rec["commit"])) == {"staged.py", "sub/untracked.py"}
    assert git(repo, "symbolic-ref", "HEAD") == "refs/heads/main"
    assert git(repo, "rev-parse", "-q", "--verify", "HEAD", check=False) == ""


def test_detached_head(tmp_path):
    repo = make_repo(tmp_path / "r")
    write(os.path.join(repo, "b.txt"), "b\n")
    git(repo, "add", "b.txt")
    git(repo, "commit", "-q", "-m", "second")
    first = git(repo, "rev-parse", "HEAD~1")
    git(repo, "checkout", "-q", "--detach", first)
    rec, err = capture(repo)
    assert err is None
    assert rec["commit"] == first and rec["branch"] is None and rec["dirty"] is False

    write(os.path.join(repo, "README.md"), "changed\n")
    before = user_state(repo)
    rec, err = capture(repo)
    assert err is None and user_state(repo) == before
    assert rec["branch"] == "run/" + RUN and rec["base_commit"] == first
    assert parents(repo, rec["commit"]) == [first]
    assert git(repo, "rev-parse", "HEAD") == first
    assert git(repo, "symbolic-ref", "-q", "HEAD", check=False) == ""


def test_linked_worktree(tmp_path):
    repo = make_repo(tmp_path / "main", {"a.txt": "a\n"})
    wt = str(tmp_path / "wt")
    git(repo, "worktree", "add", "-q", "-b", "feature", wt)
    write(os.path.join(wt, "a.txt"), "changed in the worktree\n")
    write(os.path.join(wt, "new.txt"), "new\n")
    canary = install_hooks(repo)
    before_main, before_wt = user_state(repo), user_state(wt)
    rec, err = capture(wt)
    assert err is None
    assert (user_state(repo), user_state(wt)) == (before_main, before_wt)
    assert not os.path.exists(canary)
    assert rec["toplevel"] == os.path.realpath(wt)
    assert rec["base_commit"] == git(wt, "rev-parse", "HEAD")
    assert git(repo, "rev-parse", "run/" + RUN) == rec["commit"]  # refs are shared
    assert git(repo, "show", f"{rec['commit']}:a.txt") == "changed in the worktree"
    assert "new.txt" in ls_tree(repo, rec["commit"])


def test_subdirectory_cwd(tmp_path):
    repo = make_repo(tmp_path / "r", {"top.txt": "t\n", "sub/deeper/script.py": "x = 1\n"})
    write(os.path.join(repo, "top.txt"), "changed at the top\n")
    cwd = os.path.join(repo, "sub", "deeper")
    rec, err = capture(cwd, runs_dir=os.path.join(repo, ".runs"))
    assert err is None
    assert rec["toplevel"] == os.path.realpath(repo)
    assert rec["subdir"] == "sub/deeper"
    assert rec["status"] == [" M top.txt"]
    assert git(repo, "show", rec["commit"] + ":top.txt") == "changed at the top"
    assert G.toplevel(cwd) == os.path.realpath(repo)


def test_identity_fallback_configured_and_broken_gpg(tmp_path):
    repo = make_repo(tmp_path / "r")
    write(os.path.join(repo, "README.md"), "dirty\n")
    rec, err = capture(repo, run_id="id-fallback")
    assert err is None and author(repo, rec["commit"]) == f"{FALLBACK}|{FALLBACK}"

    git(repo, "config", "user.name", "Ada Lovelace")
    git(repo, "config", "user.email", "ada@example.invalid")
    git(repo, "config", "commit.gpgsign", "true")
    git(repo, "config", "gpg.program", str(tmp_path / "no-such-gpg"))
    before = user_state(repo)
    rec, err = capture(repo, run_id="id-configured")
    assert err is None, err
    assert user_state(repo) == before
    ident = "Ada Lovelace <ada@example.invalid>"
    assert author(repo, rec["commit"]) == f"{ident}|{ident}"
    assert "gpgsig" not in git(repo, "cat-file", "commit", rec["commit"])


def test_run_branch_blocks_namespace_fallback_ref(tmp_path):
    repo = make_repo(tmp_path / "r")
    git(repo, "branch", "run")
    write(os.path.join(repo, "README.md"), "dirty\n")
    rec, err = capture(repo)
    assert err is None, err
    ref = G.FALLBACK_REF_PREFIX + RUN
    assert rec["branch"] == rec["snapshot_branch"] == ref
    assert git(repo, "rev-parse", ref) == rec["commit"]
    assert git(repo, "rev-parse", "run") == git(repo, "rev-parse", "HEAD")
    assert G.run_branches(repo) == [(ref, RUN)]
    G.delete_ref(repo, ref)
    assert G.run_branches(repo) == []


def test_forced_failure_is_truthful_and_leaves_nothing(tmp_path):
    repo = make_repo(tmp_path / "r")
    git(repo, "branch", "run")  # blocks refs/heads/run/<id> ...
    git_dir = git(repo, "rev-parse", "--absolute-git-dir")
    write(os.path.join(git_dir, "refs", "exprag-plus"), "not a directory\n")  # ... and the fallback
    write(os.path.join(repo, "README.md"), "dirty\n")
    head = git(repo, "rev-parse", "HEAD")
    before = user_state(repo)
    rec, err = capture(repo)
    assert user_state(repo) == before
    assert rec["commit"] is None and rec["branch"] is None and rec["snapshot_branch"] is None
    assert rec["base_commit"] == head and rec["dirty"] is True
    assert rec["status"] == [" M README.md"]
    assert err and "snapshot failed" in err and "\n" not in err

    # the temporary-index method removes its index when git fails inside it
    info = G._locate(repo)
    with pytest.raises(G.GitError):
        G._tree_via_temp_index(info, head, {b"x.txt": (0o100644, "f" * 40)})
    assert user_state(repo)["git dir"] == before["git dir"]


def test_broken_head_ref(tmp_path):
    repo = make_repo(tmp_path / "r")
    write(os.path.join(repo, "README.md"), "dirty\n")
    git_dir = git(repo, "rev-parse", "--absolute-git-dir")
    write(os.path.join(git_dir, "refs", "heads", "main"), "garbage\n")
    rec, err = capture(repo)
    assert rec["commit"] is None and rec["branch"] is None and rec["base_commit"] is None
    assert rec["dirty"] is True and "HEAD" in err
    write(os.path.join(git_dir, "refs", "heads", "main"), "1" * 40 + "\n")  # missing object
    rec, err = capture(repo)
    assert rec["commit"] is None and rec["base_commit"] is None and err
    assert G.run_branches(repo) == []


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="root ignores directory permissions")
def test_read_only_object_store(tmp_path):
    repo = make_repo(tmp_path / "r")
    write(os.path.join(repo, "README.md"), "dirty and new content\n")
    objects = os.path.join(git(repo, "rev-parse", "--absolute-git-dir"), "objects")
    modes = {}
    for dirpath, dirnames, _ in os.walk(objects):
        for d in [dirpath] + [os.path.join(dirpath, x) for x in dirnames]:
            modes[d] = os.stat(d).st_mode
    try:
        for d in modes:
            os.chmod(d, 0o555)
        rec, err = capture(repo)
    finally:
        for d, m in modes.items():
            os.chmod(d, m)
    assert rec["commit"] is None and rec["base_commit"] == git(repo, "rev-parse", "HEAD")
    assert err and "snapshot failed" in err


def test_runs_folder_stays_out_through_symlinks(tmp_path):
    repo = make_repo(tmp_path / "r")
    write(os.path.join(repo, "data", "runs", "a.jsonl"), "{}\n")
    os.symlink("data", os.path.join(repo, "alias"))
    git(repo, "add", "alias")
    git(repo, "commit", "-q", "-m", "alias")
    rec, err = capture(repo, runs_dir=os.path.join(repo, "alias", "runs"))
    assert err is None and rec["dirty"] is False and rec["commit"] == git(repo, "rev-parse", "HEAD")

    outside = tmp_path / "elsewhere" / "runs"
    write(str(outside / "b.jsonl"), "{}\n")
    os.symlink(str(outside), os.path.join(repo, "runs_link"))
    write(os.path.join(repo, "README.md"), "dirty\n")
    rec, err = capture(repo, runs_dir=os.path.join(repo, "runs_link"))
    assert err is None
    assert rec["status"] == [" M README.md", "?? data/runs/a.jsonl"]  # that one is not the runs folder
    tree = ls_tree(repo, rec["commit"])
    assert "runs_link" not in tree and "data/runs/a.jsonl" in tree


def test_size_cap_applies_to_untracked_only(tmp_path):
    repo = make_repo(tmp_path / "r", {"tracked.bin": "t"})
    write(os.path.join(repo, "tracked.bin"), b"T" * 500)
    write(os.path.join(repo, "huge.ckpt"), b"H" * 501)
    write(os.path.join(repo, "exact.bin"), b"E" * 64)
    rec, err = capture(repo, size_cap=64)
    assert err is None
    tree = ls_tree(repo, rec["commit"])
    assert "tracked.bin" in tree and "exact.bin" in tree and "huge.ckpt" not in tree
    (skip,) = rec["skipped"]
    assert skip["path"] == "huge.ckpt" and "501" in skip["reason"] and "64" in skip["reason"]
    assert "?? huge.ckpt" in rec["status"]


def test_snapshot_disabled_records_no_commit(tmp_path):
    repo = make_repo(tmp_path / "r")
    write(os.path.join(repo, "README.md"), "dirty\n")
    rec, err = capture(repo, snapshot=False)
    assert rec["commit"] is None and rec["branch"] is None and rec["snapshot_branch"] is None
    assert rec["base_commit"] == git(repo, "rev-parse", "HEAD") and rec["dirty"] is True
    assert "disabled" in err
    assert G.run_branches(repo) == []


def test_submodule_gitlink_is_the_submodule_head(tmp_path):
    lib = make_repo(tmp_path / "lib", {"lib.py": "v = 1\n"})
    repo = make_repo(tmp_path / "super", {"main.py": "import lib\n"})
    git(repo, "submodule", "add", "-q", lib, "libs/lib")
    git(repo, "commit", "-q", "-m", "submodule")
    sub = os.path.join(repo, "libs", "lib")
    write(os.path.join(sub, "lib.py"), "v = 2\n")
    git(sub, "commit", "-q", "-am", "bump")
    write(os.path.join(sub, "scratch.txt"), "untracked inside the submodule\n")
    new_head = git(sub, "rev-parse", "HEAD")
    before = user_state(repo)
    rec, err = capture(repo)
    assert err is None, err
    assert user_state(repo) == before
    tree = ls_tree(repo, rec["commit"])
    assert tree["libs/lib"] == ("160000", "commit", new_head)
    assert not any(p.startswith("libs/lib/") for p in tree)


def test_untracked_nested_repository_is_listed_not_embedded(tmp_path):
    repo = make_repo(tmp_path / "r")
    make_repo(os.path.join(repo, "vendored"))
    rec, err = capture(repo)
    assert err is None and rec["dirty"] is True
    assert rec["skipped"][0]["path"] == "vendored"
    assert "vendored" not in ls_tree(repo, rec["commit"])


def test_outside_repository_and_bad_input(tmp_path):
    plain = tmp_path / "plain"
    plain.mkdir()
    rec, err = capture(plain)
    assert rec is None and "not inside a git work tree" in err
    assert G.toplevel(str(plain)) is None
    assert capture(tmp_path / "missing")[0] is None
    assert G.capture_state(None, RUN, "x")[0] is None  # type: ignore[arg-type]
    repo = make_repo(tmp_path / "r")
    write(os.path.join(repo, "README.md"), "dirty\n")
    rec, err = capture(repo, run_id="bad id/..")
    assert rec["commit"] is None and "run id" in err


def test_git_missing(tmp_path, monkeypatch):
    repo = make_repo(tmp_path / "r")
    empty_bin = tmp_path / "empty-bin"
    empty_bin.mkdir()
    monkeypatch.setenv("PATH", str(empty_bin))
    rec, err = capture(repo)
    assert rec is None and "git executable not found" in err
    assert G.toplevel(repo) is None
    assert G.commit_exists(repo, "HEAD") is False
    with pytest.raises(G.GitError, match="git executable not found"):
        G.run_branches(repo)


# ------------------------------------------------------------------------------------------------
# diff, worktrees, checkout, refs


def test_diff_between_commits_and_against_working_tree(tmp_path):
    repo = make_repo(tmp_path / "r", {".gitignore": "*.log\n", "a.py": "x = 1\n", "b.py": "y = 1\n"})
    c1 = git(repo, "rev-parse", "HEAD")
    write(os.path.join(repo, "a.py"), "x = 2\n")
    git(repo, "commit", "-q", "-am", "two")
    c2 = git(repo, "rev-parse", "HEAD")
    d = G.diff(repo, c1, c2)
    assert "diff --git a/a.py b/a.py" in d and "-x = 1" in d and "+x = 2" in d
    assert "1 file changed" in G.diff(repo, c1, c2, stat=True)
    assert G.diff(repo, c1, c2, paths=["b.py"]) == ""

    write(os.path.join(repo, "b.py"), "y = 2\n")
    write(os.path.join(repo, "new file ü.py"), "z = 3\n")
    write(os.path.join(repo, "noise.log"), "ignored\n")
    write(os.path.join(repo, "big.dat"), b"D" * 300)
    before = user_state(repo)
    d = G.diff(repo, c2, None, size_cap=100)
    assert user_state(repo) == before
    assert G.run_branches(repo) == []
    assert "+y = 2" in d and "+z = 3" in d and "new file ü.py" in d
    assert "noise.log" not in d
    assert d.startswith("# exprag-plus: not in the diff: big.dat")
    assert "a.py" not in G.diff(repo, c2, None, paths=["b.py"])
    with pytest.raises(G.GitError):
        G.diff(repo, "--output=/tmp/x", c2)
    with pytest.raises(G.GitError):
        G.diff(repo, "no-such-rev", c2)


def test_add_worktree(tmp_path):
    repo = make_repo(tmp_path / "r", {"a.txt": "one\n"})
    c1 = git(repo, "rev-parse", "HEAD")
    write(os.path.join(repo, "a.txt"), "two\n")
    git(repo, "commit", "-q", "-am", "two")
    canary = install_hooks(repo)
    before = user_state(repo)
    wt = G.add_worktree(repo, c1)
    common = os.path.realpath(os.path.join(repo, ".git"))
    assert os.path.realpath(wt) == os.path.join(common, G.WORKTREES_DIRNAME, c1[:12] + "-1")
    assert read(os.path.join(wt, "a.txt")) == "one\n"
    assert git(wt, "rev-parse", "HEAD") == c1 and git(wt, "symbolic-ref", "-q", "HEAD", check=False) == ""
    wt2 = G.add_worktree(repo, c1[:10])
    assert wt2.endswith(c1[:12] + "-2")
    after = user_state(repo)
    assert set(after.pop("git dir")) - set(before.pop("git dir")) == {G.WORKTREES_DIRNAME, "worktrees"}
    after.pop("common dir"), before.pop("common dir")
    assert after == before
    assert not os.path.exists(canary)

    target = tmp_path / "into"
    target.mkdir()
    assert G.add_worktree(repo, "HEAD", str(target)) == str(target)
    assert read(target / "a.txt") == "two\n"
    with pytest.raises(G.GitError, match="not empty"):
        G.add_worktree(repo, c1, str(target))
    with pytest.raises(G.GitError, match="unknown commit"):
        G.add_worktree(repo, "f" * 40)


def test_checkout_only_when_clean(tmp_path):
    repo = make_repo(tmp_path / "r", {".gitignore": "*.log\n", "a.txt": "one\n"})
    c1 = git(repo, "rev-parse", "HEAD")
    write(os.path.join(repo, "a.txt"), "two\n")
    git(repo, "commit", "-q", "-am", "two")
    write(os.path.join(repo, "scratch.py"), "untracked\n")
    write(os.path.join(repo, "x.log"), "ignored\n")
    before = user_state(repo)
    with pytest.raises(G.GitError, match="scratch.py") as info:
        G.checkout(repo, c1)
    assert "\n" not in str(info.value)
    assert user_state(repo) == before
    os.unlink(os.path.join(repo, "scratch.py"))
    G.checkout(repo, c1)
    assert git(repo, "rev-parse", "HEAD") == c1
    assert git(repo, "symbolic-ref", "-q", "HEAD", check=False) == ""
    assert read(os.path.join(repo, "a.txt")) == "one\n"
    with pytest.raises(G.GitError, match="unknown commit"):
        G.checkout(repo, "no-such-commit")


def test_run_branches_delete_ref_and_commit_exists(tmp_path):
    repo = make_repo(tmp_path / "r")
    ids = ["run-a", "run-b"]
    for rid in ids:
        write(os.path.join(repo, "README.md"), rid)
        assert capture(repo, run_id=rid)[1] is None
    assert G.run_branches(repo) == [(G.RUN_REF_PREFIX + r, r) for r in ids]
    commit = git(repo, "rev-parse", "run/run-a")
    assert G.commit_exists(repo, commit) and G.commit_exists(repo, "HEAD")
    assert not G.commit_exists(repo, "f" * 40)
    assert not G.commit_exists(repo, "--all")
    assert not G.commit_exists(str(tmp_path), "HEAD")
    assert not G.commit_exists(repo, git(repo, "rev-parse", "HEAD^{tree}"))

    with pytest.raises(G.GitError, match="not a run snapshot ref"):
        G.delete_ref(repo, "refs/heads/main")
    with pytest.raises(G.GitError):
        G.delete_ref(repo, "refs/heads/run/")
    git(repo, "checkout", "-q", "-f", "run/run-b")
    with pytest.raises(G.GitError, match="checked out"):
        G.delete_ref(repo, "run/run-b")
    G.delete_ref(repo, "run/run-a")
    assert G.run_branches(repo) == [(G.RUN_REF_PREFIX + "run-b", "run-b")]
    assert G.commit_exists(repo, commit)  # the commit stays until git gc


def test_git_error_is_one_line():
    err = G.GitError("first\nsecond\n\tthird")
    assert str(err) == "first second third" and isinstance(err, RuntimeError)


def test_location_variables_from_a_hook_do_not_leak(tmp_path, monkeypatch):
    outer = make_repo(tmp_path / "outer")
    inner = make_repo(tmp_path / "inner")
    write(os.path.join(inner, "README.md"), "dirty\n")
    outer_git = git(outer, "rev-parse", "--absolute-git-dir")
    outer_state = user_state(outer)
    monkeypatch.setenv("GIT_DIR", outer_git)
    monkeypatch.setenv("GIT_INDEX_FILE", os.path.join(outer_git, "index"))
    rec, err = capture(inner)
    monkeypatch.delenv("GIT_DIR")
    monkeypatch.delenv("GIT_INDEX_FILE")
    assert err is None and rec["toplevel"] == os.path.realpath(inner)
    assert user_state(outer) == outer_state
    assert G.run_branches(outer) == []


def test_sha256_repository(tmp_path):
    repo = str(tmp_path / "r")
    os.makedirs(repo)
    if subprocess.run(["git", "init", "-q", "--object-format=sha256"], cwd=repo,
                      stderr=subprocess.DEVNULL).returncode:
        pytest.skip("this git cannot create sha256 repositories")
    write(os.path.join(repo, "pkg", "a.py"), "a = 1\n")
    write(os.path.join(repo, "b.py"), "b = 1\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "initial")
    write(os.path.join(repo, "pkg", "a.py"), "a = 2\n")
    write(os.path.join(repo, "pkg", "new.py"), "n = 1\n")
    rec, err = capture(repo)
    assert err is None, err
    assert len(rec["commit"]) == 64 and parents(repo, rec["commit"]) == [rec["base_commit"]]
    assert git(repo, "show", rec["commit"] + ":pkg/a.py") == "a = 2"
    assert set(ls_tree(repo, rec["commit"])) == {"b.py", "pkg/a.py", "pkg/new.py"}


def test_dirty_content_inside_a_submodule_is_named_in_skipped(tmp_path):
    lib = make_repo(tmp_path / "lib", {"lib.py": "v = 1\n"})
    repo = make_repo(tmp_path / "super", {"main.py": "import lib\n"})
    git(repo, "submodule", "add", "-q", lib, "libs/lib")
    git(repo, "submodule", "add", "-q", lib, "libs/clean")
    git(repo, "commit", "-q", "-m", "submodules")
    sub = os.path.join(repo, "libs", "lib")
    write(os.path.join(sub, "lib.py"), "v = 2  # edited, not committed\n")
    write(os.path.join(sub, "scratch.txt"), "untracked inside the submodule\n")
    head = git(sub, "rev-parse", "HEAD")
    rec, err = capture(repo)
    assert err is None, err
    assert rec["dirty"] is True and rec["commit"] is not None
    (entry,) = [s for s in rec["skipped"] if s["path"] == "libs/lib"]
    assert "uncommitted changes (modified tracked files and untracked files)" in entry["reason"]
    assert not any(s["path"] == "libs/clean" for s in rec["skipped"])
    assert ls_tree(repo, rec["commit"])["libs/lib"] == ("160000", "commit", head)
    os.unlink(os.path.join(sub, "scratch.txt"))
    rec, err = capture(repo, run_id=RUN[:-1] + "c")
    (entry,) = rec["skipped"]
    assert entry["path"] == "libs/lib" and "(modified tracked files)" in entry["reason"]


def test_no_configured_program_runs_during_snapshot_or_diff(tmp_path):
    """fsmonitor hook, external diff, a diff driver's command and textconv, a pager: none may run."""
    repo = make_repo(tmp_path / "r", {"a.txt": "one\n", ".gitattributes": "*.txt diff=spy\n"})
    c1 = git(repo, "rev-parse", "HEAD")
    marker = tmp_path / "ran"
    spy = tmp_path / "spy.sh"
    write(str(spy), f"#!/bin/sh\necho \"$0 $*\" >> '{marker}'\nexit 1\n", 0o755)
    for key in ("core.fsmonitor", "diff.external", "diff.spy.command", "diff.spy.textconv", "core.pager",
                "pager.diff", "pager.status"):
        git(repo, "config", key, str(spy))
    git(repo, "status", "--porcelain")  # the set-up itself does run the hook: the spy works
    assert marker.exists()
    marker.unlink()
    write(os.path.join(repo, "a.txt"), "two\n")
    write(os.path.join(repo, "new.txt"), "new\n")
    rec, err = capture(repo)
    assert err is None and rec["dirty"] is True
    assert not marker.exists(), marker.read_text()  # the fsmonitor hook did not run
    out = G.diff(repo, c1, rec["commit"])
    assert "-one" in out and "+two" in out and "+new" in out
    assert "+two" in G.diff(repo, c1) and G.diff(repo, c1, stat=True)
    assert G.toplevel(repo) and G.run_branches(repo)
    assert not marker.exists(), marker.read_text()


def test_checkout_names_untracked_files_and_folders_in_the_way(tmp_path):
    repo = make_repo(tmp_path / "r", {"data": "a file\n", "out/a.txt": "a\n", "link": "x"})
    os.unlink(os.path.join(repo, "link"))
    os.symlink("target", os.path.join(repo, "link"))
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "link")
    c1 = git(repo, "rev-parse", "HEAD")
    git(repo, "rm", "-q", "-r", "--cached", "data", "out", "link")
    write(os.path.join(repo, ".gitignore"), "data\nout\nlink\n")
    git(repo, "add", ".gitignore")
    git(repo, "commit", "-q", "-m", "local now")
    os.unlink(os.path.join(repo, "data"))
    write(os.path.join(repo, "data", "mine.csv"), "1,2\n")  # a folder where the commit has a file
    shutil.rmtree(os.path.join(repo, "out"))
    write(os.path.join(repo, "out"), "a file where the commit has a folder\n")
    before = user_state(repo)
    with pytest.raises(G.WouldOverwrite) as info:
        G.checkout(repo, c1)
    assert sorted(info.value.paths) == ["data/", "out"] and "\n" not in str(info.value)
    assert user_state(repo) == before
    os.unlink(os.path.join(repo, "link"))
    os.symlink("elsewhere", os.path.join(repo, "link"))
    with pytest.raises(G.WouldOverwrite) as info:
        G.checkout(repo, c1)
    assert sorted(info.value.paths) == ["data/", "link", "out"]


def test_snapshot_refs_tell_own_snapshots_from_other_refs(tmp_path):
    repo = make_repo(tmp_path / "r")
    write(os.path.join(repo, "README.md"), "dirty\n")
    runs = tmp_path / "somewhere" / "runs"
    rec, err = capture(repo, runs_dir=str(runs))
    assert err is None
    message = git(repo, "log", "-1", "--format=%B", rec["commit"])
    assert f"\nExprag-Plus-Run: {RUN}\n" in message + "\n" and f"Exprag-Plus-Runs-Dir: {runs}" in message
    other = RUN[:-1] + "f"
    tree = git(repo, "rev-parse", "HEAD^{tree}")
    forged = git(repo, "commit-tree", "-m", f"exprag-plus: code snapshot for run {other}\n\nExprag-Plus-Run: {RUN}",
                 tree)
    git(repo, "update-ref", f"refs/heads/run/{other}", forged)
    git(repo, "update-ref", f"refs/heads/run/{other[:-1]}e", rec["commit"])  # another id's snapshot
    git(repo, "update-ref", f"refs/exprag-plus/runs/{RUN}", rec["commit"])  # pushed runs: not listed
    git(repo, "branch", "run/ideas/lr")
    got = {r["ref"]: (r["ours"], r["runs_dir"]) for r in G.snapshot_refs(repo)}
    assert got == {f"refs/heads/run/{RUN}": (True, str(runs)), f"refs/heads/run/{other}": (False, None),
                   f"refs/heads/run/{other[:-1]}e": (False, None), "refs/heads/run/ideas/lr": (False, None)}
    with pytest.raises(G.GitError, match="not a run snapshot ref"):
        G.delete_ref(repo, "run/ideas/lr")
    with pytest.raises(G.GitError):
        G.delete_ref(repo, f"run/{RUN}", expected=forged)  # moved since it was planned: kept
    assert git(repo, "rev-parse", f"run/{RUN}") == rec["commit"]


def test_a_prefetched_capture_records_the_state_when_its_git_calls_started(tmp_path):
    repo = make_repo(tmp_path / "r", {"a.py": "x = 1\n", "b.py": "y = 1\n"})
    other = make_repo(tmp_path / "o", {"c.py": "z = 1\n"})
    write(os.path.join(repo, "a.py"), "x = 2\n")
    G.prefetch(repo)
    for p in G._PREFETCHED[os.path.abspath(repo)][1:]:
        p.wait()  # the status has been taken: what changes now is not in the snapshot
    write(os.path.join(repo, "b.py"), "y = 2\n")
    state, err = G.capture_state(other, RUN, str(tmp_path / "runs"))  # another folder: not the prefetched calls
    assert err is None and state["dirty"] is False and G._PREFETCHED
    state, err = G.capture_state(repo, RUN, str(tmp_path / "runs"))
    assert err is None and state["status"] == [" M a.py"] and not G._PREFETCHED
    assert git(repo, "show", f"{state['commit']}:a.py") == "x = 2"
    assert git(repo, "show", f"{state['commit']}:b.py") == "y = 1"

    G.prefetch(repo)
    procs = G._PREFETCHED[os.path.abspath(repo)][0].procs
    G.drop_prefetch()
    assert not G._PREFETCHED and all(p.returncode is not None for p in procs)


def test_untracked_credential_files_stay_out_of_snapshots(tmp_path):
    """Red team (trial 10): an untracked .env and id_rsa went into the run/<id> snapshot, and a push sent
    them to the shared remote. Untracked files named like credentials are skipped, with a reason; tracked
    ones are the user's code; examples (.env.example) are kept."""
    repo = make_repo(tmp_path / "r", {"README.md": "hi\n", "config.pem": "tracked on purpose\n"})
    for name in (".env", ".env.local", "id_rsa", "certs/server.key", "deploy/.netrc", "train.py", ".env.example"):
        write(os.path.join(repo, name), "OPENAI_API_KEY=sk-DOTENVsecret1234567890\n")
    write(os.path.join(repo, "config.pem"), "changed\n")
    rec, err = capture(repo)
    assert err is None and rec["dirty"]
    tree = ls_tree(repo, rec["commit"])
    assert {"train.py", ".env.example", "config.pem"} <= set(tree)
    assert not {".env", ".env.local", "id_rsa", "certs/server.key", "deploy/.netrc"} & set(tree)
    assert sorted(s["path"] for s in rec["skipped"]) == [".env", ".env.local", "certs/server.key", "deploy/.netrc",
                                                        "id_rsa"]
    assert all("named like a credential" in s["reason"] for s in rec["skipped"])

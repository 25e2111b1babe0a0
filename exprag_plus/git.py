"""Every git subprocess call of exprag-plus: state, snapshot, diff, restore.

Git runs through ``subprocess`` only (no shell, no git library): every call goes through :func:`_git`
(or :class:`_Procs` for concurrent ones) as ``git --no-pager --no-optional-locks -c core.hooksPath=/dev/null
-c core.fsmonitor= -c commit.gpgsign=false -c gc.auto=0 ...`` with ``LC_ALL=C`` and
``GIT_TERMINAL_PROMPT=0``, and diffs with ``--no-ext-diff --no-textconv``: no hook, fsmonitor, pager,
external diff or textconv program runs (clean/smudge filters do, as ``git add`` would). The variables
that would point git at another repository, index or ref namespace (``GIT_DIR``, ``GIT_INDEX_FILE``,
``GIT_WORK_TREE``, ``GIT_NAMESPACE``, ... which git sets inside hooks) are dropped: the repository is
always the one containing the directory given. This module never runs a repository hook. Git >= 2.17.

Snapshot method (``capture_state``): one ``git status --porcelain=v2 -z --branch --untracked-files=all``
gives HEAD, the branch, the changed paths and, for each, the index's object and the modes; only files
whose content differs from the index are hashed (``git hash-object -w --stdin-paths`` with the
repository's filters, i.e. stored exactly as ``git add`` stores them: CRLF normalization, LFS pointers);
symlinks are stored as their target text; the trees of HEAD on the way to each changed path are read
(``git cat-file --batch``), edited in memory and written bottom-up by one ``git mktree -z --batch``
(the tree ids are computed here too and must match); then ``git commit-tree --no-gpg-sign`` and a
create-only ``git update-ref``. No temporary index exists, and the working tree, index, HEAD, branches,
stash, config and hooks stay as they were. Two slower reference methods build the same tree through a
temporary index (``_tree_via_temp_index``: ``read-tree HEAD`` + ``update-index --index-info``;
``_tree_via_add_all``: DESIGN's baseline, a copy of the index + ``git add -A``); the benchmark times
them and the tests check all three agree.

Choices made here:

* Snapshot refs are ``refs/heads/run/<run_id>`` (branch ``run/<run_id>``). A branch named ``run``
  (ref ``refs/heads/run``) blocks that namespace; the snapshot then goes to
  ``refs/exprag-plus/run/<run_id>`` and ``branch``/``snapshot_branch`` hold that full ref name:
  ``git checkout``/``git log`` accept it, and its ``refs/`` prefix says it is not a branch.
* Identity: ``GIT_AUTHOR_*``/``GIT_COMMITTER_*`` from the environment, else ``author.*``/``committer.*``
  /``user.*`` from config (``EMAIL`` for a missing e-mail), else ``exprag-plus <exprag-plus@localhost>``.
* Left out of a snapshot, with a reason in ``skipped``: untracked files over ``size_cap`` (tracked files
  are always included), untracked files named like credentials (``_credential_file``), untracked nested
  repositories (not submodules). Left out silently: ignored files
  and anything in the runs folder (compared by real path, so also through symlinks), which also does
  not count as dirty. Submodules are recorded as the gitlink of their checked-out HEAD, never recursed;
  uncommitted changes inside one are named in ``skipped``.
* ``add_worktree`` defaults to ``<git common dir>/exprag-plus-worktrees/<12 hex>-<n>``.
"""
from __future__ import annotations

import os
import stat as _stat
import subprocess
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

__all__ = [
    "GitError",
    "WouldOverwrite",
    "toplevel",
    "capture_state",
    "diff",
    "add_worktree",
    "remove_worktree",
    "checkout",
    "run_branches",
    "snapshot_refs",
    "worktrees",
    "delete_ref",
    "commit_exists",
    "resolve_commit",
    "DEFAULT_SIZE_CAP",
    "FALLBACK_NAME",
    "FALLBACK_EMAIL",
    "RUN_REF_PREFIX",
    "FALLBACK_REF_PREFIX",
    "WORKTREES_DIRNAME",
]

DEFAULT_SIZE_CAP = 10 * 1024 * 1024
FALLBACK_NAME = "exprag-plus"
FALLBACK_EMAIL = "exprag-plus@localhost"
RUN_REF_PREFIX = "refs/heads/run/"
FALLBACK_REF_PREFIX = "refs/exprag-plus/run/"
WORKTREES_DIRNAME = "exprag-plus-worktrees"  # under the git common dir
# what tells a snapshot commit exprag-plus wrote (gc deletes nothing else) and where its run file went
SNAPSHOT_SUBJECT = "exprag-plus: code snapshot for run "
RUN_TRAILER = "Exprag-Plus-Run"
RUNS_DIR_TRAILER = "Exprag-Plus-Runs-Dir"

_MODE_TREE = 0o040000
_MODE_FILE = 0o100644
_MODE_EXEC = 0o100755
_MODE_LINK = 0o120000
_MODE_GITLINK = 0o160000

# Variables that would make git use another repository, index or ref namespace than the one containing
# the directory we run in (git sets several of them for hooks, and a test suite run from a pre-commit
# hook must not write into the outer repository's index).
_LOCATION_ENV = (
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_COMMON_DIR",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_IMPLICIT_WORK_TREE",
    "GIT_PREFIX",
    "GIT_INTERNAL_SUPER_PREFIX",
    "GIT_NAMESPACE",
    "GIT_SHALLOW_FILE",
    "GIT_GRAFT_FILE",
    "GIT_QUARANTINE_PATH",
    "GIT_EXTERNAL_DIFF",
    "GIT_DIFF_OPTS",
    "GIT_ASKPASS",
    "SSH_ASKPASS",
)

# Every program a user's or repository's config could make git start is switched off here (hooks, the
# fsmonitor hook or daemon, a pager); external diff drivers and textconv are off in `_diff`
# (``--no-ext-diff --no-textconv``). Clean/smudge filters stay on: a snapshot must store what ``git
# add`` would store (LFS pointers, CRLF normalization).
_GLOBAL_OPTS = (
    "--no-pager",
    "--no-optional-locks",
    "-c", "core.hooksPath=/dev/null",
    "-c", "core.fsmonitor=",
    "-c", "core.pager=cat",
    "-c", "commit.gpgsign=false",
    "-c", "gc.auto=0",
    "-c", "maintenance.auto=false",
)


class GitError(RuntimeError):
    """A git operation failed; the message is one line."""

    def __init__(self, message: object) -> None:
        text = " ".join(str(message).split())
        if len(text) > 600:
            text = text[:597] + "..."
        super().__init__(text)


# --------------------------------------------------------------------------------------------------
# the runner


def _env(extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    env = dict(os.environ)
    for name in _LOCATION_ENV:
        env.pop(name, None)
    env["LC_ALL"] = "C"
    env["LANGUAGE"] = "C"
    env["GIT_TERMINAL_PROMPT"] = "0"
    env["GIT_OPTIONAL_LOCKS"] = "0"
    env["GIT_PAGER"] = "cat"
    env["PAGER"] = "cat"
    if extra:
        env.update(extra)
    return env


def _cmd(args: Sequence[Union[str, bytes]]) -> List[Union[str, bytes]]:
    return ["git", *_GLOBAL_OPTS, *args]


def _describe(args: Sequence[Union[str, bytes]]) -> str:
    for a in args:
        s = os.fsdecode(a)
        if not s.startswith("-") and "=" not in s:
            return "git " + s
    return "git"


def _failure(args: Sequence[Union[str, bytes]], returncode: int, stderr: bytes) -> GitError:
    lines = [ln.strip() for ln in stderr.decode("utf-8", "replace").splitlines() if ln.strip()]
    pick = ""
    for ln in reversed(lines):
        if ln.startswith(("fatal:", "error:")):
            pick = ln
            break
    if not pick and lines:
        pick = lines[0]
    return GitError(f"{_describe(args)} failed: {pick or f'exit status {returncode}'}")


def _spawn_error(cwd: str, exc: OSError) -> GitError:
    if not os.path.isdir(cwd):
        return GitError(f"directory does not exist: {cwd}")
    if isinstance(exc, FileNotFoundError):
        return GitError("git executable not found (is git installed and on PATH?)")
    return GitError(f"cannot run git: {exc}")


def _git(
    args: Sequence[Union[str, bytes]],
    cwd: str,
    *,
    input: Optional[bytes] = None,
    env: Optional[Dict[str, str]] = None,
    check: bool = True,
    timeout: Optional[float] = None,
) -> "subprocess.CompletedProcess[bytes]":
    """Run one git command (never through a shell); raise GitError on failure when ``check``."""
    kwargs: Dict[str, Any] = {}
    if input is None:
        kwargs["stdin"] = subprocess.DEVNULL
    else:
        kwargs["input"] = input
    try:
        proc = subprocess.run(
            _cmd(args), cwd=cwd, env=_env(env), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            timeout=timeout, check=False, **kwargs,
        )
    except subprocess.TimeoutExpired:
        raise GitError(f"{_describe(args)} timed out after {timeout} s") from None
    except OSError as exc:
        raise _spawn_error(cwd, exc) from None
    if check and proc.returncode != 0:
        raise _failure(args, proc.returncode, proc.stderr)
    return proc


class _Procs:
    """Concurrently started git processes; any still running are killed on exit."""

    def __init__(self) -> None:
        self.procs: List[subprocess.Popen] = []

    def start(self, args: Sequence[Union[str, bytes]], cwd: str, *, stdin: bool = False,
              env: Optional[Dict[str, str]] = None) -> "subprocess.Popen[bytes]":
        try:
            p = subprocess.Popen(
                _cmd(args), cwd=cwd, env=_env(env),
                stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            )
        except OSError as exc:
            raise _spawn_error(cwd, exc) from None
        p.args_for_error = list(args)  # type: ignore[attr-defined]
        self.procs.append(p)
        return p

    @staticmethod
    def finish(p: "subprocess.Popen[bytes]", input: Optional[bytes] = None,
               check: bool = True) -> Tuple[int, bytes, bytes]:
        """Wait for p; its answer is kept, so two readers of one prefetched call get the same."""
        done = getattr(p, "answer", None)
        if done is None:
            out, err = p.communicate(input)
            done = p.answer = (p.returncode, out, err)  # type: ignore[attr-defined]
        if check and done[0] != 0:
            raise _failure(p.args_for_error, done[0], done[2])  # type: ignore[attr-defined]
        return done

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                try:
                    p.kill()
                except OSError:
                    pass
            for pipe in (p.stdin, p.stdout, p.stderr):
                try:
                    if pipe is not None:
                        pipe.close()
                except Exception:
                    pass
            try:
                p.wait(timeout=10)
            except Exception:
                pass

    def __enter__(self) -> "_Procs":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------------------------------
# small helpers


def _text(b: bytes) -> str:
    """Bytes from git (paths included) as text safe for strict UTF-8 JSON."""
    return b.decode("utf-8", "backslashreplace")


def _check_rev(rev: str) -> str:
    if not isinstance(rev, str) or not rev or rev.startswith("-") or "\0" in rev or "\n" in rev:
        raise GitError(f"invalid revision: {rev!r}")
    return rev


def _check_repo_dir(repo: str) -> str:
    if not os.path.isdir(repo):
        raise GitError(f"directory does not exist: {repo}")
    return repo


def toplevel(cwd: str) -> Optional[str]:
    """The work-tree top level containing ``cwd``; None outside a work tree or without git."""
    try:
        if not os.path.isdir(cwd):
            return None
        out = _git(["rev-parse", "--show-toplevel"], cwd, check=False)
        if out.returncode != 0:
            return None
        top = out.stdout.rstrip(b"\n")
        return os.fsdecode(top) if top else None
    except Exception:
        return None


def main_worktree(cwd: str) -> Optional[str]:
    """The top level of the repository's main worktree (shared by its linked worktrees); for a bare
    repository with linked worktrees, the folder holding the bare repository. None outside a work tree.
    Never a path inside a .git folder: then the current work tree's top level."""
    try:
        if not os.path.isdir(cwd):
            return None
        pre = _PREFETCHED.get(os.path.abspath(cwd))
        if pre:
            rc, out, _ = pre[0].finish(pre[1], check=False)  # the snapshot's own rev-parse, started already
        else:
            p = _git(_REV_PARSE_ARGS, cwd, check=False)
            rc, out = p.returncode, p.stdout
        if rc != 0:
            return None
        repo = _parse_rev_parse(out, cwd)
        common, top = repo.common_dir, repo.top
        main = os.path.dirname(common) if os.path.basename(common) == ".git" else None
        if main is None:
            first = worktrees(cwd)[:1]  # e.g. a submodule, or a --separate-git-dir repository
            if not first:
                return top
            main = os.path.dirname(first[0]["path"]) if first[0]["bare"] else first[0]["path"]
        if ".git" in os.path.normpath(main).split(os.sep):
            return top
        return main
    except Exception:
        return None


def same_tree_commit(repo: str, commit: str, base: str, limit: int = 2000) -> Optional[Dict[str, str]]:
    """The oldest commit on a local branch (not a run/ snapshot branch), made after ``base``, whose tree
    is ``commit``'s tree: {commit, branch}; None when there is none among the newest ``limit``.

    A dirty run's snapshot and the commit an agent made of the change it kept hold the same tree."""
    _check_repo_dir(repo)
    _check_rev(commit)
    _check_rev(base)
    tree = _git(["rev-parse", "--verify", "--quiet", commit + "^{tree}"], repo, check=False)
    if tree.returncode != 0:
        return None
    want = tree.stdout.strip()
    out = _git(["log", f"--max-count={int(limit)}", "--format=%H%x09%T%x09%S", "--exclude=run/*", "--branches",
                "--not", base, "--"], repo, check=False)
    if out.returncode != 0:
        return None
    found = None
    for line in out.stdout.splitlines():
        parts = line.split(b"\t")
        if len(parts) >= 3 and parts[1] == want:
            ref = os.fsdecode(parts[2])
            found = {"commit": os.fsdecode(parts[0]),
                     "branch": ref[len("refs/heads/"):] if ref.startswith("refs/heads/") else ref}
    return found


def resolve_commit(repo: str, rev: str) -> str:
    """The full object name of the commit ``rev`` names; GitError if there is none."""
    _check_rev(rev)
    _check_repo_dir(repo)
    p = _git(["rev-parse", "--verify", "--quiet", rev + "^{commit}"], repo, check=False)
    oid = p.stdout.strip().decode("ascii", "replace")
    if p.returncode != 0 or not oid:
        if toplevel(repo) is None and p.returncode != 0:
            raise GitError(f"not inside a git work tree: {repo}")
        raise GitError(f"unknown commit: {rev}")
    return oid


def commit_exists(repo: str, commit: str) -> bool:
    """True when ``commit`` names a commit present in the repository at ``repo``."""
    try:
        _check_rev(commit)
        if not os.path.isdir(repo):
            return False
        return _git(["cat-file", "-e", commit + "^{commit}"], repo, check=False).returncode == 0
    except Exception:
        return False


def _c_quote(path: bytes) -> bytes:
    out = bytearray(b'"')
    for ch in path:
        if ch == 0x22:
            out += b'\\"'
        elif ch == 0x5C:
            out += b"\\\\"
        elif ch == 0x0A:
            out += b"\\n"
        elif ch < 0x20 or ch == 0x7F:
            out += b"\\%03o" % ch
        else:
            out.append(ch)
    out += b'"'
    return bytes(out)


def _stdin_path(path: bytes) -> bytes:
    """A path as one line for ``--stdin-paths`` (which unquotes lines starting with a double quote)."""
    if path.startswith(b'"') or b"\n" in path or path.endswith(b"\r"):
        return _c_quote(path)
    return path


def _parse_config_z(out: bytes) -> Dict[str, str]:
    conf: Dict[str, str] = {}
    for rec in out.split(b"\0"):
        if not rec:
            continue
        key, _, value = rec.partition(b"\n")
        conf[key.decode("utf-8", "replace").lower()] = value.decode("utf-8", "replace")
    return conf


def _config_true(value: Optional[str], default: bool) -> bool:
    if value is None:
        return default
    v = value.strip().lower()
    if v in ("true", "yes", "on", "1", ""):
        return True
    if v in ("false", "no", "off", "0"):
        return False
    try:
        return int(v) != 0
    except ValueError:
        return default


def _identity_env(conf: Dict[str, str]) -> Dict[str, str]:
    """Author/committer for snapshot commits: the user's (env, then config), else the fixed fallback."""
    env: Dict[str, str] = {}
    for role in ("author", "committer"):
        for field, fallback in (("name", FALLBACK_NAME), ("email", FALLBACK_EMAIL)):
            var = f"GIT_{role.upper()}_{field.upper()}"
            value = os.environ.get(var) or conf.get(f"{role}.{field}") or conf.get(f"user.{field}")
            if not value and field == "email":
                value = os.environ.get("EMAIL")
            value = (value or "").strip()
            env[var] = value if value.strip("<> \t") else fallback
    return env


# --------------------------------------------------------------------------------------------------
# status


class _Entry:
    """One path of ``git status --porcelain=v2 -z`` (untracked ones have kind '?')."""

    __slots__ = ("kind", "xy", "sub", "m_index", "m_work", "h_index", "path", "orig")

    def __init__(self, kind: str, xy: bytes, sub: bytes, m_index: int, m_work: int, h_index: str,
                 path: bytes, orig: Optional[bytes] = None) -> None:
        self.kind, self.xy, self.sub = kind, xy, sub
        self.m_index, self.m_work, self.h_index = m_index, m_work, h_index
        self.path, self.orig = path, orig

    def v1_line(self) -> str:
        if self.kind == "?":
            return "?? " + _text(self.path)
        xy = self.xy.replace(b".", b" ").decode("ascii", "replace")
        if self.orig is not None:
            return f"{xy} {_text(self.orig)} -> {_text(self.path)}"
        return f"{xy} {_text(self.path)}"


class _Status:
    def __init__(self) -> None:
        self.head: Optional[str] = None
        self.branch: Optional[str] = None
        self.head_unknown = False  # HEAD names a ref git cannot resolve (broken ref file)
        self.entries: List[_Entry] = []


_STATUS_ARGS = ["status", "--porcelain=v2", "-z", "--branch", "--no-ahead-behind",
                "--untracked-files=all"]


def _parse_status_v2(out: bytes) -> _Status:
    st = _Status()
    recs = out.split(b"\0")
    i = 0
    n = len(recs)
    while i < n:
        rec = recs[i]
        i += 1
        if not rec:
            continue
        tag = rec[:2]
        if tag == b"# ":
            if rec.startswith(b"# branch.oid "):
                oid = rec[len(b"# branch.oid "):].decode("ascii", "replace")
                st.head = None if oid == "(initial)" else oid
            elif rec.startswith(b"# branch.head "):
                name = rec[len(b"# branch.head "):]
                st.branch = None if name in (b"(detached)", b"(unknown)") else os.fsdecode(name)
                st.head_unknown = name == b"(unknown)"
        elif tag == b"1 ":
            f = rec.split(b" ", 8)
            st.entries.append(_Entry("1", f[1], f[2], int(f[4], 8), int(f[5], 8),
                                     f[7].decode("ascii"), f[8]))
        elif tag == b"2 ":
            f = rec.split(b" ", 9)
            orig = recs[i] if i < n else b""
            i += 1
            st.entries.append(_Entry("2", f[1], f[2], int(f[4], 8), int(f[5], 8),
                                     f[7].decode("ascii"), f[9], orig))
        elif tag == b"u ":
            f = rec.split(b" ", 10)
            st.entries.append(_Entry("u", f[1], f[2], 0, int(f[6], 8), "", f[10]))
        elif tag == b"? ":
            st.entries.append(_Entry("?", b"??", b"", 0, 0, "", rec[2:]))
        # '! ' (ignored) never requested
    return st


# --------------------------------------------------------------------------------------------------
# repository facts


class _Repo:
    def __init__(self, top: str, prefix: str, git_dir: str, common_dir: str, algo: str) -> None:
        self.top, self.prefix, self.git_dir, self.common_dir, self.algo = (
            top, prefix, git_dir, common_dir, algo)

    @property
    def oid_hexlen(self) -> int:
        return 64 if self.algo == "sha256" else 40


_REV_PARSE_ARGS = ["rev-parse", "--show-toplevel", "--show-prefix", "--absolute-git-dir",
                   "--path-format=absolute", "--git-common-dir", "--show-object-format"]


def _parse_rev_parse(out: bytes, cwd: str) -> _Repo:
    lines = out.split(b"\n")
    if len(lines) < 4 or not lines[0]:
        raise GitError("git rev-parse gave unexpected output")
    top = os.fsdecode(lines[0])
    prefix = os.fsdecode(lines[1]).rstrip("/")
    git_dir = os.fsdecode(lines[2])
    common = os.fsdecode(lines[3])
    if not os.path.isabs(common):
        common = os.path.normpath(os.path.join(cwd, common))
    algo = os.fsdecode(lines[4]).strip() if len(lines) > 4 else ""
    if algo not in ("sha1", "sha256"):
        algo = "sha1"
    return _Repo(top, prefix, git_dir, common, algo)


def _locate(cwd: str) -> _Repo:
    p = _git(_REV_PARSE_ARGS, cwd, check=False)
    if p.returncode != 0:
        raise GitError(f"not inside a git work tree: {cwd}")
    return _parse_rev_parse(p.stdout, cwd)


# --------------------------------------------------------------------------------------------------
# planning the snapshot tree: which paths change to what


Change = Optional[Tuple[int, str]]  # (mode, hex oid) or None for "absent"


class _Plan:
    def __init__(self) -> None:
        self.changes: Dict[bytes, Change] = {}
        self.to_hash: List[Tuple[bytes, int]] = []          # regular files: (path, mode)
        self.raw_blobs: List[Tuple[bytes, int, bytes]] = []  # (path, mode, exact content)
        self.submodules: List[Tuple[bytes, str]] = []        # (path, index oid or "")
        self.skipped: List[Dict[str, str]] = []
        self.lines: List[str] = []                           # porcelain v1 lines kept
        self.excluded: List[bytes] = []                      # paths left out as the runs folder


def _runs_filter(runs_dir: Optional[str], cwd: str, top: str):
    """A predicate on (path bytes, absolute path) telling whether a status path is in the runs folder."""
    if not runs_dir:
        return lambda rel, abspath: False
    runs_real = os.path.realpath(os.path.join(cwd, runs_dir))
    top_real = os.path.realpath(top)
    prefix: Optional[bytes] = None
    if runs_real.startswith(top_real.rstrip(os.sep) + os.sep):
        rel = os.path.relpath(runs_real, top_real).replace(os.sep, "/")
        prefix = os.fsencode(rel)
    runs_real_sep = runs_real.rstrip(os.sep) + os.sep

    def inside(rel: bytes, abspath: Optional[str]) -> bool:
        if prefix is not None and (rel == prefix or rel.startswith(prefix + b"/")):
            return True
        if abspath is not None:  # a symlink: does it lead into the runs folder?
            real = os.path.realpath(abspath)
            return real == runs_real or real.startswith(runs_real_sep)
        return False

    return inside


_CREDENTIAL_NAMES = {b".env", b".netrc", b"_netrc", b".pgpass", b".pypirc", b".npmrc", b".git-credentials",
                     b"id_rsa", b"id_dsa", b"id_ecdsa", b"id_ed25519", b"credentials", b"credentials.json",
                     b".htpasswd", b"secrets.json", b"secrets.yaml", b"secrets.yml", b"secrets.toml"}
_CREDENTIAL_SUFFIXES = (b".pem", b".key", b".p12", b".pfx", b".jks", b".keystore", b".kdbx", b".ppk")
_EXAMPLES = (b".example", b".sample", b".template", b".dist")


def _credential_file(path: bytes) -> bool:
    """An untracked file whose name says it holds credentials (.env, id_rsa, *.pem...): never put into
    a snapshot, which a push sends to a shared remote; the user commits it if it really is code."""
    name = os.path.basename(path).lower()
    if name.endswith(_EXAMPLES):
        return False
    return name in _CREDENTIAL_NAMES or name.startswith(b".env.") or name.endswith(_CREDENTIAL_SUFFIXES)


def _plan(repo: _Repo, st: _Status, *, cwd: str, runs_dir: Optional[str],
          size_cap: Optional[int], filemode: bool) -> _Plan:
    plan = _Plan()
    in_runs = _runs_filter(runs_dir, cwd, repo.top)
    top_b = os.fsencode(repo.top)
    for e in st.entries:
        abspath_b = os.path.join(top_b, e.path)
        if e.kind == "?":
            if e.path.endswith(b"/"):  # an untracked nested repository
                if in_runs(e.path.rstrip(b"/"), None):
                    plan.excluded.append(e.path.rstrip(b"/"))
                    continue
                plan.lines.append(e.v1_line())
                plan.skipped.append({"path": _text(e.path.rstrip(b"/")),
                                     "reason": "untracked nested git repository (not a submodule); "
                                               "not included"})
                continue
            try:
                lst = os.lstat(abspath_b)
            except OSError as exc:
                if in_runs(e.path, None):
                    plan.excluded.append(e.path)
                    continue
                plan.lines.append(e.v1_line())
                plan.skipped.append({"path": _text(e.path),
                                     "reason": f"untracked file vanished during the snapshot ({exc.strerror})"})
                continue
            is_link = _stat.S_ISLNK(lst.st_mode)
            if in_runs(e.path, os.fsdecode(abspath_b) if is_link else None):
                plan.excluded.append(e.path)
                continue
            plan.lines.append(e.v1_line())
            if _credential_file(e.path):
                plan.skipped.append({"path": _text(e.path), "reason": "untracked file named like a credential "
                                     "(.env, a private key...); not included (commit it if it is code)"})
                continue
            if is_link:
                plan.raw_blobs.append((e.path, _MODE_LINK, os.readlink(abspath_b)))
            elif _stat.S_ISREG(lst.st_mode):
                if size_cap is not None and size_cap >= 0 and lst.st_size > size_cap:
                    plan.skipped.append({
                        "path": _text(e.path),
                        "reason": f"untracked file of {lst.st_size} bytes is over the size cap of "
                                  f"{size_cap} bytes; not included",
                    })
                    continue
                exe = filemode and bool(lst.st_mode & 0o100)
                plan.to_hash.append((e.path, _MODE_EXEC if exe else _MODE_FILE))
            else:
                plan.skipped.append({"path": _text(e.path),
                                     "reason": "not a regular file or symlink; not included"})
            continue

        if in_runs(e.path, None) or (e.orig is not None and in_runs(e.orig, None)):
            plan.excluded.append(e.path)
            continue
        plan.lines.append(e.v1_line())
        if e.orig is not None and e.xy[:1] == b"R":
            plan.changes.setdefault(e.orig, None)  # the rename's source left the index
        mw = e.m_work
        if mw == 0:
            plan.changes[e.path] = None
        elif mw == _MODE_GITLINK:
            inside = [what for flag, what in ((e.sub[2:3] == b"M", "modified tracked files"),
                                              (e.sub[3:4] == b"U", "untracked files")) if flag]
            if inside:
                plan.skipped.append({"path": _text(e.path),
                                     "reason": f"submodule with uncommitted changes ({' and '.join(inside)}); "
                                               "only its checked-out commit is included"})
            if e.sub[1:2] == b"C" or e.m_index != _MODE_GITLINK or e.kind == "u":
                plan.submodules.append((e.path, e.h_index if e.m_index == _MODE_GITLINK else ""))
            else:
                plan.changes[e.path] = (_MODE_GITLINK, e.h_index)
        elif e.kind != "u" and e.xy[1:2] == b"." and e.m_index == mw:
            plan.changes[e.path] = (e.m_index, e.h_index)  # the worktree matches the index
        elif mw == _MODE_LINK:
            try:
                content = os.readlink(abspath_b)
            except OSError:  # core.symlinks=false: the "link" is a file holding the target
                with open(abspath_b, "rb") as fh:
                    content = fh.read()
            plan.raw_blobs.append((e.path, _MODE_LINK, content))
        else:
            plan.to_hash.append((e.path, mw if mw in (_MODE_FILE, _MODE_EXEC) else _MODE_FILE))
    return plan


def _hash_plan(repo: _Repo, plan: _Plan, procs: _Procs, tmp_parent: Optional[str] = None) -> None:
    """Write the planned blobs (filters applied for files, raw for link targets) into plan.changes."""
    p_files = None
    if plan.to_hash:
        p_files = procs.start(["hash-object", "-w", "--stdin-paths"], repo.top, stdin=True)
    tmpdir = None
    try:
        p_raw = None
        if plan.raw_blobs:
            import tempfile  # the snapshot modules load only when a tree is dirty

            tmpdir = tempfile.mkdtemp(prefix="exprag-plus-blobs-", dir=tmp_parent)
            names = []
            for k, (_, _, content) in enumerate(plan.raw_blobs):
                name = os.path.join(tmpdir, str(k))
                with open(name, "wb") as fh:
                    fh.write(content)
                names.append(os.fsencode(name))
            p_raw = procs.start(["hash-object", "-w", "--no-filters", "--stdin-paths"], repo.top,
                                stdin=True)
            _, out, _ = procs.finish(p_raw, b"".join(_stdin_path(n) + b"\n" for n in names))
            oids = out.decode("ascii").split()
            if len(oids) != len(plan.raw_blobs):
                raise GitError("git hash-object returned an unexpected number of objects")
            for (path, mode, _), oid in zip(plan.raw_blobs, oids):
                plan.changes[path] = (mode, oid)
        for path, index_oid in plan.submodules:
            sub = os.path.join(repo.top, os.fsdecode(path))
            oid = ""
            if os.path.isdir(sub):
                r = _git(["rev-parse", "--verify", "--quiet", "HEAD"], sub, check=False)
                if r.returncode == 0:
                    oid = r.stdout.strip().decode("ascii", "replace")
            if len(oid) != repo.oid_hexlen:
                oid = index_oid
            if oid:
                plan.changes[path] = (_MODE_GITLINK, oid)
            else:
                plan.changes[path] = None
                plan.skipped.append({"path": _text(path),
                                     "reason": "submodule without a checked-out commit; not included"})
        if p_files is not None:
            data = b"".join(_stdin_path(p) + b"\n" for p, _ in plan.to_hash)
            _, out, _ = procs.finish(p_files, data)
            oids = out.decode("ascii").split()
            if len(oids) != len(plan.to_hash):
                raise GitError("git hash-object returned an unexpected number of objects")
            for (path, mode), oid in zip(plan.to_hash, oids):
                plan.changes[path] = (mode, oid)
    finally:
        if tmpdir is not None:
            import shutil

            shutil.rmtree(tmpdir, ignore_errors=True)


# --------------------------------------------------------------------------------------------------
# building the tree: fast method (HEAD's trees edited in memory, written with one mktree --batch)


def _parse_tree(data: bytes, rawlen: int) -> Dict[bytes, Tuple[int, str]]:
    out: Dict[bytes, Tuple[int, str]] = {}
    i, n = 0, len(data)
    while i < n:
        sp = data.index(b" ", i)
        nul = data.index(b"\0", sp)
        out[data[sp + 1:nul]] = (int(data[i:sp], 8), data[nul + 1:nul + 1 + rawlen].hex())
        i = nul + 1 + rawlen
    return out


class _TreeReader:
    """Reads tree objects through one interactive ``git cat-file --batch``."""

    def __init__(self, procs: _Procs, cwd: str, rawlen: int) -> None:
        self.p = procs.start(["cat-file", "--batch"], cwd, stdin=True)
        self.rawlen = rawlen

    def read(self, name: str) -> Tuple[str, Dict[bytes, Tuple[int, str]]]:
        assert self.p.stdin is not None and self.p.stdout is not None
        self.p.stdin.write(name.encode("utf-8") + b"\n")
        self.p.stdin.flush()
        header = self.p.stdout.readline().split()
        if len(header) != 3 or header[1] != b"tree":
            raise GitError(f"cannot read tree {name}: "
                           f"{b' '.join(header).decode('utf-8', 'replace') or 'no answer'}")
        size = int(header[2])
        data = self.p.stdout.read(size + 1)
        if len(data) != size + 1:
            raise GitError(f"cannot read tree {name}: short read")
        return header[0].decode("ascii"), _parse_tree(data[:size], self.rawlen)

    def close(self) -> None:
        if self.p.stdin is not None and not self.p.stdin.closed:
            self.p.stdin.close()
        self.p.wait()


def _tree_sort_key(item: Tuple[bytes, Tuple[int, str]]) -> bytes:
    name, (mode, _) = item
    return name + b"/" if mode == _MODE_TREE else name


def _type_of(mode: int) -> bytes:
    if mode == _MODE_TREE:
        return b"tree"
    if mode == _MODE_GITLINK:
        return b"commit"
    return b"blob"


def _tree_via_mktree(repo: _Repo, head: Optional[str], changes: Dict[bytes, Change],
                     procs: _Procs, reader: Optional[_TreeReader] = None) -> str:
    needed = {b""}
    for path in changes:
        parts = path.split(b"/")
        for k in range(1, len(parts)):
            needed.add(b"/".join(parts[:k]))
    dirs: Dict[bytes, Dict[bytes, Tuple[int, str]]] = {}
    if head is not None:
        if reader is None:
            reader = _TreeReader(procs, repo.top, repo.oid_hexlen // 2)
        try:
            dirs[b""] = reader.read(head + "^{tree}")[1]
            frontier = [b""]
            while frontier:
                nxt = []
                for d in frontier:
                    for name, (mode, oid) in list(dirs[d].items()):
                        child = d + b"/" + name if d else name
                        if mode == _MODE_TREE and child in needed:
                            dirs[child] = reader.read(oid)[1]
                            nxt.append(child)
                frontier = nxt
        finally:
            reader.close()
    else:
        dirs[b""] = {}

    for path, change in changes.items():  # removals first, then additions
        if change is None:
            d, _, name = path.rpartition(b"/")
            if d in dirs:
                dirs[d].pop(name, None)
    for path, change in changes.items():
        if change is not None:
            d, _, name = path.rpartition(b"/")
            anc = d
            while anc not in dirs:
                dirs[anc] = {}
                anc = anc.rpartition(b"/")[0]
            dirs[d][name] = change

    import hashlib

    algo = repo.algo
    batch: List[bytes] = []
    expected: List[str] = []
    root_oid = ""
    for d in sorted(dirs, key=lambda x: (-(x.count(b"/") + (1 if x else 0)), x)):
        entries = dirs[d]
        oid = ""
        if entries:
            items = sorted(entries.items(), key=_tree_sort_key)
            body = b"".join(b"%o %s\0" % (mode, name) + bytes.fromhex(h) for name, (mode, h) in items)
            try:
                hasher = hashlib.new(algo, usedforsecurity=False)  # type: ignore[call-arg]
            except TypeError:  # Python < 3.9 signature
                hasher = hashlib.new(algo)
            hasher.update(b"tree %d\0" % len(body))
            hasher.update(body)
            oid = hasher.hexdigest()
            batch.append(b"".join(b"%06o %s %s\t%s\0" % (mode, _type_of(mode), h.encode(), name)
                                  for name, (mode, h) in items) + b"\0")
            expected.append(oid)
        if d == b"":
            root_oid = oid
            break
        parent, _, name = d.rpartition(b"/")
        if oid:
            dirs[parent][name] = (_MODE_TREE, oid)
        elif dirs[parent].get(name, (0, ""))[0] == _MODE_TREE:
            del dirs[parent][name]
    if not root_oid:  # everything removed: the empty tree
        return _git(["mktree"], repo.top, input=b"").stdout.strip().decode("ascii")
    p = procs.start(["mktree", "-z", "--batch"], repo.top, stdin=True)
    _, out, _ = procs.finish(p, b"".join(batch))
    got = out.decode("ascii").split()
    if got != expected:
        raise GitError("git mktree wrote trees other than expected (internal error)")
    return root_oid


# --------------------------------------------------------------------------------------------------
# reference methods through a temporary index (benchmark and tests compare them to the fast one)


def _temp_index_path(repo: _Repo) -> str:
    import tempfile

    fd, path = tempfile.mkstemp(prefix="exprag-plus-index-", dir=repo.git_dir)
    os.close(fd)
    os.unlink(path)  # git creates it; an empty file is not a valid index
    return path


def _remove_temp_index(path: str) -> None:
    for p in (path, path + ".lock"):
        try:
            os.unlink(p)
        except FileNotFoundError:
            pass


def _tree_via_temp_index(repo: _Repo, head: Optional[str], changes: Dict[bytes, Change]) -> str:
    """Same tree as _tree_via_mktree: ``read-tree HEAD`` into a temporary index, ``update-index
    --index-info``, ``write-tree``. The temporary index is removed on every path."""
    index = _temp_index_path(repo)
    env = {"GIT_INDEX_FILE": index}
    try:
        _git(["read-tree", head if head else "--empty"], repo.top, env=env)
        zero = "0" * repo.oid_hexlen
        rm = [b"0 %s\t%s\0" % (zero.encode(), p) for p, c in changes.items() if c is None]
        add = [b"%o %s\t%s\0" % (c[0], c[1].encode(), p) for p, c in changes.items() if c is not None]
        if rm or add:
            _git(["update-index", "-z", "--index-info"], repo.top, env=env, input=b"".join(rm + add))
        return _git(["write-tree"], repo.top, env=env).stdout.strip().decode("ascii")
    finally:
        _remove_temp_index(index)


def _tree_via_add_all(repo: _Repo, exclude: Iterable[bytes]) -> str:
    """DESIGN's baseline: a copy of the real index, ``git add -A`` into it (the given paths excluded),
    ``write-tree``. The temporary index is removed on every path."""
    real = _git(["rev-parse", "--git-path", "index"], repo.top).stdout.rstrip(b"\n")
    real_path = os.path.join(repo.top, os.fsdecode(real))
    index = _temp_index_path(repo)
    env = {"GIT_INDEX_FILE": index}
    try:
        if os.path.exists(real_path):
            # copy2 keeps the index's mtime: with a newer one, entries written in the same second as
            # the real index would no longer count as "racily clean" and same-size edits made in
            # that second would go unseen (git compares whole seconds)
            import shutil

            shutil.copy2(real_path, index)
        specs = [b"."] + [b":(exclude,literal)" + p for p in exclude]
        _git([b"add", b"-A", b"--", *specs], repo.top, env=env)
        return _git(["write-tree"], repo.top, env=env).stdout.strip().decode("ascii")
    finally:
        _remove_temp_index(index)


# --------------------------------------------------------------------------------------------------
# capture_state


def _valid_run_id(run_id: str) -> bool:
    if not isinstance(run_id, str) or not run_id or len(run_id) > 200:
        return False
    if run_id.startswith(".") or run_id.endswith((".", ".lock")) or ".." in run_id:
        return False
    return all(c.isascii() and (c.isalnum() or c in "-_.") for c in run_id)


def _ref_exists(cwd: str, ref: str) -> bool:
    r = _git(["rev-parse", "--verify", "--quiet", ref], cwd, check=False)
    return r.returncode == 0


def _create_run_ref(repo: _Repo, run_id: str, commit: str) -> str:
    """Create the snapshot ref (create-only); returns the name to record as branch/snapshot_branch."""
    msg = f"exprag-plus: snapshot for run {run_id}"
    ref = RUN_REF_PREFIX + run_id
    try:
        _git(["update-ref", "-m", msg, ref, commit, ""], repo.top)
        return "run/" + run_id
    except GitError as first:
        if not _ref_exists(repo.top, "refs/heads/run"):
            raise first
    alt = FALLBACK_REF_PREFIX + run_id
    try:
        _git(["update-ref", "-m", msg, alt, commit, ""], repo.top)
    except GitError as second:
        raise GitError(f"a branch named 'run' blocks refs/heads/run/*, and the fallback ref {alt} "
                       f"could not be created either: {second}") from None
    return alt


_CONF_ARGS = ["config", "-z", "--get-regexp", r"^((user|author|committer)\.(name|email)|core\.(filemode|symlinks))$"]
_PREFETCHED: Dict[str, Tuple[_Procs, "subprocess.Popen[bytes]", "subprocess.Popen[bytes]",
                             "subprocess.Popen[bytes]"]] = {}


def _first_calls(procs: _Procs, cwd: str) -> Tuple["subprocess.Popen[bytes]", ...]:
    return procs.start(_REV_PARSE_ARGS, cwd), procs.start(_STATUS_ARGS, cwd), procs.start(_CONF_ARGS, cwd)


def prefetch(cwd: str) -> None:
    """Start the snapshot's first git calls (rev-parse, status, config) now, to run while the caller does
    other work (finding the runs folder, listing files); the next capture_state for this folder uses them.
    Only for a capture that follows at once, with nothing written under the folder meanwhile but the runs
    folder: the status is the state at this moment. `drop_prefetch` ends calls left unused; calls already
    started for this folder are kept."""
    cwd = os.path.abspath(cwd)
    if cwd in _PREFETCHED:
        return
    drop_prefetch()
    procs = _Procs()
    try:
        _PREFETCHED[cwd] = (procs, *_first_calls(procs, cwd))  # type: ignore[assignment]
    except GitError:
        procs.close()


def drop_prefetch() -> None:
    while _PREFETCHED:
        _PREFETCHED.popitem()[1][0].close()


def capture_state(
    cwd: str,
    run_id: str,
    runs_dir: str,
    *,
    size_cap: int = DEFAULT_SIZE_CAP,
    snapshot: bool = True,
) -> Tuple[Optional[dict], Optional[str]]:
    """The ``git`` field of run_start and the ``git_error`` string (one of them may be None).

    Never raises (KeyboardInterrupt and SystemExit excepted): any failure becomes ``git_error``.
    See the module docstring for the method and the fallback ref namespace.
    """
    try:
        return _capture_state(cwd, run_id, runs_dir, size_cap=size_cap, snapshot=snapshot)
    except Exception as exc:  # pragma: no cover - last-resort guard
        return None, f"git state capture failed: {GitError(exc)}"


def _capture_state(
    cwd: str, run_id: str, runs_dir: Optional[str], *, size_cap: Optional[int], snapshot: bool,
    method: str = "mktree",
) -> Tuple[Optional[dict], Optional[str]]:
    try:
        cwd = os.path.abspath(os.fspath(cwd))
    except Exception as exc:
        return None, f"invalid working directory: {exc}"
    if not os.path.isdir(cwd):
        return None, f"working directory does not exist: {cwd}"
    pre = _PREFETCHED.pop(cwd, None)
    with (pre[0] if pre else _Procs()) as procs:
        if pre:
            p_rev, p_status, p_conf = pre[1:]
        else:
            try:
                p_rev, p_status, p_conf = _first_calls(procs, cwd)
            except GitError as exc:
                return None, str(exc)
        rc, out, err = procs.finish(p_rev, check=False)
        if rc != 0:
            reason = _failure(_REV_PARSE_ARGS, rc, err)
            return None, f"not inside a git work tree ({reason})"
        try:
            repo = _parse_rev_parse(out, cwd)
        except GitError as exc:
            return None, str(exc)

        # until proven otherwise: dirty, and no commit holds the code
        record: Dict[str, Any] = {
            "commit": None, "branch": None, "dirty": True, "status": [], "base_commit": None,
            "snapshot_branch": None, "skipped": [], "toplevel": _text(os.fsencode(repo.top)),
            "subdir": _text(os.fsencode(repo.prefix)),
        }
        try:
            return _snapshot(repo, record, procs, p_status, p_conf, cwd=cwd, run_id=run_id,
                             runs_dir=runs_dir, size_cap=size_cap, snapshot=snapshot, method=method)
        except Exception as exc:
            record.update(commit=None, branch=None, snapshot_branch=None, dirty=True)
            return record, f"snapshot failed: {GitError(exc)}"


def _snapshot(repo: _Repo, record: Dict[str, Any], procs: _Procs, p_status: "subprocess.Popen[bytes]",
              p_conf: "subprocess.Popen[bytes]", *, cwd: str, run_id: str, runs_dir: Optional[str],
              size_cap: Optional[int], snapshot: bool, method: str
              ) -> Tuple[Optional[dict], Optional[str]]:
    rc, out, err = procs.finish(p_status, check=False)
    if rc != 0:
        r = _git(["rev-parse", "--verify", "--quiet", "HEAD^{commit}"], repo.top, check=False)
        if r.returncode == 0:
            record["base_commit"] = r.stdout.strip().decode("ascii", "replace")
        return record, f"no snapshot: {_failure(_STATUS_ARGS, rc, err)}"
    st = _parse_status_v2(out)
    if st.head_unknown:
        return record, "no snapshot: HEAD cannot be resolved (a broken ref?)"
    record["base_commit"] = st.head
    _, conf_out, _ = procs.finish(p_conf, check=False)
    conf = _parse_config_z(conf_out)

    plan = _plan(repo, st, cwd=cwd, runs_dir=runs_dir, size_cap=size_cap,
                 filemode=_config_true(conf.get("core.filemode"), True))
    record["status"] = plan.lines
    record["skipped"] = plan.skipped
    if not plan.lines:
        record.update(commit=st.head, branch=st.branch, dirty=False)
        return record, None
    if not snapshot:
        return record, "snapshot disabled; the working tree was dirty, so no commit holds the code"
    if not _valid_run_id(run_id):
        return record, f"snapshot failed: run id {run_id!r} cannot be part of a ref name"

    reader = None
    if method == "mktree" and st.head is not None:
        # start reading HEAD's trees while the files are hashed
        reader = _TreeReader(procs, repo.top, repo.oid_hexlen // 2)
    _hash_plan(repo, plan, procs)
    if method == "mktree":
        tree = _tree_via_mktree(repo, st.head, plan.changes, procs, reader)
    elif method == "index":
        tree = _tree_via_temp_index(repo, st.head, plan.changes)
    elif method == "add":
        excl = [os.fsencode(s["path"]) for s in plan.skipped] + plan.excluded
        tree = _tree_via_add_all(repo, excl)
    else:
        raise GitError(f"unknown snapshot method {method!r}")
    base = st.head
    lines = [SNAPSHOT_SUBJECT + run_id, "",
             f"Base: {base or '(none: no commit yet)'}",
             f"Branch: {st.branch or '(detached HEAD)'}"]
    if plan.skipped:
        lines.append(f"Skipped: {len(plan.skipped)} path(s) (see the run record)")
    lines.append(f"{RUN_TRAILER}: {run_id}")
    if runs_dir:
        where = os.path.abspath(os.path.join(cwd, runs_dir))
        if where.isprintable():
            lines.append(f"{RUNS_DIR_TRAILER}: {where}")
    args = ["commit-tree", "--no-gpg-sign", tree]
    if base:
        args += ["-p", base]
    args += ["-m", "\n".join(lines)]
    commit = _git(args, repo.top, env=_identity_env(conf)).stdout.strip().decode("ascii")
    if len(commit) != repo.oid_hexlen:
        raise GitError("git commit-tree gave no commit")
    name = _create_run_ref(repo, run_id, commit)
    record.update(commit=commit, branch=name, snapshot_branch=name)
    return record, None


# --------------------------------------------------------------------------------------------------
# diff / restore


def _worktree_tree(repo_dir: str, runs_dir: Optional[str], size_cap: Optional[int]
                   ) -> Tuple[str, List[Dict[str, str]]]:
    """A tree holding the working tree as a snapshot would (no commit, no ref, index untouched)."""
    repo = _locate(repo_dir)
    with _Procs() as procs:
        st = _parse_status_v2(_git(_STATUS_ARGS, repo.top).stdout)
        conf = _parse_config_z(_git(["config", "-z", "--get-regexp", r"^core\.filemode$"],
                                    repo.top, check=False).stdout)
        plan = _plan(repo, st, cwd=repo_dir, runs_dir=runs_dir, size_cap=size_cap,
                     filemode=_config_true(conf.get("core.filemode"), True))
        _hash_plan(repo, plan, procs)
        return _tree_via_mktree(repo, st.head, plan.changes, procs), plan.skipped


def diff(
    repo: str,
    a: str,
    b: Optional[str] = None,
    *,
    stat: bool = False,
    paths: Optional[Sequence[str]] = None,
    runs_dir: Optional[str] = None,
    size_cap: Optional[int] = DEFAULT_SIZE_CAP,
) -> str:
    """The code diff from commit ``a`` to commit ``b``, or to the working tree when ``b`` is None.

    The working tree side includes untracked files that are not ignored (untracked files over
    ``size_cap`` are left out and named in a leading ``# exprag-plus:`` comment line, which ``git
    apply`` ignores); it is built as an unreferenced tree, so no ref, index or file changes.
    """
    _check_repo_dir(repo)
    _check_rev(a)
    skipped: List[Dict[str, str]] = []
    if b is None:
        right, skipped = _worktree_tree(repo, runs_dir, size_cap)
    else:
        right = _check_rev(b)
    return _diff(repo, a, right, stat=stat, paths=paths, skipped=skipped)


def _diff(repo: str, left: str, right: str, *, stat: bool, paths: Optional[Sequence[str]],
          skipped: List[Dict[str, str]]) -> str:
    args: List[str] = ["-c", "core.quotePath=false", "-c", "diff.noprefix=false",
                       "-c", "diff.mnemonicPrefix=false", "diff", "--no-color", "--no-ext-diff",
                       "--no-textconv"]
    if stat:
        args += ["--stat=1000", "--stat-graph-width=40", "--summary"]
    args += [left, right, "--"]
    if paths:
        if isinstance(paths, (str, bytes)):
            paths = [paths]  # type: ignore[list-item]
        args += [os.fsdecode(p) for p in paths]
    out = _git(args, repo).stdout.decode("utf-8", "replace")
    if skipped:
        notes = "".join(f"# exprag-plus: not in the diff: {s['path']} ({s['reason']})\n" for s in skipped)
        out = notes + out
    return out


def add_worktree(repo: str, commit: str, into: Optional[str] = None) -> str:
    """A new detached worktree at exactly ``commit``; returns its absolute path.

    Default location: ``<git common dir>/exprag-plus-worktrees/<12 hex>-<n>`` (inside ``.git``, so it
    never shows in the user's ``git status`` and goes away with the repository; ``git worktree list``
    shows it and ``git worktree remove`` removes it). The current checkout is not touched.
    """
    _check_repo_dir(repo)
    oid = resolve_commit(repo, commit)
    if into is None:
        info = _locate(repo)
        base = os.path.join(info.common_dir, WORKTREES_DIRNAME)
        try:
            os.makedirs(base, exist_ok=True)
        except OSError as exc:
            raise GitError(f"cannot create {base}: {exc}") from None
        n = 1
        while os.path.lexists(os.path.join(base, f"{oid[:12]}-{n}")):
            n += 1
        target = os.path.join(base, f"{oid[:12]}-{n}")
    else:
        target = os.path.abspath(os.fspath(into))
        if os.path.lexists(target):
            if not os.path.isdir(target) or os.path.islink(target):
                raise GitError(f"target exists and is not a directory: {target}")
            if os.listdir(target):
                raise GitError(f"target exists and is not empty: {target}")
    _git(["worktree", "add", "--detach", "--quiet", target, oid], repo)
    return target


def remove_worktree(repo: str, path: str) -> None:
    """Remove a worktree made by `add_worktree` (its files and git's record of it)."""
    _check_repo_dir(repo)
    _git(["worktree", "remove", "--force", os.path.abspath(path)], repo)


def _dirty_paths(repo: str) -> List[str]:
    out = _git(["status", "--porcelain=v1", "-z", "--untracked-files=all"], repo).stdout
    recs = out.split(b"\0")
    items: List[str] = []
    i = 0
    while i < len(recs):
        rec = recs[i]
        i += 1
        if len(rec) < 4:
            continue
        xy, path = rec[:2].decode("ascii", "replace"), _text(rec[3:])
        if xy[0] in "RC":
            i += 1  # the source path follows
        items.append(f"{xy.strip()} {path}")
    return items


class WouldOverwrite(GitError):
    """A checkout would replace files git does not track (git overwrites ignored ones without a word)."""

    def __init__(self, paths: List[str]) -> None:
        shown = ", ".join(paths[:8]) + (f" and {len(paths) - 8} more" if len(paths) > 8 else "")
        super().__init__(f"checkout would overwrite {len(paths)} path(s) that git does not track (ignored or "
                         f"untracked) and that differ from the commit's: {shown}")
        self.paths = paths


def _blob_oid(repo: _Repo, content: bytes) -> str:
    import hashlib

    h = hashlib.new(repo.algo)
    h.update(b"blob %d\0" % len(content))
    h.update(content)
    return h.hexdigest()


def _untracked_in_the_way(repo_dir: str, oid: str) -> List[str]:
    """Paths on disk, not in the index, that checking ``oid`` out would replace with different content
    (a file the commit holds, or a file or folder where the commit needs the other)."""
    repo = _locate(repo_dir)
    top = repo.top
    tracked = set(_git(["ls-files", "-z"], top).stdout.split(b"\0"))
    listing = _git(["ls-tree", "-r", "-z", "--full-tree", oid], top).stdout
    found: Dict[bytes, None] = {}
    compare: List[Tuple[bytes, str]] = []
    for rec in listing.split(b"\0"):
        if not rec:
            continue
        meta, _, path = rec.partition(b"\t")
        mode, _, blob = meta.split(b" ")
        if path in tracked:
            continue
        parts = path.split(b"/")
        for k in range(1, len(parts)):
            pre = b"/".join(parts[:k])
            full = os.path.join(os.fsencode(top), pre)
            if pre not in tracked and os.path.lexists(full) and (os.path.islink(full) or not os.path.isdir(full)):
                found[pre] = None
        full = os.path.join(os.fsencode(top), path)
        if not os.path.lexists(full) or int(mode, 8) == _MODE_GITLINK:
            continue
        if os.path.isdir(full) and not os.path.islink(full):
            found[path + b"/"] = None
        elif int(mode, 8) == _MODE_LINK:  # a file holding the target where symlinks are off
            if os.path.islink(full):
                content = os.readlink(full)
            else:
                with open(full, "rb") as fh:
                    content = fh.read()
            if _blob_oid(repo, content) != blob.decode("ascii"):
                found[path] = None
        elif os.path.islink(full):
            found[path] = None
        else:
            compare.append((path, blob.decode("ascii")))
    if compare:
        out = _git(["hash-object", "--stdin-paths"], top,
                   input=b"".join(_stdin_path(p) + b"\n" for p, _ in compare)).stdout.decode("ascii").split()
        for (path, want), got in zip(compare, out):
            if got != want:
                found[path] = None
    return [_text(p) for p in found]


def checkout(repo: str, commit: str, *, force: bool = False) -> None:
    """Check ``commit`` out (detached HEAD) in the checkout at ``repo``, only when nothing but ignored
    files differs from HEAD (else GitError naming what is dirty) and, unless ``force``, when no file git
    does not track would be replaced by a different one (else WouldOverwrite naming them)."""
    _check_repo_dir(repo)
    oid = resolve_commit(repo, commit)
    if not force:
        in_the_way = _untracked_in_the_way(repo, oid)
        if in_the_way:
            raise WouldOverwrite(in_the_way)
    dirty = _dirty_paths(repo)
    if dirty:
        shown = ", ".join(dirty[:8]) + (f" and {len(dirty) - 8} more" if len(dirty) > 8 else "")
        raise GitError(f"working tree is not clean ({shown}); commit, stash or remove these first")
    _git(["-c", "advice.detachedHead=false", "checkout", "--quiet", "--detach", oid], repo)


def run_branches(repo: str) -> List[Tuple[str, str]]:
    """(full ref name, run id) for every snapshot ref: ``refs/heads/run/*`` and the fallback
    ``refs/exprag-plus/run/*``."""
    _check_repo_dir(repo)
    out = _git(["for-each-ref", "--format=%(refname)", RUN_REF_PREFIX, FALLBACK_REF_PREFIX],
               repo).stdout
    result: List[Tuple[str, str]] = []
    for line in out.decode("utf-8", "replace").splitlines():
        for prefix in (RUN_REF_PREFIX, FALLBACK_REF_PREFIX):
            if line.startswith(prefix) and len(line) > len(prefix):
                result.append((line, line[len(prefix):]))
                break
    return result


def _snapshot_facts(message: str, run_id: str) -> Tuple[bool, Optional[str]]:
    """(whether ``message`` is the one a snapshot for ``run_id`` gets, the runs folder it names)."""
    lines = message.splitlines()
    if not lines or lines[0] != SNAPSHOT_SUBJECT + run_id:
        return False, None
    runs_dir = None
    for line in lines[1:]:
        key, sep, value = line.partition(": ")
        if sep and key == RUN_TRAILER and value.strip() != run_id:
            return False, None
        if sep and key == RUNS_DIR_TRAILER:
            runs_dir = value.strip() or None
    return True, runs_dir


def snapshot_refs(repo: str) -> List[Dict[str, Any]]:
    """Every ref in the snapshot namespaces (``refs/heads/run/*``, ``refs/exprag-plus/run/*``) with
    ``ours``: it points at the snapshot commit exprag-plus wrote for the run id its name holds (so a
    user's ``run/ideas`` branch, or a snapshot branch moved by new commits, is not ours), and
    ``runs_dir``: the runs folder that snapshot's run was recorded in (None for older snapshots)."""
    _check_repo_dir(repo)
    out = _git(["for-each-ref", "--format=%(objectname) %(objecttype) %(refname)", RUN_REF_PREFIX,
                FALLBACK_REF_PREFIX], repo).stdout
    result: List[Dict[str, Any]] = []
    for line in out.decode("utf-8", "replace").splitlines():
        oid, typ, ref = line.split(" ", 2)
        prefix = next((p for p in (RUN_REF_PREFIX, FALLBACK_REF_PREFIX) if ref.startswith(p)), None)
        if prefix is None or len(ref) == len(prefix):
            continue
        run_id = ref[len(prefix):]
        result.append({"ref": ref, "run_id": run_id, "commit": oid, "ours": False, "runs_dir": None,
                       "_read": typ == "commit" and _valid_run_id(run_id)})
    wanted = [r for r in result if r.pop("_read")]
    if wanted:  # whole commit objects, framed by their sizes: no message can shift the parse
        data = _git(["cat-file", "--batch"], repo,
                    input="".join(r["commit"] + "\n" for r in wanted).encode("ascii")).stdout
        pos = 0
        for r in wanted:
            nl = data.index(b"\n", pos)
            header = data[pos:nl].split()
            size = int(header[2]) if len(header) == 3 else 0
            body = data[nl + 1:nl + 1 + size]
            pos = nl + 1 + size + (1 if len(header) == 3 else 0)
            message = body.partition(b"\n\n")[2].decode("utf-8", "replace")
            r["ours"], r["runs_dir"] = _snapshot_facts(message, r["run_id"])
    return result


def worktrees(repo: str) -> List[Dict[str, Any]]:
    """Every worktree of the repository, main first: {path, branch (full ref or None), bare}. The main
    worktree's path also comes from ``--git-common-dir``, so a missing listing still names it."""
    _check_repo_dir(repo)
    found: List[Dict[str, Optional[str]]] = []
    out = _git(["worktree", "list", "--porcelain"], repo, check=False).stdout
    for block in out.split(b"\n\n"):
        path = branch = None
        bare = False
        for line in block.split(b"\n"):
            if line.startswith(b"worktree "):
                path = os.fsdecode(line[len(b"worktree "):])
            elif line.startswith(b"branch "):
                branch = os.fsdecode(line[len(b"branch "):])
            elif line == b"bare":
                bare = True
        if path:
            found.append({"path": path, "branch": branch, "bare": bare})
    common = _git(["rev-parse", "--git-common-dir"], repo, check=False)
    if common.returncode == 0:
        path = os.path.normpath(os.path.join(repo, os.fsdecode(common.stdout.rstrip(b"\n"))))
        if os.path.basename(path) == ".git":
            main = os.path.dirname(path)
            if not any(os.path.realpath(w["path"] or "") == os.path.realpath(main) for w in found):
                found.insert(0, {"path": main, "branch": None, "bare": False})
    return found


def delete_ref(repo: str, ref: str, expected: Optional[str] = None) -> None:
    """Delete one snapshot ref (``refs/heads/run/<id>``, ``run/<id>`` or ``refs/exprag-plus/run/<id>``),
    only while it still points at ``expected`` when given.

    Refuses any other ref, and a run branch that a worktree has checked out."""
    _check_repo_dir(repo)
    if not isinstance(ref, str) or ref.startswith("-"):
        raise GitError(f"not a run snapshot ref: {ref!r}")
    full = ref if ref.startswith("refs/") else "refs/heads/" + ref
    prefix = next((p for p in (RUN_REF_PREFIX, FALLBACK_REF_PREFIX) if full.startswith(p)), None)
    if prefix is None or not _valid_run_id(full[len(prefix):]):
        raise GitError(f"not a run snapshot ref: {ref}")
    if any(w["branch"] == full for w in worktrees(repo)):
        raise GitError(f"{full} is checked out in a worktree; switch away from it first")
    args = ["update-ref", "-d", full]
    if expected is not None:
        args.append(_check_rev(expected))
    _git(args, repo)

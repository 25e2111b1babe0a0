"""A run's code: diff it, restore it, replay it, and collect snapshot branches nobody needs.

Built on git.py (every git call) and store.py (the records); the CLI and the MCP server format what
these functions return. Nothing here changes the user's checkout, except `restore(..., checkout=True)`,
which git.checkout refuses on a dirty tree or (unless forced) when it would replace untracked or ignored files.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any, Dict, List, Optional

from . import git, ids, query, records, share
from .experiment import ENV_REPLAY_OF
from .store import Run


class CodeStateError(RuntimeError):
    """The run's code cannot be reached (no git state, no commit, repository gone): exit 1."""


def _repo(run: Run) -> str:
    """The repository holding the run's commits: the one the user is in when it has the run's commit
    (a clone that pulled the run may sit beside the recorder's clone on a shared disk: worktrees and
    replays belong to the clone asked from), else the recorded top level, else the current one."""
    g = run.git or {}
    commit = g.get("commit") or g.get("base_commit")
    here = git.toplevel(os.getcwd())
    if here and (not commit or git.commit_exists(here, commit)):
        return here
    top = g.get("toplevel")
    if top and os.path.isdir(top) and git.toplevel(top):
        return git.toplevel(top) or top
    if here:
        return here
    raise CodeStateError(f"run {run.short_id}: its repository {top or '(unknown)'} is gone and the current "
                         "folder is not in a git repository")


def commit_of(run: Run) -> str:
    """The commit holding the code that ran (the snapshot for a dirty run); never a moved branch tip."""
    g = run.git
    if not g:
        raise CodeStateError(f"run {run.short_id} has no git state ({run.git_error or 'not recorded'})")
    commit = g.get("commit")
    if not commit:
        raise CodeStateError(f"run {run.short_id} has no snapshot of its dirty tree "
                             f"({run.git_error or 'snapshot failed'}); its base commit is {g.get('base_commit')}")
    return commit


def code_ref(run: Run) -> Dict[str, Any]:
    g = run.git or {}
    return {"run_id": run.run_id, "short_id": run.short_id, "commit": g.get("commit"), "branch": g.get("branch"),
            "dirty": g.get("dirty"), "base_commit": g.get("base_commit")}


def same_code(run: Run) -> Optional[Dict[str, str]]:
    """For a dirty run: a later commit on a local branch holding exactly the code that ran, else None."""
    g = run.git or {}
    if not g.get("dirty") or not g.get("commit") or not g.get("base_commit"):
        return None
    try:
        return git.same_tree_commit(_repo(run), g["commit"], g["base_commit"])
    except (CodeStateError, git.GitError):
        return None


def show(run: Run) -> Dict[str, Any]:
    """`query.show` plus what only git knows: the later commit holding the same code (`same_code`)."""
    out = query.show(run)
    out["same_code"] = same_code(run)
    return out


def diff(a: Run, b: Optional[Run] = None, *, stat: bool = False, max_lines: Optional[int] = None,
         runs_dir: Optional[str] = None, base: bool = False) -> Dict[str, Any]:
    """The code diff from run `a` to run `b`, or to the current working tree when `b` is None; with
    `base`, the run's own change: from the commit it started from to the code that ran."""
    left = commit_of(a)
    right = commit_of(b) if b is not None else None
    if base:
        if b is not None:
            raise ValueError("diff --base shows one run's change against the commit it started from: give one run")
        g = a.git or {}
        right = left
        left = g.get("base_commit") or left  # a clean run ran its commit: no change
    repo = _repo(a)
    for commit, run in ((left, a), (right, b or a)):
        if commit and not git.commit_exists(repo, commit):
            raise CodeStateError(f"commit {commit[:12]} of run {run.short_id} is not in {repo} "  # type: ignore[union-attr]
                                 "(was its run/<id> branch deleted?)")
    text = git.diff(repo, left, right, stat=stat, runs_dir=runs_dir)
    lines = text.splitlines()
    truncated = bool(max_lines and max_lines > 0 and len(lines) > max_lines)
    if truncated:
        text = "\n".join(lines[:max_lines]) + "\n"
    return {"a": code_ref(a), "b": code_ref(b) if b is not None else ("base" if base else "worktree"),
            "repo": repo, "stat": stat, "base": base,
            "lines": len(lines), "truncated": truncated, "diff": text}


class WouldOverwrite(ValueError):
    """`restore --checkout` would replace files git does not track: refused (exit 2) unless forced."""


def restore(run: Run, into: Optional[str] = None, checkout: bool = False, force: bool = False) -> Dict[str, Any]:
    """The run's exact code in a new worktree (the checkout is untouched), or, with `checkout`, in the
    current checkout when it is clean and (unless `force`) no untracked or ignored file would be replaced."""
    commit = commit_of(run)
    repo = _repo(run)
    subdir = (run.git or {}).get("subdir") or ""
    if checkout:
        try:
            git.checkout(repo, commit, force=force)
        except git.WouldOverwrite as exc:
            raise WouldOverwrite(f"restore --checkout refused: {exc}; move them away, or pass --force to "
                                 "overwrite them") from None
        return {"run_id": run.run_id, "commit": commit, "path": repo, "cwd": _under(repo, subdir),
                "checked_out": True}
    path = git.add_worktree(repo, commit, into)
    return {"run_id": run.run_id, "commit": commit, "path": path, "cwd": _under(path, subdir), "checked_out": False}


def _under(path: str, subdir: str) -> str:
    return os.path.join(path, subdir) if subdir else path


def replay_command(run: Run, workdir: str) -> List[str]:
    """The recorded command line, for the current interpreter, with paths mapped into `workdir`'s tree.

    A run recorded by `exprag-plus run -- CMD` replays as `exprag-plus run -- CMD` again."""
    proc = run.process
    command = run.start.get("command")
    wrapped = isinstance(command, dict) and isinstance(command.get("argv"), list) and command["argv"]
    argv = [str(a) for a in (command["argv"] if wrapped else proc.get("argv") or [])]
    if not argv or argv[0] in ("-c", "-"):
        raise ValueError(f"run {run.short_id} was started from `python -c` or stdin: its command cannot be replayed")
    hidden = [i for i, a in enumerate(argv) if records.REDACTED in a]
    if hidden:
        raise ValueError(f"run {run.short_id}'s command line had credentials redacted (argument "
                         f"{hidden[0]}: {argv[hidden[0]]!r}); replay cannot re-create them: run it by hand")
    top = (run.git or {}).get("toplevel")
    if top:
        argv = [os.path.join(workdir, os.path.relpath(a, top)) if os.path.isabs(a) and
                (a == top or a.startswith(top.rstrip(os.sep) + os.sep)) else a for a in argv]
    if wrapped:
        meta = [f"--meta={k}={json.dumps(v)}" for k, v in (run.start.get("metadata") or {}).items()
                if isinstance(run.start.get("metadata"), dict) and "." not in str(k)]
        how = run.start.get("command") or {}
        opts = [f"--parse={p}" for p in how.get("parse") or [] if isinstance(p, str)]
        opts += ["--no-parse"] if how.get("no_parse") is True else []
        opts += [f"--timeout={how['timeout']!r}"] if records.is_number(how.get("timeout")) else []
        return [sys.executable, "-m", __package__ or "exprag_plus", "run", "--name", run.name, *meta, *opts, "--", *argv]
    if proc.get("module"):
        return [sys.executable, "-m", proc["module"], *argv[1:]]
    return [sys.executable, *argv]


def replay(run: Run, runs_dir: str, *, dry_run: bool = False, stdout: Any = None,
           into: Optional[str] = None) -> Dict[str, Any]:
    """Re-run a run's command on its own code in a new worktree (at `into`, as `restore`); the new run
    records `replay_of`."""
    commit = commit_of(run)
    subdir = (run.git or {}).get("subdir") or ""
    if dry_run:
        where = os.path.abspath(into) if into else "<worktree>"
        cmd = replay_command(run, where)
        return {"run_id": run.run_id, "commit": commit, "command": cmd, "cwd": _under(where, subdir),
                "dry_run": True}
    replay_command(run, "<worktree>")  # refuse before creating anything
    restored = restore(run, into)
    cmd = replay_command(run, restored["path"])
    cwd = restored["cwd"]
    before = set(ids.run_files(runs_dir))
    env = dict(os.environ)
    env[ids.ENV_DIR] = runs_dir
    env[ENV_REPLAY_OF] = run.run_id
    if not os.path.isdir(cwd):
        os.makedirs(cwd, exist_ok=True)
    code = subprocess.call(cmd, cwd=cwd, env=env, stdout=stdout)
    new = [p for p in ids.run_files(runs_dir) if p not in before]
    replays = [Run.read(p, full=True) for p in new]
    replays = [r for r in replays if r.replay_of == run.run_id] or replays
    return {"run_id": run.run_id, "commit": commit, "command": cmd, "cwd": cwd, "worktree": restored["path"],
            "exit_code": code, "dry_run": False, "new_runs": [r.run_id for r in replays],
            "new_run": replays[-1] if replays else None}


def _known_runs_folders(runs_dir: str, repo: str) -> List[str]:
    """Every runs folder gc can know of: this one, $EXPRAG_PLUS_DIR, each worktree's default `.runs`
    (the main worktree's included)."""
    folders = [runs_dir]
    env = os.environ.get(ids.ENV_DIR)
    if env:
        folders.append(os.path.abspath(env))
    folders += [os.path.join(w["path"], ids.RUNS_DIRNAME) for w in git.worktrees(repo) if w["path"]]
    out: List[str] = []
    for f in folders:
        if os.path.isdir(f) and not any(os.path.realpath(f) == os.path.realpath(o) for o in out):
            out.append(f)
    return out


def gc(runs_dir: str, repo: Optional[str] = None, dry_run: bool = False) -> Dict[str, Any]:
    """Delete the snapshot refs exprag-plus made (`run/<id>` pointing at the snapshot commit it wrote for
    that id) whose run exists in no runs folder gc can know of and whose commit no run records.

    Any other ref under `run/` (a user's branch, a snapshot branch with new commits on it) is left alone,
    and so is everything outside `refs/heads/run/` and `refs/exprag-plus/run/`. A dry run lists exactly
    what a real one deletes. A run pushed or pulled (a refs/exprag-plus/runs/<id> ref, never deleted here)
    keeps its code."""
    repo = repo or git.toplevel(os.getcwd())
    if not repo:
        raise ValueError("the current folder is not in a git repository: run gc inside the project")
    refs = git.snapshot_refs(repo)
    folders = _known_runs_folders(runs_dir, repo)
    files = [p for f in folders for p in ids.run_files(f)]
    have = {os.path.basename(p)[: -len(ids.SUFFIX)] for p in files}
    have |= share.shared_run_ids(repo)  # a pushed or pulled run keeps its code (it may be the only copy)
    checked_out = {w["branch"] for w in git.worktrees(repo) if w["branch"]}
    ours = [r for r in refs if r["ours"] and ids.is_run_id(r["run_id"])]
    not_ours = [{"ref": r["ref"], "reason": "not a snapshot exprag-plus made for that run id"}
                for r in refs if r not in ours]

    def needed(r: Dict[str, Any]) -> bool:
        recorded = r["runs_dir"]
        return (r["run_id"] in have or r["ref"] in checked_out
                or bool(recorded and os.path.isfile(os.path.join(recorded, r["run_id"] + ids.SUFFIX))))

    orphans = [r for r in ours if not needed(r)]
    if orphans:  # a replay records its original's snapshot commit: that code must stay reachable
        used = {(run.git or {}).get("commit") for run in (Run.read(p) for p in files)}
        orphans = [r for r in orphans if r["commit"] not in used]
    if orphans and not ids.run_files(runs_dir):
        raise ValueError(f"no run files in {runs_dir}; refusing to delete {len(orphans)} snapshot ref(s) "
                         "(is --root right?)")
    deleted, failed = [], []
    for r in orphans:
        if dry_run:
            deleted.append(r["ref"])
            continue
        try:
            git.delete_ref(repo, r["ref"], r["commit"])
            deleted.append(r["ref"])
        except git.GitError as exc:
            failed.append({"ref": r["ref"], "error": str(exc)})
    return {"repo": repo, "runs_dir": runs_dir, "searched": folders, "dry_run": dry_run, "deleted": deleted,
            "failed": failed, "kept": len(ours) - len(orphans), "not_ours": not_ours}

"""Sharing runs through git remotes (`push` / `pull`), and merging a runs folder copied from elsewhere.

Refs (only `refs/exprag-plus/*` and objects are ever written; never a branch, tag, HEAD, index,
worktree, config or FETCH_HEAD; no hook runs):

* ``refs/exprag-plus/runs/<run_id>``: the run as last pushed from or pulled to this repository. Its
  tree holds ``<run_id>.jsonl`` (complete lines only: a live run's half-written last line is never
  shared) and ``<run_id>/output.log`` when the runs folder has it. First parent: the previous push
  (none for the first, whose only parent is then the code commit); other parent: the run's code
  commit (``run_start.git.commit``) when this repository has it, so fetching a run brings its code.
  A push that met another machine's update makes a merge commit of both runs commits.
* ``refs/exprag-plus/remotes/<remote>/runs/<run_id>``: a remote's copy fetched for a merge (a push
  rejected because the remote moved, a pull whose local ref has commits the remote lacks) or by a dry
  run (forced: it mirrors the remote). A URL or path gets ``url-<hash>`` as its name, never the URL.

Push: a run goes out when the tree it would commit (hashed in Python from its file and output.log)
differs from its local ref's tree (one ``for-each-ref`` lists them, so a push with nothing changed
reads no object and contacts no remote). A run commit's subject carries a stamp: a hash of the
identities (size, mtime, inode, device) its files had when it was committed, and its tree; while they
and the ref hold, the files are not even read. Its commit is built by one ``git fast-import`` fed
while the files are still being read (no signing; the user's identity else a fixed fallback; every
commit on one scratch branch that is never written), the run refs move in one ``update-ref``
transaction from the commits they were built on, then one ``git push`` with a never-forced glob
refspec (explicit refspecs for chosen runs). Rejected runs are fetched, merged and pushed again
(bounded); a commit that never reached the remote is rolled back from the local ref, which keeps
meaning "last shared". Pull: one non-forced fetch into the local refs,
then each run file is written (new, or merged) by atomic replace.

Merging: when both sides hold lines the other lacks, the result is the union of distinct lines ordered
by ``time``, then ``seq``, then the line itself (so every machine computes the same bytes); when one side
holds every line of the other, that side is kept byte for byte. Nothing is dropped or rewritten.
A run that is live here (no run_end, its process alive) is never replaced: it is skipped with a warning
and merged by a later pull. A run file from elsewhere that is not UTF-8 JSONL with a matching run_start
first line is refused (one line each) while the others come.
"""

from __future__ import annotations

import errno
import hashlib
import itertools
import json
import os
import random
import re
import stat as _stat
import tempfile
import time
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

from . import files, git, ids, records

REF_PREFIX = "refs/exprag-plus/runs/"
REMOTES_PREFIX = "refs/exprag-plus/remotes/"
LOG_NAME = "output.log"
RETRIES = 5
_SCRATCH = "refs/exprag-plus/building"  # fast-import's one branch; reset at the end, so never written
# glibc hands fast-import's per-object zlib and delta buffers back to the kernel after every object and
# faults them in again: half its time for a thousand small runs. Keeping them (a few MiB at most) halves it.
_FAST_IMPORT_ENV = {"MALLOC_TRIM_THRESHOLD_": str(64 << 20), "MALLOC_TOP_PAD_": str(1 << 20)}
_CHUNK = 2000  # refspecs per git push/fetch command line (one command for up to this many runs)
_STAMP = re.compile(r" \(stamp ([0-9a-f]{40})\)$")
_SCP_URL = re.compile(r"^[A-Za-z0-9._-]+@[A-Za-z0-9._-]+:")


class ShareError(RuntimeError):
    """A push or pull that could not be done (exit 1); the message is one line, credentials hidden."""


def redact(text: str) -> str:
    return records.redact_argv([str(text)])[0]


def _git(args: Sequence[str], cwd: str, **kw: Any) -> Any:
    try:
        return git._git(args, cwd, **kw)
    except git.GitError as exc:
        raise ShareError(redact(str(exc))) from None


# --- run file contents ----------------------------------------------------------------------------


def split_torn(data: bytes) -> Tuple[bytes, bytes]:
    """(complete lines, torn tail): only complete lines are shared or merged."""
    cut = data.rfind(b"\n") + 1
    return data[:cut], data[cut:]


def check_run_file(data: bytes, run_id: str) -> Optional[str]:
    """None when `data` (complete lines) is a run file of `run_id`; else why it is not."""
    if not data.strip():
        return "it is empty"
    if b"\0" in data:
        return "it is binary, not JSONL"
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return "it is not UTF-8"
    lines = [ln for ln in text.split("\n")[:-1] if ln.strip()]
    try:  # one parse for the whole file; a line that is not exactly one object shows in the count
        recs = json.loads("[" + ",\n".join(lines) + "]")
    except (ValueError, RecursionError):
        recs = None
    if recs is None or len(recs) != len(lines) or not all(ln.lstrip().startswith("{") for ln in lines):
        recs = []
        for n, line in enumerate(text.split("\n")[:-1], 1):
            if line.strip():
                try:
                    recs.append(json.loads(line))
                except (ValueError, RecursionError):
                    return f"line {n} is not JSON"
    if not all(isinstance(r, dict) and isinstance(r.get("type"), str) for r in recs):
        return "a line is not a record (a JSON object with a type)"
    if not recs:
        return "it holds no complete record"
    if recs[0]["type"] != "run_start":
        return "its first record is not a run_start"
    if recs[0].get("run_id") != run_id:
        return f"its run_start names run {str(recs[0].get('run_id'))[:60]!r}, not {run_id}"
    return None


def _key(line: bytes) -> Tuple[str, int, bytes]:
    try:
        rec = json.loads(line)
    except (ValueError, RecursionError):
        rec = None
    if not isinstance(rec, dict):
        return ("", -1, line)
    t, s = rec.get("time"), rec.get("seq")
    return (t if isinstance(t, str) else "", s if isinstance(s, int) and not isinstance(s, bool) else -1, line)


def merge_lines(a: bytes, b: bytes) -> bytes:
    """The union of two runs' complete lines (see the module docstring); commutative."""
    if a == b:
        return a
    la = [x for x in a.split(b"\n")[:-1] if x.strip()]
    lb = [x for x in b.split(b"\n")[:-1] if x.strip()]
    sa, sb = set(la), set(lb)
    if sa != sb:
        if sb <= sa:
            return a
        if sa <= sb:
            return b
    return b"".join(x + b"\n" for x in sorted(sa | sb, key=_key))


def merge_log(local: Optional[bytes], other: Optional[bytes]) -> Tuple[Optional[bytes], bool]:
    """(the output.log to keep, whether the two disagreed): the longer when one extends the other."""
    if local is None or other is None or local == other:
        return (other if local is None else local), False
    if other.startswith(local):
        return other, False
    if local.startswith(other):
        return local, False
    return local, True


def _object_id(kind: bytes, data: bytes, algo: str) -> str:
    h = hashlib.sha256() if algo == "sha256" else hashlib.sha1()
    h.update(b"%s %d\0" % (kind, len(data)))
    h.update(data)
    return h.hexdigest()


def _blob_id(data: bytes, algo: str) -> str:
    return _object_id(b"blob", data, algo)


def _tree_id(run_id: str, lines: bytes, log: Optional[bytes], algo: str) -> str:
    """The id of the tree a push commits for these contents, so "unchanged" needs no git call."""
    entries = b"100644 %s%s\0%s" % (run_id.encode(), ids.SUFFIX.encode(), bytes.fromhex(_blob_id(lines, algo)))
    if log is not None:  # "<id>.jsonl" sorts before the folder "<id>/" ('.' < '/')
        sub = b"100644 %s\0%s" % (LOG_NAME.encode(), bytes.fromhex(_blob_id(log, algo)))
        entries += b"40000 %s\0%s" % (run_id.encode(), bytes.fromhex(_object_id(b"tree", sub, algo)))
    return _object_id(b"tree", entries, algo)


class _Local:
    """One run file of the runs folder: its complete lines, torn tail and output.log."""

    def __init__(self, runs_dir: str, run_id: str, has_dir: bool = True) -> None:
        """`has_dir` False: the runs folder listing showed no `<run_id>/`, so there is no log to look for."""
        self.run_id = run_id
        self.path = os.path.join(runs_dir, run_id + ids.SUFFIX)
        self.log_path = os.path.join(runs_dir, run_id, LOG_NAME)
        data, ident = _read_if_file(self.path)
        self.exists = data is not None
        self.lines, self.tail = split_torn(data or b"")
        self.log, log_ident = _read_if_file(self.log_path) if has_dir else (None, "-")
        self.identity = f"{ident}|{log_ident}"
        self._start: Optional[Dict[str, Any]] = None

    def live(self) -> bool:
        from . import store  # only merges ask; a push of unchanged runs never loads the reader

        return self.exists and store.Run.read(self.path).status == "running"

    def start(self) -> Dict[str, Any]:
        if self._start is None:
            try:
                rec = json.loads(self.lines[: self.lines.find(b"\n")])
            except (ValueError, RecursionError):
                rec = None
            self._start = rec if isinstance(rec, dict) else {}
        return self._start

    def check_start(self) -> Optional[str]:
        """Why this file cannot be pushed (its first line is not this run's run_start), or None.
        Pushing checks only that much of our own file; a puller checks every line."""
        if not self.lines.strip():
            return "it is empty"
        start = self.start()
        if start.get("type") != "run_start":
            return "its first line is not a run_start record"
        if start.get("run_id") != self.run_id:
            return f"its run_start names run {str(start.get('run_id'))[:60]!r}, not {self.run_id}"
        return None

    def code_commit(self) -> Optional[str]:
        git_state = self.start().get("git")
        commit = git_state.get("commit") if isinstance(git_state, dict) else None
        return commit if isinstance(commit, str) and re.fullmatch(r"[0-9a-f]{40}|[0-9a-f]{64}", commit) else None

    def settle(self, lines: bytes, log: Optional[bytes]) -> bool:
        """Write merged lines (and log) in place by atomic replace; False when nothing changed."""
        changed = False
        if lines != self.lines:
            ids.ensure_runs_dir(os.path.dirname(self.path))
            files.write_atomic(self.path, lines + self.tail)
            self.lines, self.exists, changed = lines, True, True
        if log is not None and log != self.log:
            files.write_atomic(self.log_path, log)
            self.log, changed = log, True
        return changed


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


_MISSING = (FileNotFoundError, IsADirectoryError, NotADirectoryError)


def _identity(st: Optional[os.stat_result]) -> str:
    return "-" if st is None else f"{st.st_size}.{st.st_mtime_ns}.{st.st_ino}.{st.st_dev}"


def _read_if_file(path: str) -> Tuple[Optional[bytes], str]:
    """(the file's bytes or None when there is no such file, its identity taken before reading: a line
    appended meanwhile changes the size, so an identity never vouches for bytes it did not see). A
    symlink is no file here: a push must never send what it points at (a planted output.log)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except _MISSING:
        return None, "-"
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return None, "-"
        raise
    with open(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not _stat.S_ISREG(st.st_mode):
            return None, "-"
        return f.read(), _identity(st)


def _stat_identity(path: str) -> str:
    try:
        st = os.lstat(path)
    except _MISSING:
        return "-"
    return "-" if _stat.S_ISLNK(st.st_mode) else _identity(st)


def _stamp(identity: str, tree: str) -> str:
    """What a run commit's subject records: the run file's and output.log's identities when a push
    committed `tree` from them. The same identities and the same ref tree later mean that a push would
    commit that tree again: nothing to send, and no need to read the files. Opaque (a hash): no inode,
    size or time of this machine goes to the remote."""
    return hashlib.sha1(f"{identity}|{tree}".encode()).hexdigest()


# --- git plumbing ---------------------------------------------------------------------------------


class _Repo:
    def __init__(self, cwd: Optional[str]) -> None:
        cwd = os.path.abspath(cwd or os.getcwd())
        try:
            info = git._locate(cwd)
        except git.GitError:
            raise ValueError(f"{cwd} is not inside a git repository: run push/pull inside the project") from None
        self.top, self.algo = info.top, info.algo

    def remotes(self) -> List[str]:
        return _git(["remote"], self.top).stdout.decode("utf-8", "replace").split()

    def refs(self, prefix: str) -> Dict[str, str]:
        out = _git(["for-each-ref", "--format=%(objectname) %(refname)", prefix], self.top).stdout
        got: Dict[str, str] = {}
        for line in out.decode("utf-8", "replace").splitlines():
            oid, _, name = line.partition(" ")
            if name.startswith(prefix):
                got[name[len(prefix):]] = oid
        return got

    def run_trees(self, procs: git._Procs) -> Callable[[], Tuple[Dict[str, str], Dict[str, str], Dict[str, str]]]:
        """Starts one `for-each-ref` of the local run refs; what it returns waits for
        ({run_id: commit}, {run_id: its tree}, {run_id: its subject's stamp})."""
        p = procs.start(["for-each-ref", "--format=%(objectname) %(refname) %(tree) %(contents:subject)",
                         REF_PREFIX], self.top)
        return lambda: self._parse_run_trees(p, procs)

    @staticmethod
    def _parse_run_trees(p: Any, procs: git._Procs) -> Tuple[Dict[str, str], Dict[str, str], Dict[str, str]]:
        rc, out, err = procs.finish(p, check=False)
        if rc != 0:
            raise ShareError(redact(str(git._failure(["for-each-ref"], rc, err))))
        commits: Dict[str, str] = {}
        trees: Dict[str, str] = {}
        stamps: Dict[str, str] = {}
        for line in out.decode("utf-8", "replace").splitlines():
            oid, name, tree, subject = (line.split(" ", 3) + ["", "", ""])[:4]
            if name.startswith(REF_PREFIX):
                rid = name[len(REF_PREFIX):]
                commits[rid], trees[rid] = oid, tree
                m = _STAMP.search(subject)
                if m and tree:
                    stamps[rid] = m.group(1)
        return commits, trees, stamps

    def batch_check(self, names: Sequence[str]) -> Dict[str, Optional[str]]:
        """Object id per revision expression (None when missing), in one `cat-file --batch-check`."""
        if not names:
            return {}
        out = _git(["cat-file", "--batch-check=%(objectname) %(objecttype)"], self.top,
                   input="".join(n + "\n" for n in names).encode("utf-8")).stdout.decode("utf-8", "replace")
        result: Dict[str, Optional[str]] = {}
        for name, line in zip(names, out.splitlines()):
            parts = line.split()
            result[name] = parts[0] if len(parts) == 2 and parts[1] != "missing" else None
        return result

    def read_blobs(self, oids: Iterable[str]) -> Dict[str, bytes]:
        """Blob contents in one `cat-file --batch`."""
        wanted = sorted(set(oids))
        if not wanted:
            return {}
        out = _git(["cat-file", "--batch"], self.top, input="".join(o + "\n" for o in wanted).encode()).stdout
        got: Dict[str, bytes] = {}
        pos = 0
        for oid in wanted:
            nl = out.index(b"\n", pos)
            header = out[pos:nl].split()
            pos = nl + 1
            if len(header) != 3:
                continue
            size = int(header[2])
            got[oid] = out[pos:pos + size]
            pos += size + 1
        return got

    def identity(self) -> str:
        conf = git._parse_config_z(_git(["config", "-z", "--get-regexp", r"^(user|committer)\.(name|email)$"],
                                        self.top, check=False).stdout)
        env = git._identity_env(conf)
        clean = lambda s: re.sub(r"[<>\n]", "", s).strip()
        return f"{clean(env['GIT_COMMITTER_NAME'])} <{clean(env['GIT_COMMITTER_EMAIL'])}> {int(time.time())} +0000"

    def build(self, specs: Iterable[Dict[str, Any]]) -> Dict[str, str]:
        """One `git fast-import` making a commit per spec {run_id, lines, log, parents}, fed while the
        specs are still being made (files read and checked here while git writes objects there), then
        one `git update-ref --stdin` transaction moving refs/exprag-plus/runs/<id> from the first parent
        it was built on (all or none: a ref moved meanwhile fails it); returns {run_id: commit}.
        Every commit is made on one scratch branch that is reset at the end, so fast-import writes no
        ref (a thousand fast-import branches cost it ten times the objects themselves).
        A parent that is not a commit of this repository (code from another clone) is left out."""
        it = iter(specs)
        first = next(it, None)
        if first is None:
            return {}
        who = self.identity()
        commit_marks: Dict[int, str] = {}
        bases: Dict[str, Optional[str]] = {}
        with tempfile.TemporaryDirectory(prefix="exprag-plus-share-") as tmp, git._Procs() as procs:
            marks = os.path.join(tmp, "marks")
            fi = procs.start(["fast-import", "--quiet", "--done", f"--export-marks={marks}"], self.top, stdin=True,
                             env=_FAST_IMPORT_ENV)
            check = procs.start(["cat-file", "--batch-check=%(objecttype)"], self.top, stdin=True)
            known: Dict[str, bool] = {}

            def is_commit(oid: str) -> bool:
                if oid not in known:
                    check.stdin.write(oid.encode() + b"\n")  # type: ignore[union-attr]
                    check.stdin.flush()  # type: ignore[union-attr]
                    known[oid] = check.stdout.readline().strip() == b"commit"  # type: ignore[union-attr]
                return known[oid]

            mark = 0
            try:
                for spec in itertools.chain([first], it):
                    rid = spec["run_id"]
                    mark += 1
                    out = [b"blob\nmark :%d\ndata %d\n" % (mark, len(spec["lines"])), spec["lines"], b"\n"]
                    first_parent = spec["parents"][0]
                    # a first commit inherits no tree; a later one drops its parent's whole tree first
                    body = (["deleteall"] if first_parent else []) + [f"M 100644 :{mark} {rid}{ids.SUFFIX}"]
                    if spec.get("log") is not None:
                        mark += 1
                        out += [b"blob\nmark :%d\ndata %d\n" % (mark, len(spec["log"])), spec["log"], b"\n"]
                        body.append(f"M 100644 :{mark} {rid}/{LOG_NAME}")
                    mark += 1
                    commit_marks[mark] = rid
                    bases[rid] = first_parent
                    others = [p for p in spec["parents"][1:] if p and is_commit(p)]
                    links = ([f"from {first_parent}"] if first_parent else []) + [f"merge {p}" for p in others]
                    stamp = spec.get("identity") and _stamp(spec["identity"], _tree_id(
                        rid, spec["lines"], spec.get("log"), self.algo))
                    msg = f"exprag-plus: run {rid}" + (f" (stamp {stamp})" if stamp else "") + "\n"
                    out.append((f"reset {_SCRATCH}\ncommit {_SCRATCH}\nmark :{mark}\nauthor {who}\n"
                                f"committer {who}\ndata {len(msg)}\n{msg}" + "\n".join(links + body)
                                + "\n\n").encode())
                    fi.stdin.write(b"".join(out))  # type: ignore[union-attr]
                fi.stdin.write(f"reset {_SCRATCH}\n\ndone\n".encode())  # type: ignore[union-attr]
            except BrokenPipeError:
                pass
            rc, _, err = procs.finish(fi, check=False)
            if rc != 0:
                raise ShareError(redact(str(git._failure(["fast-import"], rc, err))))
            built: Dict[str, str] = {}
            with open(marks, encoding="ascii") as f:
                for line in f:
                    m, _, oid = line.strip().partition(" ")
                    rid = commit_marks.get(int(m[1:]))
                    if rid:
                        built[rid] = oid
        zero = "0" * len(next(iter(built.values()), "0" * 40))
        moves = "".join(f"update {REF_PREFIX}{rid} {oid} {bases[rid] or zero}\n" for rid, oid in built.items())
        p = _git(["update-ref", "--stdin"], self.top, input=moves.encode(), check=False)
        if p.returncode != 0:
            why = (p.stderr.decode("utf-8", "replace").strip().splitlines() or ["git update-ref failed"])[-1]
            raise ShareError(f"could not move the run refs ({redact(why)}); another push or pull of this "
                             "repository may have run at the same time: run it again")
        return built

    def is_ancestor(self, a: str, b: str) -> bool:
        return _git(["merge-base", "--is-ancestor", a, b], self.top, check=False).returncode == 0


class _Remote:
    """Where to push/pull: a configured remote name, or a URL/path (its tracking name is a hash)."""

    def __init__(self, repo: _Repo, name: str) -> None:
        if not name or name.startswith("-") or "\n" in name or "\0" in name:
            raise ValueError(f"invalid remote {redact(name)!r}: give a remote name, a URL or a path")
        self.target = name
        self.label = redact(name)
        if name in repo.remotes():
            self.key = name
        elif "://" in name or _SCP_URL.match(name) or os.path.exists(name):
            if os.path.exists(name):
                self.target = os.path.abspath(name)
            self.key = "url-" + hashlib.sha1(self.target.encode("utf-8", "replace")).hexdigest()[:12]
        else:
            raise ValueError(f"no git remote named {self.label!r} in {repo.top}: add one (`git remote add "
                             f"{self.label} URL`) or give a URL or a path")
        if not re.fullmatch(r"[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*", self.key) or ".." in self.key \
                or self.key.endswith((".lock", ".")):
            self.key = "url-" + hashlib.sha1(name.encode("utf-8", "replace")).hexdigest()[:12]
        self.ns = f"{REMOTES_PREFIX}{self.key}/runs/"


def looks_like_remote(repo_cwd: Optional[str], word: str) -> bool:
    """Whether the first positional word of push/pull names a remote (else it is a run)."""
    try:
        repo = _Repo(repo_cwd)
    except ValueError:
        return os.path.exists(word)
    return word in repo.remotes() or "://" in word or bool(_SCP_URL.match(word)) or os.path.exists(word)


def _is_git_dir(path: str) -> bool:
    return os.path.exists(os.path.join(path, ".git")) or (
        os.path.isfile(os.path.join(path, "HEAD")) and os.path.isdir(os.path.join(path, "objects")))


def _select(wanted: Optional[Sequence[str]], have: Iterable[str]) -> Tuple[List[str], List[str]]:
    """Run ids among `have` matching RUN words (full id, unique prefix or 6+ suffix); (ids, unmatched)."""
    have = sorted(set(have))
    if not wanted:
        return have, []
    picked: List[str] = []
    missing: List[str] = []
    for w in wanted:
        key = w.strip().lower()
        compact = key.replace("-", "")
        hits = [r for r in have if r == key] or [r for r in have if r.startswith(key) or r.replace("-", "").startswith(compact)]
        if not hits and len(compact) >= 6:
            hits = [r for r in have if r.replace("-", "").endswith(compact)]
        if len(hits) == 1 and compact:
            picked.append(hits[0])
        else:
            missing.append(w)
    return sorted(set(picked)), missing


# --- push -----------------------------------------------------------------------------------------


def push(runs_dir: str, remote: str = "origin", runs: Optional[Sequence[str]] = None, *,
         dry_run: bool = False, everything: bool = False, cwd: Optional[str] = None) -> Dict[str, Any]:
    """Send the runs whose records changed since their last push, in one `git push`.

    `everything` also sends runs already pushed elsewhere (a new remote); without it a push where
    nothing changed contacts no remote at all."""
    repo = _Repo(cwd)
    with git._Procs() as procs:  # the refs are listed while `git remote` runs and the folder is listed
        listed = repo.run_trees(procs)
        rem = _Remote(repo, remote)
        if runs:
            run_ids = [os.path.basename(ids.resolve(r, runs_dir))[: -len(ids.SUFFIX)] for r in runs]
        else:
            run_ids = [os.path.basename(p)[: -len(ids.SUFFIX)] for p in ids.run_files(runs_dir)]
        run_ids = sorted({r for r in run_ids if ids.is_run_id(r)})
        mine, trees, stamps = listed()
    try:
        with os.scandir(runs_dir) as entries:
            dirs = {e.name for e in entries if e.is_dir()}
    except OSError:
        dirs = None
    res: Dict[str, Any] = {"remote": rem.label, "dry_run": dry_run, "pushed": [], "unchanged": 0, "merged": [],
                           "refused": [], "skipped": []}
    locals_: Dict[str, _Local] = {}
    planned: List[str] = []

    def specs() -> Iterator[Dict[str, Any]]:
        """What to commit, made while fast-import already writes the first ones."""
        need_union: List[str] = []
        for rid in run_ids:
            has_dir = dirs is None or rid in dirs
            if rid in stamps:
                ident = _stat_identity(os.path.join(runs_dir, rid + ids.SUFFIX)) + "|" + (
                    _stat_identity(os.path.join(runs_dir, rid, LOG_NAME)) if has_dir else "-")
                if _stamp(ident, trees[rid]) == stamps[rid]:
                    continue  # as when its ref was committed: not even read
            loc = locals_[rid] = _Local(runs_dir, rid, has_dir)
            if rid in mine and trees[rid] == _tree_id(rid, loc.lines, loc.log, repo.algo):
                continue
            why = loc.check_start()
            if why:
                res["refused"].append({"run_id": rid, "reason": f"run file {loc.path}: {why}; not pushed"})
            elif rid in mine:
                need_union.append(rid)
            else:
                planned.append(rid)
                yield {"run_id": rid, "lines": loc.lines, "log": loc.log, "parents": [None, loc.code_commit()],
                       "identity": loc.identity}
        # the ref may hold lines the file lacks (a pull skipped while the run was live): never shrink
        at = {r: (f"{mine[r]}:{r}{ids.SUFFIX}", f"{mine[r]}:{r}/{LOG_NAME}") for r in need_union}
        have = repo.batch_check([n for pair in at.values() for n in pair])
        blobs = repo.read_blobs([o for r in need_union for o in (have.get(at[r][0]), have.get(at[r][1])) if o])
        for rid in need_union:
            loc = locals_[rid]
            ref_lines = blobs.get(have.get(at[rid][0]) or "", b"")
            if check_run_file(ref_lines, rid):
                ref_lines = b""  # a malformed copy fetched from elsewhere is history, not a base
            ref_log = blobs.get(have.get(at[rid][1]) or "")
            lines = merge_lines(loc.lines, ref_lines)
            log, _ = merge_log(loc.log, ref_log)
            if lines != ref_lines or log != ref_log:
                planned.append(rid)
                yield {"run_id": rid, "lines": lines, "log": log, "parents": [mine[rid], loc.code_commit()],
                       "identity": loc.identity}

    before = dict(mine)
    if dry_run:
        for _ in specs():
            pass
        built: Dict[str, str] = {}
    else:
        built = repo.build(specs())
        mine.update(built)
    if dry_run or (not built and not everything):
        res["pushed"] = sorted(planned) if dry_run else []
        res["unchanged"] = len(run_ids) - len(res["pushed"]) - len(res["refused"])
        return res
    try:
        names = None if not runs else (run_ids if everything else sorted(built))
        _push_loop(repo, rem, sorted(built), names, mine, locals_, res)
    finally:
        _roll_back(repo, before, mine, set(res["pushed"]))
    res["unchanged"] = max(0, len(set(run_ids) - set(res["pushed"])) - len(res["refused"]))
    return res


def _roll_back(repo: _Repo, before: Dict[str, str], mine: Dict[str, str], pushed: set) -> None:
    """Commits that never reached the remote leave the local ref where it was (it means "last pushed")."""
    updates: Dict[str, Tuple[str, Optional[str]]] = {}
    for rid, commit in mine.items():
        if rid in pushed or before.get(rid) == commit:
            continue
        old = before.get(rid)
        updates[REF_PREFIX + rid] = (old or "0" * len(commit), commit)
    if updates:
        lines = [f"update {ref} {new} {old}" if set(new) != {"0"} else f"delete {ref} {old}"
                 for ref, (new, old) in updates.items()]
        _git(["update-ref", "--stdin"], repo.top, input=("\n".join(lines) + "\n").encode(), check=False)


def _push_loop(repo: _Repo, rem: _Remote, send: List[str], names: Optional[List[str]],
               mine: Dict[str, str], locals_: Dict[str, _Local], res: Dict[str, Any]) -> None:
    """One push (`names` None: a glob refspec for every run ref; else those runs); runs we changed that
    the remote rejected are fetched, merged and pushed again, at most RETRIES times."""
    merged: set = set()
    pushed: set = set()
    for attempt in range(RETRIES + 1):
        ok, rejected, failed = _push_once(repo, rem, names)
        pushed.update(ok)
        for r, why in failed.items():
            if r in send:
                res["refused"].append({"run_id": r, "reason": f"the remote refused run {r}: {why}"})
        rejected = [r for r in rejected if r in send]  # others: the remote is ahead, we had nothing new
        if not rejected:
            break
        if attempt == RETRIES:
            for r in rejected:
                res["refused"].append({"run_id": r, "reason": f"run {r} kept changing on the remote; "
                                                              f"gave up after {RETRIES} merges (push again)"})
            break
        send, built = _merge_rejected(repo, rem, rejected, mine, locals_, res)
        merged.update(built)
        names = send
        if not names:
            break
    res["pushed"] = sorted(pushed)
    res["merged"] = sorted(merged & pushed)


def _push_once(repo: _Repo, rem: _Remote, run_ids: Optional[List[str]]
               ) -> Tuple[List[str], List[str], Dict[str, str]]:
    """(accepted, rejected as non-fast-forward or lost a ref-lock race, refused otherwise)."""
    ok: List[str] = []
    rejected: List[str] = []
    failed: Dict[str, str] = {}
    if run_ids is None:
        batches = [[f"{REF_PREFIX}*:{REF_PREFIX}*"]]
    else:
        specs = [f"{REF_PREFIX}{r}:{REF_PREFIX}{r}" for r in run_ids]
        batches = [specs[i:i + _CHUNK] for i in range(0, len(specs), _CHUNK)]
    for specs in batches:
        p = _git(["push", "--porcelain", "--no-verify", rem.target, *specs], repo.top, check=False)
        seen = False
        for line in p.stdout.decode("utf-8", "replace").splitlines():
            parts = line.split("\t")
            if len(parts) < 3 or ":" not in parts[1]:
                continue
            rid = parts[1].rsplit(":", 1)[1][len(REF_PREFIX):]
            seen = True
            flag, summary = parts[0], parts[2]
            if flag in (" ", "*"):
                ok.append(rid)
            elif flag == "=":
                continue
            elif flag == "!" and (summary.startswith("[rejected]") or "failed to update ref" in summary
                                  or "failed to lock" in summary or "cannot lock ref" in summary):
                rejected.append(rid)  # another machine updated the run (or was updating it right now)
            else:
                failed[rid] = redact(summary)
        if not seen and p.returncode != 0:
            raise ShareError(redact(str(git._failure(["push"], p.returncode, p.stderr))))
    return ok, rejected, failed


def _fetch(repo: _Repo, rem: _Remote, specs: List[str]) -> bytes:
    """`git fetch` of refspecs; returns stderr (where fetch reports refs it refused to move)."""
    err = b""
    for i in range(0, len(specs), _CHUNK):
        p = _git(["fetch", "--no-tags", "--no-write-fetch-head", "--no-recurse-submodules", "--no-progress",
                  rem.target, *specs[i:i + _CHUNK]], repo.top, check=False)
        if p.returncode != 0 and b"[rejected]" not in p.stderr:
            raise ShareError(redact(str(git._failure(["fetch"], p.returncode, p.stderr))))
        err += p.stderr
    return err


def _merge_rejected(repo: _Repo, rem: _Remote, rejected: List[str], mine: Dict[str, str],
                    locals_: Dict[str, _Local], res: Dict[str, Any]) -> Tuple[List[str], List[str]]:
    """Fetch what another machine pushed for these runs, merge it with ours, commit both parents;
    (runs to push again, runs merged)."""
    _fetch(repo, rem, [f"+{REF_PREFIX}{r}:{rem.ns}{r}" for r in rejected])
    theirs = repo.refs(rem.ns)
    tree = repo.batch_check([n for r in rejected for c in (theirs.get(r), mine[r]) if c
                             for n in (f"{c}:{r}{ids.SUFFIX}", f"{c}:{r}/{LOG_NAME}")])
    blobs = repo.read_blobs([o for o in tree.values() if o])

    def get(commit: Optional[str], rid: str, name: str) -> Optional[bytes]:
        oid = tree.get(f"{commit}:{rid}/{LOG_NAME}" if name == LOG_NAME else f"{commit}:{rid}{ids.SUFFIX}")
        return blobs.get(oid) if commit and oid else None

    specs = []
    again = []
    for r in rejected:
        other = theirs.get(r)
        if other and repo.is_ancestor(other, mine[r]):
            again.append(r)  # lost a race for the ref lock only: ours already holds theirs
            continue
        ours_lines = get(mine[r], r, "lines") or b""
        theirs_lines = get(other, r, "lines") or b""
        why = check_run_file(theirs_lines, r) if other else "the remote has no such run"
        if why:
            res["refused"].append({"run_id": r, "reason": f"the remote's copy of run {r} is refused: {why}"})
            continue
        lines = merge_lines(ours_lines, theirs_lines)
        log, clash = merge_log(get(mine[r], r, LOG_NAME), get(other, r, LOG_NAME))
        if clash:
            res.setdefault("warnings", []).append(f"run {r}: output.log differs between machines; kept this one")
        specs.append({"run_id": r, "lines": lines, "log": log, "parents": [mine[r], other]})
        loc = locals_[r]
        if not loc.live():
            loc.settle(merge_lines(loc.lines, lines), None if log is None else merge_log(loc.log, log)[0])
    built = repo.build(specs)
    mine.update(built)
    time.sleep(random.uniform(0.05, 0.3))  # two machines retrying in lockstep would collide again
    return sorted(set(built) | set(again)), sorted(built)


# --- pull -----------------------------------------------------------------------------------------

_FETCH_REJECTED = re.compile(r"\[rejected\]\s+(\S+)\s+->")


def pull(runs_dir: str, source: str = "origin", runs: Optional[Sequence[str]] = None, *,
         dry_run: bool = False, cwd: Optional[str] = None) -> Dict[str, Any]:
    """Fetch runs from a git remote (or merge a runs folder copied from elsewhere) into `runs_dir`.

    The fetch moves local refs/exprag-plus/runs/* forward (never forced); a run whose local ref has
    commits the remote lacks is fetched into refs/exprag-plus/remotes/<remote>/runs/ instead, and
    its records are merged all the same (the next push sends the union). A dry run fetches only into
    that remote-tracking namespace."""
    if os.path.isdir(source) and not _is_git_dir(source):
        return pull_folder(runs_dir, source, runs, dry_run=dry_run)
    repo = _Repo(cwd)
    rem = _Remote(repo, source)
    if dry_run:
        _fetch(repo, rem, [f"+{REF_PREFIX}*:{rem.ns}*"])
        theirs = repo.refs(rem.ns)
    else:
        before = repo.refs(REF_PREFIX)
        err = _fetch(repo, rem, [f"{REF_PREFIX}*:{REF_PREFIX}*"])
        diverged = sorted({m.group(1)[len(REF_PREFIX):] if m.group(1).startswith(REF_PREFIX) else m.group(1)
                           for m in _FETCH_REJECTED.finditer(err.decode("utf-8", "replace"))})
        if diverged:
            _fetch(repo, rem, [f"+{REF_PREFIX}{r}:{rem.ns}{r}" for r in diverged])
        theirs = repo.refs(REF_PREFIX)
        theirs.update({r: c for r, c in repo.refs(rem.ns).items() if r in diverged})
    res: Dict[str, Any] = {"remote": rem.label, "dry_run": dry_run, "pulled": [], "unchanged": 0, "merged": [],
                           "refused": [], "skipped": []}
    good = [r for r in theirs if ids.is_run_id(r)]
    for r in sorted(set(theirs) - set(good)):
        res["refused"].append({"run_id": r, "reason": f"ref {REF_PREFIX}{r} does not name a run id"})
    chosen, missing = _select(runs, good)
    for w in missing:
        res["refused"].append({"run_id": w, "reason": f"no run on {rem.label} matches {w!r} (or it is ambiguous)"})
    tree = repo.batch_check([f"{theirs[r]}:{r}{ids.SUFFIX}" for r in chosen]
                            + [f"{theirs[r]}:{r}/{LOG_NAME}" for r in chosen])
    incoming = {r: (tree.get(f"{theirs[r]}:{r}{ids.SUFFIX}"), tree.get(f"{theirs[r]}:{r}/{LOG_NAME}"))
                for r in chosen}
    locals_ = {r: _Local(runs_dir, r) for r in chosen}
    todo = [r for r in chosen if incoming[r][0] is None
            or incoming[r][0] != _blob_id(locals_[r].lines, repo.algo)
            or (incoming[r][1] and incoming[r][1] != _blob_id(locals_[r].log or b"", repo.algo))]
    blobs = repo.read_blobs([o for r in todo for o in incoming[r] if o])
    res["unchanged"] += len(chosen) - len(todo)
    for r in todo:
        lines_oid, log_oid = incoming[r]
        data = blobs.get(lines_oid or "")
        why = "its tree has no " + r + ids.SUFFIX if data is None else check_run_file(data, r)
        if why:
            res["refused"].append({"run_id": r, "reason": f"run {r} from {rem.label} is refused: {why}"})
            continue
        _merge_into(locals_[r], data, blobs.get(log_oid) if log_oid else None, dry_run, res)
    if not dry_run:  # (a diverged run was fetched beside its local ref, which the fetch left as it was)
        _unfetch(repo, before, theirs, [x["run_id"] for x in res["refused"] if x["run_id"] not in diverged])
    res["pulled"].sort()
    res["merged"].sort()
    return res


def _unfetch(repo: "_Repo", before: Dict[str, str], theirs: Dict[str, str], refused: Sequence[str]) -> None:
    """A refused run's ref goes back to what it was before this pull's fetch (deleted when the fetch
    made it): kept, the next push would hand the bad run on to everyone who pulls from there."""
    lines = []
    for r in sorted(set(refused)):
        new = theirs.get(r)
        if new is None or before.get(r) == new:
            continue
        old = before.get(r)
        lines.append(f"update {REF_PREFIX}{r} {old} {new}" if old else f"delete {REF_PREFIX}{r} {new}")
    if lines:
        _git(["update-ref", "--stdin"], repo.top, input=("\n".join(lines) + "\n").encode(), check=False)


def _merge_into(loc: _Local, data: bytes, log: Optional[bytes], dry_run: bool, res: Dict[str, Any]) -> None:
    """Merge one incoming run into the local folder (never a live run's file)."""
    rid = loc.run_id
    if os.path.islink(loc.path) and os.path.dirname(os.path.realpath(loc.path)) != os.path.realpath(
            os.path.dirname(loc.path)):
        res["refused"].append({"run_id": rid, "reason": f"{loc.path} is a symlink leading out of the runs folder; "
                                                        "not merged"})
        return
    if loc.exists:
        why = check_run_file(loc.lines, rid)
        if why:
            res["refused"].append({"run_id": rid, "reason": f"the local file {loc.path} is not a valid run file "
                                                            f"({why}); not merged"})
            return
    lines = merge_lines(loc.lines, data) if loc.exists else data
    new_log, clash = merge_log(loc.log, log)
    if lines == loc.lines and new_log == loc.log:
        res["unchanged"] += 1
        return
    if loc.live():
        res["skipped"].append({"run_id": rid, "reason": f"run {rid} is running here: records from elsewhere not "
                                                        "merged yet; pull again after it ends"})
        return
    if clash:
        res.setdefault("warnings", []).append(f"run {rid}: output.log differs between machines; kept this one")
    (res["merged"] if loc.exists and lines != data else res["pulled"]).append(rid)
    if not dry_run:
        loc.settle(lines, new_log)


def pull_folder(runs_dir: str, folder: str, runs: Optional[Sequence[str]] = None, *,
                dry_run: bool = False) -> Dict[str, Any]:
    """Merge a runs folder copied from elsewhere (rsync from a cluster) by the same union rule."""
    src = os.path.abspath(folder)
    if os.path.realpath(src) == os.path.realpath(runs_dir):
        raise ValueError(f"{folder} is the runs folder itself: give the folder copied from elsewhere")
    res: Dict[str, Any] = {"remote": src, "dry_run": dry_run, "pulled": [], "unchanged": 0, "merged": [],
                           "refused": [], "skipped": []}
    found = {}
    for path in ids.run_files(src):
        rid = os.path.basename(path)[: -len(ids.SUFFIX)]
        if ids.is_run_id(rid):
            found[rid] = path
        else:
            res["refused"].append({"run_id": rid, "reason": f"{path}: its name is not a run id"})
    chosen, missing = _select(runs, found)
    for w in missing:
        res["refused"].append({"run_id": w, "reason": f"no run in {src} matches {w!r} (or it is ambiguous)"})
    for rid in chosen:
        data, _ = split_torn(_read(found[rid]))
        why = check_run_file(data, rid)
        if why:
            res["refused"].append({"run_id": rid, "reason": f"{found[rid]} is refused: {why}"})
            continue
        log = _read_if_file(os.path.join(src, rid, LOG_NAME))[0]  # (never through a symlink)
        _merge_into(_Local(runs_dir, rid), data, log, dry_run, res)
    res["pulled"].sort()
    res["merged"].sort()
    return res


def shared_run_ids(repo: str) -> set:
    """Run ids that have a pushed or pulled copy in this repository (gc keeps their code)."""
    out = git._git(["for-each-ref", "--format=%(refname)", REF_PREFIX, REMOTES_PREFIX], repo, check=False).stdout
    got = set()
    for line in out.decode("utf-8", "replace").splitlines():
        if line.startswith(REF_PREFIX) or (line.startswith(REMOTES_PREFIX) and "/runs/" in line):
            got.add(line.rsplit("/", 1)[1])
    return got

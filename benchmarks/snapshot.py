"""Snapshot start-up cost against ``git status`` on a 50,000-file repository.

Builds a repository in a temporary directory (50 x 20 directories of 50 small files), commits it,
modifies 5 tracked files and adds 1 untracked file, then reports the median over N runs of:

* ``capture_state`` (the method exprag-plus uses: changed paths from one ``git status``, only those
  hashed, HEAD's trees edited in memory and written with one ``git mktree --batch``);
* the same with the tree built through a temporary index (``read-tree HEAD`` + ``update-index
  --index-info`` + ``write-tree``);
* DESIGN's baseline (a copy of the real index, ``git add -A`` into it, ``write-tree``);
* ``git status --porcelain=v1 -z --untracked-files=all`` (what a snapshot must at least do) and plain
  ``git status``;

and the ratios to ``git status`` (goal: capture_state <= 2x). Every run gets a fresh run id, so each
one really creates a commit and a ``run/<id>`` ref. Usage::

    python benchmarks/snapshot.py [--files 50000] [--runs 11] [--keep]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))

from exprag_plus import git as G  # noqa: E402

IDENT = ["-c", "user.name=bench", "-c", "user.email=bench@example.invalid", "-c", "commit.gpgsign=false"]


def sh(args, cwd, **kw):
    return subprocess.run(["git", *args], cwd=cwd, check=True, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, **kw)


def build(root: str, nfiles: int) -> str:
    repo = os.path.join(root, "repo")
    os.makedirs(repo)
    sh(["-c", "init.defaultBranch=main", "init", "-q"], repo)
    per_leaf = 50
    leaves = max(1, nfiles // per_leaf)
    made = 0
    for leaf in range(leaves):
        d = os.path.join(repo, f"pkg{leaf // 20:02d}", f"mod{leaf % 20:02d}")
        os.makedirs(d, exist_ok=True)
        for k in range(per_leaf):
            if made == nfiles:
                break
            with open(os.path.join(d, f"file{k:03d}.py"), "w") as fh:
                fh.write(f"# module {leaf}/{k}\nVALUE = {leaf * per_leaf + k}\n")
            made += 1
    with open(os.path.join(repo, ".gitignore"), "w") as fh:
        fh.write("*.ckpt\n")
    sh(["add", "-A"], repo)
    sh([*IDENT, "commit", "-q", "-m", "50k files"], repo)
    # let the index become older than every file, then refresh it, so no entry is "racily clean"
    time.sleep(1.2)
    sh(["update-index", "-q", "--refresh"], repo)
    for k in range(5):
        with open(os.path.join(repo, f"pkg{k:02d}", "mod03", f"file{k:03d}.py"), "a") as fh:
            fh.write(f"CHANGED = {k}\n")
    with open(os.path.join(repo, "pkg00", "notes_untracked.py"), "w") as fh:
        fh.write("print('new file')\n")
    with open(os.path.join(repo, "model.ckpt"), "wb") as fh:  # ignored
        fh.write(b"\0" * 1024)
    return repo


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=50_000)
    ap.add_argument("--runs", type=int, default=11)
    ap.add_argument("--keep", action="store_true", help="keep the temporary repository")
    args = ap.parse_args()

    root = tempfile.mkdtemp(prefix="exprag-plus-bench-")
    empty = os.path.join(root, "empty-gitconfig")
    open(empty, "w").close()
    os.environ["GIT_CONFIG_GLOBAL"] = empty
    os.environ["GIT_CONFIG_NOSYSTEM"] = "1"
    try:
        t0 = time.perf_counter()
        repo = build(root, args.files)
        print(f"built {args.files} files in {time.perf_counter() - t0:.1f} s at {repo}")
        print("git", sh(["--version"], repo).stdout.decode().split()[-1], "| python",
              sys.version.split()[0], "|", os.cpu_count(), "cpus")
        runs_dir = os.path.join(repo, ".runs")

        status_z = ["status", "--porcelain=v1", "-z", "--untracked-files=all"]
        counter = [0]
        trees = {"mktree": set(), "index": set(), "add": set()}

        def capture(method: str):
            counter[0] += 1
            rid = f"bench-{method}-{counter[0]}"

            def go():
                rec, err = G._capture_state(repo, rid, runs_dir, size_cap=G.DEFAULT_SIZE_CAP,
                                            snapshot=True, method=method)
                if err or not rec or not rec["commit"]:
                    raise SystemExit(f"{method}: snapshot failed: {err}")
                go.commit = rec["commit"]
            dt = timed(go)
            trees[method].add(sh(["rev-parse", go.commit + "^{tree}"], repo).stdout.strip())
            return dt

        samples = {"status_z": [], "status": [], "mktree": [], "index": [], "add": []}
        for _ in range(2):  # warm-up: page cache, untracked cache, ...
            sh(status_z, repo)
            capture("mktree")
        for _ in range(args.runs):
            samples["status_z"].append(timed(lambda: sh(["--no-optional-locks", *status_z], repo)))
            samples["status"].append(timed(lambda: sh(["--no-optional-locks", "status"], repo)))
            for m in ("mktree", "index", "add"):
                samples[m].append(capture(m))

        if len({frozenset(v) for v in trees.values()}) != 1 or len(trees["mktree"]) != 1:
            print("ERROR: the methods built different trees:", trees)
            return 1
        med = {k: statistics.median(v) * 1000 for k, v in samples.items()}
        base = med["status_z"]
        print(f"median of {args.runs} runs (ms):")
        print(f"  git status --porcelain=v1 -z -uall  {med['status_z']:8.1f}")
        print(f"  git status                          {med['status']:8.1f}")
        for m, label in (("mktree", "capture_state (mktree, used)"),
                         ("index", "temp index read-tree+index-info"),
                         ("add", "baseline copy index + add -A")):
            print(f"  {label:35s} {med[m]:8.1f}   {med[m] / base:4.2f}x status -z,"
                  f" {med[m] / med['status']:4.2f}x status")
        ok = med["mktree"] <= 2 * base
        print(f"goal capture_state <= 2x git status: {'met' if ok else 'NOT met'}"
              f" ({med['mktree'] / base:.2f}x)")
        return 0 if ok else 2
    finally:
        if args.keep:
            print("kept", root)
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

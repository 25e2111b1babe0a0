"""push / pull of many runs against plain git doing the same transfer, measured in the same run.

* push: `share.push` of N new runs (read, hash, build N commits, one `git push`) vs a plain `git push`
  of N refs naming prebuilt commits of the same files (same pack size) to a fresh bare remote.
  Goal <= 2x.
* a second push with nothing changed: the whole CLI process (`exprag-plus push`), its bytecode
  cached as in an installed package. Goal <= 0.5 s.
* pull: `share.pull` of N runs into an empty runs folder vs a plain `git fetch` of the N refs, one
  `git cat-file --batch` and a plain write of each file. Goal <= 2x.

Both sides push to (and fetch from) a fresh bare repository by path, with the same ref names under
another namespace; each round times both, alternating which goes first; ratios are the median of
the rounds' ratios (the two sides of one round meet the same load on a shared machine).

    python benchmarks/push_pull.py [--runs 1000] [--lines 50] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, HERE)

from exprag_plus import ids, share  # noqa: E402

ENV = {**os.environ, "GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@example.com",
       "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@example.com", "GIT_CONFIG_NOSYSTEM": "1"}


def git(cwd: str, *args: str, input: bytes = None) -> bytes:
    return subprocess.run(["git", *args], cwd=cwd, env=ENV, input=input, check=True, capture_output=True).stdout


def make_runs(runs_dir: str, n: int, lines: int, commit: str) -> None:
    ids.ensure_runs_dir(runs_dir)
    for i in range(n):
        rid = ids.new_run_id()
        recs = [{"type": "run_start", "run_id": rid, "seq": 0, "time": "2026-01-01T00:00:00.000000Z",
                 "elapsed_ms": 1.0, "format": "exprag-plus/1", "name": f"run {i}", "metadata": {"lr": i / n},
                 "git": {"commit": commit, "dirty": False}}]
        recs += [{"type": "track", "run_id": rid, "seq": s, "time": f"2026-01-01T00:00:{s % 60:02d}.000000Z",
                  "elapsed_ms": s * 10.0, "value": {"step": s, "loss": 1.0 / s}} for s in range(1, lines - 1)]
        recs.append({"type": "run_end", "run_id": rid, "seq": lines - 1, "time": "2026-01-01T00:01:00.000000Z",
                     "elapsed_ms": 60000.0, "status": "completed"})
        with open(os.path.join(runs_dir, rid + ".jsonl"), "w", encoding="utf-8") as f:
            f.write("".join(json.dumps(r) + "\n" for r in recs))


def prebuilt_commits(repo: str, runs_dir: str, commit: str) -> None:
    """The baseline's refs: one commit per run file (same tree as ours), made untimed by fast-import."""
    chunks = []
    for path in ids.run_files(runs_dir):
        data = open(path, "rb").read()
        name = os.path.basename(path)
        rid = name[: -len(".jsonl")].encode()  # same ref names and depth as ours, another namespace
        chunks.append(b"commit refs/bench/runs/%s\ncommitter b <b@x> 0 +0000\ndata 1\nx\nmerge %s\n"
                      b"M 100644 inline %s\ndata %d\n%s\n\n" % (rid, commit.encode(), name.encode(), len(data), data))
    git(repo, "fast-import", "--quiet", input=b"".join(chunks))


def cpu() -> float:
    """CPU seconds of this process and its waited-for children (git, and the receive-pack it starts):
    steadier than wall time on a machine others share."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def one_round(tmp: str, n: int, lines: int, ours_first: bool) -> dict:
    os.makedirs(tmp)
    remote, remote2 = os.path.join(tmp, "remote.git"), os.path.join(tmp, "remote2.git")
    git(tmp, "init", "-q", "--bare", remote)
    git(tmp, "init", "-q", "--bare", remote2)
    a = os.path.join(tmp, "a")
    git(tmp, "init", "-q", "-b", "main", a)
    with open(os.path.join(a, "train.py"), "w") as f:
        f.write("print('train')\n")
    git(a, "add", "-A")
    git(a, "commit", "-qm", "code")
    git(a, "remote", "add", "origin", remote)
    git(a, "push", "-q", "origin", "main")
    git(a, "push", "-q", remote2, "main")
    head = git(a, "rev-parse", "HEAD").decode().strip()
    runs = os.path.join(tmp, "runs-a")
    make_runs(runs, n, lines, head)

    base_repo = os.path.join(tmp, "a2")
    git(tmp, "clone", "-q", a, base_repo)
    prebuilt_commits(base_repo, runs, head)

    def plain() -> tuple:
        c0, t0 = cpu(), time.perf_counter()
        git(base_repo, "push", "-q", remote2, "refs/bench/*:refs/bench/*")
        return time.perf_counter() - t0, cpu() - c0

    def ours() -> tuple:
        c0, t0 = cpu(), time.perf_counter()
        res = share.push(runs, "origin", cwd=a)
        took = time.perf_counter() - t0, cpu() - c0
        assert len(res["pushed"]) == n and not res["refused"], res
        return took

    if ours_first:  # rounds alternate which goes first: neither always meets the other's after-effects
        (our_push, our_cpu), (base_push, base_cpu) = ours(), plain()
    else:
        (base_push, base_cpu), (our_push, our_cpu) = plain(), ours()

    # as installed (pip compiles the package): bytecode cached outside the checkout, written by an untimed
    # identical run; with PYTHONDONTWRITEBYTECODE set and no __pycache__, every run would compile it all
    env = {**ENV, "PYTHONPATH": HERE, ids.ENV_DIR: runs, "PYTHONPYCACHEPREFIX": os.path.join(tmp, "..", "pycache")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    subprocess.run([sys.executable, "-m", "exprag_plus", "push", "--json"], cwd=a, env=env, capture_output=True)
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "exprag_plus", "push", "--json"], cwd=a, env=env, capture_output=True)
    second = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    second_cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    assert p.returncode == 0 and json.loads(p.stdout)["unchanged"] == n, p.stderr

    b, b2 = os.path.join(tmp, "b"), os.path.join(tmp, "b2")
    git(tmp, "clone", "-q", remote, b)
    git(tmp, "clone", "-q", remote, b2)
    t0 = time.perf_counter()
    git(b2, "fetch", "-q", "--no-tags", "origin", "+refs/exprag-plus/runs/*:refs/fetched/*")
    names = git(b2, "for-each-ref", "--format=%(refname)", "refs/fetched/").decode().split()
    out = git(b2, "cat-file", "--batch", input="".join(f"{r}:{r.rsplit('/', 1)[1]}.jsonl\n" for r in names).encode())
    plain = os.path.join(tmp, "runs-b2")
    os.makedirs(plain)
    pos = 0
    for r in names:
        nl = out.index(b"\n", pos)
        size = int(out[pos:nl].split()[2])
        with open(os.path.join(plain, r.rsplit("/", 1)[1] + ".jsonl"), "wb") as f:
            f.write(out[nl + 1:nl + 1 + size])
        pos = nl + 2 + size
    base_pull = time.perf_counter() - t0

    t0 = time.perf_counter()
    res = share.pull(os.path.join(tmp, "runs-b"), "origin", cwd=b)
    our_pull = time.perf_counter() - t0
    assert len(res["pulled"]) == n and not res["refused"], res
    return {"base_push": base_push, "push": our_push, "push_ratio": our_push / base_push,
            "push_cpu_ratio": our_cpu / base_cpu, "base_push_cpu": base_cpu, "push_cpu": our_cpu, "second": second,
            "second_cpu": second_cpu, "base_pull": base_pull, "pull": our_pull, "pull_ratio": our_pull / base_pull}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--lines", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    rounds = []
    with tempfile.TemporaryDirectory(prefix="exprag-plus-bench-") as tmp:
        for k in range(args.rounds):
            rounds.append(one_round(os.path.join(tmp, str(k)), args.runs, args.lines, ours_first=k % 2 == 1))
    med = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
    print(f"{args.runs} runs of {args.lines} lines, median of {args.rounds} rounds")
    print(f"push:   plain git push {med['base_push']:.3f} s, exprag-plus push {med['push']:.3f} s, "
          f"ratio {med['push_ratio']:.2f}x (median of the rounds' ratios; goal <= 2x)")
    print(f"        CPU (with children): plain {med['base_push_cpu']:.3f} s, exprag-plus {med['push_cpu']:.3f} s, "
          f"ratio {med['push_cpu_ratio']:.2f}x")
    print(f"second push, nothing changed (whole CLI process): {med['second']:.3f} s wall, "
          f"{med['second_cpu']:.3f} s CPU (goal <= 0.5 s)")
    print(f"load average during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"pull:   plain git fetch + write {med['base_pull']:.3f} s, exprag-plus pull {med['pull']:.3f} s, "
          f"ratio {med['pull_ratio']:.2f}x (median of the rounds' ratios; goal <= 2x)")


if __name__ == "__main__":
    main()

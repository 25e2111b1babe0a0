"""What detecting a wrapped command's files costs, against plain os.scandir walks of the same folder.

A generated tree of N files (default 20,000, in 400 folders, plus a .git and a __pycache__ that are left
out) in a temporary folder. Timed, each the median of R repetitions, same process, same page cache:
- `walk+stat`: a plain os.scandir recursion that stats every file (what any snapshot of sizes and mtimes
  costs: `du`, `find -printf %s`); the baseline of the target (<= 1.5x);
- `walk`: a plain os.scandir recursion listing names only (no stat; a lower bound, shown for reference);
- `detect`: exprag-plus's `Scan.start()` + `Scan.changed()` around a command that wrote 10 files;
- `detect(full)`: the same with both snapshots stat'ing every file (what it falls back to when the runs
  folder is on another filesystem).
Usage: python benchmarks/artifacts.py [N] [R]
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from exprag_plus import artifacts  # noqa: E402


def plain_walk(top: str, stat: bool) -> int:
    n = 0
    stack = [top]
    while stack:
        with os.scandir(stack.pop()) as it:
            for e in it:
                if e.is_dir(follow_symlinks=False):
                    stack.append(e.path)
                else:
                    if stat:
                        e.stat(follow_symlinks=False)
                    n += 1
    return n


def make_tree(top: str, n: int) -> None:
    per = 50
    for d in range((n + per - 1) // per):
        folder = os.path.join(top, f"pkg{d % 20}", f"mod{d}")
        os.makedirs(folder, exist_ok=True)
        for i in range(min(per, n - d * per)):
            with open(os.path.join(folder, f"f{i}.py"), "w") as f:
                f.write("x")
    for skipped in (".git/objects", "__pycache__"):
        os.makedirs(os.path.join(top, skipped))
        for i in range(200):
            open(os.path.join(top, skipped, f"o{i}"), "w").close()


def median(fn, reps: int) -> float:
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    reps = int(sys.argv[2]) if len(sys.argv) > 2 else 15
    base = tempfile.mkdtemp(prefix="exprag-artifacts-bench-")
    try:
        top = os.path.join(base, "work")
        runs = os.path.join(top, ".runs", "run1")
        os.makedirs(runs)
        marker = os.path.join(runs, "output.log")
        open(marker, "w").close()
        make_tree(top, n)
        plain_walk(top, True)  # warm the cache
        found = []

        def detect(full: bool) -> None:
            scan = artifacts.Scan(top, os.path.join(top, ".runs"), marker)
            scan.full = full
            scan.start()
            for i in range(10):  # the "command"
                with open(os.path.join(top, "pkg0", "mod0", f"f{i}.py"), "w") as f:
                    f.write("yy")
            found.append(len(scan.changed()))

        walk_stat = median(lambda: plain_walk(top, True), reps)
        walk = median(lambda: plain_walk(top, False), reps)
        fast = median(lambda: detect(False), reps)
        full = median(lambda: detect(True), reps)
        assert set(found) == {10}, found
        print(f"tree: {n} files ({plain_walk(top, False)} entries walked), median of {reps} repetitions")
        print(f"plain walk + stat of each file : {walk_stat * 1000:8.1f} ms  (baseline)")
        print(f"plain walk, names only         : {walk * 1000:8.1f} ms")
        print(f"detect (two scans + diff)      : {fast * 1000:8.1f} ms  ratio {fast / walk_stat:.2f}x the walk+stat "
              f"(target <= 1.5x), {fast / walk:.2f}x the names-only walk")
        print(f"detect, full snapshots (other fs): {full * 1000:6.1f} ms  ratio {full / walk_stat:.2f}x the walk+stat")
    finally:
        shutil.rmtree(base)


if __name__ == "__main__":
    main()

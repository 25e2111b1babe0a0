"""track() against a hand-written writer of the same record, measured in the same run.

The baseline builds the same fields, `json.dumps` them, and does one write + flush per line: the raw
floor of "append a JSON line". Goal: exprag-plus's track() <= 1.3x the baseline (median of rounds).

    python benchmarks/track_overhead.py [--n 100000] [--rounds 7]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from exprag_plus import Experiment  # noqa: E402


def value(step: int) -> dict:
    return {"step": step, "metrics": {"loss": 1.0 / (step + 1), "acc": 0.5 + step * 1e-6}}


def baseline(path: str, n: int) -> float:
    run_id = "01234567-89ab-7cde-8f01-23456789abcd"
    t0 = time.perf_counter()
    with open(path, "a", encoding="utf-8") as f:
        start = time.perf_counter()
        for i in range(n):
            rec = {"type": "track", "run_id": run_id, "seq": i,
                   "time": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                   "elapsed_ms": round((time.perf_counter() - start) * 1000, 3),
                   "value": value(i), "note": "training metrics"}
            f.write(json.dumps(rec) + "\n")
            f.flush()
    return (time.perf_counter() - t0) / n


def ours(root: str, n: int) -> float:
    exp = Experiment("bench", root=root, snapshot=False)
    t0 = time.perf_counter()
    for i in range(n):
        exp.track(value(i), note="training metrics")
    per = (time.perf_counter() - t0) / n
    exp.close()
    return per


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    base, mine = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            base.append(baseline(os.path.join(tmp, f"base{r}.jsonl"), args.n))
            mine.append(ours(os.path.join(tmp, "runs"), args.n))
    b, m = statistics.median(base), statistics.median(mine)
    print(f"hand-written writer: {b * 1e6:.2f} us/line (median of {args.rounds} rounds of {args.n})")
    print(f"exprag-plus track(): {m * 1e6:.2f} us/line")
    print(f"ratio track/baseline: {m / b:.2f}x (goal <= 1.3x)")


if __name__ == "__main__":
    main()

"""`best` and `runs` over 10,000 finished runs of 100 records each, as whole CLI calls.

Goal: <= 1 s per call. Printed with two baselines measured in the same run: a bare interpreter start
(`python -c pass`) and a raw pass that opens every file and parses its first and last line.

    python benchmarks/query_scale.py [--runs 10000] [--records 100] [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))

from exprag_plus import Experiment  # noqa: E402
from exprag_plus.ids import new_run_id  # noqa: E402


def build(root: str, runs: int, records: int) -> None:
    """One real run as a template, cloned with fresh ids and varied metadata and metrics."""
    with Experiment("template", metadata={"hparams": {"lr": 0.1, "bs": 32}}, root=root, snapshot=False) as exp:
        for i in range(records - 2):
            exp.track({"step": i, "metrics": {"loss": 1.0 / (i + 1), "acc": i / records}})
    lines = [json.loads(line) for line in open(exp.path)]
    os.remove(exp.path)
    rng = random.Random(0)
    for k in range(runs):
        rid = new_run_id()
        scale = rng.random()
        out = []
        for rec in lines:
            rec = dict(rec, run_id=rid)
            if rec["type"] == "run_start":
                rec["metadata"] = {"hparams": {"lr": rng.choice([0.001, 0.01, 0.1]), "bs": 32}, "k": k}
                rec["name"] = f"run {k}"
            elif rec["type"] == "track":
                v = rec["value"]
                rec["value"] = {"step": v["step"], "metrics": {"loss": v["metrics"]["loss"], "acc": v["metrics"]["acc"] * scale}}
            elif rec["type"] == "run_end":
                s = json.loads(json.dumps(rec["summary"]))
                for key in ("last", "min", "max"):
                    s["metrics.acc"][key] = s["metrics.acc"][key] * scale
                rec["summary"] = s
            out.append(json.dumps(rec, separators=(",", ":")))
        with open(os.path.join(root, rid + ".jsonl"), "w") as f:
            f.write("\n".join(out) + "\n")


def timed(cmd, repeat: int, env=None) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=env)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def raw_pass(root: str) -> None:
    for name in os.listdir(root):
        if name.endswith(".jsonl"):
            with open(os.path.join(root, name), "rb") as f:
                data = f.read()
            lines = data.rstrip(b"\n").split(b"\n")
            json.loads(lines[0]), json.loads(lines[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=10_000)
    ap.add_argument("--records", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    env = dict(os.environ, PYTHONPATH=os.path.join(HERE, "..") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # an installed package has its bytecode compiled: so do we
    with tempfile.TemporaryDirectory() as tmp:
        root = os.path.join(tmp, "runs")
        t0 = time.perf_counter()
        build(root, args.runs, args.records)
        print(f"built {args.runs} runs x {args.records} records in {time.perf_counter() - t0:.1f} s")
        py = [sys.executable]
        start = timed(py + ["-c", "pass"], args.repeat)
        raw = timed(py + ["-c", f"import sys; sys.path.insert(0, {HERE!r}); import query_scale as q; q.raw_pass({root!r})"],
                    args.repeat, env)
        print(f"baseline: interpreter start {start:.3f} s; raw first+last-line pass {raw:.3f} s")
        for name, extra in (("runs", ["runs"]), ("runs --json --limit 0", ["runs", "--json", "--limit", "0"]),  # all 10,000 rows: informational
                            ("best metrics.acc", ["best", "metrics.acc"]),
                            ("best --where", ["best", "metrics.acc", "--where", "hparams.lr=0.01"])):
            t = timed(py + ["-m", "exprag_plus"] + extra + ["--root", root], args.repeat, env)
            print(f"{name:24s} {t:.3f} s  ({t / raw:.2f}x the raw pass; goal <= 1 s: {'ok' if t <= 1 else 'MISSED'})")


if __name__ == "__main__":
    main()

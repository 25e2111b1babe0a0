"""Scale: listing many runs (cold and warm listing cache), big runs in constant memory, CLI start-up.

Every case is a whole CLI call in a child process; each prints its median time, its ratio against a
baseline measured in the same run, and the child's peak memory (`ru_maxrss` from `os.wait4`). Goals:
- listing (`runs`, `best`, `keys`, `report`) over N finished runs: warm <= 1 s; cold <= 1.5x the raw pass
  (a plain script opening every file and parsing its first and last line);
- a 1,000,000-record run: `show`/`compare` <= 0.3 s; `history`/`plot` <= 1.2x the plain streaming parse
  (`json.loads` of every line) and <= 100 MB; a crashed run of that size costs `runs` only its tail;
- start-up: `import exprag_plus` and `runs --help` <= 1.5x `python -c pass` + 25 ms.

    python benchmarks/query_scale.py [--runs 100000] [--records 20] [--big 1000000] [--huge] [--repeat 5]
                                     [--only startup|listing|big] [--dir KEEP]

The folders are generated in a temporary directory (never committed); `--huge` adds a 10,000,000-record
run (about 2.3 GB of disk and minutes to write).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))

from exprag_plus import Experiment  # noqa: E402
from exprag_plus.ids import new_run_id  # noqa: E402

PY = sys.executable


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


def build_big(root: str, n: int) -> str:
    """A real run of `n` track records (about 230 bytes each)."""
    with Experiment("big", metadata={"hparams": {"lr": 0.1}}, root=root, snapshot=False) as exp:
        for i in range(n):
            exp.track({"step": i, "metrics": {"loss": 1.0 / (i + 1), "acc": (i % 1000) / 1000.0},
                       "lr": 0.1 * 0.999 ** (i // 1000), "note": "epoch %d" % (i // 1000)})
    return exp.path


def crashed_copy(path: str, root: str) -> str:
    """The same run without its run_end (a killed process), under a fresh id."""
    rid = new_run_id()
    old = os.path.basename(path)[:-6]
    dst = os.path.join(root, rid + ".jsonl")
    with open(path, "rb") as src, open(dst, "wb") as out:
        first = True
        for line in src:
            if b'"type":"run_end"' in line[:40]:
                continue
            out.write(line.replace(old.encode(), rid.encode()) if first else line)
            first = False
    return dst


def child(cmd: List[str], env: Dict[str, str]) -> Tuple[float, float]:
    """(seconds, peak MB) of one child process."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    _, status, usage = os.wait4(p.pid, 0)
    took = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode:
        raise SystemExit(f"failed ({p.returncode}): {' '.join(cmd)}")
    return took, usage.ru_maxrss / 1024.0


def timed(cmd: List[str], repeat: int, env: Dict[str, str], before: Optional[str] = None) -> Tuple[float, float]:
    """Median seconds and the largest peak MB over `repeat` calls; `before` (a file) is deleted before each."""
    times, peaks = [], []
    for _ in range(repeat):
        if before and os.path.exists(before):
            os.remove(before)
        t, mb = child(cmd, env)
        times.append(t)
        peaks.append(mb)
    return statistics.median(times), max(peaks)


def raw_pass(root: str) -> None:
    for name in os.listdir(root):
        if name.endswith(".jsonl"):
            with open(os.path.join(root, name), "rb") as f:
                data = f.read()
            lines = data.rstrip(b"\n").split(b"\n")
            json.loads(lines[0]), json.loads(lines[-1])


def stream_pass(path: str) -> None:
    with open(path, "rb") as f:
        for line in f:
            json.loads(line)


def line(name: str, t: float, mb: float, base: float, base_name: str, goal: str, ok: bool) -> None:
    print(f"  {name:34s} {t:7.3f} s  {t / base:5.2f}x {base_name:12s} peak {mb:6.0f} MB   goal {goal}: "
          f"{'ok' if ok else 'MISSED'}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=100_000)
    ap.add_argument("--records", type=int, default=20, help="records per listed run")
    ap.add_argument("--big", type=int, default=1_000_000, help="records of the big run (0: skip)")
    ap.add_argument("--huge", action="store_true", help="also a 10,000,000-record run (~2.3 GB, slow)")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--dir", help="keep the generated folders here (reused when present)")
    ap.add_argument("--only", choices=("startup", "listing", "big"), help="run only these cases")
    args = ap.parse_args()
    env = dict(os.environ, PYTHONPATH=os.path.join(HERE, "..") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # an installed package has its bytecode compiled: so do we
    subprocess.run([PY, "-m", "compileall", "-q", os.path.join(HERE, "..", "exprag_plus")], check=True)
    tmp = args.dir or tempfile.mkdtemp(prefix="exprag-scale-")
    rep = args.repeat
    cli = [PY, "-m", "exprag_plus"]
    try:
        if args.only in (None, "startup"):
            print("start-up", flush=True)
            bare, _ = timed([PY, "-c", "pass"], max(rep, 9), env)
            for name, cmd in (("import exprag_plus", [PY, "-c", "import exprag_plus"]),
                              ("exprag-plus runs --help", cli + ["runs", "--help"])):
                t, mb = timed(cmd, max(rep, 9), env)
                line(name, t, mb, bare, "python -c pass", "<= 1.5x + 25 ms", t <= 1.5 * bare + 0.025)

        if args.runs and args.only in (None, "listing"):
            root = os.path.join(tmp, f"runs{args.runs}")
            if not os.path.isdir(root):
                t0 = time.perf_counter()
                build(root, args.runs, args.records)
                print(f"built {args.runs} runs x {args.records} records in {time.perf_counter() - t0:.0f} s", flush=True)
            index = os.path.join(root, ".index")
            raw, raw_mb = timed([PY, "-c", f"import sys; sys.path.insert(0, {HERE!r}); import query_scale as q; q.raw_pass({root!r})"],
                                rep, env)
            print(f"listing {args.runs} runs; raw first+last-line pass {raw:.3f} s ({raw_mb:.0f} MB)", flush=True)
            for name, extra in (("runs", ["runs"]), ("runs --json --limit 0", ["runs", "--json", "--limit", "0"]),
                                ("best metrics.acc", ["best", "metrics.acc"]),
                                ("best --where", ["best", "metrics.acc", "--where", "hparams.lr=0.01"]),
                                ("keys", ["keys"]),
                                ("report", ["report", "-o", os.path.join(tmp, "r.html")])):
                cmd = cli + extra + ["--root", root]
                t, mb = timed(cmd, rep, env, before=index)
                line(f"{name} (cold)", t, mb, raw, "raw pass", "<= 1.5x raw", t <= 1.5 * raw)
                child(cmd, env)
                t, mb = timed(cmd, rep, env)
                line(f"{name} (warm)", t, mb, raw, "raw pass", "<= 1 s", t <= 1.0)

        sizes = ([args.big] if args.big else []) + ([10_000_000] if args.huge else [])
        if args.only not in (None, "big"):
            sizes = []
        for n in sizes:
            root = os.path.join(tmp, f"big{n}")
            if not os.path.isdir(root):
                t0 = time.perf_counter()
                path = build_big(root, n)
                shutil.copy(path, os.path.join(root, new_run_id() + ".jsonl"))
                crashed_copy(path, root)
                print(f"built two runs of {n} records and a crashed copy in {time.perf_counter() - t0:.0f} s", flush=True)
            files = sorted(f for f in os.listdir(root) if f.endswith(".jsonl"))
            big = next(os.path.join(root, f) for f in files
                       if b'"name":"big"' in open(os.path.join(root, f), "rb").readline())
            other = next(os.path.join(root, f) for f in files if os.path.join(root, f) != big)
            mb_file = os.path.getsize(big) / 2**20
            stream, stream_mb = timed([PY, "-c", f"import sys; sys.path.insert(0, {HERE!r}); import query_scale as q; q.stream_pass({big!r})"],
                                      rep, env)
            print(f"a run of {n} records ({mb_file:.0f} MB); plain streaming parse {stream:.3f} s ({stream_mb:.0f} MB)", flush=True)
            svg = os.path.join(tmp, "p.svg")
            for name, extra, goal in (
                    ("show", ["show", big], "show"), ("compare", ["compare", big, other], "show"),
                    ("history metrics.loss", ["history", big, "metrics.loss"], "stream"),
                    ("history --step 5000", ["history", big, "metrics.loss", "--step", "5000"], "stream"),
                    ("plot metrics.loss", ["plot", "metrics.loss", big, "-o", svg], "stream"),
                    ("report (one big run, 3 curves)", ["report", big, "-o", os.path.join(tmp, "r.html")], "stream"),
                    ("progress (a crashed big run)", ["progress", "metrics.acc", "--where", "name=big",
                                                      "-o", svg], "stream"),
                    ("runs (with a crashed big run, cold)", ["runs"], "cold"),
                    ("runs (with a crashed big run, warm)", ["runs"], "warm")):
                cmd = cli + extra + ["--root", root]
                t, mb = timed(cmd, rep, env, before=os.path.join(root, ".index") if goal == "cold" else None)
                if goal == "show":
                    line(name, t, mb, stream, "stream parse", "<= 0.3 s", t <= 0.3)
                elif goal == "stream":
                    line(name, t, mb, stream, "stream parse", "<= 1.2x, <= 100 MB", t <= 1.2 * stream and mb <= 100)
                else:
                    line(name, t, mb, stream, "stream parse", "<= 100 MB", mb <= 100)
    finally:
        if not args.dir:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

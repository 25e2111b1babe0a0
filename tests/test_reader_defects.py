"""Issue 12, reader defects: one bad field never breaks a folder; every listed path is usable; runs are
ordered by their start time; sizes and huge files are bounded; an error is one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List

import pytest

from conftest import ROOT, cli, run_python

BAD_VALUES: List[Any] = ["text", ["a", 1], 7, None, {"x": 1}, True]
START_FIELDS = ["run_id", "name", "time", "metadata", "process", "host", "git", "git_error", "replay_of",
                "format", "seq", "elapsed_ms", "process.pid", "process.argv", "process.cwd", "host.hostname",
                "git.commit", "git.branch", "git.status", "git.dirty", "git.base_commit"]
END_FIELDS = ["status", "error", "summary", "time", "elapsed_ms", "summary.loss", "summary.loss.last",
              "summary.loss.min", "error.type", "error.message"]


def _template(tmp_path: Path) -> List[Dict[str, Any]]:
    run_python(f"""
        from exprag_plus import Experiment
        with Experiment("good", metadata={{"lr": 0.1}}, root={str(tmp_path / 'tpl')!r}) as e:
            for i in range(3):
                e.track({{"step": i, "loss": 1.0 / (i + 1)}})
        """, cwd=tmp_path)
    path = next((tmp_path / "tpl").glob("*.jsonl"))
    recs = [json.loads(line) for line in path.read_text().splitlines()]
    recs[-1]["error"] = {"type": "X", "message": "m"}
    return recs


def _set(rec: Dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    for p in parents:
        if not isinstance(rec.get(p), dict):
            rec[p] = {}
        rec = rec[p]
    rec[last] = value


def test_one_bad_field_never_breaks_the_folder(tmp_path: Path) -> None:
    """Item 11: every field of run_start/run_end, in turn, of each wrong type; every command still answers."""
    recs = _template(tmp_path)
    runs = tmp_path / "runs"
    runs.mkdir()
    n = 0
    made = []
    for which, fields in ((0, START_FIELDS), (-1, END_FIELDS)):
        for f in fields:
            for bad in BAD_VALUES:
                n += 1
                copy = json.loads(json.dumps(recs))
                rid = f"01900000-0000-7000-8000-{n:012x}"
                for r in copy:
                    r["run_id"] = rid
                _set(copy[which], f, bad)
                path = runs / f"{rid}.jsonl"
                path.write_text("".join(json.dumps(r) + "\n" for r in copy))
                made.append((rid, f"{'run_start' if which == 0 else 'run_end'}.{f}={bad!r}"))

    def ok(*args: str) -> subprocess.CompletedProcess:
        p = cli(*args, "--root", str(runs), cwd=tmp_path)
        assert p.returncode in (0, 1), (args, p.stderr[-2000:])
        assert "Traceback" not in p.stderr and "internal error" not in p.stderr, (args, p.stderr[-2000:])
        return p

    listed = ok("runs", "--limit", "0")
    assert listed.returncode == 0
    assert len(json.loads(ok("runs", "--json", "--limit", "0").stdout)["runs"]) == len(made)
    for key in ("name", "-started", "loss", "-lr", "status", "commit", "host"):
        ok("runs", f"--sort={key}", "--limit", "0", "--json")
    ok("runs", "--where", "lr>0", "--where", "status=completed", "--json")
    ok("keys")
    ok("keys", "--json")
    assert ok("best", "loss", "--min").returncode == 0
    ok("best", "loss", "--json")
    ok("report", "--limit", "0", "-o", str(tmp_path / "r.html"))
    ok("plot", "loss", "--limit", "0", "-o", str(tmp_path / "p.svg"))
    warned = [line for line in listed.stderr.splitlines() if "not of the expected type" in line]
    assert warned and len(warned) == len(set(warned)), listed.stderr[-3000:]
    # show and compare each file, in one process (the CLI's entry point), so 300 files take seconds
    script = f"""
        import io, contextlib, sys, json
        from exprag_plus.cli import main
        bad = []
        made = {made!r}
        for i, (rid, what) in enumerate(made):
            other = made[i - 1][0]
            for args in (["show", rid], ["show", rid, "--json"], ["compare", rid, other], ["compare", other, rid, "--json"],
                         ["keys", rid], ["history", rid, "loss"], ["history", rid, "loss", "--json"]):
                err = io.StringIO()
                with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.redirect_stderr(err):
                    rc = main([*args, "--root", {str(runs)!r}])
                if rc not in (0, 1) or "internal error" in err.getvalue() or "Traceback" in err.getvalue():
                    bad.append((what, args[0], rc, err.getvalue()[-300:]))
                if "--json" in args and rc == 0:
                    json.loads(out.getvalue())
        print(json.dumps(bad[:20]))
        """
    p = run_python(script, cwd=tmp_path, timeout=300)
    assert json.loads(p.stdout.splitlines()[-1]) == []


def test_latest_follows_start_time_not_the_id(tmp_path: Path) -> None:
    """Item 10d: after the clock stepped back, the newer run can carry the smaller id."""
    runs = tmp_path / "runs"
    runs.mkdir()
    newer, older = "01900000-0000-7000-8000-00000000aaaa", "01900000-0001-7000-8000-00000000bbbb"
    for rid, name, t in ((newer, "newer", "2025-06-02T10:00:00.000000Z"), (older, "older", "2025-06-01T10:00:00.000000Z")):
        recs = [{"type": "run_start", "run_id": rid, "seq": 0, "time": t, "elapsed_ms": 0, "name": name},
                {"type": "run_end", "run_id": rid, "seq": 1, "time": t, "elapsed_ms": 5, "status": "completed",
                 "summary": {}}]
        (runs / f"{rid}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    os.utime(runs / f"{newer}.jsonl", (1, 1))  # file times cannot be trusted either: run_start's time rules
    assert json.loads(cli("show", "latest", "--json", "--root", str(runs)).stdout)["name"] == "newer"
    assert json.loads(cli("show", "latest~1", "--json", "--root", str(runs)).stdout)["name"] == "older"
    rows = json.loads(cli("runs", "--json", "--root", str(runs)).stdout)["runs"]
    assert [r["name"] for r in rows] == ["newer", "older"]
    p = run_python(f"from exprag_plus import load_runs; print([r.name for r in load_runs({str(runs)!r})])", cwd=tmp_path)
    assert p.stdout.strip() == "['older', 'newer']"
    # without a readable time, the id's time orders, then the file time
    for rid in (newer, older):
        path = runs / f"{rid}.jsonl"
        path.write_text(path.read_text().replace('"time": "2025', '"time": "garbled 2025', 1))
    assert json.loads(cli("show", "latest", "--json", "--root", str(runs)).stdout)["name"] == "older"


def test_actions_list_finds_records_however_they_are_spelled(tmp_path: Path) -> None:
    """Item 10c: `"type": "action"` with a space (or a \\u escape) is the same record."""
    runs = tmp_path / "runs"
    runs.mkdir()
    rid = "01900000-0000-7000-8000-00000000cccc"
    lines = [
        json.dumps({"type": "run_start", "run_id": rid, "seq": 0, "time": "2025-06-02T10:00:00.000000Z",
                    "elapsed_ms": 0, "name": "spaced"}),
        json.dumps({"type": "action", "run_id": rid, "seq": 1, "time": "2025-06-02T10:00:01.000000Z",
                    "elapsed_ms": 1, "name": "Publish", "class": "m:Publish", "params": {}, "description": "d"}),
        '{"type": "\\u0061ction", "run_id": "%s", "seq": 2, "name": "Export", "class": "m:Export", "params": {}}' % rid,
        json.dumps({"type": "action_run", "run_id": rid, "seq": 3, "name": "Publish", "status": "ok"}),
    ]
    (runs / f"{rid}.jsonl").write_text("\n".join(lines) + "\n")
    p = cli("actions", "list", "--json", "--root", str(runs))
    assert p.returncode == 0, p.stderr
    rows = {r["name"]: r for r in json.loads(p.stdout)["actions"]}
    assert set(rows) == {"Publish", "Export"} and rows["Publish"]["times_run"] == 1


def _peak_rss_mb(args: List[str], cwd: Path) -> Any:
    """Run the CLI in a child of a fresh interpreter; return (exit code, stderr, the child's peak RSS in MB)."""
    code = f"""
        import json, resource, subprocess, sys
        p = subprocess.run([sys.executable, "-m", "exprag_plus", *{args!r}], capture_output=True, text=True)
        print(json.dumps([p.returncode, p.stderr, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024]))
        """
    return json.loads(run_python(code, cwd=cwd, timeout=120).stdout)


def test_a_huge_file_without_newline_is_not_read_whole(tmp_path: Path) -> None:
    """Item 12: a 200 MB file without a newline in the runs folder; listings stay in bounded memory."""
    runs = tmp_path / "runs"
    run_python(f"""
        from exprag_plus import Experiment
        with Experiment("fine", root={str(runs)!r}) as e:
            e.track({{"step": 0, "loss": 0.5}})
        """, cwd=tmp_path)
    huge = runs / "01900000-0000-7000-8000-00000000dddd.jsonl"
    with open(huge, "wb") as f:
        f.write(b'{"type":"run_start","name":"' + b"x" * 100)
        f.truncate(200 * 2**20)  # sparse: zeros, no newline
    for args in (["runs"], ["runs", "--json"], ["keys"], ["best", "loss"], ["actions", "list"],
                 ["show", "latest"], ["show", "00000000dddd"], ["report", "-o", str(tmp_path / "r.html")]):
        rc, err, rss = _peak_rss_mb([*args, "--root", str(runs)], tmp_path)
        assert rc == 0, (args, err)
        assert "Traceback" not in err
        assert rss < 80, (args, rss)
    rc, err, _ = _peak_rss_mb(["runs", "--root", str(runs)], tmp_path)
    assert err.count("longer than") == 1 and "dddd.jsonl" in err, err


@pytest.mark.parametrize("args, word", [(["--width", "1000000000"], "240 to 10000"), (["--height", "5"], "160 to 10000"),
                                        (["--width", "wide"], "240 to 10000")])
def test_plot_sizes_are_bounded(tmp_path: Path, args: List[str], word: str) -> None:
    """Item 12: `plot --width 1000000000` ran for minutes; now a one-line error naming the range."""
    p = cli("plot", "loss", *args, "--root", str(tmp_path / "runs"), cwd=tmp_path, timeout=30)
    assert p.returncode == 2 and word in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr


def test_an_input_error_is_one_line_without_notes_before_it(tmp_path: Path) -> None:
    """Item 12: notes (`plotting the latest 2 of 3 runs`, `no step field`) came before an exit-2 error."""
    runs = tmp_path / "runs"
    run_python(f"""
        from exprag_plus import Experiment
        for i in range(3):
            with Experiment(f"r{{i}}", root={str(runs)!r}) as e:
                e.track({{"loss": 1.0 / (i + 1)}})
                e.track({{"loss": 0.5 / (i + 1)}})
        """, cwd=tmp_path)
    missing = str(tmp_path / "no" / "such" / "out")
    for args in (["plot", "loss", "--limit", "2", "-o", missing + ".svg"],
                 ["report", "--limit", "2", "-o", missing + ".html"],
                 ["plot", "loss", "--limit", "2", "-o", str(tmp_path)]):
        p = cli(*args, "--root", str(runs), cwd=tmp_path)
        assert p.returncode == 2 and len(p.stderr.splitlines()) == 1, (args, p.stderr)
        assert "error:" in p.stderr
    ok = cli("plot", "loss", "--limit", "2", "-o", str(tmp_path / "p.svg"), "--root", str(runs), cwd=tmp_path)
    assert ok.returncode == 0 and "latest 2 of 3 runs" in ok.stderr and "no step field" in ok.stderr


ODD = {"val.acc": 1, "val": {"acc": 2}, "eval:loss": 3, "a=b": 4, "x<y": 5, "sp ace": 6, "t~i!lde": 7, "b\\s": 8,
       "g>=h": 9}


@pytest.fixture
def odd_runs(tmp_path: Path) -> Path:
    """Two runs tracking metrics whose names hold dots, colons, operators, spaces and backslashes."""
    runs = tmp_path / "runs"
    run_python(f"""
        from exprag_plus import Experiment
        odd = {ODD!r}
        for k in (1, 2):
            with Experiment(f"r{{k}}", metadata={{"cfg.lr": k, "cfg": {{"lr": 10 * k}}}}, root={str(runs)!r}) as e:
                for step in range(3):
                    value = {{m: (v * 10 + step) * k if not isinstance(v, dict) else {{"acc": (v["acc"] * 10 + step) * k}}
                             for m, v in odd.items()}}
                    e.track({{"step": step, **value}})
        """, cwd=tmp_path)
    return runs


def test_dotted_keys_and_nested_keys_do_not_collide(odd_runs: Path, tmp_path: Path) -> None:
    """Item 10a: `{"val.acc": x}` is `val\\.acc`, `{"val": {"acc": x}}` is `val.acc`."""
    keys = json.loads(cli("keys", "--json", "--root", str(odd_runs)).stdout)
    assert keys["metrics"]["val\\.acc"]["max"] == 24 and keys["metrics"]["val.acc"]["max"] == 44
    assert keys["metadata"]["cfg\\.lr"]["values"] == [1, 2] and keys["metadata"]["cfg.lr"]["values"] == [10, 20]
    hist = json.loads(cli("history", "latest", "val\\.acc", "--json", "--root", str(odd_runs)).stdout)
    assert [p["value"] for p in hist["points"]] == [20, 22, 24]
    hist = json.loads(cli("history", "latest", "val.acc", "--json", "--root", str(odd_runs)).stdout)
    assert [p["value"] for p in hist["points"]] == [40, 42, 44]
    rows = json.loads(cli("runs", "--json", "--where", "cfg\\.lr=1", "--root", str(odd_runs)).stdout)["runs"]
    assert [r["name"] for r in rows] == ["r1"]
    rows = json.loads(cli("runs", "--json", "--where", "cfg.lr=20", "--root", str(odd_runs)).stdout)["runs"]
    assert [r["name"] for r in rows] == ["r2"]
    shown = json.loads(cli("show", "latest", "--json", "--root", str(odd_runs)).stdout)
    assert shown["summary"]["val\\.acc"]["last"] == 24 and shown["summary"]["val.acc"]["last"] == 44


def test_every_listed_metric_path_is_usable(odd_runs: Path, tmp_path: Path) -> None:
    """Item 10b: a metric named `eval:loss`, `a=b`, `x<y`, `sp ace`... works in best, --where, --sort, plot."""
    keys = json.loads(cli("keys", "--json", "--root", str(odd_runs)).stdout)["metrics"]
    assert {"eval:loss", "a=b", "x<y", "sp ace", "t~i!lde", "b\\\\s", "g>=h"} <= set(keys)
    script = f"""
        import io, contextlib, json
        from exprag_plus.cli import main
        def run(*args):
            with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.redirect_stderr(io.StringIO()) as err:
                rc = main([*args, "--root", {str(odd_runs)!r}])
            return rc, out.getvalue(), err.getvalue()
        bad = []
        for path, e in {keys!r}.items():
            if path == "step":
                continue
            checks = [
                (("best", path, "--json"), lambda o: json.loads(o)["run"]["name"] == "r2" and json.loads(o)["best"] == e["max"]),
                (("best", path, "--min", "--json"), lambda o: json.loads(o)["run"]["name"] == "r1"),
                (("runs", "--json", "--where", f"{{path}}>={{e['max']}}"), lambda o: [r["name"] for r in json.loads(o)["runs"]] == ["r2"]),
                (("runs", "--json", "--where", f"{{path}} < {{e['max']}}"), lambda o: [r["name"] for r in json.loads(o)["runs"]] == ["r1"]),
                (("runs", "--json", "--where", f"{{path}}:max={{e['max']}}"), lambda o: [r["name"] for r in json.loads(o)["runs"]] == ["r2"]),
                (("runs", "--json", f"--sort={{path}}"), lambda o: [r["name"] for r in json.loads(o)["runs"]] == ["r1", "r2"]),
                (("runs", "--json", f"--sort=-{{path}}"), lambda o: [r["name"] for r in json.loads(o)["runs"]] == ["r2", "r1"]),
                (("history", "latest", path, "--json"), lambda o: json.loads(o)["points"][-1]["value"] == e["max"]),
                (("plot", path, "--json", "-o", {str(tmp_path / "p.svg")!r}), lambda o: len(json.loads(o)["runs"]) == 2),
            ]
            for args, good in checks:
                rc, out, err = run(*args)
                if rc != 0 or not good(out):
                    bad.append([path, args, rc, err[-300:]])
        print(json.dumps(bad))
        """
    p = run_python(script, cwd=tmp_path, timeout=300)
    assert json.loads(p.stdout.splitlines()[-1]) == []

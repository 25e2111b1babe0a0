"""The one appender: whole lines under signals, disk-full and forks; one-way imports."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Set

import pytest

from exprag_plus import Experiment, load_run
from exprag_plus.appender import append_record

from conftest import ROOT, cli, read_lines, run_python


def _lines(path: Path) -> List[bytes]:
    return Path(path).read_bytes().split(b"\n")


def test_signal_handler_that_tracks_and_closes_never_deadlocks(tmp_path: Path) -> None:
    # A SIGALRM every 0.5 ms lands inside track() over and over; the handler tracks, and finally
    # closes and exits, the usual preemption pattern. Before the fix this hung forever.
    p = run_python("""
        import itertools, signal, sys, time
        from exprag_plus import Experiment
        exp = Experiment("sig", root="runs")
        counter = itertools.count(1)  # one C call: a handler nested in another never reads its number
        def handler(signum, frame):
            n = next(counter)
            exp.track({"handler": n})
            if n >= 300:
                signal.setitimer(signal.ITIMER_REAL, 0)
                exp.close()
                sys.exit(0)
        signal.signal(signal.SIGALRM, handler)
        signal.setitimer(signal.ITIMER_REAL, 0.0005, 0.0005)
        i = 0
        while True:
            exp.track({"loss": 1.0 / (i + 1), "step": i}, note="n")
            i += 1
    """, cwd=tmp_path, timeout=60, check=False)
    assert p.returncode == 0, p.stderr
    (path,) = (tmp_path / "runs").glob("*.jsonl")
    recs = read_lines(path)
    ends = [i for i, r in enumerate(recs) if r["type"] == "run_end"]
    assert ends == [len(recs) - 1], "exactly one run_end, and nothing after it"
    seqs = [r["seq"] for r in recs]
    assert seqs == sorted(set(seqs)), "seq unique and increasing in file order"
    handled = [r["value"]["handler"] for r in recs if r["type"] == "track" and "handler" in r["value"]]
    assert set(range(1, 301)) <= set(handled), "no record of a handler is lost"
    summary = recs[-1]["summary"]
    assert summary["handler"]["count"] == len(handled)
    assert summary["loss"]["count"] == sum(1 for r in recs if r["type"] == "track" and "loss" in r["value"])


def test_a_full_disk_never_glues_half_a_line_and_the_summary_counts_what_was_written(tmp_path: Path) -> None:
    # RLIMIT_FSIZE makes the kernel cut a write short exactly as a full disk does.
    p = run_python("""
        import resource, signal, warnings
        from exprag_plus import Experiment
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        warnings.simplefilter("ignore")
        exp = Experiment("full", root="runs")
        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        size = __import__("os").path.getsize(exp.path)
        resource.setrlimit(resource.RLIMIT_FSIZE, (size + 1000, hard))
        for i in range(100):
            exp.track({"loss": float(i), "pad": "x" * 37})
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        for i in range(5):
            exp.track({"loss": 100.0 + i})
        exp.close()
    """, cwd=tmp_path)
    (path,) = (tmp_path / "runs").glob("*.jsonl")
    lines = [l for l in _lines(path) if l]
    parsed, bad = [], 0
    for l in lines:
        try:
            parsed.append(json.loads(l))
        except ValueError:
            bad += 1
    assert bad == 1, "one torn line, skipped; the next record starts on its own line"
    tracks = [r for r in parsed if r["type"] == "track"]
    assert [r["value"]["loss"] for r in tracks][-5:] == [100.0, 101.0, 102.0, 103.0, 104.0]
    end = parsed[-1]
    assert end["type"] == "run_end" and end["summary"]["loss"]["count"] == len(tracks)
    run = load_run(str(path), root=str(tmp_path / "runs"))
    assert run.status == "completed" and run.summary["loss"]["last"] == 104.0


def test_metrics_tracked_by_forked_children_reach_the_summary(tmp_path: Path) -> None:
    run_python("""
        import os
        from exprag_plus import Experiment
        exp = Experiment("fork", root="runs")
        exp.track({"loss": 1.0})
        pid = os.fork()
        if pid == 0:
            exp.track({"child_acc": 0.75, "loss": 0.5})
            os._exit(0)
        os.waitpid(pid, 0)
        exp.close()
    """, cwd=tmp_path)
    (path,) = (tmp_path / "runs").glob("*.jsonl")
    summary = read_lines(path)[-1]["summary"]
    assert summary["child_acc"]["last"] == 0.75
    assert summary["loss"] == {"last": 0.5, "min": 0.5, "max": 1.0, "count": 2, "nonfinite": 0}
    p = cli("best", "child_acc", "--root", str(tmp_path / "runs"), "--json")
    assert p.returncode == 0 and json.loads(p.stdout)["best"] == 0.75


def test_deleting_the_runs_folder_mid_run_warns_once(tmp_path: Path) -> None:
    p = run_python("""
        import shutil, time, warnings
        from exprag_plus import Experiment
        exp = Experiment("gone", root="runs")
        exp.track({"x": 1})
        shutil.rmtree("runs")
        time.sleep(1.1)
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            for i in range(3):
                exp.track({"x": i})
                time.sleep(0.4)
            exp.close()
        print(len([x for x in w if "deleted" in str(x.message)]))
    """, cwd=tmp_path)
    assert p.stdout.strip() == "1"


def test_resume_continues_the_run_and_the_summary_covers_every_attempt(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    p = run_python("""
        import os
        from exprag_plus import Experiment
        exp = Experiment("long", {"lr": 0.1}, root="runs")
        exp.track({"loss": 3.0, "step": 0})
        exp.track({"loss": 2.0, "step": 1})
        print(exp.run_id)
        os._exit(0)  # preempted: no run_end
    """, cwd=tmp_path)
    rid = p.stdout.strip()
    assert load_run(rid, root=str(runs)).status == "crashed"
    run_python(f"""
        from exprag_plus import Experiment
        with Experiment("long", root="runs", resume="{rid}") as exp:
            assert exp.run_id == "{rid}"
            exp.track({{"loss": 1.0, "step": 2}})
    """, cwd=tmp_path)
    recs = read_lines(runs / f"{rid}.jsonl")
    assert [r["type"] for r in recs] == ["run_start", "track", "track", "resume", "track", "run_end"]
    assert [r["seq"] for r in recs] == list(range(6))
    assert recs[3]["previous_status"] == "crashed" and recs[3]["process"]["pid"] != recs[0]["process"]["pid"]
    assert recs[-1]["summary"]["loss"]["count"] == 3 and recs[-1]["summary"]["loss"]["min"] == 1.0
    run = load_run(rid, root=str(runs))
    assert run.status == "completed" and run.summary["loss"]["last"] == 1.0


def test_after_the_fact_records_continue_seq_and_end_a_torn_tail(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    exp = Experiment("x", root=str(runs))
    exp.close()
    with open(exp.path, "ab") as f:
        f.write(b'{"type":"track","run_id":"x","se')  # a writer killed mid-line
    rec = append_record(exp.path, "note", {"text": "why", "kind": "decision"})
    assert rec["seq"] == 2 and rec["pid"] == os.getpid()
    lines = _lines(Path(exp.path))
    assert json.loads(lines[-2]) == rec


def test_notes_and_tags_from_python(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    with Experiment("x", root=str(runs)) as exp:
        exp.note("lr 0.1 should converge faster", kind="hypothesis")
        exp.tag("baseline", "keep")
        exp.tag(remove="baseline")
    recs = read_lines(Path(exp.path))
    assert [(r["type"], r.get("text"), r.get("add"), r.get("remove")) for r in recs[1:3]] == [
        ("note", "lr 0.1 should converge faster", None, None), ("tag", None, ["baseline", "keep"], [])]
    assert recs[3]["remove"] == ["baseline"]


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a process as another user")
def test_a_read_only_runs_folder_gives_a_clear_error(tmp_path: Path) -> None:
    python = "/usr/bin/python3"
    probe = subprocess.run([python, "-c", "import sys; assert sys.version_info >= (3, 9); import exprag_plus"],
                           env={**os.environ, "PYTHONPATH": str(ROOT)}, user=65534, capture_output=True) \
        if os.path.exists(python) else None
    if probe is None or probe.returncode != 0:
        pytest.skip("no interpreter that another user can run on this checkout")
    base = Path("/tmp") / f"exprag-ro-{os.getpid()}"
    base.mkdir(mode=0o755, exist_ok=True)
    try:
        os.chmod(base, 0o755)
        p = subprocess.run([python, "-c", "from exprag_plus import Experiment; Experiment('x', root='runs')"],
                           cwd=base, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                           user=65534, timeout=60)
        assert p.returncode == 1
        last = p.stderr.strip().splitlines()[-1]
        assert last.startswith("PermissionError: exprag-plus: cannot write run files in ") and "--root" in last
    finally:
        subprocess.run(["rm", "-rf", str(base)])


def _imports(path: Path) -> Set[str]:
    """Every exprag_plus module a module imports, at top level or inside a function."""
    out: Set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                out.add(node.module.split(".")[0])
            else:
                out.update(a.name for a in node.names)
    return out


def test_no_import_cycles_and_the_reader_never_imports_the_writer() -> None:
    pkg = ROOT / "exprag_plus"
    graph: Dict[str, Set[str]] = {p.stem: _imports(p) for p in pkg.glob("*.py")}
    graph = {m: {d for d in deps if d in graph} for m, deps in graph.items()}
    # cli_* modules register with cli.py by design (cli imports them by name at run time, not here)
    for reader in ("store", "records", "ids", "query"):
        assert not graph[reader] & {"experiment", "appender", "actions", "schema"}, reader
    state: Dict[str, int] = {}

    def visit(m: str, stack: List[str]) -> None:
        state[m] = 1
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(d):] + [m, d]))
            if d not in state:
                visit(d, stack + [m])
        state[m] = 2

    for m in sorted(graph):
        if m not in state and not m.startswith("cli") and m != "__init__":
            visit(m, [])

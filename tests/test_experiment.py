"""The writer: record format, statuses, durability, threads, fork, odd values."""

from __future__ import annotations

import datetime as dt
import enum
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from exprag_plus import Experiment, load_run
from exprag_plus.records import FORMAT

from conftest import popen_foreground, read_lines, run_python


def test_seed_example_records(runs_dir: Path) -> None:
    exp = Experiment("training my neural network", metadata={"hparams": {"learning_rate": 0.03, "batch_size": 32}},
                     root=str(runs_dir))
    for step in range(5):
        exp.track({"step": step, "metrics": {"loss": 1.0 / (step + 1), "acc": 0.6 + step * 0.05}},
                  note="training metrics after each step")
    exp.close()
    recs = read_lines(exp.path)
    assert [r["type"] for r in recs] == ["run_start"] + ["track"] * 5 + ["run_end"]
    assert [r["seq"] for r in recs] == list(range(7))
    assert {r["run_id"] for r in recs} == {exp.run_id}
    start = recs[0]
    assert start["format"] == FORMAT and start["name"] == "training my neural network"
    assert start["metadata"] == {"hparams": {"learning_rate": 0.03, "batch_size": 32}}
    assert set(start["process"]) >= {"pid", "argv", "cwd", "executable", "python"}
    assert set(start["host"]) == {"hostname", "platform"}
    assert "git" in start
    for r in recs:
        assert r["time"].endswith("Z") and dt.datetime.strptime(r["time"], "%Y-%m-%dT%H:%M:%S.%fZ")
        assert isinstance(r["elapsed_ms"], (int, float)) and r["elapsed_ms"] >= 0
    assert [r["elapsed_ms"] for r in recs] == sorted(r["elapsed_ms"] for r in recs)
    assert recs[3]["value"] == {"step": 2, "metrics": {"loss": 1 / 3, "acc": 0.7}}
    assert recs[3]["note"] == "training metrics after each step"
    end = recs[-1]
    assert end["status"] == "completed" and end["error"] is None
    assert end["summary"]["metrics.loss"] == {"last": 0.2, "min": 0.2, "max": 1.0, "count": 5, "nonfinite": 0,
                                              "last_step": 4, "min_step": 4, "max_step": 0}
    assert end["summary"]["metrics.acc"]["max_step"] == 4


def test_runs_folder_has_gitignore_and_env_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "elsewhere"
    monkeypatch.setenv("EXPRAG_PLUS_DIR", str(target))
    monkeypatch.chdir(tmp_path)
    exp = Experiment("x")
    exp.close()
    assert Path(exp.path).parent == target
    assert (target / ".gitignore").read_text().splitlines()[-1] == "*"


def test_runs_live_at_git_top_level_and_do_not_dirty_the_tree(repo: Path) -> None:
    sub = repo / "src"
    sub.mkdir()
    (sub / "a.py").write_text("x = 1\n")
    subprocess.run(["git", "add", "."], cwd=repo, check=True)
    subprocess.run(["git", "commit", "-qm", "sub"], cwd=repo, check=True)
    run_python("""
        from exprag_plus import Experiment
        with Experiment("sub") as e:
            e.track({"loss": 1.0})
    """, cwd=sub)
    files = list((repo / ".runs").glob("*.jsonl"))
    assert len(files) == 1
    status = subprocess.run(["git", "status", "--porcelain"], cwd=repo, capture_output=True, text=True).stdout
    assert status == ""
    start = read_lines(files[0])[0]
    assert start["git"]["dirty"] is False and start["git"]["branch"] == "main"
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
    assert start["git"]["commit"] == head and start.get("git_error") is None


def test_outside_a_repository_git_is_null_with_reason(tmp_path: Path) -> None:
    run_python("""
        from exprag_plus import Experiment
        Experiment("plain").close()
    """, cwd=tmp_path, env={"GIT_CEILING_DIRECTORIES": str(tmp_path.parent)})
    start = read_lines(next((tmp_path / ".runs").glob("*.jsonl")))[0]
    assert start["git"] is None and start["git_error"]


@pytest.mark.parametrize("body, status, err_type", [
    ("pass", "completed", None),
    ("raise ValueError('boom')", "failed", "ValueError"),
    ("raise KeyboardInterrupt", "interrupted", "KeyboardInterrupt"),
    ("import sys; sys.exit(0)", "completed", None),
    ("import sys; sys.exit(3)", "failed", "SystemExit"),
])
def test_status_with_context_manager(tmp_path: Path, body: str, status: str, err_type) -> None:
    p = run_python(f"""
        from exprag_plus import Experiment
        with Experiment("cm", root="runs") as e:
            e.track({{"loss": 0.5}})
            {body}
    """, cwd=tmp_path, check=False)
    end = read_lines(next((tmp_path / "runs").glob("*.jsonl")))[-1]
    assert end["type"] == "run_end" and end["status"] == status
    if err_type:
        assert end["error"]["type"] == err_type and "Traceback" in end["error"]["traceback"]
    else:
        assert end["error"] is None
    if status == "failed" and err_type == "ValueError":
        assert end["error"]["message"] == "boom" and p.returncode == 1


@pytest.mark.parametrize("body, status", [
    ("pass", "completed"),
    ("raise RuntimeError('late')", "failed"),
    ("raise KeyboardInterrupt", "interrupted"),
])
def test_status_without_context_manager(tmp_path: Path, body: str, status: str) -> None:
    p = run_python(f"""
        from exprag_plus import Experiment
        e = Experiment("plain", root="runs")
        e.track(1.0)
        {body}
    """, cwd=tmp_path, check=False)
    recs = read_lines(next((tmp_path / "runs").glob("*.jsonl")))
    ends = [r for r in recs if r["type"] == "run_end"]
    assert len(ends) == 1 and ends[0]["status"] == status
    assert ends[0]["summary"]["value"]["last"] == 1.0
    if status == "failed":
        assert ends[0]["error"]["message"] == "late"
        assert "RuntimeError: late" in p.stderr  # the user's own traceback is still printed


def test_real_ctrl_c_is_interrupted(tmp_path: Path) -> None:
    script = tmp_path / "loop.py"
    script.write_text(
        "import sys, time\nsys.path.insert(0, %r)\nfrom exprag_plus import Experiment\n"
        "e = Experiment('loop', root='runs')\nprint('ready', flush=True)\n"
        "while True:\n    e.track({'x': 1})\n    time.sleep(0.01)\n" % str(Path(__file__).parent.parent))
    p = popen_foreground([sys.executable, str(script)], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert p.stdout.readline().strip() == b"ready"
    time.sleep(0.2)
    p.send_signal(signal.SIGINT)
    p.communicate(timeout=30)
    end = read_lines(next((tmp_path / "runs").glob("*.jsonl")))[-1]
    assert end["type"] == "run_end" and end["status"] == "interrupted"


def test_kill_9_loses_nothing_already_returned(tmp_path: Path) -> None:
    """The child reports each returned track() on stdout; after kill -9 every reported line is in the file."""
    script = tmp_path / "child.py"
    script.write_text(
        "import sys\nsys.path.insert(0, %r)\nfrom exprag_plus import Experiment\n"
        "e = Experiment('killed', root='runs')\nprint(e.path, flush=True)\ni = 0\n"
        "while True:\n    e.track({'step': i, 'payload': 'x' * 500})\n    print(i, flush=True)\n    i += 1\n"
        % str(Path(__file__).parent.parent))
    p = subprocess.Popen([sys.executable, str(script)], cwd=tmp_path, stdout=subprocess.PIPE)
    path = p.stdout.readline().decode().strip()
    last = -1
    while last < 300:
        last = int(p.stdout.readline())
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    raw = Path(path).read_text()
    whole, _, torn = raw.rpartition("\n")  # the kill may land inside the last write: only it may be torn
    recs = [json.loads(line) for line in whole.splitlines()]
    steps = [r["value"]["step"] for r in recs if r["type"] == "track"]
    assert steps == list(range(len(steps))) and len(steps) >= last + 1
    run = load_run(path, root=str(tmp_path / "runs"))
    assert run.status == "crashed" and run.end is None
    assert run.summary["step"]["last"] == steps[-1]


def test_threads_share_one_experiment(runs_dir: Path) -> None:
    exp = Experiment("threads", root=str(runs_dir))

    def work(k: int) -> None:
        for i in range(500):
            exp.track({"thread": k, "i": i})

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    exp.close()
    recs = read_lines(exp.path)
    assert [r["seq"] for r in recs] == list(range(len(recs)))
    assert len(recs) == 2 + 8 * 500
    assert recs[-1]["summary"]["i"]["count"] == 4000



def test_close_racing_close_and_track_ends_the_run_once(runs_dir: Path) -> None:
    import warnings

    for _ in range(60):
        exp = Experiment("race", root=str(runs_dir), snapshot=False)
        gate = threading.Barrier(8)

        def closer() -> None:
            gate.wait()
            exp.close()

        def tracker() -> None:
            gate.wait()
            for i in range(40):
                exp.track({"x": i})

        threads = [threading.Thread(target=closer) for _ in range(4)] + [threading.Thread(target=tracker) for _ in range(4)]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracks after close() are dropped with a warning
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        recs = read_lines(exp.path)
        types = [r["type"] for r in recs]
        assert types.count("run_end") == 1 and types[-1] == "run_end"
        assert recs[-1]["summary"].get("x", {}).get("count", 0) == types.count("track")

@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_children_write_whole_lines(tmp_path: Path) -> None:
    run_python("""
        import os
        from exprag_plus import Experiment
        e = Experiment("fork", root="runs")
        pids = []
        for k in range(4):
            pid = os.fork()
            if pid == 0:
                for i in range(2500):
                    e.track({"proc": k, "i": i, "pad": "y" * (k * 300)})
                os._exit(0)
            pids.append(pid)
        for i in range(2500):
            e.track({"proc": "parent", "i": i})
        for pid in pids:
            os.waitpid(pid, 0)
        e.close()
    """, cwd=tmp_path, timeout=120)
    path = next((tmp_path / "runs").glob("*.jsonl"))
    lines = path.read_text().splitlines()
    recs = [json.loads(line) for line in lines]  # raises on any interleaved line
    assert len(recs) == 2 + 5 * 2500
    assert sum(1 for r in recs if r["type"] == "run_end") == 1 and recs[-1]["type"] == "run_end"
    child_pids = {r["pid"] for r in recs if "pid" in r}
    assert len(child_pids) == 4
    for pid in child_pids:
        mine = [r for r in recs if r.get("pid") == pid]
        assert [r["value"]["i"] for r in mine] == list(range(2500))
        seqs = [r["seq"] for r in mine]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    parent = [r for r in recs if "pid" not in r]
    assert [r["seq"] for r in parent] == list(range(len(parent)))


def test_forked_child_exiting_normally_does_not_end_the_run(tmp_path: Path) -> None:
    run_python("""
        import os, sys
        from exprag_plus import Experiment
        e = Experiment("fork-exit", root="runs")
        pid = os.fork()
        if pid == 0:
            e.track({"child": 1})
            sys.exit(0)          # runs atexit handlers in the child
        os.waitpid(pid, 0)
        e.track({"parent": 1})
    """, cwd=tmp_path)
    recs = read_lines(next((tmp_path / "runs").glob("*.jsonl")))
    assert [r["type"] for r in recs].count("run_end") == 1 and recs[-1]["type"] == "run_end"
    assert any(r.get("value") == {"parent": 1} for r in recs)


class Color(enum.Enum):
    RED = "red"


@dataclass
class Point:
    x: float
    y: float


class Scalar:
    """Quacks like a numpy scalar."""

    size = 1

    def __init__(self, v: float) -> None:
        self.v = v

    def item(self) -> float:
        return self.v


class Array:
    size = 3

    def tolist(self) -> list:
        return [1, 2, 3]


class Unprintable:
    def __repr__(self) -> str:
        raise RuntimeError("no repr for you")


def test_odd_values_never_raise_and_stay_strict_json(runs_dir: Path) -> None:
    exp = Experiment("odd", root=str(runs_dir))
    with pytest.warns(UserWarning):
        exp.track({"nan": math.nan, "inf": math.inf, "ninf": -math.inf, "when": dt.datetime(2026, 1, 2, 3, 4, 5),
                   "path": Path("/a/b"), "color": Color.RED, "point": Point(1.0, 2.0), "set": {3, 1, 2},
                   "scalar": Scalar(0.5), "array": Array(), "tuple": (1, 2), "obj": object(), "bad": Unprintable(),
                   5: "int key", "nested": {"deep": [math.nan, 1]}})
    exp.track(math.nan)
    exp.track("text value", note=123)
    exp.close()
    raw = Path(exp.path).read_text()
    for literal in ("NaN,", "Infinity,", ":NaN", ":Infinity", ":-Infinity"):
        assert literal not in raw.replace('"NaN"', "").replace('"Infinity"', "").replace('"-Infinity"', "")
    recs = [json.loads(line, parse_constant=lambda c: pytest.fail(f"literal {c} in file")) for line in raw.splitlines()]
    v = recs[1]["value"]
    assert v["nan"] == "NaN" and v["inf"] == "Infinity" and v["ninf"] == "-Infinity"
    assert v["when"] == "2026-01-02T03:04:05" and v["path"] == "/a/b" and v["color"] == "red"
    assert v["point"] == {"x": 1.0, "y": 2.0} and v["set"] == [1, 2, 3] and v["scalar"] == 0.5
    assert v["array"] == [1, 2, 3] and v["tuple"] == [1, 2] and v["obj"]["__repr__"].startswith("<object")
    assert "repr failed" in v["bad"]["__repr__"] and v["5"] == "int key" and v["nested"] == {"deep": ["NaN", 1]}
    assert recs[3]["note"] == "123"
    summary = recs[-1]["summary"]
    assert summary["nan"] == {"last": "NaN", "min": None, "max": None, "count": 1, "nonfinite": 1}
    assert summary["value"]["nonfinite"] == 1 and summary["scalar"]["last"] == 0.5
    run = load_run(exp.path, root=str(runs_dir))
    assert math.isnan(run.summary["nan"]["last"]) and run.tracks[0]["value"]["inf"] == "Infinity"


class Hostile:
    """Every attribute lookup raises (a proxy whose backend is gone), and so do ==, len() and float()."""

    def __getattr__(self, name: str) -> None:
        raise RuntimeError(f"backend gone ({name})")

    def __eq__(self, other: object) -> bool:
        raise RuntimeError("no ==")

    __hash__ = object.__hash__

    def __len__(self) -> int:
        raise RuntimeError("no len")


class BrokenScalar:
    """A numpy-like scalar whose .item() and float() raise."""

    size = 1

    def item(self) -> float:
        raise RuntimeError("device lost")

    def __float__(self) -> float:
        raise RuntimeError("device lost")


def test_a_hostile_value_is_stored_as_repr_and_the_rest_of_the_record_kept(runs_dir: Path) -> None:
    exp = Experiment("hostile", root=str(runs_dir), snapshot=False)
    with pytest.warns(UserWarning, match="not JSON-able"):
        exp.track({"loss": 0.5, "proxy": Hostile(), "scalar": BrokenScalar()})
    exp.close()
    recs = read_lines(exp.path)
    v = recs[1]["value"]
    assert v["loss"] == 0.5 and "__repr__" in v["proxy"] and "__repr__" in v["scalar"]
    assert recs[-1]["summary"]["loss"]["last"] == 0.5

def test_nan_last_value_is_reported_not_hidden(runs_dir: Path) -> None:
    with Experiment("diverged", root=str(runs_dir)) as exp:
        for i, loss in enumerate([1.0, 0.5, math.nan]):
            exp.track({"step": i, "loss": loss})
    s = read_lines(exp.path)[-1]["summary"]["loss"]
    assert s == {"last": "NaN", "min": 0.5, "max": 1.0, "count": 3, "nonfinite": 1, "last_step": 2,
                 "min_step": 1, "max_step": 0}


def test_track_after_close_and_on_write_failure_never_raises(runs_dir: Path) -> None:
    exp = Experiment("closed", root=str(runs_dir))
    exp.close()
    with pytest.warns(UserWarning, match="after close"):
        exp.track({"x": 1})
    exp.close()  # idempotent
    exp2 = Experiment("disk full", root=str(runs_dir))
    full = os.open("/dev/full", os.O_WRONLY)
    os.dup2(full, exp2._writer.fd)  # every write now fails with ENOSPC, as on a full disk
    os.close(full)
    with pytest.warns(UserWarning, match="track\\(\\) failed.*No space"):
        exp2.track({"x": 1})
    exp2.track({"x": 2})  # warned once, still silent
    exp2.close()  # never raises either
    assert exp2.closed
    assert len(read_lines(exp.path)) == 2


def test_argv_credentials_are_redacted_and_env_is_never_recorded(tmp_path: Path) -> None:
    run_python("""
        import sys
        sys.argv = ["train.py", "--lr", "0.1", "--api-key", "abc123", "--password=hunter2", "TOKEN=xyz",
                    "--db", "postgres://user:pw@host/db", "ghp_0123456789abcdefghij0123", "--name", "keep",
                    "--header", "Authorization: Bearer opaque-session-value", "HF_TOKEN:hf_abcdefghijklmnopqrstuvwx",
                    "--model", "/models/task-abcdefghijklmnopqrstuv/hf_cache"]
        from exprag_plus import Experiment
        Experiment("secrets", root="runs").close()
    """, cwd=tmp_path, env={"MY_SECRET_VALUE": "s3cr3t-in-env"})
    raw = next((tmp_path / "runs").glob("*.jsonl")).read_text()
    argv = json.loads(raw.splitlines()[0])["process"]["argv"]
    assert argv == ["train.py", "--lr", "0.1", "--api-key", "***", "--password=***", "TOKEN=***",
                    "--db", "postgres://***@host/db", "***", "--name", "keep",
                    "--header", "Authorization: ***", "HF_TOKEN:***",
                    "--model", "/models/task-abcdefghijklmnopqrstuv/hf_cache"]  # look-alikes in a path are kept
    for secret in ("abc123", "hunter2", "xyz", "pw@", "ghp_", "s3cr3t-in-env", "MY_SECRET_VALUE", "opaque-session",
                   "hf_abc"):
        assert secret not in raw


def test_run_ids_are_time_ordered_uuid7(runs_dir: Path) -> None:
    from exprag_plus.ids import is_run_id, new_run_id

    made = [new_run_id() for _ in range(2000)]
    assert all(is_run_id(i) for i in made) and len(set(made)) == 2000
    a = new_run_id()
    time.sleep(0.002)
    assert new_run_id() > a


def test_a_dropped_experiment_is_still_closed_at_exit(tmp_path: Path) -> None:
    run_python("""
        from exprag_plus import Experiment
        def start():
            Experiment("dropped", root="runs").track({"loss": 0.5})
        start()
        import gc; gc.collect()
    """, cwd=tmp_path)
    recs = read_lines(next((tmp_path / "runs").glob("*.jsonl")))
    assert recs[-1]["type"] == "run_end" and recs[-1]["status"] == "completed"

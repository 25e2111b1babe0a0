"""The reader: tolerant parsing, statuses, light listing, references."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from exprag_plus import Experiment, load_run, load_runs
from exprag_plus.ids import RunNotFound, resolve, short_id
from exprag_plus.store import CorruptLineWarning, Run

from conftest import read_lines


def make_run(root: Path, name: str = "r", n: int = 3, close: bool = True, **md) -> Experiment:
    exp = Experiment(name, metadata=md or None, root=str(root))
    for i in range(n):
        exp.track({"step": i, "loss": 1.0 / (i + 1)})
    if close:
        exp.close()
    return exp


def test_torn_last_line_is_skipped_quietly(runs_dir: Path, recwarn: pytest.WarningsRecorder) -> None:
    exp = make_run(runs_dir, close=False)
    with open(exp.path, "ab") as f:
        f.write(b'{"type":"track","run_id":"x","seq":99,"val')
    exp._closed = True  # simulate the process dying here
    run = load_run(exp.path, root=str(runs_dir))
    assert len(run.tracks) == 3 and run.status == "running"  # this process is alive: not crashed
    assert not [w for w in recwarn if issubclass(w.category, CorruptLineWarning)]


def test_corrupt_line_is_skipped_with_file_and_line(runs_dir: Path) -> None:
    exp = make_run(runs_dir)
    lines = Path(exp.path).read_text().splitlines(keepends=True)
    lines.insert(2, "this is not json\n")
    Path(exp.path).write_text("".join(lines))
    with pytest.warns(CorruptLineWarning, match=rf"{exp.path}:3: skipped a corrupt line"):
        run = load_run(exp.path, root=str(runs_dir))
    assert len(run.tracks) == 3 and run.status == "completed"


def test_records_appended_after_run_end_and_crashed_vs_running(runs_dir: Path) -> None:
    from exprag_plus.appender import append_record

    done = make_run(runs_dir, "done")
    rec = append_record(done.path, "action_run", {"name": "a", "status": "ok"})
    assert rec["seq"] == 5 and rec["elapsed_ms"] >= 0 and rec["pid"] == os.getpid()
    assert [r["type"] for r in read_lines(done.path)][-2:] == ["run_end", "action_run"]
    listed = {r.name: r for r in load_runs(str(runs_dir))}
    assert listed["done"].status == "completed"
    live = make_run(runs_dir, "live", close=False)  # this process is alive
    assert {r.name: r for r in load_runs(str(runs_dir))}["live"].status == "running"
    live.close()
    # a run whose pid is gone is crashed; its summary comes from its tracks
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    ghost = make_run(runs_dir, "ghost", close=False)
    ghost._closed = True
    lines = Path(ghost.path).read_text().splitlines()
    start = json.loads(lines[0])
    start["process"]["pid"] = int(dead.stdout)
    Path(ghost.path).write_text("\n".join([json.dumps(start)] + lines[1:]) + "\n")
    run = {r.name: r for r in load_runs(str(runs_dir))}["ghost"]
    assert run.status == "crashed" and run.summary["loss"]["count"] == 3


def test_torn_line_then_append_keeps_records_whole(runs_dir: Path) -> None:
    from exprag_plus.appender import append_record

    exp = make_run(runs_dir)
    with open(exp.path, "ab") as f:
        f.write(b'{"type":"tra')
    append_record(exp.path, "action_run", {"name": "x"})
    with pytest.warns(CorruptLineWarning):
        run = load_run(exp.path, root=str(runs_dir))
    assert run.records[-1]["type"] == "action_run" and run.status == "completed"


def test_listing_reads_only_head_and_tail(runs_dir: Path) -> None:
    exp = make_run(runs_dir, "big", n=20000)
    size = os.path.getsize(exp.path)
    assert size > 1_000_000
    # corrupt the middle: a light listing never reads it, so it neither warns nor fails
    with open(exp.path, "r+b") as f:
        data = f.read()
        at = data.index(b"\n", size // 2) + 3  # inside one line, away from its newline
        f.seek(at)
        f.write(b"garbage")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        (run,) = load_runs(str(runs_dir))
        assert run.status == "completed" and run.summary["loss"]["count"] == 20000
        assert run._records is None  # the middle was never parsed
    with pytest.warns(CorruptLineWarning):
        assert len(run.tracks) == 19999


def test_run_end_pushed_out_of_the_tail_is_still_found(runs_dir: Path) -> None:
    from exprag_plus.appender import append_record

    exp = make_run(runs_dir, "many actions", n=5)
    for i in range(400):
        append_record(exp.path, "action_run", {"name": "x", "result": "r" * 300})
    (run,) = load_runs(str(runs_dir))
    assert run.status == "completed" and run.summary["loss"]["count"] == 5


def test_references(runs_dir: Path, tmp_path: Path) -> None:
    a = make_run(runs_dir, "a")
    b = make_run(runs_dir, "b")
    root = str(runs_dir)
    assert resolve("latest", root) == b.path and resolve("latest~1", root) == a.path
    assert resolve(b.run_id, root) == b.path
    assert resolve(short_id(a.run_id), root) == a.path  # unique suffix: the random tail
    assert resolve(b.run_id[:-4], root) == b.path
    assert resolve(b.path, root) == b.path
    assert resolve(os.path.basename(b.path), root) == b.path  # the name `ls .runs` prints, from anywhere (trial 8)
    for bad, msg in [("latest~2", "only 2 runs"), ("latest~x", "whole number"), ("", "empty"),
                     ("../../etc/passwd", "not a run file inside"), ("zz", "bad run reference"),
                     (a.run_id[:4], "matches 2 runs"), ("abcdef123", "no run matches")]:
        with pytest.raises(RunNotFound, match=msg):
            resolve(bad, root)
    outside = tmp_path / "outside.jsonl"
    shutil.copy(a.path, outside)
    with pytest.raises(RunNotFound, match="inside the runs folder"):
        resolve(str(outside), root)
    link = runs_dir / "sneaky.jsonl"
    link.symlink_to(outside)
    with pytest.raises(RunNotFound, match="inside the runs folder"):
        resolve(str(link), root)
    with pytest.raises(RunNotFound, match="bad run reference 'sneaky'"):
        resolve("sneaky.jsonl", root)  # a bare name is an id of the runs folder, never a path to follow



def test_listing_never_follows_a_symlink_out_of_the_runs_folder(runs_dir: Path, tmp_path: Path) -> None:
    inside = make_run(runs_dir, "inside")
    secret = make_run(tmp_path / "elsewhere", "secret")
    later = "ffffffff-ffff-7fff-bfff-ffffffffffff.jsonl"  # sorts last: `latest` would be the outside file
    (runs_dir / later).symlink_to(secret.path)
    (runs_dir / "ffffffff-ffff-7fff-bfff-000000000000.jsonl").symlink_to(inside.path)  # an alias inside is fine
    root = str(runs_dir)
    assert [r.name for r in load_runs(root)] == ["inside", "inside"]
    assert load_run("latest", root).name == "inside"
    for ref in (later[: -len(".jsonl")], str(runs_dir / later), str(runs_dir / ".gitignore")):
        with pytest.raises(RunNotFound):
            resolve(ref, root)

def test_history_and_metadata(runs_dir: Path) -> None:
    exp = make_run(runs_dir, "h", n=4, hparams={"lr": 0.1})
    run = load_run("latest", root=str(runs_dir))
    assert run.metadata == {"hparams": {"lr": 0.1}} and run.name == "h"
    assert [p["step"] for p in run.history("loss")] == [0, 1, 2, 3]
    assert run.history("loss")[1] == {"seq": 2, "step": 1, "value": 0.5, "elapsed_ms": run.tracks[1]["elapsed_ms"]}
    assert run.history("nope") == []
    assert isinstance(run, Run) and run.run_id == exp.run_id and run.duration_s is not None


@pytest.mark.parametrize("bad, reason", [(b'{"type":"track","value":"\xff\xfe"}', "not UTF-8"),
                                         (b"[" * 100_000, "nested too deeply")], ids=["not-utf8", "deep"])
def test_a_line_that_is_not_utf8_or_nests_deeply_is_one_corrupt_line(runs_dir: Path, bad: bytes, reason: str) -> None:
    exp = make_run(runs_dir)
    with open(exp.path, "ab") as f:
        f.write(bad + b"\n")
    with pytest.warns(CorruptLineWarning, match=rf"{exp.path}:6: skipped a corrupt line \({reason}\)"):
        run = load_run(exp.path, root=str(runs_dir))
    assert len(run.tracks) == 3 and run.status == "completed"
    with pytest.warns(CorruptLineWarning):
        assert [r.name for r in load_runs(str(runs_dir))] == ["r"]  # one bad line never hides the folder

"""Big runs: show, compare and history answer alike whether the run is read whole or streamed."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

from exprag_plus import Experiment, query, store

from conftest import cli


def _big(root: Path, n: int, end: bool = True) -> str:
    exp = Experiment("big", metadata={"lr": 0.1}, root=str(root), snapshot=False)
    for i in range(n):
        v = float("nan") if i % 97 == 5 else (1.0 / (i + 1) if i % 13 else 2.0 - i * 1e-3)
        exp.track({"step": i if i % 50 else None, "loss": v, "acc": i % 7, "pad": "x" * 50})
        if i % 200 == 3:
            exp.track({"other": i})
    if end:
        exp.close()
    else:
        exp._closed = True
    with open(exp.path, "a") as f:
        f.write(json.dumps({"type": "note", "run_id": exp.run_id, "seq": 10**6, "time": "2026-01-01T00:00:00.000000Z",
                            "elapsed_ms": 1, "text": "after"}) + "\n")
    return exp.path


@pytest.mark.parametrize("end", [True, False])
def test_streamed_answers_equal_whole_reads(tmp_path: Path, end: bool) -> None:
    path = _big(tmp_path / "runs", 3000, end)
    assert os.path.getsize(path) > 200_000  # beyond the tail the reader parses
    light, whole = store.Run.read(path), store.Run.read(path, full=True)
    assert light._records is None
    for n in (1, 2, 3):  # fewer than first, last, min and max
        with pytest.raises(query.QueryError):
            query.history(light, "loss", n)
    for n in (0, 4, 5, 17, 100, 2999, 3000, 5000):
        for metric in ("loss", "acc", "other", "step"):
            assert query.history(store.Run.read(path), metric, n) == query.history(whole, metric, n)
    assert query.history(light, "loss", 100, step=301) == query.history(whole, "loss", 100, step=301)
    assert query.show(store.Run.read(path)) == query.show(whole)
    assert query.compare(light, store.Run.read(path)) == query.compare(whole, whole)
    assert light._records is None  # none of it held the body
    with pytest.raises(query.QueryError, match="nearest: loss"):
        query.history(store.Run.read(path), "los", 10)


def test_show_reads_no_body_when_run_end_has_counts(tmp_path: Path) -> None:
    path = _big(tmp_path / "runs", 3000)
    run = store.Run.read(path)
    counts = run.end["records"]
    assert counts["track"] == 3000 + 15 and counts["run_start"] == 1 and counts["run_end"] == 1
    with open(path, "r+b") as f:  # the body is made unreadable: show must not look at it
        f.seek(5000)
        f.write(b"\x00" * 100_000)
    res = query.show(store.Run.read(path))
    assert res["records"] == dict(counts, note=1)


def _memory_run(root: Path, end: bool = True, tags: int = 1) -> str:
    """A run beyond the listing's tail with notes, tags and an artifact among its tracks, and a note, a tag
    and an artifact appended after run_end."""
    root.mkdir(parents=True, exist_ok=True)
    ckpt = root.parent / "model.ckpt"
    ckpt.write_bytes(b"weights")
    exp = Experiment("mem", root=str(root), snapshot=False)
    exp.note("why: try a warmup", kind="hypothesis")
    for i in range(3000):
        exp.track({"step": i, "loss": 1.0 / (i + 1), "pad": "x" * 50})
        if i == 1500:
            exp.note("half way")
            for k in range(tags):
                exp.tag(f"t{k}", "mid")
            exp.artifact(str(ckpt))
    exp.tag(remove=["mid"])
    if not end:
        exp._closed = True
        return exp.path
    exp.close()
    exp.artifact(str(ckpt), note="again")  # after run_end: appended after the fact
    assert cli("note", exp.run_id, "after the end", "--root", str(root)).returncode == 0
    assert cli("tag", exp.run_id, "keep", "--root", str(root)).returncode == 0
    return exp.path


def _answers(run: store.Run) -> tuple:
    return run.notes, run.tags, run.of_type("artifact"), run.record_counts(), query.show(run)


def test_notes_tags_artifacts_come_from_run_end_offsets_not_the_body(tmp_path: Path) -> None:
    path = _memory_run(tmp_path / "runs")
    assert os.path.getsize(path) > 200_000
    whole = _answers(store.Run.read(path, full=True))
    assert [n["text"] for n in whole[0]] == ["why: try a warmup", "half way", "after the end"]
    assert whole[1] == ["t0", "keep"] and len(whole[2]) == 2
    run = store.Run.read(path)
    assert set(run.end["offsets"]) == {"note", "tag", "artifact"}
    assert _answers(run) == whole
    # A note forged into the body (same length, offsets kept) is seen by a whole read, never by the
    # offsets: proof that show no longer searches the million-record body.
    with open(path, "rb") as f:
        data = f.read()
    at = data.index(b'"step":2000,')
    begin, stop = data.rindex(b"\n", 0, at) + 1, data.index(b"\n", at)
    forged = json.dumps({"type": "note", "run_id": "x", "text": "forged"}).encode()
    forged = forged[:-1] + b', "p": "' + b"y" * (stop - begin - len(forged) - 9) + b'"}'
    assert len(forged) == stop - begin
    with open(path, "r+b") as f:
        f.seek(begin)
        f.write(forged)
    assert [n["text"] for n in store.Run.read(path, full=True).notes][-2] == "forged"
    assert _answers(store.Run.read(path))[:3] == whole[:3]


def test_bad_or_missing_offsets_fall_back_to_reading_the_file(tmp_path: Path) -> None:
    path = _memory_run(tmp_path / "runs")
    whole = _answers(store.Run.read(path, full=True))
    with open(path, "rb") as f:
        lines = f.read().split(b"\n")
    i = max(k for k, l in enumerate(lines) if b'"type":"run_end"' in l)
    end = json.loads(lines[i])
    for offsets in ({"note": [o + 1 for o in end["offsets"]["note"]]},  # mid-line
                    dict(end["offsets"], tag=end["offsets"]["note"][:1]),  # a note where a tag should be
                    dict(end["offsets"], note=end["offsets"]["note"][:1]),  # fewer than counted
                    dict(end["offsets"], note="x"), None):
        rec = dict(end, offsets=offsets) if offsets is not None else {k: v for k, v in end.items() if k != "offsets"}
        lines[i] = json.dumps(rec).encode()
        with open(path, "wb") as f:
            f.write(b"\n".join(lines))
        run = store.Run.read(path)
        assert run._placed(("note", "tag")) is None
        assert _answers(run) == whole


def test_crashed_resumed_and_many_tags_give_what_a_whole_read_gives(tmp_path: Path) -> None:
    crashed = _memory_run(tmp_path / "a", end=False)
    run = store.Run.read(crashed)
    assert run._placed(("note",)) is None and run.end is None  # no run_end: read from the file
    assert _answers(run) == _answers(store.Run.read(crashed, full=True))
    many = _memory_run(tmp_path / "b", tags=store.OFFSETS_CAP + 1)
    run = store.Run.read(many)
    assert "tag" not in run.end["offsets"] and run._placed(("note", "tag")) is None
    assert _answers(run) == _answers(store.Run.read(many, full=True))
    assert len(run.tags) == store.OFFSETS_CAP + 2  # and "keep"
    exp = Experiment("x", resume=os.path.basename(crashed)[:-6], root=str(tmp_path / "a"))
    exp.note("resumed")
    exp.close()  # a resumed run's run_end is counted from the file: its offsets include the earlier notes
    run = store.Run.read(crashed)
    assert run._placed(("note", "tag", "artifact")) is not None
    assert _answers(run) == _answers(store.Run.read(crashed, full=True))
    assert [n["text"] for n in run.notes][-1] == "resumed"


def _ticks(svg: str) -> str:
    return svg[svg.index('<g class="ticks"'):svg.index("</g>", svg.index('<g class="ticks"'))]


@pytest.mark.parametrize("x", ["step", "elapsed", "acc"])
def test_plot_of_a_long_run_is_thinned_with_the_same_axes_and_counts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                     x: str) -> None:
    from exprag_plus import plot
    path = _big(tmp_path / "runs", 6000)
    run = store.Run.read(path)
    whole = plot.run_series(run, "loss", x)
    assert len(whole.ys) > 5000 and whole.points is None  # under the limit: every point, as before
    monkeypatch.setattr(plot, "_RAW", 700)
    monkeypatch.setattr(plot, "_GROUPS", 40)
    thin = plot.run_series(store.Run.read(path), "loss", x)
    assert thin.points == len(whole.ys) and len(thin.ys) < len(whole.ys) / 4
    assert thin.x_kind == whole.x_kind
    for log in (False, True):
        a, b = plot.draw([whole], log=log), plot.draw([thin], log=log)
        assert _ticks(a.svg) == _ticks(b.svg)  # the same x and y ranges
        assert {k: v for k, v in a.series[0].items() if k != "drawn"} == {k: v for k, v in b.series[0].items() if k != "drawn"}
        assert a.series[0]["nonfinite"] > 0 and (not log or a.series[0]["nonpositive"] > 0)


def test_plot_of_ten_thousand_groups_keeps_a_bounded_number_of_points() -> None:
    from exprag_plus import plot
    pts = plot._Points()
    n = 3_000_000
    for i in range(n):
        pts.xs.append(float(i))
        pts.ys.append(math.sin(i / 1000.0) if i % 1001 else float("nan"))
        if len(pts.ys) >= pts.limit:
            pts._fold()
    s = pts.series("a", False)
    assert s.points == n and s.nonfinite == len(range(0, n, 1001))
    assert len(s.ys) <= plot._GROUPS * 8
    finite = [math.sin(i / 1000.0) for i in range(n) if i % 1001]
    assert (min(v for v in s.ys if v == v), max(v for v in s.ys if v == v)) == (min(finite), max(finite))
    assert (s.xs[0], s.xs[-1]) == (0.0, n - 1.0)


def test_a_crashed_runs_one_pass_for_its_status_answers_counts_notes_and_artifacts(tmp_path: Path) -> None:
    path = _memory_run(tmp_path / "runs", end=False)
    with open(path, "ab") as f:
        f.write(b'{"type": "note", "text": "cut\n')  # a corrupt line, then a note after it
        f.write(json.dumps({"type": "note", "run_id": "x", "text": "last words"}).encode() + b"\n")
    with pytest.warns(store.CorruptLineWarning):
        whole = _answers(store.Run.read(path, full=True))
    with pytest.warns(store.CorruptLineWarning):
        run = store.Run.read(path)
        assert run.status in ("running", "crashed")  # the one pass: run_end looked for, the rest kept
    assert run._scanned is not None and run._scanned["counts"]["note"] == 3
    assert _answers(run) == whole
    assert [n["text"] for n in run.notes] == ["why: try a warmup", "half way", "last words"]
